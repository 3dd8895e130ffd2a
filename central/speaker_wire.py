"""Loudspeaker wire format: topics and payloads, shared by the central and the speaker agent.

MQTT 3.1.1; ``site`` and ``speaker`` are one topic segment each: non-empty, none of
``+ # /`` or NUL.

``perimeter/v1/{site}/speaker/{speaker}/command``
    Commands from the central, QoS 1, not retained. UTF-8 JSON object, every key required::

        {"command_id": "c-7f3a", "incident": "inc-12", "text": "危险区域请勿靠近",
         "clip": null, "voice": "cmn-latn-pinyin", "priority": 5, "repeat": 1,
         "sent_at": 1700000000.0}

    ``command_id`` matches ``[A-Za-z0-9_.-]{1,100}`` (it names the output file) and is the
    deduplication key: delivery is at least once, a repeated id is ignored. ``text`` (at most
    500 characters) and ``clip`` may be null but not both. ``clip`` is a relative path of a PCM
    WAV file in the speaker's clips folder (no ``..``, not absolute, no backslash); when the
    file is missing there the ``text`` is spoken instead, and with no text the command fails.
    ``voice`` is an espeak-ng voice language as ``espeak-ng --voices`` lists it, optionally
    ``+variant`` (``[A-Za-z0-9][A-Za-z0-9_+-]*``); the agent fails a command whose voice is
    not installed, because espeak-ng would silently fall back to another one. ``priority`` 0-9,
    ``repeat`` 1-10, ``sent_at`` epoch seconds. Unknown keys are ignored.

``perimeter/v1/{site}/speaker/{speaker}/status``
    Reports from the speaker, QoS 1, not retained::

        {"command_id": "c-7f3a", "speaker": "spk-1", "state": "done", "reason": null,
         "at": 1700000001.2}

    ``state``: ``playing`` (audio starts), then exactly one of ``done``, ``skipped`` (reason
    ``cooldown``, ``preempted``, ``stale`` or ``shutdown``) or ``failed`` (reason says why:
    invalid command, unknown voice, missing clip, player error). A command rejected before
    it plays gets only the final state. ``command_id`` is null when the payload was not a
    JSON object carrying a string ``command_id``.

``perimeter/v1/{site}/speaker/{speaker}/availability``
    ``online`` / ``offline`` (plain text), QoS 1, retained; ``offline`` is the last will, and
    is also published on a clean shutdown.
"""

from __future__ import annotations

import json
from pathlib import PurePosixPath
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from central.plans import SpeakerCommand

PREFIX = "perimeter/v1"
COMMAND_ID_PATTERN = r"^[A-Za-z0-9_.-]{1,100}$"
VOICE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_+-]*$"
_FORBIDDEN = ("+", "#", "/", "\x00")

State = Literal["playing", "done", "skipped", "failed"]


def segment(name: str, value: str) -> str:
    """``value`` if it can be one topic segment; ``ValueError`` naming ``name`` if not."""
    if not value or any(c in value for c in _FORBIDDEN):
        raise ValueError(f"{name} {value!r} is not a valid MQTT topic segment: it must be "
                         "non-empty and contain none of '+', '#', '/', NUL")
    return value


def _topic(site: str, speaker: str, leaf: str) -> str:
    return f"{PREFIX}/{segment('site', site)}/speaker/{segment('speaker', speaker)}/{leaf}"


def command_topic(site: str, speaker: str) -> str:
    return _topic(site, speaker, "command")


def status_topic(site: str, speaker: str) -> str:
    return _topic(site, speaker, "status")


def availability_topic(site: str, speaker: str) -> str:
    return _topic(site, speaker, "availability")


def status_filter(site: str | None = None) -> str:
    """Subscription filter for every speaker's status (of one site, or of all sites)."""
    return f"{PREFIX}/{'+' if site is None else segment('site', site)}/speaker/+/status"


class CommandMessage(BaseModel):
    """A command as it travels; see the module docstring."""

    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)

    command_id: str = Field(pattern=COMMAND_ID_PATTERN)
    incident: str
    text: str | None = Field(max_length=500)
    clip: str | None
    voice: str = Field(pattern=VOICE_PATTERN, max_length=64)  # checked again by the agent
    priority: int = Field(ge=0, le=9)
    repeat: int = Field(ge=1, le=10)
    sent_at: float

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


class StatusMessage(BaseModel):
    """A status report as it travels; ``parse_status`` reads one on the central side."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    command_id: str | None
    speaker: str
    state: State
    reason: str | None = None
    at: float

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode("utf-8")


def command_payload(cmd: SpeakerCommand, command_id: str, sent_at: float) -> bytes:
    """The JSON command for ``cmd``; ``ValueError`` (pydantic's) if it breaks the wire rules."""
    s = cmd.speech
    msg = CommandMessage(command_id=command_id, incident=cmd.incident, text=s.text,
                         clip=s.clip, voice=s.voice, priority=s.priority, repeat=s.repeat,
                         sent_at=float(sent_at))
    return json.dumps(msg.model_dump(), ensure_ascii=False).encode("utf-8")


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
