"""Bare RQ, for the baselines: the no-op and 50 ms job functions, and an RQ worker process
(`python -m bench.rqside REDIS_URL fork|simple NAME [--burst]`) started the way
`rq worker` would, on the bench's queue."""

from __future__ import annotations

import sys
import time

QUEUE = "bench"


def noop() -> None:
    """The bare RQ job every baseline runs."""


def io_wait() -> None:
    """Waits 50 ms as on a network call (a blocking sleep), as workers.app's io_wait."""
    time.sleep(0.05)


def main(argv: list[str]) -> None:
    import rq
    from redis import Redis

    url, worker_class, name = argv[:3]
    connection = Redis.from_url(url)
    cls = {"fork": rq.Worker, "simple": rq.SimpleWorker}[worker_class]
    worker = cls([rq.Queue(QUEUE, connection=connection)], connection=connection, name=name)
    worker.work(burst="--burst" in argv, logging_level="INFO")


if __name__ == "__main__":
    main(sys.argv[1:])
