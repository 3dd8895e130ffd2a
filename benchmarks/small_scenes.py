"""Far-off people made from real footage: shrunk frames tiled into a wide camera's frame.

Why shrink: no registry ships a wide waterline camera with small people and ground truth, but
real footage with ground truth shrunk keeps real people, real poses and real texture. A clip's
frames are shrunk so that its median person is ``target_px`` tall, and as many shrunk frames
as fit are tiled into a 1920x1080 frame (each cell a different moment of the clip, so the
cells differ); every ground-truth box is shrunk and moved with its cell. A person whose box is
cut by the frame's edge by more than a third is an "ignore" region (neither hit nor miss).

``submerged``: a person in the water shows head and shoulders only. Each person's lower 60 %
is painted over with the clip's own empty scene (the per-pixel median of its frames: the
camera is static) and their ground truth becomes the upper 40 %. It stands for water hiding a
body, not for water's look: no registry footage shows people in water.

The fence is a band across the frame (a waterline, ``BAND``); "near the fence" is a person
whose foot point (bottom centre of the full box) lies in it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import shapely

from benchmarks.groundtruth import GroundTruth
from benchmarks.registry_footage import Frame

Image = npt.NDArray[np.uint8]
Boxes = npt.NDArray[np.float64]
WIDE = (1920, 1080)
BAND = [(0.0, 0.40), (1.0, 0.36), (1.0, 0.62), (0.0, 0.66)]  # normalized (x, y), a waterline
VISIBLE_PART = 0.4  # submerged: the share of a person above the water


@dataclass(frozen=True)
class Clip:
    """Frames of one static camera with their people (x1, y1, x2, y2, source pixels)."""

    name: str
    frames: list[Frame]

    @property
    def median_height(self) -> float:
        return float(np.median(np.concatenate([f.people[:, 3] - f.people[:, 1]
                                               for f in self.frames])))

    def background(self) -> Image:
        """The empty scene: the median of (at most 60) frames spread over the clip."""
        step = max(1, len(self.frames) // 60)
        stack = np.stack([f.image for f in self.frames[::step]])
        return np.asarray(np.median(stack, axis=0), dtype=np.uint8)


def video_clip(name: str, video: Path, gt: Path, step: int = 1) -> Clip:
    """A MOTChallenge video and its ground truth, every ``step``-th frame."""
    truth = GroundTruth.load(gt)
    cap = cv2.VideoCapture(str(video))
    frames, index = [], 0
    while True:
        ok, image = cap.read()
        if not ok:
            break
        index += 1
        if (index - 1) % step == 0:
            h, w = image.shape[:2]
            people = truth.frame(index, camera="", time=0.0, frame_size=(w, h)).boxes
            frames.append(Frame(np.asarray(image, dtype=np.uint8), people, np.zeros((0, 4))))
    cap.release()
    return Clip(name, frames)


@dataclass(frozen=True)
class Scene:
    """One wide frame with its people, the ignore regions, and who stands at the fence."""

    image: Image
    people: Boxes
    ignore: Boxes
    at_fence: npt.NDArray[np.bool_]
    full_heights: npt.NDArray[np.float64]  # the whole person's height (submerged too)


def band_polygon(size: tuple[int, int] = WIDE) -> list[tuple[float, float]]:
    return [(x * size[0], y * size[1]) for x, y in BAND]


def _submerge(cell: Image, people: Boxes, empty: Image) -> tuple[Image, Boxes]:
    out = cell.copy()
    for x1, y1, x2, y2 in people.round().astype(int):
        water = y1 + round((y2 - y1) * VISIBLE_PART)
        out[max(water, 0):max(y2, 0), max(x1, 0):max(x2, 0)] = \
            empty[max(water, 0):max(y2, 0), max(x1, 0):max(x2, 0)]
    top = people.copy()
    top[:, 3] = top[:, 1] + (top[:, 3] - top[:, 1]) * VISIBLE_PART
    return out, top


def compose(clip: Clip, k: int, target_px: float, *, size: tuple[int, int] = WIDE,
            submerged: bool = False, empty: Image | None = None) -> Scene:
    """Wide frame number ``k``: shrunk frames of ``clip`` tiled over ``size``."""
    scale = target_px / clip.median_height
    h0, w0 = clip.frames[0].image.shape[:2]
    cw, ch = max(1, round(w0 * scale)), max(1, round(h0 * scale))
    nx, ny = math.ceil(size[0] / cw), math.ceil(size[1] / ch)
    canvas = np.zeros((ny * ch, nx * cw, 3), np.uint8)
    small_empty = None if empty is None else np.asarray(
        cv2.resize(empty, (cw, ch), interpolation=cv2.INTER_AREA), dtype=np.uint8)
    people, full, ignored = [], [], [np.zeros((0, 4))]
    for c in range(nx * ny):
        f = clip.frames[(k * 13 + c * 7) % len(clip.frames)]
        cell = np.asarray(cv2.resize(f.image, (cw, ch), interpolation=cv2.INTER_AREA),
                          dtype=np.uint8)
        boxes = f.people * scale
        full.append(boxes.copy())
        if submerged and small_empty is not None:
            cell, boxes = _submerge(cell, boxes, small_empty)
        ox, oy = (c % nx) * cw, (c // nx) * ch
        canvas[oy:oy + ch, ox:ox + cw] = cell
        shift = np.array([ox, oy, ox, oy], dtype=np.float64)
        people.append(boxes + shift)
        full[-1] = full[-1] + shift
        ignored.append(f.ignore * scale + shift)
    scene = _scene(canvas[:size[1], :size[0]], np.concatenate(people), np.concatenate(full), size)
    return Scene(scene.image, scene.people, np.concatenate([scene.ignore, *ignored]),
                 scene.at_fence, scene.full_heights)


def _scene(image: Image, boxes: Boxes, full: Boxes, size: tuple[int, int]) -> Scene:
    w, h = size
    clipped = boxes.copy()
    clipped[:, [0, 2]] = clipped[:, [0, 2]].clip(0, w)
    clipped[:, [1, 3]] = clipped[:, [1, 3]].clip(0, h)
    area = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
    kept = np.prod((clipped[:, 2:] - clipped[:, :2]).clip(0), axis=1)
    whole = kept >= area * (2 / 3)
    visible = kept > 0
    feet = np.column_stack(((full[:, 0] + full[:, 2]) / 2, full[:, 3]))
    at = shapely.intersects_xy(shapely.Polygon(band_polygon(size)), feet[:, 0], feet[:, 1])
    return Scene(np.ascontiguousarray(image), clipped[whole], clipped[~whole & visible],
                 np.asarray(at, dtype=bool)[whole], (full[:, 3] - full[:, 1])[whole])


def native(frame: Frame) -> Scene:
    """A real frame as it is (the MMOT drone clips): every person counts as at a fence."""
    heights = frame.people[:, 3] - frame.people[:, 1]
    return Scene(frame.image, frame.people, frame.ignore, np.ones(len(frame.people), bool),
                 heights)
