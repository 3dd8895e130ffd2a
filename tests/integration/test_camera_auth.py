"""Cameras that ask for HTTP Digest, speak HTTPS, or send hostile XML.

Peers: the ONVIF simulator (``sim.onvif``, demanding Digest beside WS-Security, serving HTTPS
with a certificate made here) and the RTSP simulator (GStreamer's RTSP server, Digest only).
A Digest-only device with the right password used to be reported as "wrong user or
password"; a DOCTYPE after the first 4 KB of a reply used to be parsed.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator

import pytest

from edge.config import OnvifConfig
from edge.sources import httpauth
from edge.sources.onvif.client import (
    OnvifAuthError,
    OnvifResponseError,
    OnvifTlsError,
    resolve_stream_uri,
)
from edge.sources.onvif.discovery import parse_probe_matches
from edge.sources.rtsp import diagnose
from sim.onvif import Device, DeviceSpec
from sim.rtsp import RtspServer

BOMB = (b'<!-- ' + b"x" * 5000 + b' --><!DOCTYPE lolz [<!ENTITY lol "lol">'
        b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>')


@pytest.fixture
def device_factory() -> Iterator[Callable[..., Device]]:
    made: list[Device] = []

    def make(**kw: object) -> Device:
        dev = Device(DeviceSpec(**kw)).start()  # type: ignore[arg-type]
        made.append(dev)
        return dev

    yield make
    for d in made:
        d.close()


def cfg(port: int, **kw: object) -> OnvifConfig:
    return OnvifConfig.model_validate({"host": "127.0.0.1", "port": port, "username": "admin",
                                       "password": "secret"} | kw)


# -- ONVIF over HTTP Digest ---------------------------------------------------------------------


def test_digest_device_with_the_right_password_resolves(
        device_factory: Callable[..., Device]) -> None:
    dev = device_factory(http_digest=True)
    assert resolve_stream_uri(cfg(dev.port)) == "rtsp://admin:secret@127.0.0.1:8554/main"
    assert dev.http_refused > 0  # it did challenge: the answer was Digest, not luck
    assert dev.requests[-2:] == ["GetProfiles", "GetStreamUri"]


def test_digest_device_with_a_wrong_password_says_so(
        device_factory: Callable[..., Device]) -> None:
    dev = device_factory(http_digest=True)
    with pytest.raises(OnvifAuthError, match="wrong username or password"):
        resolve_stream_uri(cfg(dev.port, password="Tr0ub4dor"))
    with pytest.raises(OnvifAuthError, match="requires credentials"):
        resolve_stream_uri(OnvifConfig(host="127.0.0.1", port=dev.port))


# -- ONVIF over HTTPS ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1, as a camera ships one."""
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cam.pem", d / "cam.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=camera", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return str(cert), str(key)


def test_https_device_trusted_by_its_certificate(device_factory: Callable[..., Device],
                                                 certificate: tuple[str, str]) -> None:
    dev = device_factory(tls=certificate, http_digest=True)
    uri = resolve_stream_uri(cfg(dev.port, https=True, ca_file=certificate[0]))
    assert uri == "rtsp://admin:secret@127.0.0.1:8554/main"
    with pytest.raises(OnvifTlsError, match=r"set onvif\.ca_file") as err:
        resolve_stream_uri(cfg(dev.port, https=True))  # not in the system's CAs
    assert err.value.status == "tls"
    assert resolve_stream_uri(cfg(dev.port, https=True, tls_verify=False)).endswith("/main")


# -- hostile XML ---------------------------------------------------------------------------------


def test_a_doctype_anywhere_in_a_reply_is_refused(device_factory: Callable[..., Device]) -> None:
    dev = device_factory(reply_prefix=BOMB)
    with pytest.raises(OnvifResponseError, match="DTD"):
        resolve_stream_uri(cfg(dev.port))


def test_discovery_drops_a_datagram_with_a_doctype() -> None:
    mid = "urn:uuid:1"
    good = (b'<?xml version="1.0"?><s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"'
            b' xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" xmlns:d="http://'
            b'schemas.xmlsoap.org/ws/2005/04/discovery"><s:Header><a:RelatesTo>urn:uuid:1'
            b'</a:RelatesTo></s:Header><s:Body><d:ProbeMatches><d:ProbeMatch><d:XAddrs>'
            b'http://10.0.0.9/onvif/device_service</d:XAddrs></d:ProbeMatch></d:ProbeMatches>'
            b'</s:Body></s:Envelope>')
    assert len(parse_probe_matches(good, "10.0.0.9", mid)) == 1
    hostile = good.replace(b"?>", b"?>" + BOMB, 1)
    assert parse_probe_matches(hostile, "10.0.0.9", mid) == []


# -- RTSP diagnose against a Digest-only camera -------------------------------------------------


@pytest.mark.parametrize("digest", [False, True], ids=["basic", "digest"])
def test_rtsp_diagnose_answers_the_scheme_the_camera_asks_for(
        rtsp: Callable[..., RtspServer], digest: bool) -> None:
    srv = rtsp(user="op", password="pa ss", digest=digest)
    right = diagnose(srv.url("op", "pa%20ss"), 3.0)
    assert "unauthorized" not in right, right
    assert right == "stream answers but no video could be decoded"
    assert diagnose(srv.url("op", "nope"), 3.0) == "unauthorized: wrong user or password"
    assert diagnose(srv.url(), 3.0) == "unauthorized: the camera needs a user and password"


# -- the challenge answers themselves (RFC 2617 example) ----------------------------------------


def test_digest_answer_matches_the_rfc_example() -> None:
    """RFC 2617 section 3.5: Mufasa / Circle Of Life."""
    (ch,) = httpauth.parse_challenges([
        'Digest realm="testrealm@host.com", qop="auth,auth-int", '
        'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"'])
    answer = httpauth.digest_response(ch, "Mufasa", "Circle Of Life", "GET", "/dir/index.html",
                                      nc=1, cnonce="0a4f113b")
    assert 'response="6629fae49393a05397450978507c4ef1"' in answer
    assert 'opaque="5ccc069c403ebaf9f0171e9517f40e41"' in answer and "qop=auth" in answer


def test_strongest_scheme_is_answered() -> None:
    chs = httpauth.parse_challenges(['Basic realm="x", Digest realm="x", nonce="n", '
                                     'algorithm=MD5', 'Digest realm="x", nonce="n", '
                                     'algorithm=SHA-256, qop="auth"'])
    assert [c.scheme for c in chs] == ["basic", "digest", "digest"]
    assert "algorithm=SHA-256" in httpauth.authorization(chs, "u", "p", "GET", "/")
    assert httpauth.authorization(chs[:1], "u", "p", "GET", "/") == "Basic dTpw"
    with pytest.raises(httpauth.AuthSchemeError, match="ntlm"):
        httpauth.authorization(httpauth.parse_challenges(["NTLM"]), "u", "p", "GET", "/")

