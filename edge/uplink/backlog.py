"""Alarms that wait on disk for the broker: the outbox and the thread that replays it.

With an outbox (``edge.uplink.outbox``) an alarm survives the process: ``MqttSink.emit`` first
stores it (fsync'd), then publishes it; the broker's PUBACK deletes it. While the link is
down, or while a replay is running, ``emit`` only stores the alarm. On every (re)connect the
replay thread republishes, oldest first, every stored alarm that is not already in paho's
hands (those paho resends itself), at most ``REPLAY_WINDOW`` unacknowledged at a time, then
new alarms go straight out again. So alarms left by an earlier run (crash, restart, power cut)
go out first, in order, before the ones emitted after the restart. A crash between the
broker's PUBACK and the deletion resends that alarm: duplicates are possible (consumers
deduplicate on ``event_id``), losses are not.

Claims: an alarm is *claimed* while a publish of it is in paho's hands; the replay skips
claimed alarms, and a claim is released only once the alarm is deleted, so the replay never
sends an alarm that paho is still sending. State is guarded by one condition; its lock is
taken inside ``Session.cond`` (never the other way round).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from edge.uplink.outbox import Entry, Outbox, OutboxError

log = logging.getLogger(__name__)

REPLAY_WINDOW = 100  # at most this many replayed alarms unacknowledged at once

Send = Callable[[Entry], None]  # publish one stored alarm for the replay; RuntimeError if not


class Backlog:
    """The outbox and its replay thread (see the module docstring)."""

    def __init__(self, path: Path, max_entries: int, send: Send):
        self.path = path
        self.max_entries = max_entries
        self._send = send
        self._outbox: Outbox | None = None
        self._cond = threading.Condition()
        self._claims: Counter[str] = Counter()  # event_id -> publishes in paho's hands
        self._link_up = False  # connected, as the replay thread sees it
        self._backlog = False  # stored alarms may not be in paho's hands: emit defers
        self._cursor = 0  # seq of the last outbox entry examined in this pass
        self._generation = 0  # bumped on every connect: restarts the replay pass
        self._deferred = False  # an emit deferred to the replay since its last read
        self._inflight = 0  # replayed alarms not yet acknowledged
        self._stopping = False
        self._thread: threading.Thread | None = None

    def __len__(self) -> int:
        """Alarms stored and not yet acknowledged (0 when closed)."""
        outbox = self._outbox
        return 0 if outbox is None or outbox.closed else len(outbox)

    # -- lifecycle -----------------------------------------------------------------------------

    def open(self) -> None:
        """Open the outbox (``OutboxError`` if it cannot be) and start the replay thread."""
        self._outbox = Outbox(self.path, max_entries=self.max_entries)
        if len(self._outbox):
            log.warning("outbox holds alarms from an earlier run, sent first", extra={
                "path": str(self.path), "backlog": len(self._outbox)})
        with self._cond:
            self._stopping = False
            self._backlog = True  # until the first replay pass has caught up
            self._link_up = False
        self._thread = threading.Thread(target=self._loop, name="mqtt-outbox-replay",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float) -> None:
        """Stop the replay thread (acks still delete what they acknowledge)."""
        thread = self._thread
        if thread is not None:
            with self._cond:
                self._stopping = True
                self._cond.notify_all()
            thread.join(timeout=max(1.0, timeout_s))
            self._thread = None

    def close(self, timeout_s: float) -> None:
        """Stop the replay thread and close the outbox; what is stored stays for next time."""
        self.stop(timeout_s)
        outbox, self._outbox = self._outbox, None
        if outbox is not None:
            outbox.close()

    def link(self, up: bool) -> None:
        """The link came up (start a replay pass from the oldest alarm) or went down (from
        now on ``emit`` only stores, and a pass running now must not clear the backlog)."""
        with self._cond:
            self._link_up = up
            self._backlog = True
            self._generation += 1
            if up:
                self._cursor = 0
            self._cond.notify_all()

    # -- alarms going out ----------------------------------------------------------------------

    def store(self, event_id: str, topic: str, payload: bytes) -> bool:
        """Claim and store an alarm before it is published; False (logged) when the outbox
        refuses it (full, disk error): then it goes out from memory only."""
        outbox = self._outbox
        if outbox is None:
            return False
        with self._cond:  # claimed before it is visible to the replay: never sent twice
            self._claims[event_id] += 1
        try:
            outbox.add(event_id, topic, payload)
        except BaseException as err:
            self.release(event_id)
            if not isinstance(err, OutboxError):
                raise
            log.error("alarm NOT stored in the outbox, published from memory only", extra={
                "event_id": event_id, "topic": topic, "error": str(err),
                "path": str(self.path)})
            return False
        return True

    def defer(self, event_id: str) -> bool:
        """True when older alarms are still to go out: the replay sends this stored one
        after them (its claim is released)."""
        with self._cond:
            if not self._backlog:
                return False
            self._release(event_id)
            self._deferred = True
            self._cond.notify_all()
            return True

    def release(self, event_id: str) -> None:
        """One publish of ``event_id`` is no longer in paho's hands (it failed)."""
        with self._cond:
            self._release(event_id)

    def _release(self, event_id: str) -> None:
        self._claims[event_id] -= 1
        if self._claims[event_id] <= 0:
            del self._claims[event_id]

    def acked(self, event_id: str, replayed: bool) -> None:
        """The broker acknowledged a stored alarm: delete it, then release its claim."""
        outbox = self._outbox
        if outbox is not None:
            try:
                outbox.done(event_id)
            except OutboxError as err:  # it stays stored: sent again later, a duplicate
                log.warning("outbox: acknowledged alarm not deleted", extra={
                    "event_id": event_id, "error": str(err)})
        with self._cond:
            self._release(event_id)
            if replayed:
                self._inflight -= 1
            self._cond.notify_all()

    def rescan(self) -> None:
        """Start the replay pass again from the oldest entry (after a failed publish)."""
        with self._cond:
            self._backlog = True
            self._cursor = 0
            self._generation += 1
            self._cond.notify_all()

    # -- the replay thread ---------------------------------------------------------------------

    def _ready(self) -> bool:
        return self._stopping or (self._link_up and self._backlog
                                  and self._inflight < REPLAY_WINDOW)

    def _loop(self) -> None:
        """Send stored alarms not in paho's hands, oldest first, ``REPLAY_WINDOW`` at a time;
        once a pass finds nothing more, clear the backlog so that emit publishes directly."""
        outbox = self._outbox
        assert outbox is not None
        while True:
            with self._cond:
                self._cond.wait_for(self._ready)
                if self._stopping:
                    return
                generation, after = self._generation, self._cursor
                room = REPLAY_WINDOW - self._inflight
                self._deferred = False
            try:
                page = outbox.pending(room, after=after)
            except OutboxError as err:
                log.error("outbox replay: cannot read, retrying", extra={"error": str(err)})
                with self._cond:
                    self._cond.wait_for(lambda: self._stopping, timeout=1.0)
                continue
            if not page:
                with self._cond:
                    if generation == self._generation and self._link_up and not self._deferred:
                        self._backlog = False  # caught up: emit publishes directly again
                        log.debug("outbox replay caught up", extra={"cursor": after})
                continue
            self._replay(page, generation)

    def _replay(self, page: list[Entry], generation: int) -> None:
        for entry in page:
            with self._cond:
                if generation != self._generation or self._stopping:
                    return  # reconnected (or closing): the next pass starts over
                self._cursor = entry.seq
                if self._claims[entry.event_id] > 0:
                    continue  # paho holds it and resends it itself
                self._claims[entry.event_id] += 1
                self._inflight += 1
            try:
                self._send(entry)
            except RuntimeError as err:
                with self._cond:
                    self._inflight -= 1
                log.error("outbox replay: publish failed, retrying", extra={
                    "event_id": entry.event_id, "error": str(err)})
                with self._cond:
                    if generation == self._generation:
                        self._cursor = entry.seq - 1
                    self._cond.wait_for(lambda: self._stopping, timeout=1.0)
                return
            log.debug("alarm replayed from the outbox", extra={
                "event_id": entry.event_id, "seq": entry.seq})
