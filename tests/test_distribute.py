"""model.fit under tf.distribute.MirroredStrategy on two logical CPUs.

A subprocess: logical devices must be configured before TensorFlow starts.
"""

import json
import math
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from keras_solov2.data import CocoDataset, write_tfrecords

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


# Two workers of a MultiWorkerMirroredStrategy, each with its own input
# pipeline over the TFRecord shards. Keras 3's `fit` fails under this strategy
# (keras-team/keras#20585: its symbolic build reduces the data batch across
# workers), so this is the library's loop, keras_solov2.multi_worker_fit.
MULTI_WORKER_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    index, ports, prefix = int(sys.argv[1]), sys.argv[2].split(","), sys.argv[3]
    os.environ["TF_CONFIG"] = json.dumps({
        "cluster": {"worker": [f"localhost:{p}" for p in ports]},
        "task": {"type": "worker", "index": index},
    })
    sys.path.insert(0, os.path.join(os.getcwd(), "tests"))
    import tensorflow as tf
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    import keras
    from helpers import tiny_model
    from keras_solov2.data import read_tfrecord_metadata, read_tfrecords
    from keras_solov2.multi_worker import multi_worker_fit
    seen = []

    def dataset_fn(context):
        seen.append((context.input_pipeline_id, context.num_input_pipelines))
        return read_tfrecords(
            prefix + "-*",
            batch_size=context.get_per_replica_batch_size(4),
            image_size=(128, 128),
            max_instances=20,
            repeat=True,
            input_context=context,
        )

    num_classes = len(read_tfrecord_metadata(prefix)["class_names"])
    with strategy.scope():
        model = tiny_model(num_classes=num_classes)
        model.compile(optimizer=keras.optimizers.Adam(3e-3), jit_compile=False)
    history = multi_worker_fit(model, dataset_fn, steps_per_epoch=3, verbose=0)
    losses = [float(x) for x in history.history["loss"]]
    print("WORKER-OK", json.dumps({"seen": seen, "losses": losses}), flush=True)
    """
)


def _run_workers(script, *args):
    """Runs `script` as two local workers (argv: index, ports, *args) and
    returns their stdout; asserts both exit 0."""
    ports = ",".join(str(p) for p in _free_ports(2))
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(k), ports, *args],
            cwd=repo,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(2)
    ]
    outputs = [w.communicate(timeout=600) for w in workers]
    for worker, (out, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, out[-2000:] + err[-3000:]
    return [out for out, _ in outputs]


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_multi_worker_custom_loop_with_per_worker_input(tmp_path):
    root = os.path.join(os.path.dirname(__file__), "fixtures", "coco_mini")
    data = CocoDataset(
        os.path.join(root, "annotations", "instances_val2017.json"),
        os.path.join(root, "val2017"),
    )
    prefix = str(tmp_path / "val")
    write_tfrecords(data, prefix, num_shards=4, progress=False)
    reports = []
    for out in _run_workers(MULTI_WORKER_SCRIPT, prefix):
        assert "WORKER-OK" in out, out[-2000:]
        reports.append(json.loads(out.split("WORKER-OK", 1)[1]))
    # One input pipeline per worker, each knowing its share.
    assert [r["seen"] for r in reports] == [[[0, 2]], [[1, 2]]]
    # Synchronous training: both workers report the same all-reduced losses.
    assert reports[0]["losses"] == reports[1]["losses"]
    # json writes a NaN or infinite loss as NaN / Infinity, and reads it back.
    assert len(reports[0]["losses"]) == 1  # one epoch of 3 steps
    assert all(math.isfinite(loss) for loss in reports[0]["losses"])


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


# Two workers of a MultiWorkerMirroredStrategy (one CPU replica each) against
# one device on the same global batch of 4 (SAME_UPDATE_SCRIPT's): worker 0
# reads images 0-1, worker 1 images 2-3 (image 3 has no instance). The one
# device runs Keras' `fit`; it also runs multi_worker_fit, which must agree.
MULTI_WORKER_UPDATE_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    index, ports, workdir = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    role = sys.argv[4] if len(sys.argv) > 4 else "worker"
    if role == "worker":
        os.environ["TF_CONFIG"] = json.dumps({
            "cluster": {"worker": [f"localhost:{p}" for p in ports.split(",")]},
            "task": {"type": "worker", "index": index},
        })
    sys.path.insert(0, os.path.join(os.getcwd(), "tests"))
    import numpy as np, tensorflow as tf
    if role == "worker":
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    import keras
    from helpers import rectangle_batch, tiny_model
    from keras_solov2.multi_worker import multi_worker_fit
    images, targets = rectangle_batch(batch=4, size=64)
    targets["labels"][3] = -1
    targets["masks"][3] = 0
    steps = 3

    def model_from(initial):
        model = tiny_model(norm_eval=True)
        model.set_weights(initial)
        model.compile(optimizer=keras.optimizers.SGD(0.01), jit_compile=False)
        return model

    def save(name, model, history):
        np.savez(os.path.join(workdir, name + ".npz"), *model.get_weights())
        with open(os.path.join(workdir, name + ".json"), "w") as f:
            json.dump({k: [float(x) for x in v] for k, v in history.items()}, f)

    if role == "reference":
        keras.utils.set_random_seed(0)
        initial = tiny_model(norm_eval=True).get_weights()
        np.savez(os.path.join(workdir, "initial.npz"), *initial)
        data = tf.data.Dataset.from_tensor_slices((images, targets)).batch(4).repeat()
        model = model_from(initial)
        save("fit", model, model.fit(data, steps_per_epoch=1, epochs=steps,
                                     verbose=0).history)
        model = model_from(initial)
        save("loop", model, multi_worker_fit(model, data, steps_per_epoch=1,
                                             epochs=steps, verbose=0).history)
    else:
        with np.load(os.path.join(workdir, "initial.npz")) as f:
            initial = [f[f"arr_{i}"] for i in range(len(f.files))]

        def dataset_fn(context):
            k = context.input_pipeline_id
            share = (images[2 * k : 2 * k + 2],
                     {key: v[2 * k : 2 * k + 2] for key, v in targets.items()})
            size = context.get_per_replica_batch_size(4)
            return tf.data.Dataset.from_tensor_slices(share).batch(size).repeat()

        with strategy.scope():
            model = model_from(initial)
        history = multi_worker_fit(model, dataset_fn, steps_per_epoch=1,
                                   epochs=steps, verbose=0).history
        save(f"worker{index}", model, history)
    print("DONE", role, index, flush=True)
    """
)


def _load_run(workdir, name):
    with open(os.path.join(workdir, name + ".json")) as f:
        history = json.load(f)
    with np.load(os.path.join(workdir, name + ".npz")) as f:
        weights = [f[f"arr_{i}"] for i in range(len(f.files))]
    return history, weights


def _max_diff(a, b):
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b, strict=True))


@pytest.mark.slow
def test_multi_worker_fit_gives_one_devices_update(tmp_path):
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    workdir = str(tmp_path)
    reference = subprocess.run(
        [
            sys.executable,
            "-c",
            MULTI_WORKER_UPDATE_SCRIPT,
            "0",
            "",
            workdir,
            "reference",
        ],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert reference.returncode == 0, (
        reference.stdout[-2000:] + reference.stderr[-3000:]
    )
    _run_workers(MULTI_WORKER_UPDATE_SCRIPT, workdir)

    with np.load(os.path.join(workdir, "initial.npz")) as f:
        initial = [f[f"arr_{i}"] for i in range(len(f.files))]
    fit, w_fit = _load_run(workdir, "fit")
    assert _max_diff(initial, w_fit) > 1e-4, "the steps must move the weights"
    for name in ("loop", "worker0", "worker1"):
        history, weights = _load_run(workdir, name)
        for key in ("loss", "category_loss", "mask_loss"):
            np.testing.assert_allclose(
                history[key], fit[key], rtol=1e-5, atol=1e-6, err_msg=f"{name} {key}"
            )
        print(name, "max weight diff", _max_diff(weights, w_fit))
        assert _max_diff(weights, w_fit) < 1e-5, name


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
