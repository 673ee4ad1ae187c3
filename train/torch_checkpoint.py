"""Read a legacy (non-zip) ``torch.save`` state dict into numpy arrays, without torch and without
unrestricted unpickling.

A legacy checkpoint is five things in a row: a magic-number pickle, a protocol-version pickle,
a system-info pickle, the state-dict pickle (tensors refer to their storages through
``persistent_load``), the pickled list of storage keys, and then, per storage in that order,
an int64 element count followed by the raw little-endian data.

Unpickling runs code named by the file. :class:`_AllowListUnpickler` resolves only the four names
a state dict of float and integer tensors needs (``collections.OrderedDict``,
``torch._utils._rebuild_tensor_v2``, ``torch.FloatStorage``, ``torch.LongStorage``), each mapped
to a harmless local stand-in; any other global is refused, so a crafted file cannot run code.

Example:
    >>> tensors = read_legacy_state_dict("efficientnet-lite0-57934424.pth")
    >>> tensors["_conv_stem.weight"].shape
    (32, 3, 3, 3)
"""

from __future__ import annotations

from leukedge.runtime.errors import LeukedgeError  # noqa: E402

import collections
import io
import os
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_STORAGE_DTYPES = {"FloatStorage": np.float32, "LongStorage": np.int64,
                   "DoubleStorage": np.float64, "IntStorage": np.int32}


class CheckpointError(LeukedgeError, ValueError):
    """The file is not a legacy torch state dict this reader accepts; the message says why."""


@dataclass(frozen=True)
class _StorageType:
    name: str

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(_STORAGE_DTYPES[self.name])


@dataclass(frozen=True)
class _StorageRef:
    key: str
    dtype: np.dtype
    size: int


@dataclass(frozen=True)
class _TensorRef:
    storage: _StorageRef
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, hooks=None, *_):
    return _TensorRef(storage, int(offset), tuple(int(s) for s in size),
                      tuple(int(s) for s in stride))


class _AllowListUnpickler(pickle.Unpickler):
    """Resolves only the globals a tensor state dict needs, each to a local stand-in."""

    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise CheckpointError(f"refusing to unpickle {module}.{name}: not part of a plain "
                              "tensor state dict")

    def persistent_load(self, pid):
        # ("storage", type, key, location, size[, view metadata]); views are not supported
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and (len(pid) == 5 or pid[5] is None)):
            raise CheckpointError(f"unexpected persistent id {pid!r:.80}")
        storage_type, key, size = pid[1], pid[2], pid[4]
        return _StorageRef(str(key), storage_type.dtype, int(size))


def _load(stream: io.BufferedIOBase):
    return _AllowListUnpickler(stream).load()


def _read_storages(stream, keys: list[str], refs: dict[str, _StorageRef]) -> dict[str, np.ndarray]:
    out = {}
    for key in keys:
        header = stream.read(8)
        if len(header) != 8:
            raise CheckpointError(f"file ends inside storage {key}")
        (count,) = struct.unpack("<q", header)
        ref = refs.get(key)
        if ref is None or count != ref.size:
            raise CheckpointError(f"storage {key}: {count} elements on disk, "
                                  f"{ref.size if ref else 'no tensor'} expected")
        data = stream.read(count * ref.dtype.itemsize)
        if len(data) != count * ref.dtype.itemsize:
            raise CheckpointError(f"file ends inside storage {key}")
        out[key] = np.frombuffer(data, dtype=ref.dtype.newbyteorder("<")).astype(ref.dtype)
    return out


def _materialise(name: str, ref: _TensorRef, storages: dict[str, np.ndarray]) -> np.ndarray:
    flat = storages[ref.storage.key]
    if not ref.shape:
        return flat[ref.offset:ref.offset + 1].reshape(()).copy()
    itemsize = flat.dtype.itemsize
    last = ref.offset + sum((n - 1) * s for n, s in zip(ref.shape, ref.stride))
    if ref.offset < 0 or last >= flat.size:
        raise CheckpointError(f"tensor {name} reaches outside its storage")
    view = np.lib.stride_tricks.as_strided(flat[ref.offset:], shape=ref.shape,
                                           strides=[s * itemsize for s in ref.stride],
                                           writeable=False)
    return np.array(view)


def read_legacy_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Tensors of a legacy ``torch.save`` state dict, by name, as numpy arrays.

    Raises:
        CheckpointError: not a legacy torch file, a global outside the allow-list, an odd
            storage, or bytes left over or missing.
    """
    data = Path(path).read_bytes()
    stream = io.BytesIO(data)
    try:
        magic = _load(stream)
        if magic != LEGACY_MAGIC:
            raise CheckpointError(f"{path}: not a legacy torch.save file (magic {magic!r:.40})")
        _load(stream), _load(stream)  # protocol version and system info: not needed
        state = _load(stream)
        keys = _load(stream)
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: not a readable legacy torch checkpoint ({e})") from e
    if not isinstance(state, dict) or not isinstance(keys, list):
        raise CheckpointError(f"{path}: expected a state dict and a storage key list")
    tensors = {k: v for k, v in state.items() if isinstance(v, _TensorRef)}
    if len(tensors) != len(state):
        odd = [k for k, v in state.items() if not isinstance(v, _TensorRef)][:3]
        raise CheckpointError(f"{path}: entries that are not tensors, e.g. {odd}")
    refs = {t.storage.key: t.storage for t in tensors.values()}
    storages = _read_storages(stream, [str(k) for k in keys], refs)
    if stream.read(1):
        raise CheckpointError(f"{path}: unexpected bytes after the last storage")
    return {name: _materialise(name, ref, storages) for name, ref in tensors.items()}
