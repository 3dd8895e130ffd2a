"""A real RTSP camera on loopback for tests and benchmarks: recorded footage, served live.

Two halves in one file:

- ``main()`` is the server. It runs under the *system* Python (``/usr/bin/python3``), which
  has PyGObject and Debian's GStreamer RTSP server (``gir1.2-gst-rtsp-server-1.0``); the
  project's venv needs neither. One thread decodes the video in a loop and paces it at
  ``--fps``; every connected client gets its own H.264 encoder (x264, zerolatency, an IDR
  each second), fed the same frames through an ``appsrc``, so a client that connects late
  starts on a key frame at once, as a real camera's new session does. ``--user``/``--password``
  require HTTP basic auth (a wrong password gets ``401``). ``--stamp`` draws the wall-clock
  time at which the frame is handed to the encoder into the top band of the frame, as 48
  black/white 16x16 blocks (44 bits of epoch milliseconds, 4 bits of checksum): the edge
  decodes it (``read_stamp``) and glass-to-alarm is measured on the pixels themselves.
- ``RtspServer`` (venv side, stdlib only) starts that script as a subprocess on a fixed
  port, and can ``kill`` it (SIGKILL, a crashed camera) and ``start`` it again on the same
  port, for fault tests.

The server is the stand-in for a camera, so it only imports the standard library at the top:
``read_stamp`` imports numpy when called, ``main`` imports GStreamer.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

SYSTEM_PYTHON = "/usr/bin/python3"
STAMP_BITS = 48  # 44 bits of epoch ms + 4 bits checksum
STAMP_BLOCK = 16  # px; 48 blocks x 16 px = 768 px, the PETS09 width
BLACK, WHITE = 16, 235  # video-range luma


def _stamp_bits(ms: int) -> list[int]:
    value = ms & ((1 << 44) - 1)
    check = sum((value >> s) & 0xF for s in range(0, 44, 4)) & 0xF
    word = (value << 4) | check
    return [(word >> (STAMP_BITS - 1 - i)) & 1 for i in range(STAMP_BITS)]


def stamp_row(ms: int, width: int) -> bytes:
    """One luma row of the stamp band for time ``ms`` (blocks left to right, MSB first)."""
    row = bytearray([BLACK]) * width
    for i, bit in enumerate(_stamp_bits(ms)):
        if bit:
            row[i * STAMP_BLOCK:(i + 1) * STAMP_BLOCK] = bytes([WHITE]) * STAMP_BLOCK
    return bytes(row[:width])


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
    return value / 1000.0


# -- the server (system Python, GStreamer) -----------------------------------------------------


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - runs in a subprocess
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    gi.require_version("GstVideo", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer, GstVideo

    p = argparse.ArgumentParser(description="serve a video file as a live RTSP camera")
    p.add_argument("--video", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--mount", default="/live")
    p.add_argument("--fps", type=float, default=10.0)
    p.add_argument("--user")
    p.add_argument("--password")
    p.add_argument("--stamp", action="store_true")
    args = p.parse_args(argv)
    Gst.init(None)

    dec = Gst.parse_launch(
        f'filesrc location="{args.video}" ! decodebin ! videoconvert ! '
        "video/x-raw,format=I420 ! appsink name=out sync=false max-buffers=4")
    sink = dec.get_by_name("out")
    dec.set_state(Gst.State.PLAYING)
    first = sink.emit("try-pull-sample", 10 * Gst.SECOND)
    if first is None:
        print(f"cannot decode {args.video}", file=sys.stderr, flush=True)
        return 1
    info = GstVideo.VideoInfo.new_from_caps(first.get_caps())
    width, height = info.width, info.height
    fps_n, fps_d = round(args.fps * 1000), 1000
    caps = f"video/x-raw,format=I420,width={width},height={height},framerate={fps_n}/{fps_d}"
    key_int = max(1, round(args.fps))
    launch = (f"( appsrc name=src is-live=true format=time do-timestamp=true caps={caps} ! "
              "queue max-size-buffers=2 leaky=downstream ! "
              f"x264enc tune=zerolatency speed-preset=ultrafast threads=1 key-int-max={key_int} "
              "bitrate=3000 ! rtph264pay name=pay0 pt=96 config-interval=-1 )")
    clients: list[Any] = []
    lock = threading.Lock()

    def on_configure(_factory: Any, media: Any) -> None:
        src = media.get_element().get_by_name_recurse_up("src")
        with lock:
            clients.append(src)

        def gone(_media: Any) -> None:
            with lock:
                if src in clients:
                    clients.remove(src)

        media.connect("unprepared", gone)

    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch)
    factory.set_shared(False)
    factory.connect("media-configure", on_configure)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    if args.user:
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string("media.factory.role", args.user)
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(args.user, args.password or ""), token)
        server.set_auth(auth)
        factory.add_role_from_structure(Gst.Structure.new_from_string(
            f"{args.user}, media.factory.access=(boolean)true, "
            "media.factory.construct=(boolean)true"))
    server.get_mount_points().add_factory(args.mount, factory)
    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{args.port}", file=sys.stderr, flush=True)
        return 1

    u_off, v_off = info.offset[1], info.offset[2]
    c_stride = info.stride[1]
    band = STAMP_BLOCK
    neutral = bytes([128]) * c_stride * (band // 2)

    def feed() -> None:
        sample = first
        period = 1.0 / args.fps
        next_t = time.monotonic()
        while True:
            if sample is None:
                sample = sink.emit("try-pull-sample", Gst.SECOND)
                if sample is None:  # end of file: loop
                    dec.seek_simple(Gst.Format.TIME, Gst.SeekFlags.FLUSH, 0)
                    continue
            delay = next_t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            next_t = max(next_t + period, time.monotonic() - period)
            buf = sample.get_buffer()
            _ok, mapped = buf.map(Gst.MapFlags.READ)
            data = bytearray(mapped.data)
            buf.unmap(mapped)
            sample = None
            with lock:
                targets = list(clients)
            if not targets:
                continue
            if args.stamp:
                row = stamp_row(int(time.time() * 1000), width)
                stride = info.stride[0]
                for r in range(band):
                    data[r * stride:r * stride + width] = row
                data[u_off:u_off + len(neutral)] = neutral
                data[v_off:v_off + len(neutral)] = neutral
            payload = bytes(data)
            for src in targets:
                src.emit("push-buffer", Gst.Buffer.new_wrapped(payload))

    threading.Thread(target=feed, daemon=True).start()
    print(f"rtsp server ready on rtsp://127.0.0.1:{args.port}{args.mount}", flush=True)
    loop = GLib.MainLoop()
    signal.signal(signal.SIGTERM, lambda *_: loop.quit())
    loop.run()
    return 0


# -- the controller (venv side) ----------------------------------------------------------------


class RtspServer:
    """``tests/rtsp_server.py`` as a subprocess on 127.0.0.1:port; stop, kill, start again."""

    host = "127.0.0.1"

    def __init__(self, video: Path, port: int, *, fps: float = 10.0, mount: str = "/live",
                 user: str | None = None, password: str | None = None, stamp: bool = False,
                 log_path: Path | None = None):
        self.video, self.port, self.fps, self.mount = video, port, fps, mount
        self.user, self.password, self.stamp = user, password, stamp
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, user: str | None = None, password: str | None = None) -> str:
        cred = f"{user}:{password}@" if user is not None else ""
        return f"rtsp://{cred}{self.host}:{self.port}{self.mount}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 15.0) -> None:
        """Start the server and wait until it listens; RuntimeError if it does not."""
        assert not self.running, "already running"
        cmd = [SYSTEM_PYTHON, str(Path(__file__).resolve()), "--video", str(self.video),
               "--port", str(self.port), "--mount", self.mount, "--fps", str(self.fps)]
        if self.user is not None:
            cmd += ["--user", self.user, "--password", self.password or ""]
        if self.stamp:
            cmd.append("--stamp")
        out = self.log_path.open("ab") if self.log_path else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                         env={**os.environ, "PYTHONPATH": ""})
        finally:
            if self.log_path:
                out.close()  # type: ignore[union-attr]
        deadline = time.monotonic() + timeout
        while not port_listening(self.host, self.port):
            if self.proc.poll() is not None:
                raise RuntimeError(f"rtsp server exited with {self.proc.returncode}: "
                                   f"{self.log_tail()}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"rtsp server not listening within {timeout:g}s")
            time.sleep(0.02)  # poll interval

    def kill(self) -> None:
        """SIGKILL: the camera vanishes mid-stream (no RTSP TEARDOWN)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
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
    res = subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": ""}, check=False)
    return None if res.returncode == 0 else (res.stderr.strip().splitlines() or ["?"])[-1]


if __name__ == "__main__":
    sys.exit(main())
