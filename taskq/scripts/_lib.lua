-- Shared by every script. scripts.py puts in front of it a generated prelude: the
-- facts defined in Python (TERMINAL, ACTIVE, NOTIFY, LEASED, ACTIVE_LIST, ALLOWED,
-- LINKS, COUNT, RQ_QUEUE), PFX = KEYS[1] (the partition's key prefix, keys.py) and
-- the key templates K.* built on it, so every key a script touches lies in its
-- partition's hash slot. Times are epoch ms from Redis's own clock (`now_ms`), never
-- a caller's: workers on many machines share no clock.

local NOW = nil
-- Redis's clock, read once per script call (every change of one call happens at one time).
local function now_ms()
  if not NOW then
    local t = redis.call('TIME')
    NOW = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  return NOW
end

local function append(list, ...)
  for _, v in ipairs({...}) do table.insert(list, v) end
  return list
end

-- A flat HGETALL/field list as a table (a later value of a field wins).
local function as_table(flat)
  local t = {}
  for i = 1, #flat, 2 do t[flat[i]] = flat[i + 1] end
  return t
end

-- "a,b,c" -> {'a', 'b', 'c'}
local function split(text, sep)
  local out = {}
  if not text or text == '' then return out end
  for part in string.gmatch(text, '[^' .. sep .. ']+') do table.insert(out, part) end
  return out
end

-- A run leaves K.running. A script that ends many runs sets LEASES_DROPPED to a table
-- first and removes them all with one ZREM (flush_leases) at its end.
local LEASES_DROPPED = nil
local function drop_lease(id)
  if LEASES_DROPPED then table.insert(LEASES_DROPPED, id) else redis.call('ZREM', K.running, id) end
end
local function flush_leases()
  local ids = LEASES_DROPPED or {}
  for i = 1, #ids, 1000 do
    redis.call('ZREM', K.running, unpack(ids, i, math.min(i + 999, #ids)))
  end
  LEASES_DROPPED = nil
end

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

-- Metrics: at most ONE command per status change. The field of K.metrics names the
-- change (old|new), a duration (the queue wait on the way into running; the attempt's
-- time on the way out of a leased status; else empty) and the processor (last: it may
-- hold any character). metrics.py turns the fields into counters and histograms. A
-- script that changes many runs sets COUNTS to a table first: equal fields are then
-- added up and written once each by flush_counts at its end (durations rounded to two
-- digits make most fields of one batch equal).
local COUNTS = nil
local function flush_counts()
  for field, n in pairs(COUNTS or {}) do redis.call('HINCRBY', K.metrics, field, n) end
  COUNTS = nil
end

local function count_transition(old, new, now, r)
  local ms = ''
  local started = r[LINK.started_ms]
  if old == 'queued' and new == 'running' then
    ms = ceil2(tonumber(now) - tonumber(r[LINK.next_attempt_ms] or r[LINK.created_ms] or now))
  elseif LEASED[old] and not LEASED[new] and started then
    ms = ceil2(tonumber(now) - tonumber(started))
  end
  local field = 'run|' .. (old or '') .. '|' .. new .. '|' .. ms .. '|' .. (r[LINK.processor] or '')
  if COUNTS then
    COUNTS[field] = (COUNTS[field] or 0) + 1
  else
    redis.call('HINCRBY', K.metrics, field, 1)
  end
end

-- The totals the dashboard's chart is drawn from (history.py), summed over processors
-- from the counters above, as a flat field/value list: `ended|<status>`, the runs that
-- reached each terminal status; `wait|<ms>`, the runs that started running after
-- waiting <ms> in their queue (rounded as above). Read, never counted per run: the
-- chart samples them once a minute (snapshot_metrics).
local function metrics_totals()
  local totals = {}
  local flat = redis.call('HGETALL', K.metrics)
  for i = 1, #flat, 2 do
    local old, new, ms = string.match(flat[i], '^run|([^|]*)|([^|]*)|([^|]*)|')
    local name = nil
    if new and TERMINAL[new] then
      name = 'ended|' .. new
    elseif old == 'queued' and new == 'running' and ms ~= '' then
      name = 'wait|' .. ms
    end
    if name then totals[name] = (totals[name] or 0) + tonumber(flat[i + 1]) end
  end
  local out = {}
  for name, n in pairs(totals) do append(out, name, n) end
  return out
end

-- The totals as of the start of a minute of Redis's clock (`minute`: tests take past
-- ones), with when they were taken (`at`), in K.metrics_snapshot(minute), unless that
-- minute has one: the first call in a minute writes, every later one costs an EXISTS.
local function snapshot_metrics(now, minute)
  local key = K.metrics_snapshot(minute or math.floor(now / 60000))
  if redis.call('EXISTS', key) == 1 then return end
  redis.call('HSET', key, 'at', now, unpack(metrics_totals()))
  redis.call('EXPIRE', key, SNAPSHOT_KEPT_S)
end

-- ---------------------------------------------------------------------------------
-- Lanes (docs/flow-control.md). A queued run that is due waits in its lane,
-- `processor|tenant|key`, ordered by priority band, then by age. A lane with runs
-- that is not parked is *ready*: its key sits in K.lanes(processor, tenant) and the
-- tenant in K.ready(processor), each scored by its turn; a claim serves the lowest
-- turn and moves it to the back, so lanes take turns and one backlog delays another
-- lane by about one run-length, never by its length.

local TURN = 0
-- A turn after every turn given so far: Redis's clock in µs-ish steps, so turns of
-- different calls order by time and those of one call by their sequence.
local function next_turn()
  TURN = TURN + 1
  return now_ms() * 1000 + TURN
end

local function lane_parts(lane)
  local p = string.find(lane, '|', 1, true)
  local t = string.find(lane, '|', p + 1, true)
  return string.sub(lane, 1, p - 1), string.sub(lane, p + 1, t - 1), string.sub(lane, t + 1)
end

local RQ_MIRROR = false  -- scripts set it: mirror lanes into RQ's queue lists (one Redis only)

-- The lane, if it has runs and is not parked, takes its turn at the back; a tenant
-- that had no ready lane of the processor becomes ready, and the processor's workers
-- are told (PUBLISH: the idle ones wake).
local function make_ready(lane)
  if redis.call('HEXISTS', K.parked, lane) == 1 or redis.call('ZCARD', K.lane(lane)) == 0 then return end
  local proc, tenant, key = lane_parts(lane)
  local turn = next_turn()
  if redis.call('ZADD', K.lanes(proc, tenant), 'NX', turn, key) == 1 then
    if redis.call('ZADD', K.ready(proc), 'NX', turn, tenant) == 1 then
      redis.call('SADD', K.ready_processors, proc)
      redis.call('PUBLISH', WAKE .. proc, PARTITION)
    end
  end
end

-- The lane has no runs, or is parked: it leaves the ready sets.
local function unready(lane)
  local proc, tenant, key = lane_parts(lane)
  local lanes = K.lanes(proc, tenant)
  redis.call('ZREM', lanes, key)
  if redis.call('ZCARD', lanes) == 0 then
    redis.call('ZREM', K.ready(proc), tenant)
    if redis.call('ZCARD', K.ready(proc)) == 0 then redis.call('SREM', K.ready_processors, proc) end
  end
end

-- A lane whose next run must wait (a limit): out of the ready sets until `until_ms`
-- (rate, pause) or until the limit `limit_id` gives units back (concurrency).
local function park(lane, limit_id, until_ms)
  unready(lane)
  if until_ms then
    redis.call('HSET', K.parked, lane, 'pause')
    redis.call('ZADD', K.delayed, until_ms, lane)  -- (a lane has '|' in it, a run id never)
  else
    redis.call('HSET', K.parked, lane, limit_id)
    redis.call('ZADD', K.limit_waiting(limit_id), 'NX', now_ms(), lane)
  end
end

local function unpark(lane)
  redis.call('HDEL', K.parked, lane)
  make_ready(lane)
end

-- A queued run (its record `rec`) that is due joins its lane.
local function enqueue(id, rec)
  local lane = rec.lane
  local band = tonumber(rec.priority_band) or 1
  redis.call('ZADD', K.lane(lane), band * 1e13 + (tonumber(rec.created_ms) or now_ms()), id)
  redis.call('HINCRBY', K.depth, rec.queue, 1)
  if RQ_MIRROR then redis.call('RPUSH', RQ_QUEUE .. rec.queue, id) end
  if redis.call('ZCARD', K.lane(lane)) == 1 then make_ready(lane) end
end

-- `count` runs of `queue` left their lanes (taken, or cancelled while waiting).
local function left_lanes(queue, count)
  redis.call('HINCRBY', K.depth, queue, -count)
  if RQ_MIRROR then redis.call('LPOP', RQ_QUEUE .. queue, count) end
end

-- A queued run stops waiting without running (cancelled): out of the due set, or out
-- of its lane (which leaves the ready sets if it is empty now).
local function leave_waiting(id, r)
  if redis.call('ZREM', K.delayed, id) == 1 then return end
  local lane = r[LINK.lane]
  if lane and redis.call('ZREM', K.lane(lane), id) == 1 then
    left_lanes(r[LINK.queue], 1)
    if redis.call('ZCARD', K.lane(lane)) == 0 then unready(lane) end
  end
end

-- A queued run waits: in the due set until `due_ms` if that is later, else in its lane.
-- (`rec` holds at least lane, queue, priority_band, created_ms.)
local function wait_for(id, rec, due_ms)
  if due_ms and tonumber(due_ms) > now_ms() then
    redis.call('ZADD', K.delayed, due_ms, id)
  else
    enqueue(id, rec)
  end
end

-- ---------------------------------------------------------------------------------
-- Limits (limits.py). A run's record lists the limits it needs (`limits`: "id*units,…");
-- a claim checks each against its budget (BUDGETS[kind], from the claiming worker:
-- {concurrency, interval_ms, burst}) and takes them all, or parks the lane; the run
-- then holds them (`holds`) until it leaves a leased status (set_status gives them back).

local BUDGETS = {}  -- budget name ('n:openai', 'p:crawl', 't') -> {conc, interval, burst}

local function budget_of(limit_id)
  local a, b = string.match(limit_id, '^([^:]+):([^:]*)')
  if a == 't' then return BUDGETS['t'] end
  return BUDGETS[(a or '') .. ':' .. (b or '')]
end

-- Each "id*units" of a list, as {id, units}.
local function uses(list)
  local out = {}
  for _, item in ipairs(split(list, ',')) do
    local id, n = string.match(item, '^(.*)%*(%d+)$')
    table.insert(out, {id or item, tonumber(n) or 1})
  end
  return out
end

-- Whether every limit of `needs` lets the run start now: true and the limits' states
-- (for take), or false with the limit that stops it and, for a rate or a pause, when
-- it may go. Rates are kept to the millisecond of Redis's clock: a rate faster than one
-- a millisecond admits as many in one millisecond as fit in it.
local function admit(needs, now)
  local states = {}
  for i, use in ipairs(needs) do
    local id, units = use[1], use[2]
    local b = budget_of(id)
    local st = redis.call('HMGET', K.limit(id), 'n', 'tat', 'until', 'win', 'wn', 'started')
    local paused = tonumber(st[3])
    if paused and paused > now then return false, id, paused end
    if b then
      local held = tonumber(st[1]) or 0
      -- (a run weighing more than the whole budget still goes, alone)
      if b[1] > 0 and held > 0 and held + units > b[1] then return false, id, nil end
      if b[2] > 0 then
        local tat = math.max(tonumber(st[2]) or 0, now)
        local slack = (b[3] - 1) * b[2]
        if tat - now >= slack + 1 then return false, id, tat - slack end
      end
    end
    states[i] = st
  end
  return true, states
end

-- Takes the units of every limit of `needs` (admit said yes, and read `states`);
-- returns them as `holds`. Also counts the units started: in all (`started`), this
-- minute (`wn`, the minute being `win`) and the minute before (`pn`), for taskq info,
-- the dashboard and /metrics.
local function take(needs, now, states)
  local held = {}
  local minute = math.floor(now / 60000)
  for i, use in ipairs(needs) do
    local id, units = use[1], use[2]
    local b = budget_of(id)
    local st = states[i]
    local win, wn = tonumber(st[4]), tonumber(st[5]) or 0
    local changed = {'n', (tonumber(st[1]) or 0) + units, 'started', (tonumber(st[6]) or 0) + units}
    if win ~= minute then
      append(changed, 'win', minute, 'pn', win == minute - 1 and wn or 0)
      wn = 0
    end
    append(changed, 'wn', wn + units)
    if b and b[2] > 0 then append(changed, 'tat', math.max(tonumber(st[2]) or 0, now) + units * b[2]) end
    redis.call('HSET', K.limit(id), unpack(changed))
    if not st[6] then redis.call('SADD', K.limits, id) end  -- (its first use here)
    table.insert(held, id .. '*' .. units)
  end
  return table.concat(held, ',')
end

-- Gives back what a run held: units back, and as many lanes waiting for them go again.
-- `pause_until`: the limits also pause until then (the processor raised RateLimited).
local function give_back(holds, pause_until)
  for _, use in ipairs(uses(holds)) do
    local id, units = use[1], use[2]
    local key = K.limit(id)
    if redis.call('HINCRBY', key, 'n', -units) < 0 then redis.call('HSET', key, 'n', 0) end
    if pause_until then redis.call('HSET', key, 'until', pause_until) end
    local waiting = redis.call('ZPOPMIN', K.limit_waiting(id), units)  -- lane, score, lane, score, ...
    for i = 1, #waiting, 2 do unpark(waiting[i]) end
  end
end

-- ---------------------------------------------------------------------------------

-- A run that ends: its event stream folded into its record, so that a finished run
-- keeps its history in a few dozen bytes rather than a stream (folding.unfold reads it
-- back). `events` is a JSON list, an item per entry: the entry's time first (the first
-- item's whole id, then ms after the entry before, "ms-seq" when seq is not 0); a state
-- event then has its status and those of a, e, s, n that are set and not carried (a,
-- e and s, once set, stay as the state event before had them); any other event its
-- fields. The stream itself goes after EVENTS_LINGER_MS, so that a reader blocked on it
-- now is still woken by its last event.
local STATE_CARRIED = {'a', 'e', 's', 'n'}
local function fold_events(id, key)
  local stream = K.run_events(id)
  local folded, last_ms, carried = {}, nil, {}
  for _, entry in ipairs(redis.call('XRANGE', stream, '-', '+')) do
    local ms, seq = string.match(entry[1], '^(%d+)-(%d+)$')
    ms = tonumber(ms)
    local stamp = entry[1]
    if last_ms then
      stamp = ms - last_ms
      if seq ~= '0' then stamp = stamp .. '-' .. seq end
    end
    last_ms = ms
    local f = as_table(entry[2])
    local item = {stamp}
    if f.type == STATE_EVENT then
      table.insert(item, f.status)
      for _, k in ipairs(STATE_CARRIED) do
        local v = f[k] or ''
        if v ~= '' and v ~= carried[k] then append(item, k, v) end
        if k ~= 'n' and v ~= '' then carried[k] = v end
      end
    else
      append(item, unpack(entry[2]))
    end
    table.insert(folded, item)
  end
  if #folded > 0 then redis.call('HSET', key, 'events', cjson.encode(folded)) end
  redis.call('PEXPIRE', stream, EVENTS_LINGER_MS)
end

-- The one step every status change goes through: the record (with `fields`, more
-- field/value pairs written in the same HSET), the run's event, the group's counters
-- and events, the webhook outbox, the metrics, the lease and the limits it holds,
-- together. `links` is the LINKS fields of the run (record.py), in that order, when
-- the caller has read them already (`links_of`, or an HMGET of LINKS); `fields` then
-- says what changed. A run leaving action_required leaves the waiting set and drops its
-- question; a queued run that stops waiting leaves its lane or the due set; a run
-- leaving a leased status gives its limits back; a run ending starts the clock on its
-- output files and their listing and its offloaded payloads (if it has any), folds its
-- events into its record and drops what a finished run no longer needs (FINISHED_DROP).
-- A change that sets has_outputs (a payload offloaded: outputs/payloads.py) puts the
-- run among those whose storage is swept once they expire. Only ALLOWED changes are made.
--
-- Each state event carries the run as of that change, so that a replay shows it as it
-- was (wire.as_of): a = attempts, e = how many errors it had (the last is its error),
-- s = started_ms, n = next_attempt_ms (while queued). Its time is the event's id.
local function set_status(id, old, new, now, retention_s, fields, links, pause_until)
  if not ALLOWED[old or ''][new] then
    error('taskq: illegal status change ' .. (old or 'new') .. ' -> ' .. new .. ' for ' .. id)
  end
  local key = K.run(id)
  local pairs_ = append({}, 'status', new, 'modified_ms', now)
  if TERMINAL[new] then append(pairs_, 'finished_ms', now) end
  for _, v in ipairs(fields or {}) do table.insert(pairs_, v) end
  if old == 'action_required' then
    redis.call('HDEL', key, 'required_action', 'asked_ms', 'answer_deadline_ms')
    redis.call('ZREM', K.waiting, id)
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
  redis.call('XADD', K.run_events(id), '*', 'type', 'task_run.state', unpack(state))
  local gid, hook, hook_all = r[LINK.taskgroup_id], r[LINK.webhook], r[LINK.webhook_all]
  local has_outputs = as_of('has_outputs') ~= ''
  if changed.has_outputs then redis.call('ZADD', K.outputs_expiring, 'NX', '+inf', id) end
  count_transition(old, new, now, r)
  if old == 'queued' and new ~= 'running' then leave_waiting(id, r) end
  if LEASED[old] and not LEASED[new] then
    drop_lease(id)
    local holds = r[LINK.holds]
    if holds then
      give_back(holds, pause_until)
      redis.call('HDEL', key, 'holds')
    end
  end
  if gid then
    local gkey = K.group(gid)
    if old then redis.call('HINCRBY', gkey, COUNT .. old, -1) end
    redis.call('HINCRBY', gkey, COUNT .. new, 1)
    redis.call('HSET', gkey, 'modified_ms', now)
    if NOTIFY[new] then
      redis.call('XADD', K.group_events(gid), '*', 'type', 'task_run.state', 'run_id', id, unpack(state))
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
        redis.call('XADD', K.group_events(gid), '*', 'type', 'task_group_status', 'counts', table.concat(counts, ','))
        -- A finished group expires with its runs; adding runs again persists it.
        for _, k in ipairs({gkey, K.group_runs(gid), K.group_events(gid)}) do
          redis.call('EXPIRE', k, retention_s)
        end
      end
    end
  end
  if hook and (NOTIFY[new] or hook_all == '1') then
    local seq = redis.call('HINCRBY', key, 'delivery_seq', 1)
    local did = id .. '.' .. seq
    redis.call('HSET', K.delivery(did), 'run_id', id, 'status', new, 'created_ms', now, 'attempts', 0)
    redis.call('RPUSH', K.run_deliveries(id), did)
    redis.call('ZADD', K.deliveries_due, now, did)
  end
  if TERMINAL[new] then
    fold_events(id, key)
    redis.call('HDEL', key, unpack(FINISHED_DROP))
    redis.call('EXPIRE', key, retention_s)
    if hook then redis.call('EXPIRE', K.run_deliveries(id), retention_s) end
    if has_outputs then
      redis.call('EXPIRE', K.run_outputs(id), retention_s)
      redis.call('EXPIRE', K.run_outputs_order(id), retention_s)
      redis.call('ZADD', K.outputs_expiring, 'XX', now + retention_s * 1000, id)
    end
  end
end

-- The fields that make `err_json` the run's error and add it to its error history.
local function error_fields(id, err_json)
  local history = redis.call('HGET', K.run(id), 'errors')
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
-- attempts, less those cut short without spending a retry) are within max_retries
-- and the failure is retryable; failed otherwise. `cur` holds the run's status,
-- attempts, interruptions, max_retries; `policy` is {base_ms, cap_ms, jitter}.
-- Returns the new status.
local function retry_or_fail(id, cur, err_json, retryable, now, retention_s, policy, links, fields)
  fields = append(fields or {}, unpack(error_fields(id, err_json)))
  local failures = (tonumber(cur.attempts) or 0) - (tonumber(cur.interruptions) or 0)
  if retryable and failures <= (tonumber(cur.max_retries) or 0) then
    local due = now + backoff_ms(failures, policy[1], policy[2], policy[3])
    append(fields, 'next_attempt_ms', due)
    set_status(id, cur.status, 'queued', now, retention_s, fields, links)
    redis.call('ZADD', K.delayed, due, id)
    return 'queued'
  end
  set_status(id, cur.status, 'failed', now, retention_s, fields, links)
  return 'failed'
end

-- What is due by now moves on: runs (retries past their backoff, runs made for later)
-- join their lanes, lanes paused until now go again.
local function promote_due(now, limit)
  local due = redis.call('ZRANGEBYSCORE', K.delayed, '-inf', now, 'LIMIT', 0, limit)
  if #due == 0 then return 0 end
  redis.call('ZREM', K.delayed, unpack(due))
  for _, member in ipairs(due) do
    if string.find(member, '|', 1, true) then
      unpark(member)
    else
      local r = redis.call('HMGET', K.run(member), 'status', 'lane', 'queue', 'priority_band', 'created_ms')
      if r[1] == 'queued' and r[2] then
        enqueue(member, {lane = r[2], queue = r[3], priority_band = r[4], created_ms = r[5]})
      end
    end
  end
  return #due
end

-- When something here is next due: a delayed run or a paused lane (ms, or false).
local function next_due()
  return tonumber(redis.call('ZRANGE', K.delayed, 0, 0, 'WITHSCORES')[2]) or false
end

-- Moves on what is due by now (runs into their lanes, paused lanes back), if anything
-- is; returns when the next thing is due after that.
local function tend_due(now, limit)
  local due = next_due()
  if due and due <= now then
    promote_due(now, limit)
    due = next_due()
  end
  return due
end

-- ---------------------------------------------------------------------------------
-- Claims: a worker takes up to `want` runs of the processors it serves (claim.lua,
-- and finish.lua for the slots its outcomes free, in the same step).

-- What a worker serves and the budgets of the limits its runs can need, from ARGV at
-- `i`: n_processors, the processors..., n_budgets, then per budget: name ('n:openai',
-- 'p:crawl', 't' for every tenant), concurrency (0: none), interval_ms (0: no rate),
-- burst. Returns the processors, and the index after them.
local function read_request(i)
  local procs = {}
  for _ = 1, tonumber(ARGV[i]) do
    i = i + 1
    table.insert(procs, ARGV[i])
  end
  i = i + 1
  local n_budgets = tonumber(ARGV[i])
  i = i + 1
  for _ = 1, n_budgets do
    BUDGETS[ARGV[i]] = {tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3])}
    i = i + 4
  end
  return procs, i
end

-- Lanes take turns: the lowest turn among the processors' ready tenants, within it its
-- lowest-turn lane, from which the runs at the head are taken if every limit each needs
-- lets it start (else the lane parks and the next turn is tried). A lane serves up to
-- its share of `want` in one turn (`want` / the tenants ready), so a lone backlog fills
-- every free slot in one call while several take turns. A taken run goes queued ->
-- running with one more attempt, a lease until `now + lease_ms`, and the limits it took
-- (`holds`); its token is `base.attempt` (`base`: '<worker name>:<nonce>'). Nothing is
-- between a lane and a lease, so a worker that dies at any moment strands nothing.
-- Appends to `out` each run taken, as a flat field/value list of it as it now is (a
-- field may appear twice: the later value is the current one); returns whether ready
-- lanes of these processors are left here, and the earliest time a lane it parked on a
-- rate or a pause may go (nil: none), which the caller reports as due.
local function claim_runs(out, procs, want, now, lease_ms, retention, base)
  local worker = string.match(base, '^(.*):[^:]*$') or base
  local deadline = now + lease_ms
  -- Each processor's head: its ready tenant with the lowest turn (and whether it is
  -- alone), for the processors served that have a ready lane here.
  local heads = {}
  local function read_head(proc)
    local h = redis.call('ZRANGE', K.ready(proc), 0, 1, 'WITHSCORES')
    heads[proc] = h[1] and {h[1], tonumber(h[2]), h[3] == nil} or nil
  end
  local ready_here = {}
  for _, proc in ipairs(redis.call('SMEMBERS', K.ready_processors)) do ready_here[proc] = true end
  local served = {}
  for _, proc in ipairs(procs) do
    if ready_here[proc] then
      table.insert(served, proc)
      read_head(proc)
    end
  end
  local leases, left = {}, {}
  local soonest = nil  -- the earliest a lane it parked on a rate or a pause may go
  local tenant_cap = BUDGETS['t'] and BUDGETS['t'][1] > 0

  -- Takes up to `quota` runs from the head of `lane`; returns how many it looked at,
  -- whether the lane had to park (its next run must wait for a limit), and whether
  -- runs are left in it.
  local function serve(lane, quota)
    local ids = redis.call('ZRANGE', K.lane(lane), 0, quota)  -- one more: is any left?
    local taken, parked = {}, false
    for n, id in ipairs(ids) do
      if n > quota then break end
      local key = K.run(id)
      local flat = redis.call('HGETALL', key)
      local rec = as_table(flat)
      if rec.status == 'queued' then
        local needs = uses(rec.limits)
        if tenant_cap then table.insert(needs, {'t:' .. rec.tenant, 1}) end
        local ok, got, until_ms = admit(needs, now)  -- got: the limits' states, or the one that stops it
        if not ok then
          park(lane, got, until_ms)
          if until_ms and (soonest == nil or until_ms < soonest) then soonest = until_ms end
          parked = true
          break
        end
        local attempt = (tonumber(rec.attempts) or 0) + 1
        local changed = {'attempts', attempt, 'token', base .. '.' .. attempt, 'started_ms', now, 'worker', worker}
        if #needs > 0 then append(changed, 'holds', take(needs, now, got)) end
        if rec.next_attempt_ms then redis.call('HDEL', key, 'next_attempt_ms') end
        set_status(id, 'queued', 'running', now, retention, changed, links_of(rec))
        append(leases, deadline, id)
        table.insert(out, append(flat, 'status', 'running', 'modified_ms', now, unpack(changed)))
        left[rec.queue] = (left[rec.queue] or 0) + 1
        want = want - 1
      end
      table.insert(taken, id)  -- taken, or no longer queued (cancelled, expired): out either way
    end
    if #taken > 0 then redis.call('ZREM', K.lane(lane), unpack(taken)) end
    return #taken, parked, #ids > #taken
  end

  while want > 0 do
    local proc, head = nil, nil
    for _, p in ipairs(served) do
      local h = heads[p]
      if h and (head == nil or h[2] < head[2]) then proc, head = p, h end
    end
    if proc == nil then break end
    local tenant, tenant_alone = head[1], head[3]
    local lanes = K.lanes(proc, tenant)
    local first = redis.call('ZRANGE', lanes, 0, 1)
    local key = first[1]
    local same = false  -- the head stays as it was (not worth reading again)
    if key == nil then
      unready(proc .. '|' .. tenant .. '|')  -- (a tenant with no lane left: out of the ready sets)
    else
      local lane = proc .. '|' .. tenant .. '|' .. key
      local share = want
      if not tenant_alone then share = math.ceil(want / redis.call('ZCARD', K.ready(proc))) end
      local _, parked, more = serve(lane, share)
      if not parked then
        if not more then
          unready(lane)
        else  -- to the back: its tenant's next lane goes next, and the next tenant before it
          local turn = next_turn()
          if first[2] then redis.call('ZADD', lanes, turn, key) end
          if tenant_alone then same = true else redis.call('ZADD', K.ready(proc), turn, tenant) end
        end
      end
    end
    if not same or want > 0 then read_head(proc) end
  end

  for queue, count in pairs(left) do left_lanes(queue, count) end
  if #leases > 0 then redis.call('ZADD', K.running, unpack(leases)) end
  for _, proc in ipairs(served) do
    if heads[proc] then return true, soonest end
  end
  return false, soonest
end
