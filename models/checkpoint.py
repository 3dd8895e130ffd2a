"""Read an Ultralytics ``.pt`` checkpoint as data, without torch and without running its pickle.

Why: an edge box converts the pinned YOLOv8n checkpoint to ONNX itself (``models.yolov8_onnx``),
and torch is hundreds of MB and seconds to import; worse, ``torch.load`` of a pickle runs
whatever code the pickle names. Here a ``.pt`` is what it is on disk, a zip holding
``<root>/data.pkl`` (a pickle of a dict whose ``model`` or ``ema`` entry is the whole
``DetectionModel``) and ``<root>/data/<key>`` raw tensor storages:

* a restricted ``pickle.Unpickler`` resolves only a short allow-list of names to real objects
  (``OrderedDict``, ``set``, torch's tensor-rebuild helpers re-implemented with numpy); every other
  class becomes an inert ``Stub`` that records its pickled state. Nothing the pickle names is
  imported, so a hostile file cannot run code;
* storages (``persistent_load``) become numpy arrays read from the zip; ``_rebuild_tensor_v2``
  makes a bounds-checked strided copy, so a crafted file cannot read outside its storage.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]


class ConvertError(RuntimeError):
    """A checkpoint that cannot be read, or a model the converter does not support."""


# torch storage class name -> numpy dtype of its raw little-endian bytes
_STORAGE_DTYPES: dict[str, np.dtype[Any]] = {
    "HalfStorage": np.dtype("<f2"),
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "BFloat16Storage": np.dtype("<u2"),  # stored as raw bits; converted in _bf16_to_f32
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class Stub:
    """Inert stand-in for any class the pickle names (torch and ultralytics modules...).

    It records constructor arguments and the pickled state, so the module tree can be walked
    as plain attributes (``conv.weight`` via ``_parameters``, ``model._modules`` ...).
    """

    _qualname: str = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> Stub:
        obj = super().__new__(cls)
        obj.__dict__["_args"] = args
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Nothing to do: ``__new__`` kept the arguments (a REDUCE call passes them here too)."""

    def __setstate__(self, state: Any) -> None:
        """Keep the state as attributes, like the default ``object`` unpickling would."""
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict | None):
            state, slots = state
            self.__dict__.update(slots or {})
        if isinstance(state, dict):
            self.__dict__.update(state)
        else:
            self.__dict__["_state"] = state

    @property
    def kind(self) -> str:
        """The class name only (``Conv``, ``C2f``...): what the graph builder dispatches on."""
        return self._qualname.rsplit(".", 1)[-1]

    def child(self, name: str) -> Stub:
        """A submodule by name, from torch's ``_modules`` dict."""
        modules: dict[str, Any] = self.__dict__.get("_modules", {})
        if name not in modules or not isinstance(modules[name], Stub):
            raise ConvertError(f"{self._qualname}: no submodule {name!r}")
        sub: Stub = modules[name]
        return sub

    def children(self) -> list[Stub]:
        """Submodules in registration order (the order ``Sequential`` runs them)."""
        return [m for m in self.__dict__.get("_modules", {}).values() if isinstance(m, Stub)]

    def tensor(self, name: str) -> npt.NDArray[Any] | None:
        """A parameter or buffer by name (``None`` where the module has it set to ``None``)."""
        for table in ("_parameters", "_buffers"):
            values: dict[str, Any] = self.__dict__.get(table, {})
            if name in values:
                value = values[name]
                return None if value is None else np.asarray(value)
        value = self.__dict__.get(name)
        if isinstance(value, np.ndarray):
            return value
        raise ConvertError(f"{self._qualname}: no tensor {name!r}")

    def attr(self, name: str, default: Any = ...) -> Any:
        """A plain attribute recorded from the pickled ``__dict__``."""
        if name in self.__dict__:
            return self.__dict__[name]
        if default is ...:
            raise ConvertError(f"{self._qualname}: no attribute {name!r}")
        return default


_STUB_CLASSES: dict[str, type[Stub]] = {}


def _stub_class(module: str, name: str) -> type[Stub]:
    qualname = f"{module}.{name}"
    if qualname not in _STUB_CLASSES:
        _STUB_CLASSES[qualname] = type(name, (Stub,), {"_qualname": qualname})
    return _STUB_CLASSES[qualname]


def _bf16_to_f32(raw: npt.NDArray[np.uint16]) -> F32:
    return (raw.astype(np.uint32) << 16).view(np.float32)


def _rebuild_tensor_v2(storage: npt.NDArray[Any], storage_offset: int, size: Sequence[int],
                       stride: Sequence[int], requires_grad: bool = False,
                       backward_hooks: Any = None, metadata: Any = None) -> npt.NDArray[Any]:
    """torch._utils._rebuild_tensor_v2 for numpy: a strided view of the storage, copied."""
    if len(size) == 0:
        return np.array(storage[storage_offset])
    # as_strided trusts its arguments: check the view stays inside the storage, so a crafted
    # file cannot make it read memory outside the array
    if any(n < 0 for n in size) or any(st < 0 for st in stride) or storage_offset < 0:
        raise ConvertError(f"tensor with negative size/stride {size}/{stride}")
    last = storage_offset + sum((n - 1) * st for n, st in zip(size, stride, strict=True))
    if 0 not in size and last >= storage.size:
        raise ConvertError(f"tensor {size}/{stride} at {storage_offset} overruns its storage")
    item = storage.itemsize
    view = np.lib.stride_tricks.as_strided(storage[storage_offset:], shape=tuple(size),
                                           strides=tuple(s * item for s in stride))
    return np.ascontiguousarray(view)


def _rebuild_parameter(data: npt.NDArray[Any], requires_grad: bool = False,
                       backward_hooks: Any = None) -> npt.NDArray[Any]:
    """torch._utils._rebuild_parameter: a Parameter is just its data here."""
    return data


def _rebuild_parameter_with_state(data: npt.NDArray[Any], requires_grad: bool,
                                  backward_hooks: Any, state: Any) -> npt.NDArray[Any]:
    """torch._utils._rebuild_parameter_with_state: extra Python state is not needed here."""
    return data


# Globals that resolve to something real; every other name becomes a Stub class.
_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "set"): set,
    ("__builtin__", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
    ("torch", "Size"): tuple,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
}


class _CheckpointUnpickler(pickle.Unpickler):
    """Unpickles a torch zip checkpoint into stubs and numpy arrays, importing nothing."""

    def __init__(self, data: bytes, archive: zipfile.ZipFile, root: str):
        super().__init__(io.BytesIO(data))
        self.archive, self.root = archive, root
        self.storages: dict[str, npt.NDArray[Any]] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        return _stub_class(module, name)  # never imported: storages, modules, anything else

    def persistent_load(self, pid: Any) -> npt.NDArray[Any]:
        # ('storage', storage_type, key, location, numel)
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise ConvertError(f"unsupported persistent id {pid!r}")
        storage_type, key = pid[1], str(pid[2])
        type_name = getattr(storage_type, "_qualname", str(storage_type)).rsplit(".", 1)[-1]
        if type_name not in _STORAGE_DTYPES:
            raise ConvertError(f"unsupported tensor storage {type_name}")
        if key not in self.storages:
            raw = self.archive.read(f"{self.root}/data/{key}")
            arr = np.frombuffer(raw, dtype=_STORAGE_DTYPES[type_name]).copy()
            if type_name == "BFloat16Storage":
                arr = _bf16_to_f32(arr)
            self.storages[key] = arr
        return self.storages[key]


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint dict with the model as a Stub tree and every tensor a numpy array."""
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise ConvertError(f"{path}: not a torch zip checkpoint ({exc})") from exc
    with archive:
        pkl = [n for n in archive.namelist() if n.endswith("/data.pkl")]
        if len(pkl) != 1:
            raise ConvertError(f"{path}: expected one data.pkl inside, found {len(pkl)}")
        root = pkl[0].removesuffix("/data.pkl")
        byteorder = f"{root}/byteorder"
        if byteorder in archive.namelist() and archive.read(byteorder).strip() != b"little":
            raise ConvertError(f"{path}: big-endian checkpoints are not supported")
        ckpt = _CheckpointUnpickler(archive.read(pkl[0]), archive, root).load()
    if not isinstance(ckpt, dict):
        raise ConvertError(f"{path}: checkpoint is a {type(ckpt).__name__}, not a dict")
    return ckpt


def detection_model(ckpt: dict[str, Any]) -> Stub:
    """The model Ultralytics would run: ``ema`` if saved, else ``model`` (as ``attempt_load``)."""
    model = ckpt.get("ema") or ckpt.get("model")
    if not isinstance(model, Stub) or model.kind != "DetectionModel":
        raise ConvertError(f"checkpoint holds {type(model).__name__}, not a DetectionModel")
    return model
