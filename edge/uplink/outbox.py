"""Durable on-disk outbox for alarms: SQLite, so no alarm is lost when the edge process dies.

Why: MQTT QoS 1 makes delivery reliable only while the process lives. An alarm emitted while
the broker is unreachable sits in paho's memory queue, and a crash, a watchdog restart or a
power cut before the broker returns would lose it. ``MqttSink`` therefore stores every alarm
here *before* publishing it, deletes it when the broker acknowledges it (PUBACK), and on every
(re)connect republishes what is still stored, oldest first. Delivery is at least once:
consumers deduplicate on ``event_id``.

Storage: one SQLite file (stdlib ``sqlite3``), table ``outbox`` keyed by an autoincrementing
``seq`` (the order of ``add``; never reused, even after the newest entry is deleted) with
``event_id`` unique. Journal mode WAL: an append costs one sequential write plus one fsync,
readers (the replay) never block the writer, and the file is consistent after any crash.

Durability (power loss, not only process death): ``add`` commits with ``synchronous=FULL``,
so when it returns the WAL has been fsync'd and the alarm survives a power cut. With WAL,
``NORMAL`` would fsync only at checkpoints: safe against a process crash, but a power cut
could roll back the last alarms, precisely the situation (a storm, a pole losing power) where
an edge box must not forget them. The cost is one fsync per alarm; alarms are rare events.
``done`` commits with ``synchronous=NORMAL`` (no fsync): a power cut may roll back recent
deletions, which only makes those alarms be sent again (a duplicate, never a loss), and the
next ``add``'s fsync of the WAL makes earlier deletions durable as well. This keeps fsyncs off
paho's network thread, where ``done`` runs on every PUBACK. The guarantee holds only as far
as the storage honours flushes: use storage with power-loss protection (industrial SD/eMMC,
SSD) and keep write barriers on (the ext4 default). Creating the file fsyncs its folder too.

Size: at most ``max_entries`` (default 1,000,000; about 1 KB per alarm on disk). When full,
``add`` refuses the new alarm: it logs an error and raises ``OutboxFull``. Old entries are
never dropped silently to make room: the oldest unsent alarm is as important as the newest,
and the operator must see that the uplink has been down for that long.

Threads: one connection (``check_same_thread=False``) behind a lock, so paho's network thread
(``done`` on PUBACK), the pipeline thread (``add``) and the replay thread (``pending``) may
share an instance. The lock is a leaf: no method calls out while holding it. One process per
file: two processes on the same outbox would both replay it (duplicates, never losses).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
DEFAULT_MAX_ENTRIES = 1_000_000
BUSY_TIMEOUT_S = 5.0
JOURNAL_SIZE_LIMIT = 4 * 1024 * 1024  # truncate the WAL back to this after checkpoints

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT    NOT NULL UNIQUE,
    topic    TEXT    NOT NULL,
    payload  BLOB    NOT NULL,
    created  REAL    NOT NULL
)
"""


class OutboxError(RuntimeError):
    """The outbox cannot be used (closed, unreadable, disk full, newer schema)."""


class OutboxFull(OutboxError):
    """``add`` refused an alarm because the outbox holds ``max_entries`` already."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One stored alarm, not yet acknowledged by the broker."""

    seq: int  # order of add, increasing, never reused
    event_id: str
    topic: str
    payload: bytes
    created: float  # epoch seconds when stored


class Outbox:
    """Alarms waiting for a broker acknowledgement, in a SQLite file (see the module doc)."""

    def __init__(self, path: Path, *, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        self.path = Path(path)
        self.max_entries = max_entries
        self._lock = threading.Lock()
        created = not self.path.exists()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn: sqlite3.Connection | None = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                check_same_thread=False)
        except (OSError, sqlite3.Error) as err:
            raise OutboxError(f"outbox {self.path}: cannot open: {err}") from err
        try:
            self._count = self._setup()
        except (OSError, sqlite3.Error, OutboxError) as err:
            self._conn.close()
            self._conn = None
            if isinstance(err, OutboxError):
                raise
            raise OutboxError(f"outbox {self.path}: not a usable outbox: {err}") from err
        if created:
            _fsync_dir(self.path.parent)  # the new file's name survives a power cut too
        log.info("outbox opened", extra={"path": str(self.path), "entries": self._count,
                                         "max_entries": max_entries})

    def _setup(self) -> int:
        conn = self._conn
        assert conn is not None
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise OutboxError(f"outbox {self.path}: journal_mode WAL refused (got {mode})")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute(f"PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT}")
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise OutboxError(f"outbox {self.path}: schema version {version} is newer than "
                              f"this program's ({SCHEMA_VERSION})")
        conn.execute(_SCHEMA)
        if version < SCHEMA_VERSION:
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        return int(conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise OutboxError(f"outbox {self.path} is closed")
        return self._conn

    def add(self, event_id: str, topic: str, payload: bytes) -> None:
        """Store one alarm durably (fsync'd when this returns). Adding an ``event_id`` that is
        still stored does nothing (the first payload is kept); once ``done``, the same id may
        be added again. Raises ``OutboxFull`` when ``max_entries`` are stored, and
        ``OutboxError`` when the file cannot be written (disk full, I/O error)."""
        with self._lock:
            conn = self._db()
            try:
                if self._count >= self.max_entries:
                    if conn.execute("SELECT 1 FROM outbox WHERE event_id = ?",
                                    (event_id,)).fetchone() is not None:
                        return
                    log.error("outbox full, alarm refused", extra={
                        "path": str(self.path), "max_entries": self.max_entries,
                        "event_id": event_id, "topic": topic})
                    raise OutboxFull(
                        f"outbox {self.path} holds {self._count} alarms (max_entries "
                        f"{self.max_entries}): alarm {event_id} refused")
                cur = conn.execute(
                    "INSERT OR IGNORE INTO outbox (event_id, topic, payload, created) "
                    "VALUES (?, ?, ?, ?)", (event_id, topic, bytes(payload), time.time()))
            except sqlite3.Error as err:
                raise OutboxError(f"outbox {self.path}: cannot store alarm {event_id}: "
                                  f"{err}") from err
            self._count += cur.rowcount

    def pending(self, limit: int = 1000, *, after: int = 0) -> list[Entry]:
        """Up to ``limit`` stored entries with ``seq > after``, oldest first."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        with self._lock:
            try:
                rows = self._db().execute(
                    "SELECT seq, event_id, topic, payload, created FROM outbox "
                    "WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit)).fetchall()
            except sqlite3.Error as err:
                raise OutboxError(f"outbox {self.path}: cannot read: {err}") from err
        return [Entry(int(seq), str(eid), str(topic), bytes(payload), float(created))
                for seq, eid, topic, payload, created in rows]

    def done(self, event_id: str) -> bool:
        """Forget an acknowledged alarm; False if it was not stored. Not fsync'd by itself
        (see the module doc): after a power cut the alarm may come back, as a duplicate."""
        with self._lock:
            conn = self._db()
            try:
                conn.execute("PRAGMA synchronous=NORMAL")
                try:
                    cur = conn.execute("DELETE FROM outbox WHERE event_id = ?", (event_id,))
                finally:
                    conn.execute("PRAGMA synchronous=FULL")
            except sqlite3.Error as err:
                raise OutboxError(f"outbox {self.path}: cannot delete alarm {event_id}: "
                                  f"{err}") from err
            self._count -= cur.rowcount
            return cur.rowcount > 0

    def __len__(self) -> int:
        """Stored alarms (kept in memory: no query)."""
        with self._lock:
            return self._count

    @property
    def closed(self) -> bool:
        return self._conn is None

    def close(self) -> None:
        """Close the file (idempotent). Stored entries stay for the next ``Outbox(path)``."""
        with self._lock:
            if self._conn is None:
                return
            try:
                self._conn.close()
            finally:
                self._conn = None

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._conn is None else f"{self._count} entries"
        return f"Outbox({str(self.path)!r}, {state})"


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # e.g. a platform without directory handles: nothing more to do
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
