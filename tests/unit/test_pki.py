"""``perimeter pki``: the site's CA, device certificates, Mosquitto password and ACL files.

That Mosquitto accepts these files (and refuses what they do not allow) is proved against a
real broker in tests/integration/test_secure_link.py.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509

from cli.main import main
from wire import pki


def cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_init_then_issue_every_role(tmp_path: Path) -> None:
    d = tmp_path / "pki"
    pki.init(d, site="park")
    ca = cert(d / "ca.crt")
    broker = pki.issue(d, "broker", "broker", hosts=["mqtt.park.lan", "10.0.0.2"])
    edge = pki.issue(d, "edge-1", "edge", site="park")
    pki.issue(d, "spk-1", "speaker", site="park")
    pki.issue(d, "central", "central")
    for issued in (broker, edge):
        c = cert(issued.cert)
        assert c.issuer == ca.subject
        c.verify_directly_issued_by(ca)  # raises if the CA did not sign it
        assert stat.S_IMODE(issued.key.stat().st_mode) == 0o600
        assert (issued.folder / "ca.crt").read_bytes() == (d / "ca.crt").read_bytes()
    san = cert(broker.cert).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert "mqtt.park.lan" in san.value.get_values_for_type(x509.DNSName)
    assert ipaddress.ip_address("10.0.0.2") in san.value.get_values_for_type(x509.IPAddress)
    assert broker.password is None and edge.password is not None
    assert stat.S_IMODE(edge.password.stat().st_mode) == 0o600
    for secret in ("ca.key", "command-signing.key", "mosquitto/passwords"):
        assert stat.S_IMODE((d / secret).stat().st_mode) == 0o600
    users = [ln.split(":")[0] for ln in (d / "mosquitto/passwords").read_text().splitlines()]
    assert users == ["central", "edge-1", "spk-1"]  # the broker logs in with nobody's password
    acl = (d / "mosquitto/acl").read_text()
    assert "user edge-1\ntopic write perimeter/v2/park/alarm/edge-1/#\n" in acl
    assert "user spk-1\ntopic read perimeter/v1/park/speaker/spk-1/command\n" in acl
    assert "topic write perimeter/v1/+/speaker/+/command" in acl.split("user central")[1]
    assert "speaker/+/command" not in acl.split("user central")[0] + acl.split("user edge-1")[1]


def test_reissue_replaces_the_key_and_password(tmp_path: Path) -> None:
    d = tmp_path / "pki"
    pki.init(d)
    first = pki.issue(d, "edge-1", "edge", site="park")
    key1, pw1 = first.key.read_bytes(), first.password.read_text()  # type: ignore[union-attr]
    second = pki.issue(d, "edge-1", "edge", site="park")
    assert second.key.read_bytes() != key1
    assert second.password.read_text() != pw1  # type: ignore[union-attr]
    assert (d / "mosquitto/acl").read_text().count("user edge-1") == 1


def test_password_hash_is_mosquittos_pbkdf2_format() -> None:
    salt = bytes(range(12))
    h = pki.mosquitto_hash("secret", salt)
    _, seven, iterations, b64salt, b64hash = h.split("$")
    assert (seven, iterations, base64.b64decode(b64salt)) == ("7", "101", salt)
    assert base64.b64decode(b64hash) == hashlib.pbkdf2_hmac("sha512", b"secret", salt, 101)


@pytest.mark.parametrize(("args", "message"), [
    (["issue", "edge-1", "--role", "edge"], "no CA"),
])
def test_issue_without_a_ca_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      args: list[str], message: str) -> None:
    assert main(["pki", *args, "--dir", str(tmp_path / "none"), "--site", "park"]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(("name", "role", "site", "message"), [
    ("edge-1", "edge", None, "site"),             # an edge belongs to one site
    ("edge/1", "edge", "park", "bad device name"),
    ("spk-1", "speaker", "pa+rk", "topic segment"),
    ("x", "admin", None, "unknown role"),
])
def test_bad_issues_are_refused(tmp_path: Path, name: str, role: str, site: str | None,
                                message: str) -> None:
    d = tmp_path / "pki"
    pki.init(d)
    with pytest.raises(pki.PkiError, match=message):
        pki.issue(d, name, role, site=site)


def test_init_twice_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pki", "init", "--dir", str(tmp_path)]) == 0
    assert main(["pki", "init", "--dir", str(tmp_path)]) == 2
    assert "already holds a CA" in capsys.readouterr().err
