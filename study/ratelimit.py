"""A per-client token bucket (in process): ``burst`` actions at once, then ``per_minute``."""
from __future__ import annotations

import threading
import time
from collections import OrderedDict


class TokenBucket:
    def __init__(self, burst: int, per_minute: float, max_clients: int = 100_000,
                 clock=time.monotonic):
        self.burst, self.rate = float(burst), per_minute / 60.0
        self.max_clients, self.clock = max_clients, clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # client -> (tokens, t)
        self._lock = threading.Lock()

    def allow(self, client: str) -> bool:
        """Take one token for ``client``; False when its bucket is empty."""
        if self.burst <= 0:
            return True  # unlimited
        now = self.clock()
        with self._lock:
            tokens, then = self._buckets.pop(client, (self.burst, now))
            tokens = min(self.burst, tokens + (now - then) * self.rate)
            allowed = tokens >= 1
            self._buckets[client] = (tokens - 1 if allowed else tokens, now)
            while len(self._buckets) > self.max_clients:  # forget the least recently seen
                self._buckets.popitem(last=False)
            return allowed

    def retry_after(self, client: str) -> float:
        with self._lock:
            tokens, _ = self._buckets.get(client, (self.burst, 0.0))
        return max(0.0, (1 - tokens) / self.rate) if self.rate > 0 else float("inf")
