"""What ``deploy/`` installs, checked with the real tools: each systemd unit with
``systemd-analyze verify``, the Mosquitto and Redis configurations by starting the servers on
them, the install script into a scratch root, and the site-to-county bridge by cutting its
link and proving every alarm arrives after it heals."""

from __future__ import annotations

import os
import queue
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import redis
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from common.net import free_port, port_open
from edge.uplink.sink import MqttSink
from tests.support.alarms import numbered, unique
from tests.support.proxy import CuttableLink
from tests.support.secure import Site
from tests.support.services import REPO_ROOT, MosquittoBroker
from tests.support.waiting import wait_until
from wire import topics
from wire.client import connect, disconnect, make_client

DEPLOY = REPO_ROOT / "deploy"
UNITS = {"perimeter-edge.service": "perimeter-edge.service",
         "perimeter-central@.service": "perimeter-central@w1.service",
         "perimeter-speaker@.service": "perimeter-speaker@spk-1.service"}
HARDENING = ["NoNewPrivileges=yes", "ProtectSystem=strict", "User=perimeter", "Restart=always",
             "Type=notify", "WatchdogSec=", "CapabilityBoundingSet=", "PrivateTmp=yes"]


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:  # deploy/setup.sh --full installs Debian's systemd package
        pytest.skip("systemd-analyze not installed and could not be (deploy/setup.sh --full "
                    "installs Debian's systemd package)")
    return found


@pytest.mark.parametrize("unit", sorted(UNITS))
def test_each_unit_verifies_and_is_hardened(unit: str, tmp_path: Path) -> None:
    """The unit as shipped, with /opt/perimeter pointed at this checkout so ExecStart exists."""
    text = (DEPLOY / "systemd" / unit).read_text()
    for line in HARDENING:
        assert line in text, f"{unit} lacks {line}"
    (tmp_path / UNITS[unit]).write_text(text.replace("/opt/perimeter", str(REPO_ROOT)))
    proc = subprocess.run([systemd_analyze(), "verify", UNITS[unit]], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "SYSTEMD_LOG_LEVEL": "warning"})
    problems = [ln for ln in proc.stderr.splitlines() if UNITS[unit] in ln or unit in ln]
    assert proc.returncode == 0 and not problems, proc.stderr


def test_the_verify_check_can_fail(tmp_path: Path) -> None:
    """The check above is not vacuous: a unit with a bad value and a missing program fails."""
    (tmp_path / "bad.service").write_text("[Service]\nExecStart=/nonexistent/perimeter\n"
                                          "ProtectSystem=banana\n")
    proc = subprocess.run([systemd_analyze(), "verify", "bad.service"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "banana" in proc.stderr


# -- Mosquitto and Redis as configured ---------------------------------------------------------


def test_mosquitto_conf_serves_tls_identities_and_caps_messages(tmp_path: Path) -> None:
    site = Site(tmp_path / "pki")
    port = free_port()
    conf = (DEPLOY / "mosquitto.conf").read_text()
    for src, dst in {"/etc/mosquitto/perimeter/passwords": site.folder / "mosquitto/passwords",
                     "/etc/mosquitto/perimeter/acl": site.folder / "mosquitto/acl",
                     "/etc/mosquitto/perimeter/ca.crt": site.folder / "ca.crt",
                     "/etc/mosquitto/perimeter/broker.crt": site.dev("broker") / "broker.crt",
                     "/etc/mosquitto/perimeter/broker.key": site.dev("broker") / "broker.key",
                     "listener 8883": f"listener {port} 127.0.0.1"}.items():
        assert src in conf
        conf = conf.replace(src, str(dst))
    broker = MosquittoBroker(tmp_path / "mq", port)
    broker.config.write_text(conf + f"\npersistence_location {tmp_path}/mq/\n"
                             f"user {os.environ.get('USER') or 'root'}\n")
    broker.start()
    try:
        got: queue.Queue[bytes] = queue.Queue()
        central = site.broker_for("central", port)
        c = make_client(central, unique("c"), persistent=False, logger="t")
        c.on_connect = lambda cl, *a: cl.subscribe(topics.alarm_filter("park"), qos=1)
        c.on_message = lambda cl, u, m: got.put(bytes(m.payload))
        connect(c, central)
        edge = site.broker_for("edge-1", port)
        e = make_client(edge, unique("e"), persistent=False, logger="t")
        connect(e, edge)
        wait_until(lambda: c.is_connected() and e.is_connected(), 20, "both connected")
        topic = topics.alarm("park", "cam", "z", "intrusion", edge="edge-1")
        wait_until(lambda: e.publish(topic, b"probe", qos=1).wait_for_publish(5) is None
                   and not got.empty(), 20, "the subscription")
        e.publish(topic, b"x" * 70_000, qos=1).wait_for_publish(10)  # over 64 KiB: dropped
        e.publish(topic, b"small", qos=1).wait_for_publish(10)
        seen = [got.get(timeout=10)]
        while seen[-1] != b"small":
            seen.append(got.get(timeout=10))
        assert all(len(p) < 70_000 for p in seen)
        disconnect(e)
        disconnect(c)
    finally:
        broker.stop()


def test_redis_conf_persists_and_never_evicts(tmp_path: Path) -> None:
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    port = free_port()
    proc = subprocess.Popen([binary, str(DEPLOY / "redis.conf"), "--port", str(port),
                             "--bind", "127.0.0.1", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: port_open("127.0.0.1", port) or proc.poll() is not None, 20,
                   "redis-server")
        assert proc.poll() is None, "redis-server refused deploy/redis.conf"
        r = redis.Redis(port=port)
        assert r.config_get("appendonly") == {"appendonly": "yes"}
        assert r.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        assert int(r.config_get("maxmemory")["maxmemory"]) == 2 * 1024**3
        r.close()
    finally:
        proc.terminate()
        proc.wait(10)


# -- the install script ------------------------------------------------------------------------


@pytest.mark.parametrize(("role", "device", "expect"), [
    ("edge", "edge-1", "etc/systemd/system/perimeter-edge.service"),
    ("central", "central", "etc/redis/perimeter.conf"),
    ("speaker", "spk-1", "etc/systemd/system/perimeter-speaker@.service"),
    ("broker", "broker", "etc/mosquitto/conf.d/perimeter.conf"),
])
def test_install_lays_out_a_device(tmp_path: Path, role: str, device: str,
                                   expect: str) -> None:
    site = Site(tmp_path / "pki")
    root = tmp_path / "root"
    args = [str(DEPLOY / "install.sh"), "--role", role, "--identity", str(site.dev(device))]
    if role == "central":
        args += ["--signing-key", str(site.folder / "command-signing.key")]
    if role == "broker":
        args += ["--broker-files", str(site.folder / "mosquitto")]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "DESTDIR": str(root)})
    assert proc.returncode == 0, proc.stderr
    assert (root / expect).is_file()
    assert (root / "opt/perimeter/cli/main.py").is_file()
    ident = root / "etc/perimeter/identity"
    for key in ident.glob("*.key"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o640  # never world-readable
    assert stat.S_IMODE((root / "etc/perimeter").stat().st_mode) == 0o750
    if role == "central":
        assert (ident / "command-signing.key").is_file()
    elif role != "broker":
        assert not (ident / "command-signing.key").exists()  # only the central signs
        assert (ident / "command-signing.pub").is_file()


def test_install_refuses_a_missing_identity(tmp_path: Path) -> None:
    proc = subprocess.run([str(DEPLOY / "install.sh"), "--role", "edge"], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "DESTDIR": str(tmp_path)})
    assert proc.returncode == 2 and "--identity" in proc.stderr


# -- the bridge from a site's broker to the county's -------------------------------------------


@pytest.fixture
def county(tmp_path: Path) -> Iterator[MosquittoBroker]:
    broker = MosquittoBroker(tmp_path / "county")
    broker.start()
    yield broker
    broker.stop()


def bridge_conf(site: str, link: CuttableLink) -> str:
    """deploy/mosquitto-bridge.conf for ``site``, to the county through ``link``; the test's
    county broker is plain (the TLS lines and credentials are the site's own to fill in), and
    it retries every second instead of backing off to 30 s."""
    keep = []
    for line in (DEPLOY / "mosquitto-bridge.conf").read_text().splitlines():
        if line.startswith(("bridge_cafile", "bridge_certfile", "bridge_keyfile",
                            "bridge_tls_version", "remote_username", "remote_password")):
            continue
        if line.startswith("address "):
            line = f"address 127.0.0.1:{link.port}"
        if line.startswith("restart_timeout"):
            line = "restart_timeout 1"
        keep.append(line.replace("SITE", site))
    return "\n".join(keep) + "\n"


def test_the_bridge_delivers_every_alarm_after_its_link_heals(tmp_path: Path,
                                                              county: MosquittoBroker) -> None:
    site_id = unique("site")
    link = CuttableLink(county.address)
    link.heal()
    site = MosquittoBroker(tmp_path / "site")
    with site.config.open("a") as f:
        f.write("max_queued_messages 1000000\n" + bridge_conf(site_id, link))
    site.start()
    got: queue.Queue[str] = queue.Queue()
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=unique("county-sub"),
                      protocol=MQTTProtocolVersion.MQTTv311)
    sub.on_connect = lambda c, *a: c.subscribe(topics.alarm_filter(site_id), qos=1)
    sub.on_message = lambda c, u, m: got.put(m.payload.decode())
    sub.connect(*county.address)
    sub.loop_start()
    sink = MqttSink(*site.address, edge_id="edge-1", site=site_id)
    sink.open()
    arrived: set[str] = set()

    def drain() -> int:
        while not got.empty():
            arrived.add(got.get())
        return len(arrived)

    try:
        first = [numbered(i) for i in range(10)]
        for a in first:
            sink.emit(a)
        assert sink.flush()
        wait_until(lambda: drain() == 10, 30, "alarms across the bridge before the cut")
        link.cut()
        later = [numbered(i) for i in range(10, 60)]
        for a in later:
            sink.emit(a)
        assert sink.flush()  # the site broker has them: the edge is done
        assert drain() == 10  # the cut link delivered none of them
        link.heal()
        wait_until(lambda: drain() == 60, 60, "every alarm after the link healed")
        assert arrived == {a.to_json() for a in first + later}
    finally:
        sink.close()
        sub.loop_stop()
        sub.disconnect()
        link.cut()
        site.stop()
