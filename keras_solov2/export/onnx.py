"""ONNX export for ONNX Runtime and TensorRT: the `.tflite`'s graph, in `ai.onnx` ops.

The endpoint that the `.tflite` converts (`common.fixed_size_archive`) is
converted by tf2onnx (`tf2onnx.convert.from_function`); docs/onnx.md says
why this converter and not Keras's `format="onnx"` or jax2onnx.
"""

import numpy as np

from keras_solov2.export import common, graphs

# 17: the newest opset that TensorRT 8.5's ONNX parser reads; 18 for newer
# runtimes. tf2onnx 1.17 writes up to 18.
OPSETS = (17, 18)
DEFAULT_OPSET = 17
_INSTALL = "pip install 'keras-solov2[onnx]'"


def onnx(
    model,
    path,
    input_size=None,
    opset=DEFAULT_OPSET,
    include_postprocessing=True,
    verbose=True,
    image_size=None,
):
    """Writes an `.onnx` model for one uint8 image of a fixed size.

    The graph is the `.tflite`'s (`keras_solov2.export.tflite`): normalisation,
    padding to a multiple of 32, the network, point NMS, the dynamic
    convolution and Matrix NMS, all in standard `ai.onnx` operators (no
    custom domain), with static shapes. The input and outputs have the
    `.tflite`'s names, shapes and dtypes (the table in docs/android.md): one
    input `image`, uint8 `(1, H, W, 3)` RGB 0..255 letterboxed to
    `input_size`; outputs `masks` (float32 `(1, D, H'/4, W'/4)` mask
    probabilities at stride 4 of the padded input), `labels`, `scores`,
    `boxes`, `num_detections` and `candidates_overflow`, in this order
    (`keras_solov2.export.OUTPUT_NAMES`). With `include_postprocessing=False`
    the file holds the dense body only (`category_logits`, `kernels`,
    `mask_features`).

    Beside the file, `model.onnx.json` (its name plus `.json`) holds the class
    names and COCO category ids, the mask threshold and stride, the input
    size and padding value, as beside a `.tflite`.

    Conversion is tf2onnx's `from_function` on the traced endpoint, with
    two corrections of what tf2onnx 1.17 writes: TensorFlow's `Select` is
    always ONNX `Where` (tf2onnx's `cond * x + (1 - cond) * y` turns the
    `-inf` that Matrix NMS sorts empty slots with into NaN scores), and
    every `Resize` takes the target `sizes`, not float32 `scales` (which
    round some grid sizes down a pixel). The result is refused
    (`RuntimeError`) if a node is outside the `ai.onnx` domain (how
    tf2onnx leaves an op it cannot convert) or if ONNX's checker, with
    strict shape inference, refuses the graph.

    Args:
        model: a `keras_solov2.SOLOv2`, on the TensorFlow backend.
        path: str. The `.onnx` file to write.
        input_size: `(height, width)` of the input; by default the
            `.tflite`'s, a 4:3 frame at the test scale (448 x 608 for the
            light models, 800 x 1088 for the full ones).
        opset: int. The `ai.onnx` opset, one of `OPSETS`. Defaults to `17`,
            the newest that TensorRT 8.5 reads.
        include_postprocessing: bool. Defaults to `True`.
        verbose: bool. Print what was written. Defaults to `True`.
        image_size: the deprecated name of `input_size`
            (`DeprecationWarning`; removed in the next release).

    Returns:
        str: `path`.
    """
    common.require_tensorflow_backend()
    common.check_file_name(path, ".onnx", "ONNX")
    if isinstance(opset, bool) or opset not in OPSETS:
        raise ValueError(f"`opset` must be one of {OPSETS}; got {opset!r}.")
    input_size = common.input_size(
        model, input_size, image_size, "keras_solov2.export.onnx"
    )
    try:
        import onnx as onnx_lib
        import tf2onnx
    except ImportError as error:
        raise ImportError(
            f"ONNX export needs tf2onnx and onnx ({_INSTALL}): {error}"
        ) from error

    _, endpoint = common.fixed_size_archive(model, input_size, include_postprocessing)
    try:
        proto, _ = tf2onnx.convert.from_function(
            endpoint,
            input_signature=endpoint.input_signature,
            opset=int(opset),
            custom_rewriter=[_select_as_where],
        )
    except Exception as error:  # tf2onnx raises ValueError, KeyError, ...
        raise RuntimeError(f"ONNX conversion failed for {path}: {error}") from error
    names = graphs.OUTPUT_NAMES if include_postprocessing else graphs.BODY_OUTPUT_NAMES
    _order_outputs(proto, names, path)
    _resize_to_sizes(proto, onnx_lib)
    _replace_deprecated_resize(proto, onnx_lib.helper)
    _check_standard_ops(proto, int(opset), path)
    try:  # with strict shape inference: a wrong size is an error here
        onnx_lib.checker.check_model(proto, full_check=True)
    except Exception as error:  # ValidationError, InferenceError
        raise RuntimeError(
            f"The converted model for {path} fails ONNX's checker: {error} "
            "Please report this as a bug."
        ) from error
    onnx_lib.save_model(proto, str(path))
    metadata_path = common.write_metadata(
        model, path, "onnx", input_size, include_postprocessing, opset=int(opset)
    )
    if verbose:
        size = proto.ByteSize() / 2**20
        print(
            f"Wrote {path} ({size:.1f} MiB, input uint8 (1, {input_size[0]}, "
            f"{input_size[1]}, 3), opset {opset}) and {metadata_path}."
        )
    return str(path)


def _select_as_where(graph, ops):
    """tf2onnx rewriter: every `Select` / `SelectV2` becomes `Where`.

    tf2onnx's `Select` handler writes `cast(c) * x + cast(!c) * y` unless it
    sees a NaN or inf constant among the inputs (its `handles_nan`
    attribute); Matrix NMS's `where(keep, top_k(where(keep, s, -inf)), 0)`
    is not such a case, and `0 * -inf` is NaN.
    """
    del graph
    for op in ops:
        if op.type in ("Select", "SelectV2"):
            op.set_attr("handles_nan", True)
    return ops


def _order_outputs(proto, names, path):
    """The graph's outputs in the order of `names` (tf2onnx sorts them)."""
    outputs = {o.name: o for o in proto.graph.output}
    if set(outputs) != set(names):
        raise RuntimeError(
            f"The converted model for {path} has outputs {sorted(outputs)}, not "
            f"{list(names)}. Please report this as a bug."
        )
    ordered = [type(outputs[n])() for n in names]
    for copy, name in zip(ordered, names, strict=True):
        copy.CopyFrom(outputs[name])
    del proto.graph.output[:]
    proto.graph.output.extend(ordered)


def _resize_to_sizes(proto, onnx_lib):
    """Every `Resize` by constant `scales` becomes a `Resize` to its `sizes`.

    tf2onnx writes TF's `resize(x, (h', w'))` as `scales = float32(h' / h)`,
    and ONNX's output size is `floor(h * scale)`: one pixel short where the
    float32 ratio rounds down (56 -> 35 instead of 36 for a light R18's
    36 x 36 grid at 448 x 608), and the graph no longer loads. The sizes
    are `round(h * scale)` on the inferred input shapes, fixed in graph
    order and inferred again after a fix that changes a shape, so that a
    later resize sees its true input.
    """
    numpy_helper = onnx_lib.numpy_helper
    while True:
        inferred = onnx_lib.shape_inference.infer_shapes(proto)
        shapes = {
            v.name: [d.dim_value if d.HasField("dim_value") else None
                     for d in v.type.tensor_type.shape.dim]
            for v in [*inferred.graph.value_info, *inferred.graph.input]
        }  # fmt: skip
        initializers = {i.name: i for i in proto.graph.initializer}
        changed = False
        for node in proto.graph.node:
            if node.op_type != "Resize" or len(node.input) != 3:
                continue
            scales = initializers.get(node.input[2])
            shape = shapes.get(node.input[0])
            if scales is None or not shape or None in shape:
                continue
            product = np.asarray(shape, np.float64) * numpy_helper.to_array(scales)
            sizes = np.round(product).astype(np.int64)
            name = f"{node.output[0]}/sizes"
            proto.graph.initializer.append(numpy_helper.from_array(sizes, name))
            node.input[2] = ""
            node.input.append(name)
            if (np.floor(product) != sizes).any():
                changed = True
                break  # the shapes after this node change: infer again
        if not changed:
            break
    used = {i for n in proto.graph.node for i in n.input}
    kept = [i for i in proto.graph.initializer if i.name in used]
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(kept)


def _replace_deprecated_resize(proto, helper):
    """`tf_half_pixel_for_nn` (deprecated in opset 13; TF's nearest resize)
    as `half_pixel` with `round_prefer_ceil`: the same source pixel.

    TF takes `floor((i + 0.5) / scale)`; `half_pixel` gives
    `(i + 0.5) / scale - 0.5`, and rounding that half up is the same floor.
    ONNX Runtime warns about the old mode; some importers refuse it.
    """
    for node in proto.graph.node:
        if node.op_type != "Resize":
            continue
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if (
            attributes.get("coordinate_transformation_mode") == b"tf_half_pixel_for_nn"
            and attributes.get("mode") == b"nearest"
            and attributes.get("nearest_mode", b"round_prefer_floor") == b"floor"
        ):
            attributes.update(
                coordinate_transformation_mode="half_pixel",
                nearest_mode="round_prefer_ceil",
            )
            del node.attribute[:]
            node.attribute.extend(
                helper.make_attribute(k, v) for k, v in attributes.items()
            )


def _check_standard_ops(proto, opset, path):
    """Refuses nodes outside `ai.onnx` (tf2onnx keeps the TF ops that it
    cannot convert, in a custom domain) and drops unused opset imports."""
    custom = sorted(
        {
            f"{n.domain}:{n.op_type}"
            for n in proto.graph.node
            if n.domain not in ("", "ai.onnx")
        }
    )
    if custom:
        raise RuntimeError(
            f"The converted model for {path} has ops outside the standard ai.onnx "
            f"domain: {custom}. ONNX Runtime's CPU provider and TensorRT would not "
            "run them. Please report this as a bug."
        )
    imports = list(proto.opset_import)
    del proto.opset_import[:]
    proto.opset_import.extend(i for i in imports if i.domain in ("", "ai.onnx"))
    versions = [i.version for i in proto.opset_import]
    if versions != [opset]:
        raise RuntimeError(
            f"The converted model for {path} has ai.onnx opsets {versions}, "
            f"not [{opset}]. Please report this as a bug."
        )
