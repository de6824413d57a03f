-- cancel: queued or action_required -> cancelled at once; running -> cancelling (its worker stops it
-- at its next heartbeat, then it ends cancelled). ARGV: run_id, retention_s.
-- Returns the status after the call, or {'conflict', status} for a finished run.
local id, now, retention = ARGV[1], now_ms(), ARGV[2]
local status = redis.call('HGET', run_key(id), 'status')
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
