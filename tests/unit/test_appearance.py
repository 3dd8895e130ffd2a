"""The edge's appearance cue: colour histograms that tell people apart, cheaply."""

from __future__ import annotations

import numpy as np

from edge.appearance import DIM, appearance
from zones.handover import similarity


def _scene() -> np.ndarray:
    img = np.full((200, 300, 3), 128, dtype=np.uint8)  # grey ground
    img[20:120, 20:60] = (0, 0, 200)  # person A: red top (BGR)...
    img[120:180, 20:60] = (60, 60, 60)  # ...dark trousers
    img[20:120, 120:160] = (0, 0, 190)  # person B: dressed like A
    img[120:180, 120:160] = (55, 55, 55)
    img[20:120, 220:260] = (200, 0, 0)  # person C: blue top...
    img[120:180, 220:260] = (230, 230, 230)  # ...light trousers
    return img


def test_histograms_tell_clothes_apart() -> None:
    boxes = np.array([[20, 10, 60, 180], [120, 10, 160, 180], [220, 10, 260, 180]], float)
    rows = appearance(_scene(), boxes)
    assert rows.shape == (3, DIM)
    assert np.allclose(rows[:, : DIM // 2].sum(axis=1), 1.0)
    assert similarity(rows[0], rows[1]) > 0.9  # same clothes
    assert similarity(rows[0], rows[2]) < 0.2  # different clothes


def test_a_degenerate_box_has_no_look() -> None:
    rows = appearance(_scene(), np.array([[100, 50, 101, 51], [-5, -5, -1, -1]], float))
    assert not rows.any()
    assert similarity(rows[0], rows[1]) is None
    assert appearance(_scene(), np.zeros((0, 4))).shape == (0, DIM)
