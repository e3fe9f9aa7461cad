"""Training on aspect-ratio grouped batches: two canvases, one trace.

With `aspect_ratio_grouping=True` the readers' batches have no static height
and width, so Keras traces the training step once with `None` there. From
the same weights, a step of that trace must update the model as a step
traced for the batch's static canvas does.

Why one step and a relative tolerance: the two traces run the same
arithmetic through different kernels (shape-specialised or generic), which
may sum in another order. In float32 that changes a result by a few units of
its last place per reduction; on random weights these differences then grow
about 100x a step (after 6 SGD steps they reached 2e-2 in a BatchNorm
moving variance on an AVX2-only CPU, and 0 on an AVX-512 one). After one
step they stay at the rounding level of the update itself.
"""

import keras
import numpy as np
from coco_mini import with_portrait
from helpers import tiny_model

from keras_solov2.data import CocoDataset

# Tolerance on one step's update, per variable: RTOL of the variable's own
# largest update plus FLOOR of the largest update in the whole model.
#
# A gradient entry is a sum over up to H x W = 49,152 pixels of the batch;
# float32 rounds each partial sum by eps = 1.2e-7, so a change of summation
# order moves it by about sqrt(49152) * eps = 2.7e-5 of its magnitude
# (random rounding), and the backward pass through the network's ~20 layers
# adds such errors: ~1e-4 of the update. RTOL is 20x that. FLOOR covers
# variables whose own update is rounding noise (a bias followed by a
# normalisation has a zero gradient in exact arithmetic): their error is that
# of the larger terms they are summed from, 2.7e-5 x ~1e-2 of the model's
# largest update at most, and FLOOR is ~200x that.
#
# Measured on a 2-core AMD EPYC (AVX2, no AVX-512), TF 2.21: the two traces
# differ by at most 6e-3 of this tolerance (6e-8 against updates of 0.2),
# while the update of a batch of the other canvas differs by 400x to 1400x
# it: the check fails if the grouping feeds a step the wrong canvas.
RTOL = 2e-3
FLOOR = 5e-5


def _grouped_batches(tmp_path):
    path, _, _ = with_portrait(tmp_path)
    data = CocoDataset(path, str(tmp_path))
    ds = data.as_tf_dataset(
        batch_size=1,
        scales=[(256, 192)],
        max_instances=20,
        training=False,  # no random flip: every pass gives the same batches
        aspect_ratio_grouping=True,
    )
    assert ds.element_spec[0].shape.as_list() == [1, None, None, 3]
    batches = list(ds)
    shapes = [tuple(images.shape[1:3]) for images, _ in batches]
    assert set(shapes) == {(192, 256), (256, 192)}, shapes
    return data, ds, batches


def _model(data, weights=None):
    keras.utils.set_random_seed(0)
    # base_channels=16: TF 2.21's oneDNN corrupts the heap in the backward
    # pass of the 8 -> 16 channel stride-2 1x1 convolution at these sizes.
    model = tiny_model(num_classes=data.num_classes, base_channels=16)
    if weights is not None:
        model.set_weights(weights)
    model.compile(optimizer=keras.optimizers.SGD(0.01))  # stateless
    return model


def _floats(model):
    return [w.numpy().astype(np.float64) for w in model.weights]


def _none_trace_updates(model, ds, start):
    """Each batch's one-step update from `start`, all through `fit`'s trace."""
    updates, losses = [], []

    class FromStart(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            model.set_weights(start)

        def on_train_batch_end(self, batch, logs=None):
            updates.append([w - s for w, s in zip(_floats(model), start, strict=True)])
            losses.append(logs["loss"])

    model.fit(ds, epochs=1, verbose=0, callbacks=[FromStart()])
    # `fit` logs the running mean of the epoch: recover each step's loss.
    means = np.array(losses, np.float64)
    k = np.arange(1, len(means) + 1)
    per_step = k * means - np.concatenate([[0.0], (k * means)[:-1]])
    return updates, per_step


def _static_trace_update(model, images, targets, start, retrace=True):
    """One step from `start` through a trace for this batch's static shape."""
    model.set_weights(start)
    if retrace:
        model.make_train_function(force=True)
    logs = model.train_on_batch(images, targets, return_dict=True)
    return [w - s for w, s in zip(_floats(model), start, strict=True)], logs["loss"]


def _excess(update, reference):
    """Per variable: max |difference| over its tolerance (> 1 fails)."""
    floor = FLOOR * max(np.abs(r).max() for r in reference)
    return [
        np.abs(u - r).max() / (RTOL * np.abs(r).max() + floor)
        for u, r in zip(update, reference, strict=True)
    ]


def test_one_step_of_the_none_trace_equals_a_step_traced_per_canvas(tmp_path):
    data, ds, batches = _grouped_batches(tmp_path)
    dynamic = _model(data)
    start = _floats(dynamic)
    static = _model(data, dynamic.get_weights())
    dynamic_updates, dynamic_losses = _none_trace_updates(dynamic, ds, start)
    assert len(dynamic_updates) == len(batches)
    static_updates, traced = [], None
    for step, (images, targets) in enumerate(batches):
        # A fresh trace for each canvas's static shape.
        retrace, traced = images.shape != traced, images.shape
        update, loss = _static_trace_update(static, images, targets, start, retrace)
        static_updates.append(update)
        np.testing.assert_allclose(dynamic_losses[step], loss, rtol=1e-4)
        # The step did train.
        assert max(np.abs(u).max() for u in update) > 1e-4
    shapes = [tuple(images.shape[1:3]) for images, _ in batches]
    for step, shape in enumerate(shapes):
        excess = _excess(dynamic_updates[step], static_updates[step])
        worst = int(np.argmax(excess))
        assert excess[worst] <= 1, (
            f"step {step} {shape}: {dynamic.weights[worst].path} differs by "
            f"{excess[worst]:.2f}x the tolerance"
        )
        # The tolerance tells the canvases apart: had the grouping fed this
        # step the other canvas's batch, the check above would fail.
        other = shapes.index(next(s for s in shapes if s != shape))
        assert max(_excess(dynamic_updates[step], static_updates[other])) > 10
