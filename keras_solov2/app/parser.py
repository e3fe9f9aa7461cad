"""The `keras-solov2` command's arguments: `build_parser()`."""

import argparse


def _add_on_invalid(parser, what):
    parser.add_argument(
        "--on-invalid",
        choices=("raise", "skip"),
        default="raise",
        help=f"{what}: stop with an error that names it (raise, the default) "
        "or skip it and count it (skip)",
    )


def _add_size(parser, flag, metavar, help):
    """Two ints `flag`, and `--image-size`, its deprecated name (the note
    and the checks are `keras_solov2.app.commands.size_argument`'s)."""
    parser.add_argument(flag, type=int, nargs=2, metavar=metavar, help=help)
    parser.add_argument(
        "--image-size",
        type=int,
        nargs=2,
        metavar=metavar,
        help=f"the deprecated name of {flag}, for one release",
    )


def build_parser():
    """The `argparse` parser of `keras-solov2` and its commands."""
    from keras_solov2.export.tflite import QUANTIZATIONS
    from keras_solov2.models.solov2.solov2_presets import ARCHITECTURES
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
    _add_size(
        trainer,
        "--scale",
        ("LONG", "SHORT"),
        "train at this one keep-ratio scale, the sides in either order "
        "(default: the model's train_scales, its preset's official multi-scale "
        "training)",
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
    _add_size(
        exporter,
        "--input-size",
        ("H", "W"),
        "fixed input size of the .tflite or .onnx (default: a 4:3 frame at "
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
    for flag, setting in (
        ("--max-candidates", "candidates whose masks are computed"),
        ("--pre-nms-top-k", "candidates into Matrix NMS"),
    ):
        exporter.add_argument(
            flag,
            type=int,
            metavar="N",
            help=f"{setting} (default: the model's setting); lower caps cost "
            "less and report candidates_overflow when they could have changed "
            "a result (docs/inference.md)",
        )
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
