"""Read PyTorch's legacy (non-zip) serialization without torch.

Layout of such a file (torch.save with _use_new_zipfile_serialization=False):
  pickle: magic number 0x1950a86a20f9469cfc6c
  pickle: protocol version (1001)
  pickle: sys info dict (endianness, type sizes)
  pickle: the object (here a state dict) whose tensors reference storages via
          persistent ids ('storage', StorageType, key, location, numel, view_metadata)
  pickle: list of storage keys, in the order their bytes follow
  for each key: 8-byte little-endian element count, then numel * itemsize raw bytes
"""

from __future__ import annotations

import collections
import io
import pickle
import struct

import numpy as np

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001

_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _StorageType:
    def __init__(self, name: str):
        self.name = name
        self.dtype = np.dtype(_STORAGE_DTYPES[name]).newbyteorder("<")


class _Storage:
    """Placeholder filled in once the raw storage bytes are read."""

    def __init__(self, key: str, stype: _StorageType, numel: int):
        self.key = key
        self.stype = stype
        self.numel = numel
        self.array: np.ndarray | None = None


class _LazyTensor:
    def __init__(self, storage: _Storage, offset: int, size, stride):
        self.storage = storage
        self.offset = int(offset)
        self.size = tuple(int(s) for s in size)
        self.stride = tuple(int(s) for s in stride)

    def materialize(self) -> np.ndarray:
        base = self.storage.array
        if base is None:
            raise ValueError(f"storage {self.storage.key} never read")
        item = base.dtype.itemsize
        if not self.size:
            return base[self.offset].copy()
        # bounds check before as_strided
        last = self.offset + sum((s - 1) * st for s, st in zip(self.size, self.stride) if s > 0)
        if any(s == 0 for s in self.size):
            return np.zeros(self.size, dtype=base.dtype)
        if last >= base.size or self.offset < 0 or any(st < 0 for st in self.stride):
            raise ValueError(f"tensor view out of range of storage {self.storage.key}")
        view = np.lib.stride_tricks.as_strided(
            base[self.offset:],
            shape=self.size,
            strides=tuple(st * item for st in self.stride),
            writeable=False,
        )
        return np.ascontiguousarray(view)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    return _LazyTensor(storage, storage_offset, size, stride)


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _LazyTensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    return data


class _Unpickler(pickle.Unpickler):
    def __init__(self, f, storages: dict):
        super().__init__(f)
        self.storages = storages

    def find_class(self, module, name):
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor_v2
        if module == "torch._utils" and name == "_rebuild_tensor":
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        _, stype, key, _location, numel, view_metadata = pid
        if view_metadata is not None:
            raise pickle.UnpicklingError("storage views are not supported")
        if not isinstance(stype, _StorageType):
            raise pickle.UnpicklingError(f"bad storage type {stype!r}")
        st = self.storages.get(key)
        if st is None:
            st = self.storages[key] = _Storage(key, stype, int(numel))
        return st


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")


def load_state_dict(path: str) -> "collections.OrderedDict[str, np.ndarray]":
    """Load a legacy-format state dict as an ordered dict of numpy arrays."""
    with open(path, "rb") as fh:
        data = fh.read()
    f = io.BytesIO(data)
    magic = _PlainUnpickler(f).load()
    if magic != MAGIC_NUMBER:
        raise ValueError(f"{path}: not a legacy torch file (magic {magic!r})")
    proto = _PlainUnpickler(f).load()
    if proto != PROTOCOL_VERSION:
        raise ValueError(f"{path}: unsupported protocol version {proto!r}")
    sys_info = _PlainUnpickler(f).load()
    if not sys_info.get("little_endian", False):
        raise ValueError(f"{path}: big-endian files are not supported")
    storages: dict[str, _Storage] = {}
    obj = _Unpickler(f, storages).load()
    keys = _PlainUnpickler(f).load()
    for key in keys:
        st = storages.get(key)
        if st is None:
            raise ValueError(f"{path}: storage {key} not referenced")
        (numel,) = struct.unpack("<q", f.read(8))
        if numel != st.numel:
            raise ValueError(f"{path}: storage {key}: numel {numel} != {st.numel}")
        nbytes = numel * st.stype.dtype.itemsize
        raw = f.read(nbytes)
        if len(raw) != nbytes:
            raise ValueError(f"{path}: truncated storage {key}")
        st.array = np.frombuffer(raw, dtype=st.stype.dtype, count=numel)
    if f.read(1):
        raise ValueError(f"{path}: trailing bytes after the last storage")
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: top-level object is {type(obj).__name__}, not a dict")
    out = collections.OrderedDict()
    for k, v in obj.items():
        if not isinstance(v, _LazyTensor):
            raise ValueError(f"{path}: entry {k} is not a tensor")
        out[k] = v.materialize()
    return out
