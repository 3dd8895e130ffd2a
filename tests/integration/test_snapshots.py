"""Evidence snapshots: a JPEG per raised alarm, from the main stream when one is given."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.live.run import RunOptions, build_worker
from edge.sinks import JsonlSink
from edge.snapshots import SnapshotWriter
from sim.rtsp import RtspServer
from tests.support.alarms import alarm
from tests.support.live import config, running
from tests.support.waiting import wait_until
from zones.alarm import Alarm, Evidence


def boxed(box: tuple[float, float, float, float]) -> Alarm:
    a = alarm("bank", time.time())
    return a.model_copy(update={"evidence": Evidence(boxes=[box], scores=[0.9])})


def test_writer_draws_the_boxes_scaled_to_the_image_it_writes(tmp_path: Path) -> None:
    w = SnapshotWriter(tmp_path / "snaps")
    w.start()
    image = np.zeros((200, 400, 3), dtype=np.uint8)  # the main stream: twice the size
    a = boxed((10.0, 10.0, 50.0, 90.0))
    name = w.request(a, image, (200, 100))
    w.stop()
    assert name == f"cam1/{a.id}.jpg" and w.written == 1
    out = cv2.imread(str(tmp_path / "snaps" / name))
    assert out.shape == (200, 400, 3)
    b, g, r = out[100, 20].astype(int)  # left edge of the box, scaled x2: x=20, y 20..180
    assert r > 150 and g < 100 and b < 100
    assert out[100, 60].max() < 40  # inside the box: untouched


def test_a_full_queue_drops_snapshots_and_counts_them(tmp_path: Path) -> None:
    w = SnapshotWriter(tmp_path, max_queue=1)  # not started: nothing drains the queue
    image = np.zeros((10, 10, 3), dtype=np.uint8)
    assert w.request(boxed((1, 1, 2, 2)), image, (10, 10)) is not None
    assert w.request(boxed((1, 1, 2, 2)), image, (10, 10)) is None
    assert w.dropped == 1


@pytest.mark.parametrize("main_stream", [False, True])
def test_live_alarms_carry_a_snapshot_of_their_frame(
        rtsp: Callable[..., RtspServer], tmp_path: Path, main_stream: bool) -> None:
    srv = rtsp()
    cam: dict[str, object] = {"id": "gate", "source": srv.url(), "detect_every": 2}
    if main_stream:
        cam["evidence_source"] = srv.url()  # the same feed stands in for a main stream
    loaded = config(tmp_path, [cam], edge={"id": "edge-snap", "snapshot_dir": "snaps"})
    out = tmp_path / "alarms.jsonl"
    worker = build_worker(loaded, RunOptions(), sinks=[JsonlSink(out, fsync=False)])
    with running(worker) as w:
        def raised() -> list[Alarm]:
            text = out.read_text() if out.exists() else ""
            return [a for a in map(Alarm.from_json, text.splitlines())
                    if a.state.value == "raised"]

        wait_until(lambda: bool(raised()), 45, "a raised alarm")
        if main_stream:
            assert w.cameras[0].evidence is not None
            evidence = w.cameras[0].evidence
            wait_until(lambda: evidence.last is not None, 10, "main-stream frame")
    first = raised()[0]
    assert first.evidence.snapshot == f"gate/{first.id}.jpg"
    image = cv2.imread(str(tmp_path / "snaps" / first.evidence.snapshot))
    assert image is not None and image.shape == (576, 768, 3)
