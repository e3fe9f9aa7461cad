"""SavedModel export for TensorFlow Serving: any image size, resize inside."""

import keras

from keras_solov2.export import graphs
from keras_solov2.export.tflite import _require_tensorflow_backend


def saved_model(model, path, verbose=True):
    """Writes a SavedModel with a `serving_default` signature.

    The signature takes `images`, a uint8 `(batch, H, W, 3)` batch of RGB
    0..255 images of any size (one size per batch), and runs what
    `model.predict` runs: the keep-ratio resize to `model.test_scale` and
    the padding inside the graph, the network and the decoding with the
    model's current settings. Its outputs are `model.predict`'s: `masks`
    (bool, at the original size, or `mask_probs` with
    `mask_resolution="features"`), `labels`, `scores`, `boxes`,
    `num_detections` and `candidates_overflow`.

    Load it without keras_solov2:

    >>> served = tf.saved_model.load(path)
    >>> outputs = served.signatures["serving_default"](images=batch)

    Args:
        model: a `keras_solov2.SOLOv2` (TensorFlow backend).
        path: str. The SavedModel directory to write.
        verbose: bool. Print what was written. Defaults to `True`.

    Returns:
        str: `path`.
    """
    import tensorflow as tf

    _require_tensorflow_backend()
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serving_default",
        graphs.any_size_function(model),
        input_signature=[tf.TensorSpec((None, None, None, 3), tf.uint8, name="images")],
    )
    archive.write_out(str(path), verbose=bool(verbose))
    return str(path)
