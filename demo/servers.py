"""``perimeter demo``'s in-process servers: the governance centre's stand-in and the API.

``WebhookReceiver`` takes the webhook notifications the central sends, on a free loopback
port, and checks every request's HMAC signature (``central.notify.request``: timestamp,
idempotency key and body) with the secret generated for the run, the way a governance centre
should: 200 when it holds, 401 otherwise. ``ApiServer`` runs the central's
HTTP API (uvicorn) in a thread on the port asked for.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from demo.procs import HOST, START_TIMEOUT_S, DemoError

WEBHOOK_PATH = "/perimeter/alarms"


# -- webhook receiver (the governance centre's stand-in) ---------------------------------------


@dataclass
class Delivery:
    """One POST the receiver answered: its idempotency key, whether the signature held, and
    whether that key came before."""

    key: str
    verified: bool
    repeat: bool
    payload: dict[str, Any]


class WebhookReceiver:
    """Accepts signed webhook POSTs on a free loopback port; 401 for a bad signature."""

    def __init__(self, secret: bytes, on_delivery: Callable[[Delivery], None] | None = None):
        from central.notify.request import (
            IDEMPOTENCY_HEADER,
            SIGNATURE_HEADER,
            TIMESTAMP_HEADER,
            verify_signature,
        )

        self.secret = secret
        self.on_delivery = on_delivery
        self.verified = 0
        self.rejected = 0
        self.keys: set[str] = set()
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length > 0 else b""
                key = self.headers.get(IDEMPOTENCY_HEADER, "")
                ok = (self.path == WEBHOOK_PATH and verify_signature(
                    receiver.secret, self.headers.get(TIMESTAMP_HEADER, ""), key, body,
                    self.headers.get(SIGNATURE_HEADER, "")))
                try:
                    payload = json.loads(body) if ok else {}
                except ValueError:
                    payload = {}
                with receiver._lock:
                    repeat = ok and key in receiver.keys
                    if ok:
                        receiver.verified += 1
                        receiver.keys.add(key)
                    else:
                        receiver.rejected += 1
                answer = b'{"ok":true}' if ok else b'{"error":"bad signature or path"}'
                self.send_response(200 if ok else 401)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)
                if receiver.on_delivery is not None:
                    receiver.on_delivery(Delivery(key, bool(ok), repeat, payload))

            def log_message(self, format: str, *args: Any) -> None:
                pass  # one line per delivery is printed by the demo instead

        self.server = ThreadingHTTPServer((HOST, 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.url = f"http://{HOST}:{self.port}{WEBHOOK_PATH}"
        self._thread = threading.Thread(target=self.server.serve_forever,
                                        name="demo-webhook", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)


# -- the API in a thread -----------------------------------------------------------------------


class ApiServer:
    """uvicorn on a socket bound here (so a busy port is a clear error), in a thread."""

    def __init__(self, app: Any, host: str, port: int):
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind((host, port))
        except OSError as err:
            self.sock.close()
            raise DemoError(f"cannot listen on {host}:{port} for the API: {err.strerror} "
                            "(choose another port with --api-port)") from None
        self.port = int(self.sock.getsockname()[1])
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                        name="demo-api", daemon=True)

    def start(self, timeout_s: float = START_TIMEOUT_S) -> None:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise DemoError(f"the API did not start on port {self.port}")
            time.sleep(0.05)  # poll interval

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(10)
        self.sock.close()

