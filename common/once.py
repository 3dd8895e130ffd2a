"""One process-wide instance, made on first use.

Prometheus metric names register once per registry: a second ``EdgeMetrics()`` on the global
``REGISTRY`` would raise. Each metrics module keeps its process-wide instance in a ``Once``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Once(Generic[T]):
    """``get()`` makes the instance the first time (thread-safe) and returns it after."""

    def __init__(self, make: Callable[[], T]):
        self._make = make
        self._value: T | None = None
        self._lock = threading.Lock()

    def get(self) -> T:
        with self._lock:
            if self._value is None:
                self._value = self._make()
            return self._value
