"""Figure 10: the same load on one Redis and on a three-master Redis Cluster on this
machine. n no-op runs are made through taskq's Python API (500 at a time, one create per partition) and run
to the end by two taskq workers (burst); for each master, its share of the keys left
and of the Redis CPU spent (INFO cpu, user + sys) shows whether the partitions spread
the work evenly (an even spread is a third each, as near as 16 partitions
over 3 masters can come: 5, 5 and 6), and the CPU per run on both shows
what the cluster costs in all. The cluster has no replicas here: a replica's work is
a copy of its master's."""

from __future__ import annotations

import math

import redis

from taskq import run as runs
from taskq.broker import CLUSTER_PARTITIONS, Broker
from taskq.catalog import Catalog
from taskq.models import RunInput
from taskq.processor import advertise, load_apps

from ..harness import RedisCluster
from ..report import Row
from ..session import Session

MASTERS = 3
WORKERS = 2
BATCH = 500


def _load(s: Session, url: str, n: int) -> None:
    """Makes n runs on the Redis at `url` and works them off with the workers."""
    settings = s.settings.replace(redis_url=url)
    broker = Broker(settings)
    try:
        advertise(broker.redis, load_apps(settings.app).values(), settings)
        catalog = Catalog(broker)
        req = RunInput(input={}, processor="noop")
        made = 0
        while made < n:
            by_partition: dict[int, list[runs.NewRun]] = {}
            for _ in range(min(BATCH, n - made)):
                new = runs.prepare(broker, catalog, s.tenant, req)
                by_partition.setdefault(new.partition, []).append(new)
            for news in by_partition.values():  # one create writes to one partition
                made += len(runs.create(broker, news, tenant=s.tenant)[0])
        procs = [s.spawner.taskq_worker(settings, "threads", burst=True, name=f"cluster-{i}") for i in range(WORKERS)]
        for proc in procs:
            proc.wait(timeout_s=max(120.0, n / 20))
    finally:
        broker.close()


def _cpu_s(client: redis.Redis) -> float:
    cpu = client.info("cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


def run(s: Session) -> None:
    n = s.mode.cluster_runs
    s.reset()
    before = s.redis_cpu_s()
    _load(s, s.settings.redis_url, n)
    single_us = (s.redis_cpu_s() - before) / n * 1e6

    cluster = RedisCluster(s.workdir / "cluster", masters=MASTERS, replicas=0)
    try:
        cluster.start()
        clients = {port: redis.Redis(port=port, decode_responses=True) for port in cluster.masters()}
        cpu0 = {port: _cpu_s(c) for port, c in clients.items()}
        _load(s, cluster.url, n)
        cpu = {port: _cpu_s(c) - cpu0[port] for port, c in clients.items()}
        keys_on = {port: int(c.dbsize()) for port, c in clients.items()}
        for c in clients.values():
            c.close()
    finally:
        cluster.stop()
    _report(s, n, single_us, cpu, keys_on)


def _report(s: Session, n: int, single_us: float, cpu: dict[int, float], keys_on: dict[int, int]) -> None:
    total_cpu, total_keys = sum(cpu.values()), sum(keys_on.values())
    cpu_share = [100 * v / total_cpu for v in cpu.values()] if total_cpu else [0.0]
    key_share = [100 * v / total_keys for v in keys_on.values()] if total_keys else [0.0]
    cluster_us = total_cpu / n * 1e6
    s.results.details["cluster"] = {
        "runs": n,
        "cpu_share_pct": cpu_share,
        "key_share_pct": key_share,
        "cpu_us_per_run": {"one_redis": single_us, "cluster": cluster_us},
    }
    # The partitions fall evenly into the masters' slot ranges, as evenly as whole
    # partitions can: 16 over 3 masters is 5, 5 and 6 (37.5 % the most).
    even = 100 * math.ceil(CLUSTER_PARTITIONS / MASTERS) / CLUSTER_PARTITIONS
    s.results.add(
        Row(
            f"10 keys on the busiest of {MASTERS} masters",
            max(key_share),
            None,
            "%",
            f"<= {even + 3:.0f} % ({CLUSTER_PARTITIONS} partitions: {even:.1f} %)",
            max(key_share) <= even + 3,
            "shares " + ", ".join(f"{v:.0f} %" for v in sorted(key_share)) + f"; {total_keys:,} keys, {n:,} runs",
        )
    )
    s.results.add(
        Row(
            f"10 Redis CPU on the busiest of {MASTERS} masters",
            max(cpu_share),
            None,
            "%",
            f"<= {even + 3:.0f} % ({CLUSTER_PARTITIONS} partitions: {even:.1f} %)",
            max(cpu_share) <= even + 3,
            "shares " + ", ".join(f"{v:.0f} %" for v in sorted(cpu_share)),
        )
    )
    s.results.add(
        Row(
            "10 Redis CPU per run, cluster (all masters) vs one Redis",
            cluster_us,
            None,
            "µs",
            "",
            None,
            f"one Redis {single_us:.0f} µs/run: the cluster costs {cluster_us / single_us:.2f}x in all, "
            f"spread over {MASTERS} cores"
            if single_us
            else "",
        )
    )
