-- finish: the worker ends attempts it holds in one partition, many in one step. What
-- happened to each is one of
--   completed    the processor returned; `fields` hold the output
--   error        it raised, timed out, or its output was refused: retry_or_fail decides
--                (`arg` '1' when the failure may be retried)
--   cancelled    it was stopped because the run was cancelled
--   shutdown     its worker is going away: back in its lane now, no retry spent
--   ratelimited  it raised RateLimited: back in its lane, no retry spent, and every
--                limit it held pauses for `arg` ms, for every worker
--   action_required   it asked a person (action.py): waits, holding no worker, for
--                action_timeout_ms (its question is the `required_action` field, asked at
--                `asked_ms`, due by `answer_deadline_ms`); no retry spent. answer.lua or
--                reap.lua take it from there.
-- A run cancelled meanwhile ends cancelled whatever happened, unless it completed.
-- Going back to its lane, a run keeps its place (its lane is ordered by age).
-- KEYS: the partition's prefix.
-- ARGV: retention_s, backoff_base_ms, backoff_cap_ms, action_timeout_ms, rq_mirror,
--   then per attempt: run_id, token, what, arg, error_json ('' for none), jitter, n,
--   then n field/value items to set.
-- Returns per attempt the status its run ended in, or '' when the token no longer
-- holds the run (its lease was lost: the attempt's result is dropped).
local now, retention = now_ms(), ARGV[1]
local base, cap, answer_ms = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
RQ_MIRROR = ARGV[5] == '1'
LEASES_DROPPED = {}
local ended = {}
local i = 6
while i <= #ARGV do
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
return ended
