"""``perimeter demo``: the whole system on one machine, on real footage, with real servers.

One command starts, each in its own process or thread and on free loopback ports:

* an MQTT broker: ``mosquitto`` (PATH or /usr/sbin), with a private config in a temporary
  folder, secured as a site is (``demo.identity``): a throw-away CA, TLS with a certificate
  and password per process, the ACL, and speaker commands signed by the central;
* Redis: ``redis-server``, no persistence, data in a temporary folder;
* a webhook receiver standing in for the governance centre: it checks every request's HMAC
  signature (``central.notify.request.verify_signature``) with a secret generated for this run;
* the central aggregator (``central.runtime.Central``) with its HTTP API (uvicorn);
* one loudspeaker agent per speaker of the central config, writing WAV clips to
  ``OUT/clips`` (needs ``espeak-ng``; without it the demo runs without speakers);
* an edge worker (``perimeter replay`` in a subprocess) replaying PETS09 in a loop, in real
  time unless ``--no-realtime``, publishing alarms to the broker and to ``OUT/alarms.jsonl``.

It prints where everything listens, one line per webhook delivery and per speaker clip, and
a summary every 30 s; it stops on Ctrl-C / SIGTERM or after ``--minutes``, shutting
everything down in reverse order, and writes ``OUT/summary.json`` (counts of the run).
Exit codes: 0 stopped as asked; 1 something failed to start or died (one line on stderr);
2 bad input (config, footage, model files).

Children run in their own session (a Ctrl-C in the terminal reaches only the demo, which
stops them in order) and, on Linux, get SIGTERM if the demo itself dies.

The parts: ``demo.procs`` (child processes, broker, Redis, teardown), ``demo.servers``
(webhook receiver, API server), ``demo.edge`` (the edge worker), ``demo.report`` (output and
counts); this module is the run (``cli.demo`` its command line). The demo is the one package
that builds on the edge, the central and the speaker agent together.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import secrets
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.net import free_port
from demo.edge import REPO_ROOT, prepare_edge, read_edge, replay_argv, wait_edge_online
from demo.identity import DemoSite
from demo.procs import (
    HOST,
    Child,
    DemoError,
    Interrupted,
    Teardown,
    signals_to,
    start_broker,
    start_redis,
    temp_env,
)
from demo.report import (
    Tally,
    clip_reporter,
    count_alarms,
    event,
    report_delivery,
    say,
    summary_line,
)
from demo.servers import ApiServer, WebhookReceiver

DEFAULT_EDGE_CONFIG = REPO_ROOT / "config" / "pets09.yaml"
DEFAULT_CENTRAL_CONFIG = REPO_ROOT / "config" / "central.yaml"
SECRET_ENV = "PERIMETER_WEBHOOK_SECRET"
SUMMARY_EVERY_S = 30.0
DEMO_USER, DEMO_KEY = "demo", "demo-curl"


@dataclass(frozen=True)
class DemoLogin:
    """The demo's throw-away account (admin) and API key (operator), printed at start."""

    accounts: Any
    user: str
    password: str
    key: str


def demo_account(client: Any) -> DemoLogin:
    """A fresh admin account and an operator API key in the demo's own (throw-away) Redis;
    a site makes its own with ``perimeter users add``."""
    from central.auth import Accounts, Role

    accounts = Accounts(client, "perimeter-demo")
    password = secrets.token_urlsafe(12)
    accounts.add_user(DEMO_USER, password, Role.ADMIN, by="perimeter demo")
    _, key = accounts.add_key(DEMO_KEY, Role.OPERATOR, by="perimeter demo")
    return DemoLogin(accounts, DEMO_USER, password, key)


@dataclass(frozen=True)
class DemoOptions:
    """What ``perimeter demo`` was asked for (``cli.demo`` parses the command line)."""

    minutes: float = 0.0  # 0: until Ctrl-C
    out: Path = Path("out/demo")
    api_host: str = HOST
    api_port: int = 8080
    no_realtime: bool = False
    config: Path = DEFAULT_EDGE_CONFIG
    central_config: Path = DEFAULT_CENTRAL_CONFIG


# -- run ---------------------------------------------------------------------------------------


def run(args: DemoOptions, stop: threading.Event | None = None) -> int:
    """Run the demo until ``stop`` (set by SIGINT/SIGTERM) or ``--minutes``; the exit code.

    Bad config, footage or model files raise as everywhere else; ``perimeter``'s CLI turns
    them into one error line each and exit code 2."""
    stop = stop or threading.Event()
    try:
        with signals_to(stop):
            return _run(args, stop)
    except DemoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Interrupted:
        print("demo: interrupted while starting; everything started was stopped",
              file=sys.stderr)
        return 130


def _run(args: DemoOptions, stop: threading.Event) -> int:
    from central.config import load_central_config

    central_loaded = load_central_config(args.central_config)
    out: Path = args.out
    clips = out / "clips"
    alarms_path = out / "alarms.jsonl"
    try:
        clips.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DemoError(f"cannot create {clips}: {err.strerror}") from None
    secret = secrets.token_urlsafe(32)
    started = time.time()
    t0 = time.monotonic()
    tally = Tally()
    state: dict[str, Any] = {"broker": None, "redis": None, "speakers": [], "stopped_by": None}

    def check_stop() -> None:
        if stop.is_set():
            raise Interrupted

    with Teardown() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="perimeter-demo-")))

        def on_exit(name: str, fn: Callable[[], object]) -> None:
            def safe() -> None:
                try:
                    fn()
                except Exception as err:
                    print(f"demo: stopping {name} failed: {type(err).__name__}: {err}",
                          file=sys.stderr)
            stack.callback(safe)

        # everything the edge needs is checked before anything starts
        mqtt_port = free_port()
        site_id, edge_id = read_edge(args.config)
        # a throw-away CA: every process its own certificate and password, the ACL, signed
        # speaker commands, as README's "Securing a site" sets up a real one
        ident = DemoSite.create(tmp, mqtt_port, site_id, edge_id,
                                [s.id for s in central_loaded.config.speakers])
        edge_plan = prepare_edge(args.config, tmp, mqtt_port, ident.edge_mqtt(edge_id))
        # 1. MQTT broker, 2. Redis
        broker, broker_desc = start_broker(tmp, mqtt_port, ident.mosquitto_lines())
        on_exit("the MQTT broker", broker.stop)
        state["broker"] = broker.name
        check_stop()
        redis_proc, redis_desc, redis_port = start_redis(tmp)
        on_exit("Redis", redis_proc.stop)
        state["redis"] = "redis-server"
        redis_url = f"redis://{HOST}:{redis_port}/0"
        check_stop()

        # 3. the governance centre's stand-in
        receiver = WebhookReceiver(secret.encode("utf-8"), report_delivery)
        receiver.start()
        on_exit("the webhook receiver", receiver.stop)
        cfg = central_loaded.config
        env_names = {n.secret_env or SECRET_ENV for n in cfg.notifiers if n.kind == "webhook"}
        for name in env_names | {SECRET_ENV}:
            stack.enter_context(temp_env(name, secret))
        cfg = cfg.model_copy(update={"notifiers": [
            n.model_copy(update={"url": receiver.url, "secret_env": n.secret_env or SECRET_ENV})
            if n.kind == "webhook" else n for n in cfg.notifiers],
            # the central serves the one edge the demo runs (its registry of what exists)
            "central": cfg.central.model_copy(update={"sites": [str(args.config.resolve())]})})

        # 4. the central aggregator and its API
        from central.api import create_app
        from central.runtime import Central

        central_broker = ident.broker("central")
        try:
            central = Central(cfg, redis_url, central_broker, ns="perimeter-demo",
                              client_id=f"perimeter-demo-central-{os.getpid()}",
                              signer=ident.signer())
        except ValueError as err:
            raise DemoError(f"central: {err}") from None
        try:
            central.start()
        except Exception as err:
            with contextlib.suppress(Exception):
                central.stop()
            raise DemoError(f"the central aggregator did not start: {err}") from None
        on_exit("the central aggregator", central.stop)
        login = demo_account(central.redis)
        app = create_app(central.aggregator, login.accounts, ops=central.ops, modes=central)
        api = ApiServer(app, args.api_host, args.api_port)
        api.start()
        on_exit("the API", api.stop)
        check_stop()

        # 5. loudspeaker agents
        from speaker.agent import SpeakerAgent
        from speaker.audio import SpeakerError

        on_status = clip_reporter(clips, tally)
        speakers_note = ""
        for sp in cfg.speakers:
            agent = SpeakerAgent(sp.id, HOST, mqtt_port, site=edge_plan.site, out_dir=clips,
                                 on_status=on_status,
                                 broker=ident.broker(sp.id),
                                 verifier=ident.verifier())
            try:
                agent.start()
            except SpeakerError as err:
                speakers_note = (f"WARNING: no loudspeakers: {err}; incidents and webhooks "
                                 "still flow")
                break
            except ConnectionError as err:
                raise DemoError(f"speaker {sp.id}: {err}") from None
            on_exit(f"speaker {sp.id}", agent.close)
            state["speakers"].append(sp.id)
        check_stop()

        # 6. the edge worker
        realtime = not args.no_realtime
        argv = replay_argv(edge_plan, alarms_path, realtime)
        (out / "edge.log").unlink(missing_ok=True)  # this run's log only
        edge = Child("edge worker", argv, out / "edge.log", stop_signal=signal.SIGINT)
        on_exit("the edge worker", edge.stop)
        wait_edge_online(edge, edge_plan.site, edge_plan.edge_id, central_broker, stop)

        base = f"http://{args.api_host}:{api.port}"
        paths = {getattr(r, "path", "") for r in app.routes}
        lines = [
            f"perimeter demo: {edge_plan.video.name} (camera {edge_plan.camera}, site "
            f"{edge_plan.site}) replayed in a loop, "
            + ("in real time" if realtime else "as fast as the detector goes"),
            f"  API       {base}/docs   sign in as {login.user} / {login.password} (admin)",
            f"            curl -H 'Authorization: Bearer {login.key}' {base}/incidents   "
            f"(API key {DEMO_KEY}, operator)",
            f"  resolve   curl -X POST -H 'Authorization: Bearer {login.key}' -H 'Content-Type: "
            f"application/json' -d '{{\"note\":\"checked\"}}' "
            f"{base}/incidents/ID/resolve   (later alarms then open a new incident)",
            f"  health    {base}/health",
        ]
        if "/metrics" in paths:
            lines.append(f"  metrics   {base}/metrics")
        lines += [
            f"  MQTT      mqtts://{HOST}:{mqtt_port}  {broker_desc}; throw-away CA {ident.folder}",
            f"  Redis     {redis_url}  {redis_desc}",
            f"  webhook   {receiver.url}  governance-centre stand-in, HMAC checked",
            f"  clips     {clips}/  speakers: {', '.join(state['speakers']) or 'none'}",
            f"  alarms    {alarms_path}   edge log: {out / 'edge.log'}",
        ]
        if speakers_note:
            lines.append(f"  {speakers_note}")
        lines.append("running " + (f"for {args.minutes:g} min" if args.minutes > 0
                                   else "until Ctrl-C") + " (Ctrl-C or SIGTERM stops it)")
        say("\n".join(lines))

        def snapshot() -> dict[str, Any]:
            incidents = central.aggregator.incidents()
            with tally.lock:
                clip_names = list(tally.clips)
                failures = tally.clip_failures
            return {
                "started_at": dt.datetime.fromtimestamp(started, dt.UTC).isoformat(),
                "duration_s": round(time.monotonic() - t0, 1),
                "stopped_by": state["stopped_by"],
                "broker": state["broker"], "redis": state["redis"],
                "speakers": state["speakers"], "realtime": realtime,
                "api": f"{base}", "alarms": count_alarms(alarms_path),
                "messages": dict(central.aggregator.counts),
                "alarms_accepted": central.aggregator.counts.get("accepted", 0),
                "incidents": len(incidents),
                "incidents_open": sum(1 for i in incidents if i.status.value != "resolved"),
                "incident_zones": sorted({i.zone for i in incidents}),
                "speaker_commands": central.commands_sent,
                "clips_written": len(clip_names), "clip_files": clip_names,
                "clip_failures": failures,
                "webhooks_received": receiver.verified,
                "webhooks_unique": len(receiver.keys),
                "webhooks_rejected": receiver.rejected,
            }

        deadline = t0 + args.minutes * 60 if args.minutes > 0 else None
        next_summary = time.monotonic() + SUMMARY_EVERY_S
        failed: str | None = None
        while not stop.wait(0.25):
            now = time.monotonic()
            if edge.exited() is not None:
                failed = edge.died()
                break
            for child in (broker, redis_proc):
                if child.exited() is not None:
                    failed = child.died()
            if failed:
                break
            if deadline is not None and now >= deadline:
                state["stopped_by"] = "minutes"
                break
            if now >= next_summary:
                next_summary = now + SUMMARY_EVERY_S
                event("summary", summary_line(snapshot()))
        else:
            state["stopped_by"] = "signal"
        if failed:
            state["stopped_by"] = "failure"
        say("demo: stopping (edge, speakers, API, central, webhook, Redis, broker)")
        stack.close()  # reverse order of start
        final = snapshot()
        final["duration_s"] = round(time.monotonic() - t0, 1)
    try:
        (out / "summary.json").write_text(json.dumps(final, indent=2) + "\n", encoding="utf-8")
    except OSError as err:
        print(f"demo: cannot write {out / 'summary.json'}: {err.strerror}", file=sys.stderr)
    say(f"demo: stopped after {final['duration_s']:g} s: {summary_line(final)}; "
        f"summary in {out / 'summary.json'}")
    if failed:
        print(f"error: {failed}", file=sys.stderr)
        return 1
    return 0
