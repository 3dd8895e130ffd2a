"""Governance-centre webhook: a signed POST per notification, behind a durable Redis outbox.

``WebhookNotifier.enqueue`` stores the notification in the outbox (``central.outbox_stream``)
and returns; a sender (``start()`` runs it in a thread; ``run_once()`` does one round, for
tests) reads the outbox and POSTs each entry (``central.webhook_request`` says what the
request looks like and how the centre checks it). Its states:

* 2xx: XACK + XDEL (one MULTI/EXEC), the entry is gone.
* no HTTP answer (connection refused, timeout, reset), 408, 429 and 5xx: the entry stays and
  is retried with exponential backoff and jitter (``backoff_base_s`` doubling up to
  ``backoff_max_s``, a random 50-100 % of that; a ``Retry-After``, seconds or an HTTP date,
  is honoured up to 10 minutes). It is never dropped. No HTTP answer, 429 or 503 mean the
  centre is down: the round ends, and until the centre answers again only the oldest entry is
  tried (a probe, on its own backoff); the others wait without spending attempts. As soon as
  the centre answers, everything held is due at once and drains in stream (enqueue) order, so
  the centre is back in service within ``backoff_max_s`` of returning and sees the backlog in
  order.
* any other 4xx (and 3xx: redirects are not followed): retried the same way, and after
  ``max_rejections`` (5) attempts moved to the stream ``{ns}:outbox-dead:{notifier_id}`` with
  the reason, so a payload the centre rejects forever does not block the outbox. Such
  failures do not stop the round: later entries are still delivered meanwhile.

Delivery is at-least-once: a centre may receive an entry twice (a crash between the POST and
the XACK, a timeout after the centre processed it), which is what the ``Idempotency-Key`` is
for. When Redis is down the sender logs, waits with backoff and carries on; entries it already
holds are still delivered, their acknowledgements wait in memory until Redis is back.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import urllib.parse
from collections.abc import Callable

import redis

from central.notify.outbox import OutboxEntry, StreamOutbox, id_order
from central.notify.request import Outcome, http_client, idempotency_key_for, post_signed
from central.plans import Notification

# the name these logs had before the notify module was split, so log filters keep working
log = logging.getLogger(__name__)

RETRY_AFTER_CAP_S = 600.0


class WebhookNotifier(StreamOutbox):
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
        super().__init__(notifier_id, redis_client, ns=ns, consumer=consumer,
                         claim_idle_s=claim_idle_s)
        self.url = url
        self._secret = bytes(secret)
        self.timeout_s = timeout_s
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.max_rejections = max_rejections
        self.poll_ms = poll_ms
        self.max_in_flight = max_in_flight
        # for logs: no credentials or query string
        self._safe_url = f"{parsed.scheme}://{parsed.hostname}" + (
            f":{parsed.port}" if parsed.port else "") + parsed.path
        self.use_env_proxy = use_env_proxy
        self._http = http_client(timeout_s, use_env_proxy)  # pooled: one connection reused
        # counters (written by the sender only; ``enqueued`` by the producer)
        self.delivered = 0
        # called with (notifier id, seconds from enqueue to delivery) after each delivery
        self.on_delivered: Callable[[str, float], None] | None = None
        self.retries = 0
        self.dead = 0
        self.attempts = 0
        self.redis_errors = 0
        # sender state
        self._centre_down = False
        self._redis_down = False
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def send(self, notification: Notification) -> str:
        """``enqueue`` a planner notification under ``idempotency_key_for`` it."""
        return self.enqueue(notification.payload, idempotency_key_for(notification))

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
            # close the pooled connections; a fresh client opens none until it is used
            self._http.close()
            self._http = http_client(self.timeout_s, self.use_env_proxy)
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

    # -- delivering ----------------------------------------------------------------------------

    def _candidates(self) -> list[OutboxEntry]:
        """Entries that may be tried when due: all, or only the oldest while the centre is down
        (it probes for the centre; the rest wait and keep their order)."""
        if self._centre_down and self._entries:
            return [min(self._entries.values(), key=lambda e: id_order(e.id))]
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
            entry = min(due, key=lambda e: id_order(e.id))
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

    def _delivered(self, entry: OutboxEntry, outcome: Outcome) -> None:
        del self._entries[entry.id]
        self._dirty_attempts.pop(entry.id, None)
        self._acks.add(entry.id)
        self.delivered += 1
        if self.on_delivered is not None:  # enqueue time is in the stream entry id (ms)
            lag = time.time() - int(entry.id.split("-")[0]) / 1000
            self.on_delivered(self.notifier_id, max(0.0, lag))
        log.info("notification delivered", extra=self._ctx(
            entry=entry.id, key=entry.key, attempts=entry.attempts, status=outcome.status))

    def _backoff(self, attempts: int, retry_after: float | None) -> float:
        full = min(self.backoff_max_s, self.backoff_base_s * 2.0 ** min(attempts - 1, 40))
        delay = full / 2 + random.uniform(0, full / 2)
        if retry_after is not None:
            delay = max(delay, min(retry_after, RETRY_AFTER_CAP_S))
        return delay

    def _post(self, entry: OutboxEntry) -> Outcome:
        return post_signed(self._http, self.url, self._secret, entry.key, entry.body)
