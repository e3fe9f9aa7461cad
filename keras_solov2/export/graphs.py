"""The functions that exports trace: fixed-size (TFLite) and any-size (SavedModel).

Only `keras.ops` and the model's own layers: the graphs are the ones that
`model.predict` runs, less the Python around them. The model imports the
exporters only when it calls them (`SOLOv2.export`), never at import time.
"""

import numpy as np
from keras import ops

from keras_solov2.layers.group_normalization import float16_safe_statistics
from keras_solov2.layers.spatial import resize
from keras_solov2.models.solov2 import solov2_predict
from keras_solov2.models.solov2.solov2_decoder import features_decoder
from keras_solov2.utils import image_geometry

# The `.tflite` outputs (the contract in docs/android.md), in this order.
OUTPUT_NAMES = (
    "masks",
    "labels",
    "scores",
    "boxes",
    "num_detections",
    "candidates_overflow",
    "input_masks",
)
# Detections whose masks the file also returns at the input size, as uint8:
# all that an app has to do with them is read them (docs/android.md).
INPUT_MASK_SLOTS = 16
# Values a uint8 output may hold: LiteRT's GPU accelerator on WebGPU copies
# one out with a workgroup per 64 values, at most 65,535 of them in a
# dispatch; past that it returns garbage (seen on Mesa's lavapipe:
# 16 x 480 x 640 masks asked for 76,800 workgroups).
UINT8_OUTPUT_LIMIT = 65_535 * 64
# The dense body's outputs (`include_postprocessing=False`).
BODY_OUTPUT_NAMES = ("category_logits", "kernels", "mask_features")
INPUT_NAME = "image"
# The name scope of the post-processing in the traced graph: int8 export
# keeps every tensor under it in float32.
DECODER_NAME = "export_decoder"


def check_image_size(image_size):
    """`(height, width)` as two positive Python ints, or a clear error."""
    try:
        height, width = (int(v) for v in image_size)
        ok = all(int(v) == v for v in image_size) and height > 0 and width > 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(
            f"`image_size` must be (height, width), two positive ints, e.g. "
            f"(448, 608); got {image_size!r}."
        )
    return height, width


def default_image_size(model):
    """A 4:3 landscape frame at the model's test scale.

    The short side of `test_scale` (448 for the light models, 800 for the
    full ones) by 4/3 of it, rounded up to `size_divisor`: (448, 608) and
    (800, 1088), the canvas that a 4:3 camera frame or photo fills.
    """
    test_scale = model.image_converter.test_scale
    if test_scale is None:
        raise ValueError(
            "This model has no `test_scale`, so there is no default export size: "
            "pass `image_size=(height, width)`."
        )
    short = min(test_scale)
    long_side = image_geometry.padded_length(
        int(np.ceil(short * 4 / 3)), model.size_divisor
    )
    return short, min(long_side, max(test_scale))


def fixed_size_function(model, image_size, include_postprocessing=True):
    """`serve(image)` for one uint8 `(1, H, W, 3)` image of a fixed size.

    The image is padded (bottom and right) to a multiple of the model's
    `size_divisor` with the ImageNet mean, so that after normalisation the
    padding is zero as in `model.predict`. The padding is a concatenation
    with constants: 4-D, static, and accepted by LiteRT's GPU accelerator.
    """
    height, width = check_image_size(image_size)
    divisor = model.size_divisor
    padded = (
        image_geometry.padded_length(height, divisor),
        image_geometry.padded_length(width, divisor),
    )
    mean = np.asarray(image_geometry.PIXEL_MEAN, np.float32)
    right = np.broadcast_to(mean, (1, height, padded[1] - width, 3)).copy()
    bottom = np.broadcast_to(mean, (1, padded[0] - height, padded[1], 3)).copy()
    decoder = (
        features_decoder(model.decoder, name=DECODER_NAME)
        if include_postprocessing
        else None
    )

    def serve(image):
        x = ops.cast(image, "float32")
        if padded[1] > width:
            x = ops.concatenate([x, ops.convert_to_tensor(right)], axis=2)
        if padded[0] > height:
            x = ops.concatenate([x, ops.convert_to_tensor(bottom)], axis=1)
        # Statistics that a GPU computing in float16 keeps accurate.
        with float16_safe_statistics():
            dense = model(x, training=False)
        if decoder is None:
            return {name: dense[name] for name in BODY_OUTPUT_NAMES}
        detections = decoder(
            dense["category_logits"],
            dense["kernels"],
            dense["mask_features"],
            resized_size=(height, width),
            original_size=(height, width),
        )
        detections["masks"] = detections.pop("mask_probs")
        detections["input_masks"] = input_masks(
            detections["masks"],
            (height, width),
            decoder.mask_threshold,
            decoder.mask_stride,
        )
        return {name: detections[name] for name in OUTPUT_NAMES}

    return serve


def input_mask_slots(max_detections, image_size):
    """How many slots `input_masks` holds for a `(H, W)` input:
    `min(max_detections, INPUT_MASK_SLOTS, UINT8_OUTPUT_LIMIT // (H * W))`,
    at least 1 (15 at 448x608, 13 at 480x640, 4 at 800x1088)."""
    height, width = image_size
    fitting = max(1, UINT8_OUTPUT_LIMIT // (height * width))
    return min(max_detections, INPUT_MASK_SLOTS, fitting)


def input_masks(mask_probs, image_size, mask_threshold, mask_stride):
    """The first `input_mask_slots` masks at the input size, uint8 0 or 255.

    `paste_masks` for an image that is the input itself (upsampled
    x`mask_stride`, cropped to the unpadded input, thresholded), for the
    top-scored slots only: on a GPU it costs less than reading the stride-4
    probabilities back and upsampling them on the host.
    """
    slots = input_mask_slots(mask_probs.shape[1], image_size)
    h, w = mask_probs.shape[2], mask_probs.shape[3]
    x = ops.transpose(mask_probs[:, :slots], (0, 2, 3, 1))
    x = resize(x, (h * mask_stride, w * mask_stride), "bilinear")
    x = x[:, : image_size[0], : image_size[1], :]
    # 0 or 255: an alpha mask, drawn as it is (Android's ALPHA_8 bitmaps,
    # Pillow's "L" masks). Thresholded before the transpose back, which then
    # moves bytes, not floats (10 ms instead of 13 on a CPU).
    x = ops.cast(ops.cast(x > mask_threshold, "float32") * 255.0, "uint8")
    return ops.transpose(x, (0, 3, 1, 2))


def any_size_function(model):
    """`serve(images)` for a uint8 `(batch, H, W, 3)` batch of any size: the
    model's own predict step (resize, padding, network, decoding), all of it
    in the TensorFlow graph (no XLA program, whatever `jit_compile`)."""

    def serve(images):
        return dict(solov2_predict.predict_step(model, (images,), xla=False))

    return serve
