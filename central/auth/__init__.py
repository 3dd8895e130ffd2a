"""People and machines at the central: accounts with roles, API keys, sessions, sign-in.

``secured_app`` makes the FastAPI application every central route is added to: each request
identified before its body is read (``guard``), sign-in and account routes (``routes``),
the docs from local files behind sign-in (``docs``), and headers that keep browsers from
sniffing, framing or caching answers. Accounts live in Redis (``store``) and are managed by
``perimeter users`` or, for an admin, through the API.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from central.auth.docs import add_docs_routes
from central.auth.guard import Guard, caller, guarded_route, maybe_caller, needs
from central.auth.model import AccountError, Principal, Role
from central.auth.routes import add_admin_routes, add_session_routes
from central.auth.store import Accounts
from central.auth.throttle import Throttle

__all__ = ["AccountError", "Accounts", "Guard", "Principal", "Role", "Throttle", "caller",
           "maybe_caller", "needs", "secured_app"]

HEADERS = [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
           (b"referrer-policy", b"no-referrer")]


class SecurityHeaders:
    """Headers on every answer: no MIME sniffing, no framing, no referrer; and no caching
    of anything but the docs' static files (an incident list must not sit in a disk cache)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope.get("path", "").startswith("/docs/assets/")

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += HEADERS
                if not static:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


def secured_app(guard: Guard, **kwargs: Any) -> FastAPI:
    """A FastAPI app whose routes are all guarded, with sign-in, accounts and docs."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None, **kwargs)
    app.router.route_class = guarded_route(guard)
    app.add_middleware(SecurityHeaders)
    add_session_routes(app, guard)
    add_admin_routes(app, guard)
    add_docs_routes(app)
    return app
