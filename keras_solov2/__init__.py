"""keras-solov2: SOLOv2 instance segmentation for Keras 3 (arXiv 2003.10152).

Every public subpackage and module is an attribute of the package after
`import keras_solov2` (`keras_solov2.export.tflite(...)`,
`keras_solov2.evaluation.evaluate(...)`). The library's are imported
here: TensorFlow and Keras make almost all of the import's time, and each of
these adds a few hundredths of a second on top (the optional runtimes, such
as tf2onnx, ONNX Runtime, LiteRT and torch, are imported only by the
functions that use them). The application, `keras_solov2.app` (the command
line, its web server and the files they write), is imported on first access
instead. `cli`, `web` and `inference`, its modules' names before it, still
work for one release and warn (`DeprecationWarning`).
"""

import importlib

from keras_solov2 import _quiet_import

if _quiet_import.is_console_script():
    _quiet_import.import_tensorflow_quietly()

from keras_solov2 import (  # noqa: E402
    callbacks,
    convert,
    data,
    distribution,
    evaluation,
    export,
    io,
    layers,
    losses,
    models,
    multi_worker,
    optimizers,
    training,
    utils,
)
from keras_solov2.models.solov2.solov2 import SOLOv2  # noqa: E402
from keras_solov2.models.solov2.solov2_backbone import SOLOv2Backbone  # noqa: E402
from keras_solov2.optimizers import TorchSGD, WarmupStepSchedule, solov2_optimizer  # noqa: E402
from keras_solov2.version import __version__  # noqa: E402

# Imported by `__getattr__` when first used (PEP 562); the deprecated ones
# are the application's modules under their old names (`_moved`).
_LAZY_MODULES = ("app",)
_DEPRECATED_MODULES = ("cli", "inference", "web")


def __getattr__(name):
    if name in _LAZY_MODULES + _DEPRECATED_MODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY_MODULES))


__all__ = [
    "SOLOv2",
    "SOLOv2Backbone",
    "TorchSGD",
    "WarmupStepSchedule",
    "__version__",
    "app",
    "callbacks",
    "convert",
    "data",
    "distribution",
    "evaluation",
    "export",
    "io",
    "layers",
    "losses",
    "models",
    "multi_worker",
    "optimizers",
    "solov2_optimizer",
    "training",
    "utils",
    "version",
]
