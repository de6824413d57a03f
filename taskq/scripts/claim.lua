-- claim: a worker takes up to `count` queued runs off its queues, in the order the
-- queues are given, in one step: each RQ job id leaves its queue (LPOP with a count)
-- and its RQ job hash is deleted, and each run it carries goes queued -> running
-- with one more attempt and a lease. A job whose run is not queued any more
-- (cancelled while it waited, expired) is dropped. Nothing is in between a queue
-- and a lease, so a worker that dies at any moment strands nothing.
-- ARGV: lease_ms, retention_s, token_base, count, queue names...
-- Returns one flat field/value list per run claimed: its record as it now is (a
-- field may appear twice: the later value is the current one). Each attempt's
-- token is `token_base.attempt`.
local now = now_ms()
local deadline, retention, base = now + tonumber(ARGV[1]), ARGV[2], ARGV[3]
local want = tonumber(ARGV[4])
local out, leases, jobs = {}, {}, {}
for q = 5, #ARGV do
  if want <= 0 then break end
  local ids = redis.call('LPOP', 'rq:queue:' .. ARGV[q], want)
  for _, job_id in ipairs(ids or {}) do
    table.insert(jobs, 'rq:job:' .. job_id)
    local id = string.match(job_id, '^([^-]+)')
    local key = run_key(id)
    local flat = redis.call('HGETALL', key)
    local rec = as_table(flat)
    if rec.status == 'queued' then
      local attempt = (tonumber(rec.attempts) or 0) + 1
      local changed = {'attempts', attempt, 'token', base .. '.' .. attempt, 'started_ms', now}
      if rec.next_attempt_ms then redis.call('HDEL', key, 'next_attempt_ms') end
      set_status(id, 'queued', 'running', now, retention, changed, links_of(rec))
      append(leases, deadline, id)
      table.insert(out, append(flat, 'status', 'running', 'modified_ms', now, unpack(changed)))
      want = want - 1
    end
  end
end
if #leases > 0 then redis.call('ZADD', P .. 'running', unpack(leases)) end
if #jobs > 0 then redis.call('UNLINK', unpack(jobs)) end
return out
