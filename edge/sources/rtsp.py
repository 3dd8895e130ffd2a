"""A live camera (RTSP, drone feeds too) as a capture thread with a latest-frame-wins slot.

Latency before throughput: a perimeter alarm about a frame that is a second old is a second
late, so the capture thread decodes every frame as it arrives (H.264 cannot skip) and leaves
only the newest in a one-frame ``LatestSlot``; inference takes whatever is newest when it is
free, and every frame overwritten unseen is counted as skipped. FFmpeg is opened for the
lowest latency OpenCV allows: one decode thread (frame threading holds one frame per extra
thread: measured 123 ms stamp-to-frame at 10 fps with one thread, 223 ms with the default),
no input buffering, short stream probing (0.4 s to open instead of 2.9 s), RTSP over TCP
(no loss-induced smearing; loopback or LAN). ``OPENCV_FFMPEG_CAPTURE_OPTIONS`` set by the
user wins over these defaults.

A frame's time is the wall clock (epoch) when the decoder handed it over: the capture time as
far as the edge can know it, so alarms carry it and latency metrics count from it.

Failures never end the thread: a refused, silent or unauthorised camera, a dropped stream or
one that stops sending for ``stall_seconds`` (FFmpeg's read timeout) marks the camera
offline with a reason and retries with exponential backoff and jitter (``Backoff``), so many
cameras behind one restarted switch do not reconnect in lock-step. OpenCV only says "not
opened", so after a failure ``diagnose`` asks the camera itself with an RTSP DESCRIBE
(answering its Digest or Basic challenge) and turns the answer into words: connection
refused, no answer, wrong password, no such stream.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable
from urllib.parse import unquote, urlsplit, urlunsplit

import cv2
import numpy as np

from edge.config import CameraConfig, ReconnectConfig
from edge.sources import httpauth
from edge.sources.feed import CameraState, LatestSlot, StatusCallback
from edge.sources.frame import Frame

log = logging.getLogger(__name__)

CAPTURE_OPTIONS = ("rtsp_transport;tcp|fflags;nobuffer|flags;low_delay|"
                   "analyzeduration;200000|probesize;200000")
_OPTIONS_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
# The user's own options, if set before we ran, win over ours.
_USER_OPTIONS = os.environ.get(_OPTIONS_ENV)
# OpenCV reads the options from the environment at each open: set them only around a live
# open, so video files opened in the same process (replays) decode with FFmpeg's defaults.
_OPEN_LOCK = threading.Lock()


class Backoff:
    """Waits between reconnect attempts: ``initial * 2**n`` capped at ``max``, plus a random
    share up to ``jitter`` of it (pure; ``rng`` makes it reproducible in tests)."""

    def __init__(self, cfg: ReconnectConfig, rng: random.Random | None = None):
        self.initial, self.max, self.jitter = cfg.initial_s, cfg.max_s, cfg.jitter
        self.rng = rng or random.Random()
        self.attempt = 0

    def next(self) -> float:
        base = min(self.max, self.initial * 2.0 ** min(self.attempt, 30))
        self.attempt += 1
        return base * (1.0 + self.jitter * self.rng.random())

    def reset(self) -> None:
        self.attempt = 0


def redact(url: str) -> str:
    """The URL without its password, for logs and status messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def diagnose(url: str, timeout_s: float = 3.0) -> str:
    """Why an RTSP URL does not open, in words, from a DESCRIBE request: sent without
    credentials first, then, if the camera answers 401, once more answering its challenge in
    the scheme it asked for (Digest, else Basic), so a Digest-only camera with the right
    password is not reported as "wrong user or password"."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "rtsp" or not parts.hostname:
        return "cannot open stream"
    host, port = parts.hostname, parts.port or 554
    where = f"{host}:{port}"
    clean = urlunsplit(parts._replace(netloc=f"{host}:{port}"))
    try:
        sock = socket.create_connection((host, port), timeout=timeout_s)
    except ConnectionRefusedError:
        return f"connection refused: nothing listens on {where}"
    except TimeoutError:
        return f"no answer from {where} (connect timed out)"
    except OSError as exc:
        return f"cannot connect to {where}: {exc.strerror or exc}"
    try:
        with sock:
            reply = _describe(sock, clean, 1, None)
            if reply is not None and reply[0] == "401" and parts.username is not None:
                challenges = httpauth.parse_challenges(reply[2])
                try:
                    auth = httpauth.authorization(challenges, unquote(parts.username),
                                                  unquote(parts.password or ""), "DESCRIBE",
                                                  clean)
                except httpauth.AuthSchemeError as exc:
                    return f"unauthorized: {exc}"
                reply = _describe(sock, clean, 2, auth)
    except TimeoutError:
        return f"no answer from {where} (RTSP request timed out)"
    except OSError as exc:
        return f"connection to {where} failed: {exc.strerror or exc}"
    if reply is None:
        return f"{where} closed the connection"
    code, text, _ = reply
    if code == "":
        return f"{where} does not speak RTSP"
    if code == "401":
        return ("unauthorized: wrong user or password" if parts.username is not None
                else "unauthorized: the camera needs a user and password")
    if code == "404":
        return f"no such stream: {parts.path or '/'}"
    if code != "200":
        return f"camera answered RTSP {code} {text}".rstrip()
    return "stream answers but no video could be decoded"


def _describe(sock: socket.socket, url: str, cseq: int,
              auth: str | None) -> tuple[str, str, list[str]] | None:
    """One DESCRIBE: (status code, reason, WWW-Authenticate values); None if the camera
    closed the connection; code "" if the answer is not RTSP. Reads the whole answer (head
    and body), so a second request on the connection starts clean."""
    req = f"DESCRIBE {url} RTSP/1.0\r\nCSeq: {cseq}\r\nAccept: application/sdp\r\n"
    if auth is not None:
        req += f"Authorization: {auth}\r\n"
    sock.sendall((req + "\r\n").encode())
    data = b""
    while b"\r\n\r\n" not in data and len(data) < 16384:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    if not data:
        return None
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = lines[0].split(" ", 2)
    if len(fields) < 2 or not fields[0].startswith("RTSP/"):
        return "", "", []
    headers = [ln.split(":", 1) for ln in lines[1:] if ":" in ln]
    length = next((int(v) for k, v in headers if k.strip().lower() == "content-length"
                   and v.strip().isdigit()), 0)
    while len(body) < min(length, 65536):
        chunk = sock.recv(4096)
        if not chunk:
            break
        body += chunk
    challenges = [v.strip() for k, v in headers if k.strip().lower() == "www-authenticate"]
    return fields[1], fields[2] if len(fields) > 2 else "", challenges


def stream_url(cam: CameraConfig) -> Callable[[], str]:
    """The camera's stream URL; an ONVIF device's is resolved on every connect attempt
    (``edge.onvif``, imported only then: a site without ONVIF cameras never needs it)."""
    if cam.onvif is None:
        url = cam.source or ""
        return lambda: url
    onvif = cam.onvif

    def resolve() -> str:
        from edge.sources.onvif.client import resolve_stream_uri

        return resolve_stream_uri(onvif, detect=True)

    return resolve


class LiveSource:
    """One live camera: a capture thread that keeps ``slot`` filled with the newest frame.

    ``url`` is called on every connect attempt (an ONVIF camera resolves its URI there, and
    an exception it raises is a failed attempt like any other). ``on_status(state, reason)``
    is called from the capture thread on every connection change; ``on_frame(frame)`` on
    every decoded frame, in the capture thread (benchmarks read source stamps there).
    """

    def __init__(self, camera: str, url: Callable[[], str], *, stall_s: float,
                 reconnect: ReconnectConfig, on_status: StatusCallback,
                 wake: threading.Event | None = None,
                 on_frame: Callable[[Frame], None] | None = None,
                 rng: random.Random | None = None):
        self.camera = camera
        self._url = url
        self.stall_s = stall_s
        self.backoff = Backoff(reconnect, rng)
        self.slot = LatestSlot(wake)
        self._on_status = on_status
        self._on_frame = on_frame
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.frames = 0  # decoded, over every connection
        self.reconnects = 0  # connections lost after frames had flowed
        self.connected = False
        self.last_frame_mono: float | None = None
        self.size: tuple[int, int] | None = None
        self.stream_fps: float | None = None  # what the stream says, if plausible

    def start(self) -> None:
        # FFmpeg's own stderr lines ("Connection refused") duplicate our structured reasons.
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "8")  # AV_LOG_FATAL
        self._thread = threading.Thread(target=self._run, name=f"capture-{self.camera}",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the thread to end; it does at its next frame, read timeout or backoff wait."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _open(self, url: str) -> cv2.VideoCapture:
        timeout_ms = int(1000 * max(2.0, min(self.stall_s, 10.0)))
        with _OPEN_LOCK:
            before = os.environ.get(_OPTIONS_ENV)
            os.environ[_OPTIONS_ENV] = _USER_OPTIONS or CAPTURE_OPTIONS
            try:
                return cv2.VideoCapture(url, cv2.CAP_FFMPEG, [
                    cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms,
                    cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(1000 * self.stall_s),
                    cv2.CAP_PROP_N_THREADS, 1])
            finally:
                if before is None:
                    del os.environ[_OPTIONS_ENV]
                else:
                    os.environ[_OPTIONS_ENV] = before

    def _run(self) -> None:
        last_reason = ""
        while not self._stop.is_set():
            reason = self._session()
            if self._stop.is_set():
                break
            self._on_status(CameraState.OFFLINE, reason)
            wait = self.backoff.next()
            level = logging.WARNING if reason != last_reason else logging.DEBUG
            log.log(level, "camera %s offline: %s (retry in %.1f s)", self.camera, reason, wait,
                    extra={"camera": self.camera, "reason": reason,
                           "retry_in_s": round(wait, 2)})
            last_reason = reason
            self._stop.wait(wait)

    def _session(self) -> str:
        """Connect and read until the stream fails; returns why it ended."""
        try:
            url = self._url()
        except Exception as exc:  # an ONVIF lookup that failed: retried like a refusal
            return f"cannot resolve stream URI: {exc}"
        cap = self._open(url)
        try:
            if not cap.isOpened():
                return diagnose(url, timeout_s=min(3.0, self.stall_s))
            fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
            self.stream_fps = fps if 0.5 <= fps <= 120 else None
            got = 0
            while not self._stop.is_set():
                ok, raw = cap.read()
                now = time.time()
                if not ok or raw is None:
                    break
                self.frames += 1
                got += 1
                self.last_frame_mono = time.monotonic()
                image = np.asarray(raw, dtype=np.uint8)
                self.size = (int(image.shape[1]), int(image.shape[0]))
                frame = Frame(index=self.frames, time=now, image=image)
                if self._on_frame is not None:
                    self._on_frame(frame)
                self.slot.put(frame)
                if got == 1:
                    self.connected = True
                    self.backoff.reset()
                    log.info("camera %s online: %s", self.camera, redact(url), extra={
                        "camera": self.camera, "url": redact(url), "size": self.size})
                    self._on_status(CameraState.ONLINE, "streaming")
            if self._stop.is_set():
                return "stopped"
            if got == 0:
                return "stream opened but sent no frame: " + diagnose(url, timeout_s=1.0)
            self.reconnects += 1
            stalled = time.monotonic() - (self.last_frame_mono or 0.0) >= 0.9 * self.stall_s
            return (f"stalled: no frame for {self.stall_s:g} s" if stalled
                    else "stream ended (connection closed)")
        finally:
            self.connected = False
            cap.release()
