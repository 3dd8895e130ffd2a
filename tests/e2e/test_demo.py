"""``perimeter demo`` end to end: real broker, real Redis, real footage, real detector.

The demo replays PETS09 as fast as the detector goes (``--no-realtime``); alarms must reach
``alarms.jsonl``, an incident the API lists, a signed webhook the demo's receiver verified and
(with espeak-ng) a WAV clip; every process it started must be gone when it stops.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import wave
from pathlib import Path
from typing import Any

import pytest

from cli import demo
from common.net import free_port, port_open
from tests.support.api import Browser, call

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

HAVE_ESPEAK = shutil.which("espeak-ng") is not None


def _children(pid: int) -> dict[int, str]:
    """pid -> start time (clock ticks) of the live children of ``pid``."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            out[int(entry.name)] = fields[19]
    return out


def _still_running(procs: dict[int, str]) -> list[str]:
    """The processes of ``procs`` that still exist (same pid and start time), with cmdlines."""
    left = []
    for pid, started in procs.items():
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[19] == started and fields[0] != "Z":
            left.append(f"{pid}: {cmd}")
    return left


def _check_outputs(out: Path, summary: dict[str, Any]) -> None:
    alarms = [json.loads(line) for line in (out / "alarms.jsonl").read_text().splitlines()]
    assert any(a["kind"] == "intrusion" and a["state"] == "raised" for a in alarms), alarms[:5]
    assert summary["alarms_accepted"] >= 1, summary
    assert summary["incidents"] >= 1, summary
    assert summary["webhooks_received"] >= 1 and summary["webhooks_rejected"] == 0, summary
    if HAVE_ESPEAK:
        assert summary["speakers"] == ["spk-river", "spk-lawn"], summary
        assert summary["clips_written"] >= 1, summary
        for name in summary["clip_files"]:
            with wave.open(str(out / "clips" / name)) as w:
                assert w.getnframes() > 0


def test_demo_cli_end_to_end_and_sigterm(shared_data: Path, repo_root: Path,
                                         tmp_path: Path) -> None:
    out = tmp_path / "demo"
    err_file = tmp_path / "stderr.txt"
    api_port = free_port()
    # --minutes is only a safety net: the test stops it with SIGTERM once everything was seen
    with err_file.open("w") as err:  # a file, not a pipe nobody reads while it runs
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli", "demo", "--no-realtime", "--minutes", "1.4",
             "--out", str(out), "--api-port", str(api_port)],
            cwd=repo_root, stdout=subprocess.PIPE, stderr=err, text=True)
    deadline = time.monotonic() + 70  # for everything up to SIGTERM
    lines: queue.Queue[str] = queue.Queue()
    seen: list[str] = []

    def read() -> None:
        for line in proc.stdout or []:
            lines.put(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()

    def report() -> str:
        edge_log = out / "edge.log"
        return (f"rc={proc.poll()}\nstdout:\n{''.join(seen)}\nstderr:\n{err_file.read_text()}"
                + (f"\nedge.log:\n{edge_log.read_text()[-2000:]}" if edge_log.exists() else ""))

    def wait_line(pattern: str) -> str:
        while time.monotonic() < deadline:
            for line in seen:
                if re.search(pattern, line):
                    return line
            try:
                seen.append(lines.get(timeout=0.2))
            except queue.Empty:
                if proc.poll() is not None and lines.empty():
                    break
        raise AssertionError(f"no line matching {pattern!r}\n{report()}")

    try:
        wait_line(r"^running ")
        children = _children(proc.pid)
        assert children, "the demo started no processes"
        login = re.search(r"sign in as (\S+) / (\S+) \(admin\)", wait_line(r"sign in as "))
        token = re.search(r"Bearer (pk_\S+)'", wait_line(r"Bearer pk_"))
        assert login is not None and token is not None
        ports = {int(m) for line in seen
                 for m in re.findall(r"127\.0\.0\.1:(\d+)", line)}
        assert api_port in ports and len(ports) >= 4, seen  # API, MQTT, Redis, webhook
        base = f"http://127.0.0.1:{api_port}"
        assert call(f"{base}/incidents", token=None)[0] == 401
        browser = Browser(base)
        assert browser.login(login.group(1), login.group(2))[0] == 200
        assert browser.request("/docs/assets/swagger-ui.css")[0] == 200
        incidents: list[dict[str, Any]] = []
        while not incidents and time.monotonic() < deadline:
            status, incidents = call(f"{base}/incidents", token=token.group(1))
            assert status == 200
            time.sleep(0.5)
        assert incidents, f"the API listed no incident\n{report()}"
        assert incidents[0]["site"] == "pets-campus"
        wait_line(r" webhook +governance <- incident .* signature ok")
        if HAVE_ESPEAK:
            wait_line(r" speaker +spk-\S+ wrote .*\.wav")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        reader.join(5)
        if proc.stdout:
            proc.stdout.close()
    while not lines.empty():
        seen.append(lines.get())
    assert proc.returncode == 0, report()
    assert not _still_running(children), _still_running(children)
    for port in ports:
        assert not port_open("127.0.0.1", port), f"something still listens on {port}"
    assert any(line.startswith("demo: stopped after") for line in seen), report()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped_by"] == "signal", summary
    _check_outputs(out, summary)


def _args(*argv: str) -> argparse.Namespace:
    return demo.add_arguments(argparse.ArgumentParser()).parse_args(list(argv))


def test_demo_in_process_stops_after_minutes(shared_data: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    before = _children(os.getpid())
    secret_before = os.environ.get("PERIMETER_WEBHOOK_SECRET")
    out = tmp_path / "demo"
    started = time.monotonic()
    rc = demo.run(_args("--no-realtime", "--minutes", "0.3", "--out", str(out),
                        "--api-port", str(free_port())))
    took = time.monotonic() - started
    printed = capsys.readouterr()
    assert rc == 0, printed.err
    assert 18 <= took < 60, took
    left = set(_children(os.getpid())) - set(before)
    assert not left, f"processes left behind: {left}"
    assert not [t.name for t in threading.enumerate() if t.name.startswith("demo-")]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped_by"] == "minutes"
    assert summary["broker"] == "mosquitto" and summary["redis"] == "redis-server"
    _check_outputs(out, summary)
    assert os.environ.get("PERIMETER_WEBHOOK_SECRET") == secret_before  # restored


def test_demo_start_failure_is_one_line_and_leaves_nothing(
        shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = _children(os.getpid())
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        rc = demo.run(_args("--no-realtime", "--out", str(tmp_path / "demo"),
                            "--api-port", str(port)))
    printed = capsys.readouterr()
    assert rc == 1
    errors = [line for line in printed.err.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith(f"error: cannot listen on 127.0.0.1:{port}")
    assert not set(_children(os.getpid())) - set(before)
