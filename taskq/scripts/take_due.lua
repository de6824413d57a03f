-- take_due: claims up to `limit` webhook deliveries that are due, with everything
-- their sending needs, so that a dispatcher makes no other Redis call before sending.
-- Each one claimed is hidden from every other dispatcher for `visibility_ms` (its
-- score moves forward) and gets a claim token; only the holder of that token can
-- record the attempt. A dispatcher killed mid-delivery never records, so the delivery
-- comes due again when its visibility timeout is over.
--
-- Per receiver (host:port of the webhook URL) at most `per_host` sends are in flight
-- (0: no cap), counting the caller's sends already in flight. A delivery whose
-- receiver is at its cap is skipped, not claimed, and stays due. When the head of the
-- queue is nothing but such deliveries (`max_skips` of them and no claim), they are
-- moved back by `defer_ms`, no attempt counted, so that a dead receiver's backlog
-- cannot hide everybody else's deliveries behind it.
--
-- ARGV: visibility_ms, limit, token_base, retention_s, per_host, max_skips,
--       defer_ms, n, the n run fields wanted, then (host, in_flight) pairs.
-- KEYS: the partition's prefix.
-- Returns {next_due_in_ms or '', skipped, deferred, claim, claim, ...}, next_due_in_ms only
-- when nothing is due now; each claim is {did, token, round, attempts, run_id, status,
-- created_ms, host, {the run fields' values, in order}}.
local now, vis, limit, base = now_ms(), tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local per_host, max_skips, defer = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local n = tonumber(ARGV[8])
local fields = {}
for i = 1, n do fields[i] = ARGV[8 + i] end
local in_flight = {}
for i = 9 + n, #ARGV, 2 do in_flight[ARGV[i]] = tonumber(ARGV[i + 1]) end

local function decode(raw)
  if not raw then return nil end
  local ok, hook = pcall(cjson.decode, raw)
  if ok and type(hook) == 'table' then return hook end
  return nil
end

-- 'host:port', lower case, the scheme's port when the URL names none.
local function host_of(hook)
  local url = hook and hook.url
  if type(url) ~= 'string' then return '' end
  local scheme, authority = string.match(url, '^(%a[%w+.-]*)://([^/?#]*)')
  if not scheme then return '' end
  authority = string.lower((string.gsub(authority, '^.*@', '')))
  if not string.find(authority, ':%d+$') then
    authority = authority .. ':' .. (string.lower(scheme) == 'https' and '443' or '80')
  end
  return authority
end

local due, dead = K.deliveries_due, K.deliveries_dead
-- (Each tenant's own index of it is trimmed where record_attempt writes it: the
-- tenant of a delivery this old has expired with it, so it cannot be found here.)
redis.call('ZREMRANGEBYSCORE', dead, '-inf', now - tonumber(ARGV[4]) * 1000)
local out, skipped, claimed = {'', 0, 0}, {}, 0
for i, did in ipairs(redis.call('ZRANGEBYSCORE', due, '-inf', now, 'LIMIT', 0, limit + max_skips)) do
  if claimed >= limit or #skipped >= max_skips then break end
  local key = K.delivery(did)
  local d = redis.call('HMGET', key, 'run_id', 'status', 'round', 'attempts', 'created_ms', 'host')
  if not d[1] then
    redis.call('ZREM', due, did)
  else
    local run_key = K.run(d[1])
    local host, hook = d[6], nil
    if not host then
      hook = decode(redis.call('HGET', run_key, 'webhook'))
      host = host_of(hook)
      if host ~= '' then redis.call('HSET', key, 'host', host) end
    end
    local busy = in_flight[host] or 0
    if per_host > 0 and host ~= '' and busy >= per_host then
      table.insert(skipped, did)
    else
      in_flight[host] = busy + 1
      claimed = claimed + 1
      local token = base .. ':' .. i
      redis.call('ZADD', due, now + vis, did)
      redis.call('HSET', key, 'claim', token, 'state', 'pending')
      local run = redis.call('HMGET', run_key, unpack(fields))
      table.insert(out, {did, token, d[3] or '0', d[4] or '0', d[1], d[2], d[5] or tostring(now), host, run})
    end
  end
end
out[2] = #skipped
if claimed == 0 and #skipped >= max_skips then
  for _, did in ipairs(skipped) do redis.call('ZADD', due, 'XX', now + defer, did) end
  out[3] = #skipped
end
if claimed == 0 and #skipped == 0 then
  local first = redis.call('ZRANGE', due, 0, 0, 'WITHSCORES')
  if first[2] then out[1] = math.max(0, tonumber(first[2]) - now) end
end
return out
