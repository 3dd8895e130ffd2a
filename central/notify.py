"""Governance-centre notifiers: a signed webhook behind a durable Redis outbox, and an MQTT bridge.

Webhook delivery
----------------
``WebhookNotifier.enqueue`` appends the notification to the Redis stream
``{ns}:outbox:{notifier_id}`` (XADD) and returns; nothing is sent from the caller's thread, so
a crash right after ``enqueue`` loses nothing. A sender (``start()`` runs it in a thread;
``run_once()`` does one round, for tests) reads the stream through the consumer group
``senders`` and POSTs each entry. Its states:

* 2xx: XACK + XDEL (one MULTI/EXEC), the entry is gone.
* no HTTP answer (connection refused, timeout, reset), 408, 429 and 5xx: the entry stays and
  is retried with exponential backoff and jitter (``backoff_base_s`` doubling up to
  ``backoff_max_s``, a random 50-100 % of that; a numeric ``Retry-After`` is honoured up to
  10 minutes). It is never dropped. No HTTP answer, 429 or 503 mean the centre is down: the
  round ends, and until the centre answers again only the oldest entry is tried (a probe, on
  its own backoff); the others wait without spending attempts. As soon as the centre answers,
  everything held is due at once and drains in stream (enqueue) order, so the centre is back
  in service within ``backoff_max_s`` of returning and sees the backlog in order.
* any other 4xx (and 3xx: redirects are not followed): retried the same way, and after
  ``max_rejections`` (5) attempts moved to the stream ``{ns}:outbox-dead:{notifier_id}`` with
  the reason, so a payload the centre rejects forever does not block the outbox. Such
  failures do not stop the round: later entries are still delivered meanwhile.

The attempt count of an entry that failed is kept in the hash ``{ns}:outbox-attempts:{id}``
(so the dead-letter limit survives restarts); the next-attempt time lives in memory. Entries
read but not acknowledged by a previous process with the same consumer name (a crash) are
read back from the group's pending list (XREADGROUP ... 0) when the sender starts, and entries
of other consumer names idle longer than ``claim_idle_s`` are taken over with XAUTOCLAIM (then
and every ``claim_idle_s / 2``). Delivery is at-least-once: a centre may receive an entry
twice (a crash between the POST and the XACK, a timeout after the centre processed it), which
is what the ``Idempotency-Key`` is for. When Redis is down the sender logs, waits with backoff
and carries on; entries it already holds are still delivered, their acknowledgements wait in
memory until Redis is back. ``enqueue`` itself raises ``redis.RedisError`` then: the caller
must know the notification was not stored. The outbox is never trimmed.

The Redis client's ``socket_timeout`` must exceed the sender's ``poll_ms`` (XREADGROUP BLOCK);
redis-py's default of 5 s does.

Request and signature (what the receiving centre checks)
--------------------------------------------------------
``POST <url>`` with the body: the notification as compact UTF-8 JSON (``governance_payload``,
separators ``,`` and ``:``, non-ASCII characters unescaped), and the headers::

    Content-Type: application/json
    Idempotency-Key: <key given to enqueue; the same on every retry>
    X-Perimeter-Timestamp: <unix time of this attempt, integer seconds, ASCII digits>
    X-Perimeter-Signature: sha256=<lowercase hex HMAC-SHA256(secret, timestamp + "." + body)>

To verify, a receiver

1. takes the raw body bytes exactly as received (before any JSON parsing or re-encoding);
2. rejects the request unless ``X-Perimeter-Timestamp`` is ASCII digits within a replay window
   of its own clock (300 s suggested; every retry is signed afresh, so the window covers clock
   skew and transit only, not an outage);
3. computes ``"sha256=" + hex(HMAC-SHA256(key=secret, msg=timestamp_ascii + b"." + body))``;
4. compares it with ``X-Perimeter-Signature`` in constant time (``hmac.compare_digest``);
5. processes each ``Idempotency-Key`` once (remember keys for longer than the longest outage
   to ride out) and answers 2xx to a repeated key too, or the sender keeps retrying it.

``verify_signature`` does steps 2-4.

MQTT bridge
-----------
``MqttBridgeNotifier`` publishes the payload plus ``"idempotency_key"`` as QoS 1 JSON on a
topic with a persistent session (clean_session=False, a fixed client id). While disconnected,
paho keeps the messages in memory and sends them after reconnecting; they do not survive a
restart of this process (the webhook outbox does).
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import logging
import os
import random
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import paho.mqtt.client as mqtt
import redis
from paho.mqtt.enums import CallbackAPIVersion

from central.config import NotifierConfig
from central.plans import Notification

log = logging.getLogger(__name__)

GROUP = "senders"
IDEMPOTENCY_HEADER = "Idempotency-Key"
TIMESTAMP_HEADER = "X-Perimeter-Timestamp"
SIGNATURE_HEADER = "X-Perimeter-Signature"
RETRY_AFTER_CAP_S = 600.0
_RETRYABLE_4XX = frozenset({408, 429})


# -- body, keys and signatures -----------------------------------------------------------------


def encode_body(payload: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON; raises ValueError/TypeError for what JSON cannot carry (NaN, sets)."""
    return json.dumps(dict(payload), ensure_ascii=False, separators=(",", ":"),
                      allow_nan=False).encode("utf-8")


def idempotency_key_for(notification: Notification) -> str:
    """A key for a planner notification: the same notification content gives the same key.

    ``incident:notifier:<16 hex of SHA-256 of the canonical payload>``, so a repeated
    notification (a re-sent effect, a restarted planner) is one event for the centre, while an
    update of the incident (new alarm kind, escalation) is a new one.
    """
    canon = json.dumps(notification.payload, sort_keys=True, ensure_ascii=False,
                       separators=(",", ":"), default=str).encode("utf-8")
    digest = hashlib.sha256(canon).hexdigest()[:16]
    return f"{notification.incident}:{notification.notifier}:{digest}"


def _check_key(key: str) -> None:
    if not key or len(key) > 255 or not key.isascii() or not key.isprintable():
        raise ValueError(f"idempotency key must be 1-255 printable ASCII characters: {key!r}")


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """``X-Perimeter-Signature``: ``sha256=<hex HMAC-SHA256(secret, ts + "." + body)>``."""
    mac = hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_signature(secret: bytes, timestamp: str | int, body: bytes, header: str, *,
                     max_age_s: float | None = 300.0, now: float | None = None) -> bool:
    """True if ``header`` is the signature of ``body`` at ``timestamp`` under ``secret``.

    ``timestamp`` and ``header`` are the raw ``X-Perimeter-Timestamp`` and
    ``X-Perimeter-Signature`` header values, ``body`` the raw request body. A timestamp more
    than ``max_age_s`` away from ``now`` (default: the clock) fails; ``None`` skips that check.
    The comparison is constant-time.
    """
    ts = str(timestamp).strip()
    if not ts or not ts.isascii() or not ts.isdigit():
        return False
    if max_age_s is not None:
        clock = time.time() if now is None else now
        if abs(clock - int(ts)) > max_age_s:
            return False
    expected = sign(secret, ts, body).encode("ascii")
    return hmac.compare_digest(expected, header.strip().encode("utf-8", "replace"))


# -- small helpers -----------------------------------------------------------------------------


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes | bytearray) else str(value)


def _raw(value: Any) -> bytes:
    return bytes(value) if isinstance(value, bytes | bytearray) else str(value).encode("utf-8")


def _id_order(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _stream_entries(resp: Any) -> list[tuple[str, dict[str, Any]]]:
    """(id, fields) pairs from an XREADGROUP/XAUTOCLAIM reply in any of redis-py's shapes.

    An entry deleted while pending comes back with empty fields.
    """
    out: list[tuple[str, dict[str, Any]]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for value in node.values():
                walk(value)
        elif (isinstance(node, list | tuple) and len(node) >= 2
              and isinstance(node[0], bytes | str) and (node[1] is None
                                                        or isinstance(node[1], dict))):
            out.append((_text(node[0]), {_text(k): v for k, v in (node[1] or {}).items()}))
        elif isinstance(node, list | tuple):
            for item in node:
                if not isinstance(item, bytes | str):  # skip stream names
                    walk(item)

    walk(resp)
    return out


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value.strip()))
    except ValueError:
        return None  # an HTTP date: rare for these centres, the backoff covers it


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirected POST would become a GET without body: treat 3xx as a rejection instead."""

    def redirect_request(self, req: urllib.request.Request, fp: Any, code: int, msg: str,
                         headers: Any, newurl: str) -> urllib.request.Request | None:
        return None


@dataclass
class _Entry:
    id: str
    key: str
    body: bytes
    attempts: int = 0
    next_at: float = 0.0  # time.monotonic()
    unreachable: bool = False  # the last attempt got no HTTP answer
    last_error: str = ""


@dataclass(frozen=True)
class _Outcome:
    status: int | None  # None: no HTTP answer
    reason: str
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def rejected(self) -> bool:
        """The centre answered that it will not take this payload (counts towards dead)."""
        s = self.status
        return s is not None and (300 <= s < 400 or (400 <= s < 500 and s not in _RETRYABLE_4XX))


class Notifier(Protocol):
    notifier_id: str

    def enqueue(self, payload: Mapping[str, Any], idempotency_key: str) -> str: ...

    def start(self) -> None: ...

    def stop(self, timeout: float | None = None) -> bool: ...


# -- webhook -----------------------------------------------------------------------------------


class WebhookNotifier:
    """Signed JSON webhook with a durable outbox in a Redis stream (see the module docstring)."""

    def __init__(self, notifier_id: str, url: str, secret: bytes, redis_client: redis.Redis,
                 *, ns: str = "perimeter", timeout_s: float = 5.0, backoff_base_s: float = 0.5,
                 backoff_max_s: float = 30.0, consumer: str = "central-1",
                 max_rejections: int = 5, poll_ms: int = 1000, max_in_flight: int = 1000,
                 claim_idle_s: float = 60.0, use_env_proxy: bool = False):
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"notifier {notifier_id}: webhook url must be http(s)://...: {url!r}")
        if not secret:
            raise ValueError(f"notifier {notifier_id}: empty webhook secret")
        if backoff_base_s <= 0 or backoff_max_s < backoff_base_s:
            raise ValueError("need 0 < backoff_base_s <= backoff_max_s")
        if max_rejections < 1 or max_in_flight < 1 or poll_ms < 0 or timeout_s <= 0:
            raise ValueError("max_rejections, max_in_flight, timeout_s must be positive")
        self.notifier_id = notifier_id
        self.url = url
        self._secret = bytes(secret)
        self.r = redis_client
        self.ns = ns
        self.timeout_s = timeout_s
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.consumer = consumer
        self.max_rejections = max_rejections
        self.poll_ms = poll_ms
        self.max_in_flight = max_in_flight
        self.claim_idle_s = claim_idle_s
        # for logs: no credentials or query string
        self._safe_url = f"{parsed.scheme}://{parsed.hostname}" + (
            f":{parsed.port}" if parsed.port else "") + parsed.path
        self.stream_key = f"{ns}:outbox:{notifier_id}"
        self.dead_key = f"{ns}:outbox-dead:{notifier_id}"
        self.attempts_key = f"{ns}:outbox-attempts:{notifier_id}"
        handlers: list[urllib.request.BaseHandler] = [_NoRedirect()]
        if not use_env_proxy:
            handlers.append(urllib.request.ProxyHandler({}))
        self._opener = urllib.request.build_opener(*handlers)
        # counters (written by the sender only)
        self.enqueued = 0
        self.delivered = 0
        self.retries = 0
        self.dead = 0
        self.attempts = 0
        self.redis_errors = 0
        # sender state
        self._entries: dict[str, _Entry] = {}
        self._acks: set[str] = set()  # delivered, XACK/XDEL not yet written
        self._deads: dict[str, tuple[_Entry, str, int | None]] = {}  # dead, not yet written
        self._dirty_attempts: dict[str, int] = {}
        self._recovered = False
        self._next_claim = 0.0
        self._group_ready = False
        self._centre_down = False
        self._redis_down = False
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _ctx(self, **extra: Any) -> dict[str, Any]:
        return {"notifier": self.notifier_id, **extra}

    # -- producer side -------------------------------------------------------------------------

    def enqueue(self, payload: Mapping[str, Any], idempotency_key: str) -> str:
        """Store the notification in the outbox (durably, before returning); the entry id.

        Raises ValueError for a payload JSON cannot carry or a bad key, and
        ``redis.RedisError`` when Redis cannot store it.
        """
        _check_key(idempotency_key)
        body = encode_body(payload)
        entry_id = _text(self.r.xadd(self.stream_key, {
            "key": idempotency_key, "body": body, "t": f"{time.time():.6f}"}))
        self.enqueued += 1
        log.debug("notification enqueued", extra=self._ctx(entry=entry_id, key=idempotency_key))
        return entry_id

    def send(self, notification: Notification) -> str:
        """``enqueue`` a planner notification under ``idempotency_key_for`` it."""
        return self.enqueue(notification.payload, idempotency_key_for(notification))

    def backlog(self) -> int:
        """Entries in the outbox not yet delivered or dead-lettered (XLEN)."""
        return int(self.r.xlen(self.stream_key))

    def dead_backlog(self) -> int:
        return int(self.r.xlen(self.dead_key))

    def replay_dead(self, count: int = 1000) -> int:
        """Move up to ``count`` dead letters back into the outbox (after fixing the cause,
        e.g. a wrong secret); they keep their idempotency keys. Returns how many moved."""
        moved = 0
        entries: Any = self.r.xrange(self.dead_key, count=count)
        for dead_id, raw in entries:
            fields = {_text(k): v for k, v in raw.items()}
            pipe = self.r.pipeline(transaction=True)
            pipe.xadd(self.stream_key, {"key": fields.get("key", b""),
                                        "body": fields.get("body", b""),
                                        "t": f"{time.time():.6f}"})
            pipe.xdel(self.dead_key, dead_id)
            pipe.execute()
            moved += 1
        if moved:
            log.info("dead letters replayed", extra=self._ctx(count=moved))
        return moved

    def stats(self) -> dict[str, int]:
        return {"enqueued": self.enqueued, "delivered": self.delivered, "retries": self.retries,
                "dead": self.dead, "attempts": self.attempts, "redis_errors": self.redis_errors,
                "in_flight": len(self._entries)}

    # -- sender thread -------------------------------------------------------------------------

    def start(self) -> None:
        """Run the sender in a daemon thread (no-op if it runs already)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=f"notify-{self.notifier_id}",
                                        daemon=True)
        self._thread.start()
        log.info("webhook sender started",
                 extra=self._ctx(url=self._safe_url, consumer=self.consumer))

    def stop(self, timeout: float | None = None) -> bool:
        """Stop the sender; True if it ended within ``timeout`` (default: one POST and poll)."""
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(self.timeout_s + self.poll_ms / 1000 + 2 if timeout is None else timeout)
            if thread.is_alive():
                log.warning("webhook sender did not stop in time", extra=self._ctx())
                return False
            self._thread = None
        self._stop.clear()  # run_once() may still be used by hand
        with self._lock:
            try:
                self._flush()  # acknowledgements left over from a Redis outage
            except redis.RedisError as exc:
                log.warning("unwritten outbox acknowledgements at stop",
                            extra=self._ctx(error=str(exc), count=len(self._acks)))
        return True

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _loop(self) -> None:
        delay = 0.0
        while not self._stop.is_set():
            try:
                self.run_once(self.poll_ms)
                if self._redis_down:
                    log.info("outbox redis reachable again", extra=self._ctx())
                    self._redis_down = False
                delay = 0.0
            except redis.RedisError as exc:
                self.redis_errors += 1
                if not self._redis_down:
                    log.warning("outbox redis unavailable, retrying",
                                extra=self._ctx(error=str(exc)))
                    self._redis_down = True
                delay = min(self.backoff_max_s, max(self.backoff_base_s, delay * 2))
                self._stop.wait(delay)
            except Exception:  # a bug must not end deliveries for good
                log.exception("webhook sender round failed", extra=self._ctx())
                delay = min(self.backoff_max_s, max(self.backoff_base_s, delay * 2))
                self._stop.wait(delay)
        log.info("webhook sender stopped", extra=self._ctx())

    # -- one round -----------------------------------------------------------------------------

    def run_once(self, block_ms: int = 0) -> int:
        """Deliver what is due; returns how many entries were delivered.

        Reads new entries (waiting up to ``block_ms`` for one when nothing is due), recovers
        pending entries on the first round and after Redis errors, then POSTs the due entries.
        Entries already held are delivered even when Redis is down; the ``redis.RedisError`` is
        raised afterwards.
        """
        with self._lock:
            error: redis.RedisError | None = None
            try:
                self._flush()
                if not self._recovered:
                    self._recover()
                elif time.monotonic() >= self._next_claim:
                    self._claim_orphans()
                self._fetch(block_ms)
            except redis.RedisError as exc:
                error = exc
                self._recovered = False
                self._group_ready = False
            delivered = self._deliver_due()
            try:
                self._flush()
            except redis.RedisError as exc:
                error = error or exc
                self._recovered = False
            if error is not None:
                raise error
            return delivered

    def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            # id 0: everything already in the stream is undelivered by construction
            self.r.xgroup_create(self.stream_key, GROUP, id="0", mkstream=True)
            log.info("outbox consumer group created", extra=self._ctx(stream=self.stream_key))
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    def _xreadgroup(self, start: str, count: int, block: int | None) -> list[
            tuple[str, dict[str, Any]]]:
        self._ensure_group()
        try:
            resp = self.r.xreadgroup(GROUP, self.consumer, {self.stream_key: start},
                                     count=count, block=block)
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            # Redis restarted without its data, or someone deleted the stream
            log.warning("outbox consumer group missing, recreating", extra=self._ctx())
            self._group_ready = False
            self._ensure_group()
            resp = self.r.xreadgroup(GROUP, self.consumer, {self.stream_key: start},
                                     count=count, block=block)
        return _stream_entries(resp)

    def _recover(self) -> None:
        """Take back this consumer's pending entries (a previous process that crashed)."""
        self._ensure_group()
        adopted: list[_Entry] = []
        start = "0"
        while True:
            batch = self._xreadgroup(start, 100, None)
            for entry_id, fields in batch:
                entry = self._adopt(entry_id, fields)
                if entry is not None:
                    adopted.append(entry)
            if len(batch) < 100:
                break
            start = batch[-1][0]
        adopted += self._claim_orphans(restore=False)
        self._restore_attempts(adopted)
        self._recovered = True
        if adopted:
            log.info("outbox pending entries recovered", extra=self._ctx(count=len(adopted)))

    def _claim_orphans(self, restore: bool = True) -> list[_Entry]:
        """XAUTOCLAIM entries of other consumers idle longer than ``claim_idle_s``."""
        claimed: list[_Entry] = []
        cursor = "0-0"
        for _ in range(100):
            resp: Any = self.r.xautoclaim(self.stream_key, GROUP, self.consumer,
                                          int(self.claim_idle_s * 1000), start_id=cursor,
                                          count=100)
            cursor = _text(resp[0])
            for entry_id, fields in _stream_entries(resp[1]):
                entry = self._adopt(entry_id, fields)
                if entry is not None:
                    claimed.append(entry)
            if cursor == "0-0":
                break
        self._next_claim = time.monotonic() + max(self.claim_idle_s / 2, 1.0)
        if restore:
            self._restore_attempts(claimed)
        if claimed:
            log.info("outbox entries claimed from other consumers",
                     extra=self._ctx(count=len(claimed)))
        return claimed

    def _restore_attempts(self, entries: list[_Entry]) -> None:
        if not entries:
            return
        values: Any = self.r.hmget(self.attempts_key, [e.id for e in entries])
        for entry, value in zip(entries, values, strict=True):
            if value is not None:
                entry.attempts = max(entry.attempts, int(_text(value)))

    def _adopt(self, entry_id: str, fields: dict[str, Any]) -> _Entry | None:
        if entry_id in self._entries or entry_id in self._acks or entry_id in self._deads:
            return None
        if not fields:  # deleted while pending: only the pending record is left
            self._acks.add(entry_id)
            return None
        entry = _Entry(entry_id, _text(fields.get("key", "")), _raw(fields.get("body", b"")))
        if "body" not in fields or not entry.key:
            self._deads[entry_id] = (entry, "malformed outbox entry (no key or body)", None)
            return None
        entry.next_at = time.monotonic()
        self._entries[entry_id] = entry
        return entry

    def _candidates(self) -> list[_Entry]:
        """Entries that may be tried when due: all, or only the oldest while the centre is down
        (it probes for the centre; the rest wait and keep their order)."""
        if self._centre_down and self._entries:
            return [min(self._entries.values(), key=lambda e: _id_order(e.id))]
        return list(self._entries.values())

    def _fetch(self, block_ms: int) -> None:
        wait_ms = max(0, block_ms)
        candidates = self._candidates()
        if candidates:
            due_in = min(e.next_at for e in candidates) - time.monotonic()
            wait_ms = max(0, min(wait_ms, int(due_in * 1000)))
        room = self.max_in_flight - len(self._entries)
        if room <= 0:
            if wait_ms > 0:
                self._stop.wait(wait_ms / 1000)
            return
        # block=None: do not block; block=0 would block forever
        for entry_id, fields in self._xreadgroup(">", room, wait_ms if wait_ms > 0 else None):
            self._adopt(entry_id, fields)

    def _deliver_due(self) -> int:
        delivered = 0
        tried: set[str] = set()
        while not self._stop.is_set():
            now = time.monotonic()
            due = [e for e in self._candidates() if e.next_at <= now and e.id not in tried]
            if not due:
                break
            entry = min(due, key=lambda e: _id_order(e.id))
            tried.add(entry.id)
            outcome = self._post(entry)
            entry.attempts += 1
            self.attempts += 1
            unreachable = outcome.status is None or outcome.status in (429, 503)
            if not unreachable:
                self._centre_reachable()
            if outcome.ok:
                self._delivered(entry, outcome)
                delivered += 1
                continue
            entry.last_error = outcome.reason
            entry.unreachable = unreachable
            if outcome.rejected and entry.attempts >= self.max_rejections:
                del self._entries[entry.id]
                self._dirty_attempts.pop(entry.id, None)
                self._deads[entry.id] = (entry, outcome.reason, outcome.status)
                self.dead += 1
                log.error("notification dead-lettered", extra=self._ctx(
                    entry=entry.id, key=entry.key, attempts=entry.attempts,
                    reason=outcome.reason, dead_stream=self.dead_key))
                continue
            self.retries += 1
            delay = self._backoff(entry.attempts, outcome.retry_after)
            entry.next_at = time.monotonic() + delay
            self._dirty_attempts[entry.id] = entry.attempts
            level = logging.WARNING if outcome.rejected else logging.DEBUG
            if unreachable and not self._centre_down:
                level = logging.WARNING
                self._centre_down = True
            log.log(level, "notification delivery failed, will retry", extra=self._ctx(
                entry=entry.id, key=entry.key, attempts=entry.attempts, reason=outcome.reason,
                retry_in_s=round(delay, 3)))
            if unreachable:
                break  # the centre is unreachable or asks us to slow down: end the round
        return delivered

    def _centre_reachable(self) -> None:
        """The centre answered: release the entries that waited while it was down."""
        if not self._centre_down:
            return
        self._centre_down = False
        now = time.monotonic()
        for other in self._entries.values():
            if other.unreachable:
                other.next_at = min(other.next_at, now)
                other.unreachable = False
        log.info("governance centre reachable again",
                 extra=self._ctx(waiting=len(self._entries)))

    def _delivered(self, entry: _Entry, outcome: _Outcome) -> None:
        del self._entries[entry.id]
        self._dirty_attempts.pop(entry.id, None)
        self._acks.add(entry.id)
        self.delivered += 1
        log.info("notification delivered", extra=self._ctx(
            entry=entry.id, key=entry.key, attempts=entry.attempts, status=outcome.status))

    def _backoff(self, attempts: int, retry_after: float | None) -> float:
        full = min(self.backoff_max_s, self.backoff_base_s * 2.0 ** min(attempts - 1, 40))
        delay = full / 2 + random.uniform(0, full / 2)
        if retry_after is not None:
            delay = max(delay, min(retry_after, RETRY_AFTER_CAP_S))
        return delay

    def _post(self, entry: _Entry) -> _Outcome:
        ts = str(int(time.time()))
        request = urllib.request.Request(self.url, data=entry.body, method="POST", headers={
            "Content-Type": "application/json",
            IDEMPOTENCY_HEADER: entry.key,
            TIMESTAMP_HEADER: ts,
            SIGNATURE_HEADER: sign(self._secret, ts, entry.body),
            "User-Agent": "perimeter-central/1",
        })
        try:
            with self._opener.open(request, timeout=self.timeout_s) as resp:
                resp.read(65536)
                return _Outcome(int(resp.status), f"HTTP {resp.status}")
        except urllib.error.HTTPError as exc:
            try:
                detail = exc.read(300).decode("utf-8", "replace").strip()
            except (OSError, http.client.HTTPException):
                detail = ""
            finally:
                exc.close()
            reason = f"HTTP {exc.code} {exc.reason}" + (f": {detail}" if detail else "")
            return _Outcome(exc.code, reason,
                            _retry_after(exc.headers.get("Retry-After") if exc.headers else None))
        except (OSError, http.client.HTTPException, ValueError) as exc:
            cause = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            return _Outcome(None, f"{type(cause).__name__}: {cause}")

    def _flush(self) -> None:
        """Write acknowledgements, dead letters and attempt counts (one MULTI/EXEC)."""
        if not (self._acks or self._deads or self._dirty_attempts):
            return
        done = [*self._acks, *self._deads]
        pipe = self.r.pipeline(transaction=True)
        for entry_id, (entry, reason, status) in self._deads.items():
            pipe.xadd(self.dead_key, {
                "entry": entry_id, "key": entry.key, "body": entry.body,
                "reason": reason[:1000], "status": "" if status is None else str(status),
                "attempts": str(entry.attempts), "notifier": self.notifier_id,
                "t": f"{time.time():.6f}",
            }, maxlen=100_000, approximate=True)
        if done:
            pipe.xack(self.stream_key, GROUP, *done)
            pipe.xdel(self.stream_key, *done)
            pipe.hdel(self.attempts_key, *done)
        dirty = {k: v for k, v in self._dirty_attempts.items() if k not in self._deads}
        if dirty:
            pipe.hset(self.attempts_key, mapping=dirty)  # type: ignore[arg-type]
        pipe.execute()
        self._acks.clear()
        self._deads.clear()
        self._dirty_attempts.clear()


# -- MQTT bridge -------------------------------------------------------------------------------


class MqttBridgeNotifier:
    """Publishes notifications as QoS 1 JSON on an MQTT topic (persistent session)."""

    def __init__(self, notifier_id: str, topic: str, host: str, port: int, *,
                 username: str | None = None, password: str | None = None,
                 client_id: str | None = None, keepalive: int = 30):
        if not topic or "+" in topic or "#" in topic:
            raise ValueError(f"notifier {notifier_id}: bad MQTT topic {topic!r}")
        self.notifier_id = notifier_id
        self.topic = topic
        self.host = host
        self.port = port
        self.keepalive = keepalive
        self.client_id = client_id or f"perimeter-notify-{notifier_id}"
        self.published = 0  # acknowledged by the broker (PUBACK)
        self.enqueued = 0
        # mids published/queued and not yet PUBACKed; never held while calling into paho
        self._outstanding: set[int] = set()
        self._acked_early: set[int] = set()  # PUBACK seen before publish() returned
        self._mids_lock = threading.Lock()
        self._connected = threading.Event()
        self._started = False
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                             clean_session=False, protocol=mqtt.MQTTv311)
        if username is not None:
            client.username_pw_set(username, password)
        client.max_queued_messages_set(0)  # unbounded in-memory queue while disconnected
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        self.client = client

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags,
                    reason: Any, properties: Any) -> None:
        if getattr(reason, "is_failure", False):
            log.error("notify MQTT connect refused",
                      extra={"notifier": self.notifier_id, "reason": str(reason)})
            return
        self._connected.set()
        log.info("notify MQTT connected", extra={
            "notifier": self.notifier_id, "host": self.host, "port": self.port,
            "session_present": bool(flags.session_present)})

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: mqtt.DisconnectFlags,
                       reason: Any, properties: Any) -> None:
        self._connected.clear()
        log.warning("notify MQTT disconnected",
                    extra={"notifier": self.notifier_id, "reason": str(reason)})

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any,
                    properties: Any) -> None:
        with self._mids_lock:
            if mid in self._outstanding:
                self._outstanding.discard(mid)
                self.published += 1
            else:
                self._acked_early.add(mid)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self) -> None:
        """Connect in the background (retrying while the broker is unreachable)."""
        if self._started:
            return
        self.client.connect_async(self.host, self.port, keepalive=self.keepalive)
        self.client.loop_start()
        self._started = True

    def enqueue(self, payload: Mapping[str, Any], idempotency_key: str) -> str:
        """Publish (or queue while disconnected) ``payload`` + ``idempotency_key``; the mid."""
        _check_key(idempotency_key)
        body = encode_body({**payload, "idempotency_key": idempotency_key})
        info = self.client.publish(self.topic, body, qos=1)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            raise RuntimeError(f"notifier {self.notifier_id}: MQTT publish failed: "
                               f"{mqtt.error_string(info.rc)}")
        with self._mids_lock:
            if info.mid in self._acked_early:
                self._acked_early.discard(info.mid)
                self.published += 1
            else:
                self._outstanding.add(info.mid)
        self.enqueued += 1
        log.debug("notification published", extra={
            "notifier": self.notifier_id, "key": idempotency_key, "mid": info.mid,
            "queued": info.rc == mqtt.MQTT_ERR_NO_CONN})
        return str(info.mid)

    def send(self, notification: Notification) -> str:
        return self.enqueue(notification.payload, idempotency_key_for(notification))

    def unacknowledged(self) -> int:
        """Messages published or queued but not yet acknowledged by the broker."""
        with self._mids_lock:
            return len(self._outstanding)

    def stop(self, timeout: float | None = 5.0) -> bool:
        """Wait up to ``timeout`` for queued messages to be acknowledged, then disconnect.

        True if nothing was left unacknowledged (what is left is lost with this process).
        """
        deadline = time.monotonic() + (timeout or 0.0)
        while self.unacknowledged() and time.monotonic() < deadline:
            time.sleep(0.02)  # poll interval
        left = self.unacknowledged()
        if left:
            log.warning("notify MQTT stopping with unacknowledged messages",
                        extra={"notifier": self.notifier_id, "count": left})
        if self._started:
            self.client.disconnect()
            self.client.loop_stop()
            self._started = False
        return left == 0


# -- from config -------------------------------------------------------------------------------


def build_notifiers(configs: list[NotifierConfig], redis_client: redis.Redis, ns: str,
                    mqtt_host: str, mqtt_port: int, *, environ: Mapping[str, str] | None = None,
                    consumer: str = "central-1") -> dict[str, WebhookNotifier | MqttBridgeNotifier]:
    """One notifier per config (not started); webhook secrets come from ``secret_env``.

    Raises ValueError for a missing url/topic/secret_env, an unset or empty secret variable
    (naming it), or a repeated id.
    """
    env = os.environ if environ is None else environ
    out: dict[str, WebhookNotifier | MqttBridgeNotifier] = {}
    for cfg in configs:
        if cfg.id in out:
            raise ValueError(f"notifier {cfg.id!r} is configured twice")
        if cfg.kind == "webhook":
            if not cfg.url:
                raise ValueError(f"notifier {cfg.id}: a webhook needs 'url'")
            if not cfg.secret_env:
                raise ValueError(f"notifier {cfg.id}: a webhook needs 'secret_env' (the name "
                                 "of the environment variable holding its HMAC secret)")
            secret = env.get(cfg.secret_env)
            if not secret:
                raise ValueError(f"notifier {cfg.id}: environment variable {cfg.secret_env} "
                                 "(its secret_env) is not set or empty")
            out[cfg.id] = WebhookNotifier(cfg.id, cfg.url, secret.encode("utf-8"), redis_client,
                                          ns=ns, consumer=consumer)
        elif cfg.kind == "mqtt":
            if not cfg.topic:
                raise ValueError(f"notifier {cfg.id}: an mqtt notifier needs 'topic'")
            out[cfg.id] = MqttBridgeNotifier(cfg.id, cfg.topic, mqtt_host, mqtt_port,
                                              client_id=f"perimeter-notify-{cfg.id}-{consumer}")
        else:  # pragma: no cover - the config pattern admits only the two kinds
            raise ValueError(f"notifier {cfg.id}: unknown kind {cfg.kind!r}")
    return out
