"""Real services on loopback for the tests, as pytest fixtures: paths, MQTT brokers, Redis.

MQTT tests run against a real broker, never a mock. ``mqtt_broker`` reuses one already
listening on 127.0.0.1:1883 (a developer's or CI's service) and otherwise starts a private
``mosquitto`` for the session; ``mosquitto_private`` always starts a fresh one that a test may
stop and start again (fault tests). ``MQTT_TEST_BROKER=private`` forces a private broker for
the session, ``MQTT_TEST_BROKER=host:port`` names an existing one. A missing ``mosquitto``
binary fails these tests, on purpose: CI must run them (Debian/Ubuntu: ``apt-get install
mosquitto``).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.net import free_port, port_open

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MQTT = ("127.0.0.1", 1883)


# -- paths -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root (the folder holding pyproject.toml)."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_data(repo_root: Path) -> Path:
    """``<repo>/../shared/data``: footage and models too large for the repository."""
    path = repo_root.parent / "shared" / "data"
    if not path.is_dir():
        pytest.skip(f"shared data folder {path} is absent (large test assets live there)")
    return path


# -- MQTT brokers ------------------------------------------------------------------------------


def mosquitto_binary() -> str:
    """Path of the mosquitto broker; fails (never skips) the test when it is not installed."""
    found = shutil.which("mosquitto") or shutil.which(
        "mosquitto", path="/usr/sbin:/usr/local/sbin:/sbin")
    if found is None:
        pytest.fail("the 'mosquitto' MQTT broker is required by the MQTT tests and was not "
                    "found on PATH or in /usr/sbin (Debian/Ubuntu: apt-get install mosquitto; "
                    "macOS: brew install mosquitto)", pytrace=False)
    return found


class MosquittoBroker:
    """A private mosquitto on 127.0.0.1:port with persistence in ``workdir``.

    ``stop()`` sends SIGTERM, so mosquitto saves retained messages, persistent sessions and
    their queued QoS>0 messages to ``workdir``; ``start()`` brings it back on the same port
    with that state.
    """

    host = "127.0.0.1"

    def __init__(self, workdir: Path, port: int | None = None, *, persistence: bool = True):
        self.binary = mosquitto_binary()
        self.workdir = workdir
        self.port = port if port is not None else free_port(self.host)
        self.persistence = persistence
        self.config = workdir / "mosquitto.conf"
        self.log_path = workdir / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        lines = [f"listener {self.port} {self.host}", "allow_anonymous true",
                 # as root, mosquitto would switch to user 'mosquitto' and lose the workdir
                 f"user {pwd.getpwuid(os.geteuid()).pw_name}"]
        if persistence:
            lines += ["persistence true", f"persistence_location {workdir}/"]
        self.config.write_text("\n".join(lines) + "\n")

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        assert not self.running, "broker already running"
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen([self.binary, "-c", str(self.config)],
                                         stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not port_open(self.host, self.port):
            if self.proc.poll() is not None:
                pytest.fail(f"mosquitto exited with {self.proc.returncode} on start:\n"
                            f"{self.log_tail()}", pytrace=False)
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"mosquitto did not listen on {self.host}:{self.port} within "
                            f"{timeout:g}s:\n{self.log_tail()}", pytrace=False)
            time.sleep(0.02)  # poll interval, not a synchronisation delay

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (state saved), then SIGKILL if it does not exit within ``timeout``."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        self.proc = None

    def kill(self, timeout: float = 10.0) -> None:
        """SIGKILL, a crash: only what mosquitto had autosaved to ``workdir`` survives."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout)
        self.proc = None

    def log_tail(self, lines: int = 20) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture(scope="session")
def mqtt_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """(host, port) of a running MQTT broker: 127.0.0.1:1883 if up, else a private mosquitto.

    The broker may be shared with other tests and people: use unique topics and client ids.
    """
    choice = os.environ.get("MQTT_TEST_BROKER", "")
    if choice and choice != "private":
        host, _, port = choice.rpartition(":")
        if not port_open(host, int(port)):
            pytest.fail(f"MQTT_TEST_BROKER={choice}: nothing listens there", pytrace=False)
        yield host, int(port)
        return
    if not choice and port_open(*DEFAULT_MQTT):
        yield DEFAULT_MQTT
        return
    broker = MosquittoBroker(tmp_path_factory.mktemp("mosquitto"), persistence=False)
    broker.start()
    try:
        yield broker.address
    finally:
        broker.stop()


@pytest.fixture
def mosquitto_private(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """A private, persistent mosquitto on a free port, started; may be stopped and restarted."""
    broker = MosquittoBroker(tmp_path / "mosquitto")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


# -- Redis -------------------------------------------------------------------------------------

DEFAULT_REDIS = ("127.0.0.1", 6379)


class RedisServer:
    """A private ``redis-server`` on a free port (no persistence); can be stopped and started."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(binary).exists():
            pytest.fail("redis-server not found (Debian: apt-get install redis-server)",
                        pytrace=False)
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not port_open("127.0.0.1", self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A running Redis: 127.0.0.1:6379 if up, else a private redis-server for the session.
    Shared: tests use their own key namespace (see ``redis_ns``)."""
    if port_open(*DEFAULT_REDIS):
        yield "redis://127.0.0.1:6379/0"
        return
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def redis_ns(redis_url: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A key namespace of this test's own, deleted afterwards."""
    import redis

    ns = f"test:{request.node.name[:40]}:{os.getpid()}:{time.monotonic_ns()}"
    yield ns
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(f"{ns}:*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def redis_private(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server that a fault test may stop and start again."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()
