"""A local webhook receiver for figure 5: `python -m bench.receiver PORT`.

POST /fast answers 200 at once; POST /hang holds the request for HANG_S seconds
(longer than any sender's timeout) before answering; GET /count answers
{"fast": n, "hang": n, "first": t, "last": t} (times of the first and last /fast);
GET /count?reset=1 also starts the counts again."""

from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HANG_S = 60.0


class Counts:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.fast = 0
        self.hang = 0
        self.first = 0.0
        self.last = 0.0


COUNTS = Counts()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        if self.path.startswith("/hang"):
            with COUNTS.lock:
                COUNTS.hang += 1
            time.sleep(HANG_S)
        else:
            now = time.time()
            with COUNTS.lock:
                COUNTS.fast += 1
                COUNTS.first = COUNTS.first or now
                COUNTS.last = now
        self._answer(b"ok")

    def do_GET(self) -> None:
        with COUNTS.lock:
            body = json.dumps({"fast": COUNTS.fast, "hang": COUNTS.hang, "first": COUNTS.first, "last": COUNTS.last})
            if "reset=1" in self.path:
                COUNTS.fast = COUNTS.hang = 0
                COUNTS.first = COUNTS.last = 0.0
        self._answer(body.encode())

    def _answer(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # listen() backlog: a burst of new connections must not be reset


def main(argv: list[str]) -> None:
    Server(("127.0.0.1", int(argv[0])), Handler).serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
