-- claim: a worker takes up to `want` runs of the processors it serves from one
-- partition, in one step. First the partition's due work moves: runs due by now join
-- their lanes (promote_due), lanes paused until now go again (unpause_due). Then
-- lanes take turns (_lib.lua, "Lanes"): the lowest turn among the worker's
-- processors' ready tenants, within it its lowest-turn lane, from which the run at the
-- head is taken if every limit it needs lets it start (else the lane is parked and the
-- next turn is tried). A taken run goes queued -> running with one more attempt, a
-- lease, and the limits it took (`holds`). Nothing is between a lane and a lease, so a
-- worker that dies at any moment strands nothing.
--
-- A lane serves up to its share of `want` in one turn (`want` / the tenants ready),
-- so a lone backlog fills every free slot in one call while several take turns.
--
-- KEYS: the partition's prefix.
-- ARGV: lease_ms, retention_s, token_base, want, rq_mirror ('1' or ''), n_processors,
--       the processors..., n_budgets, then per budget: name ('n:openai', 'p:crawl',
--       't' for every tenant), concurrency (0: none), interval_ms (0: no rate), burst.
-- Returns {next_due_ms or '', more ('1': ready lanes are left), record, record, ...},
-- each record a flat field/value list of the run as it now is (a field may appear
-- twice: the later value is the current one). An attempt's token is `token_base.attempt`.
local now = now_ms()
local deadline, retention, base = now + tonumber(ARGV[1]), ARGV[2], ARGV[3]
local want = tonumber(ARGV[4])
RQ_MIRROR = ARGV[5] == '1'
local procs, i = {}, 7
for _ = 1, tonumber(ARGV[6]) do table.insert(procs, ARGV[i]); i = i + 1 end
local n_budgets = tonumber(ARGV[i]); i = i + 1
for _ = 1, n_budgets do
  BUDGETS[ARGV[i]] = {tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3])}
  i = i + 4
end

local due = tend_due(now, 1000)

-- Each processor's head: the ready tenant with the lowest turn, read once (for the
-- processors served that have a ready lane here) and again for the one just served.
local heads = {}
local function read_head(proc)
  local h = redis.call('ZRANGE', K.ready(proc), 0, 0, 'WITHSCORES')
  heads[proc] = h[1] and {h[1], tonumber(h[2])} or nil
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
procs = served

local out, leases, left = {'', ''}, {}, {}
local tenant_cap = BUDGETS['t'] and BUDGETS['t'][1] > 0

-- Takes up to `quota` runs from the head of `lane`; returns how many, and whether the
-- lane had to park (its next run must wait for a limit).
local function serve(lane, quota)
  local ids = redis.call('ZRANGE', K.lane(lane), 0, quota - 1)
  local taken, parked = {}, false
  for _, id in ipairs(ids) do
    local key = K.run(id)
    local flat = redis.call('HGETALL', key)
    local rec = as_table(flat)
    if rec.status == 'queued' then
      local needs = uses(rec.limits)
      if tenant_cap then table.insert(needs, {'t:' .. rec.tenant, 1}) end
      local ok, limit_id, until_ms = admit(needs, now)
      if not ok then
        park(lane, limit_id, until_ms)
        parked = true
        break
      end
      local attempt = (tonumber(rec.attempts) or 0) + 1
      local changed = {'attempts', attempt, 'token', base .. '.' .. attempt, 'started_ms', now}
      if #needs > 0 then append(changed, 'holds', take(needs, now)) end
      if rec.next_attempt_ms then redis.call('HDEL', key, 'next_attempt_ms') end
      set_status(id, 'queued', 'running', now, retention, changed, links_of(rec))
      append(leases, deadline, id)
      table.insert(out, append(flat, 'status', 'running', 'modified_ms', now, unpack(changed)))
      left[rec.queue] = (left[rec.queue] or 0) + 1
    end
    table.insert(taken, id)  -- taken, or no longer queued (cancelled, expired): out either way
  end
  if #taken > 0 then redis.call('ZREM', K.lane(lane), unpack(taken)) end
  return #taken, parked
end

while want > 0 do
  local proc, tenant = nil, nil
  for _, p in ipairs(procs) do
    local h = heads[p]
    if h and (proc == nil or h[2] < heads[proc][2]) then proc, tenant = p, h[1] end
  end
  if proc == nil then break end
  local lanes = K.lanes(proc, tenant)
  local key = redis.call('ZRANGE', lanes, 0, 0)[1]
  if key == nil then
    redis.call('ZREM', K.ready(proc), tenant)
    if redis.call('ZCARD', K.ready(proc)) == 0 then redis.call('SREM', K.ready_processors, proc) end
  else
    local lane = proc .. '|' .. tenant .. '|' .. key
    local share = math.max(1, math.ceil(want / redis.call('ZCARD', K.ready(proc))))
    local before = #out
    local looked, parked = serve(lane, share)
    want = want - (#out - before)
    if not parked then
      -- (fewer runs than asked for: the lane is empty now)
      if looked < share or redis.call('ZCARD', K.lane(lane)) == 0 then
        unready(lane)
      else
        local turn = next_turn()
        redis.call('ZADD', lanes, turn, key)
        redis.call('ZADD', K.ready(proc), turn, tenant)
      end
    end
  end
  read_head(proc)
end

for queue, count in pairs(left) do left_lanes(queue, count) end
if #leases > 0 then redis.call('ZADD', K.running, unpack(leases)) end
out[1] = due or ''
for _, proc in ipairs(procs) do
  if heads[proc] then out[2] = '1' end
end
return out
