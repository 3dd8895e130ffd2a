"""A site secured as the README's "Securing a site" tells: ``perimeter pki`` issues every
identity, Mosquitto demands TLS with a client certificate, a password and the ACL, and
``perimeter central`` and ``perimeter speaker`` run as processes with their own credentials
beside an edge box (the edge's uplink, from its config's ``mqtt`` section).

The edge's alarm makes the speaker talk (through the central, which signs the command).
Refused, and counted: a client without a certificate (the broker's log), an edge publishing
under another edge's topic or on a speaker's command topic (the broker's log: Mosquitto 2.0
logs a denied PUBLISH at debug level), and a forged speaker command from someone holding the
central's broker password and certificate but not its signing key (the speaker's count).
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from common.net import free_port
from edge.config import load_config
from edge.uplink.sink import MqttSink
from tests.support.alarms import alarm, unique
from tests.support.secure import SITE, SecureMosquitto, Site
from tests.support.waiting import wait_until
from wire import topics
from wire.client import Broker, Tls, connect, disconnect, make_client

TIMEOUT = 30.0  # process start-up on a shared 2-core machine included
TOKEN = "t0ken-of-the-secure-site-test"

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                reason="espeak-ng not installed (apt-get install espeak-ng)")


def identity(site: Site, name: str, port: int) -> list[str]:
    """The ``--mqtt-*`` options of device ``name``."""
    d = site.dev(name)
    return ["--mqtt-user", name, "--mqtt-password-file", str(d / f"{name}.password"),
            "--mqtt-ca", str(site.folder / "ca.crt"), "--mqtt-cert", str(d / f"{name}.crt"),
            "--mqtt-key", str(d / f"{name}.key")]


class Proc:
    """``perimeter ARGS`` as a process, its output in a file."""

    def __init__(self, args: list[str], log: Path):
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "cli", *args],
                                         stdout=out, stderr=subprocess.STDOUT,
                                         env={**os.environ, "PERIMETER_API_TOKEN": TOKEN})

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, needle: str, timeout: float = TIMEOUT) -> None:
        wait_until(lambda: needle in self.text() or self.proc.poll() is not None, timeout,
                   f"{needle!r} in {self.log.name}")
        assert needle in self.text(), f"{self.log.name} exited:\n{self.text()[-3000:]}"

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.text()


class Watch:
    """A client holding the central's identity that records every alarm topic it sees."""

    def __init__(self, broker: Broker):
        self.topics: queue.Queue[str] = queue.Queue()
        ready = queue.Queue[bool]()
        self.client = make_client(broker, unique("watch"), persistent=False, logger="watch")
        self.client.on_connect = lambda c, *a: c.subscribe(topics.alarm_filter(SITE), qos=1)
        self.client.on_subscribe = lambda *a: ready.put(True)
        self.client.on_message = lambda c, u, m: self.topics.put(m.topic)
        connect(self.client, broker)
        assert ready.get(timeout=TIMEOUT)

    def next(self) -> str:
        return self.topics.get(timeout=TIMEOUT)


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for p in reversed(started):
        p.stop()


def edge_config(tmp: Path, site: Site, name: str, edge_id: str, port: int) -> Path:
    d = site.dev(name)
    cfg = {"site": {"id": SITE}, "edge": {"id": edge_id},
           "mqtt": {"enabled": True, "host": "127.0.0.1", "port": port, "username": name,
                    "password_file": str(d / f"{name}.password"),
                    "tls": {"ca_file": str(site.folder / "ca.crt"),
                            "cert_file": str(d / f"{name}.crt"),
                            "key_file": str(d / f"{name}.key")}},
           "cameras": [{"id": "cam1", "source": "unused.avi", "zones": [
               {"id": "bank", "kind": "water", "risk": "high",
                "polygon": [[0.1, 0.1], [0.9, 0.1], [0.9, 0.9], [0.1, 0.9]]}]}]}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_a_secured_site_end_to_end(tmp_path: Path, site_pki: Site,
                                   secure_broker: SecureMosquitto, redis_url: str,
                                   redis_ns: str, procs: list[Proc]) -> None:
    port = secure_broker.port
    edge_1 = edge_config(tmp_path, site_pki, "edge-1", "edge-1", port)
    central_cfg = tmp_path / "central.yaml"
    central_cfg.write_text(yaml.safe_dump({
        "central": {"ack_timeout_s": {"high": 3600.0},  # later alarms merge: no new command
                    "sites": [str(edge_1)]},  # the registry: the site's own edge config
        "speakers": [{"id": "spk-1", "zones": ["bank"]}],
        "plans": [{"name": "water", "cooldown_s": 0,
                   "first": {"speak": {"text": "水深危险", "priority": 5}}}]},
        allow_unicode=True))
    clips = tmp_path / "clips"
    speaker = Proc(["speaker", "--id", "spk-1", "--site", SITE, "--out-dir", str(clips),
                    "--cooldown", "0", "--host", "127.0.0.1", "--port", str(port),
                    "--command-pubkey", str(site_pki.folder / "command-signing.pub"),
                    *identity(site_pki, "spk-1", port)], tmp_path / "speaker.log")
    procs.append(speaker)
    central = Proc(["central", "--config", str(central_cfg), "--redis", redis_url,
                    "--namespace", redis_ns, "--mqtt", f"127.0.0.1:{port}",
                    "--api-port", str(free_port()), "--client-id", unique("central"),
                    "--command-key", str(site_pki.folder / "command-signing.key"),
                    *identity(site_pki, "central", port)], tmp_path / "central.log")
    procs.append(central)
    speaker.wait_for("listening on")
    central.wait_for("central: API")
    watch = Watch(site_pki.broker_for("central", port))

    # The edge's alarm arrives and the speaker plays the central's signed command.
    edge = MqttSink.from_config(load_config(edge_1))
    edge.open()
    edge.emit(alarm("bank", time.time()))
    assert edge.flush()
    assert watch.next().startswith(f"perimeter/v2/{SITE}/alarm/edge-1/")
    speaker.wait_for(" done")
    assert len(list(clips.glob("*.wav"))) == 1

    # edge-2, with its own identity, claims to be edge-1 and tries to command the speaker:
    # the broker's ACL drops both; its own alarm, sent after them, is the first to arrive.
    impostor = MqttSink.from_config(load_config(edge_config(tmp_path, site_pki, "edge-2",
                                                            "edge-1", port)))
    impostor.open()
    impostor.emit(alarm("bank", time.time(), camera="cam1", track=7))
    assert impostor.flush()
    raw = make_client(site_pki.broker_for("edge-2", port), unique("e2"), persistent=False,
                      logger="e2")
    connect(raw, site_pki.broker_for("edge-2", port))
    wait_until(raw.is_connected, TIMEOUT, "edge-2 connected")
    raw.publish(topics.speaker_command(SITE, "spk-1"), b'{"priority": 9}', qos=1
                ).wait_for_publish(TIMEOUT)
    raw.publish(topics.alarm(SITE, "cam1", "bank", "intrusion", edge="edge-2"),
                alarm("bank", time.time(), track=8).to_json(), qos=1).wait_for_publish(TIMEOUT)
    assert watch.next() == f"perimeter/v2/{SITE}/alarm/edge-2/cam1/bank/intrusion"
    disconnect(raw)
    impostor.close()
    assert secure_broker.count("Denied PUBLISH") >= 2

    # No certificate: TLS handshake refused. No TLS at all: nothing to talk to.
    before = secure_broker.count("peer did not return a certificate")
    nocert = Broker("127.0.0.1", port, "edge-1", site_pki.password("edge-1"),
                    Tls(str(site_pki.folder / "ca.crt")))
    plain = Broker("127.0.0.1", port, "edge-1", site_pki.password("edge-1"))
    for broker, refusal in ((nocert, "peer did not return a certificate"),
                            (plain, "failed: error")):  # an MQTT CONNECT is no TLS hello
        seen = secure_broker.count(refusal)
        c = make_client(broker, unique("nocert"), persistent=False, logger="nocert")
        answers: list[Any] = []
        c.on_connect = lambda *a, got=answers: got.append(a[3])
        connect(c, broker)
        wait_until(lambda r=refusal, n=seen: secure_broker.count(r) > n, TIMEOUT, refusal)
        disconnect(c)
        assert not any(not rc.is_failure for rc in answers)  # never a successful CONNACK
    assert secure_broker.count("peer did not return a certificate") > before

    # Someone with the central's broker password and certificate but not its signing key.
    forger = make_client(site_pki.broker_for("central", port), unique("forger"),
                         persistent=False, logger="forger")
    connect(forger, site_pki.broker_for("central", port))
    wait_until(forger.is_connected, TIMEOUT, "forger connected")
    body = json.dumps({"command_id": "forged-1", "incident": "x", "text": "免费门票",
                       "clip": None, "voice": "cmn-latn-pinyin", "priority": 9, "repeat": 1,
                       "sent_at": time.time()}, ensure_ascii=False)
    forger.publish(topics.speaker_command(SITE, "spk-1"), body.encode(), qos=1
                   ).wait_for_publish(TIMEOUT)
    disconnect(forger)
    speaker.wait_for("forged-1 failed (refused: unsigned)")
    assert len(list(clips.glob("*.wav"))) == 1  # nothing more was played
    edge.close()
    out = speaker.stop()
    assert "commands refused: unsigned: 1" in out, out[-2000:]
    assert central.stop().count("Traceback") == 0


def test_a_central_without_a_signing_key_does_not_start(tmp_path: Path) -> None:
    cfg = tmp_path / "central.yaml"
    cfg.write_text("speakers: []\n")
    proc = subprocess.run([sys.executable, "-m", "cli", "central", "--config", str(cfg)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--command-key" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "cli", "speaker", "--id", "s", "--out-dir",
                           str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--command-pubkey" in proc.stderr
