"""The alarm: the wire contract between edge workers and the central aggregator.

Versioned by ``schema`` (``perimeter.alarm/1``); ``zones/alarm.schema.json`` is generated from
this model and checked by the tests, and ``docs`` in the README describe each field. A change
that breaks consumers bumps the version. Each alarm is one *episode* (a person inside a fence,
a crowd above its threshold) with a stable ``id``; its events (``raised`` then ``cleared``)
share that id and differ in ``state`` and ``event_id``, so delivery at least once is harmless.

The model is also the central's first line of defence against hostile or broken messages, so
it bounds what it accepts rather than trusting the sender: ``event_id`` must be ``id:state``
(deduplication keys on it, so a free-form one could pass one event off as another); every
number must be finite (JSON has no NaN, and one NaN makes an incident unencodable for the API
and the webhook); times lie between the epoch and ``MAX_EPOCH`` (a ``time`` of 1e300 is not a
clock error but garbage); integers fit a JSON consumer's double (``MAX_INT``); strings and
lists have lengths no real alarm comes near. Plausible-but-wrong times (an edge clock minutes
or years off) pass here: the central flags them against its own clock instead.
"""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from zones.geometry import Risk, ZoneKind

SCHEMA = "perimeter.alarm/1"
MAX_EPOCH = 4_102_444_800.0  # 2100-01-01T00:00:00Z: a later time is garbage, not a clock error
MAX_INT = 2 ** 53  # the largest integer a JSON consumer (JavaScript) holds exactly
MAX_ID = 128  # longest camera, zone, profile or tripwire id (config ids are far shorter)
MAX_LIST = 10_000  # most boxes, scores or track ids in one alarm
_NAMESPACE = uuid.UUID("6f1c2a52-7d0b-4f7e-9b8e-51a3c0d1e2f4")


class AlarmKind(StrEnum):
    INTRUSION = "intrusion"
    LINE_CROSSING = "line_crossing"
    DWELL = "dwell"
    CROWD_DENSITY = "crowd_density"


class AlarmState(StrEnum):
    RAISED = "raised"
    CLEARED = "cleared"


class Severity(StrEnum):
    CRITICAL = "critical"
    MAJOR = "major"
    MINOR = "minor"


_SEVERITY = {Risk.HIGH: Severity.CRITICAL, Risk.MEDIUM: Severity.MAJOR, Risk.LOW: Severity.MINOR}


def severity_for(risk: Risk) -> Severity:
    """Severity follows the zone's assessed risk grade (high, medium, low)."""
    return _SEVERITY[risk]


def alarm_id(camera: str, zone: str, kind: AlarmKind, key: str, first_frame: int) -> str:
    """Deterministic id: a replay of the same footage yields the same ids (diffable output)."""
    return str(uuid.uuid5(_NAMESPACE, f"{camera}|{zone}|{kind}|{key}|{first_frame}"))


class Evidence(BaseModel):
    """What the rule saw: boxes of the people involved, and the count or density."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    boxes: list[tuple[float, float, float, float]] = Field(
        default_factory=list, max_length=MAX_LIST,
        description="x1, y1, x2, y2 in source pixels")
    scores: list[float] = Field(default_factory=list, max_length=MAX_LIST,
                                description="detector confidence per box")
    count: int | None = Field(default=None, ge=0, le=MAX_INT,
                              description="people inside the zone")
    density: float | None = Field(default=None, ge=0, description="people per m^2")
    area_m2: float | None = Field(default=None, gt=0, description="zone ground area")
    dwell_s: float | None = Field(default=None, ge=0, description="seconds inside so far")
    line: str | None = Field(default=None, max_length=MAX_ID,
                             description="tripwire id for line crossings")
    reason: str | None = Field(default=None, max_length=500,
                               description="why a cleared event was sent")
    # Radar and fused alarms (optional; camera alarms leave them empty).
    sources: list[Annotated[str, Field(max_length=MAX_ID + 16)]] = Field(
        default_factory=list, max_length=16,
        description="sensors that saw it: radar:<id>, camera:<id>")
    confidence: float | None = Field(default=None, ge=0, le=1,
                                     description="radar-only or fused confidence, 0..1")
    position_m: tuple[float, float] | None = Field(
        default=None, description="ground position in site metres (x, y)")
    speed_mps: float | None = Field(default=None, description="the radar's speed, m/s")
    radar_track: int | None = Field(default=None, ge=-MAX_INT, le=MAX_INT,
                                    description="the radar's track id")
    camera_track: int | None = Field(default=None, ge=-MAX_INT, le=MAX_INT,
                                     description="the camera track fused with the radar track")
    match_m: float | None = Field(default=None, ge=0,
                                  description="radar-camera distance of a fused match, m")
    snapshot: str | None = Field(
        default=None, max_length=512,
        description="JPEG of the raising frame with the boxes drawn, relative to the edge's "
                    "snapshot_dir: {camera}/{alarm id}.jpg")


class Alarm(BaseModel):
    """One alarm event. See the module docstring for the lifecycle."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    schema_: Literal["perimeter.alarm/1"] = Field(default="perimeter.alarm/1", alias="schema")
    id: str = Field(min_length=1, max_length=64,
                    description="stable id of the alarm episode (uuid)")
    event_id: str = Field(max_length=80, description="unique id of this event: id:state")
    kind: AlarmKind
    state: AlarmState
    severity: Severity
    source: Literal["camera", "radar", "fused"] = Field(
        default="camera", description="camera; radar (camera then names the radar); fused "
                                      "(radar and camera saw it: evidence.sources)")
    camera: str = Field(min_length=1, max_length=MAX_ID)
    zone: str = Field(min_length=1, max_length=MAX_ID)
    zone_kind: ZoneKind
    risk: Risk
    track_id: int | None = Field(default=None, ge=-MAX_INT, le=MAX_INT,
                                 description="the person, for per-track rules")
    track_ids: list[Annotated[int, Field(ge=-MAX_INT, le=MAX_INT)]] = Field(
        default_factory=list, max_length=MAX_LIST, description="everyone involved")
    frame: int = Field(ge=1, le=MAX_INT,
                       description="1-based index of the frame that emitted this event")
    time: float = Field(ge=0, le=MAX_EPOCH, description="frame time of this event, epoch "
                                                        "seconds (the edge's clock)")
    first_frame: int = Field(ge=1, le=MAX_INT, description="frame where the condition started")
    first_time: float = Field(ge=0, le=MAX_EPOCH)
    profile: str = Field(default="default", max_length=MAX_ID,
                         description="threshold profile in force")
    evidence: Evidence = Field(default_factory=Evidence)

    @model_validator(mode="after")
    def _event_id(self) -> Alarm:
        """Deduplication keys on ``event_id``: it must name this episode and state, or a
        message could pass one event off as another (or mask a real one)."""
        if self.event_id != f"{self.id}:{self.state.value}":
            raise ValueError("event_id must be id:state")
        return self

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Alarm:
        return cls.model_validate_json(text)

    @classmethod
    def make(cls, *, kind: AlarmKind, state: AlarmState, camera: str, zone: str,
             zone_kind: ZoneKind, risk: Risk, key: str, first_frame: int, first_time: float,
             frame: int, time: float, track_id: int | None, track_ids: list[int],
             profile: str, evidence: Evidence) -> Alarm:
        """Build an event, deriving ids and severity so rules cannot get them inconsistent."""
        aid = alarm_id(camera, zone, kind, key, first_frame)
        return cls(
            id=aid, event_id=f"{aid}:{state.value}", kind=kind, state=state,
            severity=severity_for(risk), camera=camera, zone=zone, zone_kind=zone_kind,
            risk=risk, track_id=track_id, track_ids=track_ids, frame=frame, time=time,
            first_frame=first_frame, first_time=first_time, profile=profile, evidence=evidence,
        )
