"""The `keras-solov2` command line."""

import argparse
import os
import sys


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


def _to_tfrecord(args):
    from keras_solov2.data import CocoDataset, write_tfrecords

    dataset = CocoDataset(
        args.annotations,
        args.images,
        on_invalid="skip" if args.skip_invalid else "raise",
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


def main(argv=None):
    from keras_solov2.models.solov2_presets import ARCHITECTURES

    parser = argparse.ArgumentParser(
        prog="keras-solov2", description="SOLOv2 for Keras 3."
    )
    commands = parser.add_subparsers(dest="command", required=True)
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
    data = commands.add_parser("data", help="Dataset tools.")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    to_tfrecord = data_commands.add_parser(
        "to-tfrecord", help="Write a COCO-format dataset as sharded TFRecords."
    )
    to_tfrecord.add_argument("annotations", help="COCO instances json")
    to_tfrecord.add_argument("images", help="image folder")
    to_tfrecord.add_argument("--output", required=True, help="shard prefix")
    to_tfrecord.add_argument("--shards", type=int, default=8)
    to_tfrecord.add_argument(
        "--skip-invalid",
        action="store_true",
        help="check every image first, then skip and count invalid annotations "
        "and unreadable images instead of failing",
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
    args = parser.parse_args(argv)
    if args.command == "convert":
        _convert(args)
    elif args.command == "data" and args.data_command == "to-tfrecord":
        _to_tfrecord(args)
    elif args.command == "data" and args.data_command == "verify":
        _verify(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
