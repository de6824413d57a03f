-- Shared by every script (scripts.py puts it in front of each, after the generated
-- prelude that defines TERMINAL, ACTIVE, NOTIFY, LEASED, ACTIVE_LIST, ALLOWED, LINKS
-- and COUNT from the Python definitions).
-- Times are epoch milliseconds from Redis's own clock (`now_ms`), never a caller's:
-- workers on many machines share no clock, and leases, due times, deadlines and
-- retention must not depend on theirs agreeing. RQ's own timestamps are its ISO strings.
local P = 'taskq:'

local NOW = nil
-- Redis's clock, read once per script call (every change of one call happens at one time).
local function now_ms()
  if not NOW then
    local t = redis.call('TIME')
    NOW = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  return NOW
end

local function run_key(id) return P .. 'run:' .. id end

-- Writes an RQ job for the run and puts it on its queue. Each push gets its own job
-- id, `{run_id}-{n}`: RQ deletes a finished attempt's job after the attempt returns,
-- which must not take the next attempt's job with it. `data` is the one pickled call
-- every run shares (taskq.engine.execute, never called: taskq's worker claims the job).
-- `n` is the push's number when the caller knows it (the first push), else counted.
local function push_rq_job(id, queue, timeout, rq_data, rq_now, n)
  n = n or redis.call('HINCRBY', run_key(id), 'pushes', 1)
  local job_id = id .. '-' .. n
  redis.call('HSET', 'rq:job:' .. job_id, 'data', rq_data, 'origin', queue,
    'description', 'taskq run', 'timeout', timeout, 'result_ttl', 0, 'failure_ttl', 0,
    'status', 'queued', 'created_at', rq_now, 'enqueued_at', rq_now)
  redis.call('RPUSH', 'rq:queue:' .. queue, job_id)
  if n == 1 then redis.call('SADD', 'rq:queues', 'rq:queue:' .. queue) end  -- RQ's list of queues
end

local function append(list, ...)
  for _, v in ipairs({...}) do table.insert(list, v) end
  return list
end

-- A flat HGETALL/field list as a table.
local function as_table(flat)
  local t = {}
  for i = 1, #flat, 2 do t[flat[i]] = flat[i + 1] end
  return t
end

-- A run leaves taskq:running. A script that ends many runs sets LEASES_DROPPED to a
-- table first and removes them all with one ZREM (flush_leases) at its end.
local LEASES_DROPPED = nil
local function drop_lease(id)
  if LEASES_DROPPED then table.insert(LEASES_DROPPED, id) else redis.call('ZREM', P .. 'running', id) end
end
local function flush_leases()
  local ids = LEASES_DROPPED or {}
  for i = 1, #ids, 1000 do
    redis.call('ZREM', P .. 'running', unpack(ids, i, math.min(i + 999, #ids)))
  end
  LEASES_DROPPED = nil
end

-- The one step every status change goes through: the record (with `fields`, more
-- field/value pairs written in the same HSET), the run's event, the group's
-- counters and events, the webhook outbox and the metrics change together. `links`
-- is the LINKS fields of the run (record.py), in that order, when the caller has read them
-- already (`links_of`, or an HMGET of LINKS); `fields` then says what changed. A run
-- leaving action_required leaves the waiting set and drops its question; a run ending
-- starts the clock on its output files and their listing (if it has any).
--
-- Each state event carries the run as of that change, so that a replay shows it as it
-- was (events.py): a = attempts, e = how many errors it had (the last is its error),
-- s = started_ms, n = next_attempt_ms (while queued). Its time is the event's id.
local LINK = {}  -- a LINKS name -> its position, so positions are never spelled twice
for i, name in ipairs(LINKS) do LINK[name] = i end
local function links_of(rec)
  local r = {}
  for i, name in ipairs(LINKS) do r[i] = rec[name] or false end
  return r
end

-- A duration in ms, rounded up to 2 significant digits: few distinct values to count,
-- and every Prometheus bucket bound of 2 significant digits stays exact (metrics.py).
local function ceil2(ms)
  ms = math.max(0, math.ceil(ms))
  local step = 1
  while ms > 99 * step do step = step * 10 end
  return math.ceil(ms / step) * step
end

-- Metrics: ONE command per status change. The field of `taskq:metrics` names the
-- change (old|new), a duration (the queue wait on the way into running; the
-- attempt's time on the way out of it; else empty) and the processor (last: it may
-- hold any character). metrics.py turns the fields into counters and histograms.
local function count_transition(old, new, now, r)
  local ms = ''
  local started = r[LINK.started_ms]
  if old == 'queued' and new == 'running' then
    ms = ceil2(tonumber(now) - tonumber(r[LINK.next_attempt_ms] or r[LINK.created_ms] or now))
  elseif LEASED[old] and not LEASED[new] and started then
    ms = ceil2(tonumber(now) - tonumber(started))
  end
  redis.call('HINCRBY', P .. 'metrics', 'run|' .. (old or '') .. '|' .. new .. '|' .. ms .. '|' .. (r[LINK.processor] or ''), 1)
end

local function set_status(id, old, new, now, retention_s, fields, links)
  if not ALLOWED[old or ''][new] then
    error('taskq: illegal status change ' .. (old or 'new') .. ' -> ' .. new .. ' for ' .. id)
  end
  local key = run_key(id)
  local pairs_ = append({}, 'status', new, 'modified_ms', now)
  if TERMINAL[new] then append(pairs_, 'finished_ms', now) end
  for _, v in ipairs(fields or {}) do table.insert(pairs_, v) end
  if old == 'action_required' then
    redis.call('HDEL', key, 'required_action', 'asked_ms', 'answer_deadline_ms')
    redis.call('ZREM', P .. 'waiting', id)
  end
  redis.call('HSET', key, unpack(pairs_))
  local r = links or redis.call('HMGET', key, unpack(LINKS))
  local changed = as_table(fields or {})
  local function as_of(name)
    local v = changed[name]
    if v == nil then v = r[LINK[name]] end
    return v or ''
  end
  local state = {'status', new, 'a', as_of('attempts'), 'e', as_of('errors_n'), 's', as_of('started_ms'),
    'n', new == 'queued' and as_of('next_attempt_ms') or ''}
  redis.call('XADD', key .. ':events', '*', 'type', 'task_run.state', unpack(state))
  local gid, hook, hook_all, has_outputs = r[LINK.taskgroup_id], r[LINK.webhook], r[LINK.webhook_all], r[LINK.has_outputs]
  count_transition(old, new, now, r)
  if gid then
    local gkey = P .. 'group:' .. gid
    if old then redis.call('HINCRBY', gkey, COUNT .. old, -1) end
    redis.call('HINCRBY', gkey, COUNT .. new, 1)
    redis.call('HSET', gkey, 'modified_ms', now)
    if NOTIFY[new] then
      redis.call('XADD', gkey .. ':events', '*', 'type', 'task_run.state', 'run_id', id, unpack(state))
    end
    if TERMINAL[new] then
      local fields_ = {}
      for i, s in ipairs(ACTIVE_LIST) do fields_[i] = COUNT .. s end
      local active = 0
      for _, c in ipairs(redis.call('HMGET', gkey, unpack(fields_))) do active = active + (tonumber(c) or 0) end
      if active == 0 then
        -- The group as of now: its counters, so a replay shows the counts it had then.
        local counts = {}
        for k, v in pairs(as_table(redis.call('HGETALL', gkey))) do
          if string.sub(k, 1, #COUNT) == COUNT or k == 'num_task_runs' then table.insert(counts, k .. '=' .. v) end
        end
        redis.call('XADD', gkey .. ':events', '*', 'type', 'task_group_status', 'counts', table.concat(counts, ','))
        -- A finished group expires with its runs; adding runs again persists it.
        for _, k in ipairs({gkey, gkey .. ':runs', gkey .. ':events'}) do
          redis.call('EXPIRE', k, retention_s)
        end
      end
    end
  end
  if hook and (NOTIFY[new] or hook_all == '1') then
    local seq = redis.call('HINCRBY', key, 'delivery_seq', 1)
    local did = id .. '.' .. seq
    redis.call('HSET', P .. 'delivery:' .. did, 'run_id', id, 'status', new, 'created_ms', now, 'attempts', 0)
    redis.call('RPUSH', key .. ':deliveries', did)
    redis.call('ZADD', P .. 'deliveries:due', now, did)
  end
  if TERMINAL[new] then
    if LEASED[old] then drop_lease(id) end
    if old == 'queued' then redis.call('ZREM', P .. 'delayed', id) end
    redis.call('EXPIRE', key, retention_s)
    redis.call('EXPIRE', key .. ':events', retention_s)
    if hook then redis.call('EXPIRE', key .. ':deliveries', retention_s) end
    if has_outputs ~= false then
      redis.call('EXPIRE', key .. ':outputs', retention_s)
      redis.call('EXPIRE', key .. ':outputs:order', retention_s)
      redis.call('ZADD', P .. 'outputs:expiring', 'XX', now + retention_s * 1000, id)
    end
  end
end

-- The fields that make `err_json` the run's error and add it to its error history.
local function error_fields(id, err_json)
  local history = redis.call('HGET', run_key(id), 'errors')
  local list = history and cjson.decode(history) or {}
  table.insert(list, cjson.decode(err_json))
  return {'error', err_json, 'errors', cjson.encode(list), 'errors_n', #list}
end

-- The one backoff curve: the n-th wait (n >= 1) is base * 2^(n-1) ms, at most cap,
-- times jitter (in [0.5, 1], chosen by the caller; 1 for none).
local function backoff_ms(n, base, cap, jitter)
  return math.floor(math.min(cap, base * 2 ^ (math.max(n, 1) - 1)) * (jitter or 1))
end

-- The one retry rule, for every way an attempt can fail (the processor raised, it
-- timed out, its worker was lost): retried after a backoff while the failures (the
-- attempts, less those a shutdown or a hand-back cut short) are within max_retries
-- and the failure is retryable; failed otherwise. `cur` holds the run's
-- status, attempts, interruptions, max_retries; `policy` is {base_ms, cap_ms,
-- jitter} (jitter in [0.5, 1], chosen by the caller). Returns the new status.
local function retry_or_fail(id, cur, err_json, retryable, now, retention_s, policy, links, fields)
  fields = append(fields or {}, unpack(error_fields(id, err_json)))
  local failures = (tonumber(cur.attempts) or 0) - (tonumber(cur.interruptions) or 0)
  if retryable and failures <= (tonumber(cur.max_retries) or 0) then
    local due = now + backoff_ms(failures, policy[1], policy[2], policy[3])
    append(fields, 'next_attempt_ms', due)
    drop_lease(id)
    redis.call('ZADD', P .. 'delayed', due, id)
    set_status(id, cur.status, 'queued', now, retention_s, fields, links)
    return 'queued'
  end
  set_status(id, cur.status, 'failed', now, retention_s, fields, links)
  return 'failed'
end
