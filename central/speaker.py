"""Loudspeaker agent: speaks the central's commands offline (espeak-ng), and an HTTP adapter.

Wire format (MQTT 3.1.1; ``site`` and ``speaker`` are one topic segment each: non-empty, none
of ``+ # /`` or NUL):

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

Playing rules (``SpeakerAgent``): a command with a higher priority than the one playing (or
waiting) interrupts it: playback stops and the interrupted one is reported ``skipped``
``preempted`` (as is a lower one still waiting). While a command plays, and for
``cooldown_s`` after the last one finished, commands of the same or lower priority are
dropped as ``skipped`` ``cooldown``, so a crowd that keeps re-alarming does not make the
speaker shout every second. Commands older than ``max_age_s`` (by ``sent_at``, e.g. queued
by the broker while the speaker was offline) are ``skipped`` ``stale``.

Audio: text is rendered with ``espeak-ng -v VOICE -w FILE --stdin`` (the text goes on stdin,
so it can never be taken for an option). The ``cmn-latn-pinyin`` voice takes Chinese
characters (converted to pinyin by espeak-ng's dictionary, with tones) as well as pinyin with
tone numbers (``qing3 zhu4 yi4``) or tone marks (``qǐng``); pinyin without tones is spoken in
tone 1. The plain ``cmn`` voice reads that internal pinyin as English ("king three ..."):
do not use it. ``repeat`` copies are concatenated into one clip with 0.5 s of silence
between them. With ``out_dir`` the clip is written to ``out_dir/{UTC time}-{command_id}.wav``;
without ``device`` it is written in real time (as if played), so an interrupted command
leaves the part that was "heard". With ``device`` the clip is played by ``aplay`` (ALSA).
"""

from __future__ import annotations

import argparse
import collections
import heapq
import itertools
import json
import logging
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import types
import urllib.error
import urllib.request
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from central.plans import SpeakerCommand

log = logging.getLogger(__name__)

PREFIX = "perimeter/v1"
KEEPALIVE_S = 30
COMMAND_ID_PATTERN = r"^[A-Za-z0-9_.-]{1,100}$"
VOICE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_+-]*$"
REPEAT_GAP_S = 0.5
ESPEAK_TIMEOUT_S = 30.0
DEFAULT_VOICE = "cmn-latn-pinyin"
BAD_VOICES = frozenset({"cmn", "zh", "zh-cmn"})  # read espeak-ng's internal pinyin as English
INSTALL_ESPEAK = "install it with: apt-get install espeak-ng"
INSTALL_APLAY = "install it with: apt-get install alsa-utils"
_FORBIDDEN = ("+", "#", "/", "\x00")

State = Literal["playing", "done", "skipped", "failed"]


class SpeakerError(RuntimeError):
    """The agent cannot run here (missing program, bad folder); the message says what to do."""


# -- topics and payloads (used by both sides) ---------------------------------------------------


def _segment(name: str, value: str) -> str:
    if not value or any(c in value for c in _FORBIDDEN):
        raise ValueError(f"{name} {value!r} is not a valid MQTT topic segment: it must be "
                         "non-empty and contain none of '+', '#', '/', NUL")
    return value


def _topic(site: str, speaker: str, leaf: str) -> str:
    return f"{PREFIX}/{_segment('site', site)}/speaker/{_segment('speaker', speaker)}/{leaf}"


def command_topic(site: str, speaker: str) -> str:
    return _topic(site, speaker, "command")


def status_topic(site: str, speaker: str) -> str:
    return _topic(site, speaker, "status")


def availability_topic(site: str, speaker: str) -> str:
    return _topic(site, speaker, "availability")


def status_filter(site: str | None = None) -> str:
    """Subscription filter for every speaker's status (of one site, or of all sites)."""
    return f"{PREFIX}/{'+' if site is None else _segment('site', site)}/speaker/+/status"


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


def _describe(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"])
        parts.append(f"{loc}: {e['msg']}" if loc else str(e["msg"]))
    return "invalid command: " + "; ".join(parts)


# -- audio -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Audio:
    """PCM audio: interleaved frames and their format."""

    channels: int
    sampwidth: int
    rate: int
    frames: bytes

    @property
    def frame_bytes(self) -> int:
        return self.channels * self.sampwidth

    @property
    def nframes(self) -> int:
        return len(self.frames) // self.frame_bytes

    @property
    def duration_s(self) -> float:
        return self.nframes / self.rate

    @classmethod
    def read(cls, path: Path) -> Audio:
        """``ValueError`` if not a readable PCM WAV file."""
        try:
            with wave.open(str(path), "rb") as w:
                return cls(w.getnchannels(), w.getsampwidth(), w.getframerate(),
                           w.readframes(w.getnframes()))
        except (wave.Error, EOFError) as err:
            raise ValueError(f"{path.name} is not a PCM WAV file ({err})") from err

    def repeated(self, times: int, gap_s: float = REPEAT_GAP_S) -> Audio:
        if times <= 1:
            return self
        silence = (b"\x80" if self.sampwidth == 1 else b"\x00") * (
            int(gap_s * self.rate) * self.frame_bytes)
        return Audio(self.channels, self.sampwidth, self.rate,
                     silence.join([self.frames] * times))

    def write(self, path: Path) -> None:
        with wave.open(str(path), "wb") as w:
            self._setup(w)
            w.writeframes(self.frames)

    def _setup(self, w: wave.Wave_write) -> None:
        w.setnchannels(self.channels)
        w.setsampwidth(self.sampwidth)
        w.setframerate(self.rate)

    def write_realtime(self, path: Path, stop: threading.Event, chunk_s: float = 0.1) -> bool:
        """Write at playback speed; False if ``stop`` was set first (the file keeps what was
        written)."""
        chunk = max(1, int(self.rate * chunk_s)) * self.frame_bytes
        start = time.monotonic()
        with wave.open(str(path), "wb") as w:
            self._setup(w)
            for off in range(0, len(self.frames), chunk):
                part = self.frames[off:off + chunk]
                w.writeframes(part)
                played_s = (off + len(part)) / self.frame_bytes / self.rate
                if stop.wait(max(0.0, start + played_s - time.monotonic())):
                    return False
        return True


def espeak_voices(espeak: str, kind: str = "") -> set[str]:
    """Installed voice languages (``kind=""``) or variant names, lower case.

    espeak-ng itself matches ``-v`` loosely (``cmn-latn-pinyn`` silently becomes the plain
    ``cmn`` voice, ``no-such-voice`` Norwegian), so commands are checked against this list.
    """
    try:
        proc = subprocess.run([espeak, f"--voices={kind}" if kind else "--voices"],
                              capture_output=True, timeout=ESPEAK_TIMEOUT_S, check=True)
    except (OSError, subprocess.SubprocessError) as err:
        raise SpeakerError(f"{espeak} --voices failed: {err}") from err
    names = set()
    for line in proc.stdout.decode("utf-8", "replace").splitlines()[1:]:
        cols = line.split()
        if len(cols) >= 5:
            names.add(cols[4].rsplit("/", 1)[-1].lower() if kind == "variant"
                      else cols[1].lower())
    return names


def espeak_render(espeak: str, text: str, voice: str, out: Path) -> Audio:
    """Speak ``text`` into ``out`` (WAV); ``ValueError`` naming espeak-ng's complaint."""
    try:
        proc = subprocess.run([espeak, "-v", voice, "-w", str(out), "--stdin"],
                              input=text.encode("utf-8"), capture_output=True,
                              timeout=ESPEAK_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as err:
        raise ValueError(f"espeak-ng took over {ESPEAK_TIMEOUT_S:g}s") from err
    complaint = proc.stderr.decode("utf-8", "replace").strip()
    if proc.returncode != 0 or complaint or not out.exists():
        raise ValueError(f"espeak-ng (voice {voice}) failed: "
                         f"{complaint or f'exit status {proc.returncode}'}")
    audio = Audio.read(out)
    if audio.nframes == 0:
        raise ValueError("espeak-ng produced no audio for this text")
    return audio


# -- the agent ---------------------------------------------------------------------------------


@dataclass(order=True)
class _Job:
    key: tuple[int, int]  # (-priority, arrival): heapq pops the highest priority, then FIFO
    cmd: CommandMessage = field(compare=False)
    stop: threading.Event = field(compare=False, default_factory=threading.Event)
    stop_reason: str = field(compare=False, default="preempted")

    @property
    def priority(self) -> int:
        return self.cmd.priority


class SpeakerAgent:
    """One loudspeaker: takes commands from MQTT and plays them (see the module docstring).

    ``start()`` checks the programs, connects (persistent session, client id
    ``perimeter-speaker-{site}-{speaker_id}``) and returns once the command topic is
    subscribed; ``close()`` stops playback and announces ``offline``. ``on_status`` (if given)
    is called with every status report, from the agent's threads.
    """

    def __init__(self, speaker_id: str, host: str = "127.0.0.1", port: int = 1883, *,
                 site: str = "default", out_dir: Path | None = None, device: bool = False,
                 cooldown_s: float = 10.0, clips_dir: Path | None = None,
                 max_age_s: float | None = 60.0, queue_size: int = 8,
                 connect_timeout_s: float = 10.0,
                 on_status: Callable[[StatusMessage], None] | None = None):
        if out_dir is None and not device:
            raise ValueError("a speaker needs an output: out_dir, device, or both")
        if cooldown_s < 0:
            raise ValueError(f"cooldown_s must be >= 0, got {cooldown_s}")
        self.speaker_id = _segment("speaker_id", speaker_id)
        self.site = _segment("site", site)
        self.host, self.port = host, port
        self.out_dir, self.device, self.clips_dir = out_dir, device, clips_dir
        self.cooldown_s, self.max_age_s = cooldown_s, max_age_s
        self.queue_size = max(1, queue_size)
        self.connect_timeout_s = connect_timeout_s
        self.on_status = on_status
        self.command_topic = command_topic(site, speaker_id)
        self.status_topic = status_topic(site, speaker_id)
        self.availability_topic = availability_topic(site, speaker_id)
        self.client_id = f"perimeter-speaker-{site}-{speaker_id}"

        self._cond = threading.Condition()
        self._queue: list[_Job] = []
        self._current: _Job | None = None
        self._last_end: float | None = None  # monotonic time the last audible command ended
        self._last_priority = -1
        self._closing = False
        self._arrivals = itertools.count()
        self._seen: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._refused: str | None = None
        self._espeak = ""
        self._voices: set[str] = set()
        self._variants: set[str] = set()
        self._aplay = ""
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._worker: threading.Thread | None = None

        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=False,
            protocol=MQTTProtocolVersion.MQTTv311, reconnect_on_failure=True)
        self._client.max_queued_messages_set(0)
        self._client.reconnect_delay_set(1, 30)
        self._client.connect_timeout = connect_timeout_s
        self._client.enable_logger(logging.getLogger(f"{__name__}.paho"))
        self._client.will_set(self.availability_topic, "offline", qos=1, retain=True)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message

    # -- lifecycle -----------------------------------------------------------------------------

    def check(self) -> None:
        """``SpeakerError`` if a program or folder this agent needs is missing."""
        espeak = shutil.which("espeak-ng")
        if espeak is None:
            raise SpeakerError(f"espeak-ng (offline text-to-speech) not found on PATH; "
                               f"{INSTALL_ESPEAK}")
        self._espeak = espeak
        self._voices = espeak_voices(espeak)
        self._variants = espeak_voices(espeak, "variant")
        if DEFAULT_VOICE not in self._voices:
            raise SpeakerError(f"this espeak-ng ({espeak}) has no {DEFAULT_VOICE} voice, the "
                               f"one that speaks Mandarin correctly; install a newer "
                               f"espeak-ng ({INSTALL_ESPEAK})")
        if self.device:
            aplay = shutil.which("aplay")
            if aplay is None:
                raise SpeakerError(f"aplay (to play on the sound device) not found on PATH; "
                                   f"{INSTALL_APLAY}")
            self._aplay = aplay
        if self.out_dir is not None:
            try:
                self.out_dir.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise SpeakerError(f"cannot create output folder {self.out_dir}: {err}") from err
        if self.clips_dir is not None and not self.clips_dir.is_dir():
            raise SpeakerError(f"clips folder {self.clips_dir} does not exist")

    def start(self) -> None:
        """Check, connect, subscribe; ``SpeakerError`` / ``ConnectionError`` on failure."""
        self.check()
        self._tmp = tempfile.TemporaryDirectory(prefix="perimeter-speaker-")
        self._closing = False
        self._worker = threading.Thread(target=self._work, name=f"speaker-{self.speaker_id}",
                                        daemon=True)
        self._worker.start()
        self._client.connect_async(self.host, self.port, keepalive=KEEPALIVE_S)
        self._client.loop_start()
        deadline = time.monotonic() + self.connect_timeout_s
        while not self._subscribed.wait(0.05):
            if self._refused is not None or time.monotonic() > deadline:
                self._client.loop_stop()
                self._stop_worker()
                raise ConnectionError(f"MQTT broker {self.host}:{self.port} {self._why()}")
        log.info("speaker ready", extra={"speaker": self.speaker_id, "site": self.site,
                                         "topic": self.command_topic})

    def _why(self) -> str:
        if self._refused is not None:
            return f"refused the connection: {self._refused}"
        why = f"not connected and subscribed within {self.connect_timeout_s:g}s"
        try:
            socket.create_connection((self.host, self.port), timeout=1.0).close()
        except OSError as err:
            why += f" ({err})"
        return why

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop playback (reported ``skipped`` ``shutdown``), announce offline, disconnect."""
        self._stop_worker()
        if self._connected.is_set():
            info = self._client.publish(self.availability_topic, "offline", qos=1, retain=True)
            try:
                info.wait_for_publish(timeout_s)
            except (RuntimeError, ValueError) as err:
                log.warning("speaker: offline not sent", extra={"error": str(err)})
        self._client.disconnect()
        self._client.loop_stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def _stop_worker(self) -> None:
        with self._cond:
            self._closing = True
            waiting, self._queue = self._queue, []
            if self._current is not None:
                self._current.stop_reason = "shutdown"
                self._current.stop.set()
            self._cond.notify_all()
        for job in waiting:
            self._report(job.cmd.command_id, "skipped", "shutdown")
        if self._worker is not None:
            self._worker.join(10.0)
            self._worker = None

    def __enter__(self) -> SpeakerAgent:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- MQTT callbacks (network thread) -------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags,
                    reason: ReasonCode, properties: Properties | None) -> None:
        if reason.is_failure:
            self._refused = str(reason)
            log.error("speaker: mqtt connect refused", extra={"reason": str(reason)})
            return
        self._connected.set()
        client.publish(self.availability_topic, "online", qos=1, retain=True)
        client.subscribe(self.command_topic, qos=1)  # again on every connect: harmless
        log.info("speaker: mqtt connected", extra={
            "client_id": self.client_id, "session_present": flags.session_present})

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int,
                      reasons: list[ReasonCode], properties: Properties | None) -> None:
        if any(r.is_failure for r in reasons):
            self._refused = f"subscription to {self.command_topic} refused"
            return
        self._subscribed.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: mqtt.DisconnectFlags,
                       reason: ReasonCode, properties: Properties | None) -> None:
        self._connected.clear()
        if not self._closing:
            log.warning("speaker: mqtt connection lost, reconnecting",
                        extra={"reason": str(reason)})

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            self.handle_payload(msg.payload)
        except Exception:  # never let a bad command stop paho's thread
            log.exception("speaker: command handling failed")

    # -- commands ------------------------------------------------------------------------------

    def handle_payload(self, payload: bytes | bytearray) -> None:
        """Validate one command and queue it or report why not (what the MQTT thread does)."""
        try:
            data = json.loads(payload)
        except (ValueError, UnicodeDecodeError) as err:
            self._report(None, "failed", f"invalid command: not JSON ({err})")
            return
        raw_id = data.get("command_id") if isinstance(data, dict) else None
        echo_id = raw_id if isinstance(raw_id, str) else None
        if not isinstance(data, dict):
            self._report(None, "failed", "invalid command: not a JSON object")
            return
        try:
            cmd = CommandMessage.model_validate(data)
        except ValidationError as err:
            self._report(echo_id, "failed", _describe(err))
            return
        if cmd.command_id in self._seen:
            log.info("speaker: duplicate command ignored", extra={"command_id": cmd.command_id})
            return
        self._seen[cmd.command_id] = None
        while len(self._seen) > 1000:
            self._seen.popitem(last=False)
        voice, _, variant = cmd.voice.lower().partition("+")
        if voice not in self._voices or (variant and variant not in self._variants):
            self._report(cmd.command_id, "failed",
                         f"unknown espeak-ng voice {cmd.voice!r} (see: espeak-ng --voices)")
            return
        if voice in BAD_VOICES:
            log.warning("speaker: this voice reads Chinese as English words, use "
                        f"{DEFAULT_VOICE}", extra={"voice": cmd.voice})
        if self.max_age_s is not None and time.time() - cmd.sent_at > self.max_age_s:
            self._report(cmd.command_id, "skipped", "stale")
            return
        self._admit(cmd)

    def _admit(self, cmd: CommandMessage) -> None:
        superseded: list[_Job] = []
        reason: str | None = None
        with self._cond:
            busy = [j.priority for j in self._queue]
            if self._current is not None:
                busy.append(self._current.priority)
            in_cooldown = (self._last_end is not None
                           and time.monotonic() - self._last_end < self.cooldown_s)
            # the priority a command must beat: what plays or waits, else the last one
            # while its cooldown lasts
            ceiling = max(busy) if busy else self._last_priority if in_cooldown else -1
            if self._closing:
                reason = "shutdown"
            elif cmd.priority <= ceiling:
                reason = "cooldown"
            else:
                # Strictly higher than everything playing or waiting: it goes next.
                superseded, self._queue = self._queue, []
                heapq.heappush(self._queue, _Job((-cmd.priority, next(self._arrivals)), cmd))
                if self._current is not None:
                    self._current.stop_reason = "preempted"
                    self._current.stop.set()
                while len(self._queue) > self.queue_size:  # cannot happen with these rules
                    superseded.append(self._queue.pop())
                self._cond.notify_all()
        for job in superseded:
            self._report(job.cmd.command_id, "skipped", "preempted")
        if reason is not None:
            self._report(cmd.command_id, "skipped", reason)

    def _report(self, command_id: str | None, state: State, reason: str | None = None) -> None:
        status = StatusMessage(command_id=command_id, speaker=self.speaker_id, state=state,
                               reason=reason, at=time.time())
        self._client.publish(self.status_topic, status.to_bytes(), qos=1, retain=False)
        log.info("speaker status", extra={"command_id": command_id, "state": state,
                                                "reason": reason})
        if self.on_status is not None:
            try:
                self.on_status(status)
            except Exception:
                log.exception("speaker: on_status callback failed")

    # -- playback (worker thread) --------------------------------------------------------------

    def _work(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._closing or bool(self._queue))
                if self._closing:
                    return
                job = heapq.heappop(self._queue)
                self._current = job
            try:
                state, reason = self._play(job)
            except Exception as err:  # keep the worker alive whatever happens
                log.exception("speaker: playback failed")
                state, reason = "failed", f"{type(err).__name__}: {err}"
            with self._cond:
                self._current = None
                if state == "done" or reason == "preempted":
                    self._last_end = time.monotonic()
                    self._last_priority = job.priority
            self._report(job.cmd.command_id, state, reason)

    def _audio_for(self, cmd: CommandMessage) -> Audio:
        """The clip (if this speaker has it) or the spoken text; ``ValueError`` why not."""
        if cmd.clip is not None:
            path, clip_error, fatal = self._find_clip(cmd.clip)
            if path is not None:
                return Audio.read(path)
            if fatal or not cmd.text:
                raise ValueError(clip_error)
            log.warning("speaker: clip unavailable, speaking the text",
                        extra={"clip": cmd.clip, "why": clip_error})
        assert cmd.text is not None and self._tmp is not None
        return espeak_render(self._espeak, cmd.text, cmd.voice,
                             Path(self._tmp.name) / f"{cmd.command_id}.wav")

    def _find_clip(self, clip: str) -> tuple[Path | None, str, bool]:
        """(path, "", False) if found, else (None, why, fatal); a clip that resolves
        outside the folder (a symlink) is fatal, a missing one falls back to the text."""
        if self.clips_dir is None:
            return None, f"clip {clip!r} requested but this speaker has no clips folder", False
        root = self.clips_dir.resolve()
        path = (root / clip).resolve()
        if not path.is_relative_to(root):
            return None, f"clip {clip!r} resolves outside the clips folder", True
        if not path.is_file():
            return None, f"clip {clip!r} not found in {self.clips_dir}", False
        return path, "", False

    def _play(self, job: _Job) -> tuple[State, str | None]:
        cmd = job.cmd
        try:
            audio = self._audio_for(cmd).repeated(cmd.repeat)
        except ValueError as err:
            return "failed", str(err)
        if job.stop.is_set():
            return "skipped", job.stop_reason
        self._report(cmd.command_id, "playing")
        target: Path | None = None
        if self.out_dir is not None:
            now = time.time()
            stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now))
            stamp += f".{int(now * 1000) % 1000:03d}Z"
            target = self.out_dir / f"{stamp}-{cmd.command_id}.wav"
        if not self.device:
            assert target is not None
            finished = audio.write_realtime(target, job.stop)
            return ("done", None) if finished else ("skipped", job.stop_reason)
        if target is None:
            assert self._tmp is not None
            target = Path(self._tmp.name) / f"play-{cmd.command_id}.wav"
        audio.write(target)
        try:
            return self._aplay_file(target, job)
        finally:
            if self.out_dir is None:
                target.unlink(missing_ok=True)

    def _aplay_file(self, path: Path, job: _Job) -> tuple[State, str | None]:
        proc = subprocess.Popen([self._aplay, "-q", str(path)], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        while True:
            try:
                _, err = proc.communicate(timeout=0.05)
                break
            except subprocess.TimeoutExpired:
                if job.stop.is_set():
                    proc.terminate()
                    proc.communicate()
                    return "skipped", job.stop_reason
        if proc.returncode != 0:
            lines = err.decode("utf-8", "replace").strip().splitlines()
            return "failed", f"aplay failed: {lines[-1] if lines else proc.returncode}"
        return "done", None


# -- HTTP adapter (central side) ---------------------------------------------------------------


class HttpSpeaker:
    """An IP speaker that takes the same JSON command by HTTP POST.

    ``send`` tries once and retries up to ``retries`` times (backoff 0.2 s, doubling) on
    network errors, timeouts, HTTP 5xx, 408 and 429; any other 4xx is final. Success is a
    2xx answer. It returns False instead of raising on network errors; the same
    ``command_id`` is sent on every try so the speaker can deduplicate. With ``token`` the
    request carries ``Authorization: Bearer <token>``.
    """

    def __init__(self, speaker_id: str, url: str, *, timeout_s: float = 3.0,
                 token: str | None = None, retries: int = 3, backoff_s: float = 0.2):
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"speaker {speaker_id}: url must be http(s), got {url!r}")
        self.speaker_id, self.url, self.timeout_s = speaker_id, url, timeout_s
        self.token, self.retries, self.backoff_s = token, retries, backoff_s

    def send(self, cmd: SpeakerCommand, command_id: str) -> bool:
        body = command_payload(cmd, command_id, time.time())
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


# -- command line ------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of ``perimeter speaker`` (shared with ``main``)."""
    p.add_argument("--id", required=True, dest="speaker_id", help="this speaker's id")
    p.add_argument("--host", default="127.0.0.1", help="MQTT broker host")
    p.add_argument("--port", type=int, default=1883, help="MQTT broker port")
    p.add_argument("--site", default="default", help="site (topic segment)")
    p.add_argument("--out-dir", type=Path, help="write each played clip here as WAV")
    p.add_argument("--device", action="store_true", help="play on the sound device (aplay)")
    p.add_argument("--cooldown", type=float, default=10.0, metavar="S",
                   help="quiet seconds after a command for same/lower priority (default 10)")
    p.add_argument("--clips", type=Path, metavar="DIR", help="folder of pre-rendered WAV clips")
    return p


def run(args: argparse.Namespace) -> int:
    """Run the agent until SIGINT/SIGTERM; one line per command handled on stdout."""
    if args.out_dir is None and not args.device:
        print("error: give --out-dir DIR, --device, or both", file=sys.stderr)
        return 2

    def show(s: StatusMessage) -> None:
        if s.state != "playing":
            when = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(s.at))
            print(f"{when} {s.command_id or '-'} {s.state}"
                  + (f" ({s.reason})" if s.reason else ""), flush=True)

    try:
        agent = SpeakerAgent(args.speaker_id, args.host, args.port, site=args.site,
                             out_dir=args.out_dir, device=args.device,
                             cooldown_s=args.cooldown, clips_dir=args.clips, on_status=show)
        agent.start()
    except (SpeakerError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except ConnectionError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    stop = threading.Event()

    def on_signal(signum: int, frame: types.FrameType | None) -> None:
        stop.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    print(f"speaker {args.speaker_id} listening on {agent.command_topic} "
          f"({args.host}:{args.port})", flush=True)
    try:
        while not stop.wait(1.0):
            pass
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        agent.close()
    print(f"speaker {args.speaker_id} stopped", flush=True)
    return 0
