"""The layout's promises, read from the code itself with ``ast`` (not grep):

* the edge, the central and the speaker agent never import each other; the wire contract and
  the shared plumbing import none of them; only the front door (``cli``) and the tools built
  on everything (``demo``, ``sim``) may reach across;
* ``zones`` is the pure core: no camera, broker, database, network or process library;
* one place makes MQTT clients (``wire/client.py``) and one module spells topics
  (``wire/topics.py``) in the product code (tests and benchmarks may play raw peers).
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.services import REPO_ROOT

PRODUCT = ["cli", "common", "wire", "zones", "edge", "central", "speaker", "sim", "demo",
           "models"]
# package -> the project packages it must never import
FORBIDDEN = {
    "edge": {"central", "speaker", "demo", "cli", "sim"},
    "central": {"edge", "speaker", "demo", "cli", "sim"},
    "speaker": {"edge", "central", "demo", "cli", "sim"},
    "wire": {"edge", "central", "speaker", "demo", "cli", "sim", "models"},
    "common": {"edge", "central", "speaker", "demo", "cli", "sim", "models", "wire", "zones"},
    "zones": {"edge", "central", "speaker", "demo", "cli", "sim", "models", "wire", "common"},
    "models": {"edge", "central", "speaker", "demo", "cli", "sim", "wire", "zones"},
    "sim": {"central", "speaker", "demo", "cli"},
}
# The pure core may use these besides the standard library's non-I/O modules.
CORE_THIRD_PARTY = {"numpy", "shapely", "pydantic", "scipy"}
IO_STDLIB = {"socket", "ssl", "sqlite3", "subprocess", "http", "urllib", "asyncio", "select",
             "selectors", "smtplib", "ftplib", "shutil", "multiprocessing", "wave"}
CLIENT = "paho.mqtt.client.Client"
TOPIC_LITERAL = re.compile(r"perimeter/v\d|\$share/|/(alarm|edge|camera|radar|speaker)/|"
                           r"/(status|command|availability|tracks)$")
TOPIC_CALLS = {"publish", "subscribe", "will_set", "message_callback_add", "unsubscribe"}


@dataclass(frozen=True)
class Module:
    path: Path
    package: str
    tree: ast.Module

    @property
    def rel(self) -> str:
        return self.path.relative_to(REPO_ROOT).as_posix()


def product_modules() -> list[Module]:
    out = []
    for pkg in PRODUCT:
        for path in sorted((REPO_ROOT / pkg).rglob("*.py")):
            out.append(Module(path, pkg, ast.parse(path.read_text(encoding="utf-8"))))
    return out


MODULES = product_modules()


def imports(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """Every imported module (absolute names), with its line, lazy imports included."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.lineno, node.module
            for alias in node.names:  # ``from edge import onvif`` imports edge.onvif
                yield node.lineno, f"{node.module}.{alias.name}"


def test_the_tree_is_read() -> None:
    packages = {m.package for m in MODULES}
    assert packages == set(PRODUCT) and len(MODULES) > 100


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_wings_do_not_import_each_other(package: str) -> None:
    bad = [f"{m.rel}:{line}: imports {name}"
           for m in MODULES if m.package == package
           for line, name in imports(m.tree)
           if name.split(".")[0] in FORBIDDEN[package]]
    assert bad == []


def test_the_core_imports_no_io_library() -> None:
    bad = []
    for m in MODULES:
        if m.package != "zones":
            continue
        for line, name in imports(m.tree):
            top = name.split(".")[0]
            if top == "__future__" or top == "zones":
                continue
            stdlib = top in sys.stdlib_module_names
            if (stdlib and top in IO_STDLIB) or (not stdlib and top not in CORE_THIRD_PARTY):
                bad.append(f"{m.rel}:{line}: imports {name}")
    assert bad == []


def _aliases(tree: ast.AST) -> dict[str, str]:
    """Local name -> the module or object it stands for, from the module's imports."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.asname:
                    names[a.asname] = a.name
                else:
                    names[a.name.split(".")[0]] = a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for a in node.names:
                names[a.asname or a.name] = f"{node.module}.{a.name}"
    return names


def _dotted(node: ast.expr, names: dict[str, str]) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return ".".join([names.get(node.id, node.id), *reversed(parts)])


def client_constructions(m: Module) -> list[str]:
    names = _aliases(m.tree)
    return [f"{m.rel}:{node.lineno}" for node in ast.walk(m.tree)
            if isinstance(node, ast.Call) and _dotted(node.func, names) == CLIENT]


def test_one_place_makes_mqtt_clients() -> None:
    made = {m.rel: client_constructions(m) for m in MODULES}
    assert [where for rel, found in made.items() if rel != "wire/client.py"
            for where in found] == []
    assert len(made["wire/client.py"]) == 1


def _strings(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """String literals and f-string parts, docstrings and bare string statements left out."""
    skip = {id(n.value) for n in ast.walk(tree)
            if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            yield node.lineno, node.value


def topic_spellings(m: Module) -> list[str]:
    out = [f"{m.rel}:{line}: {text[:60]!r}" for line, text in _strings(m.tree)
           if TOPIC_LITERAL.search(text)]
    for node in ast.walk(m.tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in TOPIC_CALLS and node.args
                and isinstance(node.args[0], ast.Constant | ast.JoinedStr)):
            out.append(f"{m.rel}:{node.lineno}: {node.func.attr}() with a literal topic")
    return out


def test_one_module_spells_topics() -> None:
    spelled = {m.rel: topic_spellings(m) for m in MODULES}
    assert [s for rel, found in spelled.items() if rel != "wire/topics.py" for s in found] == []
    assert len(spelled["wire/topics.py"]) >= 7  # alarm, edge, camera, radar, speaker x3


def test_the_checks_see_what_they_look_for() -> None:
    """The detectors themselves, on code that breaks each rule."""
    bad = ast.parse("import paho.mqtt.client as mqtt\n"
                    "from paho.mqtt.client import Client\n"
                    "a = mqtt.Client(1)\nb = Client(2)\n"
                    "t = f'perimeter/v1/{site}/alarm/{cam}'\n"
                    "c.publish(f'{p}/{s}/speaker/{x}/command', b'')\n"
                    "from central.runtime import Central\n")
    m = Module(REPO_ROOT / "edge" / "bad.py", "edge", bad)
    assert len(client_constructions(m)) == 2
    found = topic_spellings(m)
    assert {f.split(":")[1] for f in found} == {"5", "6"}
    assert any("publish() with a literal topic" in f for f in found)
    assert [n for _, n in imports(bad) if n.startswith("central")] == [
        "central.runtime", "central.runtime.Central"]
