"""Training on aspect-ratio grouped batches: two canvases, one trace.

With `aspect_ratio_grouping=True` the readers' batches have no static height
and width, so Keras traces the training step once with `None` there. That
trace must update the model exactly as steps traced for each canvas's
static shape do.
"""

import keras
import numpy as np
from conftest import tiny_model
from test_coco_data import _with_portrait

from keras_solov2.data import CocoDataset


def test_fit_on_two_canvases_equals_steps_traced_per_canvas(tmp_path):
    path, _, _ = _with_portrait(tmp_path)
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
    keras.utils.set_random_seed(0)
    # base_channels=16: TF 2.21's oneDNN corrupts the heap in the backward
    # pass of the 8 -> 16 channel stride-2 1x1 convolution at these sizes.
    dynamic = tiny_model(num_classes=data.num_classes, base_channels=16)
    static = tiny_model(num_classes=data.num_classes, base_channels=16)
    static.set_weights(dynamic.get_weights())
    for model in (dynamic, static):
        model.compile(optimizer=keras.optimizers.SGD(0.01))
    steps = []
    record = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: steps.append(logs["loss"])
    )
    dynamic.fit(ds, epochs=1, verbose=0, callbacks=[record])
    losses, traced = [], None
    for images, targets in batches:
        if images.shape != traced:  # a fresh trace for each canvas's shape
            static.make_train_function(force=True)
            traced = images.shape
        losses.append(static.train_on_batch(images, targets, return_dict=True))
    # `fit` logs the running mean: recover each step's loss.
    means = np.array(steps, np.float64)
    k = np.arange(1, len(means) + 1)
    per_step = k * means - np.concatenate([[0.0], (k * means)[:-1]])
    np.testing.assert_allclose(per_step, [m["loss"] for m in losses], rtol=1e-4)
    for a, b in zip(dynamic.weights, static.weights, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5, err_msg=a.path)
    moved = [
        np.abs(a.numpy() - w).max()
        for a, w in zip(dynamic.weights, tiny_model_weights(data), strict=True)
    ]
    assert max(moved) > 1e-4  # the steps did train


def tiny_model_weights(data):
    keras.utils.set_random_seed(0)
    return tiny_model(num_classes=data.num_classes, base_channels=16).get_weights()
