"""A per-client limit on turns, for an app served beyond localhost.

A sliding window: at most `turns` turns in any `window_seconds` from one client address. Behind a reverse
proxy on the same host, the address is the one the proxy forwards (X-Forwarded-For, which the server trusts
from 127.0.0.1 only; see the README). Memory stays bounded: clients quiet for a whole window are forgotten.
"""

from __future__ import annotations

import threading
import time
from collections import deque

from mmdialog.errors import InputError


class RateLimiter:
    def __init__(self, turns: int, window_seconds: float = 60.0, clock=time.monotonic):
        self.turns = turns
        self.window = window_seconds
        self._clock = clock
        self._recent: dict[str, deque[float]] = {}
        self._lock = threading.Lock()
        self._next_sweep = 0.0

    def check(self, client: str | None) -> None:
        """Count a turn for `client`, or raise InputError saying how long to wait. No limit when turns is 0."""
        if self.turns <= 0:
            return
        now = self._clock()
        with self._lock:
            self._sweep(now)
            recent = self._recent.setdefault(client or "unknown", deque())
            while recent and recent[0] <= now - self.window:
                recent.popleft()
            if len(recent) >= self.turns:
                wait = recent[0] + self.window - now
                raise InputError(f"too many turns from your address; please wait {max(1, round(wait))} s")
            recent.append(now)

    def _sweep(self, now: float) -> None:
        if now < self._next_sweep:
            return
        self._next_sweep = now + self.window
        for client in [c for c, times in self._recent.items() if not times or times[-1] <= now - self.window]:
            del self._recent[client]

    def __len__(self) -> int:
        return len(self._recent)


def client_address(request: object | None) -> str | None:
    """The address of the client behind a Gradio request (None outside a request, as in tests)."""
    client = getattr(request, "client", None)
    return getattr(client, "host", None)
