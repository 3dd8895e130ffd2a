"""A site's identities and a Mosquitto that demands them: TLS, client certificates, passwords
and the ACL that ``perimeter pki`` writes, on a free loopback port.

``site_pki`` issues a broker, a central, two edges (``edge-1``, ``edge-2``) and a speaker
(``spk-1``) of site ``park``; ``secure_broker`` runs Mosquitto with them. The broker logs at
debug level so the tests can count what it refused (Mosquitto 2.0 logs a denied PUBLISH only
there).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.services import MosquittoBroker
from wire import pki
from wire.client import Broker, Tls, read_secret

SITE = "park"
DEVICES = [("broker", "broker"), ("central", "central"), ("edge-1", "edge"),
           ("edge-2", "edge"), ("spk-1", "speaker")]


class Site:
    """A CA folder with every device of ``DEVICES`` issued."""

    def __init__(self, folder: Path):
        self.folder = folder
        pki.init(folder, site=SITE)
        for name, role in DEVICES:
            pki.issue(folder, name, role, site=None if role in ("central", "broker") else SITE)

    def dev(self, name: str) -> Path:
        return self.folder / "devices" / name

    def tls(self, name: str) -> Tls:
        d = self.dev(name)
        return Tls(str(self.folder / "ca.crt"), str(d / f"{name}.crt"), str(d / f"{name}.key"))

    def password(self, name: str) -> str:
        pw = read_secret(self.dev(name) / f"{name}.password")
        assert pw is not None
        return pw

    def broker_for(self, name: str, port: int) -> Broker:
        """How device ``name`` connects: its user, password and certificate."""
        return Broker("127.0.0.1", port, name, self.password(name), self.tls(name))


class SecureMosquitto(MosquittoBroker):
    """``MosquittoBroker`` with TLS (client certificate required), passwords and ACLs."""

    def __init__(self, workdir: Path, site: Site):
        super().__init__(workdir, persistence=False)
        b = site.dev("broker")
        lines = self.config.read_text().splitlines()
        lines = [ln for ln in lines if ln != "allow_anonymous true"] + [
            f"cafile {site.folder / 'ca.crt'}", f"certfile {b / 'broker.crt'}",
            f"keyfile {b / 'broker.key'}", "require_certificate true",
            "tls_version tlsv1.2", "allow_anonymous false",
            f"password_file {site.folder / 'mosquitto' / 'passwords'}",
            f"acl_file {site.folder / 'mosquitto' / 'acl'}",
            f"log_dest file {self.log_path}", "log_type error", "log_type warning",
            "log_type notice", "log_type information", "log_type debug",
            "message_size_limit 65536"]
        self.config.write_text("\n".join(lines) + "\n")

    def count(self, text: str) -> int:
        """Lines of the broker's log holding ``text``."""
        if not self.log_path.exists():
            return 0
        return sum(text in line for line in self.log_path.read_text(errors="replace")
                   .splitlines())


@pytest.fixture
def site_pki(tmp_path: Path) -> Site:
    return Site(tmp_path / "pki")


@pytest.fixture
def secure_broker(tmp_path: Path, site_pki: Site) -> Iterator[SecureMosquitto]:
    broker = SecureMosquitto(tmp_path / "mosquitto", site_pki)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
