"""All of taskq's knobs in one place, read from the environment (12-factor).

Every field `x` is set by the variable `TASKQ_X`, except `redis_url`, which is the
PaaS convention `REDIS_URL`. Units are in the names.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, fields

# Where a worker runs plain processors: threads of its own process, or pre-forked
# child processes (`async def` ones always run on its event loop).
POOLS = ("threads", "processes")


def _csv(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


@dataclass(frozen=True)
class Settings:
    redis_url: str = "redis://localhost:6379/0"
    api_keys: tuple[str, ...] = ()
    app: tuple[str, ...] = ()  # modules with @task processors; a worker with none refuses to start
    webhook_allow_private: bool = False
    proxy_upstreams: tuple[str, ...] = ()  # "name=https://host" items
    # Request header names the async proxy forwards besides content-type, accept and
    # accept-language (upstream.FORWARDED_HEADERS); set it for workers too.
    proxy_forward_headers: tuple[str, ...] = ()

    max_body_bytes: int = 1 << 20
    max_output_bytes: int = 8 << 20  # a run's stored output, as JSON
    # A run's payloads (input, output, answers: JSON) of at least this many bytes are
    # kept zlib-compressed in Redis (payload.py); 0 = never.
    compress_bytes: int = 512
    # Payloads of at least this many bytes are kept in the output storage instead, the
    # run holding a reference, when output_dir or output_url is set; 0 = never.
    payload_offload_bytes: int = 64 << 10
    max_queue_length: int = 0  # 0 = unbounded; otherwise a full queue answers 429 (per partition)
    # Runs one tenant may have in flight at once, across every worker; 0 = no cap.
    tenant_concurrency: int = 0
    # Partitions the data is spread over (keys.py); 0 = 1 on a single Redis, 16 on a
    # Redis Cluster. Fixed at first start (kept in Redis): every process uses that.
    partitions: int = 0
    rate_limit_per_s: int = 0  # runs a tenant may create a second; 0 = no limit; over it, 429
    # A run is answered as made only once this many replicas of its master have it
    # (Redis WAIT, at most wait_replicas_timeout_ms; else a 503): a failover then loses
    # no run that was acknowledged. 0 = answer as soon as the master has it.
    wait_replicas: int = 0
    wait_replicas_timeout_ms: int = 1000
    # New runs are refused (503) once Redis's used memory is past this fraction of its
    # maxmemory (on the master the run would land on), so that the runs already
    # accepted have the rest to finish in. 0 = no check (Redis's own OOM refusal at
    # maxmemory is still a 503). No check either when maxmemory is not set.
    memory_high_water: float = 0.9
    memory_check_s: float = 1.0  # how long a process trusts its last INFO memory reading
    retention_s: int = 7 * 24 * 3600
    idempotency_ttl_s: int = 24 * 3600
    result_timeout_s: int = 600

    default_timeout_s: int = 600
    max_timeout_s: int = 12 * 3600
    default_retries: int = 3
    retry_backoff_base_s: float = 1.0
    retry_backoff_cap_s: float = 300.0

    # Runs one worker process holds at once; 0 = the pool's default: 32 for threads
    # (most runs wait on I/O — LLM calls, HTTP, model endpoints — where a waiting
    # thread costs ~100 KB and no CPU; 32 keeps a process's memory and GIL shared by
    # few), the number of CPUs for processes (each child is a whole interpreter).
    # Size threads by the waiting: runs a second wanted x seconds each run waits.
    concurrency: int = 0
    pool: str = "threads"  # or "processes": pre-forked children, for CPU-bound or leaky code
    max_runs_per_child: int = 0  # processes pool: a child is replaced after this many runs; 0 = never
    # Whether a worker fires the schedules of the processors it serves (schedule.py).
    # One worker with it on is enough (more are safe: one run per tick however many).
    schedules: bool = True

    heartbeat_s: float = 5.0  # a running run renews its lease this often
    lease_s: float = 30.0  # a run whose lease is this old is presumed lost
    reaper_interval_s: float = 5.0  # how often workers look for lost and due runs
    shutdown_grace_s: float = 25.0  # SIGTERM: time the runs in flight have to finish
    # A run asked to stop (timeout, cancel, shutdown, lost lease) whose code has not
    # stopped this long after (a thread blocked in a C call) is ended without it:
    # its status is written, its slot freed, and its thread abandoned.
    stuck_grace_s: float = 2.0
    # A worker holding more abandoned threads than this restarts itself (gracefully:
    # its runs in flight first finish or go back to the queue). 0 = never.
    max_abandoned_threads: int = 8
    processor_cache_s: float = 1.0  # how long a gateway trusts its copy of the registry

    webhook_timeout_s: float = 15.0
    webhook_schedule_s: tuple[str, ...] = ("5", "300", "1800", "7200", "18000", "36000", "36000")
    dispatcher_concurrency: int = 64
    dispatcher_per_host: int = 8  # sends in flight to one receiver (host:port); 0 = no cap
    dispatcher_poll_s: float = 0.5

    sse_heartbeat_s: float = 15.0  # keep below broker.MAX_BLOCK_MS
    # SSE streams plus /result long polls one tenant may hold open at once on one
    # gateway process; past it, 429 with Retry-After. 0 = no cap.
    max_streams_per_tenant: int = 100
    # All tenants' streams and long polls together on one gateway process: kept well
    # under redis_max_connections, so ordinary requests always find a connection.
    max_streams_per_process: int = 1000
    redis_max_connections: int = 2000  # per process (redis-py's own default is 100)

    action_timeout_s: int = 24 * 3600  # a run in action_required fails after waiting this long

    # Output files (and offloaded payloads) in this directory, when output_url is not
    # set; empty: var/outputs (output files only: payloads are offloaded only to a
    # storage configured here or in output_url, which every process then shares).
    output_dir: str = ""
    output_url: str = ""  # s3://bucket/prefix: output files in S3-compatible storage
    output_secret: str = ""  # signs output URLs; empty: a random one kept in Redis
    public_url: str = ""  # the gateway's public base URL; empty: output URLs are paths
    output_url_expires_s: int = 3600  # how long an output URL in a TaskRun is good for
    max_output_file_bytes: int = 1 << 30  # one output file
    max_outputs_bytes_per_run: int = 5 << 30  # all of a run's output files together
    max_outputs_per_run: int = 1000  # output files one run may list; the next save is refused

    # The dashboard's session cookie is signed with this; empty: derived from the API
    # keys (every gateway with the same keys agrees; changing the keys signs all out).
    secret_key: str = ""
    dashboard_session_s: int = 12 * 3600
    dashboard_secure_cookie: bool = False  # set when the gateway is served over HTTPS

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: object) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in fields(cls):
            name = "REDIS_URL" if f.name == "redis_url" else f"TASKQ_{f.name.upper()}"
            raw = env.get(name)
            if raw is None or raw == "":
                continue
            values[f.name] = _coerce(f, raw)
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]

    def to_env(self) -> dict[str, str]:
        """The environment variables that give another process these settings
        (the inverse of `from_env`)."""
        env = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                value = ",".join(value)
            elif isinstance(value, bool):
                value = "1" if value else "0"
            env["REDIS_URL" if f.name == "redis_url" else f"TASKQ_{f.name.upper()}"] = str(value)
        return env

    @property
    def webhook_schedule(self) -> tuple[float, ...]:
        return tuple(float(s) for s in self.webhook_schedule_s)

    @property
    def upstreams(self) -> dict[str, str]:
        pairs = (item.split("=", 1) for item in self.proxy_upstreams if "=" in item)
        return {name.strip(): url.strip().rstrip("/") for name, url in pairs}

    def replace(self, **changes: object) -> Settings:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


def _coerce(f: dataclasses.Field[object], raw: str) -> object:
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "str")
    if kind.startswith("tuple"):
        return _csv(raw)
    if kind == "bool":
        return raw.strip().lower() in {"1", "true", "yes", "on"}
    if kind == "int":
        return int(raw)
    if kind == "float":
        return float(raw)
    return raw


__all__ = ["Settings"]
