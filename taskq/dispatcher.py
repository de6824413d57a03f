"""`taskq dispatcher`: delivers webhooks (placeholder until the dispatcher lands)."""

from __future__ import annotations

import time

from .broker import Broker


class Dispatcher:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    def run_forever(self) -> None:
        while True:
            time.sleep(60)
