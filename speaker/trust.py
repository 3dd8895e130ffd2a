"""Which commands a speaker agent may play: the checks before the playing rules.

A loudspeaker that says whatever anyone publishes is a megaphone for pranks and a way to
drown real warnings (a forged priority-9 command blocks lower ones through the cooldown). So,
in this order, ``CommandGate.check`` refuses:

* a retained message (the central never retains commands; a retained forgery would play
  again at every restart of the speaker);
* a payload that is not a JSON object (reported ``failed``, as before);
* with the central's public key (``wire.signing``): an unsigned command, a bad signature, or
  one signed for another site or speaker;
* a command that breaks the wire rules (``failed``, every field's complaint);
* by ``sent_at`` (the replay window, ``wire.signing.Window``): one already seen (ignored, as
  at-least-once delivery repeats), one older than ``max_age_s`` (``skipped`` ``stale``: e.g.
  queued by the broker while the speaker was offline) or more than ``max_ahead_s`` ahead of
  this clock (``skipped`` ``future``).

Refusals of the first and third kind are counted by reason in ``rejected`` and logged as
warnings: they are attacks or a misconfigured central, and an operator must see them.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from wire.messages import CommandMessage, State, describe
from wire.signing import CommandVerifier, Window

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Verdict:
    """``cmd`` to play, or why not: the status to report (None: say nothing)."""

    cmd: CommandMessage | None
    command_id: str | None = None
    state: State | None = None
    reason: str | None = None


class CommandGate:
    """The checks of the module docstring for one speaker (thread-safe)."""

    def __init__(self, site: str, speaker: str, *, verifier: CommandVerifier | None,
                 max_age_s: float | None = 60.0, max_ahead_s: float = 10.0):
        self.site, self.speaker, self.verifier = site, speaker, verifier
        self.window = Window(math.inf if max_age_s is None else max_age_s, max_ahead_s)
        self.rejected: Counter[str] = Counter()
        self._lock = threading.Lock()

    def check(self, payload: bytes | bytearray, *, retained: bool = False) -> Verdict:
        """What to do with one command as it came off the wire."""
        try:
            data = json.loads(payload)
        except (ValueError, UnicodeDecodeError, RecursionError) as err:
            if retained:
                return self._refuse(None, "retained")
            return Verdict(None, None, "failed", f"invalid command: not JSON ({err})"[:300])
        raw_id = data.get("command_id") if isinstance(data, dict) else None
        echo_id = raw_id if isinstance(raw_id, str) and len(raw_id) <= 100 else None
        if retained:
            return self._refuse(echo_id, "retained")
        if not isinstance(data, dict):
            return Verdict(None, None, "failed", "invalid command: not a JSON object")
        why = self._authentic(data)
        if why is not None:
            return self._refuse(echo_id, why)
        try:
            cmd = CommandMessage.model_validate(data)
        except ValidationError as err:
            return Verdict(None, echo_id, "failed", describe(err))
        with self._lock:
            late = self.window.check(cmd.command_id, cmd.sent_at)
        if late == "duplicate":
            log.info("speaker: duplicate command ignored", extra={"command_id": cmd.command_id})
            return Verdict(None)
        if late is not None:
            if late == "future":
                self._count(late, cmd.command_id)
            return Verdict(None, cmd.command_id, "skipped", late)
        return Verdict(cmd, cmd.command_id)

    def _authentic(self, data: dict[str, Any]) -> str | None:
        """None if the command may be from the central and is meant for this speaker."""
        if self.verifier is not None:
            why = self.verifier.check(data)
            if why is not None:
                return why
        elif "sig" not in data and "site" not in data:
            return None  # an agent without the central's key takes plain commands
        if data.get("site") != self.site or data.get("speaker") != self.speaker:
            return "addressed to another speaker"
        return None

    def _refuse(self, command_id: str | None, why: str) -> Verdict:
        self._count(why, command_id)
        return Verdict(None, command_id, "failed", f"refused: {why}")

    def _count(self, why: str, command_id: str | None) -> None:
        with self._lock:
            self.rejected[why] += 1
        log.warning("speaker: command refused", extra={
            "why": why, "command_id": command_id, "site": self.site, "speaker": self.speaker})
