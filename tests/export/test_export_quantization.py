"""Export: quantized TFLite files (float16, dynamic int8, int8) and the
calibration images of int8."""

import numpy as np
import pytest
import tflite_files  # noqa: F401  (skips this file without ai-edge-litert)
from detection_match import match_detections
from helpers import IMAGE_SIZE, keras_features, run_interpreter, sample_image
from tflite_files import ops_and_ranks

from keras_solov2 import export

pytestmark = pytest.mark.tflite


@pytest.mark.parametrize(
    "quantization,min_iou,max_score_diff",
    [
        ("float16", 0.9, 0.02),
        ("dynamic_int8", 0.5, 0.1),
        # Calibration and the float conversion for the denylist: the slowest.
        pytest.param("int8", 0.3, 0.25, marks=pytest.mark.slow),
    ],
)
def test_quantized_models_run_with_builtins_and_agree_loosely(
    model, tmp_path, quantization, min_iou, max_score_diff
):
    path = str(tmp_path / f"{quantization}.tflite")
    rng = np.random.default_rng(5)
    calibration = (
        [rng.integers(0, 256, (50, 80, 3)).astype("uint8") for _ in range(4)]
        if quantization == "int8"
        else None
    )
    export.tflite(
        model,
        path,
        input_size=IMAGE_SIZE,
        quantization=quantization,
        representative_data=calibration,
        verbose=False,
    )
    ops, ranks = ops_and_ranks(path)
    assert not [op for op in ops if op.startswith("Flex") or "VAR" in op], ops
    image = sample_image()
    got = run_interpreter(path, image)
    for key, value in got.items():
        assert np.isfinite(value).all(), key
    expected = keras_features(model, image)
    match = match_detections(
        expected, {**got, "mask_probs": got["masks"]}, "mask_probs"
    )
    # Loose bounds on a random tiny model; the README reports a trained one.
    assert np.median(match["ious"]) >= min_iou, match
    assert np.median(match["score_diffs"]) <= max_score_diff, match


def test_calibration_images_come_from_every_kind_of_representative_data(tmp_path):
    import tensorflow as tf

    from keras_solov2.data import CocoDataset, generate_shapes_dataset
    from keras_solov2.export.tflite import _calibration_images

    annotations = generate_shapes_dataset(
        str(tmp_path / "s"), 3, image_size=(40, 30), seed=0
    )
    folder = str(tmp_path / "s" / "images")
    coco = CocoDataset(annotations, folder)
    pixels = np.random.default_rng(0).integers(0, 256, (3, 40, 30, 3)).astype("uint8")
    sources = {
        "folder": folder,
        "CocoDataset": coco,
        "tf.data batched": tf.data.Dataset.from_tensor_slices(pixels).batch(2),
        "tf.data (x, y)": tf.data.Dataset.from_tensor_slices((pixels, pixels[:, 0])),
        "tf.data dict": tf.data.Dataset.from_tensor_slices({"images": pixels}),
        "list": list(pixels),
    }
    for name, data in sources.items():
        images = list(_calibration_images(data, IMAGE_SIZE, limit=2))
        assert len(images) == 2, name
        for image in images:
            assert image.shape == (*IMAGE_SIZE, 3) and image.dtype == np.uint8, name
    # Portrait 40x30 in a 60x90 canvas: scaled x1.5 to 60x45, padded on the right.
    canvas = next(_calibration_images(list(pixels), IMAGE_SIZE, limit=1))
    assert (canvas[:, 45:] == np.asarray(export.PAD_VALUE, np.uint8)).all()
    with pytest.raises(ValueError, match="uint8"):
        list(_calibration_images([pixels[0].astype("float32")], IMAGE_SIZE, 1))
