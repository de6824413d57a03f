-- heartbeat: the worker holding `token` renews its lease on the run.
-- ARGV: run_id, token, lease_deadline
-- Returns 'running', 'cancelling' (stop it), or 'lost' (someone else holds the run).
local key = run_key(ARGV[1])
local cur = redis.call('HMGET', key, 'status', 'token')
if cur[2] ~= ARGV[2] or (cur[1] ~= 'running' and cur[1] ~= 'cancelling') then return 'lost' end
redis.call('ZADD', P .. 'running', 'XX', ARGV[3], ARGV[1])
return cur[1]
