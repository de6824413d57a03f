"""Property-based fuzzing (schemathesis) of every operation in the served
/openapi.json, against a real gunicorn gateway and a real worker: no answer is a 5xx,
and every answer fits the schema the document gives for its status."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import API_KEY, HEADERS

# Bounded: a few minutes at most on 2 cores.
MAX_EXAMPLES = 100


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_schemathesis_finds_no_server_error_and_no_schema_violation(broker, gunicorn, worker, tmp_path: Path):
    url = gunicorn(broker.settings.replace(proxy_upstreams=("model=http://127.0.0.1:9/api",)))
    worker("threads")
    # Real ids, so that operations on a run or a group reach past the 404.
    import requests

    run_id = requests.post(
        f"{url}/v1/tasks/runs", json={"input": {}, "processor": "echo"}, headers=HEADERS, timeout=10
    ).json()["run_id"]
    group_id = requests.post(f"{url}/v1/tasks/groups", json={}, headers=HEADERS, timeout=10).json()["taskgroup_id"]
    (tmp_path / "schemathesis.toml").write_text(
        f'[parameters]\n"path.run_id" = "{run_id}"\n"path.group_id" = "{group_id}"\n"path.upstream" = "model"\n'
    )
    st = shutil.which("st", path=str(Path(sys.executable).parent)) or "st"
    result = subprocess.run(
        [
            st,
            "run",
            f"{url}/openapi.json",
            "--checks",
            "not_a_server_error,response_schema_conformance",
            "--max-examples",
            str(MAX_EXAMPLES),
            "--seed",
            "1",
            "--workers",
            "1",
            "--header",
            f"x-api-key: {API_KEY}",
            "--request-timeout",
            "30",
            "--suppress-health-check",
            "all",
            "--generation-database",
            "none",
        ],
        capture_output=True,
        text=True,
        timeout=580,
        cwd=tmp_path,
    )
    (tmp_path / "schemathesis.out").write_text(result.stdout + result.stderr)
    assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-5000:]
