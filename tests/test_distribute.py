"""model.fit under tf.distribute.MirroredStrategy on two logical CPUs.

A subprocess: logical devices must be configured before TensorFlow starts.
"""

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
    from conftest import rectangle_batch, tiny_model
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
# several workers read disjoint shares is in tests/test_tfrecord.py.) Two images
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
    from conftest import tiny_model
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


def _run(script):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return subprocess.run(
        [sys.executable, "-c", script],
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
