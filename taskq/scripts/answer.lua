-- answer: a person's answer to a run in action_required. The answer joins the run's
-- answers and the run goes back to queued, in its lane (keeping its place), in one
-- step; its processor then runs again from the start, and its i-th ask() returns
-- answer i.
-- KEYS: the partition's prefix.
-- ARGV: run_id, retention_s, rq_mirror, answer_json, asked (the required_action the
--       answer was checked against: a newer question refuses it).
-- Returns 'queued', or {'conflict', status} when the run is not waiting for this answer.
local id, now, retention, answer = ARGV[1], now_ms(), ARGV[2], ARGV[4]
RQ_MIRROR = ARGV[3] == '1'
local r = redis.call('HMGET', K.run(id), 'status', 'required_action', 'answers', 'lane', 'queue',
  'priority_band', 'created_ms')
if r[1] ~= 'action_required' or r[2] ~= ARGV[5] then return {'conflict', r[1] or 'missing'} end
-- Appended as text, not through cjson, which would turn [] into {} and round numbers.
local answers = r[3] and (string.sub(r[3], 1, -2) .. ',' .. answer .. ']') or ('[' .. answer .. ']')
set_status(id, 'action_required', 'queued', now, retention, {'answers', answers})
enqueue(id, {lane = r[4], queue = r[5], priority_band = r[6], created_ms = r[7]})
return 'queued'
