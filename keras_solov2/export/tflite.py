"""TFLite / LiteRT export with builtin ops only, Matrix NMS inside the graph."""

import glob
import os
import tempfile
import warnings

import numpy as np

from keras_solov2.export import common, graphs
from keras_solov2.export.letterbox import letterbox

# Imported from here by runtime.py, saved_model.py and web.py.
metadata_file = common.metadata_file
_require_tensorflow_backend = common.require_tensorflow_backend

QUANTIZATIONS = (None, "float16", "dynamic_int8", "int8")


def tflite(
    model,
    path,
    input_size=None,
    quantization=None,
    representative_data=None,
    num_calibration_images=32,
    include_postprocessing=True,
    verbose=True,
    image_size=None,
):
    """Writes a `.tflite` model for one uint8 image of a fixed size.

    The file has one signature, `serving_default`, with one input `image`:
    uint8 `(1, H, W, 3)`, RGB 0..255, `input_size` given here; the app
    letterboxes its frames to that size (`keras_solov2.export.letterbox`).
    Normalisation, padding to a multiple of 32, the network, point NMS, the
    dynamic convolution and Matrix NMS are all inside. Outputs
    (`D = model.max_detections`, slots sorted by score, padding last as in
    `model.predict`):

    - `masks`: float32 `(1, D, H'/4, W'/4)` mask probabilities at stride 4
      of the padded input `(H', W')`; upsample x4, crop to `(H, W)` (and
      to the letterboxed image inside it), threshold at
      `model.mask_threshold` (`keras_solov2.layers.paste_masks` does it);
    - `labels`: int32 `(1, D)`, `-1` for empty slots;
    - `scores`: float32 `(1, D)`, `0` for empty slots;
    - `boxes`: float32 `(1, D, 4)`, `[x1, y1, x2, y2]` in input pixels;
    - `num_detections`: int32 `(1,)`;
    - `candidates_overflow`: int32 `(1,)`, the candidates that the
      decoder's caps left out and that could have changed the result
      (`0`: exact);
    - `input_masks`: uint8 `(1, S, H, W)`, the first `S` slots' masks
      upsampled to the input, 255 inside and 0 outside: what an app draws,
      with no work of its own (`masks` for the later slots). `S` is
      `min(D, 16, 4,194,240 // (H * W))`, at least 1: 15 at 448x608, 13 at
      480x640, 4 at 800x1088 (WebGPU's limit on one uint8 output).

    Every op of the file compiles on LiteRT's GPU accelerator alone
    (docs/android.md). With `include_postprocessing=False` the file holds
    the dense body only (outputs `category_logits`, `kernels`,
    `mask_features`).

    Beside the file, `model.tflite.json` (its name plus `.json`) holds what the app
    needs and the tensors do not say: the class names and COCO category
    ids, the mask threshold and stride, the input size and padding value.

    Conversion uses `supported_ops=[TFLITE_BUILTINS]` (plus
    `TFLITE_BUILTINS_INT8` for `"int8"`): an op without a builtin kernel is
    a conversion error, never a Flex op. Keras's own `format="litert"`
    enables SELECT_TF_OPS; this does not go through it.

    Args:
        model: a `keras_solov2.SOLOv2` (TensorFlow backend).
        path: str. The `.tflite` file to write.
        input_size: `(height, width)` of the input. Defaults to a 4:3
            landscape frame at the model's test scale: `(448, 608)` for the
            light models, `(800, 1088)` for the full ones.
        quantization: `None` (float32), `"float16"` (float16 weights),
            `"dynamic_int8"` (int8 weights, float activations) or `"int8"`
            (int8 weights and activations where TFLite has int8 kernels,
            calibrated on `representative_data`).
        representative_data: for `"int8"`: a `tf.data.Dataset` of images
            (or of `(images, ...)` / `{"images": ...}` elements, batched or
            not), a `keras_solov2.data.CocoDataset`, a folder of images, or
            a sequence of `(h, w, 3)` arrays. Each image is letterboxed to
            `input_size`.
        num_calibration_images: int. Images taken from `representative_data`.
            Defaults to `32`. TFLite calibrates with reference kernels: about
            15 s an image for a light R18 at 448x608, 60 s for an R50 at
            800x1088 on 2 cores.
        include_postprocessing: bool. Defaults to `True`.
        verbose: bool. Print what was written. Defaults to `True`.
        image_size: the deprecated name of `input_size`
            (`DeprecationWarning`; removed in the next release).

    Returns:
        str: `path`.
    """
    import tensorflow as tf

    common.require_tensorflow_backend()
    if quantization not in QUANTIZATIONS:
        raise ValueError(
            f"`quantization` must be one of {QUANTIZATIONS}; got {quantization!r}."
        )
    if quantization == "int8" and representative_data is None:
        raise ValueError(
            'quantization="int8" calibrates on your images: pass '
            "`representative_data` (a tf.data.Dataset of images, a CocoDataset, "
            "an image folder or a list of images)."
        )
    if quantization != "int8" and representative_data is not None:
        raise ValueError(
            '`representative_data` is used only with quantization="int8"; got '
            f"quantization={quantization!r}."
        )
    common.check_file_name(path, ".tflite", "TFLite")
    input_size = common.input_size(
        model, input_size, image_size, "keras_solov2.export.tflite"
    )
    if quantization == "int8":
        images = list(
            _calibration_images(representative_data, input_size, num_calibration_images)
        )

    with tempfile.TemporaryDirectory() as tmp:
        saved = os.path.join(tmp, "saved_model")
        archive, _ = common.fixed_size_archive(
            model, input_size, include_postprocessing
        )
        archive.write_out(saved, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(
            saved, signature_keys=[common.SIGNATURE_NAME]
        )
        supported = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if quantization is not None:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantization == "float16":
            converter.target_spec.supported_types = [tf.float16]
        elif quantization == "int8":
            supported = [
                tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
                tf.lite.OpsSet.TFLITE_BUILTINS,
            ]

            def representative_dataset():
                for image in images:
                    yield {graphs.INPUT_NAME: image[None]}

            converter.representative_dataset = representative_dataset
        converter.target_spec.supported_ops = supported
        try:
            if quantization == "int8":
                flatbuffer = _int8_body_only(converter, saved, representative_dataset)
            else:
                flatbuffer = converter.convert()
        except Exception as error:  # the converter raises ConverterError etc.
            raise RuntimeError(
                f"TFLite conversion with builtin ops only failed for {path}: {error}"
            ) from error
    _check_builtins(flatbuffer, path)
    with open(path, "wb") as f:
        f.write(flatbuffer)
    metadata_path = common.write_metadata(
        model,
        path,
        "tflite",
        input_size,
        include_postprocessing,
        signature=common.SIGNATURE_NAME,
        quantization=quantization,
    )
    if verbose:
        print(
            f"Wrote {path} ({len(flatbuffer) / 2**20:.1f} MiB, input uint8 "
            f"(1, {input_size[0]}, {input_size[1]}, 3), quantization "
            f"{quantization or 'none (float32)'}) and {metadata_path}."
        )
    return str(path)


def _int8_body_only(converter, saved, representative_dataset):
    """Full-integer quantisation of the dense body; post-processing in float.

    Scores, mask areas, IoUs and the maskness are divided and compared in
    the post-processing; quantised, a divisor rounds to zero and TFLite's
    int8 DIV fails at run time. So every tensor under the decoder's name
    scope is denylisted (`QuantizationDebugOptions`), found by name in a
    float conversion of the same SavedModel.
    """
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    float_converter = tf.lite.TFLiteConverter.from_saved_model(
        saved, signature_keys=[common.SIGNATURE_NAME]
    )
    float_converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    names = [
        t["name"]
        for t in Interpreter(
            model_content=float_converter.convert()
        ).get_tensor_details()
        if graphs.DECODER_NAME in t["name"]
    ]
    options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=names)
    with warnings.catch_warnings():
        # The debugger calibrates with the deprecated tf.lite.Interpreter.
        warnings.filterwarnings("ignore", "(?s).*tf.lite.Interpreter is deprecated")
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter,
            debug_dataset=representative_dataset,
            debug_options=options,
        )
        return debugger.get_nondebug_quantized_model()


def _check_builtins(flatbuffer, path):
    """Refuses Flex ops and unfrozen variables (the converter traps)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        # The converter already refused non-builtin ops; this second audit
        # needs the runtime (the `litert` extra).
        warnings.warn(
            f"ai-edge-litert is not installed: the op audit of {path} was "
            "skipped (pip install 'keras-solov2[litert]').",
            stacklevel=3,
        )
        return
    ops = {
        op["op_name"] for op in Interpreter(model_content=flatbuffer)._get_ops_details()
    }
    bad = sorted(
        op for op in ops if op.startswith("Flex") or "VAR" in op or op == "CUSTOM"
    )
    if bad:
        raise RuntimeError(
            f"The converted model for {path} has ops that are not plain builtins: "
            f"{bad}. Please report this as a bug."
        )


def _calibration_images(data, input_size, limit):
    """Up to `limit` letterboxed uint8 `(H, W, 3)` images from `data`."""
    count = 0
    for image in _iterate_images(data):
        image = np.asarray(image)
        if image.dtype != np.uint8:
            raise ValueError(
                "Calibration images must be uint8 RGB (0..255), as the exported "
                f"model's input; got {image.dtype}."
            )
        yield letterbox(image, input_size)[0]
        count += 1
        if count >= limit:
            return
    if count == 0:
        raise ValueError(f"`representative_data` gave no images: {data!r}.")


def _iterate_images(data):
    from keras_solov2.io import IMAGE_EXTENSIONS, load_image

    if isinstance(data, (str, os.PathLike)):
        folder = str(data)
        if not os.path.isdir(folder):
            raise ValueError(f"`representative_data` folder {folder!r} does not exist.")
        paths = sorted(
            p
            for p in glob.glob(os.path.join(folder, "*"))
            if p.lower().endswith(IMAGE_EXTENSIONS)
        )
        if not paths:
            raise ValueError(
                f"No images ({', '.join(IMAGE_EXTENSIONS)}) in {folder!r}."
            )
        for p in paths:
            yield load_image(p)
        return
    if hasattr(data, "image_record") and hasattr(data, "image_dir"):  # CocoDataset
        for i in range(len(data)):
            record = data.image_record(i)
            yield load_image(os.path.join(data.image_dir, record["file_name"]))
        return
    if hasattr(data, "as_numpy_iterator"):  # tf.data.Dataset
        for element in data.as_numpy_iterator():
            if isinstance(element, dict):
                element = element["images"]
            elif isinstance(element, tuple):
                element = element[0]
                if isinstance(element, dict):
                    element = element["images"]
            element = np.asarray(element)
            yield from element if element.ndim == 4 else [element]
        return
    yield from data
