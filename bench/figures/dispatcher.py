"""Figure 5: webhook deliveries per second from one `taskq dispatcher` process to a
local receiver, alone and with 10 % of the deliveries going to another receiver that hangs
past the webhook timeout. The deliveries are made ready first (runs with a webhook,
cancelled while queued: each cancel writes one due delivery), then the dispatcher
starts. The rate is the fast receiver's: deliveries between its first and last one.

Bare RQ sends a job's webhooks from the worker that ran it, after the job, one at a
time (rq.webhook): its figure is one SimpleWorker running no-op jobs that each have
a webhook, to the same receivers."""

from __future__ import annotations

import json
import time
import urllib.request

import rq
from rq.webhook import Webhook

from taskq.ids import partition_of

from .. import rqside
from ..report import Row
from ..session import Session

SLOW_EVERY = 10  # one delivery in ten goes to the hanging receiver: the 6th, 16th, ...


def _is_slow(i: int) -> bool:
    return i % SLOW_EVERY == SLOW_EVERY // 2


def run(s: Session) -> None:
    # The hanging receiver is another server (host:port), as a dead customer endpoint
    # would be: the dispatcher caps sends in flight per receiver, not per path.
    receiver, hanging = s.spawner.receiver(), s.spawner.receiver()
    s.results.details["dispatcher"] = rates = {}
    for slow in (False, True):
        rates[f"taskq slow={slow}"] = _taskq(s, receiver, hanging, slow)
        rates[f"RQ slow={slow}"] = _rq(s, receiver, hanging, slow)
    fast, mixed = rates["taskq slow=False"], rates["taskq slow=True"]
    s.results.add(
        Row(
            "5 webhook deliveries/s",
            fast["rate"],
            rates["RQ slow=False"]["rate"],
            "/s",
            "taskq >= 1,000/s",
            fast["rate"] >= 1000,
            f"{fast['delivered']} of {fast['wanted']} delivered in {fast['window_s']:.1f} s",
        )
    )
    s.results.add(
        Row(
            "5 ... with 10% to a hanging receiver",
            mixed["rate"],
            rates["RQ slow=True"]["rate"],
            "/s",
            "same as without",
            mixed["rate"] >= 0.8 * fast["rate"],
            f"fast receiver got {mixed['delivered']} of {mixed['wanted']} within {mixed['window_s']:.1f} s; "
            f"RQ: {rates['RQ slow=True']['delivered']} of {rates['RQ slow=True']['wanted']}",
        )
    )


def _taskq(s: Session, receiver: str, hanging: str, slow: bool) -> dict[str, float]:
    n = s.mode.deliveries
    s.reset()
    _counts(receiver, reset=True)

    def url(i: int) -> str:
        return f"{hanging}/hang" if slow and _is_slow(i) else f"{receiver}/fast"

    ids = s.fill_taskq(n, webhook=url)
    by_partition: dict[int, list[str]] = {}
    for run_id in ids:
        by_partition.setdefault(partition_of(run_id), []).append(run_id)
    for partition, batch in by_partition.items():  # one cancel script per partition's batch
        for at in range(0, len(batch), 500):
            s.broker.scripts.cancel(partition, s.settings.retention_s, s.broker.rq_mirror, *batch[at : at + 500])
    wanted = sum(1 for i in range(n) if url(i).endswith("/fast"))
    dispatcher = s.spawner.dispatcher(s.settings)
    result = _await(receiver, wanted, s.mode.delivery_max_s)
    dispatcher.kill()  # its threads may be waiting on the hanging receiver
    return result


def _rq(s: Session, receiver: str, hanging: str, slow: bool) -> dict[str, float]:
    n = min(s.mode.deliveries, 1000)
    s.reset()
    _counts(receiver, reset=True)
    timeout = int(s.settings.webhook_timeout_s)
    datas = []
    for i in range(n):
        url = f"{hanging}/hang" if slow and _is_slow(i) else f"{receiver}/fast"
        hook = Webhook(url, "finished", method="POST", timeout=timeout)
        datas.append(rq.Queue.prepare_data(rqside.noop, webhooks=[hook]))
    s.rq_queue.enqueue_many(datas)
    wanted = sum(1 for i in range(n) if not (slow and _is_slow(i)))
    worker = s.spawner.rq_worker(s.settings, "simple", burst=True, name="rq-webhooks")
    result = _await(receiver, wanted, s.mode.delivery_max_s)
    worker.kill()  # it may be waiting on the hanging receiver
    return result


def _counts(receiver: str, reset: bool = False) -> dict[str, float]:
    with urllib.request.urlopen(receiver + "/count" + ("?reset=1" if reset else ""), timeout=5) as reply:
        return json.loads(reply.read())


def _await(receiver: str, wanted: int, max_s: float) -> dict[str, float]:
    """Waits until the fast receiver has `wanted` more deliveries, or `max_s` after
    the first of them; returns the rate from its first delivery to its last (all
    arrived) or to the end of the wait (some did not: a stall counts against it)."""
    deadline = time.monotonic() + 60  # to start: processes import, connect
    started = False
    while True:
        counts = _counts(receiver)
        got = counts["fast"]
        if got and not started:
            started, deadline = True, time.monotonic() + max_s
        if got >= wanted or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    first = counts["first"]
    end = counts["last"] if got >= wanted else time.time()
    window = max(end - first, 1e-3)
    rate = got / window if got > 1 else 0.0
    return {"rate": rate, "delivered": got, "wanted": wanted, "window_s": window}
