"""Models converted on the box: where their files are, made once, and proved right every load.

Why here and not in the detector: ``perimeter models fetch`` (setup), ``models verify`` and the
edge worker's start all need the same answer to "is the ONNX at this size the pinned model?".
The file is checked by what its graph computes (``models.yolov8_onnx.graph_digest`` plus the
input-size constants recomputed), not by its bytes, because the bytes depend on the onnx and
protobuf versions that wrote it; a file that is present but does not check out is refused by
name and left alone for a person to look at, never silently rewritten.
"""

from __future__ import annotations

import logging
from pathlib import Path

from models.registry import MODELS_DIR_ENV, ModelEntry, ModelError, models_dir

log = logging.getLogger(__name__)

_VERIFIED: dict[tuple[str, int, int], tuple[int, int]] = {}


def converted_path(entry: ModelEntry, input_size: tuple[int, int]) -> Path:
    """``models_dir()/NAME-WxH.onnx``."""
    w, h = input_size
    return models_dir() / f"{entry.name}-{w}x{h}.onnx"


def converted_sizes(entry: ModelEntry) -> list[tuple[int, int]]:
    """The sizes (w, h) this machine holds a converted file for, by file name."""
    out = []
    for p in sorted(models_dir().glob(f"{entry.name}-*x*.onnx")):
        w, _, h = p.stem.removeprefix(f"{entry.name}-").partition("x")
        if w.isdigit() and h.isdigit():
            out.append((int(w), int(h)))
    return out


def verify_converted(entry: ModelEntry, path: Path, input_size: tuple[int, int]) -> None:
    """ModelError naming ``path`` unless its graph is the pinned one at ``input_size``."""
    import onnx

    from models.checkpoint import ConvertError
    from models.yolov8_onnx import check_size_constants, graph_digest

    assert entry.convert is not None
    try:
        st = path.stat()
    except OSError as exc:
        raise ModelError(f"{path}: cannot read model file: {exc.strerror}") from exc
    key = (str(path), st.st_size, st.st_mtime_ns)
    if _VERIFIED.get(key) == input_size:
        return
    try:
        model = onnx.load(str(path))
        size = check_size_constants(model)
        digest = graph_digest(model)
    except ConvertError as exc:
        raise ModelError(f"{path}: not a valid converted model: {exc}") from exc
    except Exception as exc:  # a damaged file: protobuf's DecodeError, onnx's own errors
        raise ModelError(f"{path}: not a valid converted model: {type(exc).__name__}: "
                         f"{exc}") from exc
    if size != input_size:
        raise ModelError(f"{path}: converted for {size[0]}x{size[1]}, not "
                         f"{input_size[0]}x{input_size[1]}")
    if digest != entry.convert.graph_sha256:
        raise ModelError(f"{path}: checksum mismatch (graph sha256 {digest[:16]}..., expected "
                         f"{entry.convert.graph_sha256[:16]}...); delete it and run: "
                         f"perimeter models fetch {entry.name}")
    _VERIFIED[key] = input_size


def convert_now(entry: ModelEntry, source: Path, input_size: tuple[int, int]) -> Path:
    """Convert ``source`` (already verified) at ``input_size``; the result is verified."""
    from models.checkpoint import ConvertError
    from models.yolov8_onnx import convert

    assert entry.convert is not None
    path = converted_path(entry, input_size)
    w, h = input_size
    src = entry.files[entry.convert.source]
    log.info("converting %s to ONNX at %dx%d: %s", entry.name, w, h, path)
    try:
        convert(source, path, w, h, weights_sha256=src.sha256 or "")
    except ConvertError as exc:
        raise ModelError(f"{source}: cannot convert {entry.name} at {w}x{h}: {exc}") from exc
    except OSError as exc:
        raise ModelError(f"{path}: cannot write the converted model: {exc.strerror} "
                         f"(set ${MODELS_DIR_ENV} to a writable folder)") from exc
    verify_converted(entry, path, input_size)
    return path


def converted_model(entry: ModelEntry, source: Path, input_size: tuple[int, int], *,
                    convert_missing: bool) -> Path:
    """The verified converted file at ``input_size``; converted first when missing and
    ``convert_missing``, else a ModelError saying how to make it."""
    path = converted_path(entry, input_size)
    if not path.exists():
        if not convert_missing:
            w, h = input_size
            raise ModelError(f"{path}: not converted yet (run: perimeter models fetch "
                             f"{entry.name} --size {w} {h})")
        return convert_now(entry, source, input_size)
    verify_converted(entry, path, input_size)
    return path
