-- answer: a person's answer to a run in action_required. The answer joins the run's
-- answers and the run goes back to queued and onto its RQ queue, in one step; its
-- processor then runs again from the start, and its i-th ask() returns answer i.
-- ARGV: run_id, retention_s, rq_now, rq_data, answer_json, asked (the
--       required_action the answer was checked against: a newer question refuses it).
-- Returns 'queued', or {'conflict', status} when the run is not waiting for this answer.
local id, now, answer = ARGV[1], now_ms(), ARGV[5]
local key = run_key(id)
local r = redis.call('HMGET', key, 'status', 'required_action', 'answers', 'queue', 'timeout_s')
if r[1] ~= 'action_required' or r[2] ~= ARGV[6] then return {'conflict', r[1] or 'missing'} end
-- Appended as text, not through cjson, which would turn [] into {} and round numbers.
local answers = r[3] and (string.sub(r[3], 1, -2) .. ',' .. answer .. ']') or ('[' .. answer .. ']')
set_status(id, 'action_required', 'queued', now, ARGV[2], {'answers', answers})
push_rq_job(id, r[4], r[5], ARGV[4], ARGV[3])
return 'queued'
