"""`keras.distribution` on the JAX backend: DataParallel and ModelParallel on
two forced host devices give the losses and the update of one device, and
`largest_kernels_layout_map` (unit tests on the default backend)."""

import json
import math
import textwrap

import keras
import pytest
from helpers import run_on_jax, tiny_model

from keras_solov2.distribution import largest_kernels_layout_map

# The four largest kernels of `tiny_model` (ties at 9216 elements broken by
# path), all with an even output dimension.
TINY_TOP_4 = [
    "backbone_layer4_0_conv2/kernel",  # (3, 3, 64, 64)
    "backbone_layer4_0_conv1/kernel",  # (3, 3, 32, 64)
    "mask_head/kernel_convs_0/conv/kernel",  # (3, 3, 34, 32)
    "backbone_layer3_0_conv2/kernel",  # (3, 3, 32, 32)
]

# One process, three runs from the same initial weights on the same global
# batch of 4 (images 0-1 two instances each, image 2 two, image 3 none, so
# DataParallel's two shards hold different numbers of positives): no
# distribution (one device), DataParallel over 2 devices, ModelParallel on a
# (1, 2) mesh sharding TINY_TOP_4. BatchNorm runs in inference mode
# (norm_eval), so no batch statistics are involved. A spy on Keras' JAX input
# distribution records the sharding of the images `fit` feeds the step.
SCRIPT = textwrap.dedent(
    """
    import os, sys
    # Before jax initialises (keras_solov2 imports keras, which imports jax).
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
    ).strip()
    sys.path.insert(0, os.path.join(os.getcwd(), "tests"))
    import json
    import jax, keras, numpy as np, tensorflow as tf
    from keras.src.backend.jax import trainer as jax_trainer
    from helpers import rectangle_batch, tiny_model
    from keras_solov2.distribution import largest_kernels_layout_map

    assert keras.backend.backend() == "jax"
    images, targets = rectangle_batch(batch=4, size=64)
    targets["labels"][3] = -1
    targets["masks"][3] = 0
    dataset = tf.data.Dataset.from_tensor_slices((images, targets)).batch(4).repeat()
    keras.utils.set_random_seed(0)
    blueprint = tiny_model(norm_eval=True)  # built without a distribution
    initial = blueprint.get_weights()

    fed = []
    distribute_data = jax_trainer._distribute_data

    def spy(data, layouts=None):
        out = distribute_data(data, layouts)
        x = out[0]
        fed.append({
            "spec": str(x.sharding.spec),
            "devices": len(x.sharding.device_set),
            "shards": sorted({tuple(s.data.shape) for s in x.addressable_shards}),
        })
        return out

    jax_trainer._distribute_data = spy

    def placement(variable):
        value = variable.value
        return {
            "spec": str(getattr(value.sharding, "spec", None)),
            "devices": len(value.sharding.device_set),
            "shards": sorted({tuple(s.data.shape) for s in value.addressable_shards}),
            "shape": list(variable.shape),
        }

    def run(distribution):
        fed.clear()
        keras.distribution.set_distribution(distribution)
        try:
            model = tiny_model(norm_eval=True)
            model.set_weights(initial)
            before = {w.path: placement(w) for w in model.weights}
            model.compile(optimizer=keras.optimizers.SGD(0.01), jit_compile=True)
            history = model.fit(dataset, steps_per_epoch=1, epochs=3, verbose=0)
        finally:
            keras.distribution.set_distribution(None)
        after = {w.path: placement(w) for w in model.weights}
        return history.history, model.get_weights(), before, after, list(fed)

    def max_diff(a, b):
        return max(float(np.abs(x - y).max()) for x, y in zip(a, b, strict=True))

    devices = keras.distribution.list_devices()
    one = run(None)
    data_parallel = keras.distribution.DataParallel(
        device_mesh=keras.distribution.DeviceMesh((2,), ("batch",), devices)
    )
    two = run(data_parallel)
    mesh = keras.distribution.DeviceMesh((1, 2), ("batch", "model"), devices)
    layout_map = largest_kernels_layout_map(blueprint, mesh, top_k=4)
    model_parallel = keras.distribution.ModelParallel(
        layout_map=layout_map, batch_dim_name="batch"
    )
    sharded = run(model_parallel)

    def report(run_):
        history, weights, before, after, fed_ = run_
        return {
            "loss": history["loss"],
            "category_loss": history["category_loss"],
            "mask_loss": history["mask_loss"],
            "max_weight_diff": max_diff(one[1], weights),
            "before": before,
            "after": after,
            "fed": fed_,
        }

    print("RESULT", json.dumps({
        "jax_devices": len(jax.devices()),
        "data_parallel_mesh_devices": int(data_parallel.device_mesh.devices.size),
        "layout_map": {k: list(v.axes) for k, v in layout_map.items()},
        "max_weight_change": max_diff(initial, one[1]),
        "one": report(one),
        "data_parallel": report(two),
        "model_parallel": report(sharded),
    }))
    """
)


@pytest.fixture(scope="module")
def runs():
    out = run_on_jax(SCRIPT, timeout=900)
    line = next(x for x in out.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def _assert_same_training(one, other):
    # Measured (JAX 0.10.2, CPU): loss rel. diff <= 1.7e-7, weights <= 6.6e-8.
    for key in ("loss", "category_loss", "mask_loss"):
        assert all(
            math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-7)
            for a, b in zip(one[key], other[key], strict=True)
        ), (key, one[key], other[key])
    assert other["max_weight_diff"] < 1e-5, other["max_weight_diff"]


def _replicated_everywhere(placements, devices):
    for path, p in placements.items():
        assert p["devices"] == devices, (path, p)
        assert p["shards"] == [p["shape"]], (path, p)  # every device: all of it


@pytest.mark.slow
@pytest.mark.jax
def test_data_parallel_fit_equals_one_device(runs):
    assert runs["jax_devices"] == 2
    assert runs["data_parallel_mesh_devices"] == 2
    assert runs["max_weight_change"] > 1e-4, "the steps must move the weights"
    one, two = runs["one"], runs["data_parallel"]
    assert len(one["loss"]) == 3
    _replicated_everywhere(one["after"], devices=1)
    # Each of the 3 steps got the global batch split in halves over 2 devices.
    assert len(two["fed"]) == 3, two["fed"]
    for fed in two["fed"]:
        assert fed["devices"] == 2 and fed["shards"] == [[2, 64, 64, 3]], fed
        assert fed["spec"].endswith("('batch', None, None, None)"), fed
    _replicated_everywhere(two["after"], devices=2)
    _assert_same_training(one, two)


@pytest.mark.slow
@pytest.mark.jax
def test_model_parallel_shards_largest_kernels_and_fit_equals_one_device(runs):
    model_parallel = runs["model_parallel"]
    assert runs["layout_map"] == {
        path: [None, None, None, "model"] for path in TINY_TOP_4
    }
    for placements in (model_parallel["before"], model_parallel["after"]):
        for path, p in placements.items():
            if path in TINY_TOP_4:
                kh, kw, cin, cout = p["shape"]
                assert p["devices"] == 2, (path, p)
                assert "'model')" in p["spec"], (path, p)
                assert p["shards"] == [[kh, kw, cin, cout // 2]], (path, p)
            else:
                assert p["devices"] == 2 and p["shards"] == [p["shape"]], (path, p)
    # The (1, 2) mesh's batch axis has one device: each gets the whole batch.
    assert [f["shards"] for f in model_parallel["fed"]] == [[[4, 64, 64, 3]]] * 3
    _assert_same_training(runs["one"], model_parallel)


# ---------------------------------------------------------------- the helper
# These build no device mesh on a backend: `DeviceMesh` only reshapes the
# device names, and a `LayoutMap` is plain Python, so they run on TensorFlow.


def _mesh(model_devices, axis_names=("batch", "model")):
    devices = [f"cpu:{i}" for i in range(model_devices)]
    return keras.distribution.DeviceMesh((1, model_devices), axis_names, devices)


def _small_model():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(6, 3, name="c6")(inputs)  # (3, 3, 3, 6): 162
    x = keras.layers.Conv2D(5, 3, name="c5")(x)  # (3, 3, 6, 5): 270, 5 is odd
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(4, name="d4")(x)  # (80, 4): 320
    x = keras.layers.Dense(3, name="d3")(x)  # (4, 3): 12, 3 is odd
    return keras.Model(inputs, x)


def _axes(layout_map):
    return {key: layout_map[key].axes for key in layout_map}


def test_helper_picks_largest_divisible_kernels_by_exact_path():
    layout_map = largest_kernels_layout_map(_small_model(), _mesh(2))
    assert isinstance(layout_map, keras.distribution.LayoutMap)
    assert list(layout_map) == ["d4/kernel", "c6/kernel"]  # largest first
    assert _axes(layout_map) == {
        "d4/kernel": (None, "model"),
        "c6/kernel": (None, None, None, "model"),
    }
    assert layout_map["c6/kernel"].device_mesh is layout_map.device_mesh
    # Keys match their own path only: no bias, no other layer.
    for path in ("c6/bias", "xc6/kernel", "c6/kernel2", "c5/kernel", "d3/kernel"):
        assert layout_map[path] is None, path


def test_helper_respects_divisibility_top_k_and_min_size():
    model = _small_model()
    # Over 3 devices only the outputs divisible by 3 qualify: d3 and c6.
    assert list(largest_kernels_layout_map(model, _mesh(3))) == [
        "c6/kernel",
        "d3/kernel",
    ]
    assert list(largest_kernels_layout_map(model, _mesh(2), top_k=1)) == ["d4/kernel"]
    assert list(largest_kernels_layout_map(model, _mesh(2), min_size=200)) == [
        "d4/kernel"
    ]
    assert len(largest_kernels_layout_map(model, _mesh(2), min_size=10**6)) == 0
    assert len(largest_kernels_layout_map(model, _mesh(2), top_k=None)) == 2
    # The axis may have another name.
    named = largest_kernels_layout_map(
        model, _mesh(2, ("data", "tensor")), model_axis="tensor"
    )
    assert _axes(named)["d4/kernel"] == (None, "tensor")


def test_helper_on_tiny_solov2():
    layout_map = largest_kernels_layout_map(
        tiny_model(norm_eval=True), _mesh(2), top_k=4
    )
    assert list(layout_map) == TINY_TOP_4


def test_helper_refuses_bad_input():
    unbuilt = keras.Sequential([keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="`model` must be a built model"):
        largest_kernels_layout_map(unbuilt, _mesh(2))
    with pytest.raises(ValueError, match="`device_mesh` must have an axis"):
        largest_kernels_layout_map(_small_model(), _mesh(2, ("batch", "data")))
    with pytest.raises(ValueError, match="`device_mesh`"):
        largest_kernels_layout_map(_small_model(), "cpu:0")
    with pytest.raises(ValueError, match="`top_k`"):
        largest_kernels_layout_map(_small_model(), _mesh(2), top_k=-1)
    with pytest.raises(ValueError, match="`min_size`"):
        largest_kernels_layout_map(_small_model(), _mesh(2), min_size=-1)
