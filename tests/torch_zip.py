"""Writes PyTorch-format zip checkpoints without torch, for tests.

The pickle names the same globals `torch.save` writes (`torch._utils.
_rebuild_tensor_v2`, `torch.FloatStorage`, ...) through stand-in modules
that exist only while writing, and stores each tensor as a raw storage.
"""

import collections
import contextlib
import io
import pickle
import sys
import types
import zipfile

import numpy as np

_STORAGES = {
    np.dtype(np.float32): "FloatStorage",
    np.dtype(np.float64): "DoubleStorage",
    np.dtype(np.float16): "HalfStorage",
    np.dtype(np.int64): "LongStorage",
    np.dtype(np.int32): "IntStorage",
    np.dtype(np.uint8): "ByteStorage",
    np.dtype(np.bool_): "BoolStorage",
}


@contextlib.contextmanager
def _fake_torch():
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called while writing")

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    for name in set(_STORAGES.values()):
        setattr(torch, name, type(name, (), {"__module__": "torch"}))
    torch._utils = utils
    saved = {k: sys.modules.get(k) for k in ("torch", "torch._utils")}
    sys.modules["torch"], sys.modules["torch._utils"] = torch, utils
    try:
        yield torch, utils
    finally:
        for key, value in saved.items():
            if value is None:
                sys.modules.pop(key, None)
            else:
                sys.modules[key] = value


class _Tensor:
    def __init__(self, array):
        self.array = np.array(array, order="C")  # keeps 0-d arrays 0-d


class PickledCall:
    """Pickles as `function(*args)`: a plain `pickle.load` would call it.

    Put one anywhere in the object given to `write_torch_checkpoint` (as the
    state dict, or as one of its entries) to test that the reader refuses it
    without calling it.
    """

    def __init__(self, function, args=()):
        self.function, self.args = function, tuple(args)

    def __reduce__(self):
        return self.function, self.args


def write_torch_checkpoint(path, obj, extra_calls=()):
    """Saves `obj` (containers of numpy arrays) like `torch.save` would.

    `extra_calls` are `(function, args)` pairs pickled as top-level entries
    `__extra_<i>__` that would call `function(*args)` when unpickled by a
    plain `pickle.load`, to test that the reader never does. A `PickledCall`
    inside `obj` does the same in place.
    """
    storages = []

    with _fake_torch() as (torch, utils):

        def reduce_tensor(tensor):
            a = tensor.array
            strides = tuple(s // a.itemsize for s in a.strides)
            return (
                utils._rebuild_tensor_v2,
                (_Storage(a), 0, a.shape, strides, False, collections.OrderedDict()),
            )

        class _Storage:
            def __init__(self, array):
                self.array = array

        class Pickler(pickle.Pickler):
            dispatch_table = {_Tensor: reduce_tensor}

            def persistent_id(self, value):
                if isinstance(value, _Storage):
                    key = str(len(storages))
                    storages.append(value.array)
                    storage_type = getattr(torch, _STORAGES[value.array.dtype])
                    return ("storage", storage_type, key, "cpu", value.array.size)
                return None

        def wrap(value):
            if isinstance(value, np.ndarray):
                return _Tensor(value)
            if isinstance(value, dict):
                return type(value)((k, wrap(v)) for k, v in value.items())
            if isinstance(value, (list, tuple)):
                return type(value)(wrap(v) for v in value)
            return value

        payload = wrap(obj)
        for i, (function, args) in enumerate(extra_calls):
            payload[f"__extra_{i}__"] = PickledCall(function, args)
        buffer = io.BytesIO()
        Pickler(buffer, protocol=2).dump(payload)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", buffer.getvalue())
        archive.writestr("archive/byteorder", "little")
        archive.writestr("archive/version", "3\n")
        for i, array in enumerate(storages):
            archive.writestr(f"archive/data/{i}", array.tobytes())
