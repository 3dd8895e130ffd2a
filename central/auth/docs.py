"""``/docs`` from files on this machine, behind sign-in; ``/openapi.json`` behind it too.

FastAPI's docs page loads Swagger UI from a public CDN: blank on a site without internet,
and a third party's script running with an operator's session. Here the page, its script and
its stylesheet come from the ``swagger-ui-bundle-v2`` package (Swagger UI 5, which reads
OpenAPI 3.1), are served only to a signed-in caller, and run under a Content-Security-Policy
that allows nothing but this origin. The page's own script adds the anti-forgery header to
every "Try it out" request. ``/login`` is a plain sign-in form for the docs (the operator
console of the next issue brings its own).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Response
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse

from central.auth.guard import (
    CSRF_COOKIE,
    CSRF_HEADER,
    ROLE_KEY,
    SESSION_COOKIE,
    maybe_caller,
    needs,
)
from central.auth.model import Principal, Role

CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
       "form-action 'self'")
ASSETS = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css",
          "favicon-32x32.png": "image/png"}

DOCS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>perimeter central API</title>
<link rel="stylesheet" href="/docs/assets/swagger-ui.css">
<link rel="icon" href="/docs/assets/favicon-32x32.png"></head>
<body><div id="swagger-ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script src="/docs/init.js"></script></body></html>
"""
DOCS_INIT = f"""
function csrf() {{
  const c = document.cookie.split("; ").find((p) => p.startsWith("{CSRF_COOKIE}="));
  return c ? decodeURIComponent(c.slice({len(CSRF_COOKIE) + 1})) : "";
}}
window.ui = SwaggerUIBundle({{
  url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis], layout: "BaseLayout",
  requestInterceptor: (req) => {{ const t = csrf(); if (t) req.headers["{CSRF_HEADER}"] = t;
                                  return req; }},
}});
"""
LOGIN_PAGE = """<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8"><title>perimeter: 登录 / sign in</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body><h1>perimeter</h1>
<form id="login"><p><label>用户名 / user <input name="username" autocomplete="username"
 required></label></p><p><label>密码 / password <input name="password" type="password"
 autocomplete="current-password" required></label></p>
<p><button type="submit">登录 / sign in</button></p><p id="error" role="alert"></p></form>
<script src="/login.js"></script></body></html>
"""
LOGIN_JS = """
document.getElementById("login").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const form = new FormData(ev.target);
  const resp = await fetch("/auth/login", {method: "POST",
    headers: {"Content-Type": "application/json"},
    body: JSON.stringify({username: form.get("username"), password: form.get("password")})});
  if (resp.ok) {
    const next = new URLSearchParams(location.search).get("next") || "/docs";
    location.assign(next.startsWith("/") && !next.startsWith("//") ? next : "/docs");
  } else {
    document.getElementById("error").textContent = (await resp.json()).detail;
  }
});
"""


def swagger_dir() -> Path:
    import swagger_ui_bundle

    return Path(swagger_ui_bundle.swagger_ui_path)


def openapi_with_security(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document, with both ways to authenticate and each route's role."""
    if app.openapi_schema is None:
        spec = app.openapi()
        spec.setdefault("components", {})["securitySchemes"] = {
            "apiKey": {"type": "http", "scheme": "bearer",
                       "description": "an API key (perimeter users key add)"},
            "session": {"type": "apiKey", "in": "cookie", "name": SESSION_COOKIE,
                        "description": "after POST /auth/login; requests that change "
                                       f"something also send {CSRF_HEADER}"}}
        for ops in spec.get("paths", {}).values():
            for op in ops.values():
                if isinstance(op, dict) and ROLE_KEY in op:
                    op["security"] = [{"apiKey": []}, {"session": []}]
        app.openapi_schema = spec
    return app.openapi_schema


def add_docs_routes(app: FastAPI) -> None:
    viewer = needs(Role.VIEWER)
    folder = swagger_dir()

    @app.get("/openapi.json", include_in_schema=False, openapi_extra=viewer)
    def openapi() -> dict[str, Any]:
        return openapi_with_security(app)

    @app.get("/docs", include_in_schema=False, response_model=None)
    def docs(who: Principal | None = Depends(maybe_caller)) -> Response:  # noqa: B008
        if who is None:
            return RedirectResponse("/login?next=/docs", status_code=303)
        return HTMLResponse(DOCS_PAGE, headers={"Content-Security-Policy": CSP})

    @app.get("/docs/init.js", include_in_schema=False, openapi_extra=viewer)
    def docs_init() -> Response:
        return Response(DOCS_INIT, media_type="text/javascript")

    @app.get("/docs/assets/{name}", include_in_schema=False, openapi_extra=viewer)
    def docs_asset(name: str) -> FileResponse:
        if name not in ASSETS:
            raise HTTPException(404, "no such file")
        return FileResponse(folder / name, media_type=ASSETS[name])

    @app.get("/login", include_in_schema=False)
    def login_page() -> HTMLResponse:
        return HTMLResponse(LOGIN_PAGE, headers={"Content-Security-Policy": CSP})

    @app.get("/login.js", include_in_schema=False)
    def login_js() -> Response:
        return Response(LOGIN_JS, media_type="text/javascript")
