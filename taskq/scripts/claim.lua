-- claim: a worker takes up to `want` runs of the processors it serves from one
-- partition, in one step. First what is due by now moves on (tend_due: runs due join
-- their lanes, paused lanes go again); then lanes take turns (_lib.lua, claim_runs).
-- KEYS: the partition's prefix.
-- ARGV: lease_ms, retention_s, token_base, want, rq_mirror ('1' or ''), then what the
--       worker serves (_lib.lua, read_request).
-- Returns {next_due_ms or '', more ('1': ready lanes are left), run, run, ...}, each
-- run a flat field/value list (claim_runs).
local now = now_ms()
local lease_ms, retention, base, want = tonumber(ARGV[1]), ARGV[2], ARGV[3], tonumber(ARGV[4])
RQ_MIRROR = ARGV[5] == '1'
COUNTS = {}
local procs = read_request(6)
local due = tend_due(now, 1000)
local out = {'', ''}
local more, soonest = claim_runs(out, procs, want, now, lease_ms, retention, base)
if soonest and (not due or soonest < due) then due = soonest end
out[1], out[2] = due or '', more and '1' or ''
flush_counts()
return out
