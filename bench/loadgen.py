"""An HTTP load generator, run in its own process so it does not share a GIL with
what it measures: `python -m bench.loadgen URL API_KEY CLIENTS COUNT MAX_S [GET PATH]`.

CLIENTS threads, each on one keep-alive connection, POST a no-op run (or GET PATH)
until COUNT requests are sent or MAX_S seconds pass; prints one JSON line with the count, the
elapsed time, the status codes and the request latency percentiles."""

from __future__ import annotations

import http.client
import itertools
import json
import sys
import threading
import time
from collections import Counter
from urllib.parse import urlsplit

BODY = json.dumps({"input": {}, "processor": "noop"}).encode()


def main(argv: list[str]) -> None:
    url, api_key, clients, count, max_s = argv[0], argv[1], int(argv[2]), int(argv[3]), float(argv[4])
    method, path = (argv[5], argv[6]) if len(argv) > 6 else ("POST", "/v1/tasks/runs")
    body = BODY if method == "POST" else None
    parts = urlsplit(url)
    headers = {"x-api-key": api_key, "content-type": "application/json"}
    tickets = itertools.count()
    statuses: Counter[int] = Counter()
    latencies: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)
    deadline = [0.0]

    def client() -> None:
        conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
        mine: list[float] = []
        codes: Counter[int] = Counter()
        start.wait()
        while next(tickets) < count and time.monotonic() < deadline[0]:
            t0 = time.perf_counter()
            try:
                conn.request(method, path, body=body, headers=headers)
                resp = conn.getresponse()
                resp.read()
                codes[resp.status] += 1
            except (OSError, http.client.HTTPException):
                codes[0] += 1
                conn.close()
                conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
            mine.append(time.perf_counter() - t0)
        conn.close()
        with lock:
            latencies.extend(mine)
            statuses.update(codes)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    deadline[0] = time.monotonic() + max_s
    t0 = time.perf_counter()
    start.wait()
    for t in threads:
        t.join(max_s + 60)
    elapsed = time.perf_counter() - t0
    latencies.sort()
    n = len(latencies)
    print(
        json.dumps(
            {
                "requests": n,
                "elapsed_s": elapsed,
                "statuses": {str(k): v for k, v in statuses.items()},
                "p50_ms": latencies[n // 2] * 1000 if n else None,
                "p99_ms": latencies[min(n - 1, int(n * 0.99))] * 1000 if n else None,
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1:])
