"""WS-Discovery (2005/04, as ONVIF uses it): find ONVIF cameras on the local network.

A Probe for ``dn:NetworkVideoTransmitter`` goes to 239.255.255.250:3702 with TTL 1 (the
spec's: discovery never leaves the link); devices answer by unicast with a ProbeMatch naming
their service addresses (XAddrs) and scopes (name, hardware, location). The probe is sent
twice, as WS-Discovery repeats UDP messages, since a lost datagram would hide a camera;
replies are matched to our MessageID and de-duplicated per device, and parsed with
``defusedxml`` (a datagram carrying a DTD or entities is dropped).
"""

from __future__ import annotations

import logging
import select
import socket
import struct
import time
import uuid
from dataclasses import dataclass
from urllib.parse import unquote

from edge.sources.onvif.soap import NS, SoapParseError, parse_xml

log = logging.getLogger(__name__)

MULTICAST = ("239.255.255.250", 3702)
PROBE_ACTION = f"{NS['wsd']}/Probe"
SCOPE_PREFIX = "onvif://www.onvif.org/"


class DiscoveryError(RuntimeError):
    """Discovery could not run at all (no such interface, no multicast route)."""


@dataclass(frozen=True)
class DiscoveredDevice:
    address: str  # where the ProbeMatch came from
    endpoint: str  # the device's stable id (urn:uuid:...)
    xaddrs: tuple[str, ...]
    scopes: tuple[str, ...]
    types: tuple[str, ...]

    def scope(self, kind: str) -> str | None:
        """An ONVIF scope's value, e.g. ``name`` or ``hardware`` (URL-decoded)."""
        for s in self.scopes:
            if s.startswith(f"{SCOPE_PREFIX}{kind}/"):
                return unquote(s[len(SCOPE_PREFIX) + len(kind) + 1:])
        return None

    @property
    def label(self) -> str:
        """Name and model, as far as the device says."""
        parts = [p for p in (self.scope("name"), self.scope("hardware")) if p]
        return " / ".join(parts) or "-"


def probe_message(message_id: str) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?>'
            f'<s:Envelope xmlns:s="{NS["s"]}" xmlns:a="{NS["wsa"]}" '
            f'xmlns:d="{NS["wsd"]}" xmlns:dn="{NS["dn"]}"><s:Header>'
            f"<a:Action s:mustUnderstand=\"1\">{PROBE_ACTION}</a:Action>"
            f"<a:MessageID>{message_id}</a:MessageID>"
            f"<a:ReplyTo><a:Address>{NS['wsa']}/role/anonymous</a:Address></a:ReplyTo>"
            f"<a:To s:mustUnderstand=\"1\">urn:schemas-xmlsoap-org:ws:2005:04:discovery</a:To>"
            f"</s:Header><s:Body><d:Probe><d:Types>dn:NetworkVideoTransmitter</d:Types>"
            f"</d:Probe></s:Body></s:Envelope>").encode()


def parse_probe_matches(data: bytes, address: str, message_id: str) -> list[DiscoveredDevice]:
    """The devices in one ProbeMatches datagram answering ``message_id``; [] for anything
    else (another client's traffic, Hello/Bye announcements, garbage)."""
    try:
        root = parse_xml(data)
    except SoapParseError as exc:
        log.debug("undecodable discovery datagram", extra={"from": address,
                                                            "reason": str(exc)})
        return []
    relates = root.findtext("s:Header/wsa:RelatesTo", "", NS).strip()
    if relates != message_id:
        return []
    out = []
    # ProbeMatches/ProbeMatch per the spec; some devices omit the ProbeMatches wrapper.
    for m in root.iterfind(".//wsd:ProbeMatch", NS):
        out.append(DiscoveredDevice(
            address=address,
            endpoint=m.findtext("wsa:EndpointReference/wsa:Address", "", NS).strip(),
            xaddrs=tuple(m.findtext("wsd:XAddrs", "", NS).split()),
            scopes=tuple(m.findtext("wsd:Scopes", "", NS).split()),
            types=tuple(m.findtext("wsd:Types", "", NS).split())))
    return out


def _multicast_if(sock: socket.socket, interface: str) -> None:
    """Send the probe out of ``interface`` (a name like eth0, or its IPv4 address)."""
    try:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(interface))
        return
    except OSError:
        pass  # not an IPv4 address: a name
    try:
        index = socket.if_nametoindex(interface)
    except OSError:
        raise DiscoveryError(f"no network interface {interface!r}") from None
    # struct ip_mreqn {imr_multiaddr, imr_address, imr_ifindex}: Linux selects by index.
    mreqn = struct.pack("=4s4si", bytes(4), bytes(4), index)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn)


def discover(timeout_s: float = 3.0, interface: str | None = None) -> list[DiscoveredDevice]:
    """ONVIF devices answering a WS-Discovery probe within ``timeout_s``, by address."""
    message_id = f"urn:uuid:{uuid.uuid4()}"
    probe = probe_message(message_id)
    found: dict[str, DiscoveredDevice] = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP) as sock:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
        if interface:
            _multicast_if(sock, interface)
        sock.bind(("", 0))
        deadline = time.monotonic() + timeout_s
        resend_at = time.monotonic() + min(0.5, timeout_s / 4)
        try:
            sock.sendto(probe, MULTICAST)
        except OSError as exc:
            raise DiscoveryError(f"cannot send the WS-Discovery probe ({exc.strerror}); "
                                 f"is there a multicast route? try --interface") from None
        while (left := deadline - time.monotonic()) > 0:
            if resend_at and time.monotonic() >= resend_at:
                sock.sendto(probe, MULTICAST)
                resend_at = 0.0
            wait = min(left, resend_at - time.monotonic()) if resend_at else left
            ready, _, _ = select.select([sock], [], [], max(wait, 0.0))
            if not ready:
                continue
            data, (addr, _port) = sock.recvfrom(65535)
            for dev in parse_probe_matches(data, addr, message_id):
                key = dev.endpoint or addr
                if key not in found:
                    log.info("onvif device found", extra={"address": addr,
                                                          "endpoint": dev.endpoint,
                                                          "xaddrs": list(dev.xaddrs)})
                found[key] = dev
    return sorted(found.values(), key=lambda d: (socket.inet_aton(d.address), d.endpoint))
