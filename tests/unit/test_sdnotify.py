"""sd_notify without a library: datagrams on a real AF_UNIX socket, as systemd receives them,
and a watchdog fed only while the service's loop turns."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from common import sdnotify
from tests.support.waiting import wait_until


@pytest.fixture(params=["path", "abstract"])
def systemd(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[dict[str, str],
                                                                              socket.socket]]:
    """(environment, the socket systemd would read) for a filesystem or abstract socket."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "path":
        name = str(tmp_path / "notify")
        sock.bind(name)
    else:
        name = f"@perimeter-test-{uuid.uuid4().hex}"
        sock.bind("\0" + name[1:])
    sock.settimeout(5.0)
    yield {"NOTIFY_SOCKET": name, "WATCHDOG_USEC": "200000", "WATCHDOG_PID": str(os.getpid())}, sock
    sock.close()


def test_ready_and_watchdog_reach_the_socket(systemd: tuple[dict[str, str], socket.socket]
                                             ) -> None:
    env, sock = systemd
    assert sdnotify.notify("READY=1\nSTATUS=up", env)
    assert sock.recv(100) == b"READY=1\nSTATUS=up"
    turning = [True]
    dog = sdnotify.Watchdog(lambda: turning[0], environ=env)
    assert dog.period_s == pytest.approx(0.2)
    dog.start()
    try:
        assert sock.recv(100) == b"WATCHDOG=1"
        turning[0] = False  # the loop hangs: no more pings
        wait_until(lambda: dog.missed >= 2, 5.0, "missed pings")
        pings = dog.pings
        sock.settimeout(0.0)
        while True:
            try:
                sock.recv(100)
            except BlockingIOError:
                break
        wait_until(lambda: dog.missed >= 4, 5.0, "more missed pings")
        assert dog.pings == pings
        with pytest.raises(BlockingIOError):
            sock.recv(100)
    finally:
        dog.stop()


@pytest.mark.parametrize("env", [{}, {"NOTIFY_SOCKET": ""},
                                 {"WATCHDOG_USEC": "0"}, {"WATCHDOG_USEC": "x"},
                                 {"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}])
def test_outside_systemd_nothing_happens(env: dict[str, str]) -> None:
    assert not sdnotify.notify("READY=1", env)
    dog = sdnotify.Watchdog(lambda: True, environ=env)
    assert dog.period_s is None
    dog.start()  # no thread, nothing to stop
    dog.stop()


def test_a_dead_socket_is_not_fatal(tmp_path: Path) -> None:
    assert not sdnotify.notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "gone")})
