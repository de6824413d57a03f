"""Figures 2 and 7: task groups.

2. A 1,000-input `POST /v1/tasks/groups/{id}/runs` (one client, through gunicorn),
   runs/s, vs bare RQ `enqueue_many` of 1,000 jobs in one pipeline; and the Redis
   commands one add sends (MONITOR).
7. `GET /v1/tasks/groups/{id}` latency for a group of 1,000 runs and a large one
   (100,000 in full mode), vs what bare RQ offers for the same question: an RQ
   `Group`'s jobs fetched and their statuses counted. The large group is filled
   through taskq's Python API (`run.create` with the group id, 500 per script)."""

from __future__ import annotations

import http.client
import json
import time
from collections import Counter
from typing import Any
from urllib.parse import urlsplit

import rq
from rq.group import Group

from .. import monitor, rqside
from ..harness import API_KEY
from ..report import Row
from ..session import Session

INPUTS = 1000


class Client:
    """One keep-alive HTTP connection to the gateway."""

    def __init__(self, url: str) -> None:
        self.parts = urlsplit(url)
        self.conn = http.client.HTTPConnection(self.parts.hostname or "127.0.0.1", self.parts.port, timeout=60)
        self.headers = {"x-api-key": API_KEY, "content-type": "application/json"}

    def call(self, method: str, path: str, body: bytes | None = None) -> Any:
        try:
            self.conn.request(method, path, body=body, headers=self.headers)
            resp = self.conn.getresponse()
        except (http.client.RemoteDisconnected, ConnectionError):
            # gunicorn closes a keep-alive connection left idle (while a group fills)
            self.conn.close()
            self.conn = http.client.HTTPConnection(self.parts.hostname or "127.0.0.1", self.parts.port, timeout=60)
            self.conn.request(method, path, body=body, headers=self.headers)
            resp = self.conn.getresponse()
        payload = json.loads(resp.read())
        if resp.status >= 300:
            raise RuntimeError(f"{method} {path} answered {resp.status}: {str(payload)[:300]}")
        return payload

    def new_group(self) -> str:
        return str(self.call("POST", "/v1/tasks/groups", b"{}")["taskgroup_id"])


def run(s: Session) -> None:
    if 2 in s.figures:
        _group_add(s)
    if 7 in s.figures:
        _group_status(s)


def _group_add(s: Session) -> None:
    http_client = Client(s.gateway())
    body = json.dumps({"inputs": [{"input": {}, "processor": "noop"}] * INPUTS}).encode()
    s.reset()
    http_client.call("POST", f"/v1/tasks/groups/{http_client.new_group()}/runs", body)  # warm up
    s.rq_queue.enqueue_many([rq.Queue.prepare_data(rqside.noop) for _ in range(INPUTS)])
    # Alternating, so that both see the same moments of a shared machine.
    taskq_s = rq_s = 0.0
    for _ in range(s.mode.group_adds):
        s.reset()
        gid = http_client.new_group()
        t0 = time.perf_counter()
        reply = http_client.call("POST", f"/v1/tasks/groups/{gid}/runs", body)
        taskq_s += time.perf_counter() - t0
        assert len(reply["run_ids"]) == INPUTS
        s.reset()
        datas = [rq.Queue.prepare_data(rqside.noop) for _ in range(INPUTS)]
        t0 = time.perf_counter()
        s.rq_queue.enqueue_many(datas)
        rq_s += time.perf_counter() - t0
    taskq_rate, rq_rate = s.mode.group_adds * INPUTS / taskq_s, s.mode.group_adds * INPUTS / rq_s

    s.reset()
    gid = http_client.new_group()
    seen = monitor.watch(s.r, lambda: http_client.call("POST", f"/v1/tasks/groups/{gid}/runs", body))
    s.results.details["group_add_commands"] = {k: dict(v.most_common(12)) for k, v in seen.items()}
    client_cmds = sum(seen["client"].values())
    s.results.add(
        Row(
            f"2 group add ({INPUTS:,} inputs)",
            taskq_rate,
            rq_rate,
            "runs/s",
            "ratio >= 1.0",
            taskq_rate >= rq_rate,
            f"one add sends {client_cmds} commands to Redis "
            f"({dict(seen['client'].most_common(4))}), "
            f"{sum(seen['lua'].values())} run inside Lua",
        )
    )


def _group_status(s: Session) -> None:
    http_client = Client(s.gateway())
    for size in s.mode.group_sizes:
        s.reset()
        gid = http_client.new_group()
        s.fill_taskq(size, group_id=gid)
        http_client.call("GET", f"/v1/tasks/groups/{gid}")
        taskq_ms = []
        for _ in range(s.mode.group_reads):
            t0 = time.perf_counter()
            status = http_client.call("GET", f"/v1/tasks/groups/{gid}")
            taskq_ms.append((time.perf_counter() - t0) * 1000)
        assert status["status"]["num_task_runs"] == size, status

        s.reset()
        group_id = f"bench-{size}"
        rq_group = Group.create(s.rq_connection, group_id)
        for start in range(0, size, 1000):
            datas = [rq.Queue.prepare_data(rqside.noop) for _ in range(min(1000, size - start))]
            rq_group.enqueue_many(s.rq_queue, datas)
        rq_ms = []
        for _ in range(max(1, min(5, 5_000 // size))):  # slow at scale: few reads
            t0 = time.perf_counter()
            jobs = Group.fetch(group_id, s.rq_connection).get_jobs()
            counts = Counter(job.get_status(refresh=False) for job in jobs)
            rq_ms.append((time.perf_counter() - t0) * 1000)
        assert sum(counts.values()) == size, counts
        tq_p50, rq_p50 = _p50(taskq_ms), _p50(rq_ms)
        s.results.details[f"group_status_{size}"] = {"taskq_ms": _pcts(taskq_ms), "rq_ms": _pcts(rq_ms)}
        s.results.add(
            Row(
                f"7 GET group, {size:,} runs (p50)",
                tq_p50,
                rq_p50,
                "ms",
                "same at any size",
                None,
                f"taskq p99 {_pcts(taskq_ms)['p99']:.2f} ms; RQ: Group.get_jobs() + count statuses",
            )
        )
    small, large = (s.results.details[f"group_status_{n}"]["taskq_ms"]["p50"] for n in s.mode.group_sizes)
    s.results.rows[-1].met = large <= small * 1.5 + 0.5


def _p50(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def _pcts(values: list[float]) -> dict[str, float]:
    v = sorted(values)
    return {"p50": v[len(v) // 2], "p99": v[min(len(v) - 1, int(len(v) * 0.99))]}
