"""Helpers for `keras.distribution` (data and model parallel training on JAX).

`keras.distribution.DataParallel` needs nothing from this package: set it and
call `fit` on a batched `tf.data.Dataset`; each step shards the global batch
over the devices and gives the update of one device on that batch (the loss
is computed on the global batch, see `SOLOv2`'s `loss_normalization`).
`keras.distribution.ModelParallel` needs a `keras.distribution.LayoutMap`
that says which variables to shard; `largest_kernels_layout_map` builds one.

Keras 3's distribution API trains on the JAX backend only (its TensorFlow
backend is a DTensor prototype that Keras marks "DO NOT USE"; there, use
`tf.distribute`, see `SOLOv2`'s `loss_normalization`). Building a
`LayoutMap` touches no device, so this module imports, and
`largest_kernels_layout_map` runs, on any backend.
"""

import math
import re

import keras

CONV_KERNEL_RANK = 4  # (kh, kw, in, out)
DENSE_KERNEL_RANK = 2  # (in, out)


def largest_kernels_layout_map(
    model, device_mesh, model_axis="model", top_k=8, min_size=0
):
    """A `LayoutMap` sharding a model's largest kernels on their output axis.

    Inspects the variables of a built model (`model.weights`: their `.path`
    and `.shape`) and keeps the kernels (the variables named `kernel`) of
    convolutions, rank 4 `(kh, kw, in, out)`, and of dense layers, rank 2
    `(in, out)`, whose output dimension divides evenly over the mesh's
    `model_axis`. Of those, the `top_k` largest with at least `min_size`
    elements (ties broken by path) get a layout that shards the last
    dimension over `model_axis` and replicates the others; every other
    variable (biases, norms, smaller kernels) stays replicated under
    `keras.distribution.ModelParallel`. Keys are exact paths (the regex
    `re.escape(path)`, which `LayoutMap` matches whole), so no key can match
    another variable.

    A layout map acts when variables are created: make it from a blueprint
    model (a model of the same configuration, built without a distribution;
    it may skip loading weights), set the distribution, then build the model
    to train, whose variables get the same paths. Keras' distribution API is
    usable on the JAX backend (see the module docstring).

    Args:
        model: a built `keras.Model` (e.g. a `SOLOv2`), used only for its
            variables' paths and shapes.
        device_mesh: `keras.distribution.DeviceMesh` with an axis named
            `model_axis`, e.g. shape `(1, 2)` and axis names
            `("batch", "model")`.
        model_axis: str. The mesh axis to shard the kernels over. Defaults
            to `"model"`.
        top_k: optional int, the most kernels to shard; `None` shards all
            that qualify. Defaults to `8`.
        min_size: int. Kernels with fewer elements stay replicated. Defaults
            to `0`.

    Returns:
        A `keras.distribution.LayoutMap` over `device_mesh` from
        `re.escape(path)` to the layout `(None, ..., None, model_axis)`, at
        most `top_k` entries, largest kernel first. Empty when no kernel
        qualifies.

    Raises:
        ValueError: if `model` is not built (has no weights), `device_mesh`
            has no axis `model_axis`, or `top_k` / `min_size` is negative.

    Example:
    >>> from keras.distribution import DeviceMesh, ModelParallel
    >>> mesh = DeviceMesh((1, 2), ("batch", "model"),
    ...     keras.distribution.list_devices())
    >>> blueprint = keras_solov2.SOLOv2.from_preset(
    ...     "light_r18_coco", load_weights=False, num_classes=3)
    >>> layout_map = largest_kernels_layout_map(blueprint, mesh, top_k=8)
    >>> keras.distribution.set_distribution(
    ...     ModelParallel(layout_map=layout_map, batch_dim_name="batch"))
    >>> model = keras_solov2.SOLOv2.from_preset("light_r18_coco",
    ...     num_classes=3)  # its kernels are created sharded
    >>> model.compile()
    >>> model.fit(dataset, epochs=12)
    """
    axis_names = tuple(getattr(device_mesh, "axis_names", None) or ())
    if model_axis not in axis_names:
        raise ValueError(
            f"`device_mesh` must have an axis named `model_axis`={model_axis!r}; "
            f"got device_mesh={device_mesh!r} with axis names {axis_names}."
        )
    if top_k is not None and (not isinstance(top_k, int) or top_k < 0):
        raise ValueError(f"`top_k` must be None or an int >= 0; got {top_k!r}.")
    if min_size < 0:
        raise ValueError(f"`min_size` must be >= 0; got {min_size!r}.")
    weights = list(getattr(model, "weights", None) or ())
    if not getattr(model, "built", False) or not weights:
        raise ValueError(
            "`model` must be a built model with weights (call it on a batch, "
            f"or build it, first); got model={model!r} with {len(weights)} "
            "weights."
        )
    shards = device_mesh.shape[axis_names.index(model_axis)]
    candidates = []
    for variable in weights:
        shape = tuple(variable.shape)
        path = variable.path
        if path.rsplit("/", 1)[-1] != "kernel":
            continue
        if len(shape) not in (CONV_KERNEL_RANK, DENSE_KERNEL_RANK):
            continue
        if shape[-1] % shards:
            continue
        size = math.prod(shape)
        if size < min_size:
            continue
        candidates.append((-size, path, len(shape)))
    candidates.sort()
    if top_k is not None:
        candidates = candidates[:top_k]
    layout_map = keras.distribution.LayoutMap(device_mesh)
    for _, path, rank in candidates:
        layout_map[re.escape(path)] = (None,) * (rank - 1) + (model_axis,)
    return layout_map
