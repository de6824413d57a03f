-- answer: a person's answer to a run in action_required. The answer joins the run's
-- answers and the run goes back to queued, in its lane (keeping its place), in one
-- step; its processor then runs again from the start, and its i-th ask() returns
-- answer i.
-- KEYS: the partition's prefix.
-- ARGV: run_id, retention_s, rq_mirror, answers (the whole list with the answer, as
--       stored: a payload, payload.py), asked (the required_action the answer was
--       checked against: a newer question refuses it), before (the answers as stored
--       when read, '' for none: an answer given meanwhile refuses it), offloaded ('1'
--       when the answers are in the output storage).
-- Returns 'queued', or {'conflict', status} when the run is not waiting for this answer.
local id, now, retention, answers = ARGV[1], now_ms(), ARGV[2], ARGV[4]
RQ_MIRROR = ARGV[3] == '1'
local r = redis.call('HMGET', K.run(id), 'status', 'required_action', 'answers', 'lane', 'queue',
  'priority_band', 'created_ms')
if r[1] ~= 'action_required' or r[2] ~= ARGV[5] or (r[3] or '') ~= ARGV[6] then
  return {'conflict', r[1] or 'missing'}
end
local fields = {'answers', answers}
if ARGV[7] == '1' then append(fields, 'has_outputs', '1') end
set_status(id, 'action_required', 'queued', now, retention, fields)
enqueue(id, {lane = r[4], queue = r[5], priority_band = r[6], created_ms = r[7]})
return 'queued'
