-- heartbeat: a worker renews the leases of every attempt it holds in one partition,
-- in one step.
-- KEYS: the partition's prefix. ARGV: lease_ms, then run_id, token pairs.
-- Returns per run 'running', 'cancelling' (stop it), or 'lost' (someone else holds
-- the run, or it ended without this worker).
local states, held = {}, {}
local deadline = now_ms() + tonumber(ARGV[1])
for i = 2, #ARGV, 2 do
  local cur = redis.call('HMGET', K.run(ARGV[i]), 'status', 'token')
  if cur[2] ~= ARGV[i + 1] or not LEASED[cur[1]] then
    table.insert(states, 'lost')
  else
    table.insert(states, cur[1])
    append(held, deadline, ARGV[i])
  end
end
if #held > 0 then redis.call('ZADD', K.running, 'XX', unpack(held)) end
return states
