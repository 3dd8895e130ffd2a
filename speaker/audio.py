"""Speaker audio: PCM clips in memory and offline text-to-speech with espeak-ng.

Text is rendered with ``espeak-ng -v VOICE -w FILE --stdin`` (the text goes on stdin, so it
can never be taken for an option). The ``cmn-latn-pinyin`` voice takes Chinese characters
(converted to pinyin by espeak-ng's dictionary, with tones) as well as pinyin with tone
numbers (``qing3 zhu4 yi4``) or tone marks (``qǐng``); pinyin without tones is spoken in
tone 1. The plain ``cmn`` voice reads that internal pinyin as English ("king three ..."):
do not use it. ``repeat`` copies are concatenated into one clip with 0.5 s of silence
between them.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
import wave
from dataclasses import dataclass
from pathlib import Path

REPEAT_GAP_S = 0.5
ESPEAK_TIMEOUT_S = 30.0
DEFAULT_VOICE = "cmn-latn-pinyin"
BAD_VOICES = frozenset({"cmn", "zh", "zh-cmn"})  # read espeak-ng's internal pinyin as English
INSTALL_ESPEAK = "install it with: apt-get install espeak-ng"
INSTALL_APLAY = "install it with: apt-get install alsa-utils"


class SpeakerError(RuntimeError):
    """The agent cannot run here (missing program, bad folder); the message says what to do."""


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


def find_espeak() -> tuple[str, set[str], set[str]]:
    """espeak-ng on PATH, its voice languages and its variants; ``SpeakerError`` if it is
    missing or lacks the one voice that speaks Mandarin correctly."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        raise SpeakerError(f"espeak-ng (offline text-to-speech) not found on PATH; "
                           f"{INSTALL_ESPEAK}")
    voices = espeak_voices(espeak)
    variants = espeak_voices(espeak, "variant")
    if DEFAULT_VOICE not in voices:
        raise SpeakerError(f"this espeak-ng ({espeak}) has no {DEFAULT_VOICE} voice, the "
                           f"one that speaks Mandarin correctly; install a newer "
                           f"espeak-ng ({INSTALL_ESPEAK})")
    return espeak, voices, variants


def find_aplay() -> str:
    """aplay (ALSA) on PATH, for ``device`` playback; ``SpeakerError`` if missing."""
    aplay = shutil.which("aplay")
    if aplay is None:
        raise SpeakerError(f"aplay (to play on the sound device) not found on PATH; "
                           f"{INSTALL_APLAY}")
    return aplay
