"""``perimeter config check | schema``: validate a site's config, or export the JSON Schema
an editor checks configs against while they are written.

``schema`` prints the edge config's schema (``edge``, the default) or the central's
(``central``) as JSON Schema 2020-12, generated from the same pydantic models that load the
configs, so the two cannot drift: unknown keys, types, enumerations and bounds are all there
(a few rules span several fields, such as a polygon being simple, and only ``config check``
can test them). In VS Code with the YAML extension, a first line ``# yaml-language-server:
$schema=edge.schema.json`` makes the editor underline a mistake as it is typed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    c = sub.add_parser("config", help="check a config file, or export the configs' JSON Schema")
    csub = c.add_subparsers(dest="config_command", required=True)
    chk = csub.add_parser("check", help="validate an edge (site) config file")
    chk.add_argument("file", type=Path)
    sch = csub.add_parser("schema", help="print the JSON Schema of the edge or central config")
    sch.add_argument("which", nargs="?", choices=("edge", "central"), default="edge",
                     help="edge: a site's edge config (default); central: the aggregator's")
    sch.add_argument("-o", "--output", type=Path, help="write to this file instead of stdout")


def schema(which: str) -> dict[str, Any]:
    """The JSON Schema of one config file, with its dialect and a title."""
    if which == "central":
        from central.config import CentralConfig

        out = CentralConfig.model_json_schema()
        title = "perimeter central config"
    else:
        from edge.config import PerimeterConfig

        out = PerimeterConfig.model_json_schema()
        title = "perimeter edge (site) config"
    return {"$schema": SCHEMA_DIALECT, **out, "title": title}


def run(args: argparse.Namespace) -> int:
    if args.config_command == "check":
        from cli.edge import cmd_config_check

        return cmd_config_check(args)
    text = json.dumps(schema(args.which), indent=2, ensure_ascii=False) + "\n"
    if args.output is None:
        sys.stdout.write(text)
        return 0
    try:
        args.output.write_text(text, encoding="utf-8")
    except OSError as exc:
        print(f"error: cannot write {args.output}: {exc.strerror}", file=sys.stderr)
        return 2
    print(f"{args.which} config schema written to {args.output}")
    return 0
