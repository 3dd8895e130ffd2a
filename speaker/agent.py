"""Loudspeaker agent: speaks the central's commands offline (espeak-ng).

The speaker agent is its own deployable, beside a loudspeaker; it shares only the wire
contract with the central (``wire.topics``, ``wire.messages``). Its modules:

* ``speaker.audio``: PCM clips and espeak-ng rendering;
* ``speaker.play``: one command played (clip or text, file or sound device);
* ``speaker.trust``: which commands may play at all (signature, target, replay window);
* ``speaker.agent`` (this module): ``SpeakerAgent``, MQTT and the playing rules;
* ``cli.speaker``: ``perimeter speaker``.

Playing rules (``SpeakerAgent``): a command with a higher priority than the one playing (or
waiting) interrupts it: playback stops and the interrupted one is reported ``skipped``
``preempted`` (as is a lower one still waiting). While a command plays, and for
``cooldown_s`` after the last one finished, commands of the same or lower priority are
dropped as ``skipped`` ``cooldown``, so a crowd that keeps re-alarming does not make the
speaker shout every second. Before these rules, ``speaker.trust`` refuses what the central
did not send: retained, unsigned or forged commands (given the central's public key), and
``sent_at`` outside the replay window (``skipped`` ``stale`` or ``future``).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from speaker.audio import BAD_VOICES, DEFAULT_VOICE, SpeakerError, find_aplay, find_espeak
from speaker.play import Job, Player
from speaker.trust import CommandGate
from wire import messages, topics
from wire.client import Broker, Will, connect, disconnect, make_client, unreachable_reason
from wire.messages import CommandMessage, State, StatusMessage
from wire.signing import CommandVerifier

log = logging.getLogger(__name__)

class SpeakerAgent:
    """One loudspeaker: takes commands from MQTT and plays them (see the module docstring).

    ``start()`` checks the programs, connects (persistent session, client id
    ``perimeter-speaker-{site}-{speaker_id}``) and returns once the command topic is
    subscribed; ``close()`` stops playback and announces ``offline``. ``on_status`` (if given)
    is called with every status report, from the agent's threads. ``broker`` (host, port,
    credentials, TLS) replaces ``host`` and ``port``; ``verifier`` holds the central's public
    key: without it the agent also plays unsigned commands (and says so at start).
    """

    def __init__(self, speaker_id: str, host: str = "127.0.0.1", port: int = 1883, *,
                 site: str = "default", out_dir: Path | None = None, device: bool = False,
                 cooldown_s: float = 10.0, clips_dir: Path | None = None,
                 max_age_s: float | None = 60.0, queue_size: int = 8,
                 connect_timeout_s: float = 10.0,
                 on_status: Callable[[StatusMessage], None] | None = None,
                 broker: Broker | None = None, verifier: CommandVerifier | None = None,
                 max_ahead_s: float = 10.0):
        if out_dir is None and not device:
            raise ValueError("a speaker needs an output: out_dir, device, or both")
        if cooldown_s < 0:
            raise ValueError(f"cooldown_s must be >= 0, got {cooldown_s}")
        self.speaker_id = topics.segment("speaker_id", speaker_id)
        self.site = topics.segment("site", site)
        self.broker = broker if broker is not None else Broker(host, port)
        self.host, self.port = self.broker.host, self.broker.port
        self.gate = CommandGate(self.site, self.speaker_id, verifier=verifier,
                                max_age_s=max_age_s, max_ahead_s=max_ahead_s)
        self.out_dir, self.device, self.clips_dir = out_dir, device, clips_dir
        self.cooldown_s, self.max_age_s = cooldown_s, max_age_s
        self.queue_size = max(1, queue_size)
        self.connect_timeout_s = connect_timeout_s
        self.on_status = on_status
        self.command_topic = topics.speaker_command(site, speaker_id)
        self.status_topic = topics.speaker_status(site, speaker_id)
        self.availability_topic = topics.speaker_availability(site, speaker_id)
        self.client_id = f"perimeter-speaker-{site}-{speaker_id}"

        self._cond = threading.Condition()
        self._queue: list[Job] = []
        self._current: Job | None = None
        self._last_end: float | None = None  # monotonic time the last audible command ended
        self._last_priority = -1
        self._closing = False
        self._arrivals = itertools.count()
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._refused: str | None = None
        self._espeak = ""
        self._voices: set[str] = set()
        self._variants: set[str] = set()
        self._aplay = ""
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._player: Player | None = None  # set by start(), once check() found the programs
        self._worker: threading.Thread | None = None

        self._client = make_client(
            self.broker, self.client_id, persistent=True, logger=f"{__name__}.paho",
            will=Will(self.availability_topic, messages.OFFLINE),
            connect_timeout_s=connect_timeout_s)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message

    # -- lifecycle -----------------------------------------------------------------------------

    def check(self) -> None:
        """``SpeakerError`` if a program or folder this agent needs is missing."""
        self._espeak, self._voices, self._variants = find_espeak()
        if self.device:
            self._aplay = find_aplay()
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
        self._player = Player(self._espeak, self._aplay, Path(self._tmp.name), self.out_dir,
                              self.device, self.clips_dir)
        self._closing = False
        self._worker = threading.Thread(target=self._work, name=f"speaker-{self.speaker_id}",
                                        daemon=True)
        self._worker.start()
        connect(self._client, self.broker)
        deadline = time.monotonic() + self.connect_timeout_s
        while not self._subscribed.wait(0.05):
            if self._refused is not None or time.monotonic() > deadline:
                self._client.loop_stop()
                self._stop_worker()
                raise ConnectionError(f"MQTT broker {self.host}:{self.port} {self._why()}")
        log.info("speaker ready", extra={"speaker": self.speaker_id, "site": self.site,
                                         "topic": self.command_topic})
        if self.gate.verifier is None:
            log.warning("speaker: no command-signing key; commands are not authenticated",
                        extra={"speaker": self.speaker_id, "site": self.site})

    def alive(self) -> bool:
        """The playing thread runs (what feeds systemd's watchdog)."""
        return self._worker is not None and self._worker.is_alive()

    def _why(self) -> str:
        return unreachable_reason(self.broker, self._refused, self.connect_timeout_s)

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop playback (reported ``skipped`` ``shutdown``), announce offline, disconnect."""
        self._stop_worker()
        if self._connected.is_set():
            info = self._client.publish(self.availability_topic, messages.OFFLINE, qos=1,
                                        retain=True)
            try:
                info.wait_for_publish(timeout_s)
            except (RuntimeError, ValueError) as err:
                log.warning("speaker: offline not sent", extra={"error": str(err)})
        disconnect(self._client)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
            self._player = None

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
        client.publish(self.availability_topic, messages.ONLINE, qos=1, retain=True)
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
            self.handle_payload(msg.payload, retained=bool(msg.retain))
        except Exception:  # never let a bad command stop paho's thread
            log.exception("speaker: command handling failed")

    # -- commands ------------------------------------------------------------------------------

    @property
    def rejected(self) -> dict[str, int]:
        """Commands refused as not the central's, by reason (``speaker.trust``)."""
        return dict(self.gate.rejected)

    def handle_payload(self, payload: bytes | bytearray, *, retained: bool = False) -> None:
        """Check one command and queue it or report why not (what the MQTT thread does)."""
        verdict = self.gate.check(payload, retained=retained)
        cmd = verdict.cmd
        if cmd is None:
            if verdict.state is not None:
                self._report(verdict.command_id, verdict.state, verdict.reason)
            return
        voice, _, variant = cmd.voice.lower().partition("+")
        if voice not in self._voices or (variant and variant not in self._variants):
            self._report(cmd.command_id, "failed",
                         f"unknown espeak-ng voice {cmd.voice!r} (see: espeak-ng --voices)")
            return
        if voice in BAD_VOICES:
            log.warning("speaker: this voice reads Chinese as English words, use "
                        f"{DEFAULT_VOICE}", extra={"voice": cmd.voice})
        self._admit(cmd)

    def _admit(self, cmd: CommandMessage) -> None:
        superseded: list[Job] = []
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
                heapq.heappush(self._queue, Job((-cmd.priority, next(self._arrivals)), cmd))
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
                assert self._player is not None  # start() sets it before the worker runs
                state, reason = self._player.play(job, self._playing)
            except Exception as err:  # keep the worker alive whatever happens
                log.exception("speaker: playback failed")
                state, reason = "failed", f"{type(err).__name__}: {err}"
            with self._cond:
                self._current = None
                if state == "done" or reason == "preempted":
                    self._last_end = time.monotonic()
                    self._last_priority = job.priority
            self._report(job.cmd.command_id, state, reason)

    def _playing(self, command_id: str) -> None:
        """The player's ``on_playing``: the audio is ready and about to start."""
        self._report(command_id, "playing")
