"""The benchmarks run: `python -m bench --smoke` measures every figure (tiny counts)
for taskq, bare RQ and Celery and prints its table. No timings are checked: benchmarks
print, they do not assert."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = [pytest.mark.processes, pytest.mark.slow]

FIGURES = (
    "1 HTTP enqueue",
    "2 group add",
    "3 no-op runs/s",
    "3 50 ms I/O",
    "3 50 ms async",
    "4 pickup p50",
    "5 webhook deliveries/s",
    "6 bytes/finished run",
    "7 GET group",
    "8 tenant B's wait behind A's backlog, p99",
    "8 A's runs started before B's last",
    "9 cap violations",
    "9 most starts in 1 s",
    "9 starts/s reached",
    "9 no-op runs/s under limits",
    "9 Redis CPU/run under limits",
    "10 keys on the busiest of 3 masters",
    "10 Redis CPU on the busiest of 3 masters",
)


def test_bench_smoke_prints_its_table_with_every_figure() -> None:
    # Given the bench in its smallest mode, when it runs end to end
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke"], cwd=ROOT, capture_output=True, text=True, timeout=110
    )
    # Then it exits cleanly and prints one table with a row for each figure, none failed
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "| figure" in out, out
    table = out[out.index("| figure") :]
    for figure in FIGURES:
        assert f"| {figure}" in table, f"no row for {figure!r}:\n{table}"
    assert "failed:" not in table, table
    # and every rate it prints for taskq measured something (a rate of 0: the figure did nothing)
    for name, taskq, unit in _rows(table):
        if unit.endswith("/s"):
            assert taskq not in ("-", "0", "0.00"), f"{name}: taskq measured no rate\n{table}"


def _rows(table: str) -> list[tuple[str, str, str]]:
    """(figure, taskq's value, unit) of each row of the printed table."""
    rows = []
    for line in table.splitlines()[2:]:
        if not line.startswith("| "):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows.append((cells[0], cells[1], cells[4]))
    return rows
