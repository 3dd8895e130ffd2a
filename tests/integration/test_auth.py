"""People, not a token: accounts with roles, API keys, sessions, throttling, the docs offline.

The central's API on a real uvicorn server against a real Redis; callers are a browser
(``Browser``: cookies and the anti-forgery header) and machines (``call`` with a key).
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis

from central.auth import Accounts, Guard, Role, Throttle
from central.incidents.store import RedisStore
from tests.support.alarms import alarm
from tests.support.api import TOKEN, Browser, accounts, call, serving
from tests.support.central import CheckedAggregator
from wire import topics

PASSWORD = "correct horse battery"


class Modes:
    def __init__(self) -> None:
        self.mode: str | None = None
        self.switched_by: list[str] = []

    def current_mode(self) -> str | None:
        return self.mode

    def available_modes(self) -> list[str]:
        return ["typhoon"]

    def switch_mode(self, mode: str | None, who: str) -> None:
        self.mode = mode
        self.switched_by.append(who)


@dataclass
class Api:
    url: str
    agg: CheckedAggregator
    accounts: Accounts
    modes: Modes
    keys: dict[str, str]  # role -> API key secret
    made: int = 0

    def incident(self, site: str = "park", zone: str = "bank") -> str:
        self.made += 1
        a = alarm(zone, time.time(), track=self.made)
        self.agg.ingest(a.to_json().encode(), topics.alarm(site, a.camera, zone, "intrusion"))
        return next(i.id for i in self.agg.incidents() if i.site == site and i.zone == zone)


@pytest.fixture
def api(redis_url: str, redis_ns: str) -> Iterator[Api]:
    from central.api import create_app

    client = redis.Redis.from_url(redis_url)
    agg = CheckedAggregator(RedisStore(client, ns=redis_ns), known_zones={"bank", "cliff"})
    acc = accounts(client, redis_ns)
    keys = {r.value: acc.add_key(f"k-{r.value}", r, by="tests")[1] for r in Role}
    for r in Role:
        acc.add_user(r.value, PASSWORD, r, by="tests")
    modes = Modes()
    guard = Guard(acc, Throttle(client, acc.ns, per_user=3, per_address=8))
    with serving(create_app(agg, guard, modes=modes)) as url:
        yield Api(url, agg, acc, modes, keys)
    client.close()


# -- roles, enforced by the API ---------------------------------------------------------------

# (method, path, body, least role); {iid} is an open incident
ROUTES = [
    ("GET", "/incidents", None, Role.VIEWER),
    ("GET", "/stats", None, Role.VIEWER),
    ("GET", "/mode", None, Role.VIEWER),
    ("GET", "/metrics", None, Role.VIEWER),
    ("GET", "/openapi.json", None, Role.VIEWER),
    ("POST", "/incidents/{iid}/acknowledge", None, Role.OPERATOR),
    ("PUT", "/mode", {"mode": "typhoon"}, Role.SUPERVISOR),
    ("GET", "/users", None, Role.ADMIN),
    ("GET", "/keys", None, Role.ADMIN),
]


@pytest.mark.parametrize(("method", "path", "body", "least"), ROUTES)
def test_each_route_needs_its_role(api: Api, method: str, path: str, body: dict[str, Any] | None,
                                   least: Role) -> None:
    iid = api.incident()
    url = api.url + path.format(iid=iid)
    assert _status(url, method, body, None) == 401
    for role in Role:
        want = 200 if role.at_least(least) else 403
        got = _status(url, method, body, api.keys[role.value])
        assert got == want, (role, got)
        if got == 200 and method == "POST":
            break  # acknowledged once; a second would be 409


def _status(url: str, method: str, body: dict[str, Any] | None, token: str | None) -> int:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, method=method,
                                 data=None if body is None else json.dumps(body).encode())
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


def test_actions_record_the_signed_in_person_never_a_name_from_the_body(api: Api) -> None:
    iid = api.incident()
    b = Browser(api.url)
    assert b.login("operator", PASSWORD)[0] == 200
    # a name in the body is refused outright, not silently recorded or ignored
    status, err = b.request(f"/incidents/{iid}/acknowledge", "POST", {"by": "Director Wang"})
    assert status == 422 and "by" in json.dumps(err)
    status, inc = b.request(f"/incidents/{iid}/acknowledge", "POST")
    assert status == 200 and inc["acknowledged_by"] == "operator"
    status, inc = call(f"{api.url}/incidents/{iid}/resolve", "POST",
                       {"note": "walked back behind the rail"}, token=api.keys["operator"])
    assert status == 200 and inc["resolved_by"] == "key:k-operator"
    assert call(f"{api.url}/mode", "PUT", {"mode": "typhoon", "by": "Mayor Li"},
                token=api.keys["supervisor"])[0] == 422
    assert call(f"{api.url}/mode", "PUT", {"mode": "typhoon"},
                token=api.keys["supervisor"])[0] == 200
    assert api.modes.switched_by == ["key:k-supervisor"]
    events = api.agg.store.events(iid)
    assert [(e["type"], e["data"].get("by")) for e in events[1:]] == [
        ("acknowledged", "operator"), ("resolved", "key:k-operator")]


def test_credentials_are_checked_before_the_body_is_read(api: Api) -> None:
    iid = api.incident()
    for body in (b"{not json", b"[" * 100_000, b"x" * 1_000_000):
        status = _raw_post(api.url, f"/incidents/{iid}/resolve", body)
        assert status == 401, body[:10]


def _raw_post(base: str, path: str, body: bytes) -> int:
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode())
        # the server may answer and close before reading it all: that is the point
        with contextlib.suppress(OSError):
            s.sendall(body)
        head = s.recv(64).decode()
    return int(head.split()[1])


def test_anonymous_health_says_only_ok_and_metrics_need_a_key(api: Api) -> None:
    api.incident()
    assert call(f"{api.url}/health", token=None) == (200, {"status": "ok"})
    assert call(f"{api.url}/health", token=api.keys["viewer"])[1]["incidents_open"] == 1
    assert _status(f"{api.url}/metrics", "GET", None, None) == 401


def test_site_limited_operator_sees_and_closes_only_their_sites(api: Api) -> None:
    mine, other = api.incident("park"), api.incident("harbour")
    api.accounts.add_user("zhao", PASSWORD, Role.OPERATOR, ["park"], by="tests")
    b = Browser(api.url)
    b.login("zhao", PASSWORD)
    status, items = b.request("/incidents")
    assert status == 200 and [i["id"] for i in items] == [mine]
    assert b.request(f"/incidents/{other}")[0] == 404
    assert b.request(f"/incidents/{other}/acknowledge", "POST")[0] == 404
    assert b.request(f"/incidents/{mine}/acknowledge", "POST")[0] == 200
    assert [d["site"] for d in b.request("/stats")[1]["per_zone_day"]] == ["park"]


# -- sessions in a browser ----------------------------------------------------------------------


def test_browser_session_cookies_and_cross_site_protection(api: Api) -> None:
    iid = api.incident()
    b = Browser(api.url)
    assert b.login("operator", "wrong password!")[0] == 401
    status, me = b.login("operator", PASSWORD)
    assert status == 200 and me["role"] == "operator" and "password" not in me
    session = b.cookie("perimeter_session")
    assert session is not None and session.has_nonstandard_attr("HttpOnly")
    assert session.get_nonstandard_attr("SameSite", "").lower() == "strict"
    # the cookie alone does not change anything: a forged cross-site POST has no token
    assert b.request(f"/incidents/{iid}/acknowledge", "POST", csrf=False)[0] == 403
    assert b.request(f"/incidents/{iid}/acknowledge", "POST",
                     headers={"X-CSRF-Token": "guessed"}, csrf=False)[0] == 403
    assert b.request(f"/incidents/{iid}/acknowledge", "POST")[0] == 200
    # a sign-in form posted from another site is not JSON: refused
    assert b.request("/auth/login", "POST", None, csrf=False,
                     headers={"Content-Type": "application/x-www-form-urlencoded"})[0] in (
        415, 422)
    assert b.request("/auth/logout", "POST")[0] == 200
    assert b.request("/incidents")[0] == 401


def test_disabling_an_account_ends_its_sessions(api: Api) -> None:
    b = Browser(api.url)
    b.login("viewer", PASSWORD)
    assert b.request("/incidents")[0] == 200
    admin = Browser(api.url)
    admin.login("admin", PASSWORD)
    assert admin.request("/users/viewer", "PATCH", {"disabled": True})[0] == 200
    assert b.request("/incidents")[0] == 401
    assert Browser(api.url).login("viewer", PASSWORD)[0] == 401
    # the last admin cannot lock everyone out
    assert admin.request("/users/admin", "PATCH", {"disabled": True})[0] == 409


def test_admin_manages_keys_and_a_revoked_key_stops_at_once(api: Api) -> None:
    admin = Browser(api.url)
    admin.login("admin", PASSWORD)
    status, made = admin.request("/keys", "POST", {"name": "edge-tool", "role": "viewer"})
    assert status == 201 and made["key"].startswith("pk_")
    assert call(f"{api.url}/incidents", token=made["key"])[0] == 200
    assert admin.request("/keys/edge-tool", "DELETE")[1]["active"] is False
    assert call(f"{api.url}/incidents", token=made["key"])[0] == 401
    assert Browser(api.url).login("supervisor", PASSWORD)[0] == 200
    sup = Browser(api.url)
    sup.login("supervisor", PASSWORD)
    assert sup.request("/keys", "POST", {"name": "x", "role": "admin"})[0] == 403


def test_nothing_in_redis_lets_anyone_sign_in(api: Api, redis_url: str, redis_ns: str) -> None:
    client = redis.Redis.from_url(redis_url)
    dump = b" ".join(v for k in client.scan_iter(f"{redis_ns}:auth:*")
                     if client.type(k) == b"hash" for v in client.hgetall(k).values())
    assert PASSWORD.encode() not in dump
    assert all(secret.encode() not in dump for secret in api.keys.values())
    assert TOKEN.encode() not in dump
    assert client.hget(f"{redis_ns}:auth:user:viewer", "password").startswith(b"$argon2id$")
    client.close()


# -- throttling and logging ---------------------------------------------------------------------


def test_wrong_passwords_are_logged_with_the_address_and_throttled(
        api: Api, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="central.auth")
    b = Browser(api.url)
    for _ in range(3):  # per_user=3 in this fixture
        assert b.login("operator", "not the password")[0] == 401
    status, _ = b.login("operator", PASSWORD)  # even the right one, for now
    assert status == 429
    failed = [r for r in caplog.records if r.getMessage() == "authentication failed"]
    assert len(failed) == 3
    assert all(r.__dict__["address"] == "127.0.0.1" and r.__dict__["user"] == "operator"
               for r in failed)
    # the duty officer's account is not locked for everyone: another account still signs in
    assert Browser(api.url).login("viewer", PASSWORD)[0] == 200


def test_a_flood_of_bad_keys_is_counted_logged_once_and_blocked(
        api: Api, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="central.auth")
    codes = [call(f"{api.url}/incidents", token=f"guess-{i:04d}-xxxxxxxxxxxx")[0]
             for i in range(40)]
    assert codes[:8] == [401] * 8 and set(codes[8:]) == {429}  # per_address=8 here
    msgs = [r.getMessage() for r in caplog.records]
    assert msgs.count("authentication failed") == 8
    assert msgs.count("sign-in attempts blocked") == 1  # not one line per request


# -- docs from local files, behind sign-in --------------------------------------------------------


def test_docs_are_served_locally_behind_sign_in(api: Api) -> None:
    import urllib.request

    b = Browser(api.url)
    status, _ = b.request("/docs")
    assert status == 200  # followed the redirect to the sign-in page
    assert b.request("/docs/assets/swagger-ui-bundle.js")[0] == 401
    b.login("viewer", PASSWORD)
    req = urllib.request.Request(f"{api.url}/docs")
    with b.opener.open(req, timeout=10) as resp:
        page = resp.read().decode()
        csp = resp.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp
    srcs = [s.split('"')[1] for s in page.split("src=")[1:]] + \
        [s.split('"')[1] for s in page.split("href=")[1:]]
    assert srcs and all(s.startswith("/") for s in srcs), srcs  # nothing from elsewhere
    for s in srcs:
        status, body = b.request(s)
        assert status == 200 and len(body) > 100, s
    status, spec = b.request("/openapi.json")
    assert spec["paths"]["/incidents/{incident_id}/acknowledge"]["post"][
        "x-required-role"] == "operator"
    assert "apiKey" in spec["components"]["securitySchemes"]
