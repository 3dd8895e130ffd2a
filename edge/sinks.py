"""Where alarms go: a JSONL file, stdout, MQTT (``edge.uplink.sink``).

Every sink gets every event, in order (``FanOut``). A file sink writes one whole line and
flushes per alarm, so a crash loses nothing already raised and never leaves half a line; sinks
are opened only after the source and the model have loaded, so bad input leaves no output
behind.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Protocol

from zones.alarm import Alarm

log = logging.getLogger(__name__)


class AlarmSink(Protocol):
    """A destination for alarm events."""

    def open(self) -> None: ...

    def emit(self, alarm: Alarm) -> None: ...

    def close(self) -> None: ...


class FanOut:
    """Several sinks as one, behind a lock: cameras and attachments (radar) emit from their
    own threads, and each event reaches every sink whole and in the same order."""

    def __init__(self, sinks: Sequence[AlarmSink]):
        self.sinks = list(sinks)
        self._lock = threading.Lock()

    def open(self) -> None:
        """Open every sink; if one fails, close those already open and re-raise."""
        for i, s in enumerate(self.sinks):
            try:
                s.open()
            except BaseException:
                for opened in self.sinks[:i]:
                    opened.close()
                raise

    def emit(self, alarm: Alarm) -> None:
        with self._lock:
            for sink in self.sinks:
                sink.emit(alarm)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


class JsonlSink:
    """One JSON alarm a line, flushed and fsync'd as written."""

    def __init__(self, path: Path, fsync: bool = True):
        self.path = path
        self.fsync = fsync
        self._fh: IO[str] | None = None
        self.count = 0

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = self.path.open("w", encoding="utf-8")

    def emit(self, alarm: Alarm) -> None:
        assert self._fh is not None, "sink not opened"
        self._fh.write(alarm.to_json() + "\n")
        self._fh.flush()
        if self.fsync:
            os.fsync(self._fh.fileno())
        self.count += 1

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


class StdoutSink:
    """A readable line per event for a person watching a terminal."""

    def __init__(self, stream: IO[str] | None = None):
        self.stream = stream or sys.stdout

    def open(self) -> None:
        pass

    def emit(self, alarm: Alarm) -> None:
        who = alarm.track_id if alarm.track_id is not None else alarm.track_ids
        extra = ""
        if alarm.evidence.count is not None:
            extra = f" count={alarm.evidence.count}"
            if alarm.evidence.density is not None:
                extra += f" density={alarm.evidence.density:.2f}/m2"
        self.stream.write(
            f"ALARM {alarm.state.value:<7} {alarm.kind.value:<13} {alarm.severity.value:<8} "
            f"camera={alarm.camera} zone={alarm.zone}({alarm.zone_kind.value},{alarm.risk.value})"
            f" track={who} frame={alarm.frame}{extra}\n")
        self.stream.flush()

    def close(self) -> None:
        pass


def read_jsonl(path: Path) -> list[Alarm]:
    """Alarms from a JSONL file written by ``JsonlSink`` (benchmarks and tests)."""
    with path.open(encoding="utf-8") as fh:
        return [Alarm.model_validate(json.loads(line)) for line in fh if line.strip()]
