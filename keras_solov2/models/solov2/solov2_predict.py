"""How `SOLOv2.predict` runs: one engine per backend and `jit_compile`.

`predict_engine(model)` is the one place that picks the engine:

- `"tensorflow"` (TensorFlow, `jit_compile=False` or `run_eagerly=True`):
  Keras' predict function, the whole step in one TensorFlow graph (eager
  with `run_eagerly`).
- `"tensorflow_xla"` (TensorFlow, `jit_compile=True`): Keras' predict
  function as a TensorFlow graph, whose network runs as an XLA program
  (`XlaNetwork`), compiled once per canvas.
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

from keras_solov2.models.solov2.solov2_decoder import features_decoder, paste_masks

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
        xla: bool or `None`. Whether the network runs as the XLA program of
            the `"tensorflow_xla"` engine. Defaults to `None`: when that is
            the model's engine. Exports pass `False`.
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
        outputs = XlaNetwork.of(model)(inputs)
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


def make_predict_function(model, make_keras_function):
    """Builds `model.predict_function` for the TensorFlow engines.

    `make_keras_function` is Keras' own `make_predict_function(force=True)`.
    For `"tensorflow_xla"` it is built without XLA (the step is a TF graph)
    and `predict_step` runs the network through `XlaNetwork`. XLA's own
    decoding was slower than the graph's (R50: the XLA network 2.5 s
    against 3.9 s, the XLA predict 7.0 s against 5.5 s), and the paste's
    output size, the photo's, would compile again for every photo size.
    """
    if predict_engine(model) != "tensorflow_xla":
        return make_keras_function(force=True)
    XlaNetwork.build(model)
    # Keras wraps the step in an XLA function when `jit_compile` is set.
    model._jit_compile = False
    try:
        return make_keras_function(force=True)
    finally:
        model._jit_compile = True


class XlaNetwork:
    """The network as an XLA program (`tf.function(jit_compile=True)`),
    compiled once per canvas; one per model, rebuilt with its predict
    function."""

    def __init__(self, model):
        import tensorflow as tf

        self.function = tf.function(
            lambda x: model(x, training=False),
            jit_compile=True,
            reduce_retracing=True,
        )

    def __call__(self, inputs):
        return self.function(inputs)

    @classmethod
    def build(cls, model):
        model._xla_network = cls(model)

    @classmethod
    def of(cls, model):
        if getattr(model, "_xla_network", None) is None:
            cls.build(model)
        return model._xla_network


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
        detections = dict(self.network(state, self.preprocess(images)))
        decoder = self.model.decoder
        masks, boxes = paste_masks(
            detections.pop("mask_probs"),
            self.model.image_converter.resized_size(height, width),
            (height, width),
            mask_threshold=decoder.mask_threshold,
            mask_stride=decoder.mask_stride,
            num_detections=detections["num_detections"],
            return_boxes=True,
        )
        return {**detections, "masks": masks, "boxes": boxes}, None
