"""model.fit under tf.distribute.MirroredStrategy on two logical CPUs.

A subprocess: logical devices must be configured before TensorFlow starts.
The MultiWorkerMirroredStrategy tests are in test_distribute_multi_worker.py.
"""

import json
import math
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import os, sys
    sys.path.insert(0, os.path.join(os.getcwd(), "tests"))
    import numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )
    import keras
    from helpers import rectangle_batch, tiny_model
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    images, targets = rectangle_batch(batch=4, size=64)
    dataset = tf.data.Dataset.from_tensor_slices((images, targets)).batch(4).repeat()
    with strategy.scope():
        model = tiny_model()
        model.compile(optimizer=keras.optimizers.Adam(3e-3))
    history = model.fit(dataset, steps_per_epoch=10, epochs=2, verbose=0).history
    assert strategy.num_replicas_in_sync == 2
    assert all(np.isfinite(v).all() for v in history.values()), history
    assert history["loss"][-1] < history["loss"][0], history
    print("DISTRIBUTE-OK", history["loss"])
    """
)


# The COCO reader through `distribute_datasets_from_function`: one input pipeline
# per worker (one here), batches of the per-replica size. (That the pipelines of
# several workers read disjoint shares is in tests/data/test_tfrecord.py.) Two images
# per replica: TF 2.21's oneDNN Conv2DBackpropFilter crashes at batch 1 for the
# tiny model's 8-channel 1x1 stride-2 convs (see README, Training notes).
PER_REPLICA_SCRIPT = textwrap.dedent(
    """
    import os, sys
    sys.path.insert(0, os.path.join(os.getcwd(), "tests"))
    import numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )
    import keras
    from helpers import tiny_model
    from keras_solov2.data import CocoDataset
    root = os.path.join("tests", "fixtures", "coco_mini")
    data = CocoDataset(
        os.path.join(root, "annotations", "instances_val2017.json"),
        os.path.join(root, "val2017"),
    )
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    seen = []

    def dataset_fn(context):
        seen.append((context.input_pipeline_id, context.num_input_pipelines))
        return data.as_tf_dataset(
            batch_size=context.get_per_replica_batch_size(4),
            image_size=(128, 128),
            max_instances=20,
            repeat=True,
            input_context=context,
        )

    dataset = strategy.distribute_datasets_from_function(dataset_fn)
    with strategy.scope():
        model = tiny_model(num_classes=data.num_classes)
        model.compile(optimizer=keras.optimizers.Adam(3e-3))
    history = model.fit(dataset, steps_per_epoch=4, epochs=2, verbose=0).history
    assert all(np.isfinite(v).all() for v in history.values()), history
    assert seen == [(0, 1)], seen  # one worker: one input pipeline
    print("PER-REPLICA-OK", seen, history["loss"])
    """
)


def _run(script, *args):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=root,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.mark.slow
def test_fit_under_mirrored_strategy():
    result = _run(SCRIPT)
    assert result.returncode == 0 and "DISTRIBUTE-OK" in result.stdout, (
        result.stdout[-3000:] + result.stderr[-3000:]
    )


@pytest.mark.slow
def test_fit_with_per_replica_input_pipelines():
    result = _run(PER_REPLICA_SCRIPT)
    assert result.returncode == 0 and "PER-REPLICA-OK" in result.stdout, (
        result.stdout[-3000:] + result.stderr[-3000:]
    )


# One device against two replicas on the same global batch of 4: replica 0
# gets images 0-1 (two instances each), replica 1 images 2-3 (image 3 has
# none), so the replicas' positive counts differ. BatchNorm runs in inference
# mode (norm_eval): its batch statistics would be per replica otherwise.
SAME_UPDATE_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    sys.path.insert(0, os.path.join(os.getcwd(), "tests"))
    import numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )
    import keras
    from helpers import rectangle_batch, tiny_model
    normalization = sys.argv[1]
    images, targets = rectangle_batch(batch=4, size=64)
    targets["labels"][3] = -1
    targets["masks"][3] = 0
    dataset = tf.data.Dataset.from_tensor_slices((images, targets)).batch(4).repeat()
    keras.utils.set_random_seed(0)
    initial = tiny_model(norm_eval=True).get_weights()

    def run(strategy):
        with strategy.scope():
            model = tiny_model(norm_eval=True, loss_normalization=normalization)
            model.set_weights(initial)
            model.compile(optimizer=keras.optimizers.SGD(0.01), jit_compile=False)
        history = model.fit(dataset, steps_per_epoch=1, epochs=3, verbose=0).history
        return history, model.get_weights()

    one, w_one = run(tf.distribute.get_strategy())
    two, w_two = run(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
    def max_diff(a, b):
        return max(float(np.abs(x - y).max()) for x, y in zip(a, b))

    print("RESULT", json.dumps({
        "loss": [one["loss"], two["loss"]],
        "category": [one["category_loss"], two["category_loss"]],
        "max_weight_diff": max_diff(w_one, w_two),
        "max_weight_change": max_diff(initial, w_one),
    }))
    """
)


def _one_and_two_replicas(normalization):
    result = _run(SAME_UPDATE_SCRIPT, normalization)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    line = next(x for x in result.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


@pytest.mark.slow
def test_two_replicas_give_one_devices_loss_and_update():
    data = _one_and_two_replicas("global")
    one, two = data["loss"]
    assert all(
        math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6)
        for a, b in zip(one, two, strict=True)
    ), data
    cat_one, cat_two = data["category"]
    assert all(
        math.isclose(a, b, rel_tol=1e-5) for a, b in zip(cat_one, cat_two, strict=True)
    ), data
    assert data["max_weight_change"] > 1e-4, "the steps must move the weights"
    assert data["max_weight_diff"] < 1e-5, data


@pytest.mark.slow
def test_per_replica_normalisation_differs_when_positives_differ():
    # mmdetection's multi-GPU convention: each replica's own num_pos.
    data = _one_and_two_replicas("per_replica")
    one, two = data["loss"]
    assert not math.isclose(one[0], two[0], rel_tol=1e-3), data


# Aspect-ratio grouped batches (no static height and width; a portrait batch
# among landscape ones) split over two replicas against one device: the same
# global batches, the same updates. The COCO fixture plus a portrait photo;
# `training=False` so that both runs read the same batches.
GROUPED_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path
    sys.path.insert(0, os.path.join(os.getcwd(), "tests"))
    import numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )
    import keras
    from helpers import tiny_model
    from coco_mini import with_portrait
    from keras_solov2.data import CocoDataset
    folder = Path(sys.argv[1])
    path, _, _ = with_portrait(folder)
    data = CocoDataset(path, str(folder))
    # Batches of 4 (2 per replica): 6 images, one portrait, so the first
    # portrait batch closes in the fourth pass.
    dataset = data.as_tf_dataset(batch_size=4, scales=[(256, 192)], max_instances=20,
                                 training=False, repeat=True,
                                 aspect_ratio_grouping=True)
    steps = 7
    shapes = [tuple(i.shape[1:3]) for i, _ in dataset.take(steps)]
    # base_channels=16: see tests/data/test_aspect_ratio_grouping.py.
    kwargs = dict(num_classes=data.num_classes, base_channels=16, norm_eval=True)
    keras.utils.set_random_seed(0)
    initial = tiny_model(**kwargs).get_weights()

    def run(strategy):
        with strategy.scope():
            model = tiny_model(**kwargs)
            model.set_weights(initial)
            model.compile(optimizer=keras.optimizers.SGD(0.01))
        losses = []
        record = keras.callbacks.LambdaCallback(
            on_train_batch_end=lambda b, logs: losses.append(float(logs["loss"])))
        model.fit(dataset, steps_per_epoch=steps, epochs=1, verbose=0,
                  callbacks=[record])
        return losses, model.get_weights()

    one, w_one = run(tf.distribute.get_strategy())
    two, w_two = run(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
    def max_diff(a, b):
        return max(float(np.abs(x - y).max()) for x, y in zip(a, b))

    print("RESULT", json.dumps({
        "shapes": shapes, "loss": [one, two],
        "max_weight_diff": max_diff(w_one, w_two),
        "max_weight_change": max_diff(initial, w_one),
    }))
    """
)


@pytest.mark.slow
def test_two_replicas_on_grouped_canvases_give_one_devices_update(tmp_path):
    result = _run(GROUPED_SCRIPT, str(tmp_path))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    line = next(x for x in result.stdout.splitlines() if x.startswith("RESULT "))
    data = json.loads(line[len("RESULT ") :])
    assert [192, 256] in data["shapes"] and [256, 192] in data["shapes"], data
    one, two = data["loss"]
    assert len(one) == len(two) == len(data["shapes"])
    assert all(
        math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6)
        for a, b in zip(one, two, strict=True)
    ), data
    assert data["max_weight_change"] > 1e-4, "the steps must move the weights"
    assert data["max_weight_diff"] < 1e-5, data
