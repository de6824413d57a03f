-- rescue: RQ jobs stranded in an intermediate list. A single-queue RQ worker moves
-- a job there (BLMOVE) and taskq's claim takes it out; a worker that dies between
-- the two leaves it behind, with its run still queued and on no queue. A job seen
-- there for `stale_ms` is dropped and its run, if still queued, goes back to its
-- queue through taskq:delayed (promote gives it a fresh RQ job).
-- ARGV: stale_ms. Returns the run ids put back.
local now, stale = now_ms(), tonumber(ARGV[1])
local rescued = {}
for _, qkey in ipairs(redis.call('SMEMBERS', 'rq:queues')) do
  local ikey = qkey .. ':intermediate'
  for _, job_id in ipairs(redis.call('LRANGE', ikey, 0, -1)) do
    local mark = P .. 'stranded:' .. job_id
    local seen = tonumber(redis.call('GET', mark))
    if not seen then
      redis.call('SET', mark, now, 'PX', stale * 4)
    elseif now - seen >= stale then
      redis.call('LREM', ikey, 1, job_id)
      redis.call('DEL', 'rq:job:' .. job_id, mark)
      local id = string.match(job_id, '^([^-]+)')
      if redis.call('HGET', run_key(id), 'status') == 'queued' then
        redis.call('ZADD', P .. 'delayed', now, id)
        table.insert(rescued, id)
      end
    end
  end
end
return rescued
