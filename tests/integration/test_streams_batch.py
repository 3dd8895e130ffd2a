"""A batch of stream entries is written to Redis once, and a failed write loses nothing:
the book forgets the batch's events, so their redelivery applies and stores them again."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
import redis

from central.incidents.aggregator import Aggregator
from central.incidents.book import IncidentBook
from central.incidents.store import RedisStore
from central.incidents.worker import StreamWorker
from central.streams import GROUP, PartitionKeys, partition_of
from tests.support.alarms import alarm

SITE = "batchsite"


def fill(r: redis.Redis, keys: PartitionKeys, zones: list[str]) -> None:
    for i, z in enumerate(zones):
        a = alarm(z, time.time(), track=i)
        r.xadd(keys.stream(partition_of(SITE, z, keys.partitions)), {
            "k": "alarm", "payload": a.to_json(),
            "topic": f"perimeter/v1/{SITE}/alarm/cam1/{z}/intrusion"})


def apply_all(worker: StreamWorker, n: int, timeout: float = 10.0) -> None:
    """Poll until ``n`` entries are applied (AssertionError after ``timeout``)."""
    done, deadline = 0, time.monotonic() + timeout
    while done < n:
        assert time.monotonic() < deadline, f"{done} of {n} entries applied"
        done += worker.poll()


@pytest.fixture
def worker(redis_url: str, redis_ns: str) -> Iterator[StreamWorker]:
    r = redis.Redis.from_url(redis_url)
    agg = Aggregator(RedisStore(r, ns=redis_ns), IncidentBook())
    w = StreamWorker(agg, PartitionKeys(redis_ns, 2), "solo")
    w.rebalance()
    yield w
    w.leases.leave()


def test_a_batch_is_applied_stored_and_acknowledged(worker: StreamWorker) -> None:
    r, keys = worker.r, worker.keys
    fill(r, keys, [f"z{i % 5}" for i in range(50)])
    apply_all(worker, 50)
    stored = {json.loads(v)["zone"]: json.loads(v)
              for v in r.hgetall(worker.aggregator.store.incidents_key).values()}
    assert sorted(stored) == [f"z{i}" for i in range(5)]
    assert all(len(inc["alarms"]) == 10 for inc in stored.values())
    assert r.xlen(worker.aggregator.store.events_key) == 50
    for p in range(keys.partitions):
        assert r.xpending(keys.stream(p), GROUP)["pending"] == 0


def test_a_failed_write_leaves_the_batch_pending_and_it_is_applied_again(
        worker: StreamWorker, monkeypatch: pytest.MonkeyPatch) -> None:
    r, keys, store = worker.r, worker.keys, worker.aggregator.store
    fill(r, keys, ["w1", "w2"])
    real = store._fenced_write
    calls = {"n": 0}

    def failing(*a: object, **k: object) -> object:
        if calls["n"] == 0:  # the batch's one atomic write (and acknowledgement), once
            calls["n"] += 1
            raise redis.ConnectionError("redis went away mid-batch")
        return real(*a, **k)

    monkeypatch.setattr(store, "_fenced_write", failing)
    with pytest.raises(redis.ConnectionError):
        worker.poll()
    assert r.hlen(store.incidents_key) == 0
    pending = sum(r.xpending(keys.stream(p), GROUP)["pending"] for p in range(2))
    assert pending == 2, "nothing may be acknowledged when the write failed"
    worker._recovered()  # what the worker loop does once Redis answers again
    worker.poll()
    stored = {json.loads(v)["zone"] for v in r.hgetall(store.incidents_key).values()}
    assert stored == {"w1", "w2"}
    assert r.xlen(store.events_key) == 2
    assert sum(r.xpending(keys.stream(p), GROUP)["pending"] for p in range(2)) == 0


def test_applied_entries_are_trimmed_from_the_partition_streams(worker: StreamWorker) -> None:
    r, keys = worker.r, worker.keys
    fill(r, keys, [f"t{i}" for i in range(40)])
    apply_all(worker, 40)
    assert sum(r.xlen(keys.stream(p)) for p in range(2)) >= 40
    worker.rebalance()  # renews the leases and trims what every consumer is done with
    assert sum(r.xlen(keys.stream(p)) for p in range(2)) <= 2  # at most the last delivered one
