"""One tenant holds hundreds of open SSE streams; does another tenant's POST still
answer fast? Prints a small table; asserts nothing (tests/test_streams.py checks the
behaviour, this measures it).

    .venv/bin/python -m bench.streams [--streams 300]

Starts its own redis-server and the gateway as the Procfile's `web` line runs it
(gunicorn, 2 gevent workers), no worker, so the streams stay open.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import requests

from bench.harness import RedisServer, Spawner, bench_settings
from taskq.broker import Broker
from taskq.processor import advertise, load_apps

HOLDER, OTHER = "holder-key", "other-key"


def open_stream(url: str, key: str) -> requests.Response:
    """An SSE stream asked for and left open, its body unread."""
    return requests.get(url, headers={"x-api-key": key}, stream=True, timeout=30)


def post_latencies_ms(url: str, count: int) -> list[float]:
    out = []
    with requests.Session() as session:
        for _ in range(count):
            start = time.perf_counter()
            r = session.post(
                f"{url}/v1/tasks/runs",
                json={"input": {}, "processor": "noop"},
                headers={"x-api-key": OTHER},
                timeout=30,
            )
            out.append((time.perf_counter() - start) * 1000)
            assert r.status_code == 202, r.text
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--streams", type=int, default=300)
    parser.add_argument("--posts", type=int, default=300)
    parser.add_argument("--cap", type=int, default=100, help="TASKQ_MAX_STREAMS_PER_TENANT for this run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        redis_server = RedisServer(Path(tmp) / "redis")
        settings = bench_settings(redis_server.url).replace(api_keys=(HOLDER, OTHER), max_streams_per_tenant=args.cap)
        broker = Broker(settings)
        advertise(broker.redis, load_apps(settings.app).values(), settings)
        spawner = Spawner(Path(tmp))
        try:
            url, _proc = spawner.gunicorn(settings, workers=2)
            gid = requests.post(f"{url}/v1/tasks/groups", json={}, headers={"x-api-key": HOLDER}, timeout=10).json()[
                "taskgroup_id"
            ]
            added = requests.post(
                f"{url}/v1/tasks/groups/{gid}/runs",
                json={"inputs": [{"input": {}, "processor": "noop"}]},
                headers={"x-api-key": HOLDER},
                timeout=10,
            )
            assert added.status_code == 200, added.text
            post_latencies_ms(url, 30)  # warm up
            before = post_latencies_ms(url, args.posts)
            held = [open_stream(f"{url}/v1/tasks/groups/{gid}/events", HOLDER) for _ in range(args.streams)]
            statuses = [r.status_code for r in held]
            during = post_latencies_ms(url, args.posts)
            for r in held:
                r.close()
        finally:
            spawner.stop_all()
            redis_server.stop()
    print(
        f"streams asked by one tenant: {args.streams}; open: {statuses.count(200)}; refused 429: {statuses.count(429)}"
    )
    print(f"cap: {settings.max_streams_per_tenant} per tenant per gateway process (2 processes)")
    print("another tenant's POST /v1/tasks/runs, ms      p50     p99     max")
    for name, values in (("no streams open", before), ("while they are open", during)):
        q = statistics.quantiles(values, n=100)
        print(f"  {name:<40} {q[49]:7.2f} {q[98]:7.2f} {max(values):7.2f}")


if __name__ == "__main__":
    main()
