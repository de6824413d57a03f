-- create: writes one or more new runs, each with its RQ job, in one atomic step.
-- ARGV: rq_now, rq_data, retention_s, idem_key, idem_ttl_s, max_queue_length,
--       group_id, rate_key_prefix, rate_limit (runs a second for the tenant; 0: none),
--       request_digest (of the request an Idempotency-Key was sent with),
--       then per run: run_id, queue, timeout, n, n field/value pairs.
-- Each run's created_ms is Redis's time now (whatever the caller's clock says).
-- Returns {'created', created_ms, ids...} | {'existing', id} | {'mismatch', id} |
-- {'full', queue} | {'limited'}
local now, rq_now, rq_data, retention = now_ms(), ARGV[1], ARGV[2], ARGV[3]
local idem_key, idem_ttl, max_len, gid = ARGV[4], ARGV[5], tonumber(ARGV[6]), ARGV[7]
local rate_key, rate_limit, digest = ARGV[8] .. math.floor(now / 1000), tonumber(ARGV[9]), ARGV[10]

if idem_key ~= '' then
  -- The key holds 'run_id digest': the same key with another request is refused.
  local existing = redis.call('GET', idem_key)
  if existing then
    local id, was = string.match(existing, '^(%S+) ?(%S*)$')
    if was ~= '' and was ~= digest then return {'mismatch', id} end
    return {'existing', id}
  end
end

local runs, i = {}, 11
while i <= #ARGV do
  local n = tonumber(ARGV[i + 3])
  table.insert(runs, {id = ARGV[i], queue = ARGV[i + 1], timeout = ARGV[i + 2], first = i + 4, n = n})
  i = i + 4 + 2 * n
end

if max_len > 0 then
  local adding = {}
  for _, r in ipairs(runs) do adding[r.queue] = (adding[r.queue] or 0) + 1 end
  for q, count in pairs(adding) do
    if redis.call('LLEN', 'rq:queue:' .. q) + count > max_len then return {'full', q} end
  end
end

if rate_limit > 0 then
  -- A fixed one-second window per tenant, counted in runs (a group add counts each).
  local used = tonumber(redis.call('GET', rate_key) or '0')
  if used + #runs > rate_limit then return {'limited'} end
  redis.call('INCRBY', rate_key, #runs)
  redis.call('PEXPIRE', rate_key, 2000)
end

if gid ~= '' then
  -- Active again: the group expires only once it has finished (set_status sets that).
  for _, suffix in ipairs({'', ':runs', ':events'}) do redis.call('PERSIST', P .. 'group:' .. gid .. suffix) end
end

local ids, tenant = {'created', now}, ''
for _, r in ipairs(runs) do
  local fields = {'pushes', 1}
  for j = r.first, r.first + 2 * r.n - 1 do table.insert(fields, ARGV[j]) end
  append(fields, 'created_ms', now)
  if gid ~= '' then
    append(fields, 'taskgroup_id', gid)
    redis.call('RPUSH', P .. 'group:' .. gid .. ':runs', r.id)
    redis.call('HINCRBY', P .. 'group:' .. gid, 'num_task_runs', 1)
  end
  local rec = as_table(fields)
  tenant = rec.tenant
  set_status(r.id, nil, 'queued', now, retention, fields, links_of(rec))
  push_rq_job(r.id, r.queue, r.timeout, rq_data, rq_now, 1)
  table.insert(ids, r.id)
end

-- The tenant's run index, for the list endpoint: run ids sort by creation time, so
-- all share score 0 and read in lexicographic order. Every 16th ms a call also trims
-- ids older than twice the retention (their records are gone; readers skip them).
local index = P .. 'tenant:' .. tenant .. ':runs'
local members = {}
for _, r in ipairs(runs) do append(members, 0, r.id) end
redis.call('ZADD', index, unpack(members))
if now % 16 == 0 then
  local cutoff = string.format('%012x', now - 2000 * tonumber(retention))
  redis.call('ZREMRANGEBYLEX', index, '-', '(trun_' .. cutoff)
end

if idem_key ~= '' then redis.call('SET', idem_key, runs[1].id .. ' ' .. digest, 'EX', idem_ttl) end
return ids
