-- cancel: queued or action_required -> cancelled at once (a queued run leaves its lane
-- or the due set); running -> cancelling (its worker stops it at its next heartbeat,
-- then it ends cancelled). One run, or a batch of one group's runs (one partition).
-- KEYS: the partition's prefix. ARGV: retention_s, rq_mirror, run_id...
-- Returns, per run, its status after the call, or {'conflict', status} for a finished run.
local now, retention = now_ms(), ARGV[1]
RQ_MIRROR = ARGV[2] == '1'
COUNTS = {}
local out = {}
for i = 3, #ARGV do
  local id = ARGV[i]
  local status = redis.call('HGET', K.run(id), 'status')
  if status == 'queued' or status == 'action_required' then
    set_status(id, status, 'cancelled', now, retention)
    out[#out + 1] = 'cancelled'
  elseif status == 'running' then
    set_status(id, status, 'cancelling', now, retention)
    out[#out + 1] = 'cancelling'
  elseif status == 'cancelling' then
    out[#out + 1] = status
  else
    out[#out + 1] = {'conflict', status or 'missing'}
  end
end
flush_counts()
return out
