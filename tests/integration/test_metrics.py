"""Prometheus metrics of the edge pipeline and the central aggregator, each test on a fresh
registry: counted by a pipeline over synthetic frames, scraped over HTTP from a real replay of
TUD-Campus, and from the aggregator (real Redis) through the FastAPI app on loopback."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import redis
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from central.incidents.store import RedisStore
from central.metrics import CentralMetrics
from common.net import free_port
from edge.config import TrackerConfig
from edge.metrics import EdgeMetrics
from edge.pipeline import STAGES, CameraPipeline
from edge.sources.frame import Frame
from edge.tracker import ByteTracker, StridedTracker
from tests.support.alarms import alarm
from tests.support.central import CheckedAggregator
from tests.support.services import REPO_ROOT as REPO
from wire.client import Broker
from zones.config import HysteresisConfig, ZoneConfig
from zones.engine import CameraRules
from zones.geometry import Risk, ZoneKind
from zones.profiles import Schedule
from zones.tracks import Detections

TUD_VIDEO = REPO.parent / "shared" / "data" / "mot15" / "TUD-Campus" / "TUD-Campus.mp4"
TOPIC = "perimeter/v1/park/alarm/{camera}/{zone}/intrusion"
TOKEN = "s3cret-token-for-tests"
FPS = 10.0
T0 = 1_700_000_000.0




def scrape(url: str, token: str | None = None,
           ) -> tuple[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
    """Content type and samples ``{(name, sorted labels): value}`` of a /metrics page."""
    req = urllib.request.Request(url)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=5) as resp:
        ctype, text = resp.headers["Content-Type"], resp.read().decode()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(text) for s in fam.samples}
    return ctype, samples


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
          **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


# -- edge: pipeline over synthetic frames ------------------------------------------------------


class WalkerDetector:
    """One person (10x20 box) per frame, at the foot points given in order."""

    name = "walker"

    def __init__(self, feet: list[tuple[float, float]]):
        self.feet = iter(feet)

    def detect(self, image: Any) -> Detections:
        x, y = next(self.feet)
        return Detections.create(np.array([[x - 5, y - 20, x + 5, y]], dtype=float),
                                 np.array([0.9]), np.array([0]))


def walker_pipeline(metrics: EdgeMetrics | None, feet: list[tuple[float, float]]
                    ) -> tuple[CameraPipeline, list[Frame]]:
    # Frame hysteresis only (no exit time): the walker is cleared 3 frames after leaving.
    zone = ZoneConfig(id="edge", kind=ZoneKind.CLIFF, risk=Risk.HIGH, coords="pixels",
                      polygon=[(30, 30), (70, 30), (70, 70), (30, 70)],
                      hysteresis=HysteresisConfig(exit_seconds=0.0))
    rules = CameraRules("cam", [zone], (100, 100), Schedule([]))
    pipeline = CameraPipeline("cam", WalkerDetector(feet),
                              StridedTracker(ByteTracker(TrackerConfig(), FPS)),
                              rules, [], metrics)
    image = np.zeros((100, 100, 3), dtype=np.uint8)
    frames = [Frame(i, T0 + (i - 1) / FPS, image) for i in range(1, len(feet) + 1)]
    return pipeline, frames


# Walks right across the zone, 3 px a frame (the tracker keeps one id): x 10..91, inside for
# x 31..70 (frames 8-21): raised, then cleared after 3 frames outside.
WALK = [(10.0 + 3 * k, 50.0) for k in range(28)]


def test_pipeline_counts_frames_stages_and_alarms() -> None:
    reg = CollectorRegistry()
    pipeline, frames = walker_pipeline(EdgeMetrics(reg), WALK)
    stats = pipeline.run(frames)
    n = len(WALK)
    assert stats.frames == n
    assert reg.get_sample_value("perimeter_edge_frames_total", {"camera": "cam"}) == n
    for stage in STAGES:
        assert reg.get_sample_value("perimeter_edge_stage_seconds_count",
                                    {"camera": "cam", "stage": stage}) == n, stage
    alarms = {(s.labels["kind"], s.labels["state"], s.labels["zone"]): s.value
              for fam in reg.collect() if fam.name == "perimeter_edge_alarms"
              for s in fam.samples if s.name == "perimeter_edge_alarms_total"}
    assert alarms == {("intrusion", "raised", "edge"): 1.0, ("intrusion", "cleared", "edge"): 1.0}
    assert alarms == {(k, st, "edge"): float(c) for (k, st), c in stats.alarms.items()}
    latency_n = reg.get_sample_value("perimeter_edge_frame_to_alarm_seconds_count",
                                     {"camera": "cam"})
    latency_s = reg.get_sample_value("perimeter_edge_frame_to_alarm_seconds_sum",
                                     {"camera": "cam"})
    assert latency_n == 2 and latency_s is not None and 0 <= latency_s < 1.0
    fps = reg.get_sample_value("perimeter_edge_fps", {"camera": "cam"})
    assert fps is not None and fps == pytest.approx(stats.fps)
    assert reg.get_sample_value("perimeter_edge_dropped_frames_total", {"camera": "cam"}) == 0


def test_pipeline_without_metrics_and_capture_latency() -> None:
    pipeline, frames = walker_pipeline(None, WALK)
    assert pipeline.metrics is None and pipeline.run(frames).frames == len(WALK)

    # Live sources: latency from the frame's capture time. The frames were captured from 5 s
    # ago on, 0.1 s apart, so each of the 28 is over 2 s old when processed now.
    reg = CollectorRegistry()
    pipeline, frames = walker_pipeline(EdgeMetrics(reg, latency_from="capture"), WALK)
    now = time.time()
    for f in frames:
        pipeline.step(Frame(f.index, now - 5.0 + f.index / FPS, f.image))
    assert reg.get_sample_value("perimeter_edge_frame_to_alarm_seconds_count",
                                {"camera": "cam"}) == 2
    assert reg.get_sample_value("perimeter_edge_frame_to_alarm_seconds_bucket",
                                {"camera": "cam", "le": "2.0"}) == 0
    # step() alone does not count decode (run() does).
    assert reg.get_sample_value("perimeter_edge_stage_seconds_count",
                                {"camera": "cam", "stage": "decode"}) == 0


# -- edge: a real replay, scraped over HTTP ----------------------------------------------------


def test_replay_serves_metrics_over_http() -> None:
    if not TUD_VIDEO.exists():
        pytest.skip(f"TUD-Campus footage not found at {TUD_VIDEO} (see ../shared/data)")
    from edge import metrics as edge_metrics
    from edge.config import load_config
    from edge.replay import ReplayOptions, run_replay

    # The replay uses the process-wide registry: compare against what it held before.
    labels = {"camera": "tud-campus"}
    before = REGISTRY.get_sample_value("perimeter_edge_frames_total", labels) or 0.0
    port = free_port()
    loaded = load_config(REPO / "config" / "tud_campus.yaml")
    opts = ReplayOptions(video=TUD_VIDEO, max_frames=20, quiet=True, progress=False,
                         metrics_port=port)
    try:
        stats = run_replay(loaded, opts)
        assert stats.frames == 20
        ctype, samples = scrape(f"http://127.0.0.1:{port}/metrics")
    finally:
        edge_metrics.stop_serving()
    assert ctype.startswith("text/plain")
    assert value(samples, "perimeter_edge_frames_total", **labels) == before + 20
    detect = value(samples, "perimeter_edge_stage_seconds_count", camera="tud-campus",
                   stage="detect")
    assert detect is not None and detect >= 20
    fps = value(samples, "perimeter_edge_fps", **labels)
    assert fps is not None and fps > 0
    assert value(samples, "perimeter_edge_dropped_frames_total", **labels) == 0


# -- central -----------------------------------------------------------------------------------


@pytest.fixture
def metered(redis_url: str, redis_ns: str) -> Iterator[tuple[CheckedAggregator, CollectorRegistry]]:
    reg = CollectorRegistry()
    client = redis.Redis.from_url(redis_url)
    yield (CheckedAggregator(RedisStore(client, ns=redis_ns), known_zones={"bank", "cliff"},
                      metrics=CentralMetrics(reg)), reg)
    client.close()


def test_aggregator_metrics_and_the_metrics_endpoint(
        metered: tuple[CheckedAggregator, CollectorRegistry]) -> None:
    agg, reg = metered
    now = time.time()
    good = [alarm("bank", now - 1.0, camera="c1", track=1),
            alarm("bank", now - 0.9, camera="c1", track=2),
            alarm("bank", now - 0.8, camera="c2", track=3)]
    for a in good:
        assert agg.ingest(a.to_json().encode(), TOPIC.format(camera=a.camera, zone="bank")
                          ).accepted
    moon = json.loads(alarm("moon", now).to_json())
    assert not agg.ingest(b"{not json", TOPIC.format(camera="c1", zone="bank")).accepted
    assert not agg.ingest(json.dumps(moon).encode(), TOPIC.format(camera="cam1", zone="moon")
                          ).accepted
    assert len(agg.incidents()) == 1

    def get(name: str, **labels: str) -> float | None:
        return reg.get_sample_value(name, labels)

    assert get("perimeter_central_messages_total", result="accepted") == 3
    assert get("perimeter_central_messages_total", result="rejected:bad_json") == 1
    assert get("perimeter_central_messages_total", result="rejected:unknown_zone") == 1
    assert get("perimeter_central_messages_total", result="duplicate") == 0
    assert get("perimeter_central_dead_letters_total", reason="bad_json") == 1
    assert get("perimeter_central_dead_letters_total", reason="unknown_zone") == 1
    assert get("perimeter_central_incidents_opened_total", site="park", zone="bank") == 1
    assert get("perimeter_central_alarms_total", kind="intrusion", zone="bank") == 3
    assert get("perimeter_central_edge_to_intake_seconds_count") == 3
    lag = get("perimeter_central_edge_to_intake_seconds_sum")
    assert lag is not None and 2.7 <= lag < 60  # 1.0 + 0.9 + 0.8 s old, plus test time
    assert get("perimeter_central_incidents_open") == 1
    assert agg.apply_started() is None  # reset after each apply

    # A redelivery is a duplicate, not a second alarm.
    agg.ingest(good[0].to_json().encode(), TOPIC.format(camera="c1", zone="bank"))
    assert get("perimeter_central_messages_total", result="duplicate") == 1
    assert get("perimeter_central_alarms_total", kind="intrusion", zone="bank") == 3

    from central.api import create_app
    from tests.support.api import accounts, serving

    with serving(create_app(agg, accounts(agg.store.r, agg.store.ns, token_role="viewer"))) \
            as base:
        ctype, samples = scrape(f"{base}/metrics", TOKEN)  # a viewer key, as Prometheus has
    assert ctype.startswith("text/plain")
    assert value(samples, "perimeter_central_messages_total", result="accepted") == 3
    assert value(samples, "perimeter_central_incidents_open") == 1


class FakeNotifier:
    def __init__(self, backlog: int | None):
        self.n = backlog

    def backlog(self) -> int:
        if self.n is None:
            raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379")
        return self.n


class FakeIntake:
    reconnects = 2


def test_scrape_time_gauges_survive_a_failing_source() -> None:
    reg = CollectorRegistry()
    m = CentralMetrics(reg)
    assert reg.get_sample_value("perimeter_central_mqtt_reconnects") is None  # nothing attached
    m.attach(intake=FakeIntake(), notifiers={"gov": FakeNotifier(4), "down": FakeNotifier(None)})
    assert reg.get_sample_value("perimeter_central_notifier_backlog", {"notifier": "gov"}) == 4
    assert reg.get_sample_value("perimeter_central_notifier_backlog", {"notifier": "down"}) is None
    assert reg.get_sample_value("perimeter_central_mqtt_reconnects") == 2


def test_central_counts_speaker_commands_notifications_and_escalations(
        redis_url: str, redis_ns: str) -> None:
    from central.config import CentralConfig
    from central.runtime import Central

    config = CentralConfig.model_validate({
        "central": {"ack_timeout_s": {"high": 1.0}, "escalation_repeat_s": 1.0,
                    "accept_any_site": True},
        "speakers": [{"id": "spk-bank", "zones": ["bank"]}],
        "notifiers": [{"id": "bridge", "kind": "mqtt", "topic": f"t/{redis_ns}/notify"}],
        "plans": [{"name": "water", "first": {"speak": {"text": "水深危险，请勿靠近！"},
                                              "notify": ["bridge"]},
                   "escalation": [{"speak": {"text": "请立即离开！", "priority": 9},
                                   "notify": ["bridge"]}]}],
    })
    reg = CollectorRegistry()
    # Never started: commands and notifications queue in the unconnected MQTT clients.
    central = Central(config, redis_url, Broker(), ns=redis_ns, metrics=CentralMetrics(reg))
    central.worker.rebalance()  # its partitions' leases: incident state is written under them
    try:
        now = time.time()
        a = alarm("bank", now)
        assert central.aggregator.apply(a, "park").accepted

        def get(name: str, **labels: str) -> float | None:
            return reg.get_sample_value(name, labels)

        assert get("perimeter_central_speaker_commands_total", speaker="spk-bank") == 1
        assert get("perimeter_central_notifications_total", notifier="bridge") == 1
        assert get("perimeter_central_intake_to_speaker_command_seconds_count") == 1
        took = get("perimeter_central_intake_to_speaker_command_seconds_sum")
        assert took is not None and 0 < took < 1.0
        assert get("perimeter_central_notifier_backlog", notifier="bridge") == 1
        assert get("perimeter_central_mqtt_reconnects") == 0

        central.tick(now + 5)  # nobody acknowledged within 1 s
        assert get("perimeter_central_escalations_total", risk="high") == 1
        assert get("perimeter_central_speaker_commands_total", speaker="spk-bank") == 2
        # Escalations have no triggering message: not in the intake latency.
        assert get("perimeter_central_intake_to_speaker_command_seconds_count") == 1
    finally:
        central.worker.leases.leave()
        central.redis.close()
