"""Batching shared by every reader: per-epoch random seeds, canvas groups."""

import tensorflow as tf


def batch_examples(
    elements, load, batch_size, seed, repeat, drop_remainder, grouping=False
):
    """Pairs `elements` with per-epoch random seeds, maps `load`, batches.

    `load(element, random_seed)` builds one example; the seeds change every
    iteration but are fixed by `seed`. `grouping`: see `batch_by_canvas`.
    """
    randoms = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    ds = tf.data.Dataset.zip((elements, randoms))
    if repeat:
        ds = ds.repeat()
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = batch_by_canvas(ds, batch_size, drop_remainder, grouping)
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
