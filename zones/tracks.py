"""The one data model that flows through the pipeline: people seen in one frame.

Parallel numpy arrays (boxes, scores, class ids, track ids) with their shapes checked on
construction, plus the camera and the frame they belong to. Detectors fill boxes and scores;
the tracker fills track ids; rules read foot points. Nothing downstream indexes positional
tuples, and a malformed array fails here, where the bug is, not three stages later.

``appearance`` is optional: one row of a cheap appearance cue per person (the edge's colour
histogram of the box, ``edge/appearance.py``), filled by the frame step only when a rule asks
for it (re-associating a person whose track broke, ``zones/handover.py``). Rows are
L1-normalised histograms; ``None`` when nobody asked.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

UNTRACKED = -1


def _as_float(values: npt.ArrayLike, shape: tuple[int, ...], name: str) -> FloatArray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        arr = arr.reshape(shape)
    if arr.shape != shape or min(shape, default=0) < 0:
        raise ValueError(f"{name} must have shape {shape}, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _as_int(values: npt.ArrayLike | None, n: int, name: str, fill: int) -> IntArray:
    if values is None:
        return np.full(n, fill, dtype=np.int64)
    arr = np.asarray(values, dtype=np.int64).reshape(-1)
    if arr.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {arr.shape}")
    return arr


@dataclass(frozen=True, eq=False)
class Detections:
    """People (or other classes) in one frame of one camera.

    ``boxes`` are ``(N, 4)`` ``x1, y1, x2, y2`` in source pixels; ``time`` is seconds (epoch for
    live sources, start time plus frame offset for replays); ``frame`` is the 1-based index of
    the decoded frame. ``track_ids`` is ``-1`` until a tracker assigns identities.
    """

    boxes: FloatArray
    scores: FloatArray
    class_ids: IntArray
    track_ids: IntArray
    camera: str = ""
    frame: int = 0
    time: float = 0.0
    frame_size: tuple[int, int] = (0, 0)  # (width, height)
    appearance: FloatArray | None = field(default=None, repr=False)  # (N, D) or None
    _feet: FloatArray | None = field(default=None, repr=False, compare=False)

    @classmethod
    def create(
        cls,
        boxes: npt.ArrayLike,
        scores: npt.ArrayLike | None = None,
        class_ids: npt.ArrayLike | None = None,
        track_ids: npt.ArrayLike | None = None,
        *,
        camera: str = "",
        frame: int = 0,
        time: float = 0.0,
        frame_size: tuple[int, int] = (0, 0),
    ) -> Detections:
        """Build from anything array-like, checking that every array has one row per box."""
        raw = np.asarray(boxes, dtype=np.float64)
        n = 0 if raw.size == 0 else raw.shape[0] if raw.ndim == 2 else -1
        b = _as_float(raw, (n, 4), "boxes")
        if np.any(b[:, 2] < b[:, 0]) or np.any(b[:, 3] < b[:, 1]):
            raise ValueError("boxes must be x1, y1, x2, y2 with x2 >= x1 and y2 >= y1")
        s = _as_float(np.ones(n) if scores is None else scores, (n,), "scores")
        return cls(
            boxes=b,
            scores=s,
            class_ids=_as_int(class_ids, n, "class_ids", 0),
            track_ids=_as_int(track_ids, n, "track_ids", UNTRACKED),
            camera=camera,
            frame=frame,
            time=float(time),
            frame_size=frame_size,
        )

    @classmethod
    def empty(
        cls, *, camera: str = "", frame: int = 0, time: float = 0.0,
        frame_size: tuple[int, int] = (0, 0),
    ) -> Detections:
        return cls.create(np.zeros((0, 4)), camera=camera, frame=frame, time=time,
                          frame_size=frame_size)

    def __post_init__(self) -> None:
        n = self.boxes.shape[0]
        if self.boxes.shape != (n, 4):
            raise ValueError(f"boxes must have shape (N, 4), got {self.boxes.shape}")
        for name in ("scores", "class_ids", "track_ids"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"{name} must have shape ({n},), got {getattr(self, name).shape}")
        app = self.appearance
        if app is not None and (app.ndim != 2 or app.shape[0] != n):
            raise ValueError(f"appearance must have shape ({n}, D), got {app.shape}")

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    @property
    def foot_points(self) -> FloatArray:
        """Bottom centre of each box: where a person stands on the ground (N, 2)."""
        if self._feet is None:
            feet = np.column_stack(((self.boxes[:, 0] + self.boxes[:, 2]) / 2.0, self.boxes[:, 3]))
            object.__setattr__(self, "_feet", feet)
        assert self._feet is not None
        return self._feet

    def select(self, mask: npt.NDArray[np.bool_] | IntArray) -> Detections:
        """A subset by boolean mask or index array, keeping camera and frame."""
        return Detections(
            boxes=self.boxes[mask],
            scores=self.scores[mask],
            class_ids=self.class_ids[mask],
            track_ids=self.track_ids[mask],
            camera=self.camera,
            frame=self.frame,
            time=self.time,
            frame_size=self.frame_size,
            appearance=None if self.appearance is None else self.appearance[mask],
        )

    def with_appearance(self, appearance: npt.ArrayLike) -> Detections:
        """The same people with one appearance row each (``(N, D)``, finite)."""
        app = np.asarray(appearance, dtype=np.float64)
        if app.size == 0 and app.ndim != 2:
            app = app.reshape(0, 0)
        if app.ndim != 2 or app.shape[0] != len(self) or not np.all(np.isfinite(app)):
            raise ValueError(f"appearance must be finite with shape ({len(self)}, D), "
                             f"got {app.shape}")
        return dataclasses.replace(self, appearance=app, _feet=self._feet)

    def with_tracks(self, boxes: FloatArray, scores: FloatArray, class_ids: IntArray,
                    track_ids: IntArray) -> Detections:
        """The tracker's output for this same frame."""
        return Detections.create(boxes, scores, class_ids, track_ids, camera=self.camera,
                                 frame=self.frame, time=self.time, frame_size=self.frame_size)

    @property
    def tracked(self) -> Detections:
        """Only rows that carry a track id: rules reason about identities."""
        return self.select(self.track_ids != UNTRACKED)
