"""The logger handed to paho clients, without paho's shutdown noise.

paho 2.x logs "Client is not connected" at ERROR when its network thread runs one more loop
after a clean ``disconnect()``. Our clients report real outages themselves (on_disconnect),
so that line would only teach operators to ignore ERRORs.
"""

from __future__ import annotations

import logging


class _ClosedSocketNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Client is not connected")


_NOISE = _ClosedSocketNoise()


def paho_logger(name: str) -> logging.Logger:
    """``logging.getLogger(name)`` with the filter attached (once)."""
    logger = logging.getLogger(name)
    if _NOISE not in logger.filters:
        logger.addFilter(_NOISE)
    return logger
