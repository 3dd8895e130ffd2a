"""Alarm events for tests: built the way the edge's rules build them (``Alarm.make``)."""

from __future__ import annotations

import uuid

from zones.alarm import Alarm, AlarmKind, AlarmState, Evidence
from zones.geometry import Risk, ZoneKind


def unique(tag: str) -> str:
    """A name no other test (or earlier run on a shared broker) uses."""
    return f"{tag}-{uuid.uuid4().hex[:10]}"


def alarm(zone: str, t: float, *, camera: str = "cam1", track: int = 1,
          state: AlarmState = AlarmState.RAISED, first: float | None = None,
          risk: Risk = Risk.HIGH, kind: AlarmKind = AlarmKind.INTRUSION) -> Alarm:
    """A water-zone alarm of ``track`` in ``zone`` at time ``t`` (an episode that began at
    ``first``, default ``t``)."""
    first_t = t if first is None else first
    return Alarm.make(kind=kind, state=state, camera=camera, zone=zone,
                      zone_kind=ZoneKind.WATER, risk=risk, key=f"track:{track}",
                      first_frame=int(first_t) + 1, first_time=first_t, frame=int(t) + 1,
                      time=t, track_id=track, track_ids=[track], profile="default",
                      evidence=Evidence())


def numbered(i: int, camera: str = "cam-1", zone: str = "cliff-east",
             kind: AlarmKind = AlarmKind.INTRUSION,
             state: AlarmState = AlarmState.RAISED) -> Alarm:
    """The ``i``-th of a series of distinct cliff alarms, with a box and a score."""
    return Alarm.make(
        kind=kind, state=state, camera=camera, zone=zone, zone_kind=ZoneKind.CLIFF,
        risk=Risk.HIGH, key=f"track-{i}", first_frame=10 + i, first_time=1_700_000_000.0 + i,
        frame=12 + i, time=1_700_000_000.5 + i, track_id=i, track_ids=[i], profile="default",
        evidence=Evidence(boxes=[(1.0, 2.0, 30.0, 80.0)], scores=[0.87], count=1))
