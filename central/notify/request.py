"""The governance-centre request: body, idempotency key, HMAC signature, one signed POST.

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

``verify_signature`` does steps 2-4. Redirects are not followed (a redirected POST would
become a GET without body): a 3xx answer counts as a rejection.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from central.plans import Notification

IDEMPOTENCY_HEADER = "Idempotency-Key"
TIMESTAMP_HEADER = "X-Perimeter-Timestamp"
SIGNATURE_HEADER = "X-Perimeter-Signature"
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


# -- one signed POST ---------------------------------------------------------------------------


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


def build_opener(use_env_proxy: bool) -> urllib.request.OpenerDirector:
    """An opener that follows no redirects and, unless asked, ignores proxy variables."""
    handlers: list[urllib.request.BaseHandler] = [_NoRedirect()]
    if not use_env_proxy:
        handlers.append(urllib.request.ProxyHandler({}))
    return urllib.request.build_opener(*handlers)


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


def post_signed(opener: urllib.request.OpenerDirector, url: str, secret: bytes, key: str,
                body: bytes, timeout_s: float) -> Outcome:
    """POST ``body`` signed now under ``secret``; never raises for network or HTTP errors."""
    ts = str(int(time.time()))
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json",
        IDEMPOTENCY_HEADER: key,
        TIMESTAMP_HEADER: ts,
        SIGNATURE_HEADER: sign(secret, ts, body),
        "User-Agent": "perimeter-central/1",
    })
    try:
        with opener.open(request, timeout=timeout_s) as resp:
            resp.read(65536)
            return Outcome(int(resp.status), f"HTTP {resp.status}")
    except urllib.error.HTTPError as exc:
        try:
            detail = exc.read(300).decode("utf-8", "replace").strip()
        except (OSError, http.client.HTTPException):
            detail = ""
        finally:
            exc.close()
        reason = f"HTTP {exc.code} {exc.reason}" + (f": {detail}" if detail else "")
        return Outcome(exc.code, reason,
                       _retry_after(exc.headers.get("Retry-After") if exc.headers else None))
    except (OSError, http.client.HTTPException, ValueError) as exc:
        cause = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        return Outcome(None, f"{type(cause).__name__}: {cause}")

