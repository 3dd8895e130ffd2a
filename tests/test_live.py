"""Live cameras: a real RTSP server on loopback (tests/rtsp_server.py) serving PETS09.

Pure logic (backoff, latest-frame-wins, strided tracking, capacity) is tested on its own;
everything else runs the real worker against the real server and, for camera status, the
real MQTT broker. Fault tests use a cheap fake detector so they stay fast on two cores; the
end-to-end test runs the default detector. Waits poll with timeouts, never fixed sleeps.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client import CollectorRegistry

from central.netutil import free_port
from edge.config import LoadedConfig, ReconnectConfig, TrackerConfig, load_config
from edge.live import CapacityMonitor, StridedTracker
from edge.liverun import RunOptions, build_worker
from edge.livesource import Backoff, CameraState, LatestSlot, diagnose
from edge.metrics import EdgeMetrics
from edge.sim_rtsp import RtspServer, gst_rtsp_available
from edge.sinks import JsonlSink
from edge.source import Frame
from edge.tracker import ByteTracker
from edge.worker import LiveWorker
from zones.alarm import Alarm, AlarmKind, AlarmState, Evidence
from zones.geometry import Risk, ZoneKind
from zones.tracks import Detections

PETS = "mot15/PETS09-S2L1/vtest.avi"
ZONE = {"id": "lawn", "kind": "cliff", "risk": "high",
        "polygon": [[0.0, 0.3], [1.0, 0.3], [1.0, 1.0], [0.0, 1.0]]}


def wait_until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.02)  # poll interval


# -- pure logic --------------------------------------------------------------------------------


def test_backoff_doubles_to_the_cap_with_bounded_jitter_and_resets() -> None:
    b = Backoff(ReconnectConfig(initial_s=0.5, max_s=3.0, jitter=0.25), random.Random(7))
    waits = [b.next() for _ in range(6)]
    for w, base in zip(waits, [0.5, 1.0, 2.0, 3.0, 3.0, 3.0], strict=True):
        assert base <= w <= base * 1.25
    assert len({round(w, 6) for w in waits[3:]}) == 3  # jitter: capped waits still differ
    b.reset()
    assert 0.5 <= b.next() <= 0.625
    no_jitter = Backoff(ReconnectConfig(initial_s=1.0, max_s=10.0, jitter=0.0))
    assert [no_jitter.next() for _ in range(5)] == [1.0, 2.0, 4.0, 8.0, 10.0]


def frame(i: int) -> Frame:
    return Frame(i, float(i), np.zeros((2, 2, 3), np.uint8))


def test_latest_slot_keeps_the_newest_frame_and_counts_the_skipped() -> None:
    wake = threading.Event()
    slot = LatestSlot(wake)
    assert slot.take() is None
    assert [slot.put(frame(i)) for i in (1, 2, 3)] == [False, True, True]
    assert wake.is_set()
    got = slot.take()
    assert got is not None and got.index == 3
    assert slot.take() is None and slot.skipped == 2
    slot.put(frame(4))
    assert slot.take() is not None and slot.skipped == 2  # taken in time: not skipped


def test_strided_tracker_moves_tracks_on_between_detections() -> None:
    st = StridedTracker(ByteTracker(TrackerConfig(), 10.0))

    def det(i: int) -> Detections:  # one person walking right at 10 px per 0.1 s frame
        x = 100.0 + 10.0 * i
        return Detections.create([[x, 100.0, x + 40.0, 200.0]], [0.9], camera="c", frame=i,
                                 time=1000.0 + 0.1 * i, frame_size=(640, 480))

    for i in (1, 2, 3):
        tracks = st.update(det(i))
    assert len(tracks) == 1
    tid = int(tracks.track_ids[0])
    pred = st.predict(4, 1000.4)
    assert pred.frame == 4 and pred.time == pytest.approx(1000.4)
    assert pred.track_ids.tolist() == [tid]
    assert 125.0 < pred.boxes[0, 0] < 140.0  # moved on from x=130 (last seen) towards 140
    far = st.predict(99, 1100.0)  # extrapolation is capped (1 s), boxes stay in the frame
    assert far.boxes[0, 2] <= 640.0 and far.boxes[0, 0] < 250.0


def test_capacity_monitor_needs_two_low_windows_and_clears_with_margin() -> None:
    cm = CapacityMonitor(detect_every=2)
    assert cm.window(0.0, 0, 0) is None
    ok = cm.window(1.0, 10, 5)  # 10 fps stream, 5 det/s: on target
    assert ok is not None and not ok.over and ok.target_fps == pytest.approx(5.0)
    low = cm.window(2.0, 20, 8)  # 3 det/s
    assert low is not None and not low.over
    low2 = cm.window(3.0, 30, 11)
    assert low2 is not None and low2.over and low2.changed
    back = cm.window(4.0, 40, 16)
    assert back is not None and not back.over and back.changed


def test_diagnose_names_a_closed_port_and_a_silent_listener() -> None:
    port = free_port()
    assert "connection refused" in diagnose(f"rtsp://127.0.0.1:{port}/x", 1.0)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"rtsp://127.0.0.1:{silent.getsockname()[1]}/x"
        assert "no answer" in diagnose(url, 0.5)


# -- the real RTSP server -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def pets(shared_data: Path) -> Path:
    why = gst_rtsp_available()
    if why is not None:
        pytest.fail(f"the test RTSP server needs the system Python with GStreamer's RTSP server "
                    f"({why}); run deploy/setup.sh --full", pytrace=False)
    return shared_data / PETS


@pytest.fixture
def rtsp(pets: Path, tmp_path: Path) -> Iterator[Callable[..., RtspServer]]:
    servers: list[RtspServer] = []

    def make(**kw: Any) -> RtspServer:
        srv = RtspServer(pets, free_port(), log_path=tmp_path / f"rtsp{len(servers)}.log", **kw)
        srv.start()
        servers.append(srv)
        return srv

    yield make
    for s in servers:
        s.stop()


def config(tmp_path: Path, cameras: list[dict[str, Any]], **top: Any) -> LoadedConfig:
    doc = {"edge": {"id": f"edge-{uuid.uuid4().hex[:8]}"},
           "detector": {"input_size": [416, 320], "conf": 0.25},
           "cameras": [{"zones": [ZONE], **c} for c in cameras], **top}
    path = tmp_path / "live.yaml"
    path.write_text(yaml.safe_dump(doc))
    return load_config(path)


class NoPeople:
    """A detector that finds nobody, instantly (fault tests exercise the plumbing)."""

    name = "none"

    def __init__(self) -> None:
        self.calls = 0

    def detect(self, image: np.ndarray) -> Detections:
        self.calls += 1
        return Detections.empty()


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


@contextlib.contextmanager
def running(worker: LiveWorker) -> Iterator[LiveWorker]:
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()


@pytest.mark.slow
def test_live_camera_alarms_reach_the_sink_with_capture_times(
        rtsp: Callable[..., RtspServer], tmp_path: Path) -> None:
    srv = rtsp()
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
        assert cam.detections >= 1 and cam.processed > cam.detections  # detect_every 2
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
    from edge.cli import main

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
    import edge.worker

    monkeypatch.setattr(edge.worker, "WINDOW_S", 1.0)
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
    from edge.livesource import LiveSource

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
