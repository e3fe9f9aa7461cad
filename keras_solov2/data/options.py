"""`PipelineOptions`: the options of the one input pipeline, for every source.

`CocoDataset.as_tf_dataset`, `read_tfrecords` and `from_tfds` take the same
keywords, with the same defaults, documented here once; each builds a
`PipelineOptions` from them (`PipelineOptions.from_kwargs`) and hands it with
its source's decoder to `keras_solov2.data.reader.build_dataset`.
"""

import dataclasses
import numbers
import warnings
from collections.abc import Sequence

import tensorflow as tf

from keras_solov2.utils import image_geometry

_WARNED = set()  # deprecated names already warned about in this process


@dataclasses.dataclass(frozen=True)
class PipelineOptions:
    """What the pipeline does after decoding, the same for every source.

    Args:
        batch_size: int. Images per batch; per replica with `input_context`
            (`input_context.get_per_replica_batch_size(global_batch)`).
            Defaults to `2` (mmdetection's `samples_per_gpu`).
        canvas: tuple of two ints, or `None`. The padded batch size `(H, W)`,
            both multiples of `size_divisor`. `None` (with `scales`): the
            smallest square that every scale fits in both orientations,
            `image_geometry.canvas_for_scales(scales, size_divisor)` (768x768
            for `[(768, 512), (768, 448)]`). Required without `scales`.
            (`image_size=` is a deprecated alias.) Defaults to `None`.
        scales: `None`, one `(long, short)` pair or a list of pairs, as
            mmdet's `img_scale`. When training, each image draws one pair at
            random; otherwise the first is used. `None` resizes every image
            to fit the canvas. Defaults to `None`.
        max_instances: int. `M`, instance slots per image; the instances
            beyond are left out, warned about where the source knows them
            beforehand, and counted per image (`return_counts`). Defaults
            to `100`.
        training: bool. Random scale (or jitter) and flip. Defaults to
            `True`.
        flip_probability: float. Horizontal flip probability when training.
            Defaults to `0.5`.
        large_scale_jitter: `(low, high)` or `None`. Instead of `scales`:
            when training, resize each image to fit the canvas times a factor
            drawn uniformly from `[low, high]` (e.g. `(0.1, 2.0)` as in Simple
            Copy-Paste), then take a random canvas-sized window when it is
            larger. Instances cropped away keep their slot with an empty
            mask. Without training: fit the canvas. Defaults to `None`.
        size_divisor: int. The model's padding multiple: pass
            `model.size_divisor`. Defaults to `image_geometry.SIZE_DIVISOR`
            (`32`).
        mask_targets: `"compact"` (what SOLOv2's loss needs of the masks, at
            the mask-feature stride) or `"full"` (canvas-sized masks, to
            look at them). Defaults to `"compact"`.
        aspect_ratio_grouping: bool. Two canvases, landscape `(H, W)` with
            `H <= W` and its transpose for portrait images, and batches of
            one orientation, as mmdetection's `AspectRatioBatchSampler`.
            Batch height and width are then not static. Defaults to `False`.
        shuffle: bool or `None`. Shuffle the images, anew every iteration.
            `None`: when `training` or when a `shuffle_buffer` is given.
            Defaults to `None`.
        shuffle_buffer: int >= 1 or `None`. Images in the shuffle buffer.
            `None`: the source's own, every image for a `CocoDataset` (a full
            permutation), 256 records for TFRecords (whose shard order is
            shuffled too), and none for `from_tfds`, whose examples then
            keep their order (`tfds.load(..., shuffle_files=True)` shuffles
            its files). Defaults to `None`.
        seed: int. Seed of the shuffle, scale and flip draws: the same seed
            gives the same batches. Defaults to `0`.
        repeat: bool. Repeat forever. Defaults to `False`.
        drop_remainder: bool. Drop the last incomplete batch so that the
            batch dimension is static. Defaults to `True`.
        cache: bool or str. Keep the source's records (encoded images, or
            serialized records, or tfds examples) after the first pass:
            `True` in memory, a local path otherwise. Augmentation still
            changes every epoch. Defaults to `False`.
        keep_negatives: bool. Include the images without instances. `False`
            leaves them out, like mmdetection's `filter_empty_gt=True`.
            Defaults to `True`.
        input_context: `tf.distribute.InputContext` or `None`. For
            `strategy.distribute_datasets_from_function`: this input pipeline
            reads only its share of the images, so that no two read the
            same image in an epoch. Defaults to `None`.
        return_counts: bool. If `True`, elements are `(images, targets,
            counts)` with `counts["truncated"]` (instances beyond
            `max_instances`) and `counts["empty_dropped"]` (instances left
            out for an empty mask), int32 `(B,)`. Defaults to `False`.

    Example:
    >>> options = keras_solov2.data.PipelineOptions(batch_size=8, scales=[(768, 512)])
    >>> ds = keras_solov2.data.read_tfrecords("train-*", **options.as_kwargs())

    Reference: SOLOv2, arXiv 2003.10152 (the mmdetection training pipeline).
    """

    batch_size: int = 2
    canvas: Sequence[int] | None = None
    scales: Sequence[int] | Sequence[Sequence[int]] | None = None
    max_instances: int = 100
    training: bool = True
    flip_probability: float = 0.5
    large_scale_jitter: Sequence[float] | None = None
    size_divisor: int = image_geometry.SIZE_DIVISOR
    mask_targets: str = "compact"
    aspect_ratio_grouping: bool = False
    shuffle: bool | None = None
    shuffle_buffer: int | None = None
    seed: int = 0
    repeat: bool = False
    drop_remainder: bool = True
    cache: bool | str = False
    keep_negatives: bool = True
    input_context: tf.distribute.InputContext | None = None
    return_counts: bool = False

    def __post_init__(self):
        buffer = self.shuffle_buffer
        if buffer is not None and (
            isinstance(buffer, bool)
            or not isinstance(buffer, numbers.Integral)
            or buffer < 1
        ):
            raise ValueError(
                f"`shuffle_buffer` must be an int >= 1 or None, got {buffer!r}."
            )

    @classmethod
    def from_kwargs(cls, **kwargs) -> "PipelineOptions":
        """The options from an entry point's keywords, checked by name.

        `image_size=` is the deprecated name of `canvas=`: it is accepted and
        warned about once per process.

        Raises:
            TypeError: for a keyword that is not an option.
        """
        if "image_size" in kwargs:
            image_size = kwargs.pop("image_size")
            if kwargs.get("canvas") is not None:
                raise TypeError(
                    "Pass `canvas` only; `image_size` is its deprecated name."
                )
            kwargs["canvas"] = image_size
            if "image_size" not in _WARNED:
                _WARNED.add("image_size")
                warnings.warn(
                    "`image_size=` of the readers is deprecated; it is the "
                    "canvas: pass `canvas=` instead.",
                    DeprecationWarning,
                    stacklevel=3,
                )
        names = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(kwargs) - names)
        if unknown:
            raise TypeError(
                f"Unknown pipeline option(s) {unknown}; the options are "
                f"{sorted(names)} (see `keras_solov2.data.PipelineOptions`)."
            )
        return cls(**kwargs)

    def as_kwargs(self) -> dict:
        """The options as keywords of the entry points (shallow)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def shuffles(self, source_buffer: int | None) -> int | None:
        """The shuffle buffer, or `None` for no shuffling.

        Args:
            source_buffer: the source's default buffer (`None`: it keeps its
                order unless `shuffle_buffer` is given).

        Raises:
            ValueError: for `shuffle=True` where no buffer is known.
        """
        shuffle = self.shuffle
        if shuffle is None:
            shuffle = self.training or self.shuffle_buffer is not None
        if not shuffle:
            return None
        buffer = self.shuffle_buffer or source_buffer
        if buffer is None and self.shuffle:
            raise ValueError(
                "`shuffle=True` needs a `shuffle_buffer` here: the source's "
                "size is unknown."
            )
        return buffer
