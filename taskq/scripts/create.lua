-- create: writes one or more new runs of one tenant in one atomic step: each record
-- (created_ms: Redis's time now), its first event, its group's counters, and the run
-- itself waiting, in its lane or (with a later `run_at`) in the due set.
-- With a schedule's guard (schedule.py), it happens only if the schedule's next tick
-- is still `expected` (no other worker fired it), and moves the schedule on.
-- KEYS: the partition's prefix.
-- ARGV: retention_s, tenant, idem_digest ('' for none), idem_ttl_s, request_digest,
--       max_queue_length (0: none), group_id ('' for none), rq_mirror ('1' or ''),
--       guard: processor ('' for none), expected next tick ('' for none yet), next tick,
--       tick fired ('' for none), what the schedule is;
--       then per run: run_id, due_ms ('' when due now), n, n field/value pairs.
-- Returns {'created', created_ms, ids...} | {'existing', id} | {'mismatch', id} |
-- {'full', queue} | {'skipped'} (the guard: another worker fired that tick)
local now, retention, tenant = now_ms(), ARGV[1], ARGV[2]
local idem_digest, idem_ttl, digest = ARGV[3], ARGV[4], ARGV[5]
local max_len, gid = tonumber(ARGV[6]), ARGV[7]
RQ_MIRROR = ARGV[8] == '1'
local idem_key = idem_digest ~= '' and K.idempotency(tenant, idem_digest) or nil
local guard = ARGV[9]

if guard ~= '' then
  local key = K.schedule(guard)
  if (redis.call('HGET', key, 'next') or '') ~= ARGV[10] then return {'skipped'} end
  redis.call('HSET', key, 'next', ARGV[11], 'spec', ARGV[13])
  if ARGV[12] ~= '' then redis.call('HSET', key, 'last', ARGV[12]) end
end

if idem_key then
  -- The key holds 'run_id digest': the same key with another request is refused.
  local existing = redis.call('GET', idem_key)
  if existing then
    local id, was = string.match(existing, '^(%S+) ?(%S*)$')
    if was ~= '' and was ~= digest then return {'mismatch', id} end
    return {'existing', id}
  end
end

local runs, i = {}, 14
while i <= #ARGV do
  local n = tonumber(ARGV[i + 2])
  local fields = {}
  for j = i + 3, i + 2 + 2 * n do table.insert(fields, ARGV[j]) end
  table.insert(runs, {id = ARGV[i], due = ARGV[i + 1], fields = fields})
  i = i + 3 + 2 * n
end

if max_len > 0 then
  local adding = {}
  for _, r in ipairs(runs) do
    local q = as_table(r.fields).queue
    adding[q] = (adding[q] or 0) + 1
  end
  for q, count in pairs(adding) do
    if (tonumber(redis.call('HGET', K.depth, q)) or 0) + count > max_len then return {'full', q} end
  end
end

local ids, later = {'created', now}, {}
for _, r in ipairs(runs) do
  local fields = append(r.fields, 'created_ms', now)
  if r.due ~= '' then append(fields, 'next_attempt_ms', r.due) end
  if gid ~= '' then
    append(fields, 'taskgroup_id', gid)
    redis.call('RPUSH', K.group_runs(gid), r.id)
    redis.call('HINCRBY', K.group(gid), 'num_task_runs', 1)
  end
  local rec = as_table(fields)
  set_status(r.id, nil, 'queued', now, retention, fields, links_of(rec))
  wait_for(r.id, rec, r.due ~= '' and r.due or nil)
  if r.due ~= '' then later[rec.processor] = true end
  table.insert(ids, r.id)
end
if gid ~= '' then
  -- Active again: the group expires only once it has finished (set_status sets that).
  -- After the runs: a Redis at maxmemory refuses a script at its first write that can
  -- grow memory, and lets every later one through; PERSIST is not such a write, so
  -- first, it would let a whole group add past maxmemory.
  for _, k in ipairs({K.group(gid), K.group_runs(gid), K.group_events(gid)}) do redis.call('PERSIST', k) end
end
-- A run made for later: its processor's workers learn when this partition is next due.
for proc in pairs(later) do redis.call('PUBLISH', WAKE .. proc, PARTITION) end

-- The tenant's run index, for the list endpoint: run ids sort by creation time, so
-- all share score 0 and read in lexicographic order. Every 16th ms a call also trims
-- ids older than twice the retention (their records are gone; readers skip them).
local index = K.tenant_runs(tenant)
local members = {}
for _, r in ipairs(runs) do append(members, 0, r.id) end
if #members > 0 then redis.call('ZADD', index, unpack(members)) end
if now % 16 == 0 then
  local cutoff = string.format('%012x', now - 2000 * tonumber(retention))
  redis.call('ZREMRANGEBYLEX', index, '-', '(trun_' .. cutoff)
end

if idem_key then redis.call('SET', idem_key, runs[1].id .. ' ' .. digest, 'EX', idem_ttl) end
return ids
