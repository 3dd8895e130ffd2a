"""No bad message costs a good one (issue 10, rows 1, 9 and 11), through the real intake: a
real Mosquitto, the central's MQTT intake, gate, partition streams and incident worker, and a
real Redis. Every valid alarm is stored, every hostile message is counted by reason and
dead-lettered, and the dead-letter stream stays within its byte budget."""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import redis

from central.config import CentralConfig
from central.incidents.store import RedisStore
from central.intake.validate import MAX_PAYLOAD
from central.runtime import Central
from tests.support.central import registry
from tests.support.waiting import wait_until
from wire import topics
from wire.client import Broker
from zones.alarm import Alarm, AlarmKind, AlarmState, Evidence
from zones.geometry import Risk, ZoneKind

CAMERAS = ["cam-0", "cam-1", "cam-2"]
ZONES = [f"z{i}" for i in range(8)]
CONFIG = CentralConfig.model_validate({"central": {"merge_window_s": 600}})

Message = tuple[bytes, str, str | None]  # payload, topic, expected refusal code (None: valid)


def valid(site: str, i: int, rng: random.Random) -> tuple[Alarm, str]:
    cam, zone = rng.choice(CAMERAS), rng.choice(ZONES)
    now = time.time()
    a = Alarm.make(kind=AlarmKind.INTRUSION, state=AlarmState.RAISED, camera=cam, zone=zone,
                   zone_kind=ZoneKind.WATER, risk=Risk.HIGH, key=f"track:{i}",
                   first_frame=1, first_time=now, frame=2, time=now, track_id=i,
                   track_ids=[i], profile="default",
                   evidence=Evidence(boxes=[(1.0, 2.0, 30.0, 80.0)], scores=[0.9], count=1))
    return a, topics.alarm(site, cam, zone, a.kind.value)


def hostile(site: str, i: int, rng: random.Random) -> Message:
    """One generated hostile message and the reason it must be refused for."""
    a, tp = valid(site, 1_000_000 + i, rng)
    d: dict[str, Any] = json.loads(a.to_json())

    def raw(field: str, literal: str) -> bytes:
        return json.dumps({**d, field: "@@"}).encode().replace(b'"@@"', literal.encode())

    def field_of(**kw: Any) -> bytes:
        return json.dumps({**d, **kw}).encode()

    depth = rng.randint(2_000, 25_000)
    junk = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 300)))
    wrong = rng.choice(["seven", [1, 2], {"a": 1}, None, "", -1.5])
    cases: list[Callable[[], Message]] = [
        lambda: (raw(rng.choice(["frame", "first_frame", "track_id"]),
                     "9" * rng.randint(4_301, 20_000)), tp, "bad_json"),  # ValueError
        lambda: (raw("frame", "9" * rng.randint(17, 4_300)), tp, "invalid"),
        lambda: (b'{"evidence": ' + b"[" * depth + b"]" * depth + b"}", tp, "bad_json"),
        lambda: (raw(rng.choice(["time", "first_time"]),
                     rng.choice(["NaN", "Infinity", "-Infinity", "1e300", "-1"])), tp,
                 "invalid"),
        lambda: (field_of(**{rng.choice(["frame", "kind", "state", "zone_kind", "risk",
                                         "evidence"]): wrong}), tp, "invalid"),
        lambda: (field_of(profile="p" * rng.randint(200, 60_000)), tp, "invalid"),
        lambda: (field_of(profile="p" * (MAX_PAYLOAD + rng.randint(1, 50_000))), tp,
                 "too_large"),
        lambda: (b'{"schema": "perimeter.alarm/1", "zone": "\xff\xfe\xfd"}', tp, "bad_json"),
        lambda: (b"\x00\xff" + junk, tp, "bad_json"),
        lambda: (field_of(event_id=f"{d['id']}:cleared"), tp, "invalid"),
        lambda: (field_of(schema="perimeter.alarm/0"), tp, "bad_schema"),
        lambda: (field_of(surprise=True), tp, "invalid"),
        lambda: (a.to_json().encode(), f"{topics.PREFIX}/{site}/alarm/{a.camera}", "bad_topic"),
        lambda: (a.to_json().encode(), topics.alarm(site, "cam-x", a.zone, "intrusion"),
                 "topic_mismatch"),
        lambda: (field_of(camera="ghost"), topics.alarm(site, "ghost", a.zone, "intrusion"),
                 "unknown_camera"),
        lambda: (field_of(zone="moon"), topics.alarm(site, a.camera, "moon", "intrusion"),
                 "unknown_zone"),
    ]
    return rng.choice(cases)()


class Publisher:
    """A plain MQTT client standing in for edges good and bad."""

    def __init__(self, host: str, port: int, client_id: str):
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
        self.client.connect(host, port)
        self.client.loop_start()

    def send(self, messages: list[tuple[bytes, str]], *, retain: bool = False) -> None:
        infos = [self.client.publish(tp, payload, qos=1, retain=retain)
                 for payload, tp in messages]
        for info in infos:
            info.wait_for_publish(10)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def start_central(host: str, port: int, redis_url: str, ns: str, site: str) -> Central:
    central = Central(CONFIG, redis_url, Broker(host, port), ns=ns, client_id=f"c-{site}",
                      registry=registry(site, ZONES, CAMERAS))
    central.intake.topic = topics.alarm_filter(site)
    central.start()
    return central


@pytest.fixture
def site(redis_ns: str) -> str:
    return redis_ns.replace(":", "-")[-30:]


def stored_alarm_ids(r: redis.Redis, ns: str) -> set[str]:
    return {aid for v in r.hvals(f"{ns}:incidents") for aid in json.loads(v)["alarms"]}


def rejected(central: Central) -> Counter[str]:
    return Counter({k.split(":", 1)[1]: v for k, v in central.aggregator.counts.items()
                    if k.startswith("rejected:")})


def handled(central: Central) -> int:
    return central.aggregator.counts["accepted"] + sum(rejected(central).values())


def test_200_valid_and_one_poison_in_one_batch_all_200_stored(
        mqtt_broker: tuple[str, int], redis_url: str, redis_ns: str, site: str) -> None:
    """The probe's case: a persistent session fills while the central is away, then arrives
    in one burst (intake batches of up to 256) with a poison message in the middle."""
    host, port = mqtt_broker
    central = start_central(host, port, redis_url, redis_ns, site)
    central.stop()  # its session stays: the broker queues what follows
    rng = random.Random(1)
    good = [valid(site, i, rng) for i in range(200)]
    poison = [(b'{"schema":"perimeter.alarm/1","frame":' + b"9" * 5000 + b"}", good[0][1]),
              (b'{"evidence":' + b"[" * 30_000 + b"]" * 30_000 + b"}", good[0][1])]
    msgs = [(a.to_json().encode(), tp) for a, tp in good[:100]] + poison + [
        (a.to_json().encode(), tp) for a, tp in good[100:]]
    pub = Publisher(host, port, f"pub-{site}")
    pub.send(msgs)
    pub.close()
    central = start_central(host, port, redis_url, redis_ns, site)
    try:
        want = {a.id for a, _ in good}
        wait_until(lambda: stored_alarm_ids(central.redis, redis_ns) == want, 20, "200 stored")
        assert central.aggregator.counts["accepted"] == 200
        assert rejected(central) == {"bad_json": 2}
        assert central.redis.xlen(central.store.deadletter_key) == 2
    finally:
        central.stop()


def test_fuzz_thousands_of_hostile_messages_mixed_with_valid_alarms(
        mqtt_broker: tuple[str, int], redis_url: str, redis_ns: str, site: str) -> None:
    """3000 generated hostile payloads (huge ints, deep nesting, wrong types, NaN/Inf, huge
    strings, bad UTF-8, wrong topics, unknown names) shuffled among 1000 valid alarms: every
    valid one is stored, every hostile one is counted by its reason and dead-lettered."""
    host, port = mqtt_broker
    rng = random.Random(20_240_610)
    good = [valid(site, i, rng) for i in range(1000)]
    bad = [hostile(site, i, rng) for i in range(3000)]
    mixed: list[Message] = [(a.to_json().encode(), tp, None) for a, tp in good] + bad
    rng.shuffle(mixed)
    expected = Counter(code for _, _, code in bad if code is not None)
    central = start_central(host, port, redis_url, redis_ns, site)
    pub = Publisher(host, port, f"fuzz-{site}")
    try:
        sent = 0
        for start in range(0, len(mixed), 250):  # paced: the broker's queue never overflows
            chunk = mixed[start:start + 250]
            pub.send([(payload, tp) for payload, tp, _ in chunk])
            sent += len(chunk)
            wait_until(lambda n=sent: handled(central) >= n, 30,
                       f"{sent} handled")
        want = {a.id for a, _ in good}
        wait_until(lambda: stored_alarm_ids(central.redis, redis_ns) == want, 20, "all stored")
        assert rejected(central) == expected
        assert central.aggregator.counts["accepted"] == len(good)
        assert central.redis.xlen(central.store.deadletter_key) == len(bad)
        letters = central.redis.xrange(central.store.deadletter_key, count=5000)
        assert Counter(f[b"reason"].decode().split(":")[0] for _, f in letters) == expected
    finally:
        pub.close()
        central.stop()
    print(f"\n[fuzz] {len(good)} valid stored, {len(bad)} hostile refused: "
          f"{dict(sorted(expected.items()))}")


def test_a_retained_alarm_is_refused_and_counted(
        mqtt_broker: tuple[str, int], redis_url: str, redis_ns: str, site: str) -> None:
    """Row 11: a retained alarm (planted, or left behind) is replayed by the broker to every
    new subscription; it is never news, so it is refused rather than opening an incident."""
    host, port = mqtt_broker
    a, tp = valid(site, 7, random.Random(7))
    pub = Publisher(host, port, f"ret-{site}")
    pub.send([(a.to_json().encode(), tp)], retain=True)
    central = start_central(host, port, redis_url, redis_ns, site)
    try:
        wait_until(lambda: rejected(central)["retained"] == 1, 10, "the retained one refused")
        assert central.aggregator.counts["accepted"] == 0
        assert central.redis.hlen(f"{redis_ns}:incidents") == 0
        (_, fields), = central.redis.xrange(central.store.deadletter_key)
        assert fields[b"reason"].startswith(b"retained") and fields[b"topic"] == tp.encode()
    finally:
        pub.send([(b"", tp)], retain=True)  # clear it from the broker
        pub.close()
        central.stop()


def test_the_dead_letter_stream_keeps_within_its_byte_budget(
        redis_url: str, redis_ns: str) -> None:
    """Row 9: each dead letter keeps the first 4 KiB of the payload (with its size and hash),
    at most 10,000 entries: a flood of 60 KiB garbage costs about 5 KiB per entry, not 64."""
    client = redis.Redis.from_url(redis_url)
    store = RedisStore(client, ns=redis_ns)
    garbage = [bytes([65 + i % 26]) * 60_000 for i in range(300)]
    for g in garbage:
        store.dead_letter(g, "bad_json: x" * 500, "t/" * 1000)
    per_entry = int(client.memory_usage(store.deadletter_key) or 0) / 300
    assert per_entry < 6 * 1024, per_entry
    (_, fields), = client.xrevrange(store.deadletter_key, count=1)
    assert len(fields[b"payload"]) == 4096 and fields[b"size"] == b"60000"
    assert len(fields[b"reason"]) <= 500 and len(fields[b"topic"]) <= 256
    assert fields[b"sha256"].decode() == hashlib.sha256(garbage[-1]).hexdigest()
    small = RedisStore(client, ns=f"{redis_ns}:small", deadletter_max_entries=100)
    for i in range(1000):
        small.dead_letter(b"x", f"bad_json: {i}")
    assert client.xlen(small.deadletter_key) <= 200  # MAXLEN ~ trims whole nodes of 100
    client.close()


def test_a_bug_in_checking_or_storing_loses_nothing(
        mqtt_broker: tuple[str, int], redis_url: str, redis_ns: str, site: str) -> None:
    """The last line of defence, below the gate: if checking a batch raises (a bug), only the
    message that raises is refused; if storing raises anything but a Redis error, the
    checked messages are dead-lettered, never dropped uncounted."""
    from central.intake.mqtt import Incoming, MqttIntake
    from tests.support.central import AggregatorSink, CheckedAggregator

    class Buggy(AggregatorSink):
        store_fails = 1

        def prepare(self, items: list[Incoming]) -> list[Any]:
            if any(b"trip-check" in i.payload for i in items):
                raise KeyError("a bug in checking")
            return super().prepare(items)

        def store(self, prepared: list[Any]) -> object:
            if any(item.payload.count(b"trip-store") for _, item in prepared) \
                    and self.store_fails:
                self.store_fails -= 1
                raise TypeError("a bug in storing")
            return super().store(prepared)

    host, port = mqtt_broker
    r = redis.Redis.from_url(redis_url)
    agg = CheckedAggregator(RedisStore(r, ns=redis_ns), registry=registry(site, ZONES, CAMERAS))
    intake = MqttIntake(Buggy(agg), Broker(host, port), client_id=f"bug-{site}")
    intake.topic = topics.alarm_filter(site)
    intake.start()
    rng = random.Random(3)
    good = [valid(site, i, rng) for i in range(20)]
    tripped = [valid(site, 100 + i, rng) for i in range(2)]
    check_bomb = json.loads(tripped[0][0].to_json()) | {"profile": "trip-check"}
    store_bomb = json.loads(tripped[1][0].to_json()) | {"profile": "trip-store"}
    pub = Publisher(host, port, f"bugpub-{site}")
    try:
        pub.send([(a.to_json().encode(), tp) for a, tp in good[:10]]
                 + [(json.dumps(check_bomb).encode(), tripped[0][1])]
                 + [(a.to_json().encode(), tp) for a, tp in good[10:]])
        wait_until(lambda: agg.counts["accepted"] == 20, 10, "the 20 good ones")
        assert agg.counts["rejected:error"] == 1
        pub.send([(json.dumps(store_bomb).encode(), tripped[1][1])])
        wait_until(lambda: agg.counts["rejected:error"] == 2, 10, "the unstored one refused")
        reasons = [f[b"reason"] for _, f in r.xrange(agg.store.deadletter_key)]
        assert reasons == [b"error: check failed", b"error: store failed"]
    finally:
        pub.close()
        intake.stop()
        r.close()
