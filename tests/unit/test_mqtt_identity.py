"""How a device's MQTT identity is read: the edge config's ``mqtt`` section and the
``--mqtt-*`` options of the central, the speaker and the sim radar (``cli.mqttopts``)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from cli.mqttopts import add_identity_options, broker_from_args
from common.yamlconfig import ConfigError
from edge.config import load_config, mqtt_broker
from wire.client import Broker, Tls, read_secret

CAMERA = """cameras:
  - id: c
    source: v.avi
    zones: [{id: z, kind: water, risk: high, polygon: [[0, 0], [1, 0], [1, 1]]}]
"""


def edge(tmp_path: Path, mqtt: str) -> Path:
    path = tmp_path / "edge.yaml"
    path.write_text(f"mqtt:\n{mqtt}\n{CAMERA}")
    return path


def test_edge_identity_from_files_beside_the_config(tmp_path: Path) -> None:
    for name in ("ca.crt", "e.crt", "e.key"):
        (tmp_path / name).write_text("x")
    (tmp_path / "e.password").write_text("s3cret\n")
    cfg = edge(tmp_path, "  host: mqtt.park.lan\n  port: 8883\n  username: edge-1\n"
                         "  password_file: e.password\n"
                         "  tls: {ca_file: ca.crt, cert_file: e.crt, key_file: e.key}")
    b = mqtt_broker(load_config(cfg))
    assert (b.host, b.port, b.username, b.password) == ("mqtt.park.lan", 8883, "edge-1", "s3cret")
    assert b.tls == Tls(str(tmp_path / "ca.crt"), str(tmp_path / "e.crt"), str(tmp_path / "e.key"))
    assert "s3cret" not in repr(b) and b.url == "mqtts://edge-1@mqtt.park.lan:8883"


def test_edge_password_from_the_environment(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_PW", "from-env")
    b = mqtt_broker(load_config(edge(tmp_path, "  username: e\n  password_env: EDGE_PW")))
    assert (b.password, b.tls) == ("from-env", None)


@pytest.mark.parametrize(("mqtt", "message"), [
    ("  username: e\n  password: a\n  password_env: B", "give one of password"),
    ("  password_file: pw", "needs username"),
    ("  username: e\n  password_file: absent.txt", "mqtt.password_file"),
    ("  tls: {ca_file: absent.crt}", "mqtt.tls"),
    ("  tls: {cert_file: ca.crt}", "both cert_file and key_file"),
])
def test_edge_identity_mistakes_name_the_field(tmp_path: Path, mqtt: str, message: str) -> None:
    (tmp_path / "ca.crt").write_text("x")
    with pytest.raises(ConfigError, match=message):
        mqtt_broker(load_config(edge(tmp_path, mqtt)))


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_identity_options(p)
    return p.parse_args(argv)


def test_cli_identity(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ca.crt", "d.crt", "d.key"):
        (tmp_path / name).write_text("x")
    (tmp_path / "pw").write_text("filepw\n")
    args = parse(["--mqtt-user", "spk-1", "--mqtt-password-file", str(tmp_path / "pw"),
                  "--mqtt-ca", str(tmp_path / "ca.crt"), "--mqtt-cert", str(tmp_path / "d.crt"),
                  "--mqtt-key", str(tmp_path / "d.key")])
    b = broker_from_args(args, "mqtt.park.lan", None)
    assert (b.port, b.username, b.password) == (8883, "spk-1", "filepw")  # TLS: port 8883
    monkeypatch.setenv("PERIMETER_MQTT_PASSWORD", "envpw")
    assert broker_from_args(parse(["--mqtt-user", "u"]), "h", None) == Broker("h", 1883, "u",
                                                                             "envpw")
    # a password in the environment is not sent without a user it belongs to
    assert broker_from_args(parse([]), "h", 1884) == Broker("h", 1884)


@pytest.mark.parametrize(("argv", "message"), [
    (["--mqtt-password-file", "pw"], "needs --mqtt-user"),
    (["--mqtt-key", "k"], "needs --mqtt-cert"),
    (["--mqtt-ca", "absent.crt"], "not a readable file"),
    (["--mqtt-user", "u", "--mqtt-password-file", "absent"], "cannot read"),
])
def test_cli_identity_mistakes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                               argv: list[str], message: str) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pw").write_text("x\n")
    with pytest.raises(ValueError, match=message):
        broker_from_args(parse(argv), "h", None)


def test_secrets_read_first_line_only(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("line1\nline2\n")
    assert read_secret(tmp_path / "pw") == "line1"
    (tmp_path / "empty").write_text("")
    with pytest.raises(ValueError, match="empty"):
        read_secret(tmp_path / "empty")
    assert read_secret(None, None) is None
