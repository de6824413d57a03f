"""The handle every taskq process holds: settings, a Redis client, the scripts."""

from __future__ import annotations

import binascii
import functools
import logging
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import redis
from redis import Redis, RedisCluster
from redis.connection import parse_url
from redis.sentinel import Sentinel

from . import errors, keys
from .capacity import OOM_MESSAGE, RETRY_AFTER_S, MemoryWatch, NodeMemory
from .scripts import Scripts
from .settings import Settings

log = logging.getLogger("taskq")

# A blocking read (XREAD BLOCK) waits at most MAX_BLOCK_MS per call, safely inside the
# socket timeout that catches a Redis that went silent.
SOCKET_TIMEOUT_S = 30
CLUSTER_PARTITIONS = 16
MAX_BLOCK_MS = 20_000


def connect(url: str, *, decode_responses: bool = True, max_connections: int = 2000) -> Redis:
    """A client for REDIS_URL: `redis://`, `rediss://`, or the Sentinel form
    `redis+sentinel://[:password@]host:port[,host:port…]/service_name[/db]`. A URL that
    names a node of a Redis Cluster gets a cluster client (it asks the node: so this
    raises redis.ConnectionError when Redis cannot be reached). Idle connections are
    checked, so processes ride out a Redis restart."""
    options: dict[str, Any] = {
        "decode_responses": decode_responses,
        # Compressed payloads are bytes that need not be UTF-8 (payload.py): they are
        # decoded to surrogates and encoded back to the same bytes when written.
        "encoding_errors": "surrogateescape",
        "health_check_interval": 30,
        "socket_keepalive": True,
        "socket_connect_timeout": 5,
        "socket_timeout": SOCKET_TIMEOUT_S,
        # Each open SSE stream or long poll holds a connection while it blocks in XREAD.
        "max_connections": max_connections,
    }
    if url.startswith("redis+sentinel://"):
        return _sentinel_master(url, options)
    client = Redis.from_url(url, **options)
    if not _is_cluster(client):
        return client
    client.close()
    # (a cluster has one database: a /db in the URL must be 0, as the node refuses others)
    return cast(Redis, RedisCluster.from_url(url, **options))


def _is_cluster(client: Redis) -> bool:
    try:
        return bool(client.info("cluster").get("cluster_enabled"))
    except redis.ResponseError:  # INFO refused (an ACL, a managed Redis): ask the cluster itself
        try:
            client.execute_command("CLUSTER", "MYID")
        except redis.ResponseError:  # cluster support disabled, or CLUSTER refused too
            return False
        return True


def _sentinel_master(url: str, options: dict[str, Any]) -> Redis:
    parts = urlsplit(url)
    hosts = []
    for item in parts.netloc.rsplit("@", 1)[-1].split(","):
        host, _, port = item.rpartition(":")
        hosts.append((host.strip("[]") or "localhost", int(port or 26379)))
    segments = [s for s in parts.path.split("/") if s]
    if not segments:
        raise ValueError("a redis+sentinel:// URL names the service: redis+sentinel://host:26379/mymaster/0")
    db = int(segments[1]) if len(segments) > 1 else 0
    password = unquote(parts.password) if parts.password else None
    sentinel = Sentinel(hosts, socket_connect_timeout=5, password=password)
    return sentinel.master_for(segments[0], db=db, password=password, **options)


class Broker:
    """The client is made on first use (`redis`): a Redis that cannot be reached when a
    process starts is then an error of its first command, which every loop and request
    already handles (a 503, an Outage line), not a crash at start."""

    def __init__(self, settings: Settings, client: Redis | None = None) -> None:
        self.settings = settings
        self._client = client
        self._lock = threading.Lock()
        if client is None and not settings.redis_url.startswith("redis+sentinel://"):
            parse_url(settings.redis_url)  # a URL redis-py cannot read is a ValueError now, not at first use

    @property
    def redis(self) -> Redis:
        client = self._client
        if client is None:
            with self._lock:
                if self._client is None:
                    self._client = connect(self.settings.redis_url, max_connections=self.settings.redis_max_connections)
                client = self._client
        return client

    @functools.cached_property
    def scripts(self) -> Scripts:
        return Scripts(self.redis)

    @classmethod
    def from_env(cls, **overrides: object) -> Broker:
        return cls(Settings.from_env(None, **overrides))

    def rq_connection(self) -> Redis:
        """RQ wants bytes back, so it gets a client of its own."""
        return connect(self.settings.redis_url, decode_responses=False)

    @functools.cached_property
    def partitions(self) -> int:
        """How many partitions the data is spread over: fixed by the first process that
        started against this Redis (kept in `taskq:meta`), the same for every process."""
        with translated():
            stored = self.redis.hget(keys.META, "partitions")
            if stored is None:  # (only then a write: a Redis at maxmemory refuses HSETNX)
                wanted = self.settings.partitions or (CLUSTER_PARTITIONS if self.cluster else 1)
                self.redis.hsetnx(keys.META, "partitions", wanted)
                stored = self.redis.hget(keys.META, "partitions")
            stored = int(stored)
        if self.settings.partitions and stored != self.settings.partitions:
            log.warning("TASKQ_PARTITIONS=%d, but this Redis was set up with %d partitions: using %d",
                        self.settings.partitions, stored, stored)  # fmt: skip
        return stored

    @property
    def cluster(self) -> bool:
        """Whether Redis is a Redis Cluster (then RQ's keys are not kept: they are not
        in any partition's slot)."""
        return isinstance(self.redis, RedisCluster)

    @property
    def rq_mirror(self) -> str:
        """'1' when the scripts mirror each queue's waiting runs into RQ's list (for
        `rq info`), '' when they do not (a cluster)."""
        return "" if self.cluster else "1"

    def node_for(self, partition: int) -> Redis:
        """A client of the one Redis that holds the partition (its cluster master), for
        what must run on that node's connection (WAIT after a write)."""
        client = self.redis
        if isinstance(client, RedisCluster):
            node = client.get_node_from_key(keys.prefix(partition))
            return cast(Redis, client.get_redis_connection(node))
        return client

    def partition_for(self, colocate: str = "") -> int:
        """Where a new run or group lives: with the runs it shares `colocate` with (its
        limits), else anywhere (spread evenly)."""
        if self.partitions == 1:
            return 0
        if colocate:
            return binascii.crc32(colocate.encode()) % self.partitions
        return random.randrange(self.partitions)

    @functools.cached_property
    def memory(self) -> MemoryWatch:
        """The masters' memory, read at most once a TASKQ_MEMORY_CHECK_S per process."""
        return MemoryWatch(lambda: self.redis, self.settings.memory_check_s)

    def memory_of(self, partition: int) -> NodeMemory | None:
        """The memory of the master that holds the partition, as last read; None when
        that master is not known yet (a failover since)."""
        nodes = self.memory.nodes()
        client = self.redis
        if isinstance(client, RedisCluster):
            return nodes.get(client.get_node_from_key(keys.prefix(partition)).name)
        return next(iter(nodes.values()), None)

    def now_ms(self) -> int:
        """Redis's clock, the one every process shares (the scripts read it too)."""
        seconds, micros = self.redis.time()
        return int(seconds) * 1000 + int(micros) // 1000

    def reachable(self) -> bool:
        """Whether Redis answers now."""
        try:
            return bool(self.redis.ping())
        except redis.RedisError:
            return False

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


# Replies that mean "not now": a Redis loading its data, a replica without its master,
# a cluster moving slots or electing a master.
_BUSY_REPLIES = ("LOADING", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN")


def unavailable(exc: BaseException) -> bool:
    """Whether `exc` says that Redis cannot serve now (down, restarting, loading, in a
    failover, or at maxmemory for a write), as opposed to a command it refused: the
    one test every caller uses."""
    if isinstance(
        exc,
        errors.BrokerUnavailable
        | redis.ConnectionError
        | redis.TimeoutError
        | redis.BusyLoadingError
        | redis.OutOfMemoryError,
    ):
        return True
    return isinstance(exc, redis.ResponseError) and str(exc).startswith(_BUSY_REPLIES)


def as_taskq_error(exc: redis.RedisError) -> errors.BrokerUnavailable | None:
    """The 503 a Redis error stands for (None: it is not Redis being unavailable, so
    a bug): the one translation, for `translated` and the gateway's last resort."""
    if isinstance(exc, redis.OutOfMemoryError):
        return errors.RedisFull(OOM_MESSAGE, {"reason": "redis_oom"}, retry_after_s=RETRY_AFTER_S)
    if unavailable(exc):
        return errors.BrokerUnavailable("Redis is unreachable; try again shortly", retry_after_s=1)
    return None


@contextmanager
def translated() -> Iterator[None]:
    """Turns Redis being unavailable (or out of memory) into a 503 at the boundary."""
    try:
        yield
    except redis.RedisError as exc:
        if (translation := as_taskq_error(exc)) is not None:
            raise translation from exc
        raise


class Outage:
    """How a loop that talks to Redis reports its failures: Redis being unavailable is
    one WARNING line when it starts (again at most every `every_s` while it lasts) and
    one INFO line when it is back, never a traceback; any other error is a bug, logged
    with its traceback. The loop itself goes on either way."""

    def __init__(self, log: logging.Logger, what: str, every_s: float = 30.0) -> None:
        self.log, self.what, self.every_s = log, what, every_s
        self._since: float | None = None  # monotonic, when Redis went away
        self._said = 0.0

    def failed(self, exc: BaseException) -> None:
        if not unavailable(exc):
            self.log.error("%s failed", self.what, exc_info=exc)
            return
        now = time.monotonic()
        if self._since is None:
            self._since = now
        if now - self._said >= self.every_s:
            self._said = now
            self.log.warning("%s: Redis unavailable for %.0f s (%s); retrying", self.what, now - self._since, exc)

    def ok(self) -> None:
        if self._since is not None:
            self.log.info("%s: Redis is back after %.0f s", self.what, time.monotonic() - self._since)
            self._since, self._said = None, 0.0
