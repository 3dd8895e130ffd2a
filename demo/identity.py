"""``perimeter demo``'s throw-away site identity: the demo runs secured, as a site should.

A CA made for this run in the demo's temporary folder (``wire.pki``) issues the broker's
certificate and one identity per process (the central, the edge box, each speaker), with the
Mosquitto password and ACL files; the central signs speaker commands with the run's key and
the speakers check it. Nothing here outlives the run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from wire import pki
from wire.client import Broker, Tls, read_secret
from wire.signing import CommandSigner, CommandVerifier

HOST = "127.0.0.1"


@dataclass(frozen=True)
class DemoSite:
    """The run's CA folder and what each demo process connects as."""

    folder: Path
    port: int

    @classmethod
    def create(cls, workdir: Path, port: int, site: str, edge_id: str,
               speakers: list[str]) -> DemoSite:
        folder = workdir / "pki"
        pki.init(folder, site=site, days=2)
        pki.issue(folder, "broker", "broker", hosts=[HOST, "localhost"], days=2)
        pki.issue(folder, "central", "central", days=2)
        pki.issue(folder, edge_id, "edge", site=site, days=2)
        for spk in speakers:
            pki.issue(folder, spk, "speaker", site=site, days=2)
        return cls(folder, port)

    def device(self, name: str) -> Path:
        return self.folder / "devices" / name

    def tls(self, name: str) -> Tls:
        d = self.device(name)
        return Tls(str(self.folder / "ca.crt"), str(d / f"{name}.crt"), str(d / f"{name}.key"))

    def broker(self, name: str) -> Broker:
        """How process ``name`` connects: its user, password and certificate."""
        password = read_secret(self.device(name) / f"{name}.password")
        return Broker(HOST, self.port, name, password, self.tls(name))

    def edge_mqtt(self, edge_id: str) -> dict[str, object]:
        """The ``mqtt`` keys of the edge config's copy."""
        d = self.device(edge_id)
        return {"username": edge_id, "password_file": str(d / f"{edge_id}.password"),
                "tls": {"ca_file": str(self.folder / "ca.crt"),
                        "cert_file": str(d / f"{edge_id}.crt"),
                        "key_file": str(d / f"{edge_id}.key")}}

    def signer(self) -> CommandSigner:
        return CommandSigner.load(self.folder / "command-signing.key")

    def verifier(self) -> CommandVerifier:
        return CommandVerifier.load(self.folder / "command-signing.pub")

    def mosquitto_lines(self) -> list[str]:
        """The broker's TLS, password and ACL settings (deploy/mosquitto.conf's, here)."""
        b = self.device("broker")
        return [f"cafile {self.folder / 'ca.crt'}", f"certfile {b / 'broker.crt'}",
                f"keyfile {b / 'broker.key'}", "require_certificate true",
                "tls_version tlsv1.2", "allow_anonymous false",
                f"password_file {self.folder / 'mosquitto' / 'passwords'}",
                f"acl_file {self.folder / 'mosquitto' / 'acl'}", "message_size_limit 65536"]
