"""Live cameras: a real RTSP server on loopback (``sim.rtsp``) serving PETS09.

The pure logic (backoff, latest-frame-wins, strided tracking, capacity) is tested in
``tests/unit/test_live_logic.py``; here the real worker runs against the real server and,
for camera status, the real MQTT broker. Fault tests use a cheap fake detector so they stay
fast on two cores; the end-to-end test runs the default detector. Waits poll with timeouts,
never fixed sleeps.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client import CollectorRegistry

from common.net import free_port
from edge.config import ReconnectConfig
from edge.live.run import RunOptions, build_worker
from edge.live.worker import LiveWorker
from edge.metrics import EdgeMetrics
from edge.sinks import JsonlSink
from edge.sources.feed import CameraState
from edge.sources.rtsp import diagnose
from sim.rtsp import RtspServer
from tests.support.live import PETS, NoPeople, config, running
from tests.support.waiting import wait_until
from zones.alarm import Alarm, AlarmKind, AlarmState, Evidence
from zones.geometry import Risk, ZoneKind
from zones.tracks import Detections


def test_diagnose_names_a_closed_port_and_a_silent_listener() -> None:
    port = free_port()
    assert "connection refused" in diagnose(f"rtsp://127.0.0.1:{port}/x", 1.0)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"rtsp://127.0.0.1:{silent.getsockname()[1]}/x"
        assert "no answer" in diagnose(url, 0.5)


class Radar:
    """An attachment: counts the tracks it is shown and raises one alarm of its own."""

    def __init__(self) -> None:
        self.tracks_seen = 0
        self.emit: Callable[[Alarm], None] | None = None

    def start(self, emit: Callable[[Alarm], None]) -> None:
        self.emit = emit

    def on_tracks(self, tracks: Detections) -> None:
        self.tracks_seen += 1
        if self.tracks_seen == 1 and self.emit is not None:
            threading.Thread(target=self.emit, args=(Alarm.make(
                kind=AlarmKind.INTRUSION, state=AlarmState.RAISED, camera="radar-1",
                zone="ground", zone_kind=ZoneKind.CLIFF, risk=Risk.HIGH, key="r1",
                first_frame=1, first_time=tracks.time, frame=1, time=tracks.time,
                track_id=1, track_ids=[1], profile="default", evidence=Evidence()),)).start()

    def stop(self) -> None:
        pass


@pytest.mark.slow
def test_live_camera_alarms_reach_the_sink_with_capture_times(
        rtsp: Callable[..., RtspServer], tmp_path: Path) -> None:
    # 4 frames/s: even a loaded machine detects within a frame's interval, so frames
    # between detections are stepped (at 10/s every frame taken could be a detection)
    srv = rtsp(fps=4.0)
    loaded = config(tmp_path, [{"id": "gate", "source": srv.url(), "detect_every": 2}])
    out = tmp_path / "alarms.jsonl"
    metrics = EdgeMetrics(CollectorRegistry(), latency_from="capture")
    radar = Radar()
    started = time.time()
    worker = build_worker(loaded, RunOptions(), sinks=[JsonlSink(out, fsync=False)],
                          metrics=metrics, attachments=[radar])
    with running(worker) as w:
        def alarms() -> list[Alarm]:
            text = out.read_text() if out.exists() else ""
            return [Alarm.from_json(line) for line in text.splitlines()]

        wait_until(lambda: any(a.camera == "gate" for a in alarms()), 45, "a camera alarm")
        cam = w.cameras[0]
        assert w.board.get("gate")[0] is CameraState.ONLINE
        assert cam.detector_runs >= 1
        # detect_every 2: some frames are stepped without the detector (polled: right after
        # the first alarm the detector may still be warming up, taking every other frame)
        wait_until(lambda: cam.processed > cam.detector_runs, 20,
                   "a frame stepped without the detector (detect_every 2)")
        wait_until(lambda: any(a.camera == "radar-1" for a in alarms()), 5, "radar alarm")
    got = [a for a in alarms() if a.camera == "gate"]
    assert all(started < a.time < time.time() for a in got)  # capture time, epoch
    assert radar.tracks_seen >= cam.processed - 1
    reg = metrics.registry
    assert reg is not None
    assert reg.get_sample_value("perimeter_edge_frame_to_alarm_seconds_count",
                                {"camera": "gate"}) == len(got)
    assert reg.get_sample_value("perimeter_edge_camera_status",
                                {"camera": "gate", "state": "offline"}) == 1  # stopped


class StatusWatch:
    """A real MQTT subscriber to one camera status topic: the states in arrival order."""

    def __init__(self, broker: tuple[str, int], topic: str):
        self.states: list[str] = []
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=f"watch-{uuid.uuid4().hex[:8]}")
        self.client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *_: self.ready.set()
        self.client.on_message = self._on_message
        self.client.connect(*broker)
        self.client.loop_start()
        assert self.ready.wait(10), "subscription not acknowledged"

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.states.append(json.loads(msg.payload)["state"])

    def count(self, state: str) -> int:
        with self.lock:
            return self.states.count(state)

    def more(self, state: str, than: int) -> bool:
        return self.count(state) > than

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def test_camera_server_killed_and_restarted_ten_times(
        rtsp: Callable[..., RtspServer], tmp_path: Path,
        mqtt_broker: tuple[str, int]) -> None:
    srv = rtsp(fps=15)
    loaded = config(tmp_path, [{"id": "cam-a", "source": srv.url(), "stall_seconds": 2,
                                "reconnect": {"initial_s": 0.1, "max_s": 0.5}}],
                    mqtt={"enabled": True, "host": mqtt_broker[0], "port": mqtt_broker[1]})
    topic = f"perimeter/v1/default/edge/{loaded.config.edge.id}/camera/cam-a/status"
    watch = StatusWatch(mqtt_broker, topic)
    worker = build_worker(loaded, RunOptions(quiet=True), detector=NoPeople())
    try:
        with running(worker) as w:
            wait_until(lambda: watch.count("online") == 1, 20, "camera online")
            for i in range(1, 11):
                offline = watch.count("offline")
                srv.kill()
                wait_until(functools.partial(watch.more, "offline", offline), 10,
                           f"offline after kill {i}")
                srv.start()
                wait_until(functools.partial(watch.more, "online", i), 10,
                           f"online after restart {i}")
            cam = w.cameras[0]
            assert w._thread is not None and w._thread.is_alive()
            assert cam.source.reconnects == 10
            processed = cam.processed
            wait_until(lambda: cam.processed > processed + 5, 10, "frames after the faults")
        wait_until(lambda: watch.states[-1:] == ["offline"], 5, "offline on stop")
    finally:
        watch.close()


def reason_has(w: LiveWorker, camera: str, words: str) -> bool:
    return words in w.board.get(camera)[1]


def test_bad_cameras_get_clear_status_and_leave_the_good_one_alone(
        rtsp: Callable[..., RtspServer], tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    srv = rtsp(user="guard", password="s3cret")
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # accepts connections (kernel backlog), never answers
    closed = free_port()
    fast = {"stall_seconds": 1.5, "reconnect": {"initial_s": 0.2, "max_s": 1.0}}
    loaded = config(tmp_path, [
        {"id": "good", "source": srv.url("guard", "s3cret"), **fast},
        {"id": "silent", "source": f"rtsp://127.0.0.1:{silent.getsockname()[1]}/live", **fast},
        {"id": "closed", "source": f"rtsp://127.0.0.1:{closed}/live", **fast},
        {"id": "badpass", "source": srv.url("guard", "wrong"), **fast},
    ])
    caplog.set_level(logging.INFO, logger="edge")
    worker = build_worker(loaded, RunOptions(quiet=True), detector=NoPeople())
    try:
        with running(worker) as w:
            expect = {"silent": "no answer", "closed": "connection refused",
                      "badpass": "unauthorized: wrong user or password"}
            for cam, words in expect.items():
                wait_until(functools.partial(reason_has, w, cam, words), 15, f"{cam}: {words}")
                assert w.board.get(cam)[0] is CameraState.OFFLINE
            good = w.cameras[0]
            wait_until(lambda: good.processed >= 20, 15, "the good camera's frames")
            assert w.board.get("good")[0] is CameraState.ONLINE
            assert good.source.reconnects == 0
    finally:
        silent.close()
    offline = {r.camera: r.reason for r in caplog.records  # type: ignore[attr-defined]
               if r.msg == "camera %s offline: %s (retry in %.1f s)"}
    assert set(offline) == {"silent", "closed", "badpass"}
    for cam, words in expect.items():
        assert words in offline[cam]
    assert not any("s3cret" in str(vars(r)) for r in caplog.records)  # never logged


def test_a_frozen_camera_is_a_stall_and_comes_back(
        rtsp: Callable[..., RtspServer], tmp_path: Path) -> None:
    srv = rtsp(fps=15)
    loaded = config(tmp_path, [{"id": "cam-s", "source": srv.url(), "stall_seconds": 1.5,
                                "reconnect": {"initial_s": 0.2, "max_s": 0.5}}])
    reasons: list[str] = []
    worker = build_worker(loaded, RunOptions(quiet=True), detector=NoPeople())
    with running(worker) as w:
        wait_until(lambda: w.board.get("cam-s")[0] is CameraState.ONLINE, 20, "online")
        assert srv.proc is not None
        srv.proc.send_signal(19)  # SIGSTOP: the socket stays open, nothing arrives
        try:
            def stalled() -> bool:
                reasons.append(w.board.get("cam-s")[1])
                return reasons[-1].startswith("stalled")

            wait_until(stalled, 10, "stall detected")
        finally:
            srv.proc.send_signal(18)  # SIGCONT
        wait_until(lambda: w.board.get("cam-s")[0] is CameraState.ONLINE, 15, "back online")
        assert any(r.startswith("late: no frame") for r in reasons)  # degraded before offline


def test_run_refuses_a_video_file_camera(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         shared_data: Path) -> None:
    from cli.main import main

    loaded = config(tmp_path, [{"id": "file", "source": str(shared_data / PETS)}])
    assert main(["run", "--config", str(loaded.path)]) == 2
    err = capsys.readouterr().err
    assert "camera 'file' is a video file; perimeter run needs live cameras" in err
    assert f"{loaded.path}:" in err


class SlowDetector:
    """Finds nobody, slowly: a box too small for its cameras (compute, not a sync delay)."""

    name = "slow"

    def detect(self, image: np.ndarray) -> Detections:
        time.sleep(0.25)
        return Detections.empty()


def test_over_capacity_is_logged_flagged_and_measured(
        rtsp: Callable[..., RtspServer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    import edge.live.worker

    monkeypatch.setattr(edge.live.worker, "WINDOW_S", 1.0)
    srv = rtsp(fps=15)
    loaded = config(tmp_path, [{"id": "busy", "source": srv.url()}])
    metrics = EdgeMetrics(CollectorRegistry(), latency_from="capture")
    worker = build_worker(loaded, RunOptions(quiet=True), detector=SlowDetector(),
                          metrics=metrics)
    with running(worker) as w:
        wait_until(lambda: w.board.get("busy")[0] is CameraState.DEGRADED, 15, "degraded")
        assert w.board.get("busy")[1].startswith("over capacity: ")
        reg = metrics.registry
        assert reg is not None
        assert reg.get_sample_value("perimeter_edge_over_capacity", {"camera": "busy"}) == 1
        skipped = reg.get_sample_value("perimeter_edge_dropped_frames_total", {"camera": "busy"})
        assert skipped is not None and skipped > 0
    assert any(r.levelno == logging.WARNING and "edge over capacity: camera busy gets"
               in r.getMessage() for r in caplog.records)


def test_live_open_leaves_file_decoding_options_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    # OpenCV reads OPENCV_FFMPEG_CAPTURE_OPTIONS at every open: the low-latency RTSP options
    # must not leak into video files opened later in the same process (a replay).
    from edge.sources.rtsp import LiveSource

    monkeypatch.delenv("OPENCV_FFMPEG_CAPTURE_OPTIONS", raising=False)
    src = LiveSource("c", lambda: "rtsp://127.0.0.1:1/x", stall_s=1.0,
                     reconnect=ReconnectConfig(), on_status=lambda *_: None)
    src._open(f"rtsp://127.0.0.1:{free_port()}/x").release()
    assert "OPENCV_FFMPEG_CAPTURE_OPTIONS" not in os.environ


def test_a_dead_inference_thread_is_reported_not_hidden(tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    loaded = config(tmp_path, [{"id": "cam-x", "source": f"rtsp://127.0.0.1:{free_port()}/x"}])
    worker = build_worker(loaded, RunOptions(quiet=True), sinks=[], detector=NoPeople())

    def broken() -> None:
        raise RuntimeError("bug in a periodic check")

    worker._judge_lateness = broken  # type: ignore[method-assign]
    with running(worker) as w:
        wait_until(lambda: not w.alive, 10, "worker reports itself dead")
        assert w.crashed == "RuntimeError: bug in a periodic check"
    assert any(r.levelno == logging.CRITICAL for r in caplog.records)
