"""The bench's one table, its JSON, and its plots (worker throughput; fairness)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Row:
    """One figure: taskq's and RQ's absolute values, in `unit`, and the target."""

    figure: str
    taskq: float | None
    rq: float | None
    unit: str
    target: str
    met: bool | None = None  # None: no target, or not measured
    note: str = ""
    celery: float | None = None  # Celery 5's value, where the figure has one

    @property
    def vs_celery(self) -> float | None:
        if self.taskq is None or not self.celery:
            return None
        return self.taskq / self.celery

    @property
    def ratio(self) -> float | None:
        if self.taskq is None or not self.rq:
            return None
        return self.taskq / self.rq


@dataclass
class Results:
    rows: list[Row] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def add(self, row: Row) -> None:
        self.rows.append(row)
        celery = f" / Celery {_num(row.celery)}" if row.celery is not None else ""
        print(f"  {row.figure}: taskq {_num(row.taskq)} / RQ {_num(row.rq)}{celery} {row.unit}", flush=True)


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def table(results: Results) -> str:
    header = ("figure", "taskq", "RQ", "Celery", "unit", "ratio", "vs Celery", "target", "met")
    lines = []
    for row in sorted(results.rows, key=lambda r: int(r.figure.split()[0].rstrip("b"))):
        met = {True: "yes", False: "NO", None: "-"}[row.met]
        ratio = "-" if row.ratio is None else f"{row.ratio:.2f}"
        vs = "-" if row.vs_celery is None else f"{row.vs_celery:.2f}"
        lines.append(
            (row.figure, _num(row.taskq), _num(row.rq), _num(row.celery), row.unit, ratio, vs, row.target, met)
        )
    widths = [max(len(str(r[i])) for r in [header, *lines]) for i in range(len(header))]
    right = {1, 2, 3, 5, 6}

    def fmt(r: tuple[str, ...]) -> str:
        cells = (c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        return "| " + " | ".join(cells) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if i in right else ("-" * (w + 2)) for i, w in enumerate(widths)) + "|"
    out = [fmt(header), rule, *(fmt(r) for r in lines)]
    notes = [f"- {r.figure}: {r.note}" for r in results.rows if r.note]
    return "\n".join(out + ([""] + notes if notes else []))


def write_json(results: Results, path: Path) -> None:
    rows = [{**asdict(r), "ratio": r.ratio, "vs_celery": r.vs_celery} for r in results.rows]
    path.write_text(json.dumps({"rows": rows, "details": results.details}, indent=2, default=str))


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


COLOURS = {"taskq": "tab:blue", "RQ": "tab:orange", "Celery": "tab:green"}


def plot(results: Results, path: Path) -> None:
    """Throughput against worker count, one line per system and worker class."""
    plt = _pyplot()

    series: dict[str, dict[int, float]] = results.details.get("worker_throughput", {})
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    styles = {"taskq": "-", "RQ": "--", "Celery": ":"}
    for label, points in sorted(series.items(), key=lambda item: item[0].split()[::-1]):
        system, worker_class = label.split()
        by_count = {int(k): v for k, v in points.items()}
        xs = sorted(by_count)
        ax.plot(
            xs, [by_count[x] for x in xs], styles.get(system, "-"), color=COLOURS.get(system), marker="o", label=label
        )
    ax.set_xlabel("worker processes")
    ax.set_ylabel("no-op runs / s")
    ax.set_xticks(sorted({int(k) for p in series.values() for k in p}))
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend()
    ax.set_title("No-op worker throughput: taskq vs RQ vs Celery (same run)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_fairness(results: Results, path: Path) -> None:
    """Figure 8: each of tenant B's runs' queue wait, in the order made, one line per
    system, against the target of two run-lengths."""
    plt = _pyplot()
    series: dict[str, dict[str, Any]] = results.details["fairness"]
    fig, ax = plt.subplots(figsize=(7.6, 4.2))
    for system, f in series.items():
        waits = f["waits_ms"]
        ax.plot(range(1, len(waits) + 1), waits, "-", color=COLOURS.get(system), marker="o", label=system)
    ax.axhline(100, color="grey", linestyle="--", linewidth=1, label="2 run-lengths")
    backlog = max(f["backlog"] for f in series.values())
    ax.set_yscale("symlog", linthresh=10)  # linear below 10 ms: a wait of 0 stays on the plot
    ax.set_ylim(0, max(w for f in series.values() for w in f["waits_ms"]) * 2)
    ax.set_xlabel("tenant B's run, in the order made")
    ax.set_ylabel("queue wait (ms)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set_title(f"Tenant B's waits behind A's backlog of {backlog:,} runs (50 ms, c=8)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
