"""The central's clock: Redis's ``TIME``, read through this host's monotonic clock.

Several central workers on several hosts must agree on what time it is: when an alarm arrived
(its incident's merge window, escalation and retention run on that, never on the edge's
stamp), when a lease expires, what time the edges compare their clocks with. Host clocks skew
(a worker whose clock runs ahead would see everyone else's heartbeat as stale and flap the
partitions); the one clock every worker already shares is the Redis server's. ``RedisClock``
asks Redis for ``TIME`` now and then (``sync``, from the ticker, off any hot path) and between
syncs adds this host's monotonic time, so reading it is arithmetic: no round trip, and no
jump when the host's wall clock is stepped. Until the first sync succeeds it is the host's
wall clock (``synced`` False), so a central that starts while Redis is down still works.
"""

from __future__ import annotations

import logging
import threading
import time

import redis

log = logging.getLogger(__name__)


class RedisClock:
    """Epoch seconds on the Redis server's clock (see the module docstring)."""

    def __init__(self, r: redis.Redis | None, *, resync_s: float = 10.0):
        self._r = r
        self.resync_s = resync_s
        self._anchor = (time.time(), time.monotonic())  # (epoch, monotonic) read together
        self._last_sync: float | None = None
        self._lock = threading.Lock()
        self.synced = False

    def __call__(self) -> float:
        return self.now()

    def now(self) -> float:
        base, mono = self._anchor
        return base + (time.monotonic() - mono)

    def at(self, monotonic: float) -> float:
        """The central time of an earlier ``time.monotonic()`` reading (an arrival stamped
        on a thread that must not wait for anything)."""
        base, mono = self._anchor
        return base + (monotonic - mono)

    @property
    def offset_s(self) -> float:
        """This host's wall clock minus the central clock (positive: the host runs ahead)."""
        return time.time() - self.now()

    def sync(self, *, force: bool = False) -> bool:
        """Read Redis ``TIME`` if the last reading is older than ``resync_s`` (or ``force``);
        True when it was read. Redis errors propagate (the caller's retry loop handles them)."""
        if self._r is None:
            return False
        with self._lock:
            mono0 = time.monotonic()
            if not force and self._last_sync is not None and \
                    mono0 - self._last_sync < self.resync_s:
                return False
            sec, usec = self._r.time()
            mono1 = time.monotonic()
            was = self.now()
            self._anchor = (float(sec) + float(usec) / 1e6, (mono0 + mono1) / 2)
            self._last_sync = mono1
            if not self.synced or abs(self.now() - was) > 1.0:
                log.info("central clock set from redis", extra={
                    "host_offset_s": round(self.offset_s, 3), "step_s": round(
                        self.now() - was, 3), "round_trip_s": round(mono1 - mono0, 4)})
            self.synced = True
            return True
