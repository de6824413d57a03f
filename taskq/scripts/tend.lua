-- tend: what every worker's maintenance thread does for each partition, now and then:
-- runs whose lease ran out lost their worker (kill -9, a machine gone) and go through
-- the one retry rule (retry_or_fail) as a retryable failure, "worker lost" (a
-- cancelling one is cancelled); runs in action_required past their deadline fail (no
-- answer came); runs due by now join their lanes and paused lanes past their pause
-- go again (as claims do: this catches what no claim looked at); and the first call in
-- a minute snapshots the metrics for the dashboard's chart (snapshot_metrics).
-- KEYS: the partition's prefix.
-- ARGV: limit, retention_s, backoff_base_ms, backoff_cap_ms, jitter, rq_mirror, and
-- optionally the minute to snapshot (tests; else the current one of Redis's clock).
-- Returns {the ids reaped or failed}.
local now, limit, retention, reaped = now_ms(), ARGV[1], ARGV[2], {}
local policy = {tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])}
RQ_MIRROR = ARGV[6] == '1'
for _, id in ipairs(redis.call('ZRANGEBYSCORE', K.running, '-inf', now, 'LIMIT', 0, limit)) do
  local r = redis.call('HMGET', K.run(id), 'status', 'attempts', 'interruptions', 'max_retries')
  redis.call('ZREM', K.running, id)
  if LEASED[r[1]] then
    if r[1] == 'cancelling' then
      set_status(id, r[1], 'cancelled', now, retention, {'token', ''})
    else
      local attempts = tonumber(r[2]) or 0
      local err = cjson.encode({ref_id = id .. '.' .. attempts, message = 'worker lost',
        detail = {attempt = attempts, type = 'WorkerLost',
          message = 'the worker running this attempt stopped renewing its lease'}})
      retry_or_fail(id, {status = r[1], attempts = r[2], interruptions = r[3], max_retries = r[4]},
        err, true, now, retention, policy, nil, {'token', ''})
    end
    table.insert(reaped, id)
  end
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', K.waiting, '-inf', now, 'LIMIT', 0, limit)) do
  local raw = redis.call('HMGET', K.run(id), 'status', 'required_action', 'asked_ms', 'answer_deadline_ms')
  if raw[1] == 'action_required' then
    local asked = cjson.decode(raw[2])
    local waited_s = math.floor((tonumber(raw[4]) - tonumber(raw[3])) / 1000)
    local err = cjson.encode({ref_id = id .. '.action', message = 'no answer came within ' .. waited_s .. ' s',
      detail = {reason = 'the run waited for an answer (POST /v1/tasks/runs/{id}/action) past its deadline',
                question = asked.message}})
    set_status(id, 'action_required', 'failed', now, retention, error_fields(id, err))
    table.insert(reaped, id)
  else
    redis.call('ZREM', K.waiting, id)
  end
end
tend_due(now, limit)
snapshot_metrics(now, tonumber(ARGV[7] or ''))
return reaped
