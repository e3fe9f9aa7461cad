"""Reader: the one input pipeline after a source's decoder.

`build_dataset(decoder, options)` does, for every source, in this order:
this input pipeline's share (`input_context`), leaving out negatives
(`keep_negatives=False`), caching, shuffling, pairing each example with a
per-epoch random seed, repeating, decoding and parsing (augmentation and
targets, `parser.parse_example`), batching (by canvas with aspect-ratio
grouping) and prefetching. The decoders (`keras_solov2.data.decoders`) only
turn their records into examples.
"""

import atexit
import gc
import sys

import tensorflow as tf

from keras_solov2.data.augmentation import Augmentation
from keras_solov2.data.parser import parse_example


@atexit.register
def _release_failed_pipelines():
    """Frees, before Python finalises, what an uncaught error kept alive.

    Python keeps the traceback of an exception that reached the top level
    (`sys.last_traceback`) until it finalises, and with it the frames that
    iterated a pipeline of `as_tf_dataset` and its `tf.data` iterator. That
    iterator's destructor would then run in a finalising interpreter, whose
    threads can no longer take the GIL, and wait forever for the
    `numpy_function` calls in flight: a training script whose data holds a
    truncated JPEG would hang instead of exiting. `atexit` runs while the
    interpreter still works, so the iterator is destroyed there.
    """
    for name in ("last_exc", "last_type", "last_value", "last_traceback"):
        if hasattr(sys, name):
            setattr(sys, name, None)
    gc.collect()


def build_dataset(decoder, options) -> tf.data.Dataset:
    """Fixed-shape `(images, targets)` batches of `decoder`'s images.

    Per image: keep-ratio resize (bilinear, no antialiasing, rounded to the
    0..255 grid as mmcv does on uint8 images) to a scale drawn from `scales`
    (or to fit the canvas, or large-scale jitter and a random window), random
    horizontal flip, padding at the bottom/right to the canvas with
    `image_geometry.PIXEL_MEAN`. The images are not normalised: every entry
    point of `keras_solov2.SOLOv2` takes raw 0..255 images and normalises
    them in its graph, which makes this padding exactly mmdetection's zero
    padding after normalisation. Masks follow the same geometry
    (pixel-centre nearest-neighbour resize, same flip, zero padding); boxes
    are scaled per axis, clipped to the resized image and flipped.

    Batch format (`B = batch_size`, `M = max_instances`, `(H, W)` the
    canvas):

    - `images`: float32 `(B, H, W, 3)`, raw RGB on the 0..255 grid, with
      `PIXEL_MEAN` in the padding.
    - `targets["labels"]`: int32 `(B, M)`, contiguous labels, `-1` for
      padding slots.
    - `targets["boxes"]`: float32 `(B, M, 4)`, `[x1, y1, x2, y2]` in canvas
      pixels; zero for padding slots.
    - with `mask_targets="compact"` (the default), what SOLOv2's loss needs
      of the masks (`transforms.compact_mask_targets`):
      `targets["mask_targets"]` uint8 `(B, M, H/4, W/4)`, the binary masks at
      the mask-feature stride; `targets["mask_centers"]` float32 `(B, M, 2)`,
      each mask's centre of mass `[y, x]` in canvas pixels;
      `targets["mask_areas"]` int32 `(B, M)`, its area in canvas pixels.
      Zero for padding slots. The model gets the same targets as from full
      masks, bit for bit, from 1/16 of the bytes.
    - with `mask_targets="full"`, `targets["masks"]`: uint8 `(B, M, H, W)`,
      binary; zero for padding slots (`M * H * W` bytes per image).
    - with `return_counts=True`, a third element `counts`:
      `{"truncated", "empty_dropped"}`, int32 `(B,)`.

    A mask can become empty after a strong down-scale (a tiny object); it is
    kept with its label and box, so target assignment must skip empty masks
    (as mmdet's SOLOv2 head does).

    Args:
        decoder: a `keras_solov2.data.decoders.Decoder`.
        options: `keras_solov2.data.PipelineOptions`.
    """
    augment = Augmentation.from_options(options)
    decoder.prepare(augment, options)
    buffer = options.shuffles(decoder.shuffle_buffer(options))
    records, sharded = decoder.records(buffer is not None, options)
    context = options.input_context
    if context is not None and context.num_input_pipelines > 1 and not sharded:
        records = records.shard(context.num_input_pipelines, context.input_pipeline_id)
    if not options.keep_negatives:
        records = records.filter(decoder.has_instances)
    if decoder.read is not None:
        records = records.map(decoder.read, num_parallel_calls=tf.data.AUTOTUNE)
    if options.cache:
        records = records.cache("" if options.cache is True else str(options.cache))
    if buffer is not None:
        records = records.shuffle(
            int(buffer), seed=options.seed, reshuffle_each_iteration=True
        )

    def load(element, random_seed):
        position, record = element
        example = decoder.decode(record, position)
        return parse_example(
            example, decoder, augment, random_seed, options.return_counts
        )

    # Enumerated after shuffling: a source without an index of its own
    # draws by the position in the stream.
    randoms = tf.data.Dataset.random(seed=options.seed, rerandomize_each_iteration=True)
    ds = tf.data.Dataset.zip((records.enumerate(), randoms))
    if options.repeat:
        ds = ds.repeat()
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = batch_by_canvas(
        ds, options.batch_size, options.drop_remainder, augment.aspect_ratio_grouping
    )
    return ds.prefetch(tf.data.AUTOTUNE)


def batch_by_canvas(ds, batch_size, drop_remainder, grouping):
    """`ds.batch`, or with aspect-ratio `grouping` batches of one canvas.

    With grouping, examples (whose first component is the image) come on a
    landscape or a portrait canvas; each batch holds `batch_size` examples
    of one canvas, in the order the canvas fills up, like mmdetection's
    `AspectRatioBatchSampler`. The batches' height and width are then not
    static (`None` in the element spec). At the end of a finite epoch each
    canvas's incomplete batch is kept, or dropped with `drop_remainder`.
    """
    if not grouping:
        return ds.batch(batch_size, drop_remainder=drop_remainder)

    def portrait(image, *rest):
        shape = tf.shape(image)
        return tf.cast(shape[0] > shape[1], tf.int64)

    return ds.group_by_window(
        key_func=portrait,
        reduce_func=lambda key, window: window.batch(
            batch_size, drop_remainder=drop_remainder
        ),
        window_size=batch_size,
    )
