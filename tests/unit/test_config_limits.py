"""Hostile or broken configs fail fast, with one line and exit 2, never a traceback: YAML
alias bombs, huge files, deep nesting, huge polygons, NaN and infinity; and the JSON Schema
that ``perimeter config schema`` exports accepts every shipped config."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest

from cli.main import main
from common.yamlconfig import MAX_ALIASES, MAX_CONFIG_BYTES, MAX_VALUES
from tests.support.services import REPO_ROOT
from zones.geometry import MAX_POLYGON_POINTS

CAMERA = """cameras:
  - id: cam
    source: v.avi
{calibration}    zones:
      - id: edge
        kind: cliff
        polygon: {polygon}
"""
SQUARE = "[[0.1, 0.5], [0.4, 0.5], [0.4, 0.9], [0.1, 0.9]]"
CAL = "    calibration:\n      image: {image}\n      world: [[0, 0], [1, 0], [1, 1], [0, 1]]\n"


def laughs(levels: int = 9, width: int = 9) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]"
              for i in range(1, levels + 1)]
    return "\n".join([*lines, f"cameras: *a{levels}"]) + "\n"


def circle(n: int) -> str:
    return json.dumps([[round(0.5 + 0.4 * math.cos(2 * math.pi * i / n), 6),
                        round(0.5 + 0.4 * math.sin(2 * math.pi * i / n), 6)] for i in range(n)])


CASES = [
    ("billion-laughs", laughs(), 6, "a5", f"expands to more than {MAX_VALUES} values"),
    ("self-alias", "cameras: &a [*a]\n", 1, "cameras[0]", "refers to the value that contains"),
    ("many-aliases", "x: &x 1\nys: [" + ", ".join(["*x"] * (MAX_ALIASES + 1)) + "]\n", 2,
     f"ys[{MAX_ALIASES}]", f"more than {MAX_ALIASES} YAML aliases"),
    ("deep", "cameras: " + "[" * 20_000 + "]" * 20_000 + "\n", 1, None, "nest"),
    ("nan-vertex", CAMERA.format(calibration="", polygon="[[0.1, 0.5], [.nan, 0.5], "
                                 "[0.4, 0.9], [0.1, 0.9]]"), 7,
     "cameras[0].zones[0].polygon[1][0]", "finite number"),
    ("inf-vertex", CAMERA.format(calibration="", polygon="[[0.1, 0.5], [0.4, -.inf], "
                                 "[0.4, 0.9], [0.1, 0.9]]"), 7,
     "cameras[0].zones[0].polygon[1][1]", "finite number"),
    ("nan-calibration", CAMERA.format(calibration=CAL.format(
        image="[[0, 0], [1, 0], [1, .nan], [0, 1]]"), polygon=SQUARE), 5,
     "cameras[0].calibration.image[2][1]", "finite number"),
    ("huge-polygon", CAMERA.format(calibration="", polygon=circle(MAX_POLYGON_POINTS + 1)), 7,
     "cameras[0].zones[0].polygon", f"at most {MAX_POLYGON_POINTS} items"),
    ("nan-ground-zone", "radars:\n  - {id: r1, position: [0, 0]}\nground_zones:\n"
     "  - id: g\n    kind: water\n    polygon: [[0, 0], [5, 0], [5, .nan], [0, 5]]\n", 6,
     "ground_zones[0].polygon", "point 2 is not a finite number"),
]


@pytest.mark.parametrize(("name", "text", "line", "field", "message"), CASES,
                         ids=[c[0] for c in CASES])
def test_bad_config_fails_fast_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             name: str, text: str, line: int,
                                             field: str | None, message: str) -> None:
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(text)
    t0 = time.monotonic()
    assert main(["config", "check", str(cfg)]) == 2
    elapsed = time.monotonic() - t0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    where = f"error: {cfg}:{line}: " + (f"{field}: " if field else "")
    assert err[0].startswith(where), err[0]
    assert message in err[0], err[0]
    assert elapsed < 10, f"{name} took {elapsed:.1f} s"  # shared 2-core machine: generous


def test_oversized_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "big.yaml"
    cfg.write_text("# " + "x" * MAX_CONFIG_BYTES + "\ncameras: []\n")
    assert main(["config", "check", str(cfg)]) == 2
    assert capsys.readouterr().err.strip() == f"error: {cfg}: config is larger than 2 MiB"


def test_anchors_and_aliases_a_site_uses_still_work(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "site.yaml"
    cfg.write_text(CAMERA.format(calibration="", polygon="&square " + SQUARE)
                   + "      - id: edge2\n        kind: water\n        polygon: *square\n")
    assert main(["config", "check", str(cfg)]) == 0, capsys.readouterr().err


@pytest.mark.parametrize(("which", "files"), [
    ("edge", ["pets09.yaml", "pets09_radar.yaml", "tud_campus.yaml", "live_site.yaml"]),
    ("central", ["central.yaml"]),
])
def test_schema_validates_the_shipped_configs(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str], which: str,
                                              files: list[str]) -> None:
    import jsonschema
    import yaml

    out = tmp_path / f"{which}.schema.json"
    assert main(["config", "schema", which, "-o", str(out)]) == 0
    assert capsys.readouterr().out == f"{which} config schema written to {out}\n"
    schema = json.loads(out.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for name in files:
        data = yaml.safe_load((REPO_ROOT / "config" / name).read_text())
        errors = [e.message for e in validator.iter_errors(data)]
        assert errors == [], (name, errors)
    # and it catches what an editor should underline
    bad = yaml.safe_load((REPO_ROOT / "config" / files[0]).read_text())
    bad["colour"] = "red"
    assert not validator.is_valid(bad)
    assert main(["config", "schema", which]) == 0
    assert json.loads(capsys.readouterr().out)["title"].startswith("perimeter")


def test_edge_schema_refuses_a_typo_and_a_nan(capsys: pytest.CaptureFixture[str]) -> None:
    import jsonschema
    import yaml

    assert main(["config", "schema"]) == 0
    validator = jsonschema.Draft202012Validator(json.loads(capsys.readouterr().out))
    site = yaml.safe_load(CAMERA.format(calibration="", polygon=SQUARE))
    assert validator.is_valid(site)
    site["cameras"][0]["zones"][0]["polgon"] = site["cameras"][0]["zones"][0].pop("polygon")
    assert not validator.is_valid(site)
