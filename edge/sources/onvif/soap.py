"""ONVIF's SOAP 1.2 messages: building requests, WS-Security, and reading replies.

Kept apart from the transport so the wire format can be read in one place and checked against
the ONVIF Core / Media specs. Plain ``xml.etree`` rather than zeep: a camera needs five
requests, and zeep would fetch or bundle WSDLs for hundreds. Replies are parsed with
``defusedxml``: SOAP 1.2 forbids a document type declaration, so a reply carrying one anywhere
is refused (no entity expansion, no external entity from a hostile device), and a reply is
read up to ``MAX_REPLY_BYTES``.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from xml.sax.saxutils import escape

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "wsse": "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd",
    "wsu": "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd",
    "tds": "http://www.onvif.org/ver10/device/wsdl",
    "trt": "http://www.onvif.org/ver10/media/wsdl",
    "tt": "http://www.onvif.org/ver10/schema",
    "wsa": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "wsd": "http://schemas.xmlsoap.org/ws/2005/04/discovery",
    "dn": "http://www.onvif.org/ver10/network/wsdl",
}
_TOKEN = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0"
PASSWORD_DIGEST = f"{_TOKEN}#PasswordDigest"
MAX_REPLY_BYTES = 1024 * 1024  # GetProfiles of a 64-channel recorder is some 100 KB
BASE64_BINARY = ("http://docs.oasis-open.org/wss/2004/01/"
                 "oasis-200401-wss-soap-message-security-1.0#Base64Binary")


class SoapParseError(ValueError):
    """A reply that is not a well-formed SOAP 1.2 envelope."""


@dataclass(frozen=True)
class Fault:
    """A SOAP 1.2 fault: ``code`` (s:Sender/s:Receiver), nested subcodes, reason text."""

    code: str
    subcodes: tuple[str, ...]
    reason: str

    @property
    def is_auth(self) -> bool:
        """ONVIF says ter:NotAuthorized; WS-Security says wsse:FailedAuthentication; some
        firmware only puts it in words."""
        words = " ".join((*self.subcodes, self.reason)).lower()
        return any(k in words for k in ("notauthorized", "failedauthentication",
                                        "not authorized", "unauthorized", "authenticat"))


# -- requests ---------------------------------------------------------------------------------


def password_digest(nonce: bytes, created: str, password: str) -> str:
    """WS-Security UsernameToken: Base64(SHA-1(nonce + created + password))."""
    raw = nonce + created.encode() + password.encode()
    return base64.b64encode(hashlib.sha1(raw).digest()).decode()


def security_header(username: str, password: str, now: dt.datetime) -> str:
    """A UsernameToken with PasswordDigest, the form ONVIF requires devices to accept.

    ``now`` should be the device's clock (see ``device_time``): cameras reject a Created
    too far from their own time, and many cameras' clocks are wrong.
    """
    nonce = os.urandom(16)
    created = now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + \
        f"{now.microsecond // 1000:03d}Z"
    return (
        f'<wsse:Security xmlns:wsse="{NS["wsse"]}" xmlns:wsu="{NS["wsu"]}" '
        f's:mustUnderstand="true"><wsse:UsernameToken>'
        f"<wsse:Username>{escape(username)}</wsse:Username>"
        f'<wsse:Password Type="{PASSWORD_DIGEST}">'
        f"{password_digest(nonce, created, password)}</wsse:Password>"
        f'<wsse:Nonce EncodingType="{BASE64_BINARY}">{base64.b64encode(nonce).decode()}'
        f"</wsse:Nonce><wsu:Created>{created}</wsu:Created>"
        f"</wsse:UsernameToken></wsse:Security>")


def envelope(body: str, header: str = "") -> bytes:
    """A SOAP 1.2 envelope around one request element."""
    return (f'<?xml version="1.0" encoding="UTF-8"?>'
            f'<s:Envelope xmlns:s="{NS["s"]}" xmlns:tds="{NS["tds"]}" '
            f'xmlns:trt="{NS["trt"]}" xmlns:tt="{NS["tt"]}">'
            f"<s:Header>{header}</s:Header><s:Body>{body}</s:Body></s:Envelope>").encode()


GET_SYSTEM_DATE_AND_TIME = "<tds:GetSystemDateAndTime/>"
GET_CAPABILITIES = "<tds:GetCapabilities><tds:Category>Media</tds:Category></tds:GetCapabilities>"
GET_SERVICES = ("<tds:GetServices><tds:IncludeCapability>false</tds:IncludeCapability>"
                "</tds:GetServices>")
GET_PROFILES = "<trt:GetProfiles/>"


def get_stream_uri(token: str) -> str:
    """RTSP over RTP unicast: what a detector worker pulls."""
    return ("<trt:GetStreamUri><trt:StreamSetup><tt:Stream>RTP-Unicast</tt:Stream>"
            "<tt:Transport><tt:Protocol>RTSP</tt:Protocol></tt:Transport></trt:StreamSetup>"
            f"<trt:ProfileToken>{escape(token)}</trt:ProfileToken></trt:GetStreamUri>")


def action(namespace: str, name: str) -> str:
    """The SOAP 1.2 action URI (sent as the Content-Type ``action`` parameter)."""
    return f"{NS[namespace]}/{name}"


# -- replies ----------------------------------------------------------------------------------


def parse_xml(data: bytes) -> ET.Element:
    """An XML document from a device, safely: no DTD, no entities; SoapParseError else."""
    if len(data) > MAX_REPLY_BYTES:
        raise SoapParseError(f"reply larger than {MAX_REPLY_BYTES // 1024} KiB")
    try:
        root: ET.Element = SafeET.fromstring(data, forbid_dtd=True)
    except DefusedXmlException:
        raise SoapParseError("reply carries a DTD or entities, which SOAP forbids") from None
    except ET.ParseError as exc:
        raise SoapParseError(f"reply is not well-formed XML ({exc})") from None
    return root


def parse_envelope(data: bytes) -> ET.Element:
    """The ``s:Body`` of a SOAP 1.2 reply; SoapParseError for anything else."""
    root = parse_xml(data)
    if root.tag != f"{{{NS['s']}}}Envelope":
        raise SoapParseError(f"reply is not a SOAP 1.2 envelope (root element {root.tag})")
    body = root.find("s:Body", NS)
    if body is None:
        raise SoapParseError("SOAP envelope has no Body")
    return body


def fault_of(body: ET.Element) -> Fault | None:
    """The fault in a reply body, if it is one."""
    el = body.find("s:Fault", NS)
    if el is None:
        return None
    code = el.findtext("s:Code/s:Value", "", NS).strip()
    subcodes: list[str] = []
    sub = el.find("s:Code/s:Subcode", NS)
    while sub is not None:
        subcodes.append(sub.findtext("s:Value", "", NS).strip())
        sub = sub.find("s:Subcode", NS)
    reason = " ".join(t.text.strip() for t in el.findall("s:Reason/s:Text", NS) if t.text)
    return Fault(code, tuple(subcodes), reason or "(no reason given)")


def device_time(body: ET.Element) -> dt.datetime | None:
    """The device's UTC clock from a GetSystemDateAndTime reply, if it states one."""
    utc = body.find(".//tt:UTCDateTime", NS)
    if utc is None:
        return None
    try:
        y, mo, d, h, mi, s = (int(utc.findtext(f"tt:{p}", "", NS)) for p in
                              ("Date/tt:Year", "Date/tt:Month", "Date/tt:Day",
                               "Time/tt:Hour", "Time/tt:Minute", "Time/tt:Second"))
        return dt.datetime(y, mo, d, h, mi, min(s, 59), tzinfo=dt.UTC)  # 60: a leap second
    except ValueError:
        return None


def media_xaddr(body: ET.Element) -> str | None:
    """The media service address from GetCapabilities or GetServices."""
    xaddr = body.findtext(".//tt:Media/tt:XAddr", None, NS)
    if xaddr:
        return xaddr.strip()
    for svc in body.iterfind(".//tds:Service", NS):
        if svc.findtext("tds:Namespace", "", NS).strip() == NS["trt"]:
            return svc.findtext("tds:XAddr", "", NS).strip() or None
    return None


@dataclass(frozen=True)
class MediaProfile:
    token: str
    name: str
    encoding: str | None
    resolution: tuple[int, int] | None


def profiles(body: ET.Element) -> list[MediaProfile]:
    """Media profiles from a GetProfiles reply, in the device's order."""
    if body.find("trt:GetProfilesResponse", NS) is None:
        raise SoapParseError("reply to GetProfiles has no GetProfilesResponse")
    out = []
    for p in body.iterfind("trt:GetProfilesResponse/trt:Profiles", NS):
        token = p.get("token")
        if not token:
            raise SoapParseError("a media profile has no token")
        enc = p.find("tt:VideoEncoderConfiguration", NS)
        res = None
        if enc is not None:
            w, h = (enc.findtext(f"tt:Resolution/tt:{k}", "", NS) for k in ("Width", "Height"))
            res = (int(w), int(h)) if w.isdigit() and h.isdigit() else None
        encoding = enc.findtext("tt:Encoding", None, NS) if enc is not None else None
        out.append(MediaProfile(token, p.findtext("tt:Name", "", NS), encoding, res))
    return out


def stream_uri(body: ET.Element) -> str:
    """The URI from a GetStreamUri reply."""
    uri = body.findtext("trt:GetStreamUriResponse/trt:MediaUri/tt:Uri", None, NS)
    if not uri or not uri.strip():
        raise SoapParseError("reply to GetStreamUri has no MediaUri/Uri")
    return uri.strip()
