"""Redis bytes per finished run, with a payload: `python -m bench.memory`.

Starts its own redis-server from redis.conf, makes `--runs` runs of the example
app's `echo` processor (its output is its input) with a ~1 KB JSON input, runs them
to their end in this process (taskq.testing.drain), and prints `used_memory` after
minus before, divided by the runs: what a finished run costs Redis while it is kept.
Two payloads: `text`, a realistic record (names, sentences, numbers: JSON as APIs
send it), and `random`, the base64 of random bytes (what compression cannot shrink
much). The breakdown by key kind is `MEMORY USAGE` over a sample of the runs' keys;
`other` is what no key of the run accounts for (the key space's and expiry's own
entries, shared structures). Importable: `measure(...)` returns a `Report`.
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from taskq import keys, run, testing
from taskq.broker import Broker
from taskq.catalog import Catalog
from taskq.folding import EVENTS_LINGER_S
from taskq.ids import tenant_of
from taskq.models import RunInput
from taskq.processor import advertise, load_apps

from .harness import API_KEY, RedisServer, bench_settings

GIB = 1 << 30
SAMPLE = 200
WARM_UP = 50  # runs made and finished before the first reading: scripts loaded, shared keys made
PAYLOADS = ("text", "random")
TARGET_OVER_PAYLOAD = 600  # DESIGN.md: a finished run costs at most its payload plus this
PAYLOAD_BYTES = 1000  # ~1 KB, under redis.conf's hash-max-listpack-value (1,024)

_TEXT = (
    "the quarterly report shows steady growth in recurring revenue while churn stayed flat "
    "our team met the customer twice to review the migration plan and agreed on a timeline "
    "shipping delays in the northern region were caused by a supplier switching warehouses "
    "please confirm the invoice address before the contract renewal date next month "
    "the account manager noted strong interest in the analytics add on and the api tier"
)
_WORDS = tuple(_TEXT.split())
_FIRST = ("Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Radia", "Leslie")
_LAST = ("Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson", "Perlman", "Lamport")
_CITIES = ("Lisbon", "Utrecht", "Montreal", "Osaka", "Nairobi", "Tallinn", "Valparaiso", "Brisbane")


def text_payload(i: int, size: int = PAYLOAD_BYTES) -> dict[str, Any]:
    """A customer record as a CRM or an LLM pipeline would send it, about `size`
    bytes as compact JSON, different for every `i`."""
    rng = random.Random(i)
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    record: dict[str, Any] = {
        "id": f"cust_{i:08d}",
        "name": f"{first} {last}",
        "email": f"{first.lower()}.{last.lower()}@example.com",
        "company": {"name": f"{last} & Partners", "employees": rng.randint(5, 5000), "city": rng.choice(_CITIES)},
        "tags": rng.sample(["enterprise", "trial", "priority", "renewal", "emea", "apac", "upsell"], 3),
        "score": round(rng.random(), 4),
        "orders": [
            {"sku": f"SKU-{rng.randint(1000, 9999)}", "qty": rng.randint(1, 20), "price": round(rng.uniform(5, 500), 2)}
            for _ in range(3)
        ],
        "notes": "",
    }
    words: list[str] = []
    while len(_dumps(record)) < size:
        words.append(rng.choice(_WORDS))
        record["notes"] = " ".join(words)
    while len(_dumps(record)) > size:
        words.pop()
        record["notes"] = " ".join(words)
    return record


def random_payload(i: int, size: int = PAYLOAD_BYTES) -> dict[str, Any]:
    """About `size` bytes of JSON holding the base64 of random bytes."""
    raw = random.Random(i).randbytes(size * 3 // 4)
    return {"blob": base64.b64encode(raw).decode()[: size - len('{"blob":""}')]}


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


@dataclass
class Report:
    payload: str
    runs: int
    payload_bytes: float  # input plus output, as JSON, per run
    per_run_bytes: float  # used_memory delta / runs
    by_kind: dict[str, float] = field(default_factory=dict)  # MEMORY USAGE per run, by key kind

    @property
    def over_payload(self) -> float:
        return self.per_run_bytes - self.payload_bytes

    @property
    def runs_per_gib(self) -> float:
        return GIB / self.per_run_bytes

    @property
    def met(self) -> bool:
        return self.over_payload <= TARGET_OVER_PAYLOAD

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "over_payload": self.over_payload, "runs_per_gib": self.runs_per_gib}


def measure(runs: int = 3000, payload: str = "text", workdir: Path | None = None, **settings: Any) -> Report:
    """Bytes per finished run of `runs` echo runs with the `payload` kind, on a
    redis-server of its own; `settings` override the production defaults."""
    make = {"text": text_payload, "random": random_payload}[payload]
    with tempfile.TemporaryDirectory(prefix="taskq-memory-") as tmp:
        root = workdir or Path(tmp)
        server = RedisServer(root / "redis")
        try:
            cfg = bench_settings(server.url).replace(output_dir=str(root / "outputs"), **settings)
            broker = Broker(cfg)
            try:
                return _measure(broker, server, runs, payload, make)
            finally:
                broker.close()
        finally:
            server.stop()


def _measure(broker: Broker, server: RedisServer, n: int, payload: str, make: Any) -> Report:
    advertise(broker.redis, load_apps(broker.settings.app).values(), broker.settings)
    _make_and_finish(broker, [make(-1 - i) for i in range(WARM_UP)])
    before = _used_memory(server)
    inputs = [make(i) for i in range(n)]
    ids = _make_and_finish(broker, inputs)
    after = _used_memory(server)
    sample = random.Random(0).sample(ids, min(SAMPLE, n))
    return Report(
        payload=payload,
        runs=n,
        payload_bytes=2 * sum(len(_dumps(x)) for x in inputs) / n,
        per_run_bytes=(after - before) / n,
        by_kind=_by_kind(broker, sample, (after - before) / n),
    )


def _make_and_finish(broker: Broker, inputs: list[dict[str, Any]], batch: int = 200) -> list[str]:
    tenant = tenant_of(API_KEY)
    procs = Catalog(broker)
    ids: list[str] = []
    for start in range(0, len(inputs), batch):
        news = [
            run.prepare(broker, procs, tenant, RunInput(input=x, processor="echo"))
            for x in inputs[start : start + batch]
        ]
        ids += run.create(broker, news, tenant=tenant)[0]
    testing.drain(broker, concurrency=16, timeout_s=600)
    settle(broker, ids)
    return ids


def settle(broker: Broker, ids: list[str]) -> None:
    """Waits until what a finished run keeps only a short while (its event stream,
    once folded into its record) has gone, so the reading is what the run costs while
    it is kept. (EXISTS also reaps a key past its expiry, as Redis's own expiry cycle
    would a little later.)"""
    time.sleep(EVENTS_LINGER_S)

    def gone() -> bool:
        streams = [keys.run_events(i) for i in ids]
        return not sum(broker.redis.exists(*streams[i : i + 1000]) for i in range(0, len(streams), 1000))

    testing.wait_until(gone, timeout_s=30, what="streams gone")


def _used_memory(server: RedisServer) -> int:
    return int(server.client.info("memory")["used_memory"])


def _by_kind(broker: Broker, ids: list[str], per_run: float) -> dict[str, float]:
    kinds = {
        "run hash": keys.run,
        "run events": keys.run_events,
        "run deliveries": keys.run_deliveries,
        "run outputs": keys.run_outputs,
    }
    out: dict[str, float] = {}
    pipe = broker.redis.pipeline(transaction=False)
    for key_of in kinds.values():
        for run_id in ids:
            pipe.memory_usage(key_of(run_id), samples=0)
    replies = pipe.execute()
    for i, label in enumerate(kinds):
        total = sum(v or 0 for v in replies[i * len(ids) : (i + 1) * len(ids)])
        if total:
            out[label] = total / len(ids)
    listing = keys.tenant_runs(0, tenant_of(API_KEY))  # (one partition on a single Redis)
    members = broker.redis.zcard(listing)
    if members:
        out["tenant listing (share)"] = (broker.redis.memory_usage(listing, samples=0) or 0) / members
    out["other"] = per_run - sum(out.values())
    return out


def table(reports: list[Report]) -> str:
    lines = [
        "| payload | runs | payload B | B/finished run | over payload | runs per GiB | breakdown (B/run) |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in reports:
        kinds = ", ".join(f"{k} {v:,.0f}" for k, v in r.by_kind.items())
        lines.append(
            f"| {r.payload} | {r.runs:,} | {r.payload_bytes:,.0f} | {r.per_run_bytes:,.0f} | "
            f"{r.over_payload:+,.0f} | {r.runs_per_gib:,.0f} | {kinds} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3000)
    parser.add_argument("--payload", choices=(*PAYLOADS, "both"), default="both")
    parser.add_argument("--json", type=Path, help="write the reports here")
    args = parser.parse_args(argv)
    kinds = PAYLOADS if args.payload == "both" else (args.payload,)
    reports = []
    for kind in kinds:
        print(f"{kind}: {args.runs} runs...", flush=True)
        reports.append(measure(args.runs, kind))
    print(table(reports))
    print(f"target: at most the payload + {TARGET_OVER_PAYLOAD} B per finished run")
    if args.json:
        args.json.write_text(json.dumps([r.as_dict() for r in reports], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
