"""The aggregator against a real Redis and a real broker: merge, persist, restart, reject,
and the HTTP API served on loopback."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from central.incidents.store import RedisStore
from tests.support.alarms import alarm
from tests.support.api import accounts, call, serving
from tests.support.central import AggregatorSink, CheckedAggregator
from tests.support.waiting import wait_until
from wire import topics
from wire.client import Broker
from zones.alarm import AlarmState


def topic_for(camera: str = "cam1", zone: str = "bank") -> str:
    return topics.alarm("park", camera, zone, "intrusion")


@pytest.fixture
def agg(redis_url: str, redis_ns: str) -> Iterator[CheckedAggregator]:
    client = redis.Redis.from_url(redis_url)
    yield CheckedAggregator(RedisStore(client, ns=redis_ns), known_zones={"bank", "cliff"})
    client.close()


def test_merge_persist_and_rebuild_after_restart(agg: CheckedAggregator, redis_url: str,
                                                 redis_ns: str) -> None:
    a1, a2 = alarm("bank", 0, camera="c1"), alarm("bank", 20, camera="c2", track=7)
    for a in (a1, a2, a1):  # the repeat is an at-least-once redelivery
        assert agg.ingest(a.to_json().encode(), topic_for(a.camera)).accepted
    clear = alarm("bank", 30, camera="c1", state=AlarmState.CLEARED, first=0)
    agg.ingest(clear.to_json().encode(), topic_for("c1"))
    assert agg.counts["accepted"] == 3 and agg.counts["duplicate"] == 1
    (inc,) = agg.incidents()
    agg.acknowledge(inc.id, "wang")

    # A new process: everything comes back from Redis.
    fresh = CheckedAggregator(RedisStore(redis.Redis.from_url(redis_url), ns=redis_ns))
    assert fresh.restore() == 1
    (back,) = fresh.incidents()
    assert back.to_dict() == inc.to_dict()
    assert back.status.value == "acknowledged" and back.cameras == {"c1", "c2"}
    # Redelivery after the restart is still recognised as a duplicate.
    assert fresh.ingest(a2.to_json().encode(), topic_for("c2")).reason == "duplicate"
    fresh.resolve(back.id, "li", "visitor escorted away from the bank")
    events = fresh.store.events(back.id)
    assert [e["type"] for e in events] == ["alarm", "alarm", "alarm", "acknowledged",
                                           "resolved"]
    assert events[-1]["data"] == {"by": "li", "note": "visitor escorted away from the bank"}


def hostile_messages() -> Iterator[tuple[bytes, str, str]]:
    good = json.loads(alarm("bank", 0).to_json())
    cases: list[tuple[bytes, str, str]] = [
        (b"{not json", topic_for(), "bad_json"),
        (b"\xff\xfe\x00", topic_for(), "bad_json"),
        (b"[1, 2]", topic_for(), "bad_json"),
        (json.dumps({**good, "schema": "other/9"}).encode(), topic_for(), "bad_schema"),
        (json.dumps({**good, "frame": "seven"}).encode(), topic_for(), "invalid"),
        (json.dumps({**good, "kind": "teleport"}).encode(), topic_for(), "invalid"),
        (json.dumps({**good, "extra": 1}).encode(), topic_for(), "invalid"),
        (json.dumps({**good, "zone": "moon"}).encode(), topic_for(zone="moon"), "unknown_zone"),
        (b"x" * 200_000, topic_for(), "too_large"),
        (json.dumps(good).encode(), "perimeter/v1/park/status", "bad_topic"),
    ]
    for i in range(10_000):
        yield cases[i % len(cases)]


def test_ten_thousand_hostile_messages_are_counted_and_dead_lettered(
        agg: CheckedAggregator) -> None:
    expected: dict[str, int] = {}
    for payload, topic, reason in hostile_messages():
        res = agg.ingest(payload, topic)
        assert not res.accepted and res.reason.startswith(reason), (reason, res.reason)
        expected[f"rejected:{reason}"] = expected.get(f"rejected:{reason}", 0) + 1
    assert {k: v for k, v in agg.counts.items() if k.startswith("rejected")} == expected
    assert agg.store.r.xlen(agg.store.deadletter_key) == 10_000
    _, fields = agg.store.r.xrevrange(agg.store.deadletter_key, count=1)[0]
    assert fields[b"reason"].startswith(b"bad_topic")
    # Still alive and still accepting real alarms.
    good = alarm("bank", 0)
    assert agg.ingest(good.to_json().encode(), topic_for()).accepted


def test_alarms_from_an_edge_sink_reach_incidents_over_mqtt(
        agg: CheckedAggregator, mqtt_broker: tuple[str, int], redis_ns: str) -> None:
    from central.intake.mqtt import MqttIntake
    from edge.uplink.sink import MqttSink

    host, port = mqtt_broker
    site = redis_ns.replace(":", "-")[-40:]
    intake = MqttIntake(AggregatorSink(agg), Broker(host, port), client_id=f"central-{site}")
    intake.topic = topics.alarm_filter(site)
    intake.start()
    sink = MqttSink(host, port, edge_id=f"edge-{site}", site=site)
    sink.open()
    try:
        for a in (alarm("bank", 0, camera="c1"), alarm("bank", 3, camera="c2", track=4)):
            sink.emit(a)
        wait_until(lambda: agg.counts["accepted"] >= 2, 10, "both alarms accepted")
    finally:
        sink.close()
        intake.stop()
    (inc,) = agg.incidents()
    assert inc.site == site and inc.cameras == {"c1", "c2"}
    assert agg.store.r.hexists(agg.store.incidents_key, inc.id)


@pytest.fixture
def api(agg: CheckedAggregator, redis_ns: str) -> Iterator[str]:
    from central.api import create_app

    with serving(create_app(agg, accounts(agg.store.r, redis_ns))) as url:
        yield url


def test_http_api_closes_the_loop(agg: CheckedAggregator, api: str) -> None:
    agg.ingest(alarm("bank", 0).to_json().encode(), topic_for())
    assert call(f"{api}/incidents", token=None)[0] == 401
    assert call(f"{api}/incidents", token="wrong-token-wrong-token")[0] == 401
    assert call(f"{api}/health", token=None) == (200, {"status": "ok"})
    status, body = call(f"{api}/health")  # signed in: the counts too
    assert status == 200 and body["redis"] is True and body["incidents_open"] == 1
    status, items = call(f"{api}/incidents?status=raised&zone=bank")
    assert status == 200 and len(items) == 1
    iid = items[0]["id"]
    assert call(f"{api}/incidents/nope")[0] == 404
    assert call(f"{api}/incidents/{iid}/acknowledge", "POST")[1]["status"] == "acknowledged"
    assert call(f"{api}/incidents/{iid}/resolve", "POST", {"note": ""})[0] == 422
    status, done = call(f"{api}/incidents/{iid}/resolve", "POST",
                        {"note": "visitor back behind the rail"})
    assert status == 200 and done["status"] == "resolved" and done["resolved_by"] == "key:tests"
    assert call(f"{api}/incidents/{iid}/resolve", "POST", {"note": "x"})[0] == 409
    status, one = call(f"{api}/incidents/{iid}")
    assert [e["type"] for e in one["events"]] == ["alarm", "acknowledged", "resolved"]
    assert call(f"{api}/stats?days=400000")[0] == 422  # out of range is refused, not clamped
    status, stats = call(f"{api}/stats?days=366")
    assert status == 200 and stats["days"] == 366
    assert call(f"{api}/openapi.json", token=None)[0] == 401
    status, spec = call(f"{api}/openapi.json")
    assert status == 200 and "/incidents/{incident_id}/resolve" in spec["paths"]


def test_redis_restart_loses_no_incident_and_needs_no_central_restart(
        redis_private: Any) -> None:
    client = redis.Redis.from_url(redis_private.url, socket_timeout=2, socket_connect_timeout=2)
    agg = CheckedAggregator(RedisStore(client, ns="fault"), known_zones={"bank", "cliff"})
    assert agg.ingest(alarm("bank", 0).to_json().encode(), topic_for()).accepted
    redis_private.stop()  # no persistence: it comes back empty
    result: list[Any] = []
    worker = threading.Thread(target=lambda: result.append(
        agg.ingest(alarm("cliff", 5, track=3).to_json().encode(), topic_for(zone="cliff"))))
    worker.start()  # blocks, retrying, while Redis is down
    time.sleep(0.5)  # let it fail at least once before Redis returns (this is the fault)
    redis_private.start()
    worker.join(timeout=30)
    assert result and result[0].accepted
    stored = {json.loads(v)["zone"] for v in client.hgetall("fault:incidents").values()}
    assert stored == {"bank", "cliff"}, "the incident stored before the restart was lost"
    fresh = CheckedAggregator(RedisStore(client, ns="fault"))
    assert fresh.restore() == 2
