"""The `keras-solov2` command line."""

import argparse
import functools
import gc
import os
import sys
import traceback
import warnings
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
            f"({type(error).__name__}: {_first_line(error)}); {wanted}."
        ) from None
    if not isinstance(model, expected):
        raise ValueError(
            f"{path!r} holds a {type(model).__name__} ({model.name!r}), not a "
            f"{expected.__name__}; {wanted}."
        )
    return model


def _check_image_size(size, minimum):
    """`--image-size H W` as two ints, or an error that names the flag."""
    if size is None:
        return None
    height, width = (int(v) for v in size)
    if min(height, width) < minimum:
        raise ValueError(
            f"--image-size {height} {width}: each side must be at least "
            f"{minimum} pixels, the model's size_divisor (the stride of its "
            "coarsest feature map; smaller inputs are mostly padding). Try "
            "--image-size 448 608."
        )
    return height, width


def _export(args):
    from keras_solov2 import export
    from keras_solov2.export.onnx import DEFAULT_OPSET, OPSETS

    if args.format == "saved_model" and (
        args.image_size or args.quantization or args.calibration_images
    ):
        raise ValueError(
            "--image-size (tflite, onnx), --quantization and --calibration-images "
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
    model = load_model(args.model)
    image_size = _check_image_size(args.image_size, model.size_divisor)
    if args.format == "saved_model":
        export.saved_model(model, args.output)
        return
    if args.format == "onnx":
        export.onnx(
            model,
            args.output,
            image_size=image_size,
            opset=DEFAULT_OPSET if args.opset is None else args.opset,
            include_postprocessing=not args.no_postprocessing,
        )
        return
    export.tflite(
        model,
        args.output,
        image_size=image_size,
        quantization=args.quantization,
        representative_data=args.calibration_images,
        num_calibration_images=args.num_calibration_images,
        include_postprocessing=not args.no_postprocessing,
    )


def _train(args):
    from keras_solov2.training import train
    from keras_solov2.utils.image_geometry import SIZE_DIVISOR

    image_size = _check_image_size(args.image_size, SIZE_DIVISOR)
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
        image_size=image_size,
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


# Errors that are the user's (a missing file, a bad argument, broken data):
# one line, exit status 2, no traceback unless --verbose.
USER_ERRORS = (FileNotFoundError, FileExistsError, ValueError, KeyError, OSError)

# The library's words for what the user typed as a flag.
_FLAGS = {"on_invalid='skip'": "--on-invalid skip"}


def main(argv=None):
    """Runs the command line; returns the exit status.

    Every error ends here, so that the exception and its traceback are gone
    before the interpreter exits. An exception left to the top level stays
    alive (`sys.last_traceback`) until Python finalises, and with it the
    `tf.data` iterator of `fit`'s frames: its parallel map then waits, in a
    finalising interpreter, for `numpy_function` calls whose threads can no
    longer take the GIL, and the process hangs.
    """
    arguments = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(arguments)
    format_warning = warnings.formatwarning
    warnings.formatwarning = functools.partial(_format_warning, args.command)
    try:
        status = _run_reporting_errors(args)
    finally:
        warnings.formatwarning = format_warning
    gc.collect()  # the pipelines held by cycles of the failed frames
    return status


def _run_reporting_errors(args):
    """`run(args)`'s status: 2 with one line for a user error (its
    traceback with --verbose), 1 with the traceback for anything else, 130
    on Ctrl+C."""
    try:
        return run(args)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        print(f"\nkeras-solov2 {args.command}: interrupted.", file=sys.stderr)
        return 130
    except USER_ERRORS as error:
        if args.verbose:
            raise
        print(
            f"keras-solov2 {args.command}: error: {type(error).__name__}: "
            f"{_first_line(error)} (--verbose shows the traceback)",
            file=sys.stderr,
        )
        return 2
    except Exception:
        traceback.print_exc()
        return 1


def _first_line(error):
    """The first line of an error's message, in the flags the user typed."""
    message = str(error).strip()
    message = message.splitlines()[0] if message else ""
    for word, flag in _FLAGS.items():
        message = message.replace(word, flag)
    return message


def _format_warning(command, message, category, filename, lineno, line=None):
    """A warning as one line that names the command, in the user's flags."""
    return f"keras-solov2 {command}: warning: {_first_line(message)}\n"


def _add_on_invalid(parser, what):
    parser.add_argument(
        "--on-invalid",
        choices=("raise", "skip"),
        default="raise",
        help=f"{what}: stop with an error that names it (raise, the default) "
        "or skip it and count it (skip)",
    )


def build_parser():
    from keras_solov2.export.tflite import QUANTIZATIONS
    from keras_solov2.models.solov2_presets import ARCHITECTURES
    from keras_solov2.optimizers import DEFAULT_SCHEDULE, SCHEDULES

    parser = argparse.ArgumentParser(
        prog="keras-solov2", description="SOLOv2 for Keras 3."
    )
    parser.add_argument(
        "--verbose", action="store_true", help="show tracebacks of errors"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    trainer = commands.add_parser(
        "train",
        help="Train on a COCO-format dataset (AP per epoch, resume, presets).",
    )
    trainer.add_argument("annotations", nargs="?", help="training COCO instances json")
    trainer.add_argument("images", nargs="?", help="training image folder")
    trainer.add_argument(
        "--tfrecords",
        metavar="PREFIX",
        help="train from shards of `keras-solov2 data to-tfrecord` instead of "
        "ANNOTATIONS IMAGES",
    )
    trainer.add_argument("--output", required=True, help="run folder to write")
    trainer.add_argument("--val-annotations", help="validation COCO instances json")
    trainer.add_argument("--val-images", help="validation image folder")
    trainer.add_argument(
        "--model",
        default="light_r18_coco",
        help="preset name, preset directory or architecture (default light_r18_coco)",
    )
    trainer.add_argument(
        "--epochs", type=int, help="epochs (default: the schedule's, 12 for 1x)"
    )
    trainer.add_argument("--batch-size", type=int, default=8)
    trainer.add_argument(
        "--image-size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="train at this one keep-ratio scale (default: the model's "
        "train_scales, its preset's official multi-scale training)",
    )
    trainer.add_argument(
        "--lr", type=float, help="learning rate (default 0.01 x batch size / 16)"
    )
    trainer.add_argument(
        "--schedule", choices=sorted(SCHEDULES), default=DEFAULT_SCHEDULE
    )
    trainer.add_argument("--warmup-steps", type=int, default=500)
    _add_on_invalid(
        trainer, "an invalid annotation or image file (all are checked first)"
    )
    trainer.add_argument(
        "--resume",
        action="store_true",
        help="continue the interrupted run in --output from its last finished epoch",
    )
    evaluator = commands.add_parser(
        "evaluate", help="COCO mask and box AP, results.json, per-class AP, PR curve."
    )
    evaluator.add_argument("model", help="a .keras file, preset directory or name")
    evaluator.add_argument("annotations", help="COCO instances json")
    evaluator.add_argument("images", help="image folder")
    evaluator.add_argument("--output", required=True, help="folder to write")
    _add_on_invalid(evaluator, "an invalid annotation or image file")
    predictor = commands.add_parser(
        "predict", help="Masks drawn (PNG) and RLE detections (JSON) per image."
    )
    predictor.add_argument("model", help="a .keras file, preset directory or name")
    predictor.add_argument("paths", nargs="+", help="image files or folders")
    predictor.add_argument("--output", required=True, help="folder to write")
    predictor.add_argument(
        "--score-threshold",
        type=float,
        help="keep (and draw) detections scoring at least this "
        "(default: the model's score_threshold)",
    )
    _add_on_invalid(predictor, "an image file that cannot be read (truncated)")
    convert = commands.add_parser(
        "convert", help="Convert an mmdetection / SOLO SOLOv2 .pth into a preset dir."
    )
    convert.add_argument("checkpoint", help="the .pth checkpoint")
    convert.add_argument(
        "--architecture",
        required=True,
        choices=sorted(ARCHITECTURES),
    )
    convert.add_argument("--output", required=True, help="preset directory to write")
    exporter = commands.add_parser(
        "export", help="Export a model as a .tflite or .onnx file or a SavedModel."
    )
    exporter.add_argument(
        "model", help="a .keras file, a preset directory or a preset name"
    )
    exporter.add_argument(
        "--format", choices=("tflite", "onnx", "saved_model"), required=True
    )
    exporter.add_argument("--output", required=True, help="file or directory to write")
    exporter.add_argument(
        "--image-size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="fixed input size of the .tflite or .onnx (default: a 4:3 frame at "
        "the model's test scale, 448 608 for the light models)",
    )
    exporter.add_argument(
        "--opset",
        type=int,
        default=None,
        help="ONNX opset of the .onnx: 17 (default, TensorRT 8.5+) or 18",
    )
    exporter.add_argument(
        "--quantization", choices=[q for q in QUANTIZATIONS if q], default=None
    )
    exporter.add_argument(
        "--calibration-images",
        help="folder of images from your data, for --quantization int8",
    )
    exporter.add_argument("--num-calibration-images", type=int, default=32)
    exporter.add_argument(
        "--no-postprocessing",
        action="store_true",
        help="the dense body only (category logits, kernels, mask features)",
    )
    data = commands.add_parser("data", help="Dataset tools.")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    to_tfrecord = data_commands.add_parser(
        "to-tfrecord", help="Write a COCO-format dataset as sharded TFRecords."
    )
    to_tfrecord.add_argument("annotations", help="COCO instances json")
    to_tfrecord.add_argument("images", help="image folder")
    to_tfrecord.add_argument("--output", required=True, help="shard prefix")
    to_tfrecord.add_argument("--shards", type=int, default=8)
    _add_on_invalid(to_tfrecord, "an invalid annotation or image file")
    to_tfrecord.add_argument(
        "--skip-invalid",
        action="store_true",
        help="the same as --on-invalid skip",
    )
    to_tfrecord.add_argument(
        "--no-exif-orientation",
        action="store_true",
        help="keep JPEGs as stored (for annotations made on the unrotated pixels)",
    )
    verify = data_commands.add_parser(
        "verify", help="Check TFRecord shards against their .meta.json."
    )
    verify.add_argument("prefix", help="shard prefix given to to-tfrecord")
    web = commands.add_parser(
        "web",
        help="Serve the in-browser page (LiteRT.js: WebGPU or WebAssembly) "
        "for an exported .tflite on 127.0.0.1.",
    )
    web.add_argument("model", help="a .tflite from `export --format tflite`")
    web.add_argument(
        "--port", type=int, default=8000, help="default 8000; 0 picks a free port"
    )
    web.add_argument(
        "--page",
        help="the built page folder (default: the page installed with the "
        "package, keras_solov2/app/web_page/, built by `make web`)",
    )
    return parser


def run(args):
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


if __name__ == "__main__":
    sys.exit(main())
