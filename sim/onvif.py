"""An ONVIF camera (Profile S subset) without video: ``perimeter sim onvif`` for a site with
no camera yet (``cli/sim.py``), and the peer the tests hold the production client
(``edge.sources.onvif``) against.

It speaks the real wire protocol, written here independently of ``edge.sources.onvif.soap`` so
the two cannot share a mistake: SOAP 1.2 over HTTP for the device service (GetSystemDateAndTime,
GetCapabilities, GetServices) and the media service (GetProfiles, GetStreamUri); WS-Security
UsernameToken PasswordDigest checked as a camera does (user, digest, Created within five minutes
of the device's clock, nonce never reused), with ter:NotAuthorized faults; optionally HTTP
Digest (RFC 7616, MD5 with qop=auth, as cameras demand it beside WS-Security: a request
without a right ``Authorization`` header gets 401 and a challenge) and HTTPS (a certificate
the test makes); and WS-Discovery
Probe -> ProbeMatches over UDP multicast 239.255.255.250:3702. Faults a camera shows in the
field are switches for the tests: no profiles, malformed replies, a clock that is off. Its
profiles' stream URIs point at an RTSP server (``perimeter sim rtsp`` or a real camera), as an
encoder box's would. Standard library only.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import os
import re
import socket
import ssl
import struct
import threading
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from xml.sax.saxutils import escape

S = "http://www.w3.org/2003/05/soap-envelope"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
TDS, TRT = "http://www.onvif.org/ver10/device/wsdl", "http://www.onvif.org/ver10/media/wsdl"
TT, TER = "http://www.onvif.org/ver10/schema", "http://www.onvif.org/ver10/error"
WSA, WSD = "http://schemas.xmlsoap.org/ws/2004/08/addressing", \
    "http://schemas.xmlsoap.org/ws/2005/04/discovery"
DN = "http://www.onvif.org/ver10/network/wsdl"
DIGEST_TYPE = ("http://docs.oasis-open.org/wss/2004/01/"
               "oasis-200401-wss-username-token-profile-1.0#PasswordDigest")
PRE_AUTH = {"GetSystemDateAndTime"}  # ONVIF Core: callable without credentials


@dataclass
class Profile:
    """One media profile; its stream URI is ``rtsp://{rtsp_host}:{rtsp_port}{path}``."""

    token: str
    name: str
    width: int
    height: int
    path: str


@dataclass
class DeviceSpec:
    """What the device is and how it misbehaves; ``host`` is where it listens and what it
    advertises, ``rtsp_host`` (default: ``host``) where its stream URIs point."""

    host: str = "127.0.0.1"
    port: int = 0
    username: str | None = "admin"
    password: str | None = "secret"
    name: str = "SimCam"
    hardware: str = "SC-2000"
    rtsp_port: int = 8554
    rtsp_host: str | None = None
    profiles: list[Profile] = field(default_factory=lambda: [
        Profile("prof_main", "MainStream", 1920, 1080, "/main"),
        Profile("prof_sub", "SubStream", 640, 360, "/sub")])
    clock_skew: dt.timedelta = dt.timedelta()
    malformed: set[str] = field(default_factory=set)  # actions answered with broken XML
    endpoint: str = field(default_factory=lambda: f"urn:uuid:{uuid.uuid4()}")
    http_digest: bool = False  # also demand HTTP Digest on every request
    tls: tuple[str, str] | None = None  # (certificate, key) PEM files: serve HTTPS
    reply_prefix: bytes = b""  # put before every reply's root element (a hostile DTD)


def _env(body: str) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?><env:Envelope xmlns:env="{S}" '
            f'xmlns:tds="{TDS}" xmlns:trt="{TRT}" xmlns:tt="{TT}" xmlns:ter="{TER}">'
            f"<env:Body>{body}</env:Body></env:Envelope>").encode()


def _fault(code: str, subcodes: list[str], reason: str) -> bytes:
    sub = "".join(f"<env:Subcode><env:Value>{s}</env:Value>" for s in subcodes) + \
        "</env:Subcode>" * len(subcodes)
    return _env(f"<env:Fault><env:Code><env:Value>{code}</env:Value>{sub}</env:Code>"
                f'<env:Reason><env:Text xml:lang="en">{escape(reason)}</env:Text></env:Reason>'
                "</env:Fault>")


class Device:
    """HTTP SOAP endpoint (a thread) plus, with ``discovery()``, a WS-Discovery responder."""

    def __init__(self, spec: DeviceSpec):
        self.spec = spec
        self.requests: list[str] = []  # actions received, in order
        self._nonces: set[str] = set()
        self._http = ThreadingHTTPServer((spec.host, spec.port), self._handler())
        self._http.daemon_threads = True
        if spec.tls is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*spec.tls)
            self._http.socket = ctx.wrap_socket(self._http.socket, server_side=True)
        self._digest_nonces: set[str] = set()
        self.http_refused = 0  # requests answered 401 (challenged or wrong)
        self.port = int(self._http.server_address[1])
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)
        self._udp: socket.socket | None = None

    @property
    def xaddr(self) -> str:
        scheme = "https" if self.spec.tls else "http"
        return f"{scheme}://{self.spec.host}:{self.port}/onvif/device_service"

    def start(self) -> Device:
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving HTTP and discovery (the port is free when this returns)."""
        self._http.shutdown()
        self._http.server_close()
        if self._udp is not None:
            self._udp.close()

    # -- SOAP --------------------------------------------------------------------------------

    def now(self) -> dt.datetime:
        """The device's clock (UTC plus the configured skew), which digests are checked on."""
        return dt.datetime.now(dt.UTC) + self.spec.clock_skew

    def _authorized(self, root: ET.Element) -> bool:
        if self.spec.username is None:
            return True
        tok = root.find(f"{{{S}}}Header/{{{WSSE}}}Security/{{{WSSE}}}UsernameToken")
        if tok is None:
            return False
        user = tok.findtext(f"{{{WSSE}}}Username", "")
        pw = tok.find(f"{{{WSSE}}}Password")
        nonce = tok.findtext(f"{{{WSSE}}}Nonce", "")
        created = tok.findtext(f"{{{WSU}}}Created", "")
        if pw is None or pw.get("Type") != DIGEST_TYPE or not nonce or not created:
            return False
        try:
            when = dt.datetime.fromisoformat(created.replace("Z", "+00:00"))
            raw = base64.b64decode(nonce, validate=True)
        except ValueError:
            return False
        if abs((when - self.now()).total_seconds()) > 300 or nonce in self._nonces:
            return False
        expect = hashlib.sha1(raw + created.encode() + (self.spec.password or "").encode())
        if user != self.spec.username or (pw.text or "") != base64.b64encode(
                expect.digest()).decode():
            return False
        self._nonces.add(nonce)
        return True

    # -- HTTP Digest (RFC 7616, written from the RFC, not from the client) -----------------

    REALM = "SimCam ONVIF"

    def challenge(self) -> str:
        nonce = os.urandom(16).hex()
        self._digest_nonces.add(nonce)
        return f'Digest realm="{self.REALM}", qop="auth", nonce="{nonce}", algorithm=MD5'

    def digest_ok(self, header: str | None, method: str, path: str) -> bool:
        if not header or not header.startswith("Digest "):
            return False
        pairs = re.findall(r'(\w+)=(?:"([^"]*)"|([^\s,]+))', header[7:])
        f = {k: a or b for k, a, b in pairs}
        if (f.get("username") != self.spec.username or f.get("realm") != self.REALM
                or f.get("nonce") not in self._digest_nonces or f.get("uri") != path
                or f.get("qop") != "auth"):
            return False

        def md5(text: str) -> str:
            return hashlib.md5(text.encode()).hexdigest()

        ha1 = md5(f"{self.spec.username}:{self.REALM}:{self.spec.password or ''}")
        ha2 = md5(f"{method}:{path}")
        want = md5(f"{ha1}:{f['nonce']}:{f.get('nc', '')}:{f.get('cnonce', '')}:auth:{ha2}")
        return f.get("response") == want

    def handle(self, path: str, data: bytes) -> tuple[int, bytes]:
        """One SOAP request to ``path`` -> (HTTP status, reply body)."""
        try:
            root = ET.fromstring(data)
        except ET.ParseError:
            root = ET.Element("none")
        body = root.find(f"{{{S}}}Body")
        if root.tag != f"{{{S}}}Envelope" or body is None or len(body) == 0:
            return 400, _fault("env:Sender", ["ter:WellFormed"], "request is not SOAP 1.2")
        op = body[0]
        ns, _, name = op.tag[1:].partition("}")
        self.requests.append(name)
        service = {"/onvif/device_service": TDS, "/onvif/media_service": TRT}.get(path)
        if ns != service:
            return 400, _fault("env:Sender", ["ter:ActionNotSupported"], f"{name} not here")
        if name not in PRE_AUTH and not self._authorized(root):
            return 400, _fault("env:Sender", ["ter:NotAuthorized"], "Sender not Authorized")
        if name in self.spec.malformed:
            return 200, b'<?xml version="1.0"?><env:Envelope xmlns:env="' + S.encode() + \
                b'"><env:Body><trt:GetProfilesResponse><unclosed></env:Body>'
        return self._answer(name, op)

    def _answer(self, name: str, op: ET.Element) -> tuple[int, bytes]:
        base = f"http://{self.spec.host}:{self.port}/onvif"
        if name == "GetSystemDateAndTime":
            n = self.now()
            return 200, _env(
                "<tds:GetSystemDateAndTimeResponse><tds:SystemDateAndTime>"
                "<tt:DateTimeType>NTP</tt:DateTimeType><tt:DaylightSavings>false"
                "</tt:DaylightSavings><tt:UTCDateTime><tt:Time>"
                f"<tt:Hour>{n.hour}</tt:Hour><tt:Minute>{n.minute}</tt:Minute>"
                f"<tt:Second>{n.second}</tt:Second></tt:Time><tt:Date><tt:Year>{n.year}"
                f"</tt:Year><tt:Month>{n.month}</tt:Month><tt:Day>{n.day}</tt:Day></tt:Date>"
                "</tt:UTCDateTime></tds:SystemDateAndTime></tds:GetSystemDateAndTimeResponse>")
        if name == "GetCapabilities":
            return 200, _env(
                "<tds:GetCapabilitiesResponse><tds:Capabilities>"
                f"<tt:Device><tt:XAddr>{base}/device_service</tt:XAddr></tt:Device>"
                f"<tt:Media><tt:XAddr>{base}/media_service</tt:XAddr></tt:Media>"
                "</tds:Capabilities></tds:GetCapabilitiesResponse>")
        if name == "GetServices":
            return 200, _env(
                f"<tds:GetServicesResponse><tds:Service><tds:Namespace>{TRT}</tds:Namespace>"
                f"<tds:XAddr>{base}/media_service</tds:XAddr></tds:Service>"
                "</tds:GetServicesResponse>")
        if name == "GetProfiles":
            return 200, _env("<trt:GetProfilesResponse>" + "".join(
                f'<trt:Profiles token="{p.token}" fixed="true"><tt:Name>{p.name}</tt:Name>'
                '<tt:VideoEncoderConfiguration token="vec"><tt:Name>enc</tt:Name>'
                "<tt:UseCount>1</tt:UseCount><tt:Encoding>H264</tt:Encoding><tt:Resolution>"
                f"<tt:Width>{p.width}</tt:Width><tt:Height>{p.height}</tt:Height>"
                "</tt:Resolution></tt:VideoEncoderConfiguration></trt:Profiles>"
                for p in self.spec.profiles) + "</trt:GetProfilesResponse>")
        if name == "GetStreamUri":
            token = op.findtext(f"{{{TRT}}}ProfileToken", "")
            prof = next((p for p in self.spec.profiles if p.token == token), None)
            if prof is None:
                return 400, _fault("env:Sender", ["ter:InvalidArgVal", "ter:NoProfile"],
                                   f"no profile {token}")
            host = self.spec.rtsp_host or self.spec.host
            uri = f"rtsp://{host}:{self.spec.rtsp_port}{prof.path}"
            return 200, _env(
                f"<trt:GetStreamUriResponse><trt:MediaUri><tt:Uri>{escape(uri)}</tt:Uri>"
                "<tt:InvalidAfterConnect>false</tt:InvalidAfterConnect><tt:InvalidAfterReboot>"
                "false</tt:InvalidAfterReboot><tt:Timeout>PT0S</tt:Timeout></trt:MediaUri>"
                "</trt:GetStreamUriResponse>")
        return 400, _fault("env:Sender", ["ter:ActionNotSupported"], f"{name} not supported")

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        device = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                data = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if device.spec.http_digest and not device.digest_ok(
                        self.headers.get("Authorization"), "POST", self.path):
                    device.http_refused += 1
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", device.challenge())
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status, body = device.handle(self.path, data)
                if device.spec.reply_prefix:
                    head, sep, rest = body.partition(b"?>")
                    body = head + sep + device.spec.reply_prefix + rest
                self.send_response(status)
                self.send_header("Content-Type", "application/soap+xml; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        return Handler

    # -- WS-Discovery ------------------------------------------------------------------------

    def discovery(self) -> Device:
        """Join 239.255.255.250:3702 on the device's address and answer Probes."""
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
        udp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        udp.bind(("", 3702))
        mreq = struct.pack("4s4s", socket.inet_aton("239.255.255.250"),
                           socket.inet_aton(self.spec.host))
        udp.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
        self._udp = udp
        threading.Thread(target=self._discovery_loop, daemon=True).start()
        return self

    def _discovery_loop(self) -> None:
        assert self._udp is not None
        while True:
            try:
                data, peer = self._udp.recvfrom(65535)
            except OSError:
                return
            try:
                root = ET.fromstring(data)
            except ET.ParseError:
                continue
            probe = root.find(f"{{{S}}}Body/{{{WSD}}}Probe")
            msg_id = root.findtext(f"{{{S}}}Header/{{{WSA}}}MessageID", "")
            if probe is None or not msg_id:
                continue
            wanted = probe.findtext(f"{{{WSD}}}Types", "").split()
            if wanted and not any(t.endswith(":NetworkVideoTransmitter") for t in wanted):
                continue
            self.requests.append("Probe")
            self._udp.sendto(self._probe_match(msg_id), peer)

    def _probe_match(self, relates_to: str) -> bytes:
        s = self.spec
        scopes = (f"onvif://www.onvif.org/type/video_encoder onvif://www.onvif.org/Profile/"
                  f"Streaming onvif://www.onvif.org/name/{s.name} "
                  f"onvif://www.onvif.org/hardware/{s.hardware}")
        return (f'<?xml version="1.0" encoding="UTF-8"?><SOAP-ENV:Envelope '
                f'xmlns:SOAP-ENV="{S}" xmlns:wsa="{WSA}" xmlns:wsd="{WSD}" xmlns:dn="{DN}" '
                f'xmlns:tds="{TDS}"><SOAP-ENV:Header><wsa:MessageID>urn:uuid:{uuid.uuid4()}'
                f"</wsa:MessageID><wsa:RelatesTo>{relates_to}</wsa:RelatesTo><wsa:To>"
                f"{WSA}/role/anonymous</wsa:To><wsa:Action>{WSD}/ProbeMatches</wsa:Action>"
                "</SOAP-ENV:Header><SOAP-ENV:Body><wsd:ProbeMatches><wsd:ProbeMatch>"
                f"<wsa:EndpointReference><wsa:Address>{s.endpoint}</wsa:Address>"
                "</wsa:EndpointReference><wsd:Types>dn:NetworkVideoTransmitter tds:Device"
                f"</wsd:Types><wsd:Scopes>{escape(scopes)}</wsd:Scopes><wsd:XAddrs>"
                f"{self.xaddr}</wsd:XAddrs><wsd:MetadataVersion>1</wsd:MetadataVersion>"
                "</wsd:ProbeMatch></wsd:ProbeMatches></SOAP-ENV:Body></SOAP-ENV:Envelope>"
                ).encode()

