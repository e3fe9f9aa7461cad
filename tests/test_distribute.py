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


@pytest.mark.slow
def test_fit_under_mirrored_strategy():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=root,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0 and "DISTRIBUTE-OK" in result.stdout, (
        result.stdout[-3000:] + result.stderr[-3000:]
    )
