-- reap: runs whose lease ran out lost their worker (kill -9, a machine gone).
-- Each is retried at once if retries remain, failed otherwise; a cancelling one is
-- cancelled. ARGV: now, limit, retention_s. Returns the ids reaped.
local now, reaped = ARGV[1], {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', P .. 'running', '-inf', now, 'LIMIT', 0, ARGV[2])) do
  local key = run_key(id)
  local r = redis.call('HMGET', key, 'status', 'attempts', 'interruptions', 'max_retries', 'timeout_s')
  redis.call('ZREM', P .. 'running', id)
  if r[1] == 'running' or r[1] == 'cancelling' then
    redis.call('HDEL', key, 'token')
    if r[1] == 'cancelling' then
      set_status(id, r[1], 'cancelled', now, ARGV[3])
    else
      local attempts = tonumber(r[2]) or 0
      local err = cjson.encode({ref_id = id .. '.' .. attempts, message = 'worker lost',
        detail = {attempt = attempts, reason = 'the worker running this attempt stopped renewing its lease'}})
      local fields = error_fields(id, err)
      if attempts - (tonumber(r[3]) or 0) <= (tonumber(r[4]) or 0) then
        redis.call('ZADD', P .. 'delayed', now, id)
        set_status(id, r[1], 'queued', now, ARGV[3], append(fields, 'next_attempt_ms', now))
      else
        set_status(id, r[1], 'failed', now, ARGV[3], fields)
      end
    end
    table.insert(reaped, id)
  end
end
return reaped
