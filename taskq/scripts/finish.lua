-- finish: the worker ends attempts it holds in one partition, many in one step. What
-- happened to each is one of
--   completed    the processor returned; `fields` hold the output
--   error        it raised, timed out, or its output was refused: retry_or_fail decides
--                (`arg` '1' when the failure may be retried)
--   cancelled    it was stopped because the run was cancelled
--   shutdown     its worker is going away: back in its lane now, no retry spent
--   ratelimited  it raised RateLimited: back in its lane, no retry spent, and every
--                limit it held pauses for `arg` ms, for every worker (its lane, when
--                it held none)
--   action_required   it asked a person (action.py): waits, holding no worker, for
--                action_timeout_ms (its question is the `required_action` field, asked at
--                `asked_ms`, due by `answer_deadline_ms`); no retry spent. answer.lua or
--                tend.lua take it from there.
-- A run cancelled meanwhile ends cancelled whatever happened, unless it completed.
-- Going back to its lane, a run keeps its place (its lane is ordered by age).
--
-- Then, in the same step, the worker takes up to `want` runs for the slots these
-- attempts free, as claim.lua would: a freed slot never waits for a second round trip.
-- KEYS: the partition's prefix.
-- ARGV: retention_s, backoff_base_ms, backoff_cap_ms, action_timeout_ms, rq_mirror,
--   n_attempts, then per attempt: run_id, token, what, arg, error_json ('' for none),
--   jitter, n, then n field/value items to set; then want (0: take none), lease_ms,
--   token_base and what the worker serves (_lib.lua, read_request).
-- Returns per attempt the status its run ended in, or '' when the token no longer
-- holds the run (its lease was lost: the attempt's result is dropped); then, when it
-- took runs (want > 0), what claim.lua returns.
local now, retention = now_ms(), ARGV[1]
local base, cap, answer_ms = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
RQ_MIRROR = ARGV[5] == '1'
LEASES_DROPPED = {}
COUNTS = {}
local ended = {}
local i = 7
for _ = 1, tonumber(ARGV[6]) do
  local id, token, what, arg, err, jitter = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5]
  local n = tonumber(ARGV[i + 6])
  local fields = {}
  for j = i + 7, i + 6 + n do table.insert(fields, ARGV[j]) end
  i = i + 7 + n
  local key = K.run(id)
  local r = redis.call('HMGET', key, 'status', 'token', 'attempts', 'interruptions', 'max_retries', 'error',
    'priority_band', unpack(LINKS))
  local status = r[1]
  if not LEASED[status] or r[2] ~= token then
    table.insert(ended, '')
  else
    local cur = {status = status, attempts = r[3], interruptions = r[4], max_retries = r[5]}
    local links = {unpack(r, 8)}
    append(fields, 'token', '')
    if status == 'cancelling' and what ~= 'completed' then what = 'cancelled' end
    local new
    if what == 'completed' then
      if r[6] then redis.call('HDEL', key, 'error') end
      new = 'completed'
      set_status(id, status, new, now, retention, fields, links)
    elseif what == 'error' then
      new = retry_or_fail(id, cur, err, arg == '1', now, retention, {base, cap, tonumber(jitter)}, links, fields)
    elseif what == 'shutdown' or what == 'ratelimited' then
      append(fields, 'interruptions', (tonumber(r[4]) or 0) + 1)
      new = 'queued'
      local pause = what == 'ratelimited' and now + tonumber(arg) or nil
      set_status(id, status, new, now, retention, fields, links, pause)
      enqueue(id, {lane = links[LINK.lane], queue = links[LINK.queue], priority_band = r[7],
        created_ms = links[LINK.created_ms]})
      -- A run that held no limit pauses its own lane instead (else it would go again at once).
      if pause and not links[LINK.holds] then park(links[LINK.lane], nil, pause) end
    elseif what == 'action_required' then
      local deadline = now + answer_ms
      append(fields, 'interruptions', (tonumber(r[4]) or 0) + 1, 'asked_ms', now, 'answer_deadline_ms', deadline)
      redis.call('ZADD', K.waiting, deadline, id)
      new = 'action_required'
      set_status(id, status, new, now, retention, fields, links)
    else
      new = 'cancelled'
      set_status(id, status, new, now, retention, fields, links)
    end
    table.insert(ended, new)
  end
end
flush_leases()

local want = tonumber(ARGV[i])
if want > 0 then
  local lease_ms, token_base = tonumber(ARGV[i + 1]), ARGV[i + 2]
  local procs = read_request(i + 3)
  local due = tend_due(now, 1000)
  local at = #ended + 1
  append(ended, '', '')
  local more, soonest = claim_runs(ended, procs, want, now, lease_ms, retention, token_base)
  if soonest and (not due or soonest < due) then due = soonest end
  ended[at], ended[at + 1] = due or '', more and '1' or ''
end
flush_counts()
return ended
