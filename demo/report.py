"""``perimeter demo``'s output: one line per event from any thread, and the run's counts.

It prints one line per webhook delivery and per speaker clip, and a summary every 30 s;
``Tally`` and ``count_alarms`` feed ``OUT/summary.json``.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from demo.servers import Delivery

if TYPE_CHECKING:  # the speaker modules load paho: only when the demo runs
    from wire.messages import StatusMessage

_print_lock = threading.Lock()


def say(text: str) -> None:
    """One line on stdout, whole, from any thread."""
    with _print_lock:
        print(text, flush=True)


def event(kind: str, text: str) -> None:
    say(f"{time.strftime('%H:%M:%S')} {kind:<8} {text}")


# -- counting ----------------------------------------------------------------------------------


@dataclass
class Tally:
    """What the speakers reported, counted from their threads."""

    clips: list[str] = field(default_factory=list)
    clip_failures: int = 0
    webhook_lines: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def count_alarms(path: Path) -> dict[str, Any]:
    """``alarms.jsonl``'s events, by state and raised by kind (for ``summary.json``)."""
    by_kind: dict[str, int] = {}
    by_state: dict[str, int] = {}
    lines = 0
    with contextlib.suppress(OSError), path.open(encoding="utf-8") as fh:
        for line in fh:
            try:
                a = json.loads(line)
            except ValueError:
                continue  # a line being written
            lines += 1
            by_state[a.get("state", "?")] = by_state.get(a.get("state", "?"), 0) + 1
            if a.get("state") == "raised":
                by_kind[a.get("kind", "?")] = by_kind.get(a.get("kind", "?"), 0) + 1
    return {"events": lines, "by_state": by_state, "raised_by_kind": by_kind}


def summary_line(s: dict[str, Any]) -> str:
    """The summary printed every 30 s and at the end, from a ``summary.json`` snapshot."""
    return (f"incidents open {s['incidents_open']} ({s['incidents']} in all), alarms "
            f"accepted {s['alarms_accepted']}, clips written {s['clips_written']}, "
            f"webhooks received {s['webhooks_received']}")


# -- one line per event ------------------------------------------------------------------------


def report_delivery(d: Delivery) -> None:
    """The receiver's ``on_delivery``: what the governance centre got."""
    p = d.payload
    if not d.verified:
        event("webhook", "REJECTED: bad signature (answered 401)")
        return
    what = (f"incident {str(p.get('incident', '?'))[:8]} {p.get('zone')} "
            f"({p.get('zone_kind')}, {p.get('severity')}) "
            f"{','.join(p.get('kinds') or [])} level {p.get('escalation_level')}")
    event("webhook", f"governance <- {what}, signature ok"
          + (" (repeat, same key)" if d.repeat else ""))


def clip_reporter(clips: Path, tally: Tally) -> Callable[[StatusMessage], None]:
    """The speakers' ``on_status``: a line per clip written to ``clips`` or failure, counted."""

    def on_status(s: StatusMessage) -> None:
        if s.state == "done" and s.command_id:
            found = sorted(clips.glob(f"*-{s.command_id}.wav"))
            if not found:
                return
            path = found[-1]
            with tally.lock:
                tally.clips.append(path.name)
            secs = ""
            with contextlib.suppress(OSError, wave.Error), wave.open(str(path)) as w:
                secs = f" ({w.getnframes() / w.getframerate():.1f} s)"
            event("speaker", f"{s.speaker} wrote {path}{secs}")
        elif s.state == "failed":
            with tally.lock:
                tally.clip_failures += 1
            event("speaker", f"{s.speaker} FAILED {s.command_id}: {s.reason}")

    return on_status
