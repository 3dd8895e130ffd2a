"""The governance-centre request: body, idempotency key, HMAC signature, one signed POST.

Request and signature (what the receiving centre checks)
--------------------------------------------------------
``POST <url>`` with the body: the notification as compact UTF-8 JSON (``governance_payload``,
separators ``,`` and ``:``, non-ASCII characters unescaped), and the headers::

    Content-Type: application/json
    Idempotency-Key: <key given to enqueue; the same on every retry>
    X-Perimeter-Timestamp: <unix time of this attempt, integer seconds, ASCII digits>
    X-Perimeter-Signature: v2=<lowercase hex HMAC-SHA256(secret, base)>

where the signature base is ``timestamp + "." + idempotency_key + "." + body`` (bytes: the
timestamp and key are ASCII). To verify, a receiver

1. takes the raw body bytes exactly as received (before any JSON parsing or re-encoding);
2. rejects the request unless ``X-Perimeter-Timestamp`` is ASCII digits within a replay window
   of its own clock (300 s suggested; every retry is signed afresh, so the window covers clock
   skew and transit only, not an outage);
3. computes ``"v2=" + hex(HMAC-SHA256(key=secret, msg=timestamp + b"." + key + b"." + body))``
   with ``key`` the ``Idempotency-Key`` header as received;
4. compares it with ``X-Perimeter-Signature`` in constant time (``hmac.compare_digest``);
5. processes each ``Idempotency-Key`` once (remember keys for longer than the longest outage
   to ride out) and answers 2xx to a repeated key too, or the sender keeps retrying it.

``verify_signature`` does steps 2-4. The key is signed because the receiver deduplicates on
it: with the first version of this scheme (``sha256=`` over timestamp and body only) anyone who
saw one request could resend its body under a fresh key within the window and have it
processed twice; a receiver still checking that version must move to ``v2`` (the ``v2=``
prefix makes the change loud: an old receiver answers 401 rather than trusting it).

Redirects are not followed (a redirected POST would become a GET without body): a 3xx answer
counts as a rejection. A ``Retry-After`` answer (429, 503) is honoured in both forms, seconds or
an HTTP date. The POSTs of one notifier share one pooled HTTP client (``http_client``), so a
burst of notifications reuses one TCP (and TLS) connection instead of opening one per POST.
"""

from __future__ import annotations

import email.utils
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from central.plans import Notification

IDEMPOTENCY_HEADER = "Idempotency-Key"
TIMESTAMP_HEADER = "X-Perimeter-Timestamp"
SIGNATURE_HEADER = "X-Perimeter-Signature"
SIGNATURE_VERSION = "v2="
MAX_ANSWER_BYTES = 65536  # read at most this much of the centre's answer
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


def check_key(key: str) -> None:
    """``ValueError`` unless ``key`` can travel as an HTTP header value and a JSON string."""
    if not key or len(key) > 255 or not key.isascii() or not key.isprintable():
        raise ValueError(f"idempotency key must be 1-255 printable ASCII characters: {key!r}")


def signature_base(timestamp: str, key: str, body: bytes) -> bytes:
    """What is signed: ``timestamp + "." + idempotency key + "." + body``."""
    return timestamp.encode("ascii") + b"." + key.encode("ascii") + b"." + body


def sign(secret: bytes, timestamp: str, key: str, body: bytes) -> str:
    """``X-Perimeter-Signature``: ``v2=<hex HMAC-SHA256(secret, signature_base)>``."""
    mac = hmac.new(secret, signature_base(timestamp, key, body), hashlib.sha256)
    return SIGNATURE_VERSION + mac.hexdigest()


def verify_signature(secret: bytes, timestamp: str | int, key: str, body: bytes, header: str,
                     *, max_age_s: float | None = 300.0, now: float | None = None) -> bool:
    """True if ``header`` is the signature of ``key`` and ``body`` at ``timestamp``.

    ``timestamp``, ``key`` and ``header`` are the raw ``X-Perimeter-Timestamp``,
    ``Idempotency-Key`` and ``X-Perimeter-Signature`` header values, ``body`` the raw request
    body. A timestamp more than ``max_age_s`` away from ``now`` (default: the clock) fails;
    ``None`` skips that check. The comparison is constant-time.
    """
    ts = str(timestamp).strip()
    if not ts or not ts.isascii() or not ts.isdigit():
        return False
    if not key or not key.isascii():
        return False
    if max_age_s is not None:
        clock = time.time() if now is None else now
        if abs(clock - int(ts)) > max_age_s:
            return False
    expected = sign(secret, ts, key, body).encode("ascii")
    return hmac.compare_digest(expected, header.strip().encode("utf-8", "replace"))


# -- one signed POST ---------------------------------------------------------------------------


def retry_after_s(value: str | None, now: float | None = None) -> float | None:
    """A ``Retry-After`` header in seconds from now: delay-seconds or an HTTP date (RFC 9110);
    None when absent or unreadable."""
    if value is None:
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP date is always GMT
        return None
    clock = time.time() if now is None else now
    return max(0.0, when.timestamp() - clock)


def http_client(timeout_s: float, use_env_proxy: bool = False) -> httpx.Client:
    """The pooled client of one notifier: keep-alive connections, no redirects followed,
    proxy variables ignored unless asked."""
    return httpx.Client(timeout=httpx.Timeout(timeout_s), follow_redirects=False,
                        trust_env=use_env_proxy,
                        limits=httpx.Limits(max_connections=4, max_keepalive_connections=2,
                                            keepalive_expiry=60.0))


@dataclass(frozen=True)
class Outcome:
    """What one POST got: the HTTP status (None: no HTTP answer) and a reason for the logs."""

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


def post_signed(client: httpx.Client, url: str, secret: bytes, key: str, body: bytes) -> Outcome:
    """POST ``body`` signed now under ``secret``; never raises for network or HTTP errors."""
    ts = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        IDEMPOTENCY_HEADER: key,
        TIMESTAMP_HEADER: ts,
        SIGNATURE_HEADER: sign(secret, ts, key, body),
        "User-Agent": "perimeter-central/1",
    }
    try:
        with client.stream("POST", url, content=body, headers=headers) as resp:
            answer = b""
            for chunk in resp.iter_bytes():
                answer += chunk
                if len(answer) >= MAX_ANSWER_BYTES:
                    break
            status = resp.status_code
            if 200 <= status < 300:
                return Outcome(status, f"HTTP {status}")
            detail = answer[:300].decode("utf-8", "replace").strip()
            reason = f"HTTP {status} {resp.reason_phrase}" + (f": {detail}" if detail else "")
            return Outcome(status, reason, retry_after_s(resp.headers.get("Retry-After")))
    except (httpx.HTTPError, httpx.InvalidURL, OSError, ValueError) as exc:
        return Outcome(None, f"{type(exc).__name__}: {exc}")
