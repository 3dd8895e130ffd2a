"""Scale-out under the faults a field deployment sees, on a real Redis: host clocks that
disagree, a worker paused past its lease, a long outage of every worker."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from prometheus_client import CollectorRegistry

from central.clock import RedisClock
from central.incidents.aggregator import Aggregator
from central.incidents.book import IncidentBook
from central.incidents.store import RedisStore
from central.incidents.worker import StreamWorker
from central.intake.mqtt import Incoming
from central.intake.streamer import StreamIntake
from central.intake.validate import AlarmGate
from central.metrics import CentralMetrics
from central.streams import GROUP, PartitionKeys
from central.upkeep import Upkeep
from tests.support.alarms import alarm
from tests.support.central import registry
from wire import topics

SITE = "fence-park"


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def worker(r: redis.Redis, ns: str, wid: str, partitions: int = 4) -> StreamWorker:
    agg = Aggregator(RedisStore(r, ns=ns), IncidentBook())
    return StreamWorker(agg, PartitionKeys(ns, partitions), wid, lease_s=2.0)


def test_membership_and_leases_ignore_the_hosts_clocks(
        r: redis.Redis, redis_ns: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker whose host clock runs an hour behind is not declared dead by the others
    (nor its partitions wanted by them): heartbeats are stamped with Redis TIME."""
    a, b = worker(r, redis_ns, "a"), worker(r, redis_ns, "b")
    a.rebalance()
    b.rebalance()
    a.rebalance()  # a gives up what the assignment now gives b
    b.rebalance()
    assert (a.owned, b.owned) == ({0, 2}, {1, 3})
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() - 3600)  # b's host clock is wrong
    b.rebalance()
    monkeypatch.setattr(time, "time", real)
    a.rebalance()
    assert (a.owned, b.owned) == ({0, 2}, {1, 3})
    assert sorted(m.decode() for m in r.zrange(f"{redis_ns}:workers", 0, -1)) == ["a", "b"]


def test_a_worker_paused_past_its_lease_cannot_store_over_the_new_owner(
        r: redis.Redis, redis_ns: str) -> None:
    """Worker a read an alarm, then was paused (GC, a stopped VM) past its lease; b took the
    partition and applied it. When a wakes up and finishes its batch, the fencing token
    stops it: nothing of a's is stored, and the alarm is in exactly one incident."""
    keys = PartitionKeys(redis_ns, 1)
    a = worker(r, redis_ns, "a", partitions=1)
    a.rebalance()
    assert a.owned == {0}
    payload = alarm("bank", time.time()).to_json()
    r.xadd(keys.stream(0), {"k": "alarm", "payload": payload, "site": SITE,
                            "topic": topics.alarm(SITE, "cam1", "bank", "intrusion"),
                            "t": f"{time.time():.6f}"})
    (_, entries), = r.xreadgroup(GROUP, "a", {keys.stream(0): ">"}, count=10)
    # ... a is paused here; its lease runs out and b takes the partition.
    r.delete(keys.lease(0))
    b = worker(r, redis_ns, "b", partitions=1)
    r.zrem(keys.workers, "a")
    b.rebalance()
    assert b.owned == {0}
    b.poll()  # b claims a's unfinished entry and applies it
    stored = r.hgetall(f"{redis_ns}:incidents")
    assert len(stored) == 1
    # a wakes up and finishes the batch it held.
    assert a._apply(keys.stream(0), entries) == 0
    assert a.fenced_out == 1 and a.owned == set()
    assert r.hgetall(f"{redis_ns}:incidents") == stored, "a stored over b's state"
    assert r.xlen(f"{redis_ns}:events") == 1
    assert r.xpending(keys.stream(0), GROUP)["pending"] == 0


def test_appends_never_trim_and_a_growing_backlog_is_reported(
        r: redis.Redis, redis_ns: str, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """With every worker down the partition streams grow rather than lose alarms (no MAXLEN
    on the intake's appends); the backlog is exported and warned about."""
    keys = PartitionKeys(redis_ns, 2)
    gate = AlarmGate(lambda *_: None, registry=registry(SITE, [f"z{i}" for i in range(10)]))
    intake = StreamIntake(gate, r, keys, lambda zone: zone)
    trimming: list[dict[str, Any]] = []
    real_xadd = redis.client.Pipeline.xadd

    def spy(self: Any, name: Any, fields: Any, *args: Any, **kw: Any) -> Any:
        if args or kw.get("maxlen") is not None or kw.get("minid") is not None:
            trimming.append(kw)
        return real_xadd(self, name, fields, *args, **kw)

    monkeypatch.setattr(redis.client.Pipeline, "xadd", spy)
    now = time.time()
    items = [Incoming(alarm(f"z{i % 10}", now, track=i).to_json().encode(),
                      topics.alarm(SITE, "cam1", f"z{i % 10}", "intrusion"), now)
             for i in range(300)]
    assert intake.many(items) == 300
    assert trimming == [], "an append that may trim can drop alarms no worker applied"
    lengths = [r.xlen(keys.stream(p)) for p in range(2)]
    assert sum(lengths) == 300
    upkeep = Upkeep(RedisClock(r), r, keys, None, None,  # type: ignore[arg-type]
                    publish_s=5, backlog_warn=100, worker_id="w")
    metrics = CentralMetrics(CollectorRegistry())
    metrics.attach(upkeep=upkeep)
    with caplog.at_level(logging.WARNING, logger="central.upkeep"):
        upkeep.check_backlog()
    warned = {rec.__dict__["partition"] for rec in caplog.records
              if "backlog high" in rec.getMessage()}
    assert warned == {p for p, n in enumerate(lengths) if n >= 100}
    for p, n in enumerate(lengths):
        assert metrics.registry.get_sample_value(
            "perimeter_central_partition_backlog", {"partition": str(p)}) == n


def test_the_central_clock_is_redis_time(r: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = RedisClock(r)
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() - 7200)  # this host is two hours behind
    assert clock.sync(force=True)
    sec, usec = r.time()
    assert abs(clock() - (sec + usec / 1e6)) < 0.5
    assert abs(clock.offset_s + 7200) < 0.5
    json.dumps(clock())  # a plain float
