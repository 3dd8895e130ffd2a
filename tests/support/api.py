"""The central's HTTP API on a real uvicorn server on loopback, and clients for it: ``call``
with an API key, ``Browser`` with a signed-in session (cookies and the anti-forgery header).
"""

from __future__ import annotations

import contextlib
import http.cookiejar
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from common.net import free_port
from tests.support.waiting import wait_until

if TYPE_CHECKING:
    import redis

    from central.auth import Accounts

TOKEN = "s3cret-token-for-tests"
KEY_NAME = "tests"


def accounts(client: redis.Redis, ns: str, *, token_role: str = "admin") -> Accounts:
    """Accounts in the test's Redis namespace, with ``TOKEN`` as the API key ``tests`` (an
    admin unless ``token_role`` says otherwise), so ``call``'s default token works. The
    password hash is Argon2id with small parameters: the tests make many accounts on a
    2-core machine; production uses argon2-cffi's defaults."""
    from argon2 import PasswordHasher

    from central.auth import Accounts, Role

    acc = Accounts(client, ns, hasher=PasswordHasher(time_cost=1, memory_cost=1024,
                                                     parallelism=1))
    acc.import_key(KEY_NAME, TOKEN, Role(token_role), by="tests")
    return acc


@contextlib.contextmanager
def serving(app: Any) -> Iterator[str]:
    """The app on a real uvicorn server on loopback; yields its base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, 10, "the API server to start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def call(url: str, method: str = "GET", body: dict[str, Any] | None = None,
         token: str | None = TOKEN) -> tuple[int, Any]:
    """One JSON request; the status and the decoded answer (errors included)."""
    req = urllib.request.Request(url, method=method,
                                 data=None if body is None else json.dumps(body).encode())
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


class Browser:
    """A person in a browser: signs in, keeps the cookies, and sends the anti-forgery header
    on requests that change something (as the console's script does)."""

    def __init__(self, base: str):
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))
        self.csrf: str | None = None

    def cookie(self, name: str) -> http.cookiejar.Cookie | None:
        return next((c for c in self.jar if c.name == name), None)

    def login(self, user: str, password: str) -> tuple[int, Any]:
        status, body = self.request("/auth/login", "POST",
                                    {"username": user, "password": password}, csrf=False)
        if status == 200:
            self.csrf = body["csrf"]
        return status, body

    def request(self, path: str, method: str = "GET", body: dict[str, Any] | None = None, *,
                csrf: bool = True, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        req = urllib.request.Request(f"{self.base}{path}", method=method,
                                     data=None if body is None else json.dumps(body).encode())
        req.add_header("Content-Type", "application/json")
        if csrf and self.csrf and method not in ("GET", "HEAD"):
            req.add_header("X-CSRF-Token", self.csrf)
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with self.opener.open(req, timeout=10) as resp:
                raw = resp.read()
                return resp.status, json.loads(raw) if raw[:1] in (b"{", b"[") else raw
        except urllib.error.HTTPError as err:
            raw = err.read()
            return err.code, json.loads(raw) if raw[:1] in (b"{", b"[") else raw
