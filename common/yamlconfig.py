"""YAML configs whose every error names the file, the line and the field.

A safety officer editing a fence at the site must learn from one line which file, which line
and which field is wrong (``config/site.yaml:14: cameras[0].zones[1].polygon: ...``), and a
config that is wrong must never half-start. YAML node marks give each value's line; pydantic's
error locations are mapped back onto them. Used by the edge and the central configs alike.

A config is read with bounds, so a hostile or broken file fails fast with one line instead of
taking the box down ("billion laughs": a few lines of nested YAML aliases that expand to a
billion values): at most ``MAX_CONFIG_BYTES`` of text, ``MAX_ALIASES`` aliases and
``MAX_VALUES`` values once every alias is expanded (counted on the node graph, each shared
node once, so the count itself is cheap), and no alias that contains itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Generic, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

Loc = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)

MAX_CONFIG_BYTES = 2 * 1024 * 1024  # a large site's config is tens of kilobytes
MAX_ALIASES = 10_000
MAX_VALUES = 250_000  # scalars, lists and mappings after expanding aliases
# libyaml's parser when PyYAML was built with it (Debian's and the wheels are): several times
# faster on a large file; the same nodes, marks and safe constructor.
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class Strict(BaseModel):
    """Config sections: unknown keys are errors, values never change after loading."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ConfigError(ValueError):
    """One or more problems, each ``file:line: field: message``."""

    def __init__(self, lines: list[str]):
        super().__init__("\n".join(lines))
        self.lines = lines


def fmt_loc(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


class _Bounds(Exception):
    """A config over one of the reader's bounds: its line and what was exceeded."""

    def __init__(self, line: int, what: str, loc: Loc = ()):
        super().__init__(what)
        self.line, self.what, self.loc = line, what, loc


def _check_expansion(root: yaml.Node) -> None:
    """Refuse a document with more than ``MAX_ALIASES`` aliases, or holding more than
    ``MAX_VALUES`` values once aliases are expanded, or a value that contains itself. Each
    node is sized once (memoised), so a billion-laughs file costs a few hundred steps, not a
    billion; the error names the first value found too big."""
    sizes: dict[int, int] = {}
    open_: set[int] = set()
    aliases = 0

    def size(node: yaml.Node, path: Loc, line: int) -> int:
        """``line``: where the node is used (an alias's container), for the error."""
        nonlocal aliases
        key = id(node)
        if key in sizes:  # met before: this is an alias of it
            aliases += 1
            if aliases > MAX_ALIASES:
                raise _Bounds(line, f"more than {MAX_ALIASES} YAML aliases", path)
            return sizes[key]
        if key in open_:
            raise _Bounds(node.start_mark.line + 1, "a YAML alias refers to the value that "
                                                    "contains it", path)
        open_.add(key)
        n = 1
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                n += 1 + size(v, (*path, str(k.value)), k.start_mark.line + 1)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                n += size(item, (*path, i), node.start_mark.line + 1)
        if n > MAX_VALUES:
            raise _Bounds(node.start_mark.line + 1, f"expands to more than {MAX_VALUES} "
                                                    "values (YAML aliases nested in aliases?)",
                          path)
        open_.discard(key)
        sizes[key] = n
        return n

    size(root, (), root.start_mark.line + 1)


def _compose(text: str) -> yaml.Node | None:
    loader = _Loader(text)
    try:
        node: yaml.Node | None = loader.get_single_node()
    finally:
        loader.dispose()
    if node is not None:
        _check_expansion(node)
    return node


def _construct(node: yaml.Node) -> Any:
    """Python values from the node graph already composed (and bounded): parsed once."""
    loader = _Loader("")
    try:
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _line_map(node: yaml.Node, path: Loc, out: dict[Loc, int], file: str,
              seen_nodes: set[int] | None = None) -> None:
    """Each location's line. An alias is mapped where its anchor was first met (its values
    live on those lines), never walked again: that walk is exponential in nested aliases."""
    seen_nodes = set() if seen_nodes is None else seen_nodes
    out[path] = node.start_mark.line + 1
    if id(node) in seen_nodes:
        return
    seen_nodes.add(id(node))
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            k = str(key.value)
            if k in seen:
                raise ConfigError([f"{file}:{key.start_mark.line + 1}: {fmt_loc((*path, k))}: "
                                   f"duplicate key"])
            seen.add(k)
            out[(*path, k)] = key.start_mark.line + 1
            _line_map(value, (*path, k), out, file, seen_nodes)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_map(item, (*path, i), out, file, seen_nodes)


class Loaded(Generic[M]):
    """A validated config plus what is needed to point later errors at their line."""

    def __init__(self, config: M, path: Path, lines: dict[Loc, int]):
        self.config = config
        self.path = path
        self.lines = lines

    def where(self, loc: Loc) -> str:
        """``file:line: field`` for a config location (the nearest enclosing line)."""
        for n in range(len(loc), -1, -1):
            if loc[:n] in self.lines:
                return f"{self.path}:{self.lines[loc[:n]]}: {fmt_loc(loc)}"
        return f"{self.path}: {fmt_loc(loc)}"

    def resolve_path(self, value: str) -> Path:
        """A path from the config: as given (relative to the working directory), else
        relative to the config file's folder."""
        p = Path(value).expanduser()
        if p.is_absolute() or p.exists():
            return p
        beside = self.path.parent / p
        return beside if beside.exists() else p

    def output_path(self, value: str) -> Path:
        """A path the program writes (an outbox, a snapshot folder): relative ones are
        beside the config file; it need not exist yet."""
        p = Path(value).expanduser()
        return p if p.is_absolute() else self.path.parent / p


def load_yaml_model(path: Path, model: type[M]) -> Loaded[M]:
    """Parse and validate; raises ConfigError with one ``file:line: field: message`` each."""
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read config: {exc.strerror}"]) from exc
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError([f"{path}: config is larger than {MAX_CONFIG_BYTES // 2**20} MiB"])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: config is not UTF-8 text (byte {exc.start})"]) from None
    try:
        node = _compose(text)
        data: Any = _construct(node) if node is not None else None
    except _Bounds as exc:
        raise ConfigError([f"{path}:{exc.line}: {fmt_loc(exc.loc)}: {exc.what}"]) from None
    except RecursionError:
        raise ConfigError([f"{path}: (top level): values nested too deeply"]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{path}{line}: invalid YAML: {problem}"]) from exc
    lines: dict[Loc, int] = {}
    if node is not None:
        _line_map(node, (), lines, str(path))
    if not isinstance(data, dict):
        raise ConfigError([f"{path}:1: (top level): expected a mapping of settings"])
    try:
        cfg = model.model_validate(data)
    except ValidationError as exc:
        loaded = Loaded(model.model_construct(), path, lines)
        errors = []
        for err in exc.errors():
            loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p))
            msg = err["msg"].removeprefix("Value error, ")
            errors.append(f"{loaded.where(loc)}: {msg}")
        raise ConfigError(errors) from None
    return Loaded(cfg, path, lines)
