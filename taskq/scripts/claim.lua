-- claim: a worker takes a queued run: queued -> running, one more attempt, a lease.
-- ARGV: run_id, token, now, lease_deadline, retention_s
-- Returns the run record as a flat field/value list, or {} when it is not claimable
-- (cancelled while queued, already claimed, expired).
local id, token, now = ARGV[1], ARGV[2], ARGV[3]
local key = run_key(id)
if redis.call('HGET', key, 'status') ~= 'queued' then return {} end
redis.call('HINCRBY', key, 'attempts', 1)
redis.call('HSET', key, 'token', token, 'started_ms', now)
redis.call('HDEL', key, 'next_attempt_ms')
redis.call('ZADD', P .. 'running', ARGV[4], id)
set_status(id, 'queued', 'running', now, ARGV[5])
return redis.call('HGETALL', key)
