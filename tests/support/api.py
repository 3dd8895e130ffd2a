"""The central's HTTP API on a real uvicorn server on loopback, and a client for it."""

from __future__ import annotations

import contextlib
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

from common.net import free_port
from tests.support.waiting import wait_until

TOKEN = "s3cret-token-for-tests"


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
