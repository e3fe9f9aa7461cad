"""How `SOLOv2.predict` runs: one engine per backend and `jit_compile`.

`predict_engine(model)` is the one place that picks the engine:

- `"tensorflow"` (TensorFlow, `jit_compile=False` or `run_eagerly=True`):
  Keras' predict function, the whole step in one TensorFlow graph (eager
  with `run_eagerly`).
- `"tensorflow_xla"` (TensorFlow, `jit_compile=True`): Keras' predict
  function as a TensorFlow graph around one XLA program (`XlaFeatures`:
  the network and the decoding up to the kept feature-resolution masks),
  compiled once per canvas; the paste to the photo's size stays in the
  graph.
- `"jax"` (JAX, a built model, `jit_compile=True`, not `run_eagerly`):
  `JaxPredict`, resize and pad compiled per photo size, the network and the
  decoding to feature-resolution masks per canvas, the paste per photo size.
- `"keras"` (anything else: torch, eager JAX): `keras.Model.predict_on_batch`.

`predict_step(model, data)` is `SOLOv2.predict_step`: resize and pad, the
network, the decoder. `predict_arrays` runs arrays batch by batch through
the engine and returns numpy arrays without copying the outputs.

Reference: SOLOv2, arXiv 2003.10152.
"""

import keras
import numpy as np
from keras import ops

from keras_solov2.models.solov2.mask_paste import feature_boxes, paste_masks
from keras_solov2.models.solov2.solov2_decoder import features_decoder

ENGINES = ("tensorflow", "tensorflow_xla", "jax", "keras")


def predict_engine(model):
    """The engine that `model.predict` uses now, one of `ENGINES`."""
    backend = keras.backend.backend()
    jit = bool(model.jit_compile) and not model.run_eagerly
    if backend == "tensorflow":
        return "tensorflow_xla" if jit else "tensorflow"
    if backend == "jax" and jit and model.built:
        return "jax"
    return "keras"


def predict_step(model, *args, xla=None):
    """`SOLOv2.predict_step`: `(data)`, or JAX's stateless `(state, data)`.

    Args:
        model: a `keras_solov2.SOLOv2`.
        *args: `(data,)`, or `(state, data)` with `state` the
            `(trainable, non_trainable)` variable values (JAX's stateless
            trainer, which gets `(detections, non_trainable)` back).
        xla: bool or `None`. Whether the network and the decoding to
            feature-resolution masks run as the XLA program of the
            `"tensorflow_xla"` engine (`XlaFeatures`). Defaults to `None`:
            when that is the model's engine. Exports pass `False`.
    """
    if len(args) == 2:
        (trainable, non_trainable), data = args
    else:
        (data,) = args
    images, _, _ = keras.utils.unpack_x_y_sample_weight(data)
    if isinstance(images, dict):
        images = images["images"]
    inputs, resized_size, original_size = model.preprocess(images)
    if xla is None:
        xla = len(args) == 1 and predict_engine(model) == "tensorflow_xla"
    if len(args) == 2:
        outputs, non_trainable = model.stateless_call(
            trainable, non_trainable, inputs, training=False
        )
    elif xla:
        detections = XlaFeatures.of(model)(inputs)
        return to_photo(model, detections, resized_size, original_size)
    else:
        outputs = model(inputs, training=False)
    detections = model.decoder(
        outputs["category_logits"],
        outputs["kernels"],
        outputs["mask_features"],
        resized_size=resized_size,
        original_size=original_size,
    )
    return (detections, non_trainable) if len(args) == 2 else detections


def make_predict_function(model, force, make_keras_function):
    """`SOLOv2.make_predict_function`: `model.predict_function`, rebuilt if
    `force` or if the engine changed.

    `make_keras_function` is Keras' own `make_predict_function`. For
    `"tensorflow_xla"` it is built without XLA (the step is a TensorFlow
    graph) and `predict_step` runs `XlaFeatures`, rebuilt here so that it
    decodes with the current settings.
    """
    if keras.backend.backend() != "tensorflow" or model.run_eagerly:
        return make_keras_function(force)
    engine = predict_engine(model)
    if model.predict_function is not None and not force:
        if getattr(model, "_predict_function_engine", engine) == engine:
            return model.predict_function
    model._predict_function_engine = engine
    if engine != "tensorflow_xla":
        return make_keras_function(force=True)
    XlaFeatures.build(model)
    # Keras wraps the whole step in an XLA program when `jit_compile` is set.
    model._jit_compile = False
    try:
        return make_keras_function(force=True)
    finally:
        model._jit_compile = True


class XlaFeatures:
    """The `"tensorflow_xla"` engine's XLA program, compiled once per canvas.

    `tf.function(jit_compile=True)` of the network and the decoding up to
    the kept feature-resolution masks (`features_decoder`), the split that
    `JaxPredict` uses too. The paste to the photo's size (`paste_masks`)
    stays in the TensorFlow graph: its output size, the photo's, would
    compile the program again for every photo size. Against the network
    alone under XLA and the decoding in the graph: R50 at 800x1067 on the
    CPU, the decoding to features takes 0.263 s instead of 0.373 s, with
    the same labels and scores within 1.5e-7.
    """

    def __init__(self, model):
        import tensorflow as tf

        decoder = features_decoder(model.decoder)

        def features(inputs):
            dense = model(inputs, training=False)
            canvas = (ops.shape(inputs)[1], ops.shape(inputs)[2])
            detections = decoder(
                dense["category_logits"],
                dense["kernels"],
                dense["mask_features"],
                resized_size=canvas,
                original_size=canvas,
            )
            del detections["boxes"]  # of the canvas: `to_photo` makes them
            return detections

        self.function = tf.function(features, jit_compile=True, reduce_retracing=True)

    def __call__(self, inputs):
        return dict(self.function(inputs))

    @classmethod
    def build(cls, model):
        model._xla_features = cls(model)

    @classmethod
    def of(cls, model):
        if getattr(model, "_xla_features", None) is None:
            cls.build(model)
        return model._xla_features


def to_photo(model, detections, resized_size, original_size):
    """The decoder's outputs from those of its `features_decoder` (less
    their `"boxes"`): the masks pasted at the photo's size and their boxes,
    or with `mask_resolution="features"` the boxes of the feature-resolution
    masks in the photo's pixels."""
    decoder = model.decoder
    detections = dict(detections)
    probs = detections.pop("mask_probs")
    if decoder.mask_resolution == "features":
        boxes = feature_boxes(
            probs > decoder.mask_threshold,
            decoder.mask_stride,
            resized_size,
            original_size,
        )
        return {"mask_probs": probs, "boxes": boxes, **detections}
    masks, boxes = paste_masks(
        probs,
        resized_size,
        original_size,
        mask_threshold=decoder.mask_threshold,
        mask_stride=decoder.mask_stride,
        num_detections=detections["num_detections"],
        return_boxes=True,
    )
    return {"masks": masks, "boxes": boxes, **detections}


def predict_arrays(model, images, batch_size, verbose):
    """`model.predict` of an array, batch by batch, through its engine.

    The outputs become numpy arrays without a copy (`np.asarray` shares the
    buffer of a TensorFlow tensor, or of a JAX array on the CPU; Keras'
    `predict_on_batch` copies every output with `np.array`).
    """
    num_images = int(images.shape[0])
    if num_images == 0:
        raise ValueError("`predict` got an empty batch of images.")
    starts = range(0, num_images, batch_size)
    bar = None
    if verbose == 1 or (verbose == "auto" and len(starts) > 1):
        bar = keras.utils.Progbar(len(starts), unit_name="batch")
    engine = predict_engine(model)
    jax_step = jax_predict(model) if engine == "jax" else None
    batches = []
    for i, start in enumerate(starts):
        batch = images[start : start + batch_size]
        if engine in ("tensorflow", "tensorflow_xla"):
            model.make_predict_function()
            outputs = model.predict_function([(batch,)])
        elif jax_step is not None:
            state = (
                [v.value for v in model.trainable_variables],
                [v.value for v in model.non_trainable_variables],
            )
            outputs, _ = jax_step(state, batch)
        else:
            outputs = model.predict_on_batch(batch)
        batches.append({k: np.asarray(v) for k, v in outputs.items()})
        if bar is not None:
            bar.update(i + 1)
    if len(batches) == 1:
        return batches[0]
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


def predict_each(model, images):
    """`model.predict` of differently-sized images, one at a time: a list of
    per-image dicts, each trimmed to its `num_detections`."""
    results = []
    for image in images:
        out = predict_arrays(model, np.asarray(image)[None], 1, 0)
        n = int(out["num_detections"][0])
        results.append(
            {k: (v[0][:n] if np.ndim(v) > 1 else v[0]) for k, v in out.items()}
        )
    return results


def jax_predict(model):
    """The `"jax"` engine's jitted step, `step(state, images)`.

    Keras' own JAX predict function donates the variables' buffers and
    `predict_on_batch` copies the outputs; this one does neither. It is
    rebuilt with the predict function (changed settings, `compile`). With
    masks at the original size it is `JaxPredict`: the network is compiled
    once per canvas, not once per photo size.
    """
    model.make_predict_function()
    cached = getattr(model, "_jax_predict", None)
    if cached is None or cached[0] is not model.predict_function:
        if model.decoder.mask_resolution == "original":
            step = JaxPredict(model)
        else:
            import jax

            # The feature-resolution boxes depend on the photo's size.
            step = jax.jit(lambda state, images: model.predict_step(state, (images,)))
        cached = (model.predict_function, step)
        model._jax_predict = cached
    return cached[1]


class JaxPredict:
    """`predict_step` on JAX in three jitted parts, compiled by what they see.

    `jax.jit` of the whole step compiles it for every photo size, since the
    masks come out at the photo's size: tens of seconds of compilation for
    each new size of a COCO-like folder. Here `preprocess` (resize and pad)
    compiles per photo size, `network` (the network and the decoding up to
    the kept feature-resolution masks) per canvas, which many photo sizes
    share, and the paste to the photo (`paste_masks`, which jits itself)
    per photo size again: the two small parts recompile, the network does
    not. The outputs are `predict_step`'s, bit for bit.
    """

    def __init__(self, model):
        import jax

        decoder = features_decoder(model.decoder)
        self.model = model
        self.preprocess = jax.jit(lambda images: model.preprocess(images)[0])

        def network(state, padded):
            trainable, non_trainable = state
            dense, _ = model.stateless_call(
                trainable, non_trainable, padded, training=False
            )
            canvas = tuple(padded.shape[1:3])  # the boxes are not used
            return decoder(
                dense["category_logits"],
                dense["kernels"],
                dense["mask_features"],
                resized_size=canvas,
                original_size=canvas,
            )

        self.network = jax.jit(network)

    def __call__(self, state, images):
        height, width = (int(v) for v in images.shape[1:3])
        detections = self.network(state, self.preprocess(images))
        detections = {k: v for k, v in detections.items() if k != "boxes"}
        resized_size = self.model.image_converter.resized_size(height, width)
        return to_photo(self.model, detections, resized_size, (height, width)), None
