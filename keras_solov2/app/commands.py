"""What each `keras-solov2` command does: `run(args)` calls the command
that `args` (from `keras_solov2.app.parser.build_parser`) names.

The library is imported inside each command, so that `--help` and argument
errors do not wait for it.
"""

import os
import sys
import zipfile


def _convert(args):
    from keras_solov2.convert import from_mmdet
    from keras_solov2.models import preset_utils

    print(f"Reading {args.checkpoint} (architecture {args.architecture}) ...")
    model = from_mmdet(args.checkpoint, architecture=args.architecture, progress=True)
    metadata = {
        "source_checkpoint": os.path.basename(args.checkpoint),
        "source_sha256": preset_utils.sha256sum(args.checkpoint),
        "architecture": args.architecture,
    }
    model.save_to_preset(args.output, metadata=metadata)
    print(
        f"\nWrote preset {args.output} ({model.count_params():,} parameters, "
        f"{model.num_classes} classes). Load it with "
        f"keras_solov2.SOLOv2.from_preset({args.output!r})."
    )


def load_model(spec):
    """A SOLOv2 from a `.keras` file, a preset directory or a preset name."""
    from keras_solov2.models import preset_loader
    from keras_solov2.models.solov2 import SOLOv2

    if str(spec).endswith(".keras"):
        return _load_keras_file(spec, SOLOv2)
    return preset_loader.resolve(
        SOLOv2, spec, on_random_weights=lambda message: print(f"Warning: {message}")
    )


def _load_keras_file(path, expected):
    """The `expected` model saved in `path`, or an error saying what it is."""
    import keras

    wanted = (
        "predict, evaluate and export take a keras_solov2 SOLOv2 saved with "
        "model.save('model.keras'), a preset directory or a preset name"
    )
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No such model file: {path!r}.")
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"{path!r} is not a Keras model file: a .keras file is a zip "
            f"archive and this one is not; {wanted}."
        )
    try:
        model = keras.saving.load_model(path)
    except Exception as error:  # Keras raises many types for foreign files.
        raise ValueError(
            f"{path!r} is a zip archive that Keras cannot load as a model "
            f"({type(error).__name__}: {first_line(error)}); {wanted}."
        ) from None
    if not isinstance(model, expected):
        raise ValueError(
            f"{path!r} holds a {type(model).__name__} ({model.name!r}), not a "
            f"{expected.__name__}; {wanted}."
        )
    return model


def size_argument(args, flag):
    """`(typed, size)`: the flag the user typed, `flag` or its deprecated
    name `--image-size` (with a one-line note on stderr), and its two ints
    (`None` when neither was given)."""
    size = getattr(args, flag[2:].replace("-", "_"))
    if args.image_size is None:
        return flag, size
    if size is not None:
        raise ValueError(f"Give {flag} only; --image-size is its deprecated name.")
    print(
        f"keras-solov2 {args.command}: note: --image-size is deprecated and will "
        f"be removed in the next release; it is {flag} now.",
        file=sys.stderr,
    )
    return "--image-size", args.image_size


def _check_size(flag, size, minimum):
    """`size` (from `flag H W`) as two ints, or an error that names `flag`."""
    if size is None:
        return None
    height, width = (int(v) for v in size)
    if min(height, width) < minimum:
        raise ValueError(
            f"{flag} {height} {width}: each side must be at least "
            f"{minimum} pixels, the model's size_divisor (the stride of its "
            "coarsest feature map; smaller inputs are mostly padding). Try "
            f"{flag} 448 608."
        )
    return height, width


def _export(args):
    from keras_solov2 import export
    from keras_solov2.export.onnx import DEFAULT_OPSET, OPSETS

    flag, size = size_argument(args, "--input-size")
    if args.format == "saved_model" and (
        size or args.quantization or args.calibration_images
    ):
        raise ValueError(
            f"{flag} (tflite, onnx), --quantization and --calibration-images "
            "(tflite only) do not apply to a SavedModel: it takes uint8 images "
            "of any size."
        )
    if args.format == "onnx" and (args.quantization or args.calibration_images):
        raise ValueError(
            "--quantization and --calibration-images apply to --format tflite "
            "only (the .onnx is float32)."
        )
    if args.opset is not None and args.format != "onnx":
        raise ValueError("--opset applies to --format onnx only.")
    if args.opset is not None and args.opset not in OPSETS:
        raise ValueError(f"--opset must be one of {OPSETS}; got {args.opset}.")
    caps = {
        setting: value
        for setting, value in (
            ("max_candidates", args.max_candidates),
            ("pre_nms_top_k", args.pre_nms_top_k),
        )
        if value is not None
    }
    for setting, value in caps.items():
        if value < 1:
            raise ValueError(
                f"--{setting.replace('_', '-')} {value}: give a positive number "
                "of candidates, e.g. 192."
            )
    model = load_model(args.model)
    input_size = _check_size(flag, size, model.size_divisor)
    for setting, value in caps.items():
        setattr(model, setting, value)
    if args.format == "saved_model":
        export.saved_model(model, args.output)
        return
    if args.format == "onnx":
        export.onnx(
            model,
            args.output,
            input_size=input_size,
            opset=DEFAULT_OPSET if args.opset is None else args.opset,
            include_postprocessing=not args.no_postprocessing,
        )
        return
    export.tflite(
        model,
        args.output,
        input_size=input_size,
        quantization=args.quantization,
        representative_data=args.calibration_images,
        num_calibration_images=args.num_calibration_images,
        include_postprocessing=not args.no_postprocessing,
    )


def _train(args):
    from keras_solov2.training import train
    from keras_solov2.utils.image_geometry import SIZE_DIVISOR

    scale = _check_size(*size_argument(args, "--scale"), SIZE_DIVISOR)
    train(
        args.annotations,
        args.images,
        args.output,
        tfrecords=args.tfrecords,
        val_annotations=args.val_annotations,
        val_images=args.val_images,
        model=args.model,
        epochs=args.epochs,
        batch_size=args.batch_size,
        scale=scale,
        learning_rate=args.lr,
        schedule=args.schedule,
        warmup_steps=args.warmup_steps,
        resume=args.resume,
        on_invalid=args.on_invalid,
    )
    print(f"\nDone: {args.output}/ (best/ and last/ load with SOLOv2.from_preset).")


def _evaluate(args):
    from keras_solov2.app.outputs import ap_table, evaluate_to_files
    from keras_solov2.io import check_coco_paths

    # The data first: a wrong path fails in a second, not after the model.
    check_coco_paths(args.annotations, args.images)
    model = load_model(args.model)
    report = evaluate_to_files(
        model, args.annotations, args.images, args.output, on_invalid=args.on_invalid
    )
    print(ap_table(report))
    print(
        f"\nWrote {args.output}/results.json (COCO results), per_class_ap.csv, "
        "metrics.json and pr_curve.png."
    )


def _predict(args):
    from keras_solov2.app.outputs import predict_to_files
    from keras_solov2.io import image_paths

    files = image_paths(args.paths)  # a wrong path fails before the model loads
    model = load_model(args.model)
    records = predict_to_files(
        model,
        files,
        args.output,
        score_threshold=args.score_threshold,
        on_invalid=args.on_invalid,
    )
    count = sum(len(r["detections"]) for r in records)
    skipped = len(files) - len(records)
    print(
        f"\n{count} detections in {len(records)} images: {args.output}/"
        + (f" ({skipped} unreadable images skipped, listed above)" if skipped else "")
    )


def _to_tfrecord(args):
    from keras_solov2.data import CocoDataset, write_tfrecords

    dataset = CocoDataset(
        args.annotations,
        args.images,
        on_invalid="skip" if args.skip_invalid else args.on_invalid,
        apply_exif_orientation=not args.no_exif_orientation,
    )
    paths = write_tfrecords(dataset, args.output, num_shards=args.shards)
    print(
        f"\nWrote {len(paths)} shards ({dataset.num_images} images) to {args.output}-*"
    )
    print(f"Counts: {dataset.stats}")


def _verify(args):
    from keras_solov2.data import verify_tfrecords

    report = verify_tfrecords(args.prefix)
    print(f"\nAll {len(report)} shards of {args.prefix} are intact.")


def _web(args):
    from keras_solov2.app import web

    web.serve(args.model, port=args.port, page_dir=args.page)


def first_line(error):
    """The first line of an error's message."""
    message = str(error).strip()
    return message.splitlines()[0] if message else ""


def run(args):
    """Runs the command that `args` names; returns the exit status, 0."""
    if args.command == "train":
        _train(args)
    elif args.command == "evaluate":
        _evaluate(args)
    elif args.command == "predict":
        _predict(args)
    elif args.command == "convert":
        _convert(args)
    elif args.command == "export":
        _export(args)
    elif args.command == "data" and args.data_command == "to-tfrecord":
        _to_tfrecord(args)
    elif args.command == "data" and args.data_command == "verify":
        _verify(args)
    elif args.command == "web":
        _web(args)
    return 0
