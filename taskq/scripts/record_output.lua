-- record_output: the attempt holding `token` lists a stored file among its run's
-- outputs (a file of the same name is replaced, and moves to the end), within the
-- run's limits on files and bytes. O(log n) in the run's files: their number and
-- total size are counters on the run (outputs_count, outputs_bytes), and no list is
-- read or rewritten.
-- KEYS: the partition's prefix (the run, its outputs: hash name -> entry, their
--       order: zset name -> save number, and outputs:expiring are K.* of it)
-- ARGV: run_id, token, name, entry_json ({name, key, size, content_type, saved_ms}),
--       size, max_bytes_per_run, max_files_per_run
-- Returns {'ok', total_bytes, replaced_key ('' if none)} | {'lost'} (the attempt no
-- longer holds the run) | {'over', total_bytes_without_it} | {'full', files}.
local id, token, name, entry, size = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local run, files, order, expiring = K.run(id), K.run_outputs(id), K.run_outputs_order(id), K.outputs_expiring
local cur = redis.call('HMGET', run, 'status', 'token', 'outputs')
if not LEASED[cur[1]] or cur[2] ~= token then return {'lost'} end

-- A run recorded by an earlier version keeps its files as one JSON list in its
-- `outputs` field (names unique): moved here once, on its first save since.
if cur[3] then
  for _, e in ipairs(cjson.decode(cur[3])) do
    redis.call('HSET', files, e.name, cjson.encode(e))
    redis.call('ZADD', order, redis.call('HINCRBY', run, 'outputs_seq', 1), e.name)
    redis.call('HINCRBY', run, 'outputs_count', 1)
    redis.call('HINCRBY', run, 'outputs_bytes', e.size)
  end
  redis.call('HDEL', run, 'outputs')
end

local counts = redis.call('HMGET', run, 'outputs_count', 'outputs_bytes')
local count, total = tonumber(counts[1]) or 0, tonumber(counts[2]) or 0
local old = redis.call('HGET', files, name)
local replaced = old and cjson.decode(old) or nil
if replaced then
  total = total - replaced.size
elseif count >= tonumber(ARGV[7]) then
  return {'full', tostring(count)}
else
  count = count + 1
end
if total + size > tonumber(ARGV[6]) then return {'over', string.format('%d', total)} end

redis.call('HSET', files, name, entry)
redis.call('ZADD', order, redis.call('HINCRBY', run, 'outputs_seq', 1), name)
total = string.format('%d', total + size)
redis.call('HSET', run, 'outputs_count', count, 'outputs_bytes', total, 'has_outputs', '1')
-- Kept until the run ends; set_status then dates it, and these keys, to the run's expiry.
redis.call('ZADD', expiring, 'NX', '+inf', id)
return {'ok', total, replaced and replaced.key or ''}
