"""``perimeter``'s own log set-up, as a process: the context of a log call reaches stderr."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from common.net import free_port
from tests.support.services import REPO_ROOT


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_the_command_line_sets_the_format_up(fmt: str) -> None:
    """``perimeter`` itself (a subprocess: pytest owns this process's logging) writes a
    log call's context: ``sim onvif`` logs where it serves, with ``xaddr`` in extra."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", "--log-level", "info", "--log-format", fmt, "sim",
         "onvif", "--rtsp-url", "rtsp://127.0.0.1:8554/live", "--port", str(free_port())],
        cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    deadline = time.monotonic() + 30
    line = ""
    try:
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if "sim onvif serving" in line or not line:
                break
    finally:
        proc.terminate()
        proc.wait(10)
    assert "sim onvif serving" in line, line
    if fmt == "json":
        assert json.loads(line)["xaddr"].startswith("http://127.0.0.1:")
    else:
        assert " xaddr=http://127.0.0.1:" in line
