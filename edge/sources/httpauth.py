"""HTTP authentication as cameras ask for it: Digest (RFC 7616, also RTSP's, RFC 2326) and
Basic, answering the challenge a device sends in ``WWW-Authenticate``.

Cameras and ONVIF devices mostly demand Digest (the ONVIF Core spec requires it of devices
beside WS-Security); sending Basic to such a device is refused with the same 401 as a wrong
password, which is how a Digest-only camera came to be reported as "wrong user or password".
So a client sends its request once, reads the challenge, and answers it in the scheme the
device named: Digest (MD5 or SHA-256, with ``qop=auth`` or the old RFC 2069 form) where
offered, else Basic. Pure functions; the transports (ONVIF over HTTP, RTSP ``diagnose``) do
the round trips.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from dataclasses import dataclass, field

_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_PARAM = re.compile(rf'\s*({_TOKEN})\s*=\s*("(?:[^"\\]|\\.)*"|{_TOKEN})\s*,?')
_SCHEME = re.compile(rf"\s*({_TOKEN})(?:\s+|$)")
_HASHES = {"MD5": hashlib.md5, "MD5-SESS": hashlib.md5, "SHA-256": hashlib.sha256,
           "SHA-256-SESS": hashlib.sha256}


class AuthSchemeError(ValueError):
    """The device asks for an authentication scheme this client does not speak."""


@dataclass(frozen=True)
class Challenge:
    """One scheme a device offers, with its parameters (names lower-cased)."""

    scheme: str  # lower case: "digest", "basic", ...
    params: dict[str, str] = field(default_factory=dict)


def parse_challenges(headers: list[str]) -> list[Challenge]:
    """Every challenge in the ``WWW-Authenticate`` header(s), in the device's order; a header
    may carry several (``Digest realm="x", nonce="y", Basic realm="x"``)."""
    out: list[Challenge] = []
    for header in headers:
        rest = header.strip()
        while rest:
            m = _SCHEME.match(rest)
            if m is None:
                break
            scheme, rest = m.group(1).lower(), rest[m.end():]
            params: dict[str, str] = {}
            while (p := _PARAM.match(rest)) is not None:
                value = p.group(2)
                if value.startswith('"'):
                    value = re.sub(r"\\(.)", r"\1", value[1:-1])
                params[p.group(1).lower()] = value
                rest = rest[p.end():]
            rest = rest.lstrip(", ")
            out.append(Challenge(scheme, params))
    return out


def _h(algorithm: str, text: str) -> str:
    return _HASHES[algorithm](text.encode("utf-8")).hexdigest()


def digest_response(ch: Challenge, user: str, password: str, method: str, uri: str, *,
                    nc: int = 1, cnonce: str | None = None) -> str:
    """The ``Authorization: Digest ...`` value answering one challenge."""
    p = ch.params
    algorithm = p.get("algorithm", "MD5").upper()
    if algorithm not in _HASHES:
        raise AuthSchemeError(f"digest algorithm {algorithm} is not supported")
    realm, nonce = p.get("realm", ""), p.get("nonce", "")
    cnonce = cnonce or os.urandom(8).hex()
    ha1 = _h(algorithm, f"{user}:{realm}:{password}")
    if algorithm.endswith("-SESS"):
        ha1 = _h(algorithm, f"{ha1}:{nonce}:{cnonce}")
    ha2 = _h(algorithm, f"{method}:{uri}")
    qops = [q.strip().lower() for q in p.get("qop", "").split(",") if q.strip()]
    parts = [f'username="{_quote(user)}"', f'realm="{_quote(realm)}"',
             f'nonce="{_quote(nonce)}"', f'uri="{_quote(uri)}"']
    if "auth" in qops:
        nc_text = f"{nc:08x}"
        response = _h(algorithm, f"{ha1}:{nonce}:{nc_text}:{cnonce}:auth:{ha2}")
        parts += ["qop=auth", f"nc={nc_text}", f'cnonce="{cnonce}"']
    elif qops:
        raise AuthSchemeError(f"digest qop {','.join(qops)} is not supported (only auth)")
    else:  # RFC 2069, as many RTSP cameras still answer
        response = _h(algorithm, f"{ha1}:{nonce}:{ha2}")
    parts.append(f'response="{response}"')
    if p.get("algorithm"):
        parts.append(f"algorithm={p['algorithm']}")
    if "opaque" in p:
        parts.append(f'opaque="{_quote(p["opaque"])}"')
    return "Digest " + ", ".join(parts)


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def authorization(challenges: list[Challenge], user: str, password: str, method: str,
                  uri: str) -> str:
    """The answer to the strongest challenge offered: Digest (SHA-256 before MD5), else
    Basic; AuthSchemeError when the device offers neither."""
    digests = [c for c in challenges if c.scheme == "digest"]
    digests.sort(key=lambda c: not c.params.get("algorithm", "").upper().startswith("SHA-256"))
    for ch in digests:
        try:
            return digest_response(ch, user, password, method, uri)
        except AuthSchemeError:
            continue
    if any(c.scheme == "basic" for c in challenges):
        return basic(user, password)
    offered = ", ".join(sorted({c.scheme for c in challenges})) or "nothing"
    raise AuthSchemeError(f"the device asks for {offered} authentication; only Digest and "
                          "Basic are supported")
