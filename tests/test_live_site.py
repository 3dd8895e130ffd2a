"""A whole live site as a user would run it: one config naming an RTSP camera, an ONVIF
camera and a radar, ``perimeter run`` and ``perimeter sim radar`` as real processes against
the test RTSP server (PETS09 as a live camera), a simulated ONVIF device whose profile points
at it, and the real broker. Camera and radar alarms and each camera's status must arrive."""

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

from tests.conftest import free_port
from tests.onvif_device import Device, DeviceSpec, Profile
from tests.rtsp_server import RtspServer, gst_rtsp_available

PETS = Path("mot15/PETS09-S2L1")


@pytest.fixture
def site(shared_data: Path, repo_root: Path, tmp_path: Path,
         mqtt_broker: tuple[str, int]) -> Iterator[tuple[Path, str]]:
    why = gst_rtsp_available()
    if why is not None:
        pytest.fail(f"the test RTSP server needs GStreamer's RTSP server ({why}); run "
                    "deploy/setup.sh --full", pytrace=False)
    rtsp = RtspServer(shared_data / PETS / "vtest.avi", free_port(), fps=7,
                      log_path=tmp_path / "rtsp.log")
    rtsp.start()
    onvif = Device(DeviceSpec(rtsp_port=rtsp.port, profiles=[
        Profile("main", "MainStream", 768, 576, rtsp.mount)])).start()
    doc = yaml.safe_load((repo_root / "config/pets09_radar.yaml").read_text())
    site_id = f"live-{uuid.uuid4().hex[:8]}"
    doc["site"]["id"] = site_id
    doc["edge"]["id"] = f"edge-{site_id}"
    host, port = mqtt_broker
    doc["mqtt"] = {"enabled": True, "host": host, "port": port}
    cam = doc["cameras"][0]
    del cam["source"], cam["fps"]
    doc["cameras"] = [
        {**cam, "id": "cam-rtsp", "source": rtsp.url(), "detect_every": 2},
        {**cam, "id": "cam-onvif", "detect_every": 2,
         "onvif": {"host": "127.0.0.1", "port": onvif.port, "username": "admin",
                   "password": "secret"}},
    ]
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    try:
        yield path, site_id
    finally:
        onvif.close()
        rtsp.stop()


def spawn(args: list[str], log: Path, cwd: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "edge.cli", *args], cwd=cwd,
                                stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONPATH": str(cwd)})


def test_rtsp_onvif_and_radar_site_raises_alarms_on_the_broker(
        site: tuple[Path, str], repo_root: Path, shared_data: Path, tmp_path: Path,
        mqtt_broker: tuple[str, int]) -> None:
    config, site_id = site
    got: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"obs-{site_id}")
    sub.on_message = lambda _c, _u, m: got.put((m.topic, json.loads(m.payload)))
    sub.connect(*mqtt_broker)
    sub.subscribe(f"perimeter/v1/{site_id}/#", qos=1)
    sub.loop_start()
    edge = spawn(["run", "--config", str(config), "--quiet"], tmp_path / "run.log", repo_root)
    radar = spawn(["sim", "radar", "--config", str(config), "--speed", "4", "--loop",
                   "--gt", str(shared_data / PETS / "gt/gt.txt")], tmp_path / "sim.log",
                  repo_root)
    online: set[str] = set()
    alarms: dict[str, set[str]] = {}  # camera (or radar) id -> sources seen
    try:
        deadline = time.monotonic() + 150
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
        radar.send_signal(signal.SIGTERM)
        edge.send_signal(signal.SIGTERM)
        radar.wait(15)
        rc = edge.wait(20)
        sub.loop_stop()
        sub.disconnect()
    assert rc == 0, (tmp_path / "run.log").read_text()[-3000:]
