"""A real HTTP server for the tests: the one receiver of webhooks, upstream of the
proxy, remote host a schema must never reach, or target of a redirect. It records
every request and answers what the test scripts."""

from __future__ import annotations

import contextlib
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    peer: tuple[str, int] = ("", 0)  # the sender's address and port: one per connection


@dataclass
class Answer:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False  # hold the request until the receiver's `release` is set


def _parse(spec: str | Answer, receiver: Receiver) -> Answer:
    """An answer written as text: "200", "500", "410", "302" (to /redirected),
    "503 retry-after 1", or "hang" (then 200)."""
    if isinstance(spec, Answer):
        return spec
    if spec == "hang":
        return Answer(hang=True)
    code, *rest = spec.split()
    answer = Answer(int(code))
    if code == "302":
        answer.headers["Location"] = receiver.url("/redirected")
    if rest[:1] == ["retry-after"]:
        answer.headers["Retry-After"] = rest[1]
    return answer


@dataclass
class Receiver:
    """`answers[path]`: the replies to requests for `path`, one each (the last one
    repeats); otherwise `respond(request)`, else 200 with no body."""

    port: int = 0
    answers: dict[str, list[str | Answer]] = field(default_factory=dict)
    respond: Callable[[Received], Answer] | None = None
    received: list[Received] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    closed: int = 0  # connections this side has closed
    scheme: str = "http"

    @property
    def base(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.base + path

    def at(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.path == path]

    def paths(self) -> list[str]:
        with self.lock:
            return [r.path for r in self.received]

    def _answer(self, request: Received) -> Answer:
        with self.lock:
            self.received.append(request)
            queue = self.answers.get(request.path)
            if queue:
                return _parse(queue.pop(0) if len(queue) > 1 else queue[0], self)
        return self.respond(request) if self.respond else Answer()


def _handler(receiver: Receiver, keep_alive: bool, idle_close_s: float | None) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1" if keep_alive else "HTTP/1.0"
        timeout = idle_close_s  # a kept-alive connection idle this long is closed

        def finish(self) -> None:
            super().finish()
            with receiver.lock:
                receiver.closed += 1

        def _serve(self) -> None:
            try:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                request = Received(self.command, self.path, dict(self.headers.items()), body, self.client_address[:2])
                answer = receiver._answer(request)
                if answer.hang:
                    receiver.release.wait(60)
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)
            except OSError:
                pass  # the client hung up (a timeout, or it was killed): nothing to answer

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@contextlib.contextmanager
def serving(
    tls: ssl.SSLContext | None = None, keep_alive: bool = False, idle_close_s: float | None = None, **options: Any
) -> Iterator[Receiver]:
    """A receiver listening on a free loopback port until the block ends."""
    rec = Receiver(scheme="https" if tls else "http", **options)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(rec, keep_alive, idle_close_s))
    rec.port = server.server_address[1]
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    server.handle_error = lambda request, address: None  # type: ignore[method-assign]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield rec
    finally:
        rec.release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)
