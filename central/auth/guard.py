"""Every request is identified before its body is read, then held to its route's role.

FastAPI reads and validates a request's body before it resolves a route's dependencies, so a
token checked in a dependency lets an anonymous client make the server parse whatever it
sends (and answer 422, which tells it about the route). ``guarded_route`` puts the check in
front instead: the route class identifies the caller from the headers alone (an API key in
``Authorization: Bearer``, or the session cookie plus, for a request that changes anything,
the ``X-CSRF-Token`` header), answers 401/403/429 on its own, and only then lets FastAPI read
the body. Each route states the role it needs with ``needs(Role.X)`` (also written into
the OpenAPI document as ``x-required-role``); a route without one is public.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import HTTPException, Request, Response
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool

from central.auth.model import Principal, Role
from central.auth.store import Accounts
from central.auth.throttle import Throttle

ROLE_KEY = "x-required-role"
SESSION_COOKIE = "perimeter_session"
CSRF_COOKIE = "perimeter_csrf"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


def needs(role: Role) -> dict[str, Any]:
    """``openapi_extra`` for a route that needs ``role`` (or a higher one)."""
    return {ROLE_KEY: role.value}


def unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


class Guard:
    """Who is calling: an API key, a session, or nobody; and failed attempts throttled."""

    def __init__(self, accounts: Accounts, throttle: Throttle | None = None, *,
                 secure_cookies: bool | None = None):
        self.accounts = accounts
        self.throttle = throttle or Throttle(accounts.r, accounts.ns)
        # None: Secure when the request came over HTTPS (as seen by uvicorn, which honours
        # X-Forwarded-Proto only from --forwarded-allow-ips).
        self.secure_cookies = secure_cookies

    @staticmethod
    def address(request: Request) -> str:
        return request.client.host if request.client is not None else "unknown"

    def identify(self, request: Request) -> Principal | None:
        """The caller, or None for an anonymous request; raises 401 for a bad key, 429 for a
        blocked address."""
        header = request.headers.get("authorization")
        if header is not None:
            return self._bearer(request, header)
        cookie = request.cookies.get(SESSION_COOKIE)
        if not cookie:
            return None
        return self.accounts.session(cookie)  # None: expired or signed out

    @staticmethod
    def forged(request: Request, principal: Principal) -> bool:
        """A session request that changes something without the session's anti-forgery
        token: what a page on another site makes a signed-in browser send."""
        if principal.kind != "user" or request.method in SAFE_METHODS:
            return False
        sent = request.headers.get(CSRF_HEADER, "")
        return not principal.csrf or not hmac.compare_digest(sent.encode(),
                                                             principal.csrf.encode())

    def _bearer(self, request: Request, header: str) -> Principal:
        address = self.address(request)
        blocked = self.throttle.blocked(address)
        if blocked is not None:
            raise HTTPException(429, "too many failed attempts from this address",
                                headers={"Retry-After": str(blocked.retry_after_s)})
        scheme, _, secret = header.partition(" ")
        principal = None
        if scheme.lower() == "bearer" and secret.strip():
            principal = self.accounts.check_key(secret.strip())
        if principal is None:
            self.throttle.failed(address, None, "unknown or revoked API key")
            raise unauthorized("missing or wrong API key")
        return principal


def guarded_route(guard: Guard) -> type[APIRoute]:
    """A route class that identifies the caller and checks the route's role first."""

    class GuardedRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()
            raw = (self.openapi_extra or {}).get(ROLE_KEY)
            need = Role(raw) if raw is not None else None

            async def guarded(request: Request) -> Response:
                principal = await run_in_threadpool(guard.identify, request)
                if principal is not None and guard.forged(request, principal):
                    if need is not None:
                        raise HTTPException(403, "missing or wrong X-CSRF-Token header (a "
                                                 "signed-in request that changes something "
                                                 "must carry it)")
                    principal = None  # a public route: served as to anyone
                if need is not None:
                    if principal is None:
                        raise unauthorized("sign in, or send an API key as "
                                           "Authorization: Bearer <key>")
                    if not principal.role.at_least(need):
                        raise HTTPException(403, f"needs the {need.value} role "
                                                 f"({principal.actor} is a "
                                                 f"{principal.role.value})")
                request.state.principal = principal
                return await handler(request)

            return guarded

    return GuardedRoute


def caller(request: Request) -> Principal:
    """Dependency: the identified caller of a route that needs a role."""
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is None:  # only on a public route, which should use maybe_caller
        raise unauthorized("sign in first")
    return principal


def maybe_caller(request: Request) -> Principal | None:
    """Dependency: the caller of a public route, if they identified themselves."""
    principal: Principal | None = getattr(request.state, "principal", None)
    return principal
