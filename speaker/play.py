"""Speaker playback: one queued command turned into sound, on the agent's worker thread.

The audio is the command's ``clip`` when the speaker's clips folder has it (a clip that
resolves outside the folder fails the command), else its ``text`` spoken by espeak-ng, then
repeated ``repeat`` times. With ``out_dir`` the clip is written to
``out_dir/{UTC time}-{command_id}.wav``; without ``device`` it is written in real time (as if
played), so an interrupted command leaves the part that was "heard". With ``device`` the clip
is played by ``aplay`` (ALSA). Playback stops as soon as the job's ``stop`` event is set, and
the command is then reported with the job's ``stop_reason``.
"""

from __future__ import annotations

import logging
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from speaker.audio import Audio, espeak_render
from wire.messages import CommandMessage, State

log = logging.getLogger(__name__)


@dataclass(order=True)
class Job:
    """A command waiting or playing; the agent sets ``stop`` (and why) to interrupt it."""

    key: tuple[int, int]  # (-priority, arrival): heapq pops the highest priority, then FIFO
    cmd: CommandMessage = field(compare=False)
    stop: threading.Event = field(compare=False, default_factory=threading.Event)
    stop_reason: str = field(compare=False, default="preempted")

    @property
    def priority(self) -> int:
        return self.cmd.priority


@dataclass(frozen=True)
class Player:
    """Where and how one agent plays: the programs ``check()`` found and its folders."""

    espeak: str
    aplay: str
    tmp_dir: Path  # the agent's scratch folder, for rendered text and device playback
    out_dir: Path | None
    device: bool
    clips_dir: Path | None

    def play(self, job: Job, on_playing: Callable[[str], None]) -> tuple[State, str | None]:
        """Play ``job`` to its end or its ``stop``: the final state and reason to report.

        ``on_playing(command_id)`` is called once the audio is ready and about to start.
        """
        cmd = job.cmd
        try:
            audio = self._audio_for(cmd).repeated(cmd.repeat)
        except ValueError as err:
            return "failed", str(err)
        if job.stop.is_set():
            return "skipped", job.stop_reason
        on_playing(cmd.command_id)
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
            target = self.tmp_dir / f"play-{cmd.command_id}.wav"
        audio.write(target)
        try:
            return self._aplay_file(target, job)
        finally:
            if self.out_dir is None:
                target.unlink(missing_ok=True)

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
        assert cmd.text is not None
        return espeak_render(self.espeak, cmd.text, cmd.voice,
                             self.tmp_dir / f"{cmd.command_id}.wav")

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

    def _aplay_file(self, path: Path, job: Job) -> tuple[State, str | None]:
        proc = subprocess.Popen([self.aplay, "-q", str(path)], stdin=subprocess.DEVNULL,
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
