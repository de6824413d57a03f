"""Real parts only: a redis-server from the project's redis.conf on a free port,
real worker processes, real HTTP servers.

Tiers: a test that starts a real process (through the fixtures below, or marked so
itself) is marked `processes`; a long one is marked `slow`. The fast tier, for
development, is everything else: `bash .ci/test -m "not processes and not slow"`.
CI runs every tier."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis as redis_lib

from bench.harness import RedisCluster, gunicorn_command
from taskq import keys, testing
from taskq.broker import Broker
from taskq.engine.claims import budgets
from taskq.gateway import create_app
from taskq.processor import advertise, load_apps
from taskq.settings import Settings
from tests.receiver import Receiver, serving

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "key-a"
OTHER_KEY = "key-b"
HEADERS = {"x-api-key": API_KEY}


# Fixtures that start real processes: a test that uses one is in the `processes` tier.
PROCESS_FIXTURES = {"worker", "spawn", "gunicorn", "s3", "redis_cluster"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if PROCESS_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.processes)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], object], timeout_s: float = 10, interval_s: float = 0.02) -> object:
    """Polls `predicate` until it is truthy; fails the test after `timeout_s`."""
    try:
        return testing.wait_until(predicate, timeout_s, interval_s)
    except testing.NotInTime as exc:
        pytest.fail(str(exc))


class RedisServer:
    """redis-server from the project's redis.conf, on a free port, in its own dir."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed: run .ci/bootstrap (it installs it with apt-get)")
        self.proc = subprocess.Popen(
            [
                binary,
                str(ROOT / "redis.conf"),
                "--port",
                str(self.port),
                "--dir",
                str(self.workdir),
                "--daemonize",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis_lib.Redis(port=self.port)
        wait_until(lambda: _pings(client), timeout_s=10)
        client.close()

    def stop(self, how: str = "shutdown") -> None:
        """`shutdown`: Redis's own SHUTDOWN (AOF flushed); `kill`: SIGKILL."""
        if self.proc is None:
            return
        if how == "kill":
            self.proc.kill()
        else:
            try:
                redis_lib.Redis(port=self.port).shutdown()
            except redis_lib.ConnectionError:
                pass
        self.proc.wait(10)
        self.proc = None


def _pings(client: redis_lib.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis_lib.ConnectionError:
        return False


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


class ClusterServers(RedisCluster):
    """The suite's Redis Cluster: three masters, a replica each (bench/harness.py)."""

    def start(self) -> None:
        try:
            super().start()
        except RuntimeError as exc:
            pytest.fail(str(exc))


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterServers]:
    cluster = ClusterServers(tmp_path_factory.mktemp("cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def fast_settings(redis_url: str, **overrides: object) -> Settings:
    """Fast intervals, so failure tests take seconds, not minutes."""
    values: dict[str, object] = {
        "redis_url": redis_url,
        "api_keys": (API_KEY, OTHER_KEY),
        "app": ("workers.app",),
        "webhook_allow_private": True,
        "heartbeat_s": 0.2,
        "lease_s": 1.0,
        "reaper_interval_s": 0.2,
        "retry_backoff_base_s": 0.05,
        "retry_backoff_cap_s": 0.2,
        "shutdown_grace_s": 2.0,
        "processor_cache_s": 0.2,
        "webhook_timeout_s": 2.0,
        "webhook_schedule_s": ("0.2", "0.4", "0.8"),
        "dispatcher_poll_s": 0.05,
        "sse_heartbeat_s": 1.0,
        "schedules": False,  # on where a test is about them: no nightly run in another test at 03:00
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def settings_env(settings: Settings) -> dict[str, str]:
    """This environment, less any taskq settings of its own, plus `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKQ_") and k != "REDIS_URL"}
    return {**env, **settings.to_env(), "PYTHONPATH": str(ROOT)}


@pytest.fixture
def settings(redis_server: RedisServer) -> Settings:
    return fast_settings(redis_server.url)


@pytest.fixture
def broker(settings: Settings) -> Iterator[Broker]:
    """A clean database, with the example app's processors advertised as a worker would."""
    b = Broker(settings)
    b.redis.flushdb()
    assert b.partitions == 1  # fixed in Redis now, as a process starting up does
    processors = load_apps(settings.app).values()
    advertise(b.redis, processors, settings)
    # A worker that serves them all, alive for the test (as `advertise` stands for one):
    # runs made meanwhile are not told that no live worker serves their processor.
    b.redis.zadd(keys.WORKERS, {"test-worker": b.now_ms() + 24 * 3600 * 1000})
    named = {k: v.to_json() for k, v in budgets(processors, 0).items() if k.startswith("n:")}
    record = {"processors": ",".join(p.name for p in processors), "limits": json.dumps(named)}
    b.redis.hset(keys.worker("test-worker"), mapping=record)
    yield b
    b.close()


@pytest.fixture
def client(broker: Broker):  # type: ignore[no-untyped-def]
    app = create_app(broker.settings)
    yield app.test_client()
    app.extensions["taskq"].close()  # its Redis connections, not left to the garbage collector


class Process:
    """A real taskq process (worker, dispatcher, gunicorn) started for a test."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(args, env=env, stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL the process and everything it started (a worker's work horse)."""
        for pid in _descendants(self.proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.kill()
        self.proc.wait(10)

    def wait(self, timeout_s: float = 30) -> int:
        """The exit code; a process still running after `timeout_s` fails the test
        with its log (the only way to see why it did not stop)."""
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{self.proc.args} still running after {timeout_s} s; its log:\n{self.output()[-6000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")


def _descendants(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    children = [int(p) for p in out.split()]
    return [d for c in children for d in _descendants(c)] + children


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Process]]:
    """spawn("worker", "--pool", "threads", settings=s) starts `taskq worker ...`."""
    started: list[Process] = []

    def start(*args: str, settings: Settings, command: list[str] | None = None) -> Process:
        argv = command or [sys.executable, "-m", "taskq.cli", *args]
        proc = Process(argv, settings_env(settings), tmp_path / f"proc-{len(started)}.log")
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


POOLS = ("threads", "processes")


@pytest.fixture
def worker(spawn: Callable[..., Process], broker: Broker) -> Callable[..., Process]:
    """Starts a real worker process (`taskq worker --pool ...`) and waits until it
    has registered (taskq's registry: on a single Redis, with RQ's too)."""

    def start(
        pool: str = "threads", settings: Settings | None = None, name: str | None = None, concurrency: int | None = None
    ) -> Process:
        before = broker.redis.zcard(keys.WORKERS)
        args = ["worker", "--pool", pool, "--log-level", "debug"]
        if name:
            args += ["--name", name]
        if concurrency:
            args += ["--concurrency", str(concurrency)]
        proc = spawn(*args, settings=settings or broker.settings)
        wait_until(lambda: broker.redis.zcard(keys.WORKERS) > before or proc.proc.poll() is not None)
        assert proc.proc.poll() is None, proc.output()
        return proc

    return start


@pytest.fixture
def drain(broker: Broker) -> Callable[..., None]:
    """Runs every queued run to its end in this process, with no subprocess
    (taskq.testing.drain)."""

    def run(settings: Settings | None = None, concurrency: int = 8, timeout_s: float = 60) -> None:
        b = broker if settings is None else Broker(settings)
        try:
            testing.drain(b, concurrency, timeout_s)
        finally:
            if b is not broker:
                b.close()

    return run


@pytest.fixture
def deliver(broker: Broker) -> Callable[..., None]:
    """Delivers due webhooks in this process, with no subprocess (taskq.testing.deliver):
    `deliver(until=lambda: ...)` goes on through retries until the condition holds."""

    def run(until: Callable[[], object] | None = None, settings: Settings | None = None, timeout_s: float = 20) -> None:
        b = broker if settings is None else Broker(settings)
        try:
            testing.deliver(b, until, timeout_s)
        except testing.NotInTime as exc:
            pytest.fail(str(exc))
        finally:
            if b is not broker:
                b.close()

    return run


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A real HTTP server on a free port that records every request (tests/receiver.py)."""
    with serving() as rec:
        yield rec


@pytest.fixture
def gunicorn(spawn: Callable[..., Process], broker: Broker) -> Callable[..., str]:
    """Starts the gateway under a real gunicorn, as the Procfile's `web` line does
    (gevent workers); returns its base URL."""

    def start(settings: Settings | None = None, workers: int = 2) -> str:
        port = free_port()
        proc = spawn(settings=settings or broker.settings, command=gunicorn_command(port, workers))
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: _http_ok(url + "/healthz") or proc.proc.poll() is not None, timeout_s=20)
        assert proc.proc.poll() is None, proc.output()
        return url

    return start


def _http_ok(url: str) -> bool:
    import requests

    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False
