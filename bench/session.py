"""What every figure works with: the mode's sizes, the Redis server, the processes,
and helpers to fill queues the fast way (one script call or pipeline per batch)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis
import rq

from taskq import run
from taskq.broker import Broker
from taskq.catalog import Catalog
from taskq.ids import tenant_of
from taskq.models import RunInput, Webhook
from taskq.processor import advertise, load_apps

from . import rqside
from .harness import API_KEY, RedisServer, Spawner, bench_settings
from .report import Results


@dataclass(frozen=True)
class Mode:
    """How much each figure does. Counts are upper bounds; loops also stop at their
    time limits."""

    name: str
    enqueue_count: int  # fig 1: requests per client setting, and RQ enqueues
    enqueue_clients: tuple[int, ...]  # fig 1: concurrent HTTP clients
    enqueue_max_s: float
    group_adds: int  # fig 2: 1,000-input adds
    worker_runs: int  # fig 3: no-op runs per measurement
    worker_counts: tuple[int, ...]  # fig 3: worker processes
    io_runs: int  # fig 3: 50 ms I/O runs, one process at concurrency 32
    async_runs: int  # fig 3: 50 ms async runs, one process at concurrency 256
    rss_runs: int  # fig 3: I/O runs at concurrency 1, for the RSS comparison
    command_runs: int  # fig 3: runs watched with MONITOR
    latency_runs: int  # fig 4: runs per worker class
    deliveries: int  # fig 5
    delivery_max_s: float  # fig 5: time allowed per measurement
    memory_runs: int  # fig 6
    group_sizes: tuple[int, ...]  # fig 7
    group_reads: int  # fig 7: GETs per size
    fair_backlog: int  # fig 8: tenant A's 50 ms runs, queued before the worker starts
    fair_runs: int  # fig 8: tenant B's runs, made once the backlog is being worked
    fair_gap_s: float  # fig 8: between two of B's runs
    capped_runs: int  # fig 9: 20 ms runs of a processor with concurrency 4
    paced_runs: int  # fig 9: no-op runs of a processor with rate_limit 200/s
    limit_runs: int  # fig 9: no-op runs per drain, with and without limits
    limit_pairs: int  # fig 9: drains of each, in alternating order
    cluster_runs: int  # fig 10: no-op runs on one Redis, then on a 3-master cluster
    rounds: int = 3  # fig 1: alternating RQ / taskq rounds per client setting


MODES = {
    "full": Mode(
        "full",
        10_000,
        (1, 16, 64),
        20,
        10,
        3_000,
        (1, 2),
        3_200,
        10_000,
        200,
        200,
        1_000,
        5_000,
        20,
        5_000,
        (1_000, 100_000),
        500,
        fair_backlog=10_000,
        fair_runs=20,
        fair_gap_s=0.25,
        capped_runs=1_000,
        paced_runs=2_000,
        limit_runs=5_000,
        limit_pairs=5,
        cluster_runs=20_000,
    ),
    "quick": Mode(
        "quick",
        2_000,
        (16,),
        8,
        6,
        600,
        (1, 2),
        960,
        3_000,
        60,
        50,
        200,
        500,
        4,
        1_000,
        (1_000, 10_000),
        200,
        fair_backlog=1_000,
        fair_runs=20,
        fair_gap_s=0.25,
        capped_runs=200,
        paced_runs=400,
        limit_runs=2_000,
        limit_pairs=3,
        cluster_runs=5_000,
    ),
    "smoke": Mode(
        "smoke",
        200,
        (4,),
        4,
        1,
        40,
        (1,),
        64,
        256,
        10,
        10,
        20,
        100,
        2,
        100,
        (100, 1_000),
        20,
        fair_backlog=240,
        fair_runs=4,
        fair_gap_s=0.1,
        capped_runs=20,
        paced_runs=20,
        limit_runs=200,
        limit_pairs=1,
        cluster_runs=200,
        rounds=1,
    ),
}


class Session:
    def __init__(self, mode: Mode, workdir: Path) -> None:
        self.mode = mode
        self.workdir = workdir
        self.redis_server = RedisServer(workdir / "redis")
        self.r = self.redis_server.client
        self.settings = bench_settings(self.redis_server.url)
        self.broker = Broker(self.settings)
        self.rq_connection = redis.Redis.from_url(self.settings.redis_url)
        self.rq_queue = rq.Queue(rqside.QUEUE, connection=self.rq_connection)
        self.spawner = Spawner(workdir)
        self.results = Results()
        self.tenant = tenant_of(API_KEY)
        self._gateway_url: str | None = None
        self.gateway_pid = 0
        self.figures: set[int] = set()  # the figures this run measures
        self._catalog = Catalog(self.broker)

    def gateway(self) -> str:
        """The gateway under gunicorn, started on first use: the Procfile's 2 gevent
        workers."""
        if self._gateway_url is None:
            self._gateway_url, proc = self.spawner.gunicorn(self.settings, workers=2)
            self.gateway_pid = proc.proc.pid
        return self._gateway_url

    def redis_cpu_s(self) -> float:
        cpu = self.r.info("cpu")
        return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])

    @contextmanager
    def serving(self, *apps: str) -> Iterator[None]:
        """Inside, `settings` names `apps` besides the example app: the workers started
        and the processors advertised (`reset`) serve theirs too (bench/app.py)."""
        before = self.settings
        self.settings = before.replace(app=before.app + apps)
        try:
            yield
        finally:
            self.settings = before

    def reset(self) -> None:
        """An empty database with the example app's processors advertised (as a
        worker would), and fresh command counters."""
        self.r.flushall()
        advertise(self.broker.redis, load_apps(self.settings.app).values(), self.settings)
        self.r.config_resetstat()

    def fill_taskq(
        self,
        n: int,
        batch: int = 500,
        group_id: str | None = None,
        webhook: Callable[[int], str] | None = None,
        processor: str = "noop",
        tenant: str | None = None,
    ) -> list[str]:
        """n runs of `processor` (input {}) made through taskq's own Python API, `batch`
        per create script, for `tenant` (the bench's API key's by default); run i gets a
        webhook to `webhook(i)` when that is given."""
        tenant = tenant or self.tenant
        ids: list[str] = []
        plain = RunInput(input={}, processor=processor)

        def req(i: int) -> RunInput:
            return (
                plain if webhook is None else RunInput(input={}, processor=processor, webhook=Webhook(url=webhook(i)))
            )

        while len(ids) < n:
            news = [
                run.prepare(self.broker, self._catalog, tenant, req(len(ids) + i))
                for i in range(min(batch, n - len(ids)))
            ]
            made, _ = run.create(self.broker, news, tenant=tenant, group_id=group_id)
            ids += made
        return ids

    def fill_rq(self, n: int, batch: int = 500, func: Callable[[], None] = rqside.noop) -> list[str]:
        ids: list[str] = []
        while len(ids) < n:
            datas = [rq.Queue.prepare_data(func) for _ in range(min(batch, n - len(ids)))]
            ids += [job.id for job in self.rq_queue.enqueue_many(datas)]
        return ids

    def close(self) -> None:
        self.spawner.stop_all()
        self.broker.close()
        self.rq_connection.close()
        self.redis_server.stop()
