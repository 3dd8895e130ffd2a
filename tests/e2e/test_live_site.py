"""A whole live site exactly as the README tells a user to try it: ``config/live_site.yaml``
(an RTSP camera, an ONVIF camera and a radar), ``perimeter sim rtsp``, ``perimeter sim onvif``,
``perimeter sim radar`` and ``perimeter run`` as real processes through the command line, and
the real broker. Only the ports, the site id and the broker are rewritten in a copy of the
config, so parallel runs do not collide. Camera and radar alarms and each camera's status must
arrive, and every process must stop on SIGTERM with exit 0."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from common.net import free_port
from sim.rtsp import gst_rtsp_available
from wire import topics

PETS = Path("mot15/PETS09-S2L1")
READY_S = 20.0  # a simulator prints its address within this


def spawn(args: list[str], log: Path, cwd: Path) -> subprocess.Popen[bytes]:
    """``perimeter ARGS`` (the venv's interpreter, as the console script runs it)."""
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "cli", *args], cwd=cwd,
                                stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONPATH": str(cwd)})


def wait_ready(proc: subprocess.Popen[bytes], log: Path, prefix: str) -> str:
    """The line a simulator prints once it serves; fails with its log if it exits first."""
    deadline = time.monotonic() + READY_S
    while time.monotonic() < deadline:
        lines = [ln for ln in log.read_text(errors="replace").splitlines()
                 if ln.startswith(prefix)]
        if lines:
            return lines[0]
        if proc.poll() is not None:
            pytest.fail(f"{prefix} exited with {proc.returncode}:\n{log.read_text()[-2000:]}",
                        pytrace=False)
        time.sleep(0.05)  # poll interval
    pytest.fail(f"{prefix} not ready within {READY_S:g} s:\n{log.read_text()[-2000:]}",
                pytrace=False)


def stop(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> int | None:
    """SIGTERM, then SIGKILL if it hangs; its exit code (None: it had to be killed)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
        return None


def observe(broker: tuple[str, int], topic: str,
            client_id: str) -> tuple[mqtt.Client, queue.Queue[tuple[str, dict[str, Any]]]]:
    """A real subscriber on the broker; (topic, JSON payload) pairs in arrival order."""
    got: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
    sub.on_message = lambda _c, _u, m: got.put((m.topic, json.loads(m.payload)))
    sub.connect(*broker)
    sub.subscribe(topic, qos=1)
    sub.loop_start()
    return sub, got


def run_edge_and_radar(config: Path, repo_root: Path, shared_data: Path,
                       tmp_path: Path) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]]:
    """``perimeter run`` and ``perimeter sim radar`` (PETS09 trajectories, 4x) on ``config``."""
    edge = spawn(["run", "--config", str(config), "--quiet"], tmp_path / "run.log", repo_root)
    radar = spawn(["sim", "radar", "--config", str(config), "--speed", "4", "--loop",
                   "--gt", str(shared_data / PETS / "gt/gt.txt")], tmp_path / "sim.log",
                  repo_root)
    return edge, radar


@pytest.fixture
def site(shared_data: Path, repo_root: Path, tmp_path: Path,
         mqtt_broker: tuple[str, int]) -> Iterator[tuple[Path, str]]:
    """config/live_site.yaml with fresh ports, site id and the test broker; both camera
    simulators running (``perimeter sim rtsp`` and ``perimeter sim onvif``)."""
    why = gst_rtsp_available()
    if why is not None:
        pytest.fail(f"perimeter sim rtsp needs GStreamer's RTSP server ({why}); run "
                    "deploy/setup.sh --full", pytrace=False)
    rtsp_port, onvif_port = free_port(), free_port()
    doc = yaml.safe_load((repo_root / "config/live_site.yaml").read_text(encoding="utf-8"))
    site_id = f"live-{uuid.uuid4().hex[:8]}"
    doc["site"]["id"] = site_id
    host, port = mqtt_broker
    doc["mqtt"].update(host=host, port=port)
    by_id = {c["id"]: c for c in doc["cameras"]}
    url = by_id["cam-rtsp"]["source"].replace(":8554/", f":{rtsp_port}/")
    assert url == f"rtsp://127.0.0.1:{rtsp_port}/live", by_id["cam-rtsp"]["source"]
    by_id["cam-rtsp"]["source"] = url
    by_id["cam-onvif"]["onvif"]["port"] = onvif_port
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    video = shared_data / PETS / "vtest.avi"
    procs = [spawn(["sim", "rtsp", "--video", str(video), "--fps", "7", "--port",
                    str(rtsp_port)], tmp_path / "sim-rtsp.log", repo_root)]
    try:
        line = wait_ready(procs[0], tmp_path / "sim-rtsp.log", "sim rtsp:")
        assert line.startswith(f"sim rtsp: {url} serving"), line
        procs.append(spawn(["sim", "onvif", "--rtsp-url", url, "--port", str(onvif_port)],
                           tmp_path / "sim-onvif.log", repo_root))
        line = wait_ready(procs[1], tmp_path / "sim-onvif.log", "sim onvif:")
        assert f"http://127.0.0.1:{onvif_port}/onvif/device_service" in line, line
        yield path, site_id
    finally:
        codes = [stop(p) for p in reversed(procs)]
    assert codes == [0] * len(procs), f"simulators' exit codes (onvif, rtsp): {codes}"
    assert "stopped" in (tmp_path / "sim-rtsp.log").read_text()


def test_rtsp_onvif_and_radar_site_raises_alarms_on_the_broker(
        site: tuple[Path, str], repo_root: Path, shared_data: Path, tmp_path: Path,
        mqtt_broker: tuple[str, int]) -> None:
    config, site_id = site
    sub, got = observe(mqtt_broker, f"perimeter/+/{site_id}/#", f"obs-{site_id}")  # v1, v2
    edge, radar = run_edge_and_radar(config, repo_root, shared_data, tmp_path)
    online: set[str] = set()
    alarms: dict[str, set[str]] = {}  # camera (or radar) id -> sources seen
    try:
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline:
            assert edge.poll() is None, (tmp_path / "run.log").read_text()[-3000:]
            try:
                topic, msg = got.get(timeout=1.0)
            except queue.Empty:
                continue
            if "/camera/" in topic and topic.endswith("/status") and msg.get(
                    "state") == "online":
                online.add(topic.split("/camera/")[1].split("/")[0])
            elif "/alarm/" in topic and msg["state"] == "raised":
                alarms.setdefault(msg["camera"], set()).add(msg["source"])
            if (online >= {"cam-rtsp", "cam-onvif"} and "cam-rtsp" in alarms
                    and "cam-onvif" in alarms and "radar-1" in alarms):
                break
        print(f"alarms by sensor: {alarms}; online: {online}")
        assert online >= {"cam-rtsp", "cam-onvif"}, f"cameras online: {online}"
        assert {"cam-rtsp", "cam-onvif", "radar-1"} <= set(alarms), (
            f"alarms by sensor: {alarms}\n{(tmp_path / 'run.log').read_text()[-3000:]}")
        assert alarms["radar-1"] <= {"radar", "fused"}
    finally:
        radar_rc = stop(radar, 15)
        rc = stop(edge)
        sub.loop_stop()
        sub.disconnect()
    assert rc == 0, (tmp_path / "run.log").read_text()[-3000:]
    assert radar_rc == 0, (tmp_path / "sim.log").read_text()[-2000:]
    assert "messages published" in (tmp_path / "sim.log").read_text()
    assert "ERROR" not in (tmp_path / "run.log").read_text()


def test_a_radar_only_site_runs_without_a_camera_or_a_model(
        repo_root: Path, shared_data: Path, tmp_path: Path,
        mqtt_broker: tuple[str, int]) -> None:
    doc = yaml.safe_load((repo_root / "config/live_site.yaml").read_text(encoding="utf-8"))
    site_id = f"radar-{uuid.uuid4().hex[:8]}"
    doc["site"]["id"] = site_id
    doc["mqtt"].update(host=mqtt_broker[0], port=mqtt_broker[1])
    del doc["cameras"]
    config = tmp_path / "radar_only.yaml"
    config.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    sub, got = observe(mqtt_broker, topics.alarm_filter(site_id), f"obs-{site_id}")
    edge, radar = run_edge_and_radar(config, repo_root, shared_data, tmp_path)
    try:
        _topic, msg = got.get(timeout=30)
        assert msg["source"] == "radar" and msg["camera"] == "radar-1", msg
    finally:
        stop(radar, 15)
        rc = stop(edge)
        sub.loop_stop()
        sub.disconnect()
    assert rc == 0, (tmp_path / "run.log").read_text()[-3000:]
    assert "0 camera(s)" in (tmp_path / "run.log").read_text()
