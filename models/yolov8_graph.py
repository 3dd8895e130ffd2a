"""The layers of a YOLOv8 detection graph, built as ONNX nodes from a checkpoint's module tree.

``models.yolov8_onnx`` walks the model and calls these: Conv with BatchNorm folded the way torch
folds it (float32, same order of operations: the folded weights come out bit-identical to
Ultralytics' own export), SiLU as Sigmoid*Mul (what torch's exporter emits), C2f, SPPF,
nearest Resize, and the Detect head with DFL and the anchor/stride decoding as constants.
Node and initializer names are fixed by the module path, so a graph is deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import helper, numpy_helper

from models.checkpoint import F32, ConvertError, Stub


def fold_conv_bn(conv: Stub, bn: Stub) -> tuple[F32, F32]:
    """Conv+BatchNorm as one conv, computed like torch's ``fuse_conv_bn_weights`` in float32.

    Ultralytics' export runs ``model.float().fuse()``; mirroring its order of operations in
    float32 keeps the folded weights equal to the exported ones (up to torch's rsqrt rounding).
    """
    w = np.asarray(conv.tensor("weight"), dtype=np.float32)
    b_raw = conv.tensor("bias")
    b = np.zeros(w.shape[0], np.float32) if b_raw is None else b_raw.astype(np.float32)
    mean = np.asarray(bn.tensor("running_mean"), dtype=np.float32)
    var = np.asarray(bn.tensor("running_var"), dtype=np.float32)
    gamma_raw, beta_raw = bn.tensor("weight"), bn.tensor("bias")
    gamma = np.ones_like(mean) if gamma_raw is None else gamma_raw.astype(np.float32)
    beta = np.zeros_like(mean) if beta_raw is None else beta_raw.astype(np.float32)
    rsqrt = (np.float32(1.0) / np.sqrt(var + np.float32(bn.attr("eps")))).astype(np.float32)
    scale = (gamma * rsqrt).astype(np.float32)
    fused_w = (w * scale.reshape(-1, 1, 1, 1)).astype(np.float32)
    fused_b = ((b - mean) * rsqrt * gamma + beta).astype(np.float32)
    return fused_w, fused_b


def _pair(value: Any) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    a, b = value
    return int(a), int(b)


@dataclass
class GraphBuilder:
    """Accumulates ONNX nodes and initializers with deterministic names."""

    nodes: list[onnx.NodeProto] = field(default_factory=list)
    inits: list[onnx.TensorProto] = field(default_factory=list)
    _names: set[str] = field(default_factory=set)

    def _unique(self, name: str) -> str:
        if name in self._names:
            raise ConvertError(f"duplicate tensor name {name}")
        self._names.add(name)
        return name

    def const(self, name: str, value: npt.NDArray[Any]) -> str:
        """An initializer (weights, anchors, shapes)."""
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value),
                                                  self._unique(name)))
        return name

    def op(self, op_type: str, inputs: Sequence[str], name: str, *, outputs: int = 1,
           **attrs: Any) -> list[str]:
        """One node; its outputs are named ``name`` or ``name:0``, ``name:1``..."""
        outs = [self._unique(name)] if outputs == 1 else [
            self._unique(f"{name}:{k}") for k in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=name, **attrs))
        return outs

    def conv2d(self, x: str, name: str, weight: F32, bias: F32 | None, module: Stub) -> str:
        """A Conv node with the geometry of a torch ``Conv2d`` stub."""
        kh, kw = weight.shape[2:]
        ph, pw = _pair(module.attr("padding"))
        if module.attr("padding_mode", "zeros") != "zeros" or isinstance(ph, str):
            raise ConvertError(f"{name}: unsupported padding {module.attr('padding')!r}")
        inputs = [x, self.const(f"{name}.weight", weight)]
        if bias is not None:
            inputs.append(self.const(f"{name}.bias", bias))
        return self.op("Conv", inputs, name, kernel_shape=[int(kh), int(kw)],
                       strides=list(_pair(module.attr("stride"))),
                       pads=[ph, pw, ph, pw], dilations=list(_pair(module.attr("dilation"))),
                       group=int(module.attr("groups")))[0]

    def activation(self, x: str, act: Stub, name: str) -> str:
        """SiLU as x * sigmoid(x), what torch's ONNX export emits; Identity passes through."""
        if act.kind == "SiLU":
            sig = self.op("Sigmoid", [x], f"{name}.sigmoid")[0]
            return self.op("Mul", [x, sig], f"{name}.silu")[0]
        if act.kind == "Identity":
            return x
        raise ConvertError(f"{name}: unsupported activation {act._qualname}")


def _conv_block(g: GraphBuilder, x: str, m: Stub, name: str) -> str:
    """Ultralytics ``Conv``: act(bn(conv(x))) with the BatchNorm folded."""
    conv, bn = m.child("conv"), m.child("bn")
    w, b = fold_conv_bn(conv, bn)
    y = g.conv2d(x, f"{name}.conv", w, b, conv)
    return g.activation(y, m.child("act"), name)


def _plain_conv(g: GraphBuilder, x: str, m: Stub, name: str) -> str:
    w = np.asarray(m.tensor("weight"), dtype=np.float32)
    b_raw = m.tensor("bias")
    b = None if b_raw is None else b_raw.astype(np.float32)
    return g.conv2d(x, name, w, b, m)


def layer(g: GraphBuilder, x: str, m: Stub, name: str) -> str:
    """Any single-input module of the backbone, neck or head branches."""
    if m.kind == "Conv":
        return _conv_block(g, x, m, name)
    if m.kind == "Conv2d":
        return _plain_conv(g, x, m, name)
    if m.kind == "Sequential":
        for k, sub in enumerate(m.children()):
            x = layer(g, x, sub, f"{name}.{k}")
        return x
    if m.kind == "Bottleneck":
        y = layer(g, layer(g, x, m.child("cv1"), f"{name}.cv1"), m.child("cv2"), f"{name}.cv2")
        return g.op("Add", [x, y], f"{name}.add")[0] if m.attr("add") else y
    if m.kind == "C2f":
        c = int(m.attr("c"))
        y0 = layer(g, x, m.child("cv1"), f"{name}.cv1")
        split = g.const(f"{name}.split_sizes", np.array([c, c], dtype=np.int64))
        ys = g.op("Split", [y0, split], f"{name}.chunk", outputs=2, axis=1)
        for j, sub in enumerate(m.child("m").children()):
            ys.append(layer(g, ys[-1], sub, f"{name}.m.{j}"))
        cat = g.op("Concat", ys, f"{name}.cat", axis=1)[0]
        return layer(g, cat, m.child("cv2"), f"{name}.cv2")
    if m.kind == "SPPF":
        ys = [layer(g, x, m.child("cv1"), f"{name}.cv1")]
        pool = m.child("m")
        kernel = _pair(pool.attr("kernel_size"))
        st = _pair(pool.attr("stride"))
        p = _pair(pool.attr("padding"))
        if pool.attr("dilation", 1) not in (1, (1, 1)) or pool.attr("ceil_mode", False):
            raise ConvertError(f"{name}: unsupported MaxPool2d settings")
        for j in range(int(m.attr("n", 3))):
            ys.append(g.op("MaxPool", [ys[-1]], f"{name}.m.{j}", kernel_shape=list(kernel),
                           strides=list(st), pads=[p[0], p[1], p[0], p[1]])[0])
        cat = g.op("Concat", ys, f"{name}.cat", axis=1)[0]
        y = layer(g, cat, m.child("cv2"), f"{name}.cv2")
        return g.op("Add", [y, x], f"{name}.add")[0] if m.attr("add", False) else y
    if m.kind == "Upsample":
        if m.attr("mode") != "nearest" or m.attr("size", None) is not None:
            raise ConvertError(f"{name}: only nearest Upsample by scale_factor is supported")
        sf = m.attr("scale_factor")
        sh, sw = (float(sf), float(sf)) if isinstance(sf, int | float) else map(float, sf)
        roi = g.const(f"{name}.roi", np.zeros(0, dtype=np.float32))
        scales = g.const(f"{name}.scales", np.array([1.0, 1.0, sh, sw], dtype=np.float32))
        return g.op("Resize", [x, roi, scales], name, mode="nearest",
                    coordinate_transformation_mode="asymmetric", nearest_mode="floor")[0]
    raise ConvertError(f"{name}: unsupported module {m._qualname} (YOLOv8 detection only)")


def make_anchors(sizes: Sequence[tuple[int, int]], strides: Sequence[float],
                 offset: float = 0.5) -> tuple[F32, F32]:
    """Anchor centres (2, N) in grid units and strides (1, N), like ultralytics' make_anchors."""
    points, stride_rows = [], []
    for (h, w), s in zip(sizes, strides, strict=True):
        sy, sx = np.meshgrid(np.arange(h, dtype=np.float32) + np.float32(offset),
                             np.arange(w, dtype=np.float32) + np.float32(offset), indexing="ij")
        points.append(np.stack((sx, sy), -1).reshape(-1, 2))
        stride_rows.append(np.full((h * w, 1), s, dtype=np.float32))
    return (np.concatenate(points).T.copy().astype(np.float32),
            np.concatenate(stride_rows).T.copy().astype(np.float32))


def size_constants(width: int, height: int, strides: Sequence[float],
                   reg_max: int) -> dict[str, npt.NDArray[Any]]:
    """The Detect head's constants that follow from the input size alone, by name suffix.

    One function builds them for the graph and recomputes them when a file is verified, so a
    converted file's size-dependent part is checked exactly, not trusted."""
    sizes = [(height // int(s), width // int(s)) for s in strides]
    n_anchor = sum(h * w for h, w in sizes)
    anchors, stride_row = make_anchors(sizes, strides)
    return {".anchors": anchors[None], ".strides": stride_row[None],
            ".dfl.shape_in": np.array([1, 4, reg_max, n_anchor], dtype=np.int64),
            ".dfl.shape_out": np.array([1, 4, n_anchor], dtype=np.int64)}


def _head_branches(g: GraphBuilder, xs: list[str], m: Stub, name: str) -> tuple[str, str]:
    """Per-level box (4 x reg_max bins) and class branches, flattened and concatenated."""
    nc, reg_max = int(m.attr("nc")), int(m.attr("reg_max"))
    cv2, cv3 = m.child("cv2").children(), m.child("cv3").children()
    boxes, scores = [], []
    for i, x in enumerate(xs):
        b = layer(g, x, cv2[i], f"{name}.cv2.{i}")
        c = layer(g, x, cv3[i], f"{name}.cv3.{i}")
        boxes.append(g.op("Reshape", [b, g.const(f"{name}.cv2.{i}.shape", np.array(
            [1, 4 * reg_max, -1], dtype=np.int64))], f"{name}.cv2.{i}.flat")[0])
        scores.append(g.op("Reshape", [c, g.const(f"{name}.cv3.{i}.shape", np.array(
            [1, nc, -1], dtype=np.int64))], f"{name}.cv3.{i}.flat")[0])
    return (g.op("Concat", boxes, f"{name}.boxes", axis=2)[0],
            g.op("Concat", scores, f"{name}.scores", axis=2)[0])


def detect_head(g: GraphBuilder, xs: list[str], m: Stub, name: str, width: int, height: int) -> str:
    """Detect head: box (DFL) and class branches, decoded to xywh + sigmoid scores."""
    if m.attr("end2end", False) or "one2one_cv2" in m.attr("_modules"):
        raise ConvertError(f"{name}: end-to-end (NMS-free) heads are not supported")
    reg_max = int(m.attr("reg_max"))
    strides = [float(s) for s in np.asarray(m.tensor("stride")).reshape(-1)]
    if len(strides) != len(xs):
        raise ConvertError(f"{name}: {len(xs)} inputs but {len(strides)} strides")
    const = size_constants(width, height, strides, reg_max)
    box, cls = _head_branches(g, xs, m, name)
    # DFL: softmax over reg_max bins per side, expectation with weights 0..reg_max-1 (a 1x1 conv)
    x4 = g.op("Reshape", [box, g.const(f"{name}.dfl.shape_in", const[".dfl.shape_in"])],
              f"{name}.dfl.view")[0]
    xt = g.op("Transpose", [x4], f"{name}.dfl.transpose", perm=[0, 2, 1, 3])[0]
    sm = g.op("Softmax", [xt], f"{name}.dfl.softmax", axis=1)[0]
    dfl_w = np.asarray(m.child("dfl").child("conv").tensor("weight"), dtype=np.float32)
    dc = g.op("Conv", [sm, g.const(f"{name}.dfl.conv.weight", dfl_w)], f"{name}.dfl.conv",
              kernel_shape=[1, 1])[0]
    dist = g.op("Reshape", [dc, g.const(f"{name}.dfl.shape_out", const[".dfl.shape_out"])],
                f"{name}.dfl.out")[0]
    # dist2bbox (xywh), then scale by stride
    lt, rb = g.op("Split", [dist, g.const(f"{name}.ltrb_sizes", np.array([2, 2], np.int64))],
                  f"{name}.ltrb", outputs=2, axis=1)
    anc = g.const(f"{name}.anchors", const[".anchors"])
    x1y1 = g.op("Sub", [anc, lt], f"{name}.x1y1")[0]
    x2y2 = g.op("Add", [anc, rb], f"{name}.x2y2")[0]
    summed = g.op("Add", [x1y1, x2y2], f"{name}.cxy2")[0]
    cxy = g.op("Div", [summed, g.const(f"{name}.two", np.array(2.0, np.float32))],
               f"{name}.cxy")[0]
    wh = g.op("Sub", [x2y2, x1y1], f"{name}.wh")[0]
    xywh = g.op("Concat", [cxy, wh], f"{name}.xywh_grid", axis=1)[0]
    dbox = g.op("Mul", [xywh, g.const(f"{name}.strides", const[".strides"])],
                f"{name}.xywh")[0]
    prob = g.op("Sigmoid", [cls], f"{name}.scores_sigmoid")[0]
    return g.op("Concat", [dbox, prob], "output0", axis=1)[0]
