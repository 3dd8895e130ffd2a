"""ONVIF: stream URIs from media profiles, every failure a clear error, and WS-Discovery.

The client under test is the production code (``edge.sources.onvif``); its peers are real
protocol endpoints: ``tests/support/onvif_device.py`` (a simulated camera written independently
of the client, with the faults cameras show in the field) and ipycam's ONVIF service (PyPI,
written by others). Discovery multicasts, so it runs between two private network namespaces
joined by a veth pair: nothing reaches the host's network.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import select
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from cli.main import main
from edge.config import OnvifConfig
from edge.sources.onvif.client import (
    OnvifAuthError,
    OnvifNoProfilesError,
    OnvifProfileNotFoundError,
    OnvifResponseError,
    OnvifTimeoutError,
    OnvifUnreachableError,
    resolve_stream_uri,
    with_credentials,
)
from sim.onvif import Device, DeviceSpec
from tests.support.onvif_device import IpycamDevice
from tests.support.services import REPO_ROOT as REPO


@pytest.fixture
def device() -> Iterator[Device]:
    dev = Device(DeviceSpec()).start()
    yield dev
    dev.close()


def cfg_for(port: int, **kw: object) -> OnvifConfig:
    base: dict[str, object] = {"host": "127.0.0.1", "port": port, "username": "admin",
                               "password": "secret"}
    return OnvifConfig.model_validate(base | kw)


# -- resolution ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("profile", "path"), [
    (None, "/main"), (0, "/main"), (1, "/sub"), ("prof_sub", "/sub"), ("prof_main", "/main")])
def test_profile_by_token_or_index(device: Device, profile: str | int | None, path: str) -> None:
    uri = resolve_stream_uri(cfg_for(device.port, profile=profile), timeout_s=5)
    assert uri == f"rtsp://admin:secret@127.0.0.1:8554{path}"
    assert device.requests[-2:] == ["GetProfiles", "GetStreamUri"]


def test_detect_profile_is_the_sub_stream(device: Device) -> None:
    cfg = cfg_for(device.port, detect_profile="prof_sub")
    assert urlsplit(resolve_stream_uri(cfg)).path == "/main"
    assert urlsplit(resolve_stream_uri(cfg, detect=True)).path == "/sub"
    # detect without a detect_profile falls back to the main profile
    assert urlsplit(resolve_stream_uri(cfg_for(device.port), detect=True)).path == "/main"


def test_credentials_are_url_quoted_into_the_uri() -> None:
    dev = Device(DeviceSpec(username="site op", password="p@ss:w/rd%")).start()
    try:
        uri = resolve_stream_uri(cfg_for(dev.port, username="site op", password="p@ss:w/rd%"))
    finally:
        dev.close()
    parts = urlsplit(uri)
    assert (parts.hostname, parts.port, parts.path) == ("127.0.0.1", 8554, "/main")
    assert uri.startswith("rtsp://site%20op:p%40ss%3Aw%2Frd%25@")
    # credentials a device already put in its URI, and non-RTSP URIs, are left alone
    assert with_credentials("rtsp://u:p@cam/x", "admin", "pw") == "rtsp://u:p@cam/x"
    assert with_credentials("http://cam/x", "admin", "pw") == "http://cam/x"
    assert with_credentials("rtsp://cam/x", None, None) == "rtsp://cam/x"


def test_open_device_without_credentials() -> None:
    dev = Device(DeviceSpec(username=None, password=None)).start()
    try:
        uri = resolve_stream_uri(OnvifConfig(host="127.0.0.1", port=dev.port))
    finally:
        dev.close()
    assert uri == "rtsp://127.0.0.1:8554/main"


def test_device_clock_hours_off_still_authenticates() -> None:
    """WS-Security Created is checked against the camera's clock; cameras' clocks drift."""
    dev = Device(DeviceSpec(clock_skew=dt.timedelta(hours=-3, minutes=7))).start()
    try:
        assert resolve_stream_uri(cfg_for(dev.port)).endswith("/main")
    finally:
        dev.close()
    assert dev.requests[0] == "GetSystemDateAndTime"


def test_ipycam_peer_interoperates() -> None:
    """A third party's ONVIF server (digest check, 401 on failure) agrees with our client."""
    pytest.importorskip("ipycam", reason="ipycam is in the dev extra (deploy/setup.sh --full)")
    cam = IpycamDevice("127.0.0.1", "admin", "s3cret")
    try:
        cfg = cfg_for(cam.port, password="s3cret")
        assert resolve_stream_uri(cfg) == "rtsp://admin:s3cret@127.0.0.1:8554/video_main"
        sub = cfg.model_copy(update={"detect_profile": "Profile_Sub"})
        assert resolve_stream_uri(sub, detect=True).endswith(":8554/video_sub")
        with pytest.raises(OnvifAuthError, match="authentication failed for user 'admin'"):
            resolve_stream_uri(cfg.model_copy(update={"password": "wrong"}))
    finally:
        cam.close()


# -- faults: one clear error and one log line each --------------------------------------------


def one_warning(caplog: pytest.LogCaptureFixture) -> logging.LogRecord:
    recs = [r for r in caplog.records
            if r.name == "edge.sources.onvif.client" and r.levelno >= logging.WARNING]
    assert len(recs) == 1, [r.getMessage() for r in recs]
    return recs[0]


def test_wrong_password(device: Device, caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(OnvifAuthError) as err:
        resolve_stream_uri(cfg_for(device.port, password="Tr0ub4dor"))
    where = f"127.0.0.1:{device.port}"
    assert str(err.value) == (f"ONVIF device {where}: authentication failed for user 'admin' "
                              f"(GetCapabilities): wrong username or password")
    assert err.value.status == "auth_failed"
    rec = one_warning(caplog)
    assert where in rec.getMessage() and rec.__dict__["status"] == "auth_failed"
    assert "Tr0ub4dor" not in rec.getMessage() + str(rec.__dict__)  # no password in logs


def test_missing_credentials(device: Device) -> None:
    with pytest.raises(OnvifAuthError, match=r"requires credentials .* set onvif\.username"):
        resolve_stream_uri(OnvifConfig(host="127.0.0.1", port=device.port))


def test_device_that_never_answers(caplog: pytest.LogCaptureFixture) -> None:
    """The kernel completes the TCP handshake on a listening socket nobody serves: the
    request goes out and nothing ever comes back, like a hung camera."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        t0 = time.monotonic()
        with pytest.raises(OnvifTimeoutError) as err:
            resolve_stream_uri(cfg_for(port), timeout_s=0.5)
        elapsed = time.monotonic() - t0
    assert str(err.value) == (f"ONVIF device 127.0.0.1:{port}: no answer within 0.5 s "
                              f"(GetSystemDateAndTime)")
    assert err.value.status == "timeout" and isinstance(err.value, OnvifUnreachableError)
    assert elapsed < 3, f"gave up after {elapsed:.1f} s, not the 0.5 s timeout"
    assert one_warning(caplog).__dict__["status"] == "timeout"


def test_nothing_listening() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        with pytest.raises(OnvifUnreachableError, match="cannot reach the device") as err:
            resolve_stream_uri(cfg_for(port), timeout_s=2)
    assert err.value.status == "unreachable"


def test_device_without_profiles(caplog: pytest.LogCaptureFixture) -> None:
    dev = Device(DeviceSpec(profiles=[])).start()
    try:
        with pytest.raises(OnvifNoProfilesError, match=f"127.0.0.1:{dev.port}: has no media "
                                                       "profiles"):
            resolve_stream_uri(cfg_for(dev.port))
    finally:
        dev.close()
    assert one_warning(caplog).__dict__["status"] == "no_profiles"


@pytest.mark.parametrize("want", ["prof_third", 2])
def test_no_such_profile(device: Device, want: str | int) -> None:
    with pytest.raises(OnvifProfileNotFoundError) as err:
        resolve_stream_uri(cfg_for(device.port, profile=want))
    assert f"no media profile {want!r} (has 0: prof_main, 1: prof_sub)" in str(err.value)


def test_malformed_reply(caplog: pytest.LogCaptureFixture) -> None:
    dev = Device(DeviceSpec(malformed={"GetProfiles"})).start()
    try:
        with pytest.raises(OnvifResponseError, match=r"bad reply to GetProfiles .*not "
                                                     r"well-formed XML") as err:
            resolve_stream_uri(cfg_for(dev.port))
    finally:
        dev.close()
    assert err.value.status == "bad_response"
    assert one_warning(caplog).__dict__["status"] == "bad_response"


# -- command line ---------------------------------------------------------------------------


def test_cli_profiles(device: Device, capsys: pytest.CaptureFixture[str],
                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PERIMETER_ONVIF_PASSWORD", "secret")
    args = ["onvif", "profiles", "--host", "127.0.0.1", "--port", str(device.port),
            "--user", "admin"]
    assert main(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["#", "TOKEN", "NAME", "VIDEO", "STREAM", "URI"]
    assert out[2].split() == ["1", "prof_sub", "SubStream", "H264", "640x360",
                              "rtsp://admin:***@127.0.0.1:8554/sub"]
    monkeypatch.setenv("PERIMETER_ONVIF_PASSWORD", "nope")
    assert main(args) == 1
    assert capsys.readouterr().err.startswith(
        f"error: ONVIF device 127.0.0.1:{device.port}: authentication failed")


def test_config_check_accepts_an_onvif_camera(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """Checking a config stays offline: the device is not contacted."""
    cfg = tmp_path / "site.yaml"
    cfg.write_text("cameras:\n  - id: gate\n    onvif:\n      host: 192.0.2.10\n"
                   "      username: admin\n      password: secret\n      profile: 0\n"
                   "      detect_profile: prof_sub\n    zones:\n      - id: edge\n"
                   "        kind: cliff\n        risk: high\n"
                   "        polygon: [[0.1, 0.5], [0.4, 0.5], [0.4, 0.9], [0.1, 0.9]]\n")
    assert main(["config", "check", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "camera gate: 1 zone(s): edge (cliff, high)" in out and f"{cfg}: OK" in out


# -- WS-Discovery in private network namespaces ----------------------------------------------


class Netns:
    """Two namespaces, client and device, joined by one veth pair; multicast routed on it."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.client, self.device = f"pmo-c-{tag}", f"pmo-d-{tag}"
        self.client_if, self.device_if = f"pmoc{tag}", f"pmod{tag}"
        self.client_ip, self.device_ip = "10.77.0.1", "10.77.0.2"

    def up(self) -> None:
        for cmd in (
            f"netns add {self.client}", f"netns add {self.device}",
            f"link add {self.client_if} netns {self.client} type veth peer name "
            f"{self.device_if} netns {self.device}",
        ):
            ip(cmd)
        for ns, dev, addr in ((self.client, self.client_if, self.client_ip),
                              (self.device, self.device_if, self.device_ip)):
            for cmd in (f"addr add {addr}/24 dev {dev}", f"link set {dev} up", "link set lo up",
                        f"route add 224.0.0.0/4 dev {dev}"):
                ip(f"-n {ns} {cmd}")

    def down(self) -> None:
        for ns in (self.client, self.device):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)

    def exec(self, ns: str, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", ns, *argv]


def ip(cmd: str) -> None:
    subprocess.run(["ip", *cmd.split()], check=True, capture_output=True, text=True)


@pytest.fixture(scope="module")
def netns() -> Iterator[Netns]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("discovery tests need root and iproute2 to make private network "
                    "namespaces (multicast must not reach the host's network)")
    ns = Netns()
    try:
        ns.up()
    except subprocess.CalledProcessError as exc:
        ns.down()
        pytest.skip(f"cannot create network namespaces here: {exc.stderr.strip()}")
    yield ns
    ns.down()


def start_peer(ns: Netns, *extra: str) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        ns.exec(ns.device, sys.executable, "-m", "tests.support.onvif_device", "--bind",
                ns.device_ip, *extra),
        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 15)
    line = proc.stdout.readline() if ready else ""
    if not line.startswith("ready "):
        proc.kill()
        pytest.fail(f"device peer did not start: {line!r} {proc.communicate()[1][-2000:]}")
    return proc, int(line.split()[1])


def perimeter(ns: Netns, *args: str, env: dict[str, str] | None = None) -> str:
    exe = str(Path(sys.executable).with_name("perimeter"))
    res = subprocess.run(ns.exec(ns.client, exe, *args), capture_output=True, text=True,
                         timeout=30, env=(os.environ | env) if env else None, check=False)
    assert res.returncode == 0, res.stderr
    return res.stdout


@pytest.mark.parametrize("peer", ["simulator", "ipycam"])
def test_discover_finds_the_device(netns: Netns, peer: str) -> None:
    if peer == "ipycam":
        pytest.importorskip("ipycam", reason="ipycam is in the dev extra")
    proc, port = start_peer(netns, "--name", "GateCam", *(["--ipycam"] if peer == "ipycam"
                                                          else []))
    try:
        out = perimeter(netns, "onvif", "discover", "--timeout", "1.5").splitlines()
        assert out[0].split()[:2] == ["ADDRESS", "NAME"], out
        row = out[1]
        assert row.startswith(netns.device_ip) and "GateCam" in row
        assert f"http://{netns.device_ip}:{port}/onvif/device_service" in row
        assert "Profile/Streaming" in row and out[-1] == "1 device(s)"
        # the probe can be pinned to one interface, by name
        by_if = perimeter(netns, "onvif", "discover", "--timeout", "1",
                          "--interface", netns.client_if)
        assert netns.device_ip in by_if
        # and the device found is usable from there
        listing = perimeter(netns, "onvif", "profiles", "--host", netns.device_ip, "--port",
                            str(port), "--user", "admin",
                            env={"PERIMETER_ONVIF_PASSWORD": "secret"})
        assert f"rtsp://admin:***@{netns.device_ip}:8554/" in listing
    finally:
        proc.stdin.close()  # type: ignore[union-attr]
        proc.wait(10)


def test_discover_reports_silence(netns: Netns) -> None:
    out = perimeter(netns, "onvif", "discover", "--timeout", "0.5")
    assert out.strip() == "no ONVIF device answered within 0.5 s"
