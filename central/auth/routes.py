"""Sign-in for people (session cookie + anti-forgery token) and account management for admins.

A browser signs in with ``POST /auth/login`` (JSON only, so a page on another site cannot
post it: a cross-site form can only send form encodings, and a cross-site script sending JSON
needs a CORS permission this API never grants). It gets two cookies, both
``SameSite=Strict``: ``perimeter_session`` (HttpOnly, the session) and ``perimeter_csrf``
(readable by the page's own script), whose value every request that changes something must
echo in the ``X-CSRF-Token`` header. Machines do not sign in: they hold API keys.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from central.auth.guard import CSRF_COOKIE, SESSION_COOKIE, Guard, caller, needs
from central.auth.model import (
    MAX_PASSWORD,
    AccountError,
    Conflict,
    NotFound,
    Principal,
    Role,
)


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Login(Body):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=MAX_PASSWORD)


class PasswordChange(Body):
    current: str = Field(min_length=1, max_length=MAX_PASSWORD, description="the password now")
    new: str = Field(min_length=1, max_length=MAX_PASSWORD, description="the new password")


class NewUser(Body):
    name: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=MAX_PASSWORD)
    role: Role
    sites: list[str] | None = Field(None, max_length=1000,
                                    description="limit a viewer or operator to these sites")


class UserChange(Body):
    role: Role | None = None
    sites: list[str] | None = Field(None, max_length=1000)
    disabled: bool | None = None


class PasswordReset(Body):
    password: str = Field(min_length=1, max_length=MAX_PASSWORD)


class NewKey(Body):
    name: str = Field(min_length=1, max_length=64)
    role: Role
    sites: list[str] | None = Field(None, max_length=1000)


Caller = Annotated[Principal, Depends(caller)]


def refused(exc: AccountError) -> HTTPException:
    code = 404 if isinstance(exc, NotFound) else 409 if isinstance(exc, Conflict) else 422
    return HTTPException(code, str(exc))


def add_session_routes(app: FastAPI, guard: Guard) -> None:
    accounts = guard.accounts

    @app.post("/auth/login", tags=["auth"])
    def login(body: Login, request: Request, response: Response) -> dict[str, Any]:
        """Sign in; sets the session and anti-forgery cookies. Throttled per address and
        account; every failure is logged with the source address."""
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":  # a cross-site form or a typeless blob
            raise HTTPException(415, "send the sign-in as application/json")
        address = guard.address(request)
        blocked = guard.throttle.blocked(address, body.username)
        if blocked is not None:
            raise HTTPException(429, "too many failed sign-ins; try again later",
                                headers={"Retry-After": str(blocked.retry_after_s)})
        user = accounts.check_login(body.username, body.password)
        if user is None:
            guard.throttle.failed(address, body.username, "wrong user name or password, or "
                                                          "account disabled")
            raise HTTPException(401, "wrong user name or password")
        guard.throttle.succeeded(address, user.name)
        token, csrf = accounts.open_session(user)
        secure = guard.secure_cookies if guard.secure_cookies is not None \
            else request.url.scheme == "https"
        max_age = int(accounts.session_max_s)
        response.set_cookie(SESSION_COOKIE, token, max_age=max_age, httponly=True,
                            samesite="strict", secure=secure, path="/")
        response.set_cookie(CSRF_COOKIE, csrf, max_age=max_age, httponly=False,
                            samesite="strict", secure=secure, path="/")
        accounts.audit("signed_in", user.name, user.name, address=address)
        return {**user.public(), "csrf": csrf}

    @app.post("/auth/logout", tags=["auth"], openapi_extra=needs(Role.VIEWER))
    def logout(who: Caller, response: Response) -> dict[str, str]:
        """End this session (an API key has none: revoke it instead)."""
        if who.session is not None:
            accounts.close_session(who.session)
        response.delete_cookie(SESSION_COOKIE, path="/")
        response.delete_cookie(CSRF_COOKIE, path="/")
        return {"status": "signed out"}

    @app.get("/auth/me", tags=["auth"], openapi_extra=needs(Role.VIEWER))
    def me(who: Caller) -> dict[str, Any]:
        """Who this request is from, and (for a session) its anti-forgery token."""
        return {**who.public(), "csrf": who.csrf}

    @app.put("/auth/password", tags=["auth"], openapi_extra=needs(Role.VIEWER))
    def change_password(body: PasswordChange, who: Caller, request: Request) -> dict[str, str]:
        """Change one's own password; every session of the account ends (sign in again)."""
        if who.kind != "user":
            raise HTTPException(403, "an API key has no password")
        if accounts.check_login(who.name, body.current) is None:
            guard.throttle.failed(guard.address(request), who.name, "wrong current password")
            raise HTTPException(403, "the current password is wrong")
        try:
            accounts.set_password(who.name, body.new, by=who.actor)
        except AccountError as exc:
            raise refused(exc) from None
        return {"status": "password changed; sign in again"}


def add_admin_routes(app: FastAPI, guard: Guard) -> None:
    accounts = guard.accounts
    admin = needs(Role.ADMIN)

    @app.get("/users", tags=["accounts"], openapi_extra=admin)
    def list_users() -> list[dict[str, Any]]:
        return [u.public() for u in accounts.users()]

    @app.post("/users", tags=["accounts"], openapi_extra=admin, status_code=201)
    def add_user(body: NewUser, who: Caller) -> dict[str, Any]:
        try:
            return accounts.add_user(body.name, body.password, body.role, body.sites,
                                     by=who.actor).public()
        except AccountError as exc:
            raise refused(exc) from None

    @app.patch("/users/{name}", tags=["accounts"], openapi_extra=admin)
    def change_user(name: str, body: UserChange, who: Caller) -> dict[str, Any]:
        """Change a role (and site limits) or disable/enable; the account's sessions end."""
        try:
            user = accounts.user(name)
            if body.role is not None or body.sites is not None:
                user = accounts.set_role(name, body.role or user.role, body.sites,
                                         by=who.actor)
            if body.disabled is not None:
                user = accounts.set_disabled(name, body.disabled, by=who.actor)
            return user.public()
        except AccountError as exc:
            raise refused(exc) from None

    @app.put("/users/{name}/password", tags=["accounts"], openapi_extra=admin)
    def reset_password(name: str, body: PasswordReset, who: Caller) -> dict[str, str]:
        try:
            accounts.set_password(name, body.password, by=who.actor)
        except AccountError as exc:
            raise refused(exc) from None
        return {"status": f"password of {name} set; their sessions ended"}

    @app.get("/keys", tags=["accounts"], openapi_extra=admin)
    def list_keys() -> list[dict[str, Any]]:
        return [k.public() for k in accounts.api_keys()]

    @app.post("/keys", tags=["accounts"], openapi_extra=admin, status_code=201)
    def add_key(body: NewKey, who: Caller) -> dict[str, Any]:
        """A new API key; its secret is in this answer only (it is stored hashed)."""
        try:
            key, secret = accounts.add_key(body.name, body.role, body.sites, by=who.actor)
        except AccountError as exc:
            raise refused(exc) from None
        return {**key.public(), "key": secret}

    @app.delete("/keys/{name}", tags=["accounts"], openapi_extra=admin)
    def revoke_key(name: str, who: Caller) -> dict[str, Any]:
        try:
            return accounts.revoke_key(name, by=who.actor).public()
        except AccountError as exc:
            raise refused(exc) from None
