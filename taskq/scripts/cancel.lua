-- cancel: queued or action_required -> cancelled at once (a queued run leaves its lane
-- or the due set); running -> cancelling (its worker stops it at its next heartbeat,
-- then it ends cancelled).
-- KEYS: the partition's prefix. ARGV: run_id, retention_s, rq_mirror.
-- Returns the status after the call, or {'conflict', status} for a finished run.
local id, now, retention = ARGV[1], now_ms(), ARGV[2]
RQ_MIRROR = ARGV[3] == '1'
local status = redis.call('HGET', K.run(id), 'status')
if status == 'queued' or status == 'action_required' then
  set_status(id, status, 'cancelled', now, retention)
  return 'cancelled'
elseif status == 'running' then
  set_status(id, status, 'cancelling', now, retention)
  return 'cancelling'
elseif status == 'cancelling' then
  return status
end
return {'conflict', status or 'missing'}
