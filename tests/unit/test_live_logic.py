"""The live runtime's pure decisions: reconnect backoff, latest-frame-wins, strided tracking
and capacity, tested with plain values (no camera, no thread)."""

from __future__ import annotations

import random
import threading

import numpy as np
import pytest

from edge.config import ReconnectConfig, TrackerConfig
from edge.live.capacity import CapacityMonitor
from edge.sources.feed import LatestSlot
from edge.sources.frame import Frame
from edge.sources.rtsp import Backoff
from edge.tracker import ByteTracker, StridedTracker
from zones.tracks import Detections


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


