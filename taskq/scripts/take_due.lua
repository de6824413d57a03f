-- take_due: claims up to `limit` webhook deliveries that are due. Each one claimed is
-- hidden from every other dispatcher for `visibility_ms` (its score moves forward)
-- and gets a claim token; only the holder of that token can record the attempt. A
-- dispatcher killed mid-delivery never records, so the delivery comes due again when
-- its visibility timeout is over.
-- ARGV: now, visibility_ms, limit, token_base, retention_s.
-- Returns {next_due_ms or '', did, token, round, attempts, run_id, status, created_ms, ...}.
local now, vis, limit, base = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local due, dead = P .. 'deliveries:due', P .. 'deliveries:dead'
redis.call('ZREMRANGEBYSCORE', dead, '-inf', now - tonumber(ARGV[5]) * 1000)
local out = {''}
for i, did in ipairs(redis.call('ZRANGEBYSCORE', due, '-inf', now, 'LIMIT', 0, limit)) do
  local key = P .. 'delivery:' .. did
  local d = redis.call('HMGET', key, 'run_id', 'status', 'round', 'attempts', 'created_ms')
  if not d[1] then
    redis.call('ZREM', due, did)
  else
    local token = base .. ':' .. i
    redis.call('ZADD', due, now + vis, did)
    redis.call('HSET', key, 'claim', token, 'state', 'pending')
    for _, v in ipairs({did, token, d[3] or '0', d[4] or '0', d[1], d[2], d[5] or now}) do table.insert(out, v) end
  end
end
if #out == 1 then
  local first = redis.call('ZRANGE', due, 0, 0, 'WITHSCORES')
  if first[2] then out[1] = first[2] end
end
return out
