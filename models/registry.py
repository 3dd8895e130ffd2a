"""The models manifest: where each detector file comes from, and proof it is the right file.

Files come either from a registry package pinned to one version (located inside the installed
distribution) or from a path a site supplies. Each is checked against its sha256 before a
detector loads it, so a truncated copy or a silently swapped model is refused with a message
naming the file, rather than producing fewer alarms on the night it matters.

A model may also be *converted* on the box from a pinned file (YOLOv8n: the checkpoint from a
registry package, turned into ONNX by ``models.yolov8_onnx`` without torch). The converted
file's bytes depend on the onnx/protobuf versions that wrote it, so it is pinned by the digest
of its graph instead (``convert.graph_sha256``: every node and weight value), with the
input-size constants recomputed: the same check holds on any machine that converts it.
Converted files live in ``models_dir()`` as ``NAME-WxH.onnx``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import os
import sys
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

MANIFEST = Path(__file__).with_name("manifest.yaml")
Backend = Literal["opencv-darknet", "opencv-tensorflow", "ultralytics", "onnx-yolov8"]
MODELS_DIR_ENV = "PERIMETER_MODELS_DIR"


class ModelError(RuntimeError):
    """A model file that is missing, unreadable or not the file the manifest pins."""


class FileSource(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    package: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]+==[A-Za-z0-9_.+-]+$",
                                description="name==version of the registry package")
    path: str = Field(min_length=1, description="path inside the package, or a file path")
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")

    @model_validator(mode="after")
    def _pinned(self) -> FileSource:
        if self.package and not self.sha256:
            raise ValueError("a packaged model file must pin its sha256")
        return self

    @property
    def requirement(self) -> tuple[str, str] | None:
        if not self.package:
            return None
        name, version = self.package.split("==")
        return name, version


class ConvertSpec(BaseModel):
    """A file made on the box from another of the model's files (checked, then converted)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = Field(description="the role in ``files`` converted from")
    graph_sha256: str = Field(pattern=r"^[0-9a-f]{64}$",
                              description="digest of the converted graph (models.yolov8_onnx)")


class ModelEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = ""
    backend: Backend
    description: str = ""
    licence: str = "as supplied by the site"
    classes: str = "coco80"
    person_classes: list[int] = Field(default_factory=lambda: [0])
    input_size: tuple[int, int] = (640, 640)
    files: dict[str, FileSource]
    convert: ConvertSpec | None = None

    @model_validator(mode="after")
    def _convert_source(self) -> ModelEntry:
        if self.convert and self.convert.source not in self.files:
            raise ValueError(f"convert.source {self.convert.source!r} is not in files")
        return self

    @classmethod
    def user_weights(cls, path: str, sha256: str | None = None,
                     input_size: tuple[int, int] = (640, 640),
                     person_classes: list[int] | None = None) -> ModelEntry:
        """A site's own Ultralytics weights (.pt, .onnx, OpenVINO folder)."""
        return cls(name=Path(path).name, backend="ultralytics", input_size=input_size,
                   person_classes=person_classes or [0],
                   files={"weights": FileSource(path=path, sha256=sha256)})


def load_manifest(path: Path = MANIFEST) -> dict[str, ModelEntry]:
    try:
        raw = yaml.safe_load(path.read_text())
        return {name: ModelEntry(name=name, **spec) for name, spec in raw["models"].items()}
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValidationError) as exc:
        raise ModelError(f"{path}: invalid models manifest: {exc}") from exc


_HASHES: dict[tuple[str, int, int], str] = {}


def sha256_of(path: Path) -> str:
    """sha256 of a file (or of every file in a folder, in name order), cached per mtime."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        h = hashlib.sha256()
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for f in files:
            with f.open("rb") as fh:
                for chunk in iter(lambda fh=fh: fh.read(1 << 20), b""):  # type: ignore[misc]
                    h.update(chunk)
        _HASHES[key] = h.hexdigest()
    return _HASHES[key]


def locate(src: FileSource) -> Path:
    """Where a file lies on this machine, or a ModelError saying how to get it."""
    req = src.requirement
    if req is None:
        p = Path(os.path.expanduser(src.path))
        if not p.exists():
            raise ModelError(f"{p}: model file not found")
        return p
    name, version = req
    try:
        dist = md.distribution(name)
    except md.PackageNotFoundError:
        raise ModelError(f"package {name}=={version} is not installed "
                         f"(run: perimeter models fetch)") from None
    if dist.version != version:
        raise ModelError(f"package {name} is {dist.version}, the manifest pins {version} "
                         f"(run: perimeter models fetch)")
    p = Path(str(dist.locate_file(src.path)))
    if not p.exists():
        raise ModelError(f"{p}: not found inside {name}=={version}")
    return p


def verify(src: FileSource) -> Path:
    """Locate a file and check its sha256; returns its path."""
    p = locate(src)
    if src.sha256:
        try:
            got = sha256_of(p)
        except OSError as exc:
            raise ModelError(f"{p}: cannot read model file: {exc.strerror}") from exc
        if got != src.sha256:
            raise ModelError(f"{p}: checksum mismatch (sha256 {got[:16]}..., "
                             f"expected {src.sha256[:16]}...)")
    return p


def resolve_model(entry: ModelEntry, input_size: tuple[int, int] | None = None, *,
                  convert_missing: bool = False) -> dict[str, Path]:
    """Every file of a model, located and verified; a converted model's ONNX at
    ``input_size`` (default: the entry's) under ``"onnx"``, converted first if it is missing
    and ``convert_missing`` (a file that is there but wrong is refused, never overwritten)."""
    files = {role: verify(src) for role, src in entry.files.items()}
    if entry.convert is not None:
        from models.converted import converted_model

        files["onnx"] = converted_model(entry, files[entry.convert.source],
                                        input_size or entry.input_size,
                                        convert_missing=convert_missing)
    return files


def models_dir() -> Path:
    """Where converted models live: ``$PERIMETER_MODELS_DIR``, else inside the environment
    that converted them (``<venv>/share/perimeter/models``), which has the onnx that wrote them."""
    env = os.environ.get(MODELS_DIR_ENV)
    return Path(env).expanduser() if env else Path(sys.prefix) / "share" / "perimeter" / "models"


def requirements(entry: ModelEntry) -> list[str]:
    """The pinned packages that carry a model's files (for ``models fetch``)."""
    return sorted({src.package for src in entry.files.values() if src.package})
