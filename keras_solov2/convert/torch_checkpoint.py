"""Reads PyTorch `.pth` checkpoints into numpy without executing pickle code.

PyTorch's zip format keeps tensors as raw storages next to a pickle
(`*/data.pkl`) that describes how to rebuild them. This reader resolves that
pickle with a restricted unpickler: it rebuilds tensors from the raw
storages with numpy, allows plain containers, and never imports or calls
anything else. Any other global becomes an inert `RefusedObject`; one inside
the state dict is an error, one elsewhere (checkpoint metadata) is reported.
torch itself is not needed. Legacy (pre-1.6, non-zip) checkpoints need torch
(the `torch` extra, `pip install 'keras-solov2[torch]'`): they are read with
`torch.load(..., weights_only=True)` when torch is installed, and give a
clear error otherwise.
"""

import collections
import io
import pickle
import zipfile

import numpy as np

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


class RefusedObject:
    """Stands in for a pickled global that the reader refuses to import."""

    def __init__(self, name, args=()):
        self.name = name
        self.args = args

    def __call__(self, *args, **kwargs):
        return RefusedObject(self.name, args)

    def __setstate__(self, state):
        self.state = state

    def __repr__(self):
        return f"<refused {self.name}>"


class _StorageType:
    def __init__(self, name):
        if name not in _STORAGE_DTYPES:
            raise pickle.UnpicklingError(
                f"unsupported tensor storage type torch.{name}"
            )
        self.dtype = np.dtype(_STORAGE_DTYPES[name])


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
    size, stride = tuple(size), tuple(stride)
    if not size:
        return np.array(storage[storage_offset])
    count = (
        1 + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
        if all(size)
        else 0
    )
    flat = storage[storage_offset : storage_offset + count]
    strides = tuple(s * flat.itemsize for s in stride)
    return np.lib.stride_tricks.as_strided(flat, shape=size, strides=strides).copy()


def _rebuild_parameter(data, requires_grad=None, backward_hooks=None, *unused):
    return data


def _numpy_scalar(dtype, data=None):
    return np.frombuffer(data, dtype=dtype)[0] if data is not None else dtype.type()


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "tuple"): tuple,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, archive, prefix, byteorder):
        super().__init__(file)
        self.archive = archive
        self.prefix = prefix
        self.byteorder = byteorder
        self.refused = []

    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name.endswith("Storage"):
            return _StorageType(name)
        self.refused.append(f"{module}.{name}")
        return RefusedObject(f"{module}.{name}")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        storage_type, key = pid[1], pid[2]
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"unsupported storage {storage_type!r}")
        raw = self.archive.read(f"{self.prefix}/data/{key}")
        dtype = storage_type.dtype.newbyteorder(
            "<" if self.byteorder == "little" else ">"
        )
        return np.frombuffer(raw, dtype=dtype).astype(storage_type.dtype, copy=False)


def read_torch_checkpoint(path):
    """Loads a `.pth` file into nested Python containers of numpy arrays.

    Args:
        path: str. The checkpoint file.

    Returns:
        `(obj, refused)`: the unpickled object, tensors as numpy arrays, and the
        list of refused global names (they appear as `RefusedObject`).

    Raises:
        ValueError: for a file that is neither a zip checkpoint nor readable
            by an installed torch.
    """
    if not zipfile.is_zipfile(path):
        return _read_legacy(path), []
    with zipfile.ZipFile(path) as archive:
        pickles = [
            n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"
        ]
        if len(pickles) != 1:
            raise ValueError(
                f"{path}: not a PyTorch zip checkpoint (expected one data.pkl, found "
                f"{len(pickles)})."
            )
        prefix = pickles[0].rsplit("/", 1)[0] if "/" in pickles[0] else ""
        byteorder = "little"
        if f"{prefix}/byteorder" in archive.namelist():
            byteorder = archive.read(f"{prefix}/byteorder").decode().strip()
        unpickler = _RestrictedUnpickler(
            io.BytesIO(archive.read(pickles[0])), archive, prefix, byteorder
        )
        obj = unpickler.load()
    return obj, unpickler.refused


def _read_legacy(path):
    try:
        import torch
    except ImportError:
        raise ValueError(
            f"{path} is a legacy (pre-zip) PyTorch checkpoint. Reading it needs torch: "
            "`pip install 'keras-solov2[torch]'`, or re-save it with torch>=1.6 "
            "(`torch.save(torch.load(p, weights_only=True), p)`)."
        ) from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for a bad file
        raise ValueError(
            f"{path} is neither a PyTorch zip checkpoint nor a legacy one that "
            f"torch.load(weights_only=True) can read: {type(error).__name__}: "
            f"{error}"
        ) from error

    def to_numpy(value):
        if isinstance(value, torch.Tensor):
            return value.detach().cpu().numpy()
        if isinstance(value, dict):
            return type(value)((k, to_numpy(v)) for k, v in value.items())
        if isinstance(value, (list, tuple)):
            return type(value)(to_numpy(v) for v in value)
        return value

    return to_numpy(obj)


def load_state_dict(path):
    """The `state_dict` of a checkpoint as `{key: numpy array}`, plus metadata.

    Accepts mmdetection checkpoints (`{"meta": ..., "state_dict": ...}`), the
    original SOLO ones (same layout) and bare state dicts.

    Returns:
        `(state_dict, meta, refused)`.

    Raises:
        ValueError: naming the file, when the checkpoint or its state dict
            is not a dict, or when the state dict holds anything but arrays
            (then naming the key). A refused global (a pickled call of
            anything but the tensor rebuilders) is named as `module.name`;
            it was never imported or called.
    """
    obj, refused = read_torch_checkpoint(path)
    if isinstance(obj, dict) and "state_dict" in obj:
        state, meta = obj["state_dict"], obj.get("meta", {})
        where = "its state_dict"
    else:
        state, meta = obj, {}
        where = "the checkpoint"
    if not isinstance(state, dict):
        raise ValueError(
            f"{path}: {where} is {_describe(state)}, not a dict of tensors; the "
            "file is not a plain PyTorch checkpoint."
        )
    for key, value in state.items():
        if not isinstance(value, np.ndarray):
            raise ValueError(
                f"{path}: state_dict entry {key!r} is {_describe(value)}, not a "
                "tensor. The reader only accepts tensors in the state dict."
            )
    return dict(state), meta, refused


def _describe(value):
    if isinstance(value, RefusedObject):
        return (
            f"a refused global {value.name} (a pickled object or call that "
            "would run code when unpickled; it was not imported or called)"
        )
    return f"{value!r:.80} (a {type(value).__name__})"
