-- redeliver: a dead-lettered (or 410-stopped) delivery starts a fresh schedule now,
-- out of the dead-letter set and its tenant's index of it.
-- KEYS: the partition's prefix. ARGV: delivery_id. Returns 'pending', or {'conflict', state} for one that is
-- still being tried or was delivered, or {'missing'}.
local did, now = ARGV[1], now_ms()
local key = K.delivery(did)
local state = redis.call('HGET', key, 'state')
if not redis.call('HGET', key, 'run_id') then return {'missing'} end
if state ~= 'dead' and state ~= 'gone' then return {'conflict', state or 'pending'} end
redis.call('ZREM', K.deliveries_dead, did)
local tenant = redis.call('HGET', K.run(redis.call('HGET', key, 'run_id')), 'tenant')
if tenant then redis.call('ZREM', K.tenant_dead(tenant), did) end
redis.call('ZADD', K.deliveries_due, now, did)
redis.call('HSET', key, 'state', 'pending', 'round', 0, 'next_ms', now)
redis.call('HDEL', key, 'dead_ms')
redis.call('PERSIST', key)
redis.call('PERSIST', K.delivery_attempts(did))
return 'pending'
