-- claim: a worker takes a queued run: queued -> running, one more attempt, a lease.
-- The RQ job that carried it leaves RQ's intermediate list in the same step: from
-- here on the lease answers for the run (see rescue.lua for the moment before).
-- ARGV: run_id, token, now, lease_deadline, retention_s, intermediate_key, job_id
-- Returns the run record as a flat field/value list (a field may appear twice: the
-- later value is the current one), or {} when it is not claimable (cancelled while
-- queued, already claimed, expired).
local id, token, now = ARGV[1], ARGV[2], ARGV[3]
local key = run_key(id)
redis.call('LREM', ARGV[6], 1, ARGV[7])
local flat = redis.call('HGETALL', key)
local rec = as_table(flat)
if rec.status ~= 'queued' then return {} end
if rec.next_attempt_ms then redis.call('HDEL', key, 'next_attempt_ms') end
redis.call('ZADD', P .. 'running', ARGV[4], id)
local changed = {'attempts', (tonumber(rec.attempts) or 0) + 1, 'token', token, 'started_ms', now}
set_status(id, 'queued', 'running', now, ARGV[5], changed,
  {rec.taskgroup_id or false, rec.webhook or false, rec.webhook_all or false})
return append(flat, 'status', 'running', 'modified_ms', now, unpack(changed))
