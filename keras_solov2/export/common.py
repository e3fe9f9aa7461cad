"""What the fixed-size exports (`.tflite`, `.onnx`) share.

The checks of their arguments, the traced endpoint (so that both files hold
the same graph) and the JSON written beside them.
"""

import json
import os

import keras

from keras_solov2.export import graphs
from keras_solov2.export.letterbox import PAD_VALUE
from keras_solov2.utils import image_geometry
from keras_solov2.utils.renamed import renamed_keyword

SIGNATURE_NAME = "serving_default"


def require_tensorflow_backend():
    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(
            "Exporting needs the TensorFlow backend (KERAS_BACKEND=tensorflow); "
            f"this process runs {keras.backend.backend()!r}. Save the model "
            "(model.save('m.keras')) and export it from a TensorFlow process."
        )


def check_file_name(path, suffix, kind):
    """A clear error unless `path` ends in `suffix` (`kind`: "TFLite", ...)."""
    if not str(path).endswith(suffix):
        raise ValueError(f"The {kind} file name must end in {suffix}; got {path!r}.")


def input_size(model, size, image_size, where):
    """The input size of the export function `where`: its `input_size=`
    (`size`) or the deprecated `image_size=` (with a `DeprecationWarning`),
    checked, or the model's default export size if neither is given. An
    error names the keyword the caller typed."""
    name = "input_size" if image_size is None else "image_size"
    size = renamed_keyword(size, image_size, "input_size", name, where, stacklevel=4)
    if size is None and model.image_converter.test_scale is None:
        raise ValueError(
            "This model has no `test_scale`, so there is no default export size: "
            "pass `input_size=(height, width)`."
        )
    if size is None:
        return graphs.default_image_size(model)
    try:
        return graphs.check_image_size(size)
    except ValueError:
        raise ValueError(
            f"`{name}` must be (height, width), two positive ints, e.g. "
            f"(448, 608); got {size!r}."
        ) from None


def fixed_size_archive(model, image_size, include_postprocessing):
    """`(archive, endpoint)`: a `keras.export.ExportArchive` tracking `model`
    with one endpoint, `serving_default`, `graphs.fixed_size_function` for
    one uint8 `(1, H, W, 3)` tensor named `image`. The `.tflite` converts
    the archive's SavedModel; the `.onnx` converts the endpoint, a
    `tf.function`."""
    import tensorflow as tf

    archive = keras.export.ExportArchive()
    archive.track(model)
    endpoint = archive.add_endpoint(
        SIGNATURE_NAME,
        graphs.fixed_size_function(model, image_size, include_postprocessing),
        input_signature=[
            tf.TensorSpec((1, *image_size, 3), tf.uint8, name=graphs.INPUT_NAME)
        ],
    )
    return archive, endpoint


def metadata_file(path):
    """The JSON written beside an export: `model.tflite` -> `model.tflite.json`.

    The full file name plus `.json`, so that a `.tflite` and a `.onnx` of
    one stem each keep their own.
    """
    return str(path) + ".json"


def read_metadata(path, file_format):
    """`(metadata, json_path)` of the export at `path`, checked.

    Reads `metadata_file(path)`, or else the JSON that earlier versions
    wrote at the stem (`model.json`) when it describes this format.

    Args:
        path: str. The `.tflite` or `.onnx` file.
        file_format: str. `"tflite"` or `"onnx"`.

    Raises:
        FileNotFoundError: neither JSON exists (the message names both).
        ValueError: the JSON is not valid JSON, or not keras-solov2's
            for a `file_format` file.
    """
    expected = f"keras_solov2.{file_format}/"
    candidates = [metadata_file(path), os.path.splitext(str(path))[0] + ".json"]
    for json_path in candidates:
        if not os.path.isfile(json_path):
            continue
        try:
            with open(json_path) as f:
                metadata = json.load(f)
        except (OSError, ValueError) as error:
            raise ValueError(f"{json_path} is not valid JSON ({error}).") from None
        found = metadata.get("format") if isinstance(metadata, dict) else None
        if str(found).startswith(expected):
            return metadata, json_path
        if json_path == candidates[0]:
            raise ValueError(
                f"{json_path} is not the JSON that keras-solov2 writes beside a "
                f".{file_format} (its format is {found!r}, not '{expected}1'): "
                f"export {os.path.basename(str(path))} again."
            )
    raise FileNotFoundError(
        f"No {os.path.basename(candidates[0])} beside {path}: the JSON that "
        f"`keras-solov2 export --format {file_format}` writes next to the file "
        "(class names, thresholds, input size). Copy it there, or export again."
    )


def write_metadata(
    model, path, file_format, image_size, include_postprocessing, **fields
):
    """Writes what an app needs beside the tensors to `metadata_file(path)`.

    The class names and COCO category ids, the thresholds, the mask stride,
    the input size and padding value; `file_format` (`"tflite"`, `"onnx"`)
    names the format, `fields` are added as they are.

    Returns:
        str: the JSON's path.
    """
    divisor = model.size_divisor
    metadata = {
        "format": f"keras_solov2.{file_format}/1",
        "input": {
            "name": graphs.INPUT_NAME,
            "shape": [1, *image_size, 3],
            "dtype": "uint8",
            "pad_value": list(PAD_VALUE),
        },
        "outputs": list(
            graphs.OUTPUT_NAMES if include_postprocessing else graphs.BODY_OUTPUT_NAMES
        ),
        "padded_size": [image_geometry.padded_length(v, divisor) for v in image_size],
        "mask_stride": model.decoder.mask_stride,
        "mask_threshold": model.mask_threshold,
        "score_threshold": model.score_threshold,
        "max_detections": model.max_detections,
        "max_candidates": model.max_candidates,
        "pre_nms_top_k": model.pre_nms_top_k,
        **(
            {
                "input_mask_slots": graphs.input_mask_slots(
                    model.max_detections, image_size
                )
            }
            if include_postprocessing
            else {}
        ),
        "num_classes": model.num_classes,
        "class_names": model.class_names,
        "category_ids": model.category_ids,
        **fields,
    }
    metadata_path = metadata_file(path)
    with open(metadata_path, "w") as f:
        json.dump(metadata, f, indent=2)
    return metadata_path
