"""The payloads that travel on the topics of ``wire.topics`` (UTF-8 JSON unless said).

Alarm events are ``zones.alarm.Alarm`` (schema ``perimeter.alarm/1``, committed as
``zones/alarm.schema.json``) and radar track updates ``zones.radar.RadarMessage``: both are
domain models of the pure core. This module holds the rest.

Edge status (``topics.edge_status``, retained, QoS 1)::

    {"state": "online" | "offline", "edge_id": "edge-1", "time": 1700000000.0,
     "clock_offset_s": 0.012, "clock_rtt_s": 0.004}

``clock_offset_s`` (present once measured) is the edge's clock minus the central's (positive:
the edge runs ahead), measured from the central's clock messages below; ``clock_rtt_s`` the
MQTT round trip it was corrected with. The edge publishes ``online`` again when its offset
first becomes known and whenever it moves by more than a second, so the retained status
always says how far the box's clock is off; the central flags alarms whose time is far from
their arrival regardless (``central.config.ClockSettings``).

``offline`` is registered as the last will before every (re)connect, so the broker publishes
it when the connection drops without a DISCONNECT; there ``time`` is when the will was
registered (the last connect), not when the link died. ``online`` follows every successful
(re)connect; a clean close publishes ``offline`` before it disconnects.

Camera status (``topics.camera_status``, retained, QoS 1)::

    {"state": "online" | "degraded" | "offline", "camera": "cam-1", "edge_id": "edge-1",
     "reason": "no frame for 5 s", "time": 1700000000.0}

After an edge crash the camera topics keep their last state while the edge's own status
(its will) says offline: consumers read both.

Central clock (``topics.central_clock``, retained, QoS 0), every few seconds::

    {"time": 1700000000.0, "worker": "w1"}

``time`` is the central's clock (the Redis server's ``TIME``, shared by every central worker)
when published. A subscriber uses only live messages for its offset: a retained one may be
old (the broker hands it to a new subscriber as it was stored).

Speaker command (``topics.speaker_command``, QoS 1, not retained): ``CommandMessage``; every
key required::

    {"command_id": "c-7f3a", "incident": "inc-12", "text": "危险区域请勿靠近",
     "clip": null, "voice": "cmn-latn-pinyin", "priority": 5, "repeat": 1,
     "sent_at": 1700000000.0}

``command_id`` matches ``[A-Za-z0-9_.-]{1,100}`` (it names the output file) and is the
deduplication key: delivery is at least once, a repeated id is ignored. ``text`` (at most
500 characters) and ``clip`` may be null but not both. ``clip`` is a relative path of a PCM
WAV file in the speaker's clips folder (no ``..``, not absolute, no backslash); when the
file is missing there the ``text`` is spoken instead, and with no text the command fails.
``voice`` is an espeak-ng voice language as ``espeak-ng --voices`` lists it, optionally
``+variant`` (``[A-Za-z0-9][A-Za-z0-9_+-]*``); the agent fails a command whose voice is not
installed, because espeak-ng would silently fall back to another one. ``priority`` 0-9,
``repeat`` 1-10, ``sent_at`` epoch seconds. Unknown keys are ignored. IP speakers that take
HTTP get the same JSON by POST.

Signed commands (``wire.signing``): the central adds ``"site"`` and ``"speaker"`` (the
command's target) and ``"sig"``, an Ed25519 signature of the rest; an agent given the
central's public key plays only commands signed by it, addressed to itself, never retained,
and with ``sent_at`` inside its replay window (stale or future ones are refused).

Speaker status (``topics.speaker_status``, QoS 1, not retained): ``StatusMessage``::

    {"command_id": "c-7f3a", "speaker": "spk-1", "state": "done", "reason": null,
     "at": 1700000001.2}

``state``: ``playing`` (audio starts), then exactly one of ``done``, ``skipped`` (reason
``cooldown``, ``preempted``, ``stale`` or ``shutdown``) or ``failed`` (reason says why:
invalid command, unknown voice, missing clip, player error). A command rejected before it
plays gets only the final state. ``command_id`` is null when the payload was not a JSON
object carrying a string ``command_id``.

Speaker availability (``topics.speaker_availability``, retained, QoS 1): plain text
``online`` / ``offline``; ``offline`` is the last will and is also published on a clean
shutdown.
"""

from __future__ import annotations

import json
import time
from pathlib import PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

COMMAND_ID_PATTERN = r"^[A-Za-z0-9_.-]{1,100}$"
VOICE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_+-]*$"
ONLINE, OFFLINE = "online", "offline"

State = Literal["playing", "done", "skipped", "failed"]


def edge_status(state: str, edge_id: str, at: float | None = None, *,
                clock_offset_s: float | None = None, clock_rtt_s: float | None = None) -> str:
    """The JSON of an edge's status message (``at`` defaults to now); the clock fields only
    once the edge has measured them."""
    out: dict[str, object] = {"state": state, "edge_id": edge_id,
                              "time": time.time() if at is None else at}
    if clock_offset_s is not None:
        out["clock_offset_s"] = round(clock_offset_s, 4)
    if clock_rtt_s is not None:
        out["clock_rtt_s"] = round(clock_rtt_s, 4)
    return json.dumps(out)


def central_clock(at: float, worker: str) -> str:
    """The JSON of the central's clock message."""
    return json.dumps({"time": at, "worker": worker})


def parse_central_clock(payload: bytes | bytearray) -> float | None:
    """The central's time in a clock message; None unless it is a finite epoch time."""
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    t = data.get("time") if isinstance(data, dict) else None
    if isinstance(t, bool) or not isinstance(t, int | float) or not 0 < t < 4_102_444_800:
        return None
    return float(t)


def camera_status(state: str, camera: str, edge_id: str, reason: str,
                  at: float | None = None) -> str:
    """The JSON of a camera's status message (``at`` defaults to now)."""
    return json.dumps({"state": state, "camera": camera, "edge_id": edge_id, "reason": reason,
                       "time": time.time() if at is None else at})


def status_state(payload: bytes | bytearray) -> str | None:
    """The ``state`` of an edge or camera status message; None if it is not one."""
    try:
        data = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    state = data.get("state") if isinstance(data, dict) else None
    return state if isinstance(state, str) else None


class CommandMessage(BaseModel):
    """A speaker command as it travels; see the module docstring."""

    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)

    command_id: str = Field(pattern=COMMAND_ID_PATTERN)
    incident: str
    text: str | None = Field(max_length=500)
    clip: str | None
    voice: str = Field(pattern=VOICE_PATTERN, max_length=64)  # checked again by the agent
    priority: int = Field(ge=0, le=9)
    repeat: int = Field(ge=1, le=10)
    sent_at: float
    site: str | None = None  # the target, signed with the rest (``wire.signing``)
    speaker: str | None = None

    @model_validator(mode="after")
    def _check(self) -> CommandMessage:
        if not (self.text and self.text.strip()) and not self.clip:
            raise ValueError("a command needs a non-empty text or a clip")
        if self.clip is not None:
            p = PurePosixPath(self.clip)
            if (not self.clip or p.is_absolute() or ".." in p.parts or "\\" in self.clip
                    or "\x00" in self.clip):
                raise ValueError(f"clip {self.clip!r} must be a relative path inside the "
                                 "clips folder (no '..', not absolute)")
        return self

    def to_bytes(self) -> bytes:
        return json.dumps(self.fields(), ensure_ascii=False).encode("utf-8")

    def fields(self) -> dict[str, Any]:
        """The JSON object (``site`` and ``speaker`` left out when unset)."""
        data = self.model_dump()
        for k in ("site", "speaker"):
            if data[k] is None:
                del data[k]
        return data


class StatusMessage(BaseModel):
    """A speaker's status report as it travels; ``parse_status`` reads one."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    command_id: str | None
    speaker: str
    state: State
    reason: str | None = None
    at: float

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode("utf-8")


def parse_status(payload: bytes) -> StatusMessage:
    """A status report from a speaker; ``ValueError`` if malformed."""
    return StatusMessage.model_validate_json(payload)


def describe(err: ValidationError) -> str:
    """The ``failed`` reason for a command that broke the wire rules: every field's complaint."""
    parts = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"])
        parts.append(f"{loc}: {e['msg']}" if loc else str(e["msg"]))
    return "invalid command: " + "; ".join(parts)
