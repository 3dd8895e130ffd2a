"""ONVIF cameras: resolve a stream URI from the device's media profiles; find devices.

A site installer knows a camera's address and password, rarely its RTSP path, which differs
by vendor and firmware. ``resolve_stream_uri`` asks the device (Profile S: GetCapabilities,
GetProfiles, GetStreamUri, WS-Security UsernameToken digest) and returns an rtsp:// URI with
the credentials in it, ready for the live worker. Every way this can fail is its own
``OnvifError`` subclass with a ``status`` code and a message naming the device, so the
worker's camera status and the log say which of "unreachable", "wrong password" or "no such
profile" a technician has to fix. Discovery (WS-Discovery) is in ``edge.onvif_discovery``.
"""

from __future__ import annotations

import datetime as dt
import http.client
import logging
import ssl
import xml.etree.ElementTree as ET
from urllib.parse import quote, urlsplit, urlunsplit

from edge.config import OnvifConfig
from edge.sources import httpauth
from edge.sources.onvif import soap
from edge.sources.onvif.discovery import DiscoveredDevice, DiscoveryError, discover
from edge.sources.onvif.soap import MediaProfile

__all__ = ["DiscoveredDevice", "DiscoveryError", "MediaProfile", "OnvifAuthError", "OnvifClient",
           "OnvifError", "OnvifNoProfilesError", "OnvifProfileNotFoundError",
           "OnvifResponseError", "OnvifTimeoutError", "OnvifTlsError", "OnvifUnreachableError",
           "discover",
           "redact", "resolve_stream_uri", "stream_uris", "with_credentials"]

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 5.0


class OnvifError(RuntimeError):
    """An ONVIF device that could not give a stream URI; ``status`` is a short code."""

    status = "error"

    def __init__(self, device: str, message: str):
        super().__init__(f"ONVIF device {device}: {message}")
        self.device = device


class OnvifUnreachableError(OnvifError):
    status = "unreachable"


class OnvifTimeoutError(OnvifUnreachableError):
    status = "timeout"


class OnvifAuthError(OnvifError):
    status = "auth_failed"


class OnvifTlsError(OnvifUnreachableError):
    status = "tls"


class OnvifNoProfilesError(OnvifError):
    status = "no_profiles"


class OnvifProfileNotFoundError(OnvifError):
    status = "no_such_profile"


class OnvifResponseError(OnvifError):
    status = "bad_response"


class OnvifClient:
    """One device's Profile S calls over HTTP or HTTPS (a new connection per request: cameras
    drop idle keep-alive connections at will, and five requests do not need pooling).

    Every request carries WS-Security when credentials are set; a device that also (or
    instead) demands HTTP authentication answers 401 with its challenge, and the request is
    sent once more answering it (Digest, else Basic: ``edge.sources.httpauth``)."""

    def __init__(self, cfg: OnvifConfig, *, timeout_s: float = DEFAULT_TIMEOUT_S):
        self.cfg = cfg
        self.timeout_s = timeout_s
        self.device = f"{'https://' if cfg.https else ''}{cfg.host}:{cfg.port}"
        self._clock_offset: dt.timedelta | None = None
        self._media_path: str | None = None
        self._tls = _tls_context(cfg) if cfg.https else None

    # -- transport ---------------------------------------------------------------------------

    def _call(self, path: str, namespace: str, name: str, body: str, *,
              auth: bool = True) -> ET.Element:
        ctype = f'application/soap+xml; charset=utf-8; action="{soap.action(namespace, name)}"'
        headers = {"Content-Type": ctype}
        status, payload, challenges = self._post(path, self._envelope(body, auth), headers, name)
        if status == 401 and challenges and self.cfg.username is not None:
            try:
                headers["Authorization"] = httpauth.authorization(
                    challenges, self.cfg.username, self.cfg.password or "", "POST", path)
            except httpauth.AuthSchemeError as exc:
                raise OnvifAuthError(self.device, f"{exc} ({name})") from None
            # a fresh WS-Security nonce: devices refuse one they have seen
            status, payload, _ = self._post(path, self._envelope(body, auth), headers, name)
        return self._reply(name, status, payload)

    def _envelope(self, body: str, auth: bool) -> bytes:
        header = ""
        if auth and self.cfg.username is not None:
            now = dt.datetime.now(dt.UTC) + (self._clock_offset or dt.timedelta())
            header = soap.security_header(self.cfg.username, self.cfg.password or "", now)
        return soap.envelope(body, header)

    def _post(self, path: str, data: bytes, headers: dict[str, str],
              name: str) -> tuple[int, bytes, list[httpauth.Challenge]]:
        conn: http.client.HTTPConnection
        if self._tls is not None:
            conn = http.client.HTTPSConnection(self.cfg.host, self.cfg.port,
                                               timeout=self.timeout_s, context=self._tls)
        else:
            conn = http.client.HTTPConnection(self.cfg.host, self.cfg.port,
                                              timeout=self.timeout_s)
        try:
            conn.request("POST", path, data, headers)
            resp = conn.getresponse()
            status, payload = resp.status, resp.read(soap.MAX_REPLY_BYTES + 1)
            challenges = httpauth.parse_challenges(resp.headers.get_all("WWW-Authenticate")
                                                   or [])
        except TimeoutError:
            raise OnvifTimeoutError(self.device, f"no answer within {self.timeout_s:g} s "
                                    f"({name})") from None
        except ssl.SSLError as exc:
            raise OnvifTlsError(self.device, f"TLS failed ({exc.reason or exc}; {name}): set "
                                "onvif.ca_file to the device's certificate, or tls_verify: "
                                "false on a closed network") from None
        except (OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            raise OnvifUnreachableError(self.device, f"cannot reach the device ({reason}; "
                                        f"{name})") from None
        finally:
            conn.close()
        return status, payload, challenges

    def _reply(self, name: str, status: int, payload: bytes) -> ET.Element:
        if status == 401:
            raise self._auth_error(name)
        try:
            body = soap.parse_envelope(payload)
        except soap.SoapParseError as exc:
            raise OnvifResponseError(self.device, f"bad reply to {name} (HTTP {status}): "
                                     f"{exc}") from None
        fault = soap.fault_of(body)
        if fault is not None:
            if fault.is_auth:
                raise self._auth_error(name)
            raise OnvifResponseError(self.device, f"{name} failed: {fault.reason} "
                                     f"({' / '.join((fault.code, *fault.subcodes))})")
        if status != 200:
            raise OnvifResponseError(self.device, f"HTTP {status} to {name}")
        return body

    def _auth_error(self, name: str) -> OnvifAuthError:
        if self.cfg.username is None:
            return OnvifAuthError(self.device, f"requires credentials ({name}); set "
                                  f"onvif.username and onvif.password")
        return OnvifAuthError(self.device, f"authentication failed for user "
                              f"{self.cfg.username!r} ({name}): wrong username or password")

    # -- Profile S ---------------------------------------------------------------------------

    def sync_clock(self) -> None:
        """Learn the device's clock offset for WS-Security ``Created``. The spec makes this
        call unauthenticated; a device that refuses it anyway gets our own clock."""
        try:
            body = self._call("/onvif/device_service", "tds", "GetSystemDateAndTime",
                              soap.GET_SYSTEM_DATE_AND_TIME, auth=False)
        except (OnvifAuthError, OnvifResponseError) as exc:
            log.debug("no device clock, using ours", extra={"device": self.device,
                                                             "reason": str(exc)})
            self._clock_offset = dt.timedelta()
            return
        device_now = soap.device_time(body)
        self._clock_offset = (device_now - dt.datetime.now(dt.UTC) if device_now
                              else dt.timedelta())

    def media_path(self) -> str:
        """The media service's path (GetCapabilities, else GetServices for devices that only
        answer the newer call). The device's own host in XAddr is ignored: behind NAT or a
        port forward it names an address the edge box cannot reach."""
        if self._media_path is None:
            if self._clock_offset is None:
                self.sync_clock()
            try:
                body = self._call("/onvif/device_service", "tds", "GetCapabilities",
                                  soap.GET_CAPABILITIES)
            except OnvifResponseError:
                body = self._call("/onvif/device_service", "tds", "GetServices",
                                  soap.GET_SERVICES)
            xaddr = soap.media_xaddr(body)
            if xaddr is None:
                raise OnvifResponseError(self.device, "the device offers no media service")
            self._media_path = urlsplit(xaddr).path or "/onvif/media_service"
        return self._media_path

    def profiles(self) -> list[MediaProfile]:
        body = self._call(self.media_path(), "trt", "GetProfiles", soap.GET_PROFILES)
        try:
            found = soap.profiles(body)
        except (soap.SoapParseError, ValueError) as exc:
            raise OnvifResponseError(self.device, f"bad reply to GetProfiles: {exc}") from None
        if not found:
            raise OnvifNoProfilesError(self.device, "has no media profiles (configure one in "
                                       "the camera's web page)")
        return found

    def stream_uri(self, token: str) -> str:
        body = self._call(self.media_path(), "trt", "GetStreamUri", soap.get_stream_uri(token))
        try:
            uri = soap.stream_uri(body)
        except soap.SoapParseError as exc:
            raise OnvifResponseError(self.device, f"bad reply to GetStreamUri: {exc}") from None
        return with_credentials(uri, self.cfg.username, self.cfg.password)


def _tls_context(cfg: OnvifConfig) -> ssl.SSLContext:
    """Verify the device against ``ca_file`` (its own certificate, for the self-signed ones
    cameras ship) or the system's CAs; ``tls_verify: false`` checks nothing (logged)."""
    if not cfg.tls_verify:
        log.warning("onvif device certificate not checked (tls_verify: false)",
                    extra={"device": f"{cfg.host}:{cfg.port}"})
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    return ssl.create_default_context(cafile=cfg.ca_file)


def pick_profile(device: str, found: list[MediaProfile], want: str | int | None) -> MediaProfile:
    """A profile by token (str) or 0-based index (int); the first when ``want`` is None."""
    if want is None:
        return found[0]
    if isinstance(want, int):
        if 0 <= want < len(found):
            return found[want]
    else:
        for p in found:
            if p.token == want:
                return p
    have = ", ".join(f"{i}: {p.token}" for i, p in enumerate(found))
    raise OnvifProfileNotFoundError(device, f"no media profile {want!r} (has {have})")


def with_credentials(uri: str, username: str | None, password: str | None) -> str:
    """Put the ONVIF credentials into an rtsp:// URI that has none: most cameras check the
    same account on RTSP, and OpenCV/FFmpeg take credentials only in the URL."""
    parts = urlsplit(uri)
    if username is None or parts.scheme.lower() not in ("rtsp", "rtsps") or "@" in parts.netloc:
        return uri
    auth = quote(username, safe="") + (f":{quote(password, safe='')}" if password else "")
    return urlunsplit(parts._replace(netloc=f"{auth}@{parts.netloc}"))


def redact(uri: str) -> str:
    """A URI fit for logs and tables: the password replaced by ``***``."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    userinfo, _, hostport = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{userinfo.split(':', 1)[0]}:***@{hostport}"))


def resolve_stream_uri(cfg: OnvifConfig, *, detect: bool = False,
                       timeout_s: float = DEFAULT_TIMEOUT_S) -> str:
    """The rtsp:// URI of ``cfg.profile`` (or ``cfg.detect_profile`` when ``detect`` and one
    is set), credentials included. Raises an ``OnvifError`` subclass, logged once here."""
    client = OnvifClient(cfg, timeout_s=timeout_s)
    want = cfg.detect_profile if detect and cfg.detect_profile is not None else cfg.profile
    try:
        profile = pick_profile(client.device, client.profiles(), want)
        uri = client.stream_uri(profile.token)
    except OnvifError as exc:
        log.warning("onvif stream URI not resolved: %s", exc, extra={
            "device": client.device, "status": exc.status, "profile": want})
        raise
    log.info("onvif stream URI resolved", extra={
        "device": client.device, "profile": profile.token, "uri": redact(uri)})
    return uri


def stream_uris(cfg: OnvifConfig, *,
                timeout_s: float = DEFAULT_TIMEOUT_S) -> list[tuple[MediaProfile, str]]:
    """Every media profile with its stream URI (for ``perimeter onvif profiles``)."""
    client = OnvifClient(cfg, timeout_s=timeout_s)
    return [(p, client.stream_uri(p.token)) for p in client.profiles()]
