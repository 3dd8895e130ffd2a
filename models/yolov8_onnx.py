"""YOLOv8 detection checkpoint -> ONNX graph, with numpy and onnx only (no torch, no ultralytics).

Why: the edge box runs YOLOv8n with onnxruntime, and a site converts the pinned checkpoint on
the box itself (``perimeter models fetch yolov8n``) instead of installing torch to export it.
The graph is rebuilt from the module tree ``models.checkpoint`` reads (the ``f`` "from" indices
as ``DetectionModel._predict_once`` follows them) with ``onnx.helper``: Conv with BatchNorm
folded the way torch folds it (float32, same order of operations), SiLU as Sigmoid*Mul, C2f,
SPPF, nearest Resize, Concat, and the Detect head with DFL and anchor/stride decoding baked in
as constants for the fixed input size. Input ``images`` float32 (1, 3, H, W), RGB, 0..1,
letterboxed; output ``output0`` (1, 4 + nc, N): cx, cy, w, h in input pixels, then the class
scores. This equals ``YOLO(pt).export(format="onnx")`` bit for bit in every folded weight
(``tests/unit/test_yolov8_golden.py`` proves it where torch is installed).

Only the module types of YOLOv8 detection models (Conv, C2f, Bottleneck, SPPF, Upsample,
Concat, Detect) are supported; anything else is refused by name rather than converted wrongly.

The bytes of the written file depend on the onnx/protobuf versions that serialise it, so a file
is not pinned by its sha256 but by ``graph_digest``: a hash of what the graph computes (every
node, every initializer's values) that no serialiser changes, with the few constants that
depend on the input size (anchors, strides, shapes) recomputed and compared exactly instead.
"""

from __future__ import annotations

import ast
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from models.checkpoint import ConvertError, Stub, detection_model, load_checkpoint
from models.yolov8_graph import GraphBuilder, detect_head, layer, size_constants

SIZE_CONSTANTS = (".anchors", ".strides", ".dfl.shape_in", ".dfl.shape_out")

OPSET = 13
PRODUCER = "perimeter-yolov8-onnx"
PRODUCER_VERSION = "1"
# Metadata that is part of what a graph means (class names, strides), hence of its digest.
DIGESTED_PROPS = ("names", "strides", "task")


@dataclass(frozen=True)
class Converted:
    """The ONNX model and what it was made from."""

    model: onnx.ModelProto
    names: dict[int, str]
    strides: list[float]
    anchors: int


def _walk(model: Stub, width: int, height: int) -> tuple[GraphBuilder, Stub]:
    """Every layer as nodes, following ``f`` like ``DetectionModel._predict_once``."""
    layers = model.child("model").children()
    detect = layers[-1]
    if detect.kind != "Detect":
        raise ConvertError(f"last layer is {detect._qualname}, not Detect")
    max_stride = int(max(np.asarray(detect.tensor("stride")).reshape(-1)))
    if width % max_stride or height % max_stride or min(width, height) <= 0:
        raise ConvertError(f"input {width}x{height}: both sides must be multiples of {max_stride}")
    g = GraphBuilder()
    x = "images"
    saved: dict[int, str] = {}
    for m in layers:
        i, frm = int(m.attr("i")), m.attr("f")
        name = f"model.{i}"
        if m.kind in ("Detect", "Concat"):
            inputs = [x if j == -1 else saved[j] for j in frm]
            x = (detect_head(g, inputs, m, name, width, height) if m.kind == "Detect"
                 else g.op("Concat", inputs, name, axis=int(m.attr("d")))[0])
        else:
            x = layer(g, x if frm == -1 else saved[int(frm)], m, name)
        saved[i] = x
    return g, detect


def build_onnx(model: Stub, width: int, height: int, *, source: str = "",
               source_sha256: str = "") -> Converted:
    """The graph ``DetectionModel._predict_once`` runs, for a fixed (1, 3, height, width) input."""
    g, detect = _walk(model, width, height)
    strides = [float(s) for s in np.asarray(detect.tensor("stride")).reshape(-1)]
    names = {int(k): str(v) for k, v in dict(model.attr("names", {})).items()}
    nc = int(detect.attr("nc"))
    n_anchor = sum((height // int(s)) * (width // int(s)) for s in strides)
    graph = helper.make_graph(
        g.nodes, "yolov8",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, height, width])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 4 + nc, n_anchor])],
        initializer=g.inits,
    )
    onnx_model = helper.make_model(graph, producer_name=PRODUCER,
                                   producer_version=PRODUCER_VERSION,
                                   opset_imports=[helper.make_opsetid("", OPSET)])
    onnx_model.ir_version = 8  # onnxruntime, OpenVINO and cv2.dnn of 2023+ all read IR 8
    helper.set_model_props(onnx_model, {
        "description": "YOLOv8 detection, converted without torch by models.yolov8_onnx",
        "task": "detect", "batch": "1", "imgsz": repr([height, width]),
        "stride": str(int(max(strides))), "strides": repr(strides),
        # Python-literal dict, as Ultralytics writes it: YOLO("this.onnx") reads it back
        "names": repr(names),
        "source": source, "source_sha256": source_sha256,
        "licence": "AGPL-3.0 (Ultralytics YOLOv8 weights)",
    })
    onnx.checker.check_model(onnx_model, full_check=True)
    return Converted(onnx_model, names, strides, n_anchor)


def convert(weights: Path, out: Path, width: int, height: int, *,
            weights_sha256: str = "") -> str:
    """Convert a checkpoint and write ``out`` atomically; returns the graph digest.

    Written to a temporary name and renamed, so a crash never leaves a half file that a later
    start would take for the model."""
    conv = build_onnx(detection_model(load_checkpoint(weights)), width, height,
                      source=weights.name, source_sha256=weights_sha256)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(conv.model.SerializeToString(deterministic=True))
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return graph_digest(conv.model)


def _attr(a: onnx.AttributeProto) -> Any:
    value = helper.get_attribute_value(a)
    return tuple(value) if isinstance(value, list) else value


def graph_digest(model: onnx.ModelProto) -> str:
    """sha256 of what a graph computes, independent of how it was serialised.

    Covers every node (type, wiring, attributes), every initializer's name, type, shape and
    values, the opset and the class names and strides; leaves out only the constants that
    follow from the input size (``check_size_constants`` recomputes those)."""
    h = hashlib.sha256()

    def put(*parts: Any) -> None:
        h.update(repr(parts).encode())

    put("opset", tuple((o.domain, o.version) for o in model.opset_import))
    for node in model.graph.node:
        attrs = tuple(sorted((a.name, _attr(a)) for a in node.attribute))
        put("node", node.op_type, tuple(node.input), tuple(node.output), attrs)
    for t in model.graph.initializer:
        if t.name.endswith(tuple(SIZE_CONSTANTS)):
            put("size-constant", t.name)
            continue
        arr = np.ascontiguousarray(numpy_helper.to_array(t))
        put("init", t.name, arr.dtype.str, arr.shape)
        h.update(arr.tobytes())
    props = {p.key: p.value for p in model.metadata_props}
    put("props", tuple((k, props.get(k)) for k in DIGESTED_PROPS))
    return h.hexdigest()


def _dims(info: onnx.ValueInfoProto) -> list[int]:
    return [int(d.dim_value) for d in info.type.tensor_type.shape.dim]


def check_size_constants(model: onnx.ModelProto) -> tuple[int, int]:
    """The graph's input size (w, h), after checking every size-dependent constant and the
    input/output shapes against what that size implies; ConvertError on any difference."""
    graph = model.graph
    if len(graph.input) != 1 or len(graph.output) != 1:
        raise ConvertError("expected one input and one output")
    dims = _dims(graph.input[0])
    if len(dims) != 4 or dims[:2] != [1, 3] or min(dims) <= 0:
        raise ConvertError(f"input shape {dims}, expected fixed (1, 3, H, W)")
    height, width = dims[2:]
    props = {p.key: p.value for p in model.metadata_props}
    try:
        strides = [float(s) for s in ast.literal_eval(props["strides"])]
        names = ast.literal_eval(props["names"])
    except (KeyError, ValueError, SyntaxError) as exc:
        raise ConvertError(f"metadata without strides/names: {exc}") from exc
    inits = {t.name: t for t in graph.initializer}
    dfl = [k for k in inits if k.endswith(".dfl.conv.weight")]
    if len(dfl) != 1:
        raise ConvertError("no DFL weight in the graph")
    reg_max = int(numpy_helper.to_array(inits[dfl[0]]).shape[1])
    expected = size_constants(width, height, strides, reg_max)
    for suffix, want in expected.items():
        found = [numpy_helper.to_array(t) for k, t in inits.items() if k.endswith(suffix)]
        if len(found) != 1 or found[0].dtype != want.dtype or not np.array_equal(found[0], want):
            raise ConvertError(f"constant *{suffix} does not match a {width}x{height} input")
    n_anchor = int(expected[".dfl.shape_out"][2])
    if _dims(graph.output[0]) != [1, 4 + len(names), n_anchor]:
        raise ConvertError(f"output shape {_dims(graph.output[0])} does not match the input")
    return width, height
