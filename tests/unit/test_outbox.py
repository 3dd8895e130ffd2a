"""The SQLite alarm outbox on its own: persistence, idempotency, order, bound, threads, crash."""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from edge.uplink.outbox import Entry, Outbox, OutboxError, OutboxFull
from tests.support.services import REPO_ROOT


def ids(entries: list[Entry]) -> list[str]:
    return [e.event_id for e in entries]


def test_add_pending_done_in_order(tmp_path: Path) -> None:
    with Outbox(tmp_path / "outbox.db") as box:
        assert len(box) == 0 and box.pending() == []
        names = ["zulu", "alpha", "mike", "bravo"]  # order of add, not of the ids
        for i, name in enumerate(names):
            box.add(name, f"t/{name}", f"payload-{i}".encode())
        assert len(box) == 4
        entries = box.pending()
        assert ids(entries) == names
        assert [e.topic for e in entries] == [f"t/{n}" for n in names]
        assert [e.payload for e in entries] == [f"payload-{i}".encode() for i in range(4)]
        assert [e.seq for e in entries] == sorted(e.seq for e in entries)
        assert all(isinstance(e.payload, bytes) and e.created > 0 for e in entries)

        assert ids(box.pending(2)) == ["zulu", "alpha"]
        assert ids(box.pending(2, after=entries[1].seq)) == ["mike", "bravo"]
        assert box.pending(10, after=entries[-1].seq) == []

        assert box.done("alpha") is True
        assert box.done("alpha") is False  # already gone
        assert box.done("never-added") is False
        assert len(box) == 3 and ids(box.pending()) == ["zulu", "mike", "bravo"]
        with pytest.raises(ValueError):
            box.pending(0)


def test_add_is_idempotent_on_event_id(tmp_path: Path) -> None:
    with Outbox(tmp_path / "outbox.db") as box:
        box.add("e1", "t/1", b"first")
        box.add("e2", "t/2", b"x")
        box.add("e1", "t/other", b"second")  # same event: ignored, keeps its place
        assert len(box) == 2
        first = box.pending()[0]
        assert (first.event_id, first.topic, first.payload) == ("e1", "t/1", b"first")
        assert box.done("e1")
        box.add("e1", "t/1", b"again")  # acknowledged before: a new entry, at the end
        assert ids(box.pending()) == ["e2", "e1"] and len(box) == 2


def test_entries_survive_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "outbox.db"  # the folder is created
    box = Outbox(path)
    for i in range(5):
        box.add(f"e{i}", "t", bytes([i]) * 100)
    box.done("e1")
    box.done("e4")  # the newest: its seq must not be reused after reopening
    last_seq = box.pending()[-1].seq
    box.close()
    box.close()  # idempotent
    assert box.closed
    with pytest.raises(OutboxError, match="closed"):
        box.add("late", "t", b"")
    with pytest.raises(OutboxError, match="closed"):
        box.pending()

    with Outbox(path) as again:
        assert len(again) == 3
        assert ids(again.pending()) == ["e0", "e2", "e3"]
        assert again.pending()[1].payload == bytes([2]) * 100
        again.add("e5", "t", b"new")
        entries = again.pending()
        assert ids(entries) == ["e0", "e2", "e3", "e5"]
        assert entries[-1].seq > last_seq + 1  # e4's seq was not reused


def test_durability_settings(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    with Outbox(path) as box:
        box.add("e", "t", b"p")
        assert box._conn is not None
        assert box._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        box.done("e")
        assert box._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # back to FULL
    other = sqlite3.connect(path)
    try:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # stored in file
        assert other.execute("PRAGMA user_version").fetchone()[0] == 1
    finally:
        other.close()


def test_full_outbox_refuses_new_alarms_and_keeps_old(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with Outbox(tmp_path / "outbox.db", max_entries=3) as box:
        for i in range(3):
            box.add(f"e{i}", "t", b"p")
        with caplog.at_level(logging.ERROR, logger="edge.uplink.outbox"), \
                pytest.raises(OutboxFull, match="max_entries 3"):
            box.add("e3", "t", b"p")
        assert any(r.message == "outbox full, alarm refused" for r in caplog.records)
        assert ids(box.pending()) == ["e0", "e1", "e2"]  # nothing dropped to make room
        box.add("e1", "t", b"p")  # already stored: idempotent, not an error when full
        assert box.done("e0")
        box.add("e3", "t", b"p")  # room again
        assert ids(box.pending()) == ["e1", "e2", "e3"]
    assert issubclass(OutboxFull, OutboxError)
    with pytest.raises(ValueError):
        Outbox(tmp_path / "x.db", max_entries=0)


def test_count_survives_reopen_for_the_bound(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    with Outbox(path, max_entries=2) as box:
        box.add("a", "t", b"")
        box.add("b", "t", b"")
    with Outbox(path, max_entries=2) as box, pytest.raises(OutboxFull):
        box.add("c", "t", b"")


def test_concurrent_add_and_done_from_threads(tmp_path: Path) -> None:
    with Outbox(tmp_path / "outbox.db") as box:
        errors: list[BaseException] = []

        def writer(w: int) -> None:
            try:
                for i in range(50):
                    box.add(f"w{w}-{i}", "t", b"x" * 50)
            except BaseException as err:  # pragma: no cover - reported below
                errors.append(err)

        def acker() -> None:  # deletes what it sees, like PUBACKs on paho's thread
            try:
                for _ in range(200):
                    for entry in box.pending(10):
                        box.done(entry.event_id)
            except BaseException as err:  # pragma: no cover - reported below
                errors.append(err)

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
        threads.append(threading.Thread(target=acker))
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not errors
        left = box.pending(1000)
        assert len(box) == len(left)  # the in-memory count matches the table
        for entry in left:
            box.done(entry.event_id)
        assert len(box) == 0


def test_added_alarm_survives_a_killed_process(tmp_path: Path) -> None:
    """add() returning means stored: a process that dies right after (no close) keeps it."""
    path = tmp_path / "outbox.db"
    code = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from edge.uplink.outbox import Outbox\n"
        "box = Outbox(Path(sys.argv[1]))\n"
        "for i in range(10):\n"
        "    box.add(f'e{i}', 'topic', b'payload')\n"
        "box.done('e0')\n"
        "os._exit(0)  # no close, no atexit: the process just ends\n"
    )
    subprocess.run([sys.executable, "-c", code, str(path)], cwd=REPO_ROOT, check=True,
                   timeout=30)
    with Outbox(path) as box:
        assert ids(box.pending()) == [f"e{i}" for i in range(1, 10)]


def test_unusable_files_fail_clearly(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database" * 100)
    with pytest.raises(OutboxError, match=r"garbage\.db"):
        Outbox(garbage)

    newer = tmp_path / "newer.db"
    conn = sqlite3.connect(newer)
    conn.execute("PRAGMA user_version=99")
    conn.close()
    with pytest.raises(OutboxError, match="schema version 99"):
        Outbox(newer)
