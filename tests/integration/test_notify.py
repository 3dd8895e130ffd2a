"""Governance-centre notifiers against a real Redis, a real HTTP receiver and a real MQTT broker.

The receiver is a stdlib ``ThreadingHTTPServer`` on a loopback port that checks every
signature and processes each ``Idempotency-Key`` once (what a real centre does); it also keeps
the raw arrivals, so a test can tell retries and duplicates apart from processed events.
"""

from __future__ import annotations

import email.utils
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import redis
from paho.mqtt.enums import CallbackAPIVersion
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from central.config import NotifierConfig
from central.incidents.book import IncidentBook
from central.notify.mqtt import MqttBridgeNotifier
from central.notify.notifiers import build_notifiers
from central.notify.outbox import GROUP
from central.notify.request import idempotency_key_for, retry_after_s, sign, verify_signature
from central.notify.webhook import WebhookNotifier
from central.plans import Notification, governance_payload
from common.net import free_port, port_open
from tests.support.alarms import alarm
from tests.support.services import MosquittoBroker, RedisServer
from tests.support.waiting import wait_until
from wire.client import Broker

SECRET = b"centre-shared-secret"




# -- the governance centre's receiving end -----------------------------------------------------


@dataclass
class Arrival:
    key: str
    status: int
    body: bytes
    timestamp: str
    signature: str
    content_type: str
    at: float = 0.0  # time.monotonic() on arrival


class Receiver:
    """A webhook endpoint: verifies signatures, dedupes by Idempotency-Key, records arrivals.

    ``status`` decides the answer for a correctly signed request (an int, or a function of the
    parsed payload and the key's raw arrival count so far). A key is processed once, on its
    first 2xx; a repeat of a processed key is answered 200 and not processed again.
    """

    def __init__(self, secret: bytes, port: int | None = None):
        self.secret = secret
        self.port = port if port is not None else free_port()
        self.status: int | Callable[[dict[str, Any], int], int] = 200
        self.lock = threading.Lock()
        self.arrivals: list[Arrival] = []
        self.raw: Counter[str] = Counter()  # every correctly signed request, by key
        self.processed: dict[str, dict[str, Any]] = {}  # key -> payload, once
        self.process_count: Counter[str] = Counter()
        self.duplicates: Counter[str] = Counter()
        self.bad_signatures = 0
        self.connections: set[tuple[str, int]] = set()  # client (address, port) seen
        self.retry_after: str | None = None  # sent with every non-2xx answer when set
        self.server: ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/governance/alarms"

    def _handle(self, handler: BaseHTTPRequestHandler) -> int:
        body = handler.rfile.read(int(handler.headers.get("Content-Length", "0")))
        key = handler.headers.get("Idempotency-Key", "")
        ts = handler.headers.get("X-Perimeter-Timestamp", "")
        sig = handler.headers.get("X-Perimeter-Signature", "")
        ctype = handler.headers.get("Content-Type", "")
        if not verify_signature(self.secret, ts, key, body, sig):
            with self.lock:
                self.bad_signatures += 1
            return 401
        payload = json.loads(body.decode("utf-8"))
        with self.lock:
            self.raw[key] += 1
            if key in self.processed:
                self.duplicates[key] += 1
                status = 200
            else:
                status = (self.status if isinstance(self.status, int)
                          else self.status(payload, self.raw[key]))
                if 200 <= status < 300:
                    self.processed[key] = payload
                    self.process_count[key] += 1
            self.arrivals.append(Arrival(key, status, body, ts, sig, ctype, time.monotonic()))
        return status

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a real centre's server

            def do_POST(self) -> None:
                with receiver.lock:
                    receiver.connections.add(self.client_address[:2])
                status = receiver._handle(self)
                reply = b'{"ok":true}' if status < 300 else b'{"error":"refused"}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                if status >= 300 and receiver.retry_after is not None:
                    self.send_header("Retry-After", receiver.retry_after)
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        if self.thread is not None:
            self.thread.join(5)
            self.thread = None

    def count_processed(self) -> int:
        with self.lock:
            return len(self.processed)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver(SECRET)
    rec.start()
    try:
        yield rec
    finally:
        rec.stop()


@pytest.fixture
def rclient(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def webhook(rclient: redis.Redis, ns: str, url: str, **kw: Any) -> WebhookNotifier:
    opts: dict[str, Any] = {"timeout_s": 2.0, "backoff_base_s": 0.05, "backoff_max_s": 0.2,
                            "poll_ms": 200}
    opts.update(kw)
    return WebhookNotifier("centre", url, SECRET, rclient, ns=ns, **opts)


def incident_payloads(n: int) -> list[Notification]:
    """Real planner payloads (GB/T 28181 codes, Chinese zone names) for ``n`` incidents."""
    book = IncidentBook()
    out = []
    for i in range(n):
        applied = book.apply(alarm(f"悬崖-{i}", float(i), track=i), "景区", f"inc{i}",
                             arrived=float(i))
        assert applied is not None
        out.append(Notification("centre", applied.incident.id,
                                governance_payload(applied.incident, 0, "cliff-high")))
    return out


# -- signature scheme --------------------------------------------------------------------------


def test_signature_scheme() -> None:
    body = '{"zone":"悬崖"}'.encode()
    ts = str(int(time.time()))
    key = "inc-1:centre:0123456789abcdef"
    header = sign(SECRET, ts, key, body)
    expected = hmac.new(SECRET, f"{ts}.{key}.".encode() + body, hashlib.sha256).hexdigest()
    assert header == f"v2={expected}"
    assert verify_signature(SECRET, ts, key, body, header)
    assert verify_signature(SECRET, int(ts), key, body, f" {header} ")
    assert not verify_signature(SECRET, ts, key, body + b" ", header)  # body changed
    assert not verify_signature(SECRET, ts, key + "x", body, header)  # key changed: a replay
    assert not verify_signature(SECRET, ts, "", body, header)
    assert not verify_signature(b"other", ts, key, body, header)  # wrong secret
    assert not verify_signature(SECRET, str(int(ts) + 1), key, body, header)  # timestamp
    assert not verify_signature(SECRET, ts, key, body, expected)  # no "v2=" prefix
    assert not verify_signature(SECRET, "12a", key, body, header)
    assert not verify_signature(SECRET, ts, key, body, "v2=ü")
    # the first version (timestamp and body only) is no longer accepted
    v1 = "sha256=" + hmac.new(SECRET, f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    assert not verify_signature(SECRET, ts, key, body, v1)
    old = str(int(time.time()) - 3600)
    assert not verify_signature(SECRET, old, key, body, sign(SECRET, old, key, body))  # window
    assert verify_signature(SECRET, old, key, body, sign(SECRET, old, key, body),
                            max_age_s=None)


@pytest.mark.parametrize(("value", "expected"), [
    (None, None), ("7", 7.0), (" 0.5 ", 0.5), ("-3", 0.0), ("soon", None),
    ("Thu, 01 Jan 1970 00:00:30 GMT", 0.0),  # already past (seen at 60 s): now
    ("Thu, 01 Jan 1970 00:02:00 GMT", 60.0),  # 120 s after the epoch, seen at 60
    ("Thu, 01 Jan 1970 00:02:00", None),  # no zone: not an HTTP date
])
def test_retry_after_takes_seconds_and_http_dates(value: str | None,
                                                  expected: float | None) -> None:
    assert retry_after_s(value, now=60.0) == expected


def test_idempotency_key_is_stable_per_content() -> None:
    n1, n2 = incident_payloads(2)
    assert idempotency_key_for(n1) == idempotency_key_for(Notification(**vars(n1)))
    assert idempotency_key_for(n1) != idempotency_key_for(n2)
    assert idempotency_key_for(n1).startswith("inc0:centre:")


# -- (a) happy path ----------------------------------------------------------------------------


def test_happy_path_20_signed_deliveries(rclient: redis.Redis, redis_ns: str,
                                         receiver: Receiver) -> None:
    notifier = webhook(rclient, redis_ns, receiver.url)
    notes = incident_payloads(20)
    for n in notes:
        notifier.send(n)
    keys = [idempotency_key_for(n) for n in notes]
    assert notifier.backlog() == 20
    lags: list[tuple[str, float]] = []
    notifier.on_delivered = lambda nid, lag: lags.append((nid, lag))
    notifier.start()
    try:
        wait_until(lambda: receiver.count_processed() == 20, 10, "20 deliveries")
        wait_until(lambda: notifier.backlog() == 0, 5, "an empty outbox")
    finally:
        assert notifier.stop()
    assert receiver.bad_signatures == 0
    assert set(receiver.processed) == set(keys)
    assert all(receiver.raw[k] == 1 for k in keys)
    # one pooled keep-alive connection carried the burst, not one TCP connection per POST
    assert len(receiver.connections) == 1, receiver.connections
    for arrival in receiver.arrivals:
        assert arrival.content_type == "application/json"
        base = f"{arrival.timestamp}.{arrival.key}.".encode() + arrival.body
        assert arrival.signature == "v2=" + hmac.new(SECRET, base, hashlib.sha256).hexdigest()
        assert abs(int(arrival.timestamp) - time.time()) < 60
    # compact UTF-8 JSON, exactly the planner's payload
    first = next(a for a in receiver.arrivals if a.key == keys[0])
    assert "悬崖-0".encode() in first.body and b", " not in first.body
    assert json.loads(first.body) == notes[0].payload
    assert receiver.processed[keys[0]]["gb28181_alarm_types"] == [6]
    assert [a.key for a in receiver.arrivals] == keys  # one sender: enqueue order
    assert notifier.delivered == 20 and notifier.retries == 0 and notifier.dead == 0
    assert rclient.xpending(notifier.stream_key, GROUP)["pending"] == 0
    assert len(lags) == 20 and all(nid == notifier.notifier_id and 0 <= lag < 10
                                   for nid, lag in lags)


# -- (b) the fault test: the governance endpoint is down for 30 s ------------------------------


def test_centre_down_30s_then_everything_delivered_once(rclient: redis.Redis, redis_ns: str,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    down_s, backoff_max = 30.0, 2.0
    receiver = Receiver(SECRET)  # its port is known, nothing listens there yet
    assert not port_open("127.0.0.1", receiver.port)
    notifier = webhook(rclient, redis_ns, receiver.url, backoff_base_s=0.2,
                       backoff_max_s=backoff_max, poll_ms=500)
    notifier.start()
    keys = []
    t0 = time.monotonic()
    try:
        for i in range(10):  # spread over the outage; the outage itself is a real wait
            time.sleep(max(0.0, t0 + i * down_s / 10 - time.monotonic()))
            key = f"outage-{i}"
            notifier.enqueue({"incident": f"inc{i}", "seq": i}, key)
            keys.append(key)
        time.sleep(max(0.0, t0 + down_s - time.monotonic()))
        assert notifier.delivered == 0 and notifier.retries >= 10
        # one probe at a time on its backoff (1-2 s once capped), not a flood of all ten
        assert notifier.attempts <= down_s / (backoff_max / 2) + 10
        assert notifier.backlog() == 10 and notifier.running
        retries_during_outage = notifier.retries
        receiver.start()
        try:
            recovery_s = wait_until(lambda: receiver.count_processed() == 10, 15,
                                    "all 10 notifications after the centre came back")
            wait_until(lambda: notifier.backlog() == 0, 5, "an empty outbox")
        finally:
            receiver.stop()
    finally:
        assert notifier.stop()
    assert set(receiver.processed) == set(keys)
    assert all(receiver.process_count[k] == 1 for k in keys)  # none processed twice
    assert receiver.bad_signatures == 0
    # backoff capped at 2 s: the first retry after the centre is back comes within that,
    # then the whole backlog is released at once
    assert recovery_s < backoff_max + 2.0
    assert [a.key for a in receiver.arrivals] == keys  # in enqueue order
    with capsys.disabled():
        print(f"\n[fault test] outage {down_s:.0f}s, {retries_during_outage} failed probes "
              f"during it, all 10 processed {recovery_s:.2f}s after the centre came back; "
              f"raw arrivals per key: {dict(receiver.raw)}; duplicates answered: "
              f"{sum(receiver.duplicates.values())}; arrival order: "
              f"{[a.key for a in receiver.arrivals]}")


# -- (c) a crashed sender's pending entries ----------------------------------------------------


@pytest.mark.parametrize(("consumer_b", "claim_idle_s"), [("central-1", 60.0),
                                                          ("central-2", 0.0)],
                         ids=["same-consumer", "other-consumer-xautoclaim"])
def test_pending_entries_of_a_crashed_sender_are_reclaimed(
        rclient: redis.Redis, redis_ns: str, receiver: Receiver, consumer_b: str,
        claim_idle_s: float) -> None:
    receiver.status = 500
    a = webhook(rclient, redis_ns, receiver.url, consumer="central-1",
                backoff_base_s=5.0, backoff_max_s=5.0)
    keys = [f"crash-{i}" for i in range(5)]
    for i, key in enumerate(keys):
        a.enqueue({"seq": i}, key)
    a.start()
    wait_until(lambda: sum(receiver.raw.values()) >= 5, 5, "A's first attempts")
    assert a.stop()
    pending = rclient.xpending(a.stream_key, GROUP)
    assert pending["pending"] == 5 and receiver.count_processed() == 0
    assert {c["name"] for c in pending["consumers"]} == {b"central-1"}
    assert rclient.hlen(a.attempts_key) == 5  # attempt counts outlive the process
    del a  # the process is gone; its pending list is in Redis

    receiver.status = 200
    b = webhook(rclient, redis_ns, receiver.url, consumer=consumer_b, claim_idle_s=claim_idle_s)
    b.start()
    try:
        wait_until(lambda: receiver.count_processed() == 5, 5, "B delivering A's entries")
        wait_until(lambda: b.backlog() == 0, 5, "an empty outbox")
    finally:
        assert b.stop()
    assert set(receiver.processed) == set(keys)
    assert [a.key for a in receiver.arrivals if a.status == 200] == keys
    assert rclient.xpending(b.stream_key, GROUP)["pending"] == 0
    assert rclient.exists(b.attempts_key) == 0


# -- (d) a payload the centre rejects forever --------------------------------------------------


def test_rejected_payload_is_dead_lettered_and_does_not_block(
        rclient: redis.Redis, redis_ns: str, receiver: Receiver) -> None:
    receiver.status = lambda payload, n: 400 if payload.get("poison") else 200
    notifier = webhook(rclient, redis_ns, receiver.url)
    notifier.enqueue({"poison": True, "incident": "bad"}, "poison-1")
    good = [f"good-{i}" for i in range(3)]
    for key in good:
        notifier.enqueue({"incident": key}, key)
    notifier.start()
    try:
        wait_until(lambda: notifier.dead_backlog() == 1, 10, "the dead letter")
        wait_until(lambda: receiver.count_processed() == 3, 5, "the good entries")
        wait_until(lambda: notifier.backlog() == 0, 5, "an empty outbox")
        notifier.enqueue({"incident": "later"}, "later-1")  # the outbox still flows
        wait_until(lambda: "later-1" in receiver.processed, 5, "a later entry")
    finally:
        assert notifier.stop()
    assert receiver.raw["poison-1"] == 5 and "poison-1" not in receiver.processed
    dead: Any = rclient.xrange(notifier.dead_key)
    [(_, fields)] = dead
    assert fields[b"key"] == b"poison-1" and fields[b"attempts"] == b"5"
    assert fields[b"status"] == b"400" and b"HTTP 400" in fields[b"reason"]
    assert json.loads(fields[b"body"]) == {"poison": True, "incident": "bad"}
    order = [a.key for a in receiver.arrivals]
    assert order.index("good-2") < len(order) - 1 - order[::-1].index("poison-1")  # not blocked
    assert notifier.dead == 1 and notifier.delivered == 4
    assert rclient.exists(notifier.attempts_key) == 0
    # the centre fixed its side: the dead letter goes back and through, same key
    receiver.status = 200
    assert notifier.replay_dead() == 1 and notifier.dead_backlog() == 0
    wait_until(lambda: notifier.run_once(0) == 1, 5, "the replayed entry")
    assert receiver.processed["poison-1"] == {"poison": True, "incident": "bad"}


def test_decode_responses_client(redis_url: str, redis_ns: str, receiver: Receiver) -> None:
    """A client with decode_responses=True gets str fields back; bodies survive unchanged."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        notifier = webhook(client, redis_ns, receiver.url)
        notifier.enqueue({"zone": "水域-1", "n": 1}, "str-1")
        wait_until(lambda: notifier.run_once(0) == 1, 5, "delivery")
        assert receiver.processed["str-1"] == {"zone": "水域-1", "n": 1}
        assert notifier.backlog() == 0
    finally:
        client.close()


def test_server_errors_are_retried_past_the_rejection_limit(
        rclient: redis.Redis, redis_ns: str, receiver: Receiver) -> None:
    receiver.status = lambda payload, n: 503 if n <= 4 else (500 if n <= 7 else 200)
    notifier = webhook(rclient, redis_ns, receiver.url)
    notifier.enqueue({"incident": "flaky"}, "flaky-1")
    notifier.start()
    try:
        wait_until(lambda: "flaky-1" in receiver.processed, 10, "delivery after 7 failures")
    finally:
        assert notifier.stop()
    assert receiver.raw["flaky-1"] == 8 and notifier.dead == 0 and notifier.retries == 7


def test_an_http_date_retry_after_is_honoured(rclient: redis.Redis, redis_ns: str,
                                              receiver: Receiver) -> None:
    """A centre that answers 503 with ``Retry-After: <HTTP date>`` is not asked again before
    that date (the backoff alone would retry within 0.2 s here)."""
    receiver.status = lambda payload, n: 503 if n == 1 else 200
    receiver.retry_after = email.utils.formatdate(time.time() + 3, usegmt=True)
    notifier = webhook(rclient, redis_ns, receiver.url)
    notifier.enqueue({"incident": "busy"}, "busy-1")
    notifier.start()
    try:
        wait_until(lambda: "busy-1" in receiver.processed, 10, "delivery after the date")
    finally:
        assert notifier.stop()
    first, second = receiver.arrivals[0], receiver.arrivals[-1]
    assert (first.status, second.status) == (503, 200) and len(receiver.arrivals) == 2
    assert second.at - first.at >= 1.5, second.at - first.at  # the date has 1 s resolution


# -- (e) Redis goes down under the running sender ----------------------------------------------


def test_sender_survives_redis_restart(redis_private: RedisServer, receiver: Receiver) -> None:
    client = redis.Redis.from_url(redis_private.url, socket_timeout=2, socket_connect_timeout=1,
                                  retry=Retry(ExponentialBackoff(cap=0.1, base=0.01), 1))
    ns = "perimeter-test"
    notifier = webhook(client, ns, receiver.url, backoff_max_s=0.5)
    notifier.start()
    try:
        for i in range(2):
            notifier.enqueue({"seq": i}, f"before-{i}")
        wait_until(lambda: receiver.count_processed() == 2, 5, "the first deliveries")
        receiver.status = 503  # the centre fails too: these stay in the outbox
        for i in range(2, 5):
            notifier.enqueue({"seq": i}, f"before-{i}")
        wait_until(lambda: receiver.raw["before-2"] > 0, 5, "the sender probing the centre")
        client.save()  # what a production Redis's persistence does (the fixture has none)
        redis_private.stop()
        wait_until(lambda: notifier.redis_errors >= 2, 10, "the sender noticing")
        receiver.status = 200  # the centre is back while Redis is still down
        wait_until(lambda: receiver.count_processed() == 5, 10,
                   "delivery of held entries while Redis is down")
        assert notifier.running
        redis_private.start()
        wait_until(lambda: notifier.backlog() == 0, 10, "the deferred acknowledgements")
        notifier.enqueue({"seq": 5}, "after-restart")
        wait_until(lambda: "after-restart" in receiver.processed, 5, "a new entry")
        assert sum(receiver.duplicates.values()) == 0  # nothing re-sent after the restart
        # Redis restarting without its data: the consumer group is recreated. (Restarting
        # from the old snapshot instead would re-send before-2..4: at-least-once, which the
        # centre's idempotency-key dedupe absorbs.)
        redis_private.stop()
        (redis_private.workdir / "dump.rdb").unlink()
        redis_private.start()
        wait_until(lambda: _enqueue_ok(notifier, {"seq": 6}, "after-data-loss"), 10,
                   "enqueue after the restart")
        wait_until(lambda: "after-data-loss" in receiver.processed, 10, "delivery")
        assert notifier.running
    finally:
        assert notifier.stop()
        client.close()
    keys = {f"before-{i}" for i in range(5)} | {"after-restart", "after-data-loss"}
    assert set(receiver.processed) == keys
    assert sum(receiver.duplicates.values()) == 0


def _enqueue_ok(notifier: WebhookNotifier, payload: dict[str, Any], key: str) -> bool:
    try:
        notifier.enqueue(payload, key)
        return True
    except redis.RedisError:
        return False


# -- (f) MQTT bridge ---------------------------------------------------------------------------


class Subscriber:
    def __init__(self, host: str, port: int, topic: str, *, persistent: bool = False):
        self.messages: list[dict[str, Any]] = []
        self.subscribed = threading.Event()
        self.topic = topic
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=f"test-sub-{uuid.uuid4().hex[:12]}",
                                  clean_session=not persistent, protocol=mqtt.MQTTv311)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.subscribed.set()
        self.client.on_message = lambda c, u, m: self.messages.append(json.loads(m.payload))
        self.client.reconnect_delay_set(1, 1)
        self.client.connect(host, port)
        self.client.loop_start()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_mqtt_bridge_publishes_with_idempotency_key(mqtt_broker: tuple[str, int]) -> None:
    host, port = mqtt_broker
    topic = f"test/notify/{uuid.uuid4().hex}"
    sub = Subscriber(host, port, topic)
    notifier = MqttBridgeNotifier("centre-mqtt", topic, Broker(host, port),
                                  client_id=f"test-notify-{uuid.uuid4().hex[:12]}")
    try:
        assert sub.subscribed.wait(5)
        notifier.start()
        [note] = incident_payloads(1)
        notifier.enqueue(note.payload, "mqtt-key-1")
        wait_until(lambda: len(sub.messages) == 1, 5, "the MQTT message")
        assert sub.messages[0] == {**note.payload, "idempotency_key": "mqtt-key-1"}
    finally:
        assert notifier.stop()
        sub.close()
    assert notifier.published == 1


def test_mqtt_bridge_queues_while_broker_down(mosquitto_private: MosquittoBroker) -> None:
    host, port = mosquitto_private.address
    topic = f"test/notify/{uuid.uuid4().hex}"
    sub = Subscriber(host, port, topic, persistent=True)
    notifier = MqttBridgeNotifier("centre-mqtt", topic, Broker(host, port),
                                  client_id=f"test-notify-{uuid.uuid4().hex[:12]}")
    try:
        assert sub.subscribed.wait(5)
        notifier.start()
        wait_until(lambda: notifier.connected, 5, "the bridge connecting")
        mosquitto_private.stop()
        wait_until(lambda: not notifier.connected, 5, "the bridge noticing")
        for i in range(3):
            notifier.enqueue({"seq": i}, f"queued-{i}")
        assert notifier.unacknowledged() == 3
        mosquitto_private.start()
        wait_until(lambda: len(sub.messages) == 3, 15, "the queued messages")
    finally:
        assert notifier.stop()
        sub.close()
    assert sorted(m["idempotency_key"] for m in sub.messages) == [f"queued-{i}"
                                                                  for i in range(3)]


# -- building from config ----------------------------------------------------------------------


def test_build_notifiers(rclient: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    configs = [NotifierConfig(id="gov", kind="webhook", url="https://gov.example/hook",
                              secret_env="PERIMETER_TEST_GOV_SECRET"),
               NotifierConfig(id="bridge", kind="mqtt", topic="gov/alarms")]
    monkeypatch.delenv("PERIMETER_TEST_GOV_SECRET", raising=False)
    with pytest.raises(ValueError, match="PERIMETER_TEST_GOV_SECRET"):
        build_notifiers(configs, rclient, "ns", Broker())
    monkeypatch.setenv("PERIMETER_TEST_GOV_SECRET", "s3cret")
    built = build_notifiers(configs, rclient, "ns", Broker())
    gov, bridge = built["gov"], built["bridge"]
    assert isinstance(gov, WebhookNotifier) and isinstance(bridge, MqttBridgeNotifier)
    assert gov.stream_key == "ns:outbox:gov" and gov.dead_key == "ns:outbox-dead:gov"
    assert bridge.topic == "gov/alarms"
    with pytest.raises(ValueError, match="secret_env"):
        build_notifiers([NotifierConfig(id="x", kind="webhook", url="http://h/")], rclient,
                        "ns", Broker("h", 1))
    with pytest.raises(ValueError, match="topic"):
        build_notifiers([NotifierConfig(id="y", kind="mqtt")], rclient, "ns", Broker("h", 1))
