"""Bad input through the real CLI: one clear line naming file, line and field; exit 2; no
output files left behind."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from cli.main import main
from tests.support.services import REPO_ROOT

VIDEO = REPO_ROOT.parent / "shared/data/mot15/PETS09-S2L1/vtest.avi"

GOOD = """\
cameras:
  - id: cam
    source: {video}
    zones:
      - id: edge
        kind: cliff
        risk: high
        polygon: {polygon}
"""
SQUARE = "[[0.1, 0.5], [0.4, 0.5], [0.4, 0.9], [0.1, 0.9]]"


def write(tmp_path: Path, text: str, name: str = "site.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def replay(cfg: Path, tmp_path: Path, *extra: str) -> int:
    return main(["replay", "--config", str(cfg), "--alarms-out", str(tmp_path / "a.jsonl"),
                 "--annotate", str(tmp_path / "a.mp4"), "--no-progress", "--quiet", *extra])


def assert_no_output(tmp_path: Path) -> None:
    left = sorted(p.name for p in tmp_path.iterdir() if p.suffix in (".jsonl", ".mp4"))
    assert left == [], f"half-written output left behind: {left}"


@pytest.mark.parametrize(("body", "line", "field", "message"), [
    (GOOD.format(video="v.avi", polygon="[[0.1, 0.5], [0.4, 0.5]]"), 8,
     "cameras[0].zones[0].polygon", "at least 3 points"),
    (GOOD.format(video="v.avi", polygon="[[0, 0], [0.5, 0.5], [0.5, 0], [0, 0.5]]"), 8,
     "cameras[0].zones[0].polygon", "not simple"),
    (GOOD.format(video="v.avi", polygon=SQUARE) + "        colour: red\n", 9,
     "cameras[0].zones[0].colour", "Extra inputs are not permitted"),
    (GOOD.format(video="v.avi", polygon=SQUARE).replace("kind: cliff", "kind: lava"), 6,
     "cameras[0].zones[0].kind", "'cliff', 'water', 'crowd' or 'restricted'"),
    (GOOD.format(video="v.avi", polygon=SQUARE).replace("risk: high", "risk: high\n        "
                                                        "thresholds: {dwell_seconds: -3}"), 8,
     "cameras[0].zones[0].thresholds.dwell_seconds", "greater than 0"),
    ("cameras: []\n", 1, "(top level)", "at least one camera or one radar"),
    ("detector:\n  model: yolov4-tiny\n  model: ssd\ncameras: []\n", 3, "detector.model",
     "duplicate key"),
])
def test_config_errors_name_file_line_and_field(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                body: str, line: int, field: str,
                                                message: str) -> None:
    cfg = write(tmp_path, body)
    assert main(["config", "check", str(cfg)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"error: {cfg}:{line}: {field}: "), err[0]
    assert message in err[0]
    assert replay(cfg, tmp_path) == 2
    assert_no_output(tmp_path)


def test_invalid_yaml_names_the_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write(tmp_path, "cameras:\n  - id: cam\n    zones: [\n")
    assert main(["config", "check", str(cfg)]) == 2
    assert f"{cfg}:4: invalid YAML" in capsys.readouterr().err


@pytest.fixture
def video() -> Path:
    if not VIDEO.exists():
        pytest.skip(f"real footage not found at {VIDEO} (see ../shared/data/README.md)")
    return VIDEO


def test_zone_outside_the_frame(tmp_path: Path, video: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write(tmp_path, GOOD.format(video=video, polygon="[[10, 10], [900, 10], [900, 300]]"))
    assert replay(cfg, tmp_path) == 2
    err = capsys.readouterr().err
    assert (f"{cfg}:8: cameras[0].zones[0].polygon: point (900, 10) lies outside the "
            "768x576 frame") in err
    assert_no_output(tmp_path)


@pytest.mark.parametrize(("make", "message"), [
    (lambda d: d / "missing.avi", "video file not found"),
    (lambda d: (d / "bad.avi").write_bytes(b"\x00garbage" * 500) and d / "bad.avi",
     "cannot decode video"),
])
def test_missing_or_corrupt_video(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                  make: object, message: str) -> None:
    path = make(tmp_path)  # type: ignore[operator]
    cfg = write(tmp_path, GOOD.format(video=path, polygon=SQUARE))
    assert replay(cfg, tmp_path) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {path}: {message}" or err.startswith(f"error: {path}: {message}")
    assert_no_output(tmp_path)


def test_checksum_mismatch_on_user_weights(tmp_path: Path, video: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    weights = tmp_path / "site.pt"
    weights.write_bytes(b"not the pinned model")
    body = GOOD.format(video=video, polygon=SQUARE) + (
        f"detector:\n  weights: {weights}\n  sha256: '{'0' * 64}'\n")
    cfg = write(tmp_path, body)
    assert replay(cfg, tmp_path) == 2
    err = capsys.readouterr().err
    assert f"error: {weights}: checksum mismatch" in err
    assert hashlib.sha256(b"not the pinned model").hexdigest()[:16] in err
    assert_no_output(tmp_path)


def test_unknown_model_name(tmp_path: Path, video: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write(tmp_path, GOOD.format(video=video, polygon=SQUARE)
                + "detector:\n  model: yolo-nonexistent\n")
    assert replay(cfg, tmp_path) == 2
    assert f"{cfg}:10: detector.model: unknown model 'yolo-nonexistent'" in capsys.readouterr().err
