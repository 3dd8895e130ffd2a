"""One way to wait in a test: poll a condition with a deadline, never a fixed sleep."""

from __future__ import annotations

import time
from collections.abc import Callable

POLL_S = 0.01  # poll interval, not a synchronisation delay


def wait_until(cond: Callable[[], object], timeout: float = 10.0, what: str = "") -> float:
    """Poll ``cond`` until it is true; the seconds it took. ``AssertionError`` naming ``what``
    after ``timeout`` seconds."""
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what or cond}")
        time.sleep(POLL_S)
    return time.monotonic() - start
