-- finish: the worker holding `token` ends its attempt.
--   completed / failed: terminal;  queued: retry at `due` (backoff) or now (shutdown)
-- A run cancelled meanwhile ends cancelled instead of being retried.
-- ARGV: run_id, token, now, new_status, due, retention_s, error_json ('' for none),
--       interrupted ('1' when the attempt does not count against the retries),
--       then field/value pairs to set (output...).
-- Returns the status the run ended in, or {} if the token no longer holds the run.
local id, token, now, new, due = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local key = run_key(id)
local cur = redis.call('HMGET', key, 'status', 'token', 'interruptions', unpack(LINKS))
if (cur[1] ~= 'running' and cur[1] ~= 'cancelling') or cur[2] ~= token then return {} end
if cur[1] == 'cancelling' and new ~= 'completed' then new = 'cancelled' end
local fields = {}
for i = 9, #ARGV do table.insert(fields, ARGV[i]) end
if ARGV[7] ~= '' then append(fields, unpack(error_fields(id, ARGV[7]))) end
if ARGV[8] == '1' then append(fields, 'interruptions', (tonumber(cur[3]) or 0) + 1) end
if new == 'completed' then redis.call('HDEL', key, 'token', 'error') else redis.call('HDEL', key, 'token') end
if new == 'queued' then
  append(fields, 'next_attempt_ms', due)
  redis.call('ZREM', P .. 'running', id)
  redis.call('ZADD', P .. 'delayed', due, id)
end
set_status(id, cur[1], new, now, ARGV[6], fields, {cur[4], cur[5], cur[6]})
return new
