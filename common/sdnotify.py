"""systemd's service notifications (``sd_notify``) without a library: one datagram each.

Under a unit with ``Type=notify`` and ``WatchdogSec=``, systemd sets ``NOTIFY_SOCKET`` and
``WATCHDOG_USEC``. ``ready()`` says the service is up; ``Watchdog`` sends ``WATCHDOG=1``
every half period, but only while the service's own loop proves it is turning (the edge's
frame loop, the central's intake): a process whose loop hangs stops pinging and systemd
restarts it, where a bare timer thread would keep a dead service looking alive. Outside
systemd (no ``NOTIFY_SOCKET``) everything here does nothing.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


def notify(message: str, environ: dict[str, str] | None = None) -> bool:
    """Send ``message`` (e.g. ``READY=1``) to systemd; False when not under systemd or the
    socket refuses it (never raises: a service must not die of its supervisor's absence)."""
    env = os.environ if environ is None else environ
    path = env.get("NOTIFY_SOCKET")
    if not path:
        return False
    address = "\0" + path[1:] if path.startswith("@") else path  # abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(message.encode("utf-8"))
        return True
    except OSError as err:
        log.warning("sd_notify failed", extra={"error": str(err), "notify_message": message})
        return False


def ready(status: str = "") -> bool:
    """``READY=1`` (with a ``STATUS=`` line when given)."""
    return notify("READY=1" + (f"\nSTATUS={status}" if status else ""))


def watchdog_period_s(environ: dict[str, str] | None = None) -> float | None:
    """The unit's ``WatchdogSec`` in seconds, or None when no watchdog is asked for (or it
    is meant for another process: ``WATCHDOG_PID``)."""
    env = os.environ if environ is None else environ
    usec, pid = env.get("WATCHDOG_USEC"), env.get("WATCHDOG_PID")
    if not usec or not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None
    return int(usec) / 1e6


class Watchdog:
    """Pings systemd's watchdog every half period while ``healthy()`` holds."""

    def __init__(self, healthy: Callable[[], bool], *, period_s: float | None = None,
                 environ: dict[str, str] | None = None):
        self.healthy = healthy
        self.environ = dict(os.environ if environ is None else environ)
        self.period_s = period_s if period_s is not None else watchdog_period_s(self.environ)
        self.pings = 0
        self.missed = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start pinging (a no-op without a watchdog period)."""
        if self.period_s is None or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="sd-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def _run(self) -> None:
        assert self.period_s is not None
        while not self._stop.wait(self.period_s / 2):
            try:
                ok = bool(self.healthy())
            except Exception:
                log.exception("watchdog health check failed")
                ok = False
            if ok and notify("WATCHDOG=1", self.environ):
                self.pings += 1
            elif not ok:
                self.missed += 1
                log.error("service loop not turning: watchdog not fed (systemd restarts the "
                          "service when its WatchdogSec runs out)")
