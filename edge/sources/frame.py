"""One decoded frame, as every source (file, RTSP, ONVIF) hands it to the pipeline."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class Frame:
    index: int  # 1-based, as in MOTChallenge ground truth
    time: float  # seconds (epoch)
    image: npt.NDArray[np.uint8]
