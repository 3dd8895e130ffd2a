"""A site's own certificate authority: ``perimeter pki init`` and ``perimeter pki issue``.

One folder holds everything a site's identity needs (``cli.pki`` is the command line)::

    ca.crt  ca.key                 the site's CA (the key never leaves this folder)
    command-signing.key  .pub      the central signs speaker commands (``wire.signing``)
    devices.json                   every identity issued: name -> role, site
    devices/{name}/                what to copy onto that device: {name}.crt, {name}.key,
                                   {name}.password (not for the broker), ca.crt
    mosquitto/passwords            the broker's password_file (PBKDF2-SHA512, as
                                   mosquitto_passwd writes it)
    mosquitto/acl                  the broker's acl_file (``wire.topics.grants`` per device)

Keys are ECDSA P-256 (fast TLS handshakes on small edge boxes), written 0600. Device
certificates carry their name as CN and DNS name; the broker's carries the host names and
addresses devices connect to. Re-issuing a name replaces its key, certificate and password;
the password and ACL files are rewritten from ``devices.json`` each time.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import json
import os
import re
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from wire import signing, topics

NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
CA_DAYS, DEVICE_DAYS = 3650, 825
MOSQUITTO_ITERATIONS = 101  # mosquitto_passwd's default for its "$7$" PBKDF2-SHA512 hashes


class PkiError(ValueError):
    """Something the site's CA cannot do; the message says what to do."""


@dataclass(frozen=True)
class Issued:
    """What ``issue`` wrote for one device."""

    name: str
    role: str
    folder: Path
    cert: Path
    key: Path
    password: Path | None


def _write(path: Path, data: bytes, secret: bool = False) -> None:
    """Write atomically; a secret is 0600 from its first byte."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if secret else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "perimeter")])


def init(folder: Path, *, site: str = "site", days: int = CA_DAYS) -> Path:
    """Create the CA and the command-signing key in ``folder``; ``PkiError`` if one exists."""
    if (folder / "ca.key").exists():
        raise PkiError(f"{folder} already holds a CA (ca.key); issue from it, or choose "
                       "another folder")
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (x509.CertificateBuilder()
            .subject_name(_name(f"perimeter {site} CA")).issuer_name(_name(f"perimeter {site} CA"))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                         False), critical=True)
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256()))
    _write(folder / "ca.key", _key_pem(key), secret=True)
    _write(folder / "ca.crt", cert.public_bytes(serialization.Encoding.PEM))
    signer = signing.generate_key()
    _write(folder / "command-signing.key", signing.private_pem(signer), secret=True)
    _write(folder / "command-signing.pub", signing.public_pem(signer.public_key()))
    _write(folder / "devices.json", b"{}\n")
    render_broker_files(folder)
    return folder / "ca.crt"


def _load_ca(folder: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        cert = x509.load_pem_x509_certificate((folder / "ca.crt").read_bytes())
        key = serialization.load_pem_private_key((folder / "ca.key").read_bytes(), None)
    except FileNotFoundError:
        raise PkiError(f"no CA in {folder}: run perimeter pki init --dir {folder}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"{folder / 'ca.key'} is not this tool's kind of key (EC P-256)")
    return cert, key


def _alt_names(name: str, hosts: list[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for h in dict.fromkeys([name, *hosts]):
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            out.append(x509.DNSName(h))
    return out


def issue(folder: Path, name: str, role: str, *, site: str | None = None,
          hosts: list[str] | None = None, days: int = DEVICE_DAYS) -> Issued:
    """A key, certificate and (but for the broker) password for device ``name`` of ``role``;
    the broker's password and ACL files rewritten. ``PkiError`` on a bad name or role."""
    if not NAME.match(name):
        raise PkiError(f"bad device name {name!r}: letters, digits, '_', '.', '-' (1-64)")
    if role not in topics.ROLES:
        raise PkiError(f"unknown role {role!r}: one of {', '.join(topics.ROLES)}")
    try:
        topics.grants(role, site, name)  # a site is required, ids must be topic segments
    except ValueError as err:
        raise PkiError(str(err)) from None
    ca_cert, ca_key = _load_ca(folder)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if role == "broker":
        usages.insert(0, ExtendedKeyUsageOID.SERVER_AUTH)
        hosts = hosts or ["localhost", "127.0.0.1", "::1"]
    cert = (x509.CertificateBuilder()
            .subject_name(_name(name)).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, True, False, False, False,
                                         False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.SubjectAlternativeName(_alt_names(name, hosts or [])),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    out = folder / "devices" / name
    _write(out / f"{name}.key", _key_pem(key), secret=True)
    _write(out / f"{name}.crt", cert.public_bytes(serialization.Encoding.PEM))
    shutil.copyfile(folder / "ca.crt", out / "ca.crt")
    password: Path | None = None
    if role != "broker":
        password = out / f"{name}.password"
        _write(password, (secrets.token_urlsafe(24) + "\n").encode(), secret=True)
    devices = _devices(folder)
    devices[name] = {"role": role, "site": site}
    _write(folder / "devices.json", (json.dumps(devices, indent=2, sort_keys=True) + "\n")
           .encode())
    render_broker_files(folder)
    return Issued(name, role, out, out / f"{name}.crt", out / f"{name}.key", password)


def _devices(folder: Path) -> dict[str, dict[str, str | None]]:
    try:
        data = json.loads((folder / "devices.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    return data if isinstance(data, dict) else {}


def mosquitto_hash(password: str, salt: bytes | None = None,
                   iterations: int = MOSQUITTO_ITERATIONS) -> str:
    """A password_file hash as ``mosquitto_passwd`` (2.x) writes it: ``$7$`` PBKDF2-SHA512."""
    salt = salt if salt is not None else secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations)
    b64 = base64.b64encode
    return f"$7${iterations}${b64(salt).decode()}${b64(digest).decode()}"


def acl_text(devices: dict[str, dict[str, str | None]]) -> str:
    """The broker's acl_file: each device's grants under its user name."""
    lines = ["# written by perimeter pki from devices.json: do not edit, re-issue instead",
             "# anonymous clients (none get in with allow_anonymous false) may do nothing", ""]
    for name, dev in sorted(devices.items()):
        role = str(dev.get("role"))
        grants = topics.grants(role, dev.get("site"), name)
        if not grants:
            continue
        lines.append(f"# {role}" + (f" of site {dev['site']}" if dev.get("site") else ""))
        lines.append(f"user {name}")
        lines += [f"topic {access} {flt}" for access, flt in grants]
        lines.append("")
    return "\n".join(lines) + "\n"


def render_broker_files(folder: Path) -> None:
    """Rewrite ``mosquitto/passwords`` and ``mosquitto/acl`` from ``devices.json`` and each
    device's password file."""
    devices = _devices(folder)
    entries = []
    for name, dev in sorted(devices.items()):
        pw_file = folder / "devices" / name / f"{name}.password"
        if dev.get("role") != "broker" and pw_file.exists():
            pw = pw_file.read_text(encoding="utf-8").splitlines()[0]
            entries.append(f"{name}:{mosquitto_hash(pw)}\n")
    _write(folder / "mosquitto" / "passwords", "".join(entries).encode(), secret=True)
    _write(folder / "mosquitto" / "acl", acl_text(devices).encode())
