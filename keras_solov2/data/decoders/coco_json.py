"""Decoder of a `CocoDataset`: its image files and validated annotations.

The records are the images' positions in the dataset (the draw key too); the
file bytes are checked before decoding (TensorFlow's decode errors name no
file), and the masks are decoded from the annotations in numpy straight at
the drawn size and window.
"""

import numpy as np
import tensorflow as tf

from keras_solov2.data.annotations import (
    instance_boxes,
    instance_masks,
    warn_truncation,
)
from keras_solov2.data.decoders.base import Decoder
from keras_solov2.data.images import apply_orientation, decode_rgb
from keras_solov2.data.transforms import resized_sizes


class CocoJsonDecoder(Decoder):
    """The images of a `keras_solov2.data.CocoDataset`, one record each.

    Args:
        dataset: `CocoDataset`.
    """

    def __init__(self, dataset):
        self.dataset = dataset
        self._records = dataset._records
        self.selected = None

    def prepare(self, augment, options):
        """Leaves out the negatives, checks sizes, counts the truncation."""
        dataset, records = self.dataset, self._records
        keep = options.keep_negatives
        self.selected = [i for i, r in enumerate(records) if keep or r["instances"]]
        dataset.stats["negatives_left_out"] = len(records) - len(self.selected)
        if not self.selected:
            raise ValueError(
                f"'{dataset.annotation_file}' has no images"
                f"{'' if keep else ' with instances'}."
            )
        num_images, batch_size = len(self.selected), options.batch_size
        if options.drop_remainder and not options.repeat and num_images < batch_size:
            raise ValueError(
                f"{num_images} images < batch_size {batch_size} with "
                "drop_remainder=True would give no batch."
            )
        if augment.jitter is None:  # raises naming a misfit image
            self._check_sizes_fit(augment)
        counts = [len(r["instances"]) for r in records]
        truncated_images, truncated_instances = warn_truncation(
            counts, options.max_instances, dataset.annotation_file, stacklevel=4
        )
        dataset.stats.update(
            max_instances=int(options.max_instances),
            truncated_images=truncated_images,
            truncated_instances=truncated_instances,
        )
        self.max_instances = int(options.max_instances)
        self._paths = tf.constant([r["path"] for r in records])
        self._sizes = tf.constant(
            [[r["height"], r["width"]] for r in records], tf.int32
        )
        self._counts = tf.constant(counts, tf.int32)

    def records(self, shuffle, options):
        indices = np.array(self.selected, np.int64)
        return tf.data.Dataset.from_tensor_slices(indices), False

    def shuffle_buffer(self, options):
        """Every image of this input pipeline's share: a full permutation."""
        context, num_images = options.input_context, len(self.selected)
        if context is None:
            return num_images
        share = range(context.input_pipeline_id, num_images)
        return len(share[:: context.num_input_pipelines])

    def has_instances(self, index):
        return self._counts[index] > 0

    def read(self, index):
        """The index and the file's bytes (what `cache=True` keeps)."""
        return index, tf.io.read_file(self._paths[index])

    def decode(self, record, position):
        index, raw = record
        orientation = tf.numpy_function(
            self._inspect, [raw, index], tf.int32, stateful=False
        )
        with tf.control_dependencies([orientation]):
            # Decode only checked bytes: TF's decode errors name no file.
            raw = tf.identity(raw)
        image = apply_orientation(decode_rgb(raw), orientation)
        num_instances = self._counts[index]
        return {
            "image": image,
            "height": self._sizes[index][0],
            "width": self._sizes[index][1],
            "index": index,
            "name": self._paths[index],
            "num_truncated": tf.maximum(num_instances - self.max_instances, 0),
            "num_empty": tf.constant(0, tf.int32),
        }

    def _inspect(self, raw, index):
        """Checks one image's bytes (numpy side): its EXIF orientation."""
        return np.int32(self.dataset.image_orientation(int(index), raw))

    def instances(self, example, geometry):
        masks, labels, boxes = tf.numpy_function(
            self._load_targets,
            [
                example["index"],
                geometry["size"],
                geometry["offset"],
                geometry["window"],
                tf.shape(example["image"])[:2],
            ],
            [tf.uint8, tf.int32, tf.float64],
            stateful=False,
        )
        return masks, tf.reshape(labels, [-1]), tf.reshape(boxes, [-1, 4])

    def _load_targets(self, index, size, offset, window, decoded_hw):
        """Numpy side: one image's masks, labels and boxes.

        Masks come resized to `size` and cropped to the window (`(n, wh, ww)`
        uint8, pixel-centre nearest neighbour as
        `transforms.nearest_indices`), boxes as float64 `[x1, y1, x2, y2]` in
        original pixels; `transforms.finish_instances` does the rest.
        """
        record = self._records[int(index)]
        h, w = record["height"], record["width"]
        if (int(decoded_hw[0]), int(decoded_hw[1])) != (h, w):
            raise ValueError(
                f"Image '{record['path']}' (image id {record['id']}) decodes to "
                f"{int(decoded_hw[0])}x{int(decoded_hw[1])} but "
                f"'{self.dataset.annotation_file}' says {h}x{w}."
            )
        instances = record["instances"][: self.max_instances]
        n = len(instances)
        wh, ww = int(window[0]), int(window[1])
        labels = np.array([inst["label"] for inst in instances], np.int32)
        if n == 0:
            return np.zeros((0, wh, ww), np.uint8), labels, np.zeros((0, 4))
        rh, rw = int(size[0]), int(size[1])
        rows = (2 * (int(offset[0]) + np.arange(wh, dtype=np.int64)) + 1) * h
        cols = (2 * (int(offset[1]) + np.arange(ww, dtype=np.int64)) + 1) * w
        rows, cols = rows // (2 * rh), cols // (2 * rw)
        full = instance_masks(instances, h, w)  # (h, w, n)
        masks = np.ascontiguousarray(
            full[rows[:, None], cols[None, :], :].transpose(2, 0, 1)
        )
        return masks, labels, instance_boxes(instances)

    def _check_sizes_fit(self, augment):
        """Raises, naming the first image that some scale resizes past the canvas.

        The sizes come from `transforms.resized_sizes`, the function the
        pipeline itself uses, for every image and scale at once.
        """
        records, scales = self._records, augment.scales
        heights = np.array([r["height"] for r in records], np.int64)
        widths = np.array([r["width"] for r in records], np.int64)
        portrait = heights > widths
        if augment.aspect_ratio_grouping:
            groups = [(augment.canvas, ~portrait), (augment.portrait_canvas, portrait)]
        else:
            groups = [(augment.canvas, np.ones_like(portrait))]
        for canvas, group in groups:
            index = np.flatnonzero(group)
            if not len(index):
                continue
            sizes = resized_sizes(heights[index], widths[index], canvas, scales)
            sizes = sizes.numpy()  # (n, S, 2)
            misfit = np.any((sizes > np.array(canvas)) | (sizes < 1), axis=-1)
            if misfit.any():
                k, j = (int(v) for v in np.argwhere(misfit)[0])
                record, scale = records[index[k]], (scales or [None])[j]
                raise ValueError(
                    f"Image '{record['file_name']}' ({record['height']}x"
                    f"{record['width']}) resized with scale {scale} becomes "
                    f"{sizes[k, j, 0]}x{sizes[k, j, 1]}, which does not fit "
                    f"the {canvas[0]}x{canvas[1]} canvas. "
                    f"{augment.misfit_advice()}"
                )
