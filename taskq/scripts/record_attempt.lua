-- record_attempt: records one delivery attempt and what comes next, in one step:
-- 'pending' (try again in delay_ms), 'delivered', 'gone' (410: never again) or 'dead'
-- (schedule exhausted: into the dead-letter set, and the run's tenant's own index of
-- it, trimmed to the retention and expiring with it). Only the claim's holder may
-- record; a stale token (the claim timed out and was taken over) changes nothing.
-- KEYS: the partition's prefix. ARGV: delivery_id, token, attempt_json, state, delay_ms, retention_s.
-- Returns 1 when recorded, 0 for a stale claim.
local did, token, now, state = ARGV[1], ARGV[2], now_ms(), ARGV[4]
local attempt, retention = ARGV[3], ARGV[6]
local key = K.delivery(did)
if redis.call('HGET', key, 'claim') ~= token then return 0 end
local due, dead = K.deliveries_due, K.deliveries_dead
redis.call('RPUSH', K.delivery_attempts(did), attempt)
-- Metrics: one command per attempt (see count_transition in _lib.lua).
redis.call('HINCRBY', K.metrics, 'webhook|' .. state .. '|' .. ceil2(cjson.decode(attempt).latency_ms or 0), 1)
redis.call('HINCRBY', key, 'attempts', 1)
redis.call('HINCRBY', key, 'round', 1)
redis.call('HDEL', key, 'claim', 'next_ms')
redis.call('HSET', key, 'state', state, 'last_ms', now)
if state == 'pending' then
  local next_ms = now + tonumber(ARGV[5])
  redis.call('ZADD', due, next_ms, did)
  redis.call('HSET', key, 'next_ms', next_ms)
else
  redis.call('ZREM', due, did)
  if state == 'dead' then
    redis.call('ZADD', dead, now, did)
    redis.call('HSET', key, 'dead_ms', now)
    local run_id = redis.call('HGET', key, 'run_id')
    local tenant = run_id and redis.call('HGET', K.run(run_id), 'tenant')
    if tenant then
      local mine = K.tenant_dead(tenant)
      redis.call('ZADD', mine, now, did)
      redis.call('ZREMRANGEBYSCORE', mine, '-inf', now - tonumber(retention) * 1000)
      redis.call('EXPIRE', mine, retention)
    end
  end
  redis.call('EXPIRE', key, retention)
  redis.call('EXPIRE', K.delivery_attempts(did), retention)
end
return 1
