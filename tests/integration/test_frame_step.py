"""One frame step: recorded frames through ``perimeter replay`` and through the live worker's
path (fed from a file, not RTSP) raise exactly the same alarms, because both run
``edge.pipeline.CameraPipeline.step`` with the same parts (``edge.camera``)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from edge.config import CameraConfig, LoadedConfig, load_config, video_path
from edge.live.run import RunOptions, build_worker
from edge.replay import ReplayOptions, run_replay
from edge.sinks import JsonlSink, read_jsonl
from edge.sources.feed import Feed, StatusCallback
from edge.sources.file import FileFeed, VideoFileSource
from edge.sources.frame import Frame
from tests.support.live import running
from tests.support.services import REPO_ROOT
from tests.support.waiting import wait_until
from zones.alarm import Alarm

FRAMES = 240  # PETS09 at 7 fps: 34 s of scene, several people entering the fences
START = 1795852800.0  # a Saturday morning: no period of the config in force


def signature(alarms: list[Alarm]) -> list[tuple[object, ...]]:
    return [(a.event_id, a.frame, a.time, a.zone, a.kind.value, a.state.value, a.track_id,
             a.evidence.boxes, a.evidence.count) for a in alarms]


@pytest.fixture(scope="module")
def pets(shared_data: Path) -> LoadedConfig:
    assert shared_data.is_dir()
    return load_config(REPO_ROOT / "config" / "pets09.yaml")


@pytest.mark.slow
def test_replay_and_live_worker_raise_the_same_alarms(pets: LoadedConfig, tmp_path: Path) -> None:
    out = tmp_path / "replay.jsonl"
    stats = run_replay(pets, ReplayOptions(alarms_out=out, start_time=START, quiet=True,
                                           progress=False, max_frames=FRAMES))
    assert stats.frames == FRAMES
    replayed = read_jsonl(out)

    feeds: list[FileFeed] = []

    def open_file(cam: CameraConfig, on_status: StatusCallback, wake: threading.Event,
                  on_frame: object) -> Feed:
        source = VideoFileSource(video_path(pets, 0), start_time=START, fps=cam.fps)
        feed = FileFeed(source, cam.id, on_status=on_status, wake=wake, max_frames=FRAMES)
        feeds.append(feed)
        return feed

    live_out = tmp_path / "live.jsonl"
    worker = build_worker(pets, RunOptions(quiet=True), sinks=[JsonlSink(live_out)],
                          open_feed=open_file)
    with running(worker):
        (feed,) = feeds
        wait_until(lambda: worker.cameras[0].processed == FRAMES, 120, "every frame stepped")
        assert feed.done.wait(10)
    live = read_jsonl(live_out)

    assert worker.cameras[0].detector_runs == FRAMES  # detect_every 1: a detection a frame
    assert len(replayed) >= 10, "the scene must raise alarms for the comparison to mean much"
    assert {a.kind.value for a in replayed} >= {"intrusion", "line_crossing"}
    assert signature(live) == signature(replayed)


def test_a_file_feed_hands_over_every_frame_in_order(shared_data: Path) -> None:
    """Lossless: each frame waits until the previous one was taken."""
    source = VideoFileSource(shared_data / "mot15/TUD-Campus/TUD-Campus.mp4", start_time=0.0)
    states: list[str] = []
    feed = FileFeed(source, "tud", on_status=lambda s, _r: states.append(s.value))
    got: list[Frame] = []
    feed.start()

    def take() -> bool:
        frame = feed.slot.take()
        if frame is not None:
            got.append(frame)
        return feed.done.is_set() and frame is None

    wait_until(take, 30, "the whole file")
    assert [f.index for f in got] == list(range(1, 72))
    assert feed.slot.skipped == 0 and feed.frames == 71
    assert states == ["online", "offline"]
