"""Several central workers on real Mosquitto and Redis: partitions split between them, each
incident handled by one worker, a dead worker's partitions and unfinished entries taken over,
operator commands routed to the owner, the emergency mode shared, Redis restarted under a
running central."""

from __future__ import annotations

import json
import queue
import time
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import redis

from central.config import CentralConfig
from central.incidents.book import LifecycleError
from central.incidents.ops import IncidentOps
from central.runtime import Central
from central.streams import GROUP, PartitionKeys, assignment, partition_of
from tests.support.alarms import alarm
from tests.support.waiting import wait_until
from wire import topics
from wire.client import Broker

CONFIG = CentralConfig.model_validate({
    "central": {"ack_timeout_s": {"high": 3600.0}, "accept_any_site": True},
    "speakers": [{"id": "spk-1"}],
    "plans": [{"name": "all", "first": {"speak": {"text": "危险，请离开！"},
                                        "speakers": ["spk-1"]}, "cooldown_s": 0}],
    "modes": {"typhoon": [{"name": "typhoon", "first": {"speak": {"text": "台风！"},
                                                        "speakers": ["spk-1"]}}]},
})




@pytest.mark.parametrize(("workers", "partitions", "sizes"), [
    (["a"], 8, [8]), (["a", "b"], 8, [4, 4]), (["a", "b", "c"], 8, [3, 3, 2]), ([], 4, []),
])
def test_assignment_is_balanced_and_complete(workers: list[str], partitions: int,
                                             sizes: list[int]) -> None:
    got = assignment(workers, partitions)
    assert [len(got[w]) for w in sorted(workers)] == sizes
    if workers:
        assert set().union(*got.values()) == set(range(partitions))


class Cluster:
    """Central workers sharing one namespace, intake on a shared subscription."""

    def __init__(self, host: str, port: int, redis_url: str, ns: str, site: str):
        self.host, self.port, self.redis_url, self.ns, self.site = host, port, redis_url, ns, site
        self.workers: dict[str, Central] = {}
        self.commands: queue.Queue[dict[str, Any]] = queue.Queue()
        self.spk = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"spk-{site}")
        self.spk.on_message = lambda _c, _u, m: self.commands.put(json.loads(m.payload))
        self.spk.connect(host, port)
        self.spk.subscribe(f"perimeter/v1/{site}/speaker/+/command", qos=1)
        self.spk.loop_start()
        self.pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"edge-{site}")
        self.pub.connect(host, port)
        self.pub.loop_start()

    def add(self, wid: str, redis_url: str | None = None) -> Central:
        c = Central(CONFIG, redis_url or self.redis_url, Broker(self.host, self.port), ns=self.ns,
                    client_id=f"c-{self.site}-{wid}", share_group=f"g-{self.site}",
                    worker_id=wid, lease_s=2.0)
        c.intake.topic = topics.alarm_filter(self.site, share_group=f"g-{self.site}")
        c.start()
        self.workers[wid] = c
        return c

    def publish(self, zone: str, t: float, **kw: Any) -> None:
        a = alarm(zone, t, **kw)
        topic = f"perimeter/v1/{self.site}/alarm/{a.camera}/{zone}/{a.kind.value}"
        self.pub.publish(topic, a.to_json(), qos=1).wait_for_publish(5)

    def stored(self) -> dict[str, dict[str, Any]]:
        r = redis.Redis.from_url(self.redis_url)
        return {json.loads(v)["zone"]: json.loads(v)
                for v in r.hgetall(f"{self.ns}:incidents").values()}

    def close(self) -> None:
        for c in self.workers.values():
            c.stop()
        for cl in (self.spk, self.pub):
            cl.loop_stop()
            cl.disconnect()


@pytest.fixture
def cluster(mqtt_broker: tuple[str, int], redis_url: str,
            redis_ns: str) -> Iterator[Cluster]:
    site = redis_ns.replace(":", "-")[-24:]
    c = Cluster(*mqtt_broker, redis_url, redis_ns, site)
    try:
        yield c
    finally:
        c.close()


def balanced(cl: Cluster) -> bool:
    owned = [w.worker.owned for w in cl.workers.values()]
    return (sum(len(o) for o in owned) == 8 and len(set().union(*owned)) == 8
            and max(len(o) for o in owned) - min(len(o) for o in owned) <= 1)


def test_two_workers_split_the_partitions_and_each_incident_is_handled_once(
        cluster: Cluster) -> None:
    a = cluster.add("a")
    assert a.worker.owned == set(range(8))
    b = cluster.add("b")
    wait_until(lambda: balanced(cluster), what="partitions split 4/4")
    now = time.time()
    zones = [f"z{i}" for i in range(40)]
    for i, z in enumerate(zones):
        cluster.publish(z, now, track=i)
        cluster.publish(z, now + 1, camera="cam2", track=100 + i)  # merged into the same
    wait_until(lambda: len(cluster.stored()) == 40, what="40 incidents stored")
    wait_until(lambda: cluster.commands.qsize() >= 40, what="40 speaker commands")
    time.sleep(0.3)  # a 41st command would be a double handling: give it time to show
    assert cluster.commands.qsize() == 40
    incidents = cluster.stored()
    assert all(inc["cameras"] == ["cam1", "cam2"] for inc in incidents.values())
    by_worker = {w: len(c.aggregator.book.incidents) for w, c in cluster.workers.items()}
    assert sum(by_worker.values()) == 40 and min(by_worker.values()) > 0, by_worker
    for c in (a, b):  # each holds exactly the incidents of its own partitions
        for inc in c.aggregator.book.incidents.values():
            assert partition_of(inc.site, inc.group, 8) in c.worker.owned


def test_a_dead_workers_partitions_and_unfinished_entries_are_taken_over(
        cluster: Cluster) -> None:
    cluster.add("a")
    b = cluster.add("b")
    wait_until(lambda: balanced(cluster), what="partitions split")
    a = cluster.workers.pop("a")
    # "a" dies with an entry it read but never applied: stop its threads without leaving.
    a.intake.stop()
    a.worker._stop.set()
    a.worker._thread.join(5)
    a.stop = lambda: None  # type: ignore[method-assign]
    r = redis.Redis.from_url(cluster.redis_url)
    keys = PartitionKeys(cluster.ns, 8)
    zone = next(f"q{i}" for i in range(100)
                if partition_of(cluster.site, f"q{i}", 8) in a.worker.owned)
    p = partition_of(cluster.site, zone, 8)
    payload = alarm(zone, time.time()).to_json()
    r.xadd(keys.stream(p), {"k": "alarm", "payload": payload,
                            "topic": f"perimeter/v1/{cluster.site}/alarm/cam1/{zone}/intrusion"})
    taken = r.xreadgroup(GROUP, "a", {keys.stream(p): ">"}, count=10)
    assert taken and len(taken[0][1]) == 1
    wait_until(lambda: b.worker.owned == set(range(8)), timeout=15, what="b owns everything")
    wait_until(lambda: zone in cluster.stored(), what="a's unfinished entry applied by b")
    pending = r.xpending(keys.stream(p), GROUP)
    assert pending["pending"] == 0


def incident_owned_by_second_worker(cluster: Cluster,
                                    prefix: str) -> tuple[Central, Central, str]:
    """Workers a and b split the partitions; one incident, in a zone b owns."""
    a = cluster.add("a")
    b = cluster.add("b")
    wait_until(lambda: balanced(cluster), what="partitions split")
    zone = next(f"{prefix}{i}" for i in range(100)
                if partition_of(cluster.site, f"{prefix}{i}", 8) in b.worker.owned)
    cluster.publish(zone, time.time())
    wait_until(lambda: zone in cluster.stored(), what="incident stored")
    return a, b, zone


def test_operator_commands_reach_the_owner_and_the_mode_is_shared(cluster: Cluster) -> None:
    a, b, zone = incident_owned_by_second_worker(cluster, "m")
    inc_id = cluster.stored()[zone]["id"]
    ops = IncidentOps(a.aggregator, PartitionKeys(cluster.ns, 8), a.worker)
    assert ops.acknowledge(inc_id, "li")["acknowledged_by"] == "li"  # applied by b
    assert b.aggregator.book.get(inc_id).acknowledged_by == "li"
    with pytest.raises(LifecycleError, match="is acknowledged"):
        ops.acknowledge(inc_id, "li")
    done = ops.resolve(inc_id, "li", "walked her back to the path")
    assert done["status"] == "resolved"
    with pytest.raises(KeyError):
        ops.acknowledge("no-such-incident", "li")

    a.switch_mode("typhoon", "duty officer")
    wait_until(lambda: b.planner.mode == "typhoon", what="b follows the mode")
    a.switch_mode(None, "duty officer")
    wait_until(lambda: b.planner.mode is None, what="b back to normal plans")


def test_a_redis_restart_under_a_running_central_loses_nothing(
        mqtt_broker: tuple[str, int], redis_private: Any, redis_ns: str) -> None:
    site = redis_ns.replace(":", "-")[-24:]
    cl = Cluster(*mqtt_broker, redis_private.url, "fault", site)
    try:
        c = cl.add("solo")
        cl.publish("before", time.time())
        wait_until(lambda: "before" in cl.stored(), what="first incident")
        redis_private.stop()  # no persistence: it comes back empty
        cl.publish("during", time.time())
        wait_until(lambda: c.intake.store_retries > 0, what="intake retrying, not acknowledging")
        redis_private.start()
        wait_until(lambda: set(cl.stored()) == {"before", "during"}, timeout=30,
                 what="both incidents in the fresh Redis")
        cl.publish("after", time.time())
        wait_until(lambda: "after" in cl.stored(), what="central works on without a restart")
    finally:
        cl.close()


def test_http_api_of_one_worker_sees_and_closes_the_others_incidents(cluster: Cluster) -> None:
    from central.api import create_app
    from tests.support.api import accounts, call, serving

    a, b, zone = incident_owned_by_second_worker(cluster, "h")
    app = create_app(a.aggregator, accounts(a.redis, cluster.ns), ops=a.ops, modes=a)
    with serving(app) as api:
        status, items = call(f"{api}/incidents?zone={zone}")
        assert status == 200 and len(items) == 1  # b's incident, listed by a
        iid = items[0]["id"]
        status, done = call(f"{api}/incidents/{iid}/resolve", "POST",
                            {"note": "family led away from the water"})
        assert status == 200 and done["status"] == "resolved"
        assert b.aggregator.book.get(iid).resolved_by == "key:tests"
        assert call(f"{api}/mode")[1] == {"mode": None, "available": ["typhoon"]}
        assert call(f"{api}/mode", "PUT", {"mode": "flood"})[0] == 422
        assert call(f"{api}/mode", "PUT", {"mode": "typhoon"}, token=None)[0] == 401
        status, body = call(f"{api}/mode", "PUT", {"mode": "typhoon"})
        assert status == 200 and body["mode"] == "typhoon"
        wait_until(lambda: b.planner.mode == "typhoon", what="b follows")


def test_worker_gauges_are_scraped(mqtt_broker: tuple[str, int], redis_url: str,
                                   redis_ns: str) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from central.metrics import CentralMetrics

    registry = CollectorRegistry()
    c = Central(CONFIG, redis_url, Broker(*mqtt_broker), ns=redis_ns,
                client_id=f"m-{redis_ns[-20:]}",
                metrics=CentralMetrics(registry))
    c.start()
    try:
        text = generate_latest(registry).decode()
        assert "perimeter_central_worker_partitions 8.0" in text
        assert "perimeter_central_intake_queued 0.0" in text
    finally:
        c.stop()


def test_health_answers_degraded_while_redis_is_down(redis_private: Any) -> None:
    from central.api import create_app
    from central.incidents.aggregator import Aggregator
    from central.incidents.store import RedisStore
    from tests.support.api import accounts, call, serving

    client = redis.Redis.from_url(redis_private.url, socket_timeout=1,
                                  socket_connect_timeout=1)
    agg = Aggregator(RedisStore(client, ns="health"))
    ops = IncidentOps(agg, PartitionKeys("health", 8), None)
    with serving(create_app(agg, accounts(client, "health"), ops=ops)) as api:
        assert call(f"{api}/health", token=None)[1]["status"] == "ok"
        redis_private.stop()
        status, body = call(f"{api}/health", token=None)
        assert status == 200 and body == {"status": "degraded"}
