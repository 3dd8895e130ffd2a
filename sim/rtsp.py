"""``perimeter sim rtsp``: a live RTSP camera from a video file, for a site with no camera yet.

The server itself is ``sim/rtsp_server.py``, run by the system Python because GStreamer's
RTSP server comes from Debian's packages, not from PyPI. This module is the venv side
(standard library only, numpy when ``read_stamp`` is called; the command line is in
``cli/sim.py``):

- ``RtspServer`` starts that script as a subprocess on a fixed port, and can ``kill`` it
  (SIGKILL, a crashed camera) and ``start`` it again on the same port, for fault tests;
- ``read_stamp`` decodes the send time ``--stamp`` draws into the pixels (live benchmark);
- ``gst_rtsp_available`` says what is missing when the system Python cannot run it.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from pathlib import Path
from typing import IO, Any

from sim.rtsp_server import BLACK, STAMP_BITS, STAMP_BLOCK, WHITE

SYSTEM_PYTHON = "/usr/bin/python3"
SERVER_SCRIPT = Path(__file__).resolve().with_name("rtsp_server.py")
APT_PACKAGES = ("python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base "
                "gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly gstreamer1.0-libav")


class RtspServerError(RuntimeError):
    """The server did not come up; ``returncode`` is its exit status when it exited (2: the
    video cannot be decoded, 1: cannot listen), None when it hung or the port was taken."""

    def __init__(self, message: str, returncode: int | None = None):
        super().__init__(message)
        self.returncode = returncode


def read_stamp(image: Any) -> float | None:
    """The source time (epoch s) drawn in a BGR frame by ``--stamp``; None if unreadable."""
    import numpy as np

    if image.shape[1] < STAMP_BITS * STAMP_BLOCK or image.shape[0] < STAMP_BLOCK:
        return None
    q = STAMP_BLOCK // 4  # sample the centre of each block, away from codec ringing
    band = image[q:STAMP_BLOCK - q, : STAMP_BITS * STAMP_BLOCK].mean(axis=(0, 2))
    levels = band.reshape(STAMP_BITS, STAMP_BLOCK)[:, q:STAMP_BLOCK - q].mean(axis=1)
    word = 0
    for bit in (levels > (BLACK + WHITE) / 2).astype(np.int64):
        word = (word << 1) | int(bit)
    value, check = word >> 4, word & 0xF
    if sum((value >> s) & 0xF for s in range(0, 44, 4)) & 0xF != check:
        return None
    return float(value / 1000.0)


class RtspServer:
    """``sim/rtsp_server.py`` as a subprocess on host:port; stop, kill, start again.

    Its output goes to ``log_path`` when given; otherwise, with ``show_errors``, its stderr
    goes to ours (the command line), else nowhere. It exits by itself when this process dies.
    """

    def __init__(self, video: Path, port: int, *, fps: float = 10.0, mount: str = "/live",
                 user: str | None = None, password: str | None = None, stamp: bool = False,
                 log_path: Path | None = None, host: str = "127.0.0.1",
                 show_errors: bool = False, digest: bool = False):
        self.video, self.port, self.fps, self.mount = video, port, fps, mount
        self.digest = digest  # with user: Digest only, as many cameras (else Basic)
        self.user, self.password, self.stamp = user, password, stamp
        self.log_path, self.host, self.show_errors = log_path, host, show_errors
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, user: str | None = None, password: str | None = None) -> str:
        cred = f"{user}:{password}@" if user is not None else ""
        host = "127.0.0.1" if self.host == "0.0.0.0" else self.host
        return f"rtsp://{cred}{host}:{self.port}{self.mount}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def command(self) -> list[str]:
        # -I: no PYTHON* variables, no user site, no script folder on sys.path (sim/ would
        # shadow nothing today, but the system Python must not see the venv's packages).
        cmd = [SYSTEM_PYTHON, "-I", str(SERVER_SCRIPT), "--video", str(self.video),
               "--port", str(self.port), "--bind", self.host, "--mount", self.mount,
               "--fps", str(self.fps), "--exit-with-parent"]
        if self.user is not None:
            cmd += ["--user", self.user, "--password", self.password or ""]
            if self.digest:
                cmd.append("--digest")
        if self.stamp:
            cmd.append("--stamp")
        return cmd

    def start(self, timeout: float = 15.0) -> None:
        """Start the server and wait until it listens; RtspServerError if it does not."""
        assert not self.running, "already running"
        probe = "127.0.0.1" if self.host == "0.0.0.0" else self.host
        if port_listening(probe, self.port):
            raise RtspServerError(f"something already listens on {self.host}:{self.port}")
        out: IO[bytes] | int | None = subprocess.DEVNULL
        err: IO[bytes] | int | None = subprocess.DEVNULL
        if self.log_path is not None:
            out = self.log_path.open("ab")
            err = subprocess.STDOUT
        elif self.show_errors:
            err = None
        try:
            self.proc = subprocess.Popen(self.command(), stdout=out, stderr=err)
        finally:
            if not isinstance(out, int) and out is not None:
                out.close()
        deadline = time.monotonic() + timeout
        while not port_listening(probe, self.port):
            if self.proc.poll() is not None:
                raise RtspServerError(f"rtsp server exited with {self.proc.returncode}: "
                                      f"{self.log_tail()}", self.proc.returncode)
            if time.monotonic() > deadline:
                self.kill()
                raise RtspServerError(f"rtsp server not listening within {timeout:g}s")
            time.sleep(0.02)  # poll interval

    def kill(self) -> None:
        """SIGKILL: the camera vanishes mid-stream (no RTSP TEARDOWN)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        """SIGTERM (the server closes its sessions), SIGKILL after 5 s."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def log_tail(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "(no log)"
        return self.log_path.read_text(errors="replace")[-2000:]


def port_listening(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
        return True
    return False


def gst_rtsp_available() -> str | None:
    """None if the system Python can run the server, else what is missing."""
    probe = ("import gi; gi.require_version('GstRtspServer', '1.0'); "
             "from gi.repository import Gst, GstRtspServer; Gst.init(None); "
             "assert Gst.ElementFactory.find('x264enc'), 'x264enc'; "
             "assert Gst.ElementFactory.find('avdec_msmpeg4'), 'avdec_msmpeg4'")
    if not Path(SYSTEM_PYTHON).exists():
        return f"{SYSTEM_PYTHON} not found"
    res = subprocess.run([SYSTEM_PYTHON, "-I", "-c", probe], capture_output=True, text=True,
                         check=False)
    return None if res.returncode == 0 else (res.stderr.strip().splitlines() or ["?"])[-1]

