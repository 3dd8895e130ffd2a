"""The HTTP API's view of every incident, and its route to each incident's owner.

Reads come from the incident hash in Redis (every worker's incidents, not only this
process's); acknowledge or resolve run directly when this process owns the incident's
partition, otherwise travel the partition stream to the worker that does and wait for its
reply (``central.streams``, ``central.incidents.worker``).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import uuid
from typing import Any, Protocol

from central.incidents.aggregator import Aggregator
from central.incidents.book import LifecycleError
from central.incidents.worker import StreamWorker
from central.streams import FencedOut, PartitionKeys, partition_of

log = logging.getLogger(__name__)


def utc_day(value: Any) -> str | None:
    """``YYYY-MM-DD`` (UTC) of an epoch time read from storage; None for anything that is not
    a finite time between the epoch and the year 9999. Incidents stored before alarm times
    were checked (``time: 1e300``, NaN) must not make a statistics page fail."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    try:
        return dt.datetime.fromtimestamp(value, dt.UTC).date().isoformat()
    except (OverflowError, OSError, ValueError):
        return None


def _load(raw: bytes | str) -> dict[str, Any]:
    """An incident as stored; a NaN or Infinity that older versions let into storage reads as
    null, so no answer of the API fails to encode."""
    out: dict[str, Any] = json.loads(raw, parse_constant=lambda _: None)
    return out


def _time(value: Any) -> float:
    """A stored time for sorting (anything unreadable sorts last)."""
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else 0.0


class CommandTimeout(RuntimeError):
    """The owning worker did not answer in time (it may be restarting)."""


class IncidentOps:
    """The API's view of every incident and its route to each incident's owner."""

    def __init__(self, aggregator: Aggregator, keys: PartitionKeys,
                 worker: StreamWorker | None, *, reply_timeout_s: float = 5.0):
        self.aggregator = aggregator
        self.r = aggregator.store.r
        self.keys = keys
        self.worker = worker
        self.reply_timeout_s = reply_timeout_s

    def incidents(self) -> list[dict[str, Any]]:
        """All incidents in Redis, newest first."""
        raw: dict[bytes, bytes] = self.r.hgetall(  # type: ignore[assignment]
            self.aggregator.store.incidents_key)
        out = [_load(v) for v in raw.values()]
        return sorted(out, key=lambda d: -_time(d.get("opened_at")))

    def get(self, incident_id: str) -> dict[str, Any]:
        """One incident; KeyError if unknown."""
        raw = self.r.hget(self.aggregator.store.incidents_key, incident_id)
        if raw is None:
            raise KeyError(f"no incident {incident_id}")
        return _load(raw)

    def acknowledge(self, incident_id: str, who: str) -> dict[str, Any]:
        return self._route("acknowledge", incident_id, {"by": who})

    def resolve(self, incident_id: str, who: str, note: str) -> dict[str, Any]:
        return self._route("resolve", incident_id, {"by": who, "note": note})

    def _route(self, op: str, incident_id: str, args: dict[str, str]) -> dict[str, Any]:
        inc = self.get(incident_id)
        if self.worker is not None and self.worker.owns(inc["site"], inc["group"]):
            fn = getattr(self.aggregator, op)
            try:
                return dict(fn(incident_id, *args.values()).to_dict())
            except FencedOut:  # the partition moved on meanwhile: ask its new owner
                log.info("incident's partition moved during a command; routing it",
                         extra={"incident": incident_id, "op": op})
        request = str(uuid.uuid4())
        p = partition_of(inc["site"], inc["group"], self.keys.partitions)
        self.r.xadd(self.keys.stream(p), {"k": "cmd", "op": op, "incident": incident_id,
                                          "args": json.dumps(args), "reply": request})
        got: Any = self.r.blpop([self.keys.reply(request)],
                                timeout=self.reply_timeout_s)
        if got is None:
            raise CommandTimeout(f"no worker answered for incident {incident_id} within "
                                 f"{self.reply_timeout_s:g}s; it will still be applied")
        reply = json.loads(got[1])
        if reply["ok"]:
            out: dict[str, Any] = reply["incident"]
            return out
        if reply["code"] == 404:
            raise KeyError(reply["error"])
        raise LifecycleError(reply["error"])


class Ops(Protocol):
    """What the API needs of the incidents (``IncidentOps`` or ``LocalOps``)."""

    def incidents(self) -> list[dict[str, Any]]: ...

    def get(self, incident_id: str) -> dict[str, Any]: ...

    def acknowledge(self, incident_id: str, who: str) -> dict[str, Any]: ...

    def resolve(self, incident_id: str, who: str, note: str) -> dict[str, Any]: ...


class LocalOps:
    """One aggregator's own book, no routing (an aggregator used without workers)."""

    def __init__(self, aggregator: Aggregator):
        self.aggregator = aggregator

    def incidents(self) -> list[dict[str, Any]]:
        return [i.to_dict() for i in self.aggregator.incidents()]

    def get(self, incident_id: str) -> dict[str, Any]:
        with self.aggregator.lock:
            return self.aggregator.book.get(incident_id).to_dict()

    def acknowledge(self, incident_id: str, who: str) -> dict[str, Any]:
        return self.aggregator.acknowledge(incident_id, who).to_dict()

    def resolve(self, incident_id: str, who: str, note: str) -> dict[str, Any]:
        return self.aggregator.resolve(incident_id, who, note).to_dict()
