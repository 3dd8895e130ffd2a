"""``perimeter demo``'s edge worker: its config, checked up front, and its start.

The edge worker is ``perimeter replay`` in a subprocess, replaying the camera footage of the
edge config in a loop (in real time unless ``--no-realtime``), publishing alarms to the demo
broker and to ``OUT/alarms.jsonl``. Its config is copied with the broker pointed at the demo's
and every path made absolute; footage and model files are checked before anything starts.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import yaml

from demo.procs import HOST, Child, DemoError, Interrupted, tail
from wire import messages, topics
from wire.client import Broker, connect, disconnect, make_client

REPO_ROOT = Path(__file__).resolve().parent.parent
EDGE_START_TIMEOUT_S = 120.0  # loading the detector on a slow machine


@dataclass
class EdgePlan:
    """The checked edge config: the demo's copy and what the demo reports about it."""

    config_path: Path  # the demo's copy, pointing at the demo broker
    camera: str
    site: str
    edge_id: str
    video: Path


def _resolve(loaded: Any, value: str) -> Path:
    """A config path as ``perimeter replay`` resolves it, else relative to the repository
    (the shipped configs name ``../shared/data`` from there), absolute."""
    p = Path(loaded.resolve_path(value))
    if not p.exists() and not Path(value).is_absolute() and (REPO_ROOT / value).exists():
        p = REPO_ROOT / value
    return p.resolve()


def read_edge(config: Path) -> tuple[str, str]:
    """(site id, edge id) of an edge config (ConfigError as ``perimeter replay`` raises)."""
    from edge.config import load_config

    cfg = load_config(config).config
    return cfg.site.id, cfg.edge.id


def prepare_edge(config: Path, workdir: Path, mqtt_port: int,
                 identity: dict[str, object] | None = None) -> EdgePlan:
    """Check the edge config, footage and model files; write a copy publishing to the demo
    broker (paths made absolute) as ``identity`` (the ``mqtt`` keys of the edge's user,
    password file and TLS files). ConfigError / ModelError as ``perimeter replay`` raises."""
    from edge.config import load_config
    from edge.detection.factory import model_entry
    from models.registry import resolve_model

    loaded = load_config(config)
    cfg = loaded.config
    cam = cfg.cameras[0]
    video = _resolve(loaded, cam.source or "")
    if not video.is_file():
        raise DemoError(f"footage {video} not found (camera {cam.id} of {config}); the "
                        "footage lives in ../shared/data (see its README)")
    raw = yaml.safe_load(config.read_text(encoding="utf-8"))
    raw["mqtt"] = {**(raw.get("mqtt") or {}), "enabled": True, "host": HOST, "port": mqtt_port,
                   **(identity or {})}
    for c in raw["cameras"]:
        c["source"] = str(_resolve(loaded, c["source"]))
    det = raw.get("detector") or {}
    if det.get("weights"):
        det["weights"] = str(_resolve(loaded, det["weights"]))
    copy = workdir / "edge.yaml"
    copy.write_text(f"# written by perimeter demo from {config.resolve()}\n"
                    + yaml.safe_dump(raw, allow_unicode=True, sort_keys=False),
                    encoding="utf-8")
    resolve_model(model_entry(load_config(copy)))  # ModelError names what is missing
    return EdgePlan(copy, cam.id, cfg.site.id, cfg.edge.id, video)


def wait_edge_online(edge: Child, site: str, edge_id: str, broker: Broker,
                     stop: threading.Event, timeout_s: float = EDGE_START_TIMEOUT_S) -> None:
    """Until the edge's retained status says online (its sink connected), or it died;
    ``broker``: as whom to watch (the central's identity may read edge status)."""
    online = threading.Event()
    topic = topics.edge_status(site, edge_id)

    def on_connect(client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                   properties: Any) -> None:
        client.subscribe(topic, qos=1)

    def on_message(client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if messages.status_state(msg.payload) == messages.ONLINE:
            online.set()

    client = make_client(broker, f"perimeter-demo-watch-{os.getpid()}", persistent=False,
                         logger=f"{__name__}.paho")
    client.on_connect = on_connect
    client.on_message = on_message
    connect(client, broker)
    try:
        deadline = time.monotonic() + timeout_s
        while not online.wait(0.1):
            if edge.exited() is not None:
                raise DemoError(edge.died())
            if stop.is_set():
                raise Interrupted
            if time.monotonic() > deadline:
                raise DemoError(f"the edge worker did not come online within {timeout_s:g}s: "
                                f"{tail(edge.log_path)}")
    finally:
        disconnect(client)


def replay_argv(plan: EdgePlan, alarms_path: Path, realtime: bool) -> list[str]:
    """``perimeter replay`` as the demo runs it: in a loop, quiet, alarms to MQTT and a file."""
    argv = [sys.executable, "-m", "cli", "replay", "--config",
            str(plan.config_path), "--camera", plan.camera,
            "--alarms-out", str(alarms_path), "--loop", "--quiet", "--no-progress", "--mqtt"]
    if realtime:
        argv.append("--realtime")
    return argv
