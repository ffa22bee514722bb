"""Read PyTorch ``torch.save`` state dicts into numpy arrays without importing torch.

ImageNet backbones are mostly published as torchvision ``.pth`` files, and torch is a 1 GB
dependency this project otherwise never needs. A ``.pth`` file is a pickle whose tensors point
at raw storage bytes kept beside it, so a restricted ``pickle.Unpickler`` can rebuild them as
numpy arrays. Only the handful of globals a state dict uses are resolved (tensor rebuild
functions, typed storage classes, ``OrderedDict``); any other global is refused, so a crafted
file cannot run code, and every view into a storage is bounds-checked before it is read.

Two layouts exist:

* legacy (torch < 1.6, e.g. torchvision's 2018 ``mobilenet_v2-b0353104.pth``): five pickles in
  a row -- magic number, protocol version 1001, system info, the object itself (storages as
  persistent ids), the list of storage keys -- then, for each key in that order, the element
  count as little-endian int64 followed by the storage's raw little-endian bytes;
* zip (torch >= 1.6 default): ``<name>/data.pkl`` holds the object, storage ``k`` is the record
  ``<name>/data/k``, and ``<name>/byteorder`` (absent = little) says how its bytes are ordered.
"""
from __future__ import annotations

import io
import pickle
import struct
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable

import numpy as np

from src.model_utils.errors import SSDError

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001
#: Keys under which training scripts commonly nest the state dict inside a bigger checkpoint.
STATE_DICT_WRAPPER_KEYS = ("state_dict", "model")


class TorchFileError(SSDError, ValueError):
    """A file that is not a readable PyTorch state dict (the message names the file)."""


@dataclass(frozen=True)
class StorageType:
    """Stand-in for ``torch.FloatStorage`` & co.: the dtype of the storage's elements."""

    name: str
    dtype: str  # numpy dtype of the stored elements, little-endian
    bfloat16: bool = False  # stored as raw uint16 halves of float32, widened when read


#: ``torch.<name>`` typed storage classes a state dict may reference.
STORAGE_TYPES = {t.name: t for t in (
    StorageType("FloatStorage", "<f4"), StorageType("DoubleStorage", "<f8"),
    StorageType("HalfStorage", "<f2"), StorageType("BFloat16Storage", "<u2", bfloat16=True),
    StorageType("LongStorage", "<i8"), StorageType("IntStorage", "<i4"),
    StorageType("ShortStorage", "<i2"), StorageType("CharStorage", "i1"),
    StorageType("ByteStorage", "u1"), StorageType("BoolStorage", "?"),
    StorageType("UntypedStorage", "u1"),
)}


@dataclass
class _Storage:
    """One storage's elements; legacy files fill ``data`` only after the object pickle is read."""

    kind: StorageType
    numel: int
    data: np.ndarray | None = None
    base: _Storage | None = None  # legacy storage views: a slice of another storage
    base_offset: int = 0

    def array(self) -> np.ndarray:
        if self.base is not None:
            return self.base.array()[self.base_offset:self.base_offset + self.numel]
        if self.data is None:
            raise TorchFileError("a tensor refers to a storage whose bytes are missing from the file")
        return self.data


@dataclass
class _TensorRef:
    """A tensor as pickled: which storage, where it starts, its shape and element strides."""

    storage: Any
    offset: Any
    size: Any
    stride: Any


def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any,
                    *_grad_hooks_metadata: Any) -> _TensorRef:
    """``torch._utils._rebuild_tensor_v2``: the arguments are checked later, when the data is read
    (requires_grad, backward hooks and metadata mean nothing for stored weights)."""
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_parameter(data: Any, *_requires_grad_and_hooks: Any) -> Any:
    """``torch._utils._rebuild_parameter``: an ``nn.Parameter`` is read as its tensor."""
    return data


#: The only globals a pickled state dict may name.
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): kind for name, kind in STORAGE_TYPES.items()},
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only ``_ALLOWED_GLOBALS``; storages come from ``storage_resolver``."""

    def __init__(self, handle: BinaryIO, path: Path,
                 storage_resolver: Callable[[tuple], _Storage] | None = None) -> None:
        super().__init__(handle)
        self._path = path
        self._storage_resolver = storage_resolver

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise TorchFileError(
                f"{self._path}: refusing to load '{module}.{name}': only tensors and (nested) dicts of "
                "tensors are read from PyTorch files; save `model.state_dict()` instead of a whole "
                "model or custom objects") from None

    def persistent_load(self, pid: Any) -> Any:
        if self._storage_resolver is None or not isinstance(pid, tuple) or not pid:
            raise TorchFileError(f"{self._path}: unexpected persistent id {pid!r}")
        typename = pid[0].decode("ascii") if isinstance(pid[0], bytes) else pid[0]
        if typename != "storage":
            raise TorchFileError(f"{self._path}: unsupported persistent object {typename!r}; only tensor "
                                 "storages are read (was a whole model saved instead of its state_dict?)")
        return self._storage_resolver(pid[1:])


def _storage_kind(value: Any, path: Path) -> StorageType:
    if not isinstance(value, StorageType):
        raise TorchFileError(f"{path}: a storage has type {value!r}, not a torch storage class")
    return value


def _decode(raw: bytes, kind: StorageType, big_endian: bool = False) -> np.ndarray:
    """Raw storage bytes -> 1-D native-order numpy array (bfloat16 widened to float32)."""
    dtype = np.dtype(kind.dtype)
    if big_endian:
        dtype = dtype.newbyteorder(">")
    values = np.frombuffer(raw, dtype=dtype).astype(dtype.newbyteorder("="))
    if kind.bfloat16:
        values = (values.astype(np.uint32) << 16).view(np.float32)
    return values


def _load_legacy(handle: BinaryIO, path: Path) -> Any:
    storages: dict[str, _Storage] = {}

    def resolve(data: tuple) -> _Storage:
        if len(data) != 5:
            raise TorchFileError(f"{path}: malformed legacy storage reference {data!r}")
        kind, root_key, _location, numel, view = data
        root = storages.setdefault(str(root_key), _Storage(_storage_kind(kind, path), int(numel)))
        if view is None:
            return root
        view_key, view_offset, view_numel = view
        return storages.setdefault(str(view_key), _Storage(root.kind, int(view_numel), base=root,
                                                           base_offset=int(view_offset)))

    if _RestrictedUnpickler(handle, path).load() != LEGACY_MAGIC_NUMBER:
        raise TorchFileError(f"{path}: not a PyTorch file (wrong magic number)")
    if _RestrictedUnpickler(handle, path).load() != LEGACY_PROTOCOL_VERSION:
        raise TorchFileError(f"{path}: unsupported legacy PyTorch protocol version")
    _RestrictedUnpickler(handle, path).load()  # system info; legacy storage bytes are always little-endian
    result = _RestrictedUnpickler(handle, path, resolve).load()
    keys = _RestrictedUnpickler(handle, path).load()
    for key in keys:
        storage = storages.get(str(key))
        if storage is None or storage.base is not None:
            raise TorchFileError(f"{path}: storage {key!r} is listed in the file but no tensor uses it")
        count_bytes = handle.read(8)
        raw_count = struct.unpack("<q", count_bytes)[0] if len(count_bytes) == 8 else -1
        raw = handle.read(max(raw_count, 0) * np.dtype(storage.kind.dtype).itemsize)
        if raw_count != storage.numel or len(raw) != storage.numel * np.dtype(storage.kind.dtype).itemsize:
            raise TorchFileError(f"{path}: storage {key!r} is truncated or its size does not match "
                                 f"({raw_count} elements in the file, {storage.numel} expected)")
        storage.data = _decode(raw, storage.kind)
    return result


def _zip_prefix(archive: zipfile.ZipFile, path: Path) -> str:
    """The single top-level folder holding ``data.pkl`` (``archive/`` or the saved file's stem)."""
    prefixes = [name[:-len("data.pkl")] for name in archive.namelist()
                if name.endswith("/data.pkl") and name.count("/") == 1]
    if len(prefixes) != 1:
        raise TorchFileError(f"{path}: a zip file but not a torch.save archive (no single <name>/data.pkl)")
    return prefixes[0]


def _load_zip(path: Path) -> Any:
    with zipfile.ZipFile(path) as archive:
        prefix = _zip_prefix(archive, path)
        names = set(archive.namelist())
        big_endian = (f"{prefix}byteorder" in names
                      and archive.read(f"{prefix}byteorder").strip() == b"big")
        storages: dict[str, _Storage] = {}

        def resolve(data: tuple) -> _Storage:
            if len(data) != 4:
                raise TorchFileError(f"{path}: malformed storage reference {data!r}")
            kind, key, numel = _storage_kind(data[0], path), str(data[1]), int(data[3])  # data[2]: device
            if key not in storages:
                record = f"{prefix}data/{key}"
                if record not in names:
                    raise TorchFileError(f"{path}: storage record {record} is missing")
                raw = archive.read(record)
                if len(raw) != numel * np.dtype(kind.dtype).itemsize:
                    raise TorchFileError(f"{path}: storage record {record} has {len(raw)} bytes, "
                                         f"expected {numel} x {kind.name}")
                storages[key] = _Storage(kind, numel, _decode(raw, kind, big_endian))
            return storages[key]

        pickled = archive.read(f"{prefix}data.pkl")
        return _RestrictedUnpickler(io.BytesIO(pickled), path, resolve).load()


def _int_tuple(value: Any) -> tuple[int, ...] | None:
    if isinstance(value, (tuple, list)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return tuple(value)
    return None


def _materialise(ref: _TensorRef, path: Path, name: str) -> np.ndarray:
    """Copy a tensor out of its storage after checking the view stays inside it."""
    if not isinstance(ref.storage, _Storage):
        raise TorchFileError(f"{path}: tensor {name} does not refer to a storage")
    data = ref.storage.array()
    size, stride, offset = _int_tuple(ref.size), _int_tuple(ref.stride), ref.offset
    if size is None or stride is None or len(size) != len(stride) or not isinstance(offset, int):
        raise TorchFileError(f"{path}: tensor {name} has a malformed shape/stride/offset")
    if min(size, default=1) < 0:
        raise TorchFileError(f"{path}: tensor {name} has a negative dimension in {size}")
    if min(size, default=1) == 0:
        return np.zeros(size, dtype=data.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if offset < 0 or min(stride, default=0) < 0 or last >= data.size:
        raise TorchFileError(f"{path}: tensor {name} reaches outside its storage "
                             f"(offset {offset}, size {size}, stride {stride}, storage of {data.size})")
    view = np.lib.stride_tricks.as_strided(data[offset:], shape=size,
                                           strides=tuple(s * data.itemsize for s in stride))
    return np.array(view, order="C")


def _materialise_all(obj: Any, path: Path, name: str = "") -> Any:
    """Replace every tensor reference inside nested dicts/lists by its numpy array."""
    if isinstance(obj, _TensorRef):
        return _materialise(obj, path, name or "<root>")
    if isinstance(obj, dict):
        return {key: _materialise_all(value, path, f"{name}.{key}" if name else str(key))
                for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_materialise_all(value, path, f"{name}[{i}]") for i, value in enumerate(obj))
    return obj


def _as_state_dict(obj: Any, path: Path) -> dict[str, np.ndarray]:
    if isinstance(obj, dict) and obj and all(isinstance(k, str) and isinstance(v, np.ndarray)
                                             for k, v in obj.items()):
        return dict(obj)
    if isinstance(obj, dict):
        for key in STATE_DICT_WRAPPER_KEYS:
            if key in obj:
                return _as_state_dict(obj[key], path)
    described = f"a dict with keys {list(obj)[:8]}" if isinstance(obj, dict) else type(obj).__name__
    raise TorchFileError(f"{path}: holds {described}, not a state dict (a flat dict of name -> tensor, "
                         f"optionally under one of {STATE_DICT_WRAPPER_KEYS})")


def is_torch_file(path: str | Path) -> bool:
    """True for a file in either ``torch.save`` layout (a zip archive or a pickle stream)."""
    path = Path(path)
    with path.open("rb") as handle:
        start = handle.read(2)
    return zipfile.is_zipfile(path) or (len(start) == 2 and start[0] == pickle.PROTO[0])


def load_torch_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Tensors of a PyTorch state-dict file as ``{name: numpy array}`` (native byte order, copies).

    Raises ``FileNotFoundError`` for a missing file and ``TorchFileError`` (a ``ValueError``)
    naming the file for anything that is not a state dict in one of the two torch layouts.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"PyTorch file not found: {path}")
    if not is_torch_file(path):
        raise TorchFileError(f"{path}: not a PyTorch file (neither a torch.save zip archive nor a legacy pickle)")
    try:
        if zipfile.is_zipfile(path):
            loaded = _load_zip(path)
        else:
            with path.open("rb") as handle:
                loaded = _load_legacy(handle, path)
        return _as_state_dict(_materialise_all(loaded, path), path)
    except TorchFileError:
        raise
    except (pickle.UnpicklingError, EOFError, struct.error, zipfile.BadZipFile, ValueError, TypeError,
            AttributeError, IndexError, KeyError) as error:
        raise TorchFileError(f"{path}: corrupt or unsupported PyTorch file "
                             f"({type(error).__name__}: {error})") from error
