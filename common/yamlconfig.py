"""YAML configs whose every error names the file, the line and the field.

A safety officer editing a fence at the site must learn from one line which file, which line
and which field is wrong (``config/site.yaml:14: cameras[0].zones[1].polygon: ...``), and a
config that is wrong must never half-start. YAML node marks give each value's line; pydantic's
error locations are mapped back onto them. Used by the edge and the central configs alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Generic, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

Loc = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)


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


def _line_map(node: yaml.Node, path: Loc, out: dict[Loc, int], file: str) -> None:
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            k = str(key.value)
            if k in seen:
                raise ConfigError([f"{file}:{key.start_mark.line + 1}: {fmt_loc((*path, k))}: "
                                   f"duplicate key"])
            seen.add(k)
            out[(*path, k)] = key.start_mark.line + 1
            _line_map(value, (*path, k), out, file)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_map(item, (*path, i), out, file)


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
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read config: {exc.strerror}"]) from exc
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data: Any = yaml.safe_load(text)
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
