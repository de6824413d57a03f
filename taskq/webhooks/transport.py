"""The pinned HTTP(S) transport that sends one webhook attempt: the host is resolved
and checked (address.is_public) at send time and the connection made to that very
address; kept-alive connections are pooled per origin, each still pinned to the
address checked when it was opened."""

from __future__ import annotations

import email.utils
import http.client
import select
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..errors import ConnectTimedOut, DeliveryBlocked
from .address import is_public


@dataclass
class Response:
    """What one attempt got: a status code, or an error (timeout, refused, blocked)."""

    status_code: int | None
    latency_ms: int
    error: str | None = None  # recorded in the attempt, which the tenant reads
    retry_after_s: float | None = None
    # The non-public address a refused send resolved or connected to: for the
    # dispatcher's log only, never recorded (it would map the operator's network).
    refused_address: str | None = None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300 and self.error is None


# A receiver that does not even accept the connection gets this long, not the whole
# webhook timeout, so that it holds a dispatcher's thread (and its per-host slot) for
# less time; one that accepts and then answers slowly still gets the whole deadline.
CONNECT_TIMEOUT_S = 5.0


def send(
    url: str, body: bytes, headers: dict[str, str], *, timeout_s: float, allow_private: bool, pool: Pool | None = None
) -> Response:
    """POSTs once, never following a redirect. The host is resolved here and the
    connection made to that very address, which is checked first (unless private
    addresses are allowed), so DNS rebinding after the create-time check gains
    nothing. The whole attempt, from resolving to the status line, gets `timeout_s`.
    With a `pool`, a kept-alive connection to the same origin is used when there is
    one (it stays pinned to the address checked when it was opened)."""
    start = time.monotonic()
    parts = urlsplit(url)
    try:
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise DeliveryBlocked("not an http or https URL")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        key = (parts.scheme, parts.hostname, port, allow_private)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        kept = pool.take(key) if pool is not None else None
        if kept is not None:
            try:
                return _exchange(kept, path, body, headers, start, timeout_s, pool, key)
            except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError):
                pass  # closed by the receiver while it sat idle: once more, on a new connection
        address = _resolve(parts.hostname, port, allow_private)
        remaining = timeout_s - (time.monotonic() - start)
        if remaining <= 0:
            raise TimeoutError("timed out resolving the host")
        cls = _PinnedHTTPS if parts.scheme == "https" else _PinnedHTTP
        conn = cls(parts.hostname, port, address=address, allow_private=allow_private, timeout=remaining)
        return _exchange(conn, path, body, headers, start, timeout_s, pool, key)
    except DeliveryBlocked as exc:
        return Response(None, _ms(start), f"refused: {exc}", refused_address=exc.address)
    except ConnectTimedOut:
        return Response(None, _ms(start), f"timed out connecting after {min(timeout_s, CONNECT_TIMEOUT_S):g} s")
    except TimeoutError:
        return Response(None, _ms(start), f"timed out after {timeout_s:g} s")
    except (OSError, http.client.HTTPException) as exc:  # refused, reset, TLS, bad reply
        if time.monotonic() - start >= timeout_s:
            return Response(None, _ms(start), f"timed out after {timeout_s:g} s")
        return Response(None, _ms(start), f"{type(exc).__name__}: {exc}"[:300])
    except ValueError:
        # http.client's message would quote the offending value: it may be a credential.
        return Response(None, _ms(start), "invalid header name or value in webhook.headers")


def _exchange(
    conn: http.client.HTTPConnection,
    path: str,
    body: bytes,
    headers: dict[str, str],
    start: float,
    timeout_s: float,
    pool: Pool | None,
    key: PoolKey,
) -> Response:
    """One request and its status line on `conn`, within what is left of the deadline;
    then `conn` goes back to the pool if it can carry another request, else is closed."""
    remaining = timeout_s - (time.monotonic() - start)
    if remaining <= 0:
        conn.close()
        raise TimeoutError("timed out before sending")
    conn.timeout = remaining
    if conn.sock is not None:
        conn.sock.settimeout(remaining)
    aborted: list[bool] = []
    # A socket timeout bounds each read, not the whole exchange: a receiver that
    # trickles bytes is cut off at the deadline by closing the socket under it.
    timer = threading.Timer(remaining, _abort, args=(conn, aborted))
    timer.daemon = True
    timer.start()
    reusable = False
    try:
        conn.request("POST", path, body=body, headers=headers)
        reply = conn.getresponse()
        if time.monotonic() - start > timeout_s:
            raise TimeoutError(f"no response within {timeout_s:g} s")
        response = Response(reply.status, _ms(start), retry_after_s=_retry_after(reply.getheader("Retry-After")))
        reusable = pool is not None and _drained(reply, conn.sock)
        return response
    finally:
        timer.cancel()
        if reusable and not aborted and pool is not None:
            pool.give(key, conn)
        else:
            conn.close()


# An answer's body up to this size is read when it has already arrived, so that its
# connection can carry the next delivery; otherwise the connection is closed.
MAX_DRAIN_BYTES = 64 * 1024

PoolKey = tuple[str, str, int, bool]  # scheme, host, port, private addresses allowed


def _drained(reply: http.client.HTTPResponse, sock: socket.socket | None) -> bool:
    """Reads the body if all of it is already here; True when the connection may be
    used again. It never waits: a receiver that sends its body after its headers (a
    small second write held back by Nagle's algorithm, say) would otherwise hold the
    thread and its per-host slot for that long."""
    length = reply.length
    if reply.will_close or reply.chunked or length is None or length > MAX_DRAIN_BYTES or sock is None:
        return False
    timeout = sock.gettimeout()
    try:
        sock.settimeout(0.0)
        if length and len(reply.fp.peek(length)) < length:
            return False
        reply.read()
    except (OSError, http.client.HTTPException):
        return False
    finally:
        sock.settimeout(timeout)
    return reply.isclosed()


class Pool:
    """Kept-alive connections per (scheme, host, port), each pinned to the address that
    was checked when it was opened: reusing one skips resolving the host, never the
    SSRF check, and a receiver stops paying a new connection per event."""

    def __init__(self, per_origin: int, idle_s: float = 30.0) -> None:
        self.per_origin = per_origin
        self.idle_s = idle_s  # an idle connection older than this is closed, not used
        self._idle: dict[PoolKey, list[tuple[float, http.client.HTTPConnection]]] = {}
        self._lock = threading.Lock()
        self._swept = time.monotonic()

    def take(self, key: PoolKey) -> http.client.HTTPConnection | None:
        """The most recently used live connection for `key`, or None."""
        now, found, dropped = time.monotonic(), None, []
        with self._lock:
            idle = self._idle.get(key, [])
            while idle and found is None:
                since, conn = idle.pop()
                if now - since < self.idle_s and _still_open(conn):
                    found = conn
                else:
                    dropped.append(conn)
        for conn in dropped:
            conn.close()
        return found

    def give(self, key: PoolKey, conn: http.client.HTTPConnection) -> None:
        now, dropped = time.monotonic(), []
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if len(idle) < self.per_origin:
                idle.append((now, conn))
            else:
                dropped.append(conn)
            if now - self._swept > self.idle_s:
                self._swept = now
                for k in list(self._idle):
                    fresh = [(t, c) for t, c in self._idle[k] if now - t < self.idle_s]
                    dropped += [c for t, c in self._idle[k] if now - t >= self.idle_s]
                    if fresh:
                        self._idle[k] = fresh
                    else:
                        del self._idle[k]
        for stale in dropped:
            stale.close()

    def close(self) -> None:
        with self._lock:
            conns = [c for idle in self._idle.values() for _, c in idle]
            self._idle.clear()
        for conn in conns:
            conn.close()


def _still_open(conn: http.client.HTTPConnection) -> bool:
    """An idle connection with something to read has been closed by its receiver."""
    sock = conn.sock
    if sock is None:
        return False
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return False
    return not readable


def _resolve(host: str, port: int, allow_private: bool) -> str:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise OSError(f"host {host!r} does not resolve") from exc
    address = str(infos[0][4][0])
    if not allow_private and not is_public(address):
        raise DeliveryBlocked(f"host {host!r} resolves to a non-public address", address)
    return address


class _PinnedHTTP(http.client.HTTPConnection):
    """Connects to one already-checked address; the Host header is still the URL's."""

    def __init__(self, host: str, port: int, *, address: str, allow_private: bool, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self.address = address
        self.allow_private = allow_private

    def _open(self) -> socket.socket:
        try:
            connect_s = CONNECT_TIMEOUT_S if self.timeout is None else min(self.timeout, CONNECT_TIMEOUT_S)
            sock = socket.create_connection((self.address, self.port), connect_s)
        except TimeoutError as exc:
            raise ConnectTimedOut() from exc
        sock.settimeout(self.timeout)
        # As http.client does: a kept-alive connection must not wait on Nagle's algorithm.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = str(sock.getpeername()[0])
        if not self.allow_private and not is_public(peer):
            sock.close()
            raise DeliveryBlocked(f"host {self.host!r}: the address connected to is not public", peer)
        return sock

    def connect(self) -> None:
        self.sock = self._open()


class _PinnedHTTPS(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, *, address: str, allow_private: bool, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self.address = address
        self.allow_private = allow_private

    _open = _PinnedHTTP._open

    def connect(self) -> None:
        # The certificate is checked against the URL's host name, not the address.
        self.sock = self._context.wrap_socket(self._open(), server_hostname=self.host)  # type: ignore[attr-defined,misc]


def _abort(conn: http.client.HTTPConnection, aborted: list[bool]) -> None:
    aborted.append(True)
    sock = conn.sock
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _retry_after(value: str | None) -> float | None:
    """Retry-After as seconds (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _ms(start: float) -> int:
    return int((time.monotonic() - start) * 1000)
