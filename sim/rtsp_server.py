"""The RTSP camera simulator's server: a video file served as a live RTSP camera.

Run by the *system* Python (``/usr/bin/python3 sim/rtsp_server.py ...``), which has
PyGObject and Debian's GStreamer RTSP server (``gir1.2-gst-rtsp-server-1.0``); the project's
venv needs neither, and this file imports nothing from the project (only the standard library
at the top, GStreamer inside ``main``), so it runs from its path without the venv.
``sim/rtsp.py`` starts it (``perimeter sim rtsp``, the tests, the live benchmark).

One thread decodes the video in a loop and paces it at ``--fps``; every connected client gets
its own H.264 encoder (x264, zerolatency, an IDR each second), fed the same frames through an
``appsrc``, so a client that connects late starts on a key frame at once, as a real camera's
new session does. ``--user``/``--password`` require HTTP basic auth, or Digest only with
``--digest`` (as many cameras do: a Basic answer then gets ``401`` too); a wrong password
gets ``401``. ``--stamp`` draws the wall-clock time at which the frame is handed to the encoder
into the top band of the frame, as 48 black/white 16x16 blocks (44 bits of epoch
milliseconds, 4 bits of checksum): the edge decodes it (``sim.rtsp.read_stamp``) and
glass-to-alarm is measured on the pixels themselves.

Exit codes: 0 stopped (SIGTERM, SIGINT, or the parent gone with ``--exit-with-parent``);
1 cannot listen; 2 the video cannot be decoded.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from typing import Any

STAMP_BITS = 48  # 44 bits of epoch ms + 4 bits checksum
STAMP_BLOCK = 16  # px; 48 blocks x 16 px = 768 px, the PETS09 width
BLACK, WHITE = 16, 235  # video-range luma


def stamp_bits(ms: int) -> list[int]:
    """The 48 bits drawn for time ``ms``: 44 bits of value, then a 4-bit nibble checksum."""
    value = ms & ((1 << 44) - 1)
    check = sum((value >> s) & 0xF for s in range(0, 44, 4)) & 0xF
    word = (value << 4) | check
    return [(word >> (STAMP_BITS - 1 - i)) & 1 for i in range(STAMP_BITS)]


def stamp_row(ms: int, width: int) -> bytes:
    """One luma row of the stamp band for time ``ms`` (blocks left to right, MSB first)."""
    row = bytearray([BLACK]) * width
    for i, bit in enumerate(stamp_bits(ms)):
        if bit:
            row[i * STAMP_BLOCK:(i + 1) * STAMP_BLOCK] = bytes([WHITE]) * STAMP_BLOCK
    return bytes(row[:width])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="serve a video file as a live RTSP camera")
    p.add_argument("--video", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--bind", default="127.0.0.1", help="address to listen on")
    p.add_argument("--mount", default="/live")
    p.add_argument("--fps", type=float, default=10.0)
    p.add_argument("--user")
    p.add_argument("--password")
    p.add_argument("--digest", action="store_true", help="demand Digest, refuse Basic")
    p.add_argument("--stamp", action="store_true")
    p.add_argument("--exit-with-parent", action="store_true",
                   help="stop when the process that started this one is gone (no orphans)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - runs in a subprocess
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    gi.require_version("GstVideo", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer, GstVideo

    args = parse_args(argv)
    parent = os.getppid()
    Gst.init(None)

    dec = Gst.parse_launch("filesrc name=file ! decodebin ! videoconvert ! "
                           "video/x-raw,format=I420 ! appsink name=out sync=false max-buffers=4")
    dec.get_by_name("file").set_property("location", args.video)  # any path, quotes included
    sink = dec.get_by_name("out")
    dec.set_state(Gst.State.PLAYING)
    first = sink.emit("try-pull-sample", 10 * Gst.SECOND)
    if first is None:
        print(f"cannot decode {args.video}", file=sys.stderr, flush=True)
        dec.set_state(Gst.State.NULL)
        return 2
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
    server.set_address(args.bind)
    server.set_service(str(args.port))
    if args.user:
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string("media.factory.role", args.user)
        if args.digest:
            gi.require_version("GstRtsp", "1.0")
            from gi.repository import GstRtsp

            auth.add_digest(args.user, args.password or "", token)
            auth.set_supported_methods(GstRtsp.RTSPAuthMethod.DIGEST)
        else:
            auth.add_basic(GstRtspServer.RTSPAuth.make_basic(args.user, args.password or ""),
                           token)
        server.set_auth(auth)
        factory.add_role_from_structure(Gst.Structure.new_from_string(
            f"{args.user}, media.factory.access=(boolean)true, "
            "media.factory.construct=(boolean)true"))
    server.get_mount_points().add_factory(args.mount, factory)
    if server.attach(None) == 0:
        print(f"cannot listen on {args.bind}:{args.port}", file=sys.stderr, flush=True)
        dec.set_state(Gst.State.NULL)
        return 1

    u_off, v_off = info.offset[1], info.offset[2]
    c_stride = info.stride[1]
    band = STAMP_BLOCK
    neutral = bytes([128]) * c_stride * (band // 2)
    stop = threading.Event()

    def feed() -> None:
        sample = first
        period = 1.0 / args.fps
        next_t = time.monotonic()
        while not stop.is_set():
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

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    print(f"rtsp server ready on rtsp://{args.bind}:{args.port}{args.mount}", flush=True)
    loop = GLib.MainLoop()
    # Both signals quit the loop (PyGObject then leaves SIGINT alone: no traceback on Ctrl-C).
    signal.signal(signal.SIGTERM, lambda *_: loop.quit())
    signal.signal(signal.SIGINT, lambda *_: loop.quit())
    if args.exit_with_parent:
        def orphaned() -> bool:
            if os.getppid() != parent:  # re-parented: whoever started us is gone
                loop.quit()
                return False
            return True

        GLib.timeout_add(500, orphaned)
    loop.run()
    stop.set()
    feeder.join(2.0)
    dec.set_state(Gst.State.NULL)
    return 0


if __name__ == "__main__":
    sys.exit(main())
