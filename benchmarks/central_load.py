"""Load on the central aggregator: one worker against two, on a private broker and Redis.

Run by hand: ``python -m benchmarks.central_load`` (about 3 minutes). It starts a private
Mosquitto and a private Redis with an append-only file (``appendfsync everysec``: the
persistence a site would run), then for one and for two ``perimeter central`` worker
processes (shared subscription, partition streams):

* throughput: ``--drain`` alarm messages (``--zones`` zone groups, so most merge into open
  incidents and the rest open new ones with a speaker command each) are appended to the
  partition streams at once, and the time until every worker has applied and acknowledged
  all of them gives the sustained alarms/s of the incident work, persistence included;
* latency: simulated edges publish alarms over MQTT at each ``--rates`` for ``--seconds``,
  each opening an incident in a new zone, and a subscriber times edge publish -> speaker
  command received, end to end (intake, partition stream, worker, Redis, command publish).

Results: ``benchmarks/results/central_load.md`` and ``.json``, with the machine and date.
With ``--tls`` the link is secured as a site runs it (a throw-away CA: TLS 1.2+ with client
certificates, passwords, the ACL, edges on their v2 topic, speaker commands signed by the
central): ``central_load_tls.md``; without, plain MQTT and unsigned commands as before.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
import redis
from paho.mqtt.enums import CallbackAPIVersion

from benchmarks.machine import machine_info
from central.streams import GROUP, PartitionKeys, partition_of
from common.net import free_port
from demo.identity import DemoSite
from demo.procs import Child, start_broker
from wire import topics
from zones.alarm import Alarm, AlarmKind, AlarmState, Evidence
from zones.geometry import Risk, ZoneKind

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
SITE = "loadsite"
EDGE = "bench-edge"
NS = "bench"
PARTITIONS = 8
CONFIG = """\
central: {ack_timeout_s: {high: 86400, medium: 86400, low: 86400}, accept_any_site: true}
speakers: [{id: spk-1}]
plans:
  - name: all
    cooldown_s: 0
    first: {speak: {text: "危险区域，请立即离开！"}, speakers: [spk-1]}
"""


def make_alarm(zone: str, t: float, track: int) -> Alarm:
    return Alarm.make(kind=AlarmKind.INTRUSION, state=AlarmState.RAISED, camera="cam-1",
                      zone=zone, zone_kind=ZoneKind.WATER, risk=Risk.HIGH,
                      key=f"track:{track}", first_frame=1, first_time=t, frame=1, time=t,
                      track_id=track, track_ids=[track], profile="default",
                      evidence=Evidence(boxes=[(10.0, 20.0, 40.0, 120.0)], scores=[0.8]))


def topic(zone: str, edge: str | None = None) -> str:
    return topics.alarm(SITE, "cam-1", zone, "intrusion", edge=edge)


def bench_client(client_id: str, ident: DemoSite | None, name: str) -> mqtt.Client:
    """A raw paho client (the simulated edge, the command clock), as ``name`` under TLS."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
    if ident is not None:
        b = ident.broker(name)
        assert b.tls is not None
        client.username_pw_set(b.username, b.password)
        client.tls_set_context(b.tls.context())
    return client


def identity_args(ident: DemoSite | None) -> list[str]:
    """How a worker logs in: the central's identity and signing key, or plain."""
    if ident is None:
        return ["--unsigned-commands"]
    d = ident.device("central")
    return ["--mqtt-user", "central", "--mqtt-password-file", str(d / "central.password"),
            "--mqtt-ca", str(ident.folder / "ca.crt"), "--mqtt-cert", str(d / "central.crt"),
            "--mqtt-key", str(d / "central.key"),
            "--command-key", str(ident.folder / "command-signing.key")]


def start_redis(workdir: Path) -> tuple[Child, int]:
    port = free_port()
    data = workdir / "redis"
    data.mkdir(parents=True)
    child = Child("redis-server", ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                                   "--save", "", "--appendonly", "yes", "--appendfsync",
                                   "everysec", "--dir", str(data)], workdir / "redis.log")
    child.wait_port(port)
    return child, port


def start_workers(n: int, workdir: Path, mqtt_port: int, redis_port: int,
                  ident: DemoSite | None) -> list[Child]:
    cfg = workdir / "central.yaml"
    cfg.write_text(CONFIG, encoding="utf-8")
    out = []
    for i in range(n):
        wid = f"w{i + 1}"
        api = free_port()
        child = Child(f"central-{wid}", [
            sys.executable, "-m", "cli", "central", "--config", str(cfg),
            "--redis", f"redis://127.0.0.1:{redis_port}/0", "--mqtt", f"127.0.0.1:{mqtt_port}",
            "--namespace", NS, "--client-id", f"bench-{wid}", "--worker-id", wid,
            "--share-group", "bench", "--partitions", str(PARTITIONS), "--api-port", str(api),
            *identity_args(ident),
        ], workdir / f"{wid}.log", env={**os.environ,
                                        "PERIMETER_API_TOKEN": "bench-token-0123456789"})
        child.wait_port(api, timeout_s=60)
        out.append(child)
    return out


def balanced(r: redis.Redis, n: int) -> bool:
    holders = [r.get(f"{NS}:lease:{p}") for p in range(PARTITIONS)]
    return all(holders) and len(set(holders)) == n


def backlog(r: redis.Redis) -> int:
    """Entries not yet acknowledged (read or not) over all partitions."""
    left = 0
    for p in range(PARTITIONS):
        for g in r.xinfo_groups(f"{NS}:in:{p}"):
            if g["name"] in (GROUP, GROUP.encode()):
                left += int(g["pending"]) + int(g.get("lag") or 0)
    return left


def drain(r: redis.Redis, total: int, zones: int, tag: str) -> dict[str, Any]:
    """Append ``total`` alarms at once; time until all are applied and acknowledged."""
    keys = PartitionKeys(NS, PARTITIONS)
    now = time.time()
    payloads = []
    for i in range(total):
        zone = f"d{tag}-{i % zones}"
        payloads.append((keys.stream(partition_of(SITE, zone, PARTITIONS)),
                         make_alarm(zone, now, i).to_json(), topic(zone)))
    t0 = time.perf_counter()
    for start in range(0, total, 1000):
        pipe = r.pipeline(transaction=False)
        for stream, payload, tp in payloads[start:start + 1000]:
            pipe.xadd(stream, {"k": "alarm", "payload": payload, "topic": tp})
        pipe.execute()
    appended = time.perf_counter() - t0
    while backlog(r) > 0:
        time.sleep(0.05)
    wall = time.perf_counter() - t0
    stored = sum(1 for v in r.hvals(f"{NS}:incidents")
                 if json.loads(v)["zone"].startswith(f"d{tag}-"))
    return {"messages": total, "zones": zones, "append_s": round(appended, 3),
            "wall_s": round(wall, 3), "msgs_per_s": round(total / wall, 1),
            "incidents": stored}


class CommandClock:
    """Subscribes to speaker commands and notes when each incident's command arrived."""

    def __init__(self, port: int, ident: DemoSite | None):
        self.arrived: dict[str, float] = {}
        self.lock = threading.Lock()
        self.client = bench_client("bench-speaker", ident, "spk-1")
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(topics.speaker_command(SITE, "spk-1"), qos=1)
        self.client.loop_start()

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        now = time.time()
        incident = json.loads(msg.payload)["incident"]
        with self.lock:
            self.arrived.setdefault(incident, now)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def rate_run(r: redis.Redis, port: int, clock: CommandClock, rate: int, seconds: float,
             tag: str, ident: DemoSite | None) -> dict[str, Any]:
    """Publish ``rate`` alarms/s (each a new incident) and time publish -> command."""
    n = int(rate * seconds)
    zones = [f"{tag}-r{rate}-{i}" for i in range(n)]
    t_start = time.time() + 0.5
    payloads = [make_alarm(z, t_start + i / rate, i).to_json() for i, z in enumerate(zones)]
    pub = bench_client(f"bench-edge-{tag}-{rate}", ident, EDGE)
    edge = EDGE if ident is not None else None  # v2 topic: the ACL checks the edge's id
    pub.max_queued_messages_set(0)
    pub.max_inflight_messages_set(1000)
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    published: dict[str, float] = {}
    t0 = time.perf_counter()
    start_wall = time.time()
    for i, zone in enumerate(zones):
        due = t0 + i / rate
        lag = due - time.perf_counter()
        if lag > 0:
            time.sleep(lag)
        published[zone] = time.time()
        pub.publish(topic(zone, edge), payloads[i], qos=1)
    pub_s = time.time() - start_wall
    deadline = time.monotonic() + 30
    expect = set(zones)
    got: dict[str, float] = {}
    by_id: dict[str, str] = {}
    while time.monotonic() < deadline:
        raw = r.hgetall(f"{NS}:incidents")
        by_id = {}
        for v in raw.values():
            d = json.loads(v)
            if d["zone"] in expect:
                by_id[d["id"]] = d["zone"]
        with clock.lock:
            got = {by_id[i]: t for i, t in clock.arrived.items() if i in by_id}
        if len(got) >= n:
            break
        time.sleep(0.25)
    pub.loop_stop()
    pub.disconnect()
    lat = np.array([got[z] - published[z] for z in got]) * 1000
    return {"rate": rate, "sent": n, "publish_s": round(pub_s, 2),
            "achieved_rate": round(n / pub_s, 1), "incidents": len(by_id),
            "commands": len(got),
            "p50_ms": round(float(np.percentile(lat, 50)), 1) if len(lat) else None,
            "p95_ms": round(float(np.percentile(lat, 95)), 1) if len(lat) else None,
            "p99_ms": round(float(np.percentile(lat, 99)), 1) if len(lat) else None,
            "max_ms": round(float(lat.max()), 1) if len(lat) else None}


def run_config(workers: int, args: argparse.Namespace, workdir: Path,
               mqtt_port: int, ident: DemoSite | None) -> dict[str, Any]:
    redis_child, redis_port = start_redis(workdir / f"r{workers}")
    r = redis.Redis(port=redis_port)
    children = start_workers(workers, workdir / f"r{workers}", mqtt_port, redis_port, ident)
    try:
        deadline = time.monotonic() + 30
        while not balanced(r, workers):
            if time.monotonic() > deadline:
                raise RuntimeError("workers did not split the partitions in 30 s")
            time.sleep(0.1)
        print(f"[{workers} worker(s)] draining {args.drain} alarms ...", flush=True)
        runs = [drain(r, args.drain, args.zones, str(k)) for k in range(args.repeat)]
        for run in runs:
            print(f"  {run}", flush=True)
        rates = sorted(run["msgs_per_s"] for run in runs)
        result: dict[str, Any] = {"workers": workers, "drain_runs": runs,
                                  "drain": {**runs[0], "msgs_per_s": rates[len(rates) // 2],
                                            "all_msgs_per_s": rates}}
        clock = CommandClock(mqtt_port, ident)
        result["rates"] = []
        for rate in args.rates:
            res = rate_run(r, mqtt_port, clock, rate, args.seconds, f"w{workers}", ident)
            print(f"  rate {rate}/s: {res}", flush=True)
            result["rates"].append(res)
        clock.close()
        return result
    finally:
        for c in children:
            c.stop()
        redis_child.stop()


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    m = machine_info()
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = ["# Central aggregator under load (benchmarks/central_load.py)", "",
             f"Date: {date}. Machine: {m['cpu']}, {m['cores']} cores, {m['mem_gib']} GiB; "
             "everything below (broker, Redis, workers, simulated edges, the speaker "
             "subscriber) shares these cores.", "",
             ("Private Mosquitto with TLS 1.2+, client certificates, passwords and the ACL "
              "(perimeter pki), edges on their v2 topic, speaker commands signed (Ed25519); "
              if args.tls else "Private Mosquitto, plain MQTT, unsigned commands; ")
             + "private Redis with appendonly yes, appendfsync everysec; "
             f"{PARTITIONS} partition streams; `perimeter central` worker processes on one "
             "shared subscription.", "",
             "## Throughput (alarms appended at once, time until all applied and acknowledged)",
             "", "| workers | alarms | zone groups | incidents | alarms/s (median) | each run |",
             "|---|---|---|---|---|---|"]
    for res in results:
        d = res["drain"]
        each = ", ".join(f"{v:.0f}" for v in d["all_msgs_per_s"])
        lines.append(f"| {res['workers']} | {d['messages']} | {d['zones']} | "
                     f"{d['incidents']} | {d['msgs_per_s']:.0f} | {each} |")
    if len(results) == 2:
        ratio = results[1]["drain"]["msgs_per_s"] / results[0]["drain"]["msgs_per_s"]
        lines += ["", f"Two workers / one worker: {ratio:.2f}x."]
    lines += ["", "## Latency: edge publish -> speaker command received "
              f"({args.seconds:g} s at each rate, every alarm a new incident)", "",
              "| workers | target rate/s | achieved | incidents/sent | commands/sent | p50 ms | "
              "p95 ms | p99 ms | max ms |", "|---|---|---|---|---|---|---|---|---|"]
    for res in results:
        for x in res["rates"]:
            lines.append(f"| {res['workers']} | {x['rate']} | {x['achieved_rate']} | "
                         f"{x['incidents']}/{x['sent']} | {x['commands']}/{x['sent']} | "
                         f"{x['p50_ms']} | {x['p95_ms']} | {x['p99_ms']} | {x['max_ms']} |")
    lines += ["", "Targets (issue: edge publish -> speaker command p99 <= 100 ms at 100 alarms/s; "
              ">= 2000 alarms/s by one worker with persistence; two workers >= 1.7x):"]
    for res in results:
        at100 = next((x for x in res["rates"] if x["rate"] == 100), None)
        if at100 is not None:
            lines.append(f"- {res['workers']} worker(s): p99 at 100/s {at100['p99_ms']} ms; "
                         f"throughput {res['drain']['msgs_per_s']:.0f} alarms/s.")
    lines += ["", "The latency runs are end to end on this one machine: the simulated edges and "
              "the subscriber timing the commands run in the benchmark's own Python process, "
              "beside the broker, Redis and the workers. Every alarm there opens an incident "
              "and sends a speaker command, the costliest kind of message; merged alarms cost "
              "less (the throughput runs)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--drain", type=int, default=20000, help="alarms for the throughput run")
    ap.add_argument("--zones", type=int, default=500, help="zone groups in the throughput run")
    ap.add_argument("--repeat", type=int, default=3, help="throughput runs (median reported)")
    ap.add_argument("--rates", type=lambda s: [int(x) for x in s.split(",")],
                    default=[100, 500, 1000, 2000], help="alarms/s for the latency runs")
    ap.add_argument("--seconds", type=float, default=10.0, help="length of each rate run")
    ap.add_argument("--workers", type=lambda s: [int(x) for x in s.split(",")],
                    default=[1, 2], help="worker counts to compare")
    ap.add_argument("--tls", action="store_true",
                    help="secure the link as a site does (TLS, identities, ACL, signatures)")
    ap.add_argument("--out", type=Path, help="results file stem (default "
                    "benchmarks/results/central_load, or central_load_tls with --tls)")
    args = ap.parse_args(argv)
    if args.out is None:
        args.out = RESULTS / ("central_load_tls" if args.tls else "central_load")
    with tempfile.TemporaryDirectory(prefix="central-load-") as tmp:
        workdir = Path(tmp)
        mqtt_port = free_port()
        ident = (DemoSite.create(workdir, mqtt_port, SITE, EDGE, ["spk-1"])
                 if args.tls else None)
        broker, _desc = start_broker(workdir, mqtt_port,
                                     ident.mosquitto_lines() if ident else None)
        try:
            results = [run_config(n, args, workdir, mqtt_port, ident) for n in args.workers]
        finally:
            broker.stop()
    text = report(results, args)
    args.out.with_suffix(".md").write_text(text, encoding="utf-8")
    args.out.with_suffix(".json").write_text(json.dumps(
        {"machine": machine_info(), "date": dt.datetime.now(dt.UTC).isoformat(),
         "tls": args.tls, "results": results}, indent=2), encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
