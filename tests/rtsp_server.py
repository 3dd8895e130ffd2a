"""The tests' RTSP camera now lives in the package, as ``perimeter sim rtsp``: the server is
``edge/sim_rtsp_server.py`` (system Python, GStreamer), its controller ``edge/sim_rtsp.py``.
Re-exported here for code that still imports it from ``tests``."""

from edge.sim_rtsp import (
    SYSTEM_PYTHON,
    RtspServer,
    RtspServerError,
    gst_rtsp_available,
    port_listening,
    read_stamp,
)
from edge.sim_rtsp_server import STAMP_BITS, STAMP_BLOCK, stamp_row

__all__ = ["STAMP_BITS", "STAMP_BLOCK", "SYSTEM_PYTHON", "RtspServer", "RtspServerError",
           "gst_rtsp_available", "port_listening", "read_stamp", "stamp_row"]
