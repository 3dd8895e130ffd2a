"""Radar: pose and lat/lon tables, message validation, admission, ground-fence scenarios, the
config, and the intake against a real Mosquitto (the simulator's PETS09 tracks in, alarms
out; a flood of 10 000 messages with junk among them)."""

from __future__ import annotations

import argparse
import json
import math
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from cli.sim import add_parser
from cli.sim import run as sim_run
from common.yamlconfig import ConfigError
from edge.config import load_config
from edge.radar.ground import load_ground
from edge.radar.intake import RadarWorker
from edge.radar.metrics import RadarMetrics
from sim.radar import SimOptions, read_world_tracks, scan
from tests.support.radar import T0, Collector, Publisher, at, rules, site, unique
from tests.support.waiting import wait_until
from zones.calibration import GroundPlane
from zones.geometry import to_pixels
from zones.profiles import Schedule
from zones.radar import EARTH_RADIUS_M, GeoOrigin, RadarMessage, RadarPose
from zones.radar_config import GroundSite
from zones.radar_rules import Drop, RadarRules

# -- geometry tables ---------------------------------------------------------------------------


@pytest.mark.parametrize(("pose", "rng", "az", "xy"), [
    (RadarPose(0, 0), 10, 0, (0, 10)),                          # boresight up +y
    (RadarPose(0, 0), 10, 90, (10, 0)),                         # clockwise: to the right
    (RadarPose(0, 0, clockwise=False), 10, 90, (-10, 0)),       # a counter-clockwise vendor
    (RadarPose(5, -5, heading_deg=90), 10, 0, (15, -5)),        # looking east
    (RadarPose(0, 0, heading_deg=45), math.sqrt(2), 0, (1, 1)),
    (RadarPose(0, 0, heading_deg=0, height_m=6), 10, 0, (0, 8)),  # slant range from a mast
    (RadarPose(1, 1, height_m=6), 5, 30, (1, 1)),               # under the mast: at its foot
    (RadarPose(0, 0, heading_deg=350), 10, 20, (10 * math.sin(math.radians(10)),
                                                10 * math.cos(math.radians(10)))),
])
def test_polar_to_site(pose: RadarPose, rng: float, az: float, xy: tuple[float, float]) -> None:
    assert pose.to_site(rng, az)[0] == pytest.approx(xy, abs=1e-9)


@pytest.mark.parametrize("pose", [
    RadarPose(0, 0), RadarPose(-24, -18, 52, 4), RadarPose(3, 7, -170, 2, clockwise=False)])
def test_polar_round_trip(pose: RadarPose) -> None:
    pts = np.random.default_rng(1).uniform(-40, 40, (50, 2))
    r, az = pose.to_polar(pts)
    assert np.all((az >= -180) & (az < 180))
    assert np.allclose(pose.to_site(r, az), pts, atol=1e-9)


LAT0, LON0 = 51.4408, -0.9418


@pytest.mark.parametrize(("origin", "latlon", "xy"), [
    (GeoOrigin(LAT0, LON0), (LAT0, LON0), (0, 0)),
    (GeoOrigin(LAT0, LON0), (LAT0 + 0.001, LON0), (0, 111.195)),          # 1e-3 deg north
    (GeoOrigin(LAT0, LON0), (LAT0, LON0 + 0.001), (69.310, 0)),           # east, cos(lat)
    (GeoOrigin(LAT0, LON0, 90), (LAT0, LON0 + 0.001), (0, 69.310)),       # grid +y points east
    (GeoOrigin(LAT0, LON0, 90), (LAT0 + 0.001, LON0), (-111.195, 0)),
    (GeoOrigin(0.0, 179.9999), (0.0, -179.9999), (22.239, 0)),            # across the date line
])
def test_latlon_to_site(origin: GeoOrigin, latlon: tuple[float, float],
                        xy: tuple[float, float]) -> None:
    assert origin.to_site([latlon])[0] == pytest.approx(xy, abs=2e-3)
    assert origin.to_latlon([xy])[0] == pytest.approx(latlon, abs=1e-7)


@pytest.mark.parametrize(("dist", "tol"), [(300.0, 0.001), (1000.0, 0.01)])
def test_equirectangular_is_exact_enough_at_site_scale(dist: float, tol: float) -> None:
    """Against the haversine great-circle distance: a millimetre at 300 m, a centimetre at 1 km."""
    o = GeoOrigin(LAT0, LON0, 30)
    for bearing in range(0, 360, 30):
        b = math.radians(bearing)
        lat, lon = o.to_latlon([(dist * math.sin(b), dist * math.cos(b))])[0]
        p1, p2, dl = math.radians(LAT0), math.radians(lat), math.radians(lon - LON0)
        h = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
        assert 2 * EARTH_RADIUS_M * math.asin(math.sqrt(h)) == pytest.approx(dist, abs=tol)


# -- message validation and admission ----------------------------------------------------------

GOOD = {"radar_id": "r1", "track_id": 7, "time": T0, "range_m": 12.5, "azimuth_deg": -3.0,
        "speed_mps": 1.4}


@pytest.mark.parametrize(("change", "ok"), [
    ({}, True),
    ({"rcs_dbsm": -8.5, "class": "person", "schema": "perimeter.radar/1"}, True),
    ({"lat": LAT0, "lon": LON0}, True),
    ({"lat": LAT0}, False),                 # lat without lon
    ({"rng": 3}, False),                    # unknown key (a gateway's typo)
    ({"range_m": -1}, False),
    ({"range_m": "far"}, False),
    ({"azimuth_deg": 400}, False),
    ({"track_id": -2}, False),
    ({"radar_id": "r/1"}, False),           # not a topic-safe id
    ({"time": 0}, False),
    ({"schema": "perimeter.radar/2"}, False),
])
def test_message_validation(change: dict[str, object], ok: bool) -> None:
    payload = json.dumps({**GOOD, **change})
    if ok:
        assert RadarMessage.model_validate_json(payload).track_id == 7
    else:
        with pytest.raises(ValueError):
            RadarMessage.model_validate_json(payload)


@pytest.mark.parametrize(("history", "msg", "arrival", "drop"), [
    ([], {}, T0 + 0.1, None),
    ([], {}, T0 + 2.5, Drop.LATE),                      # max_age_s 2
    ([], {}, T0 - 2.5, Drop.FUTURE),                    # the radar's clock runs ahead
    ([], {}, T0 - 1.5, None),
    ([T0], {"time": T0}, T0 + 0.1, Drop.DUPLICATE),
    ([T0], {"time": T0 - 0.1}, T0 + 0.1, Drop.OUT_OF_ORDER),
    ([T0 - 0.1], {}, T0 + 0.1, None),
    ([], {"range_m": 60.1}, T0, Drop.OUT_OF_COVERAGE),  # max_range_m 60
    ([], {"azimuth_deg": 61}, T0, Drop.OUT_OF_COVERAGE),  # fov 120
    ([], {"azimuth_deg": -60}, T0, None),
    ([], {"azimuth_deg": 359}, T0, None),                # = -1 degree
])
def test_admission(history: list[float], msg: dict[str, float], arrival: float,
                   drop: Drop | None) -> None:
    rr = rules(site(radar={"max_range_m": 60, "fov_deg": 120}))
    for t in history:
        assert rr.step(RadarMessage(**{**GOOD, "time": t}), t)[0] is None  # type: ignore[arg-type]
    assert rr.admit(RadarMessage(**{**GOOD, **msg}), arrival) is drop  # type: ignore[arg-type]


# -- ground-fence scenarios --------------------------------------------------------------------


def walk(g: GroundSite, points: list[tuple[float, float]], track: int = 3,
         dt: float = 0.1) -> list[tuple[str, str, int | None, int]]:
    rr = rules(g)
    out = []
    for i, (x, y) in enumerate(points):
        t = T0 + i * dt
        _, alarms = rr.step(at(g, track, t, x, y), t)
        out += [(a.kind.value, a.state.value, a.track_id, a.frame) for a in alarms]
    return out


OUT, IN = (5.0, 15.0), (15.0, 15.0)


@pytest.mark.parametrize(("zone", "points", "expected"), [
    # high risk: 2 messages inside raise (at the first's frame), 3 outside clear
    ({}, [OUT, IN, IN, IN, OUT, OUT, OUT],
     [("intrusion", "raised", 3, 3), ("intrusion", "cleared", 3, 7)]),
    ({}, [OUT, IN, OUT, IN, OUT], []),                        # flicker: never 2 in a row
    ({"risk": "low"}, [IN] * 4, []),                          # low: 5 messages and 1 s
    ({"risk": "low"}, [IN] * 12, [("intrusion", "raised", 3, 11)]),
    ({"rules": ["dwell"], "thresholds": {"dwell_seconds": 0.5}}, [IN] * 8 + [OUT] * 3,
     [("dwell", "raised", 3, 6), ("dwell", "cleared", 3, 11)]),
])
def test_radar_tracks_through_ground_fences(zone: dict[str, object],
                                            points: list[tuple[float, float]],
                                            expected: list[tuple[str, str, int, int]]) -> None:
    z = {"id": "cliff", "kind": "cliff", "risk": "high", "polygon": [
        (10.0, 10.0), (20.0, 10.0), (20.0, 20.0), (10.0, 20.0)], **zone}
    assert walk(site(zones=[z]), points) == expected


def test_radar_alarm_fields_and_track_loss() -> None:
    g = site()
    rr = rules(g)
    alarms = []
    for i in range(3):
        alarms += rr.step(at(g, 9, T0 + i * 0.1, 15.0, 12.0), T0 + i * 0.1)[1]
    (a,) = alarms
    assert (a.source, a.camera, a.zone, a.severity.value, a.frame) == (
        "radar", "r1", "cliff", "critical", 2)
    ev = a.evidence
    assert ev.boxes == [] and ev.sources == ["radar:r1"] and ev.confidence == 0.7
    assert ev.position_m == pytest.approx((15.0, 12.0), abs=1e-3) and ev.radar_track == 9
    assert rr.expire(T0 + 3.0) == []                      # silent 2.8 s < track_lost_s 3
    (c,) = rr.expire(T0 + 3.3)
    assert (c.state.value, c.id, c.evidence.reason, c.source) == (
        "cleared", a.id, "track lost", "radar")
    assert rr.tracks == {} or all(T0 + 3.3 - t.time <= 4.0 for t in rr.tracks.values())


def test_lat_lon_in_the_message_wins_over_range_and_azimuth() -> None:
    g = site()
    o = GeoOrigin(LAT0, LON0)
    rr = rules(g)
    rr.origin = o
    lat, lon = o.to_latlon([(15.0, 15.0)])[0]
    m = RadarMessage(**{**GOOD, "range_m": 1.0, "lat": lat, "lon": lon})  # type: ignore[arg-type]
    assert rr.position(m) == pytest.approx((15.0, 15.0), abs=1e-6)


# -- config ------------------------------------------------------------------------------------

BASE = """\
site: {id: s1}
cameras:
  - id: c1
    source: x.avi
    zones: [{id: z, kind: cliff, polygon: [[0, 0], [0.5, 0], [0.5, 0.5]]}]
"""


@pytest.mark.parametrize(("extra", "line", "field", "message"), [
    ("radars:\n  - id: r1\n    position: [0, 0]\n    heading_deg: 720\n", 9,
     "radars[0].heading_deg", "less than or equal to 360"),
    ("radars:\n  - id: r1\n", 7, "radars[0]", "exactly one of position"),
    ("radars:\n  - id: r1\n    position: [0, 0]\n    max_age: 3\n", 9, "radars[0].max_age",
     "Extra inputs"),
    ("ground_zones:\n  - id: g\n    kind: crowd\n    polygon: [[0, 0], [1, 0], [1, 1]]\n"
     "    rules: [crowd_density]\n", 10, "ground_zones[0].rules", "intrusion and dwell only"),
    ("ground_zones:\n  - id: g\n    kind: cliff\n    polygon: [[0, 0], [1, 1], [2, 2]]\n",
     9, "ground_zones[0].polygon", "not simple|zero area"),
])
def test_config_errors_name_file_line_field(tmp_path: Path, extra: str, line: int, field: str,
                                            message: str) -> None:
    p = tmp_path / "site.yaml"
    p.write_text(BASE + extra)
    with pytest.raises(ConfigError) as exc:
        load_config(p)
    assert exc.value.lines[0].startswith(f"{p}:{line}: {field}: "), exc.value.lines
    assert any(s in exc.value.lines[0] for s in message.split("|"))


@pytest.mark.parametrize(("extra", "line", "field", "message"), [
    ("radars:\n  - id: r1\n    position_latlon: [51.4, -0.9]\n", 8, "radars[0].position_latlon",
     "needs site.origin"),
    ("radars:\n  - {id: r1, position: [0, 0]}\n  - {id: r1, position: [1, 0]}\n", 8,
     "radars[1].id", "used twice"),
    ("radars:\n  - {id: r1, position: [0, 0]}\nground_zones:\n  - id: g\n    kind: cliff\n"
     "    polygon: [[0, 0], [1, 0], [1, 1]]\n    radars: [r2]\n", 12, "ground_zones[0].radars",
     "unknown radar"),
])
def test_ground_resolution_errors_name_file_line_field(tmp_path: Path, extra: str, line: int,
                                                       field: str, message: str) -> None:
    p = tmp_path / "site.yaml"
    p.write_text(BASE + extra)
    with pytest.raises(ConfigError) as exc:
        load_ground(load_config(p))
    assert exc.value.lines[0].startswith(f"{p}:{line}: {field}: "), exc.value.lines
    assert message in exc.value.lines[0]


def test_pets09_ground_zones_are_the_camera_zones_through_the_calibration(
        repo_root: Path) -> None:
    loaded = load_config(repo_root / "config" / "pets09_radar.yaml")
    cam = loaded.config.cameras[0]
    assert cam.calibration is not None
    size = (768, 576)
    plane = GroundPlane(to_pixels(cam.calibration.image, size, cam.calibration.coords),
                        cam.calibration.world)
    ground = load_ground(loaded)
    zones = {z.id: z for z in cam.zones}
    assert [g.config.id for g in ground.zones] == ["lawn-edge", "river-bank", "east-trail"]
    for g in ground.zones:
        z = zones[g.config.id]
        assert (g.config.kind, g.config.risk) == (z.kind, z.risk)
        projected = plane.to_world(np.asarray(to_pixels(z.polygon, size, z.coords)))
        assert np.allclose(g.fence.points, projected, atol=0.01), g.config.id


def test_sim_scan_reports_the_ground_truth_positions(shared_data: Path, repo_root: Path) -> None:
    """What the simulated radar reports lands back on PETS09's world coordinates."""
    ground = load_ground(load_config(repo_root / "config" / "pets09_radar.yaml"))
    radar = ground.radars["radar-1"]
    frames = read_world_tracks(shared_data / "mot15/PETS09-S2L1/gt/gt.txt")
    assert len(frames) == 795
    rr = RadarRules(radar, ground.zones, Schedule([], "UTC"))
    prev: dict[int, tuple[float, float, float]] = {}
    rng = np.random.default_rng(0)
    for k in (0, 100, 400):
        msgs = scan(frames[k], radar, T0, k / 7, prev, SimOptions(), rng)
        assert len(msgs) == len(frames[k]) > 0
        for m, p in zip(msgs, frames[k], strict=True):
            assert m.track_id == p.track + 100
            assert rr.position(m) == pytest.approx((p.x, p.y), abs=0.005)


# -- against the real broker -------------------------------------------------------------------


def _config(tmp_path: Path, repo_root: Path, broker: tuple[str, int], site_id: str) -> Path:
    """config/pets09_radar.yaml with a test's own site id (topics) and broker."""
    text = (repo_root / "config" / "pets09_radar.yaml").read_text()
    text = text.replace("id: pets-campus", f"id: {site_id}").replace(
        "source: ../shared/data", f"source: {repo_root.parent}/shared/data")
    text += f"mqtt: {{host: {broker[0]}, port: {broker[1]}}}\n"
    p = tmp_path / "site.yaml"
    p.write_text(text)
    return p


def sim_main(argv: list[str]) -> int:
    """``perimeter sim radar`` as the CLI parses and runs it (its own subcommand only, so
    another command's import cannot break this test)."""
    parser = argparse.ArgumentParser(prog="perimeter")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return sim_run(parser.parse_args(argv))


def test_sim_radar_cli_to_radar_worker_alarms(tmp_path: Path, repo_root: Path,
                                              shared_data: Path,
                                              mqtt_broker: tuple[str, int]) -> None:
    cfg = _config(tmp_path, repo_root, mqtt_broker, unique("pets"))
    worker = RadarWorker.from_config(load_config(cfg), metrics=RadarMetrics(CollectorRegistry()))
    got = Collector()
    worker.start(got)
    try:
        assert worker.wait_subscribed(10)
        rc: list[int | BaseException] = []

        def sim() -> None:
            try:
                rc.append(sim_main(["sim", "radar", "--config", str(cfg), "--speed", "25",
                                    "--qos", "1"]))
            except BaseException as exc:  # reported by the assertion below
                rc.append(exc)

        thread = threading.Thread(target=sim)
        thread.start()
        thread.join(timeout=30)
        assert rc == [0]
        # every episode ends: the last ones by track loss once the radar falls silent
        wait_until(lambda: sum(a.state.value == "raised" for a in got.alarms)
                 == sum(a.state.value == "cleared" for a in got.alarms) > 0, 15, "clears")
    finally:
        worker.stop()
    counts = worker.counts()
    assert counts["received"] == counts["accepted"] > 4000, counts
    alarms = got.alarms
    assert {a.source for a in alarms} == {"radar"}      # no camera tracks given: radar only
    assert {a.camera for a in alarms} == {"radar-1"}
    raised = [a for a in alarms if a.state.value == "raised" and a.kind.value == "intrusion"]
    # PETS09's people walk over the lawn and along the road: both high-risk fences alarm
    assert {"lawn-edge", "river-bank"} <= {a.zone for a in raised}
    assert len({a.id for a in raised}) == len(raised)


def test_flood_with_junk_every_drop_counted(mqtt_broker: tuple[str, int]) -> None:
    """10 000 messages, a quarter of them bad in every way: the intake stays up, every message
    is counted once under its reason, and the counts add up, in the metrics too."""
    g = site(site_id=unique("flood"), radar={"max_range_m": 100, "fov_deg": 180})
    topic = g.radars["r1"].topic
    registry = CollectorRegistry()
    worker = RadarWorker(g, schedule=Schedule([], "UTC"), host=mqtt_broker[0],
                         port=mqtt_broker[1], metrics=RadarMetrics(registry))
    got = Collector()
    worker.start(got)
    pub = Publisher(*mqtt_broker)
    sent: dict[str, int] = {}
    kinds = ["accepted"] * 30 + ["malformed_json", "malformed_field", "malformed_big",
                                 "unknown_radar", "late", "out_of_coverage", "dup_ooo", "junk"]
    try:
        assert worker.wait_subscribed(10)
        n, track = 0, 0
        while n < 10_000:
            kind = kinds[n % len(kinds)]
            now = time.time()
            good = at(g, track, now, 3.0, 30.0)  # outside the fence: no alarms needed here
            track += 1
            if kind == "accepted":
                payloads, outcomes = [good.to_json()], ["accepted"]
            elif kind == "malformed_json":
                payloads, outcomes = ['{"radar_id": "r1", "track_id": '], ["malformed"]
            elif kind == "malformed_field":
                payloads, outcomes = [json.dumps({**GOOD, "range_m": None})], ["malformed"]
            elif kind == "malformed_big":
                payloads, outcomes = [b"{" + b" " * 5000 + b"}"], ["malformed"]
            elif kind == "junk":
                payloads, outcomes = [bytes(range(256))], ["malformed"]
            elif kind == "unknown_radar":
                payloads = [good.model_copy(update={"radar_id": "r9"}).to_json()]
                outcomes = ["unknown_radar"]
            elif kind == "late":
                payloads, outcomes = [good.model_copy(update={"time": now - 30}).to_json()], [
                    "late"]
            elif kind == "out_of_coverage":
                payloads = [good.model_copy(update={"range_m": 150.0}).to_json()]
                outcomes = ["out_of_coverage"]
            else:  # a track's message, the same again, then an older one
                payloads = [good.to_json(), good.to_json(),
                            good.model_copy(update={"time": now - 0.5}).to_json()]
                outcomes = ["accepted", "duplicate", "out_of_order"]
            for p, o in zip(payloads[:10_000 - n], outcomes, strict=False):
                pub.send(topic, p)
                sent[o] = sent.get(o, 0) + 1
                n += 1
            if n % 500 < 3:  # let the subscriber keep up: the broker must not shed messages
                wait_until(lambda n=n: worker.counts()["received"] >= n - 3, 20, "the intake")
        wait_until(lambda: worker.counts()["received"] == 10_000 and worker.idle(), 20, "all")
        # alive afterwards: a person walking into the fence still raises an alarm
        now = time.time()
        for i in range(3):
            pub.send(topic, at(g, 999_999, now + i * 0.01, 15.0, 15.0).to_json())
        wait_until(lambda: any(a.track_id == 999_999 for a in got.alarms), 10, "alarm")
    finally:
        pub.close()
        worker.stop()
    counts = worker.counts()
    sent["accepted"] += 3
    assert {k: v for k, v in counts.items() if k != "received"} == sent
    assert counts["received"] == sum(sent.values()) == 10_003
    for outcome, n_sent in sent.items():
        assert registry.get_sample_value("perimeter_radar_messages_total",
                                         {"radar": "r1", "outcome": outcome}) == n_sent, outcome


def test_committed_radar_message_schema(repo_root: Path) -> None:
    """Integrators build against zones/radar.schema.json: it must match the model."""
    committed = json.loads((repo_root / "zones" / "radar.schema.json").read_text())
    assert committed == RadarMessage.model_json_schema(by_alias=True), (
        "the radar message model changed: regenerate zones/radar.schema.json")
