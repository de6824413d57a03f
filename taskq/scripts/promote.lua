-- promote: queued runs whose backoff is over go onto their RQ queue.
-- ARGV: rq_now, rq_data, limit. Returns how many were pushed.
local pushed = 0
for _, id in ipairs(redis.call('ZRANGEBYSCORE', P .. 'delayed', '-inf', now_ms(), 'LIMIT', 0, ARGV[3])) do
  redis.call('ZREM', P .. 'delayed', id)
  local r = redis.call('HMGET', run_key(id), 'status', 'queue', 'timeout_s')
  if r[1] == 'queued' then
    push_rq_job(id, r[2], r[3], ARGV[2], ARGV[1])
    pushed = pushed + 1
  end
end
return pushed
