"""The real parts a benchmark runs against: redis-server from redis.conf on a free
port in a temporary directory, the gateway under gunicorn, taskq and RQ workers as
subprocesses, each given its settings through the environment."""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import redis

from taskq import testing
from taskq.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "bench-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], object], timeout_s: float, what: str, interval_s: float = 0.01) -> object:
    try:
        return testing.wait_until(predicate, timeout_s, interval_s, what=f"bench: {what}")
    except testing.NotInTime as exc:
        raise TimeoutError(str(exc)) from None


class RedisServer:
    """redis-server from the project's redis.conf (AOF on, as in production)."""

    def __init__(self, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("bench: redis-server is not installed (run .ci/bootstrap)")
        self.proc = subprocess.Popen(
            [binary, str(ROOT / "redis.conf"), "--port", str(self.port), "--dir", str(workdir), "--daemonize", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.client = redis.Redis(port=self.port, decode_responses=True)
        wait_until(self._pings, 10, "redis-server start")

    def _pings(self) -> bool:
        try:
            return bool(self.client.ping())
        except redis.ConnectionError:
            return False

    def version(self) -> str:
        return str(self.client.info("server")["redis_version"])

    def command_calls(self) -> int:
        """Commands Redis has executed since the last CONFIG RESETSTAT, those run
        inside Lua scripts included (INFO commandstats)."""
        stats = self.client.info("commandstats")
        return sum(int(v["calls"]) for v in stats.values())

    def stop(self) -> None:
        try:
            self.client.shutdown(nosave=True)
        except redis.RedisError:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


class RedisCluster:
    """A real Redis Cluster on this machine: `masters` redis-servers from redis.conf in
    cluster mode, each with `replicas` replicas, joined by `redis-cli --cluster create`.
    The tests' cluster fixture is one of these (tests/conftest.py)."""

    NODE_TIMEOUT_MS = 2000  # a master down this long is failed over to its replica

    def __init__(self, workdir: Path, masters: int = 3, replicas: int = 1) -> None:
        self.workdir = workdir
        self.size = masters
        self.replicas = replicas
        self.ports = cluster_ports(masters * (1 + replicas))
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def start_node(self, port: int) -> None:
        node_dir = self.workdir / str(port)
        node_dir.mkdir(parents=True, exist_ok=True)
        self.procs[port] = subprocess.Popen(
            [
                shutil.which("redis-server") or "redis-server",
                str(ROOT / "redis.conf"),
                "--port", str(port),
                "--dir", str(node_dir),
                "--daemonize", "no",
                "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(self.NODE_TIMEOUT_MS),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis(port=port)
        try:
            wait_until(lambda: _pings(client), 10, f"cluster node {port} start")
        finally:
            client.close()

    def start(self) -> None:
        if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
            raise RuntimeError("redis-server/redis-cli are not installed: run .ci/bootstrap (it installs them)")
        for port in self.ports:
            self.start_node(port)
        nodes = [f"127.0.0.1:{p}" for p in self.ports]
        subprocess.run(
            ["redis-cli", "--cluster", "create", *nodes, "--cluster-replicas", str(self.replicas), "--cluster-yes"],
            check=True,
            capture_output=True,
        )
        wait_until(self.healthy, 30, "cluster ok")

    def healthy(self) -> bool:
        """Every live node says the cluster is ok and sees every master answer."""
        try:
            for port, proc in self.procs.items():
                if proc.poll() is not None:
                    continue
                client = redis.Redis(port=port, decode_responses=True)
                try:
                    if client.cluster("info")["cluster_state"] != "ok":
                        return False
                finally:
                    client.close()
            return len(self.masters()) == self.size
        except redis.RedisError:
            return False

    def masters(self) -> list[int]:
        """The ports of the live masters that own slots."""
        out = []
        for port, proc in self.procs.items():
            if proc.poll() is not None:
                continue
            client = redis.Redis(port=port, decode_responses=True)
            try:
                me = next(n for n in cluster_nodes(client) if "myself" in str(n["flags"]))
                if "master" in str(me["flags"]) and me["slots"]:
                    out.append(port)
            except redis.RedisError:
                pass
            finally:
                client.close()
        return out

    def kill(self, port: int) -> None:
        self.procs[port].kill()
        self.procs[port].wait(10)

    def flush(self) -> None:
        for port in self.masters():
            redis.Redis(port=port).flushall()

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def cluster_ports(n: int) -> list[int]:
    """n free ports whose cluster bus ports (port + 10000) are free too (and exist)."""
    ports: list[int] = []
    rng = random.Random()
    while len(ports) < n:
        port = rng.randrange(20000, 30000)
        if port in ports:
            continue
        try:
            for p in (port, port + 10000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        ports.append(port)
    return ports


def cluster_nodes(client: redis.Redis) -> list[dict[str, object]]:
    """CLUSTER NODES, parsed: id, addr, flags, slots."""
    out = []
    for line in client.execute_command("CLUSTER", "NODES").splitlines():
        parts = line.split()
        out.append({"id": parts[0], "addr": parts[1], "flags": parts[2], "slots": parts[8:]})
    return out


def bench_settings(redis_url: str) -> Settings:
    """The production defaults, pointed at the bench's Redis and the example app."""
    return Settings(redis_url=redis_url, api_keys=(API_KEY,), app=("workers.app",), webhook_allow_private=True)


def settings_env(settings: Settings) -> dict[str, str]:
    """This environment, less any taskq settings of its own, plus `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKQ_") and k != "REDIS_URL"}
    return {**env, **settings.to_env(), "PYTHONPATH": str(ROOT)}


class Process:
    """A subprocess with its output in a log file in the bench's temporary directory."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(args, env=env, stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT)

    def running(self) -> bool:
        return self.proc.poll() is None

    def wait(self, timeout_s: float) -> int:
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.stop()
            raise TimeoutError(f"bench: {self.log_path.name} still running after {timeout_s} s") from None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()

    def kill(self) -> None:
        """SIGKILL: for a process stuck in a call we do not want to wait for."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")


class Spawner:
    """Starts processes with logs under `workdir`, and stops them all at the end."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.started: list[Process] = []

    def start(self, name: str, args: list[str], env: dict[str, str]) -> Process:
        proc = Process(args, env, self.workdir / f"{len(self.started):02d}-{name}.log")
        self.started.append(proc)
        return proc

    def taskq_worker(
        self, settings: Settings, pool: str = "threads", *, burst: bool, name: str, concurrency: int | None = None
    ) -> Process:
        """`taskq worker` with the production defaults, unless a pool or concurrency is given."""
        args = [sys.executable, "-m", "taskq.cli", "worker", "--pool", pool, "--name", name]
        if concurrency:
            args += ["--concurrency", str(concurrency)]
        return self.start(name, args + (["--burst"] if burst else []), settings_env(settings))

    def celery_worker(self, settings: Settings, pool: str, concurrency: int, *, name: str) -> Process:
        """A Celery 5 worker on the bench's Redis (bench/celeryside.py)."""
        from . import celeryside

        env = {**settings_env(settings), "BENCH_CELERY_URL": settings.redis_url}
        return self.start(name, [sys.executable, *celeryside.worker_args(pool, concurrency)], env)

    def rq_worker(self, settings: Settings, worker_class: str, *, burst: bool, name: str) -> Process:
        args = [sys.executable, "-m", "bench.rqside", settings.redis_url, worker_class, name]
        return self.start(name, args + (["--burst"] if burst else []), settings_env(settings))

    def dispatcher(self, settings: Settings) -> Process:
        return self.start("dispatcher", [sys.executable, "-m", "taskq.cli", "dispatcher"], settings_env(settings))

    def receiver(self) -> str:
        """The local webhook receiver (bench/receiver.py); returns its base URL."""
        port = free_port()
        proc = self.start("receiver", [sys.executable, "-m", "bench.receiver", str(port)], dict(os.environ))
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: _http_ok(url + "/count") or not proc.running(), 10, "receiver start")
        return url

    def gunicorn(self, settings: Settings, workers: int, connections: int = 1000) -> tuple[str, Process]:
        """The gateway as the Procfile's `web` line runs it (the access log only when
        TASKQ_ACCESS_LOG is set, as there); returns its base URL, once /healthz
        answers, and its process."""
        port = free_port()
        proc = self.start("gunicorn", gunicorn_command(port, workers, connections), settings_env(settings))
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: _http_ok(url + "/healthz") or not proc.running(), 30, "gunicorn start")
        if not proc.running():
            raise RuntimeError(f"gunicorn exited:\n{proc.output()}")
        return url, proc

    def stop_all(self) -> None:
        for proc in reversed(self.started):
            proc.stop()


def gunicorn_command(port: int, workers: int, connections: int = 1000) -> list[str]:
    """The Procfile's `web` line on 127.0.0.1:`port` (the access log only when
    TASKQ_ACCESS_LOG is set, as there): for the bench and the tests alike."""
    return [
        sys.executable, "-m", "gunicorn",
        "--worker-class", "gevent",
        "--workers", str(workers),
        "--worker-connections", str(connections),
        "--bind", f"127.0.0.1:{port}",
        *(["--access-logfile", "-"] if os.environ.get("TASKQ_ACCESS_LOG") else []),
        "taskq.gateway:create_app()",
    ]  # fmt: skip


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + sys) used so far by a live process and its live children
    (gunicorn's master and its workers), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields_ = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if stat.parent.name == str(pid) or fields_[1] == str(pid):
            total += (int(fields_[11]) + int(fields_[12])) / tick
    return total


def _http_ok(url: str) -> bool:
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    try:
        conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=1)
        conn.request("GET", parts.path)
        ok = conn.getresponse().status == 200
        conn.close()
        return ok
    except OSError:
        return False


def wait_registered(client: redis.Redis, count: int, procs: list[Process], timeout_s: float = 30) -> None:
    """Waits until `count` workers have registered with RQ (so they are idle and
    listening), failing early if one of them exits."""

    def ready() -> bool:
        for proc in procs:
            if not proc.running():
                raise RuntimeError(f"worker exited early:\n{proc.output()[-3000:]}")
        return client.scard("rq:workers") >= count

    wait_until(ready, timeout_s, f"{count} worker(s) registering")
