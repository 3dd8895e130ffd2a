"""The machine a benchmark ran on, written beside every result."""

from __future__ import annotations

import os
import platform
from importlib import metadata


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_gib() -> float:
    try:
        with open("/proc/meminfo", encoding="utf-8") as fh:
            kib = int(fh.readline().split()[1])
        return round(kib / 1024 / 1024, 1)
    except (OSError, ValueError, IndexError):
        return 0.0


def machine_info() -> dict[str, object]:
    versions: dict[str, str | None] = {}
    for pkg in ("opencv-python", "numpy", "onnx", "onnxruntime", "shapely", "trackers",
                "supervision", "ultralytics", "torch"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {"cpu": _cpu_model(), "cores": os.cpu_count(), "mem_gib": _mem_gib(),
            "python": platform.python_version(), "os": platform.platform(),
            "packages": versions, "load_avg": _load()}


def _load() -> list[float]:
    """1, 5 and 15 min load averages when the run started: the machine is shared, and timings
    taken while others ran are slower than the box would be alone."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []
