"""Speaker commands signed by the central, checked by the speaker: who may make a speaker talk.

The broker's ACL already lets only the central's identity publish commands; the signature
makes that hold end to end, past a leaked broker password, a misconfigured ACL, a retained
message left on the broker or an IP speaker's open HTTP port. The central holds the private
key (Ed25519, ``perimeter pki init`` writes it as ``command-signing.key``), every speaker
the public one (``command-signing.pub``); a speaker cannot forge what it can check.

What is signed: the command's JSON object without ``sig``, keys sorted, no spaces, UTF-8
(``canonical``). The central adds ``site`` and ``speaker`` before signing, so a command for
one speaker cannot be replayed to another; ``sent_at`` bounds its life (the agent's replay
window, ``Window``), and its ``command_id`` is remembered for that window.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

SIG_FIELD = "sig"


def canonical(data: dict[str, Any]) -> bytes:
    """The bytes a signature covers: every field but ``sig``, keys sorted, compact UTF-8."""
    body = {k: v for k, v in data.items() if k != SIG_FIELD}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


class CommandSigner:
    """The central's side: adds ``sig`` to a command's fields."""

    def __init__(self, key: Ed25519PrivateKey):
        self._key = key

    @classmethod
    def load(cls, path: str | Path) -> CommandSigner:
        """From a PEM private key file; ``ValueError`` naming the file if it is not one."""
        return cls(load_private_key(path))

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self._key.public_key()

    def sign(self, data: dict[str, Any]) -> dict[str, Any]:
        """``data`` with its signature (base64) in ``sig``."""
        sig = self._key.sign(canonical(data))
        return {**data, SIG_FIELD: base64.b64encode(sig).decode("ascii")}


class CommandVerifier:
    """The speaker's side: does a command carry a valid signature of a trusted key?"""

    def __init__(self, keys: list[Ed25519PublicKey]):
        if not keys:
            raise ValueError("a verifier needs at least one public key")
        self._keys = list(keys)

    @classmethod
    def load(cls, *paths: str | Path) -> CommandVerifier:
        """From PEM public key files (several while the central's key is rotated)."""
        return cls([load_public_key(p) for p in paths])

    def check(self, data: dict[str, Any]) -> str | None:
        """None if ``data`` is signed by a trusted key, else why not (in words)."""
        sig = data.get(SIG_FIELD)
        if not isinstance(sig, str):
            return "unsigned"
        try:
            raw = base64.b64decode(sig, validate=True)
            body = canonical(data)
        except (binascii.Error, ValueError):
            return "malformed signature"
        for key in self._keys:
            try:
                key.verify(raw, body)
                return None
            except InvalidSignature:
                continue
        return "bad signature"


@dataclass
class Window:
    """The replay window: a command is accepted once, and only while ``sent_at`` is within
    ``max_age_s`` before and ``max_ahead_s`` after this clock (the speaker's and central's
    clocks are NTP-synchronised; ``max_ahead_s`` is the skew allowed between them)."""

    max_age_s: float = 60.0
    max_ahead_s: float = 10.0
    capacity: int = 100_000
    _seen: OrderedDict[str, float] = field(default_factory=OrderedDict)

    def check(self, command_id: str, sent_at: float, now: float | None = None) -> str | None:
        """None to play it, ``duplicate``, ``stale`` or ``future``. Ids are remembered until
        their ``sent_at`` leaves the window, so a replay within it is a duplicate and after
        it stale."""
        now = time.time() if now is None else now
        while self._seen and next(iter(self._seen.values())) < now - self.max_age_s:
            self._seen.popitem(last=False)
        if command_id in self._seen:
            return "duplicate"
        if math.isnan(sent_at) or now - sent_at > self.max_age_s:
            return "stale"
        if sent_at - now > self.max_ahead_s:
            return "future"
        self._seen[command_id] = max(sent_at, now - self.max_age_s)
        self._seen.move_to_end(command_id)
        while len(self._seen) > self.capacity:
            self._seen.popitem(last=False)
        return None


# -- keys --------------------------------------------------------------------------------------


def generate_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def private_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as err:
        raise ValueError(f"{path}: not a readable PEM private key ({err})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path}: the command-signing key must be Ed25519")
    return key


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except (OSError, ValueError, TypeError) as err:
        raise ValueError(f"{path}: not a readable PEM public key ({err})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path}: the command-signing key must be Ed25519")
    return key
