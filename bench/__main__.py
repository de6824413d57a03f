"""python -m bench [--quick | --smoke] [--only 1,3] [--json PATH] [--plot PATH] [--plot-fairness PATH]"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from .report import Row, plot, plot_fairness, table, write_json
from .session import MODES, Session

# figure number -> module in bench/figures (figures 2, 5 and 7 need groups and the
# dispatcher; each says so in the table when what it measures is not there yet)
FIGURES = {
    1: "enqueue",
    2: "groups",
    3: "workers",
    4: "latency",
    5: "dispatcher",
    6: "memory",
    7: "groups",
    8: "fairness",
    9: "limits",
    10: "cluster",
}


def machine() -> str:
    import redis
    import rq

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        meminfo = Path("/proc/meminfo").read_text().splitlines()
        mem_kb = next(int(x.split()[1]) for x in meminfo if x.startswith("MemTotal"))
        mem = f"{mem_kb / 1024 / 1024:.0f} GiB"
    except (OSError, StopIteration):
        mem = "?"
    return (
        f"{os.cpu_count()} CPUs ({cpu}), {mem} RAM, Python {platform.python_version()}, "
        f"rq {rq.__version__}, redis-py {redis.__version__}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description="taskq vs bare RQ, side by side")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smaller counts: under two minutes")
    size.add_argument("--smoke", action="store_true", help="tiny counts: checks the bench runs (tests)")
    parser.add_argument("--only", default="", help="comma-separated figure numbers (default: all)")
    parser.add_argument("--json", type=Path, help="write every figure and its details here")
    parser.add_argument("--plot", type=Path, help="write the worker-throughput plot (PNG) here")
    parser.add_argument("--plot-fairness", type=Path, help="write figure 8's plot of B's waits (PNG) here")
    args = parser.parse_args(argv)
    mode = MODES["smoke" if args.smoke else "quick" if args.quick else "full"]
    wanted = sorted({int(x) for x in args.only.split(",") if x.strip()} or FIGURES)

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="taskq-bench-") as tmp:
        session = Session(mode, Path(tmp))
        session.figures = set(wanted)
        print(f"taskq bench ({mode.name}) on {machine()}, Redis {session.redis_server.version()}", flush=True)
        try:
            done: set[str] = set()
            for number in wanted:
                name = FIGURES[number]
                if name in done:
                    continue
                done.add(name)
                print(f"figure {number} ({name})...", flush=True)
                module = importlib.import_module(f"bench.figures.{name}")
                figure_started = time.monotonic()
                try:
                    module.run(session)
                except Exception as exc:  # one broken figure must not hide the others
                    session.results.add(Row(f"{number} {name}", None, None, "", "", None, f"failed: {exc!r}"[:300]))
                print(f"  ({time.monotonic() - figure_started:.0f} s)", flush=True)
        finally:
            session.close()
    results = session.results
    print()
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"taskq vs bare RQ ({mode.name} mode, {time.monotonic() - started:.0f} s, load average at the end {load}); "
        "ratio = taskq / RQ"
    )
    print(table(results))
    if args.json:
        write_json(results, args.json)
    if args.plot and results.details.get("worker_throughput"):
        plot(results, args.plot)
    if args.plot_fairness and results.details.get("fairness"):
        plot_fairness(results, args.plot_fairness)
    return 0


if __name__ == "__main__":
    sys.exit(main())
