"""REDIS_URL forms: plain and Sentinel, against real servers."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from taskq import keys
from taskq.broker import connect
from taskq.gateway import create_app
from tests.conftest import HEADERS, free_port, wait_until

pytestmark = pytest.mark.processes  # Sentinel and ACL redis-servers of its own


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
        assert broker.redis.hget(keys.run(r.json["run_id"]), "status") == "queued"
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_password_or_acl_user_in_redis_url_is_used(tmp_path):
    # Given a Redis that requires a password, with an ACL user besides
    from taskq.broker import Broker
    from taskq.processor import advertise, load_apps
    from tests.conftest import ROOT, fast_settings

    port = free_port()
    binary = shutil.which("redis-server")
    assert binary
    proc = subprocess.Popen(
        [
            binary,
            str(ROOT / "redis.conf"),
            "--port",
            str(port),
            "--dir",
            str(tmp_path),
            "--requirepass",
            "s3cret",
            "--user",
            "taskq",
            "on",
            ">userpass",
            "~*",
            "&*",
            "+@all",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for url in (f"redis://:s3cret@127.0.0.1:{port}/0", f"redis://taskq:userpass@127.0.0.1:{port}/0"):

            def answers(url: str = url) -> bool:
                try:
                    return bool(connect(url).ping())
                except Exception:
                    return False

            wait_until(answers, timeout_s=15)
            # When the gateway is given that URL, Then it writes runs there
            settings = fast_settings(url)
            broker = Broker(settings)
            advertise(broker.redis, load_apps(settings.app).values(), settings)
            r = (
                create_app(settings)
                .test_client()
                .post("/v1/tasks/runs", json={"input": {}, "processor": "echo"}, headers=HEADERS)
            )
            assert r.status_code == 202 and broker.redis.hget(keys.run(r.json["run_id"]), "status") == "queued"
            broker.close()
        # And without the password nothing is reachable
        assert not answers(f"redis://127.0.0.1:{port}/0")
    finally:
        proc.terminate()
        proc.wait(10)
