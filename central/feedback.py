"""What happened after a command left: speakers' playback reports, notification deliveries.

The closed loop needs to know that the warning was actually played, not only sent. Each
speaker reports ``playing``, then ``done``, ``skipped`` or ``failed`` for a command id on its
status topic; ``SpeakerFeedback`` matches those reports to the commands this process sent,
writes the outcome into the incident's event log, and times command -> playback done. A
bounded memory of sent commands (oldest forgotten first) keeps a 24/7 process from growing
when a speaker never answers; that incident still escalates by its acknowledgement timeout.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt

from wire import topics
from wire.messages import parse_status

log = logging.getLogger(__name__)

LogEffect = Callable[[str, str, dict[str, Any]], None]


class SpeakerFeedback:
    """Matches speaker status reports to sent commands (thread-safe)."""

    def __init__(self, log_effect: LogEffect,
                 observe: Callable[[str, float], None] | None = None, *,
                 remember: int = 10_000):
        self._log_effect = log_effect
        self._observe = observe
        self._remember = remember
        self._sent: OrderedDict[str, tuple[float, str, str]] = OrderedDict()
        self._lock = threading.Lock()
        self.reports = 0

    def subscribe(self, client: mqtt.Client) -> None:
        """Subscribe ``client`` (call on every connect) and route its status messages here."""
        flt = topics.speaker_status_filter()
        client.message_callback_add(flt, self._on_message)
        client.subscribe(flt, qos=1)

    def sent(self, command_id: str, incident: str, speaker: str) -> None:
        with self._lock:
            self._sent[command_id] = (time.perf_counter(), incident, speaker)
            while len(self._sent) > self._remember:
                self._sent.popitem(last=False)

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        try:
            status = parse_status(bytes(msg.payload))
        except ValueError:
            log.warning("malformed speaker status ignored", extra={"topic": msg.topic})
            return
        if status.command_id is None or status.state == "playing":
            return
        with self._lock:
            entry = self._sent.pop(status.command_id, None)
        if entry is None:
            return  # another worker's command, or one forgotten
        started, incident, speaker = entry
        self.reports += 1
        if status.state == "done" and self._observe is not None:
            self._observe(speaker, time.perf_counter() - started)
        if status.state != "done":
            log.warning("speaker did not play a warning", extra={
                "speaker": speaker, "incident": incident, "state": status.state,
                "reason": status.reason})
        try:
            self._log_effect(incident, "speaker_status", {
                "speaker": speaker, "command_id": status.command_id, "state": status.state,
                "reason": status.reason})
        except Exception:  # Redis down: the report is lost from the log, not the incident
            log.warning("cannot log speaker status", extra={"command_id": status.command_id})
