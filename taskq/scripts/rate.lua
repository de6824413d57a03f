-- rate: counts `count` runs against a tenant's limit of runs a second (a fixed window
-- of one second of Redis's clock). Not in a partition: KEYS[1] is taskq:rate:{tenant}.
-- ARGV: count, limit. Returns 1 when counted, 0 when the second has no room left.
local second = redis.call('TIME')[1]
local cur = redis.call('HMGET', KEYS[1], 's', 'n')
local used = cur[1] == second and tonumber(cur[2]) or 0
if used + tonumber(ARGV[1]) > tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], 's', second, 'n', used + tonumber(ARGV[1]))
redis.call('EXPIRE', KEYS[1], 2)
return 1
