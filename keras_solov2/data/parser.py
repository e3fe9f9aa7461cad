"""Parser: one decoded example to the training pair, the same for every source.

Draws the example's geometry (`Augmentation.draw`, from the per-epoch seed
and the example's `index` only, so that every source draws the same), checks
that it fits the canvas, and applies it to the image, the masks and the boxes
(`keras_solov2.data.transforms`).
"""


def parse_example(example, decoder, augment, random_seed, return_counts=False):
    """`(image, targets)` or `(image, targets, counts)` of one example.

    Args:
        example: dict of tensors from `decoder.decode` (see `Decoder`).
        decoder: the `Decoder`, whose `instances` resamples the masks.
        augment: the checked `Augmentation`.
        random_seed: int64 scalar, this epoch's seed of the example.
        return_counts: bool. Also return `{"truncated", "empty_dropped"}`.
    """
    original_hw = (example["height"], example["width"])
    geometry = augment.draw(*original_hw, random_seed, example["index"])
    geometry = augment.checked(geometry, example["name"])
    image = augment.image(example["image"], geometry)
    masks, labels, boxes = decoder.instances(example, geometry)
    targets = augment.instances(masks, labels, boxes, original_hw, geometry)
    if not return_counts:
        return image, targets
    counts = {
        "empty_dropped": example["num_empty"],
        "truncated": example["num_truncated"],
    }
    return image, targets, counts
