"""The central's side of the loudspeakers: the command it sends, by MQTT or by HTTP POST.

``command_payload`` turns a plan's ``SpeakerCommand`` into the wire's command message
(``wire.messages.CommandMessage``), addressed to its site and speaker and signed with the
central's command-signing key (``wire.signing``) when it has one; the central publishes it on
the speaker's command topic, or, for IP speakers that take commands over HTTP instead of
running the speaker agent, ``HttpSpeaker`` POSTs the same JSON.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request

from central.plans import SpeakerCommand
from wire.messages import CommandMessage
from wire.signing import CommandSigner

log = logging.getLogger(__name__)


def command_payload(cmd: SpeakerCommand, command_id: str, sent_at: float, *,
                    site: str | None = None, signer: CommandSigner | None = None) -> bytes:
    """The JSON command for ``cmd``, addressed to ``site`` and ``cmd.speaker`` when ``site``
    is given and signed by ``signer`` when given; ``ValueError`` (pydantic's) if it breaks
    the wire rules."""
    s = cmd.speech
    msg = CommandMessage(command_id=command_id, incident=cmd.incident, text=s.text,
                         clip=s.clip, voice=s.voice, priority=s.priority, repeat=s.repeat,
                         sent_at=float(sent_at), site=site,
                         speaker=cmd.speaker if site is not None else None)
    if signer is None:
        return msg.to_bytes()
    return json.dumps(signer.sign(msg.fields()), ensure_ascii=False).encode("utf-8")


class HttpSpeaker:
    """An IP speaker that takes the same JSON command by HTTP POST.

    ``send`` tries once and retries up to ``retries`` times (backoff 0.2 s, doubling) on
    network errors, timeouts, HTTP 5xx, 408 and 429; any other 4xx is final. Success is a
    2xx answer. It returns False instead of raising on network errors; the same
    ``command_id`` is sent on every try so the speaker can deduplicate. With ``token`` the
    request carries ``Authorization: Bearer <token>``; with ``signer`` the body is signed as
    MQTT commands are (the same JSON).
    """

    def __init__(self, speaker_id: str, url: str, *, timeout_s: float = 3.0,
                 token: str | None = None, retries: int = 3, backoff_s: float = 0.2,
                 signer: CommandSigner | None = None):
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"speaker {speaker_id}: url must be http(s), got {url!r}")
        self.speaker_id, self.url, self.timeout_s = speaker_id, url, timeout_s
        self.token, self.retries, self.backoff_s = token, retries, backoff_s
        self.signer = signer

    def send(self, cmd: SpeakerCommand, command_id: str, site: str | None = None) -> bool:
        body = command_payload(cmd, command_id, time.time(), site=site, signer=self.signer)
        headers = {"Content-Type": "application/json; charset=utf-8"}
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        delay = self.backoff_s
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(delay)  # backoff between tries
                delay *= 2
            req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                    resp.read()
                    if 200 <= resp.status < 300:
                        return True
                    why = f"HTTP {resp.status}"
            except urllib.error.HTTPError as err:
                why = f"HTTP {err.code}"
                if 400 <= err.code < 500 and err.code not in (408, 429):
                    log.warning("http speaker refused the command", extra={
                        "speaker": self.speaker_id, "command_id": command_id, "why": why})
                    return False
            except (OSError, ValueError) as err:  # URLError, timeouts, resets
                why = f"{type(err).__name__}: {err}"
            log.warning("http speaker send failed", extra={
                "speaker": self.speaker_id, "command_id": command_id,
                "attempt": attempt + 1, "why": why})
        return False
