-- Shared by every script (scripts.py puts it in front of each). Times are epoch
-- milliseconds passed in by the caller; RQ's own timestamps are its ISO strings.
local P = 'taskq:'
local TERMINAL = {completed = true, failed = true, cancelled = true}

local function run_key(id) return P .. 'run:' .. id end

-- Writes an RQ job for the run and puts it on its queue. Each push gets its own job
-- id, `{run_id}-{n}`: RQ deletes a finished attempt's job after the attempt returns,
-- which must not take the next attempt's job with it. `data` is the one pickled call
-- every run shares (taskq.execution.execute), which reads the run id from the job id.
-- `n` is the push's number when the caller knows it (the first push), else counted.
local function push_rq_job(id, queue, timeout, rq_data, rq_now, n)
  n = n or redis.call('HINCRBY', run_key(id), 'pushes', 1)
  local job_id = id .. '-' .. n
  redis.call('HSET', 'rq:job:' .. job_id, 'data', rq_data, 'origin', queue,
    'description', 'taskq run', 'timeout', timeout, 'result_ttl', 0, 'failure_ttl', 0,
    'status', 'queued', 'created_at', rq_now, 'enqueued_at', rq_now)
  redis.call('RPUSH', 'rq:queue:' .. queue, job_id)
  if n == 1 then redis.call('SADD', 'rq:queues', 'rq:queue:' .. queue) end  -- RQ's list of queues
end

local function append(list, ...)
  for _, v in ipairs({...}) do table.insert(list, v) end
  return list
end

-- A flat HGETALL/field list as a table.
local function as_table(flat)
  local t = {}
  for i = 1, #flat, 2 do t[flat[i]] = flat[i + 1] end
  return t
end

-- The one step every status change goes through: the record (with `fields`, more
-- field/value pairs written in the same HSET), the run's event, the group's
-- counters and events, and the webhook outbox change together. `links` is
-- {taskgroup_id, webhook, webhook_all} when the caller has read them already.
local LINKS = {'taskgroup_id', 'webhook', 'webhook_all'}
local function set_status(id, old, new, now, retention_s, fields, links)
  local key = run_key(id)
  local pairs_ = append({}, 'status', new, 'modified_ms', now)
  if TERMINAL[new] then append(pairs_, 'finished_ms', now) end
  for _, v in ipairs(fields or {}) do table.insert(pairs_, v) end
  redis.call('HSET', key, unpack(pairs_))
  redis.call('XADD', key .. ':events', '*', 'type', 'task_run.state', 'status', new, 'ts', now)
  local r = links or redis.call('HMGET', key, unpack(LINKS))
  local gid, hook, hook_all = r[1], r[2], r[3]
  if gid then
    local gkey = P .. 'group:' .. gid
    if old then redis.call('HINCRBY', gkey, 'c:' .. old, -1) end
    redis.call('HINCRBY', gkey, 'c:' .. new, 1)
    redis.call('HSET', gkey, 'modified_ms', now)
    if TERMINAL[new] then
      redis.call('XADD', gkey .. ':events', '*', 'type', 'task_run.state', 'run_id', id, 'status', new, 'ts', now)
      local c = redis.call('HMGET', gkey, 'c:queued', 'c:running', 'c:cancelling')
      local active = (tonumber(c[1]) or 0) + (tonumber(c[2]) or 0) + (tonumber(c[3]) or 0)
      if active == 0 then
        redis.call('XADD', gkey .. ':events', '*', 'type', 'task_group_status', 'ts', now)
        -- A finished group expires with its runs; adding runs again persists it.
        for _, k in ipairs({gkey, gkey .. ':runs', gkey .. ':events'}) do
          redis.call('EXPIRE', k, retention_s)
        end
      end
    end
  end
  if hook and (TERMINAL[new] or hook_all == '1') then
    local seq = redis.call('HINCRBY', key, 'delivery_seq', 1)
    local did = id .. '.' .. seq
    redis.call('HSET', P .. 'delivery:' .. did, 'run_id', id, 'status', new, 'created_ms', now, 'attempts', 0)
    redis.call('RPUSH', key .. ':deliveries', did)
    redis.call('ZADD', P .. 'deliveries:due', now, did)
  end
  if TERMINAL[new] then
    if old == 'running' or old == 'cancelling' then redis.call('ZREM', P .. 'running', id) end
    if old == 'queued' then redis.call('ZREM', P .. 'delayed', id) end
    redis.call('EXPIRE', key, retention_s)
    redis.call('EXPIRE', key .. ':events', retention_s)
    if hook then redis.call('EXPIRE', key .. ':deliveries', retention_s) end
  end
end

-- The fields that make `err_json` the run's error and add it to its error history.
local function error_fields(id, err_json)
  local history = redis.call('HGET', run_key(id), 'errors')
  local list = history and cjson.decode(history) or {}
  table.insert(list, cjson.decode(err_json))
  return {'error', err_json, 'errors', cjson.encode(list)}
end
