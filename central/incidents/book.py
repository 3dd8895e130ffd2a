"""Incidents: alarms merged across sensors, kept until a person closes them (closed loop).

Pure state machine, no broker or database: ``IncidentBook.apply`` takes one alarm event and
says which incident it joined; ``acknowledge``/``resolve`` record the people who closed the
loop; ``due_escalations`` lists incidents nobody acknowledged in time. The Redis store
persists every change as an event so a restarted aggregator rebuilds the same book.

Merging: alarm events of the same zone group (a zone and its configured neighbours, from
every camera and radar of the site) join the open incident of that group when it saw
activity within ``merge_window_s``; otherwise they open a new incident. A ``cleared`` event
updates its alarm inside the incident and never opens one. Events are idempotent by
``event_id``: delivery from the edge is at least once.

Time: every incident time (opened, last activity, hence the merge window, escalation and
retention) is the central's clock when the alarm *arrived*, never the alarm's own ``time``,
which is the edge's clock and only evidence. An edge whose clock jumped ten years ahead must
not open an incident that swallows every real alarm of its zone for ten years, nor one stamped
in 1970 escalate every second. ``TimePolicy`` compares the two and flags the alarm: ``future``
(the edge's clock runs ahead; handled as arriving now), ``late`` (it arrived long after it
happened, e.g. an outbox emptying after an outage) or ``past`` (very late, or a clock far
behind). An incident opened by a late or past alarm is *late* (plans decide what it still
triggers) until a timely alarm joins it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from zones.alarm import Alarm, AlarmState, Severity

_RANK = {Severity.MINOR: 0, Severity.MAJOR: 1, Severity.CRITICAL: 2}


class Status(StrEnum):
    RAISED = "raised"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class LifecycleError(ValueError):
    """An operation the incident's state does not allow (e.g. resolving twice)."""


@dataclass
class Incident:
    id: str
    site: str
    group: str
    zone: str
    zone_kind: str
    risk: str
    severity: Severity
    opened_at: float
    last_activity: float
    status: Status = Status.RAISED
    late: bool = False  # opened by a late alarm, no timely one since
    alarms: dict[str, dict[str, object]] = field(default_factory=dict)  # alarm id -> summary
    cameras: set[str] = field(default_factory=set)
    sources: set[str] = field(default_factory=set)
    kinds: set[str] = field(default_factory=set)
    escalation_level: int = 0
    escalated_at: float | None = None  # central clock of the last escalation
    acknowledged_by: str | None = None
    acknowledged_at: float | None = None
    resolved_by: str | None = None
    resolved_at: float | None = None
    note: str | None = None

    @property
    def active_alarms(self) -> int:
        return sum(1 for a in self.alarms.values() if a["state"] == AlarmState.RAISED.value)

    def to_dict(self) -> dict[str, object]:
        return {
            "id": self.id, "site": self.site, "group": self.group, "zone": self.zone,
            "zone_kind": self.zone_kind, "risk": self.risk, "severity": self.severity.value,
            "status": self.status.value, "late": self.late, "opened_at": self.opened_at,
            "last_activity": self.last_activity, "alarms": self.alarms,
            "active_alarms": self.active_alarms, "cameras": sorted(self.cameras),
            "sources": sorted(self.sources), "kinds": sorted(self.kinds),
            "escalation_level": self.escalation_level, "escalated_at": self.escalated_at,
            "acknowledged_by": self.acknowledged_by, "acknowledged_at": self.acknowledged_at,
            "resolved_by": self.resolved_by, "resolved_at": self.resolved_at, "note": self.note,
        }


@dataclass(frozen=True)
class Applied:
    """What one alarm event did to the book. ``flag``: the alarm's time against its arrival
    (``TimePolicy``); ``now_timely``: a timely alarm joined a late incident, which is late no
    more (the plan's first step is due now)."""

    incident: Incident
    new_incident: bool
    new_alarm: bool
    duplicate: bool = False
    flag: str | None = None
    now_timely: bool = False


LATE_FLAGS = frozenset({"late", "past"})


@dataclass(frozen=True)
class TimePolicy:
    """How far an alarm's own time may be from its arrival before it is flagged (seconds;
    ``central.clock`` in the config)."""

    late_s: float = 60.0
    past_s: float = 86400.0
    future_s: float = 300.0

    def flag(self, alarm_time: float, arrived: float) -> str | None:
        """``past``, ``late``, ``future`` or None (on time)."""
        age = arrived - alarm_time
        if age > self.past_s:
            return "past"
        if age > self.late_s:
            return "late"
        if -age > self.future_s:
            return "future"
        return None


def zone_groups(neighbours: Mapping[str, Iterable[str]]) -> dict[str, str]:
    """Zone -> group name, joining neighbours transitively (union-find); name = min zone."""
    parent: dict[str, str] = {}

    def find(z: str) -> str:
        parent.setdefault(z, z)
        while parent[z] != z:
            parent[z] = parent[parent[z]]
            z = parent[z]
        return z

    for zone, near in neighbours.items():
        for other in near:
            a, b = find(zone), find(other)
            if a != b:
                parent[max(a, b)] = min(a, b)
    return {z: find(z) for z in parent}


class IncidentBook:
    """Every incident not yet resolved, plus the recently resolved ones."""

    def __init__(self, merge_window_s: float = 120.0,
                 neighbours: Mapping[str, Iterable[str]] | None = None,
                 time_policy: TimePolicy | None = None):
        self.merge_window_s = merge_window_s
        self.time_policy = time_policy or TimePolicy()
        self.groups = zone_groups(neighbours or {})
        self.incidents: dict[str, Incident] = {}
        self._open_by_group: dict[tuple[str, str], str] = {}
        self._alarm_to_incident: dict[str, str] = {}
        self._seen_events: set[str] = set()

    def restore(self, inc: Incident) -> None:
        """Put back an incident loaded from storage, with its indexes and seen events."""
        self.incidents[inc.id] = inc
        if inc.status is not Status.RESOLVED:
            current = self._open_by_group.get((inc.site, inc.group))
            if current is None or self.incidents[current].opened_at < inc.opened_at:
                self._open_by_group[(inc.site, inc.group)] = inc.id
        for aid, summary in inc.alarms.items():
            self._alarm_to_incident[aid] = inc.id
            self._seen_events.add(f"{aid}:raised")
            if summary["state"] == AlarmState.CLEARED.value:
                self._seen_events.add(f"{aid}:cleared")

    def unsee(self, event_id: str) -> None:
        """Forget that an event was seen (it could not be stored): its redelivery applies."""
        self._seen_events.discard(event_id)

    def group_of(self, zone: str) -> str:
        return self.groups.get(zone, zone)

    def apply(self, alarm: Alarm, site: str, incident_id: str,
              arrived: float) -> Applied | None:
        """Merge one event that reached the central at ``arrived`` (its clock); ``incident_id``
        names a new incident if one is opened. Returns None for a ``cleared`` event of an
        alarm the book never saw."""
        known = self._alarm_to_incident.get(alarm.id)
        if alarm.event_id in self._seen_events and known is not None:
            return Applied(self.incidents[known], False, False, duplicate=True)
        self._seen_events.add(alarm.event_id)
        flag = self.time_policy.flag(alarm.time, arrived)
        late = flag in LATE_FLAGS
        if known is not None:
            inc = self.incidents[known]
            new_inc = False
        elif alarm.state is AlarmState.CLEARED:
            return None
        else:
            inc, new_inc = self._incident_for(alarm, site, incident_id, arrived, late)
        new_alarm = alarm.id not in inc.alarms
        inc.alarms[alarm.id] = {
            "kind": alarm.kind.value, "state": alarm.state.value, "camera": alarm.camera,
            "source": alarm.source, "zone": alarm.zone, "track_ids": alarm.track_ids,
            "first_time": alarm.first_time, "last_time": alarm.time, "frame": alarm.frame,
            "arrived_at": arrived, "time_flag": flag,
            "evidence": alarm.evidence.model_dump(exclude_none=True),
        }
        inc.cameras.add(alarm.camera)
        inc.sources.add(alarm.source)
        inc.kinds.add(alarm.kind.value)
        inc.last_activity = max(inc.last_activity, arrived)
        if _RANK[alarm.severity] > _RANK[inc.severity]:
            inc.severity = alarm.severity
        now_timely = (inc.late and not new_inc and not late
                      and alarm.state is AlarmState.RAISED and inc.status is Status.RAISED)
        if now_timely:
            inc.late = False
        self._alarm_to_incident[alarm.id] = inc.id
        return Applied(inc, new_inc, new_alarm, flag=flag, now_timely=now_timely)

    def _incident_for(self, alarm: Alarm, site: str, incident_id: str, arrived: float,
                      late: bool) -> tuple[Incident, bool]:
        group = self.group_of(alarm.zone)
        open_id = self._open_by_group.get((site, group))
        if open_id is not None:
            inc = self.incidents[open_id]
            # |...|: an incident stored by an older version with a time far ahead of now
            # (the edge's clock) must not capture its group either
            if abs(arrived - inc.last_activity) <= self.merge_window_s:
                return inc, False
        inc = Incident(id=incident_id, site=site, group=group, zone=alarm.zone,
                       zone_kind=alarm.zone_kind.value, risk=alarm.risk.value,
                       severity=alarm.severity, opened_at=arrived, last_activity=arrived,
                       late=late)
        self.incidents[inc.id] = inc
        self._open_by_group[(site, group)] = inc.id
        return inc, True

    def get(self, incident_id: str) -> Incident:
        try:
            return self.incidents[incident_id]
        except KeyError:
            raise KeyError(f"no incident {incident_id}") from None

    def acknowledge(self, incident_id: str, who: str, now: float) -> Incident:
        inc = self.get(incident_id)
        if inc.status is not Status.RAISED:
            raise LifecycleError(f"incident {incident_id} is {inc.status.value}")
        inc.status, inc.acknowledged_by, inc.acknowledged_at = Status.ACKNOWLEDGED, who, now
        return inc

    def resolve(self, incident_id: str, who: str, note: str, now: float) -> Incident:
        """Close the loop; only a person (or an explicit rule) does this, with a note."""
        inc = self.get(incident_id)
        if inc.status is Status.RESOLVED:
            raise LifecycleError(f"incident {incident_id} is already resolved")
        if not note.strip():
            raise LifecycleError("resolving needs a note saying what was done")
        if inc.acknowledged_by is None:
            inc.acknowledged_by, inc.acknowledged_at = who, now
        inc.status, inc.resolved_by, inc.resolved_at, inc.note = Status.RESOLVED, who, now, note
        key = (inc.site, inc.group)
        if self._open_by_group.get(key) == inc.id:
            del self._open_by_group[key]
        return inc

    def due_escalations(self, now: float, ack_timeout_s: Mapping[str, float],
                        repeat_s: float) -> list[Incident]:
        """Unacknowledged incidents past their risk's timeout (then every ``repeat_s``), one
        level at a time: after an outage of the central, or for an incident stored by an
        older version with a time from the edge's clock, levels come one ``repeat_s`` apart,
        never one per tick; a time stored ahead of ``now`` counts from ``now``."""
        due = []
        for inc in self.incidents.values():
            if inc.status is not Status.RAISED:
                continue
            if inc.opened_at > now:
                inc.opened_at = now
            if inc.escalated_at is not None and now - inc.escalated_at < repeat_s:
                continue
            limit = ack_timeout_s.get(inc.risk, 60.0) + inc.escalation_level * repeat_s
            if now - inc.opened_at >= limit:
                inc.escalation_level += 1
                inc.escalated_at = now
                due.append(inc)
        return due

    def evict(self, which: Callable[[Incident], bool]) -> int:
        """Drop incidents from memory (another worker owns them now; they stay in Redis)."""
        gone = [k for k, i in self.incidents.items() if which(i)]
        for k in gone:
            inc = self.incidents.pop(k)
            if self._open_by_group.get((inc.site, inc.group)) == k:
                del self._open_by_group[(inc.site, inc.group)]
            self._forget_alarms(inc)
        return len(gone)

    def _forget_alarms(self, inc: Incident) -> None:
        for aid in inc.alarms:
            self._alarm_to_incident.pop(aid, None)
            self._seen_events.discard(f"{aid}:raised")
            self._seen_events.discard(f"{aid}:cleared")

    def forget_resolved(self, before: float) -> int:
        """Drop resolved incidents older than ``before`` from memory (they stay in Redis)."""
        old = [k for k, i in self.incidents.items()
               if i.status is Status.RESOLVED and (i.resolved_at or 0) < before]
        for k in old:
            self._forget_alarms(self.incidents.pop(k))
        return len(old)
