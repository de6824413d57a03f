-- record_output: the attempt holding `token` lists a stored file among its run's
-- outputs (a file of the same name is replaced), within the run's size limit.
-- ARGV: run_id, token, entry_json ({name, key, size, content_type, saved_ms}),
--       max_bytes_per_run
-- Returns {'ok', total_bytes} | {'lost'} (the attempt no longer holds the run) |
-- {'over', total_bytes_without_it}.
local id, token, entry = ARGV[1], ARGV[2], cjson.decode(ARGV[3])
local key = run_key(id)
local cur = redis.call('HMGET', key, 'status', 'token', 'outputs')
if (cur[1] ~= 'running' and cur[1] ~= 'cancelling') or cur[2] ~= token then return {'lost'} end
local list, kept, total = cur[3] and cjson.decode(cur[3]) or {}, {}, 0
for _, e in ipairs(list) do
  if e.name ~= entry.name then
    table.insert(kept, e)
    total = total + e.size
  end
end
if total + entry.size > tonumber(ARGV[4]) then return {'over', tostring(total)} end
table.insert(kept, entry)
redis.call('HSET', key, 'outputs', cjson.encode(kept), 'has_outputs', '1')
-- Kept until the run ends; set_status then dates it to the run's expiry.
redis.call('ZADD', P .. 'outputs:expiring', 'NX', '+inf', id)
return {'ok', tostring(total + entry.size)}
