"""REDIS_URL forms: plain and Sentinel, against real servers."""

from __future__ import annotations

import shutil
import subprocess

from taskq.broker import connect
from taskq.gateway import create_app
from tests.conftest import HEADERS, free_port, wait_until


def test_a_sentinel_url_finds_the_master(broker, redis_server, tmp_path):
    port = free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(f"port {port}\nbind 127.0.0.1\nsentinel monitor taskq 127.0.0.1 {redis_server.port} 1\n")
    binary = shutil.which("redis-sentinel") or shutil.which("redis-server")
    assert binary
    proc = subprocess.Popen([binary, str(conf), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"redis+sentinel://127.0.0.1:{port}/taskq/0"

        def answers() -> bool:
            try:
                return bool(connect(url).ping())
            except Exception:
                return False

        wait_until(answers, timeout_s=15)
        client = create_app(broker.settings.replace(redis_url=url)).test_client()
        r = client.post("/v1/tasks/runs", json={"input": {}, "processor": "echo"}, headers=HEADERS)
        assert r.status_code == 202
        assert broker.redis.hget(f"taskq:run:{r.json['run_id']}", "status") == "queued"
    finally:
        proc.terminate()
        proc.wait(10)
