-- claim: a worker takes a queued run: queued -> running, one more attempt, a lease.
-- ARGV: run_id, token, now, lease_deadline, retention_s
-- Returns the run record as a flat field/value list, or {} when it is not claimable
-- (cancelled while queued, already claimed, expired).
local id, token, now = ARGV[1], ARGV[2], ARGV[3]
local key = run_key(id)
local r = redis.call('HMGET', key, 'status', 'attempts', 'next_attempt_ms')
if r[1] ~= 'queued' then return {} end
if r[3] then redis.call('HDEL', key, 'next_attempt_ms') end
redis.call('ZADD', P .. 'running', ARGV[4], id)
set_status(id, 'queued', 'running', now, ARGV[5],
  {'attempts', (tonumber(r[2]) or 0) + 1, 'token', token, 'started_ms', now})
return redis.call('HGETALL', key)
