"""The package, the example app and the benchmarks type-check (mypy, settings in
pyproject.toml): a wrong type in a rarely-run branch fails here, not in production."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT


def test_the_code_type_checks():
    done = subprocess.run([sys.executable, "-m", "mypy", "taskq", "workers", "bench"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
