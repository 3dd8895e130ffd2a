"""Live cameras for tests: the project's RTSP simulator serving PETS09, configs, workers.

``pets`` and ``rtsp`` are fixtures (registered by ``tests/conftest.py``): ``rtsp(**kw)``
starts a real RTSP server (``sim.rtsp``, GStreamer on the system Python) on a free port.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from common.net import free_port
from edge.config import LoadedConfig, load_config
from edge.live.worker import LiveWorker
from sim.rtsp import RtspServer, gst_rtsp_available
from zones.tracks import Detections

PETS = "mot15/PETS09-S2L1/vtest.avi"
ZONE = {"id": "lawn", "kind": "cliff", "risk": "high",
        "polygon": [[0.0, 0.3], [1.0, 0.3], [1.0, 1.0], [0.0, 1.0]]}


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
           "detector": {"input_size": [512, 384], "conf": 0.3},
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


@contextlib.contextmanager
def running(worker: LiveWorker) -> Iterator[LiveWorker]:
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()


