"""Video source and the decode-ahead hand-off."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from edge.sources.file import SourceError, VideoFileSource, prefetch
from edge.sources.frame import Frame
from tests.support.services import REPO_ROOT

VIDEO = REPO_ROOT.parent / "shared/data/mot15/TUD-Campus/TUD-Campus.mp4"


def fake(n: int, fail_at: int | None = None) -> Iterator[Frame]:
    for i in range(1, n + 1):
        if i == fail_at:
            raise SourceError("decoder broke")
        yield Frame(i, float(i), np.zeros((2, 2, 3), np.uint8))


def test_prefetch_keeps_every_frame_in_order() -> None:
    assert [f.index for f in prefetch(fake(50), depth=2)] == list(range(1, 51))


def test_prefetch_reraises_decoder_errors() -> None:
    got = []
    with pytest.raises(SourceError, match="decoder broke"):
        for f in prefetch(fake(10, fail_at=4)):
            got.append(f.index)
    assert got == [1, 2, 3]


def test_prefetch_stops_its_thread_when_the_consumer_stops() -> None:
    it = prefetch(fake(1000), depth=2)
    assert next(it).index == 1
    it.close()  # must not hang on the full queue


def test_real_video_frames_and_times() -> None:
    if not VIDEO.exists():
        pytest.skip(f"real footage not found at {VIDEO}")
    src = VideoFileSource(VIDEO, start_time=100.0)
    frames = list(prefetch(src.frames()))
    assert (len(frames), src.fps, src.size) == (71, 25.0, (640, 480))
    assert frames[0].index == 1 and frames[-1].time == pytest.approx(100.0 + 70 / 25.0)
    src.close()
