"""keras-solov2: SOLOv2 instance segmentation for Keras 3 (arXiv 2003.10152)."""

from keras_solov2 import _quiet_import

if _quiet_import.is_console_script():
    _quiet_import.import_tensorflow_quietly()

from keras_solov2 import convert, data  # noqa: E402, evaluation, layers, losses, models
from keras_solov2.models.solov2 import SOLOv2  # noqa: E402
from keras_solov2.models.solov2_backbone import SOLOv2Backbone  # noqa: E402
from keras_solov2.optimizers import TorchSGD, WarmupStepSchedule, solov2_optimizer  # noqa: E402
from keras_solov2.version import __version__  # noqa: E402

__all__ = [
    "SOLOv2",
    "SOLOv2Backbone",
    "TorchSGD",
    "WarmupStepSchedule",
    "__version__",
    "convert",
    "data",
    "evaluation",
    "layers",
    "losses",
    "models",
    "solov2_optimizer",
]
