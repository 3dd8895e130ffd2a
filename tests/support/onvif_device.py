"""ONVIF peers for the tests: ``Device`` (the simulator behind ``perimeter sim onvif``, now in
``sim/onvif.py``, re-exported here) and ``IpycamDevice``, ipycam's ONVIF service (a dev-only
dependency) as a second, independent peer.

``python -m tests.support.onvif_device --bind IP [--ipycam]`` runs either as a process (in a network
namespace for the discovery tests) and prints ``ready PORT`` once it serves.
"""

from __future__ import annotations

import argparse
import socket
import sys
import threading
from http.server import ThreadingHTTPServer

from sim.onvif import Device, DeviceSpec, Profile

__all__ = ["Device", "DeviceSpec", "IpycamDevice", "Profile"]


class IpycamDevice:
    """ipycam's ONVIF service (PyPI ``ipycam``, written by others) as a second, independent
    peer: its HTTP handler and WS-Discovery server without its video pipeline (go2rtc,
    FFmpeg), which the stream URI does not need."""

    def __init__(self, host: str, username: str, password: str, name: str = "IpyCam"):
        from types import SimpleNamespace

        from ipycam.config import CameraConfig
        from ipycam.http import IPCameraHTTPHandler
        from ipycam.onvif import ONVIFService

        probe = socket.socket()
        probe.bind((host, 0))
        port = probe.getsockname()[1]
        probe.close()
        self.config = CameraConfig(name=name, local_ip=host, onvif_port=port,
                                   username=username, password=password)
        self.onvif = ONVIFService(self.config)
        handler = type("Handler", (IPCameraHTTPHandler,), {
            "camera": SimpleNamespace(onvif=self.onvif, config=self.config)})
        self._http = ThreadingHTTPServer((host, port), handler)
        self._http.daemon_threads = True
        self.port = port
        self._discovery: threading.Thread | None = None
        threading.Thread(target=self._http.serve_forever, daemon=True).start()

    def discovery(self) -> IpycamDevice:
        from ipycam.discovery import WSDiscoveryServer

        self._discovery = WSDiscoveryServer(self.onvif)
        self._discovery.start()
        return self

    def close(self) -> None:
        if self._discovery is not None:
            self._discovery.stop()  # type: ignore[attr-defined]
        self._http.shutdown()
        self._http.server_close()


def main() -> None:
    ap = argparse.ArgumentParser(description="simulated ONVIF device")
    ap.add_argument("--bind", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--name", default="SimCam")
    ap.add_argument("--no-discovery", action="store_true")
    ap.add_argument("--ipycam", action="store_true", help="serve ipycam's ONVIF instead")
    args = ap.parse_args()
    dev: Device | IpycamDevice
    if args.ipycam:
        dev = IpycamDevice(args.bind, "admin", "secret", args.name)
    else:
        dev = Device(DeviceSpec(host=args.bind, port=args.port, name=args.name)).start()
    if not args.no_discovery:
        dev.discovery()
    print(f"ready {dev.port}", flush=True)
    sys.stdin.read()  # runs until the test closes our stdin
    dev.close()


if __name__ == "__main__":
    main()
