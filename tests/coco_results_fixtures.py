"""A tiny COCO dataset with sparse category ids, the predictions that give its
ground truth, and stand-ins for SOLOv2, shared by the evaluation tests."""

import contextlib
import io
import json

import numpy as np
from PIL import Image
from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from keras_solov2.evaluation import STAT_NAMES
from keras_solov2.evaluation.coco_results import coco_results_of_batch

CATEGORIES = [
    {"id": 12, "name": "ring"},
    {"id": 3, "name": "box"},
    {"id": 7, "name": "dot"},
]
CATEGORY_IDS = sorted(c["id"] for c in CATEGORIES)  # contiguous label i -> id
IMAGE_SIZES = {1: (64, 80), 2: (48, 48), 5: (100, 60)}  # id -> (height, width)


def rectangle(size, y0, x0, y1, x1):
    mask = np.zeros(size, bool)
    mask[y0:y1, x0:x1] = True
    return mask


def circle(size, cy, cx, radius):
    yy, xx = np.mgrid[: size[0], : size[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2


# (image id, category id, mask) of every ground-truth instance.
INSTANCES = [
    (1, 3, rectangle(IMAGE_SIZES[1], 5, 5, 30, 40)),
    (1, 7, circle(IMAGE_SIZES[1], 45, 60, 12)),
    (1, 3, rectangle(IMAGE_SIZES[1], 40, 2, 60, 25)),
    (2, 12, circle(IMAGE_SIZES[2], 24, 24, 15)),
    (2, 7, rectangle(IMAGE_SIZES[2], 2, 2, 10, 12)),
    (5, 12, rectangle(IMAGE_SIZES[5], 10, 10, 90, 50)),
    (5, 3, circle(IMAGE_SIZES[5], 30, 30, 9)),
]


def encode(mask):
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def ground_truth_dataset():
    images = [
        {"id": i, "height": h, "width": w, "file_name": f"{i:012d}.png"}
        for i, (h, w) in IMAGE_SIZES.items()
    ]
    annotations = []
    for ann_id, (image_id, category_id, mask) in enumerate(INSTANCES, start=1):
        rle = encode(mask)
        annotations.append(
            {
                "id": ann_id,
                "image_id": image_id,
                "category_id": category_id,
                "segmentation": rle,
                "area": float(mask.sum()),
                "bbox": [float(v) for v in mask_util.toBbox(rle)],
                "iscrowd": 0,
            }
        )
    return {"images": images, "annotations": annotations, "categories": CATEGORIES}


def coco_ground_truth():
    """The dataset as a `pycocotools.coco.COCO`."""
    coco = COCO()
    coco.dataset = ground_truth_dataset()
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def write_dataset(folder):
    """The dataset as files in `folder`: `(annotation_file, image_dir)`."""
    dataset = ground_truth_dataset()
    for info in dataset["images"]:
        pixels = np.full((info["height"], info["width"], 3), 128, np.uint8)
        pixels[0, 0] = info["id"]  # marker read by GroundTruthModel
        Image.fromarray(pixels).save(folder / info["file_name"])
    annotation_file = folder / "instances.json"
    annotation_file.write_text(json.dumps(dataset))
    return str(annotation_file), str(folder)


def prediction_for(image_id, transform=None, num_padding=2):
    """A batch-of-one prediction dict holding the ground truth of an image.

    `transform(mask, label) -> (mask, label)` alters each instance. Padding
    follows the real entries: `num_padding` garbage entries labelled -1
    inside `num_detections`, then one valid-looking entry after it.
    """
    size = IMAGE_SIZES[image_id]
    rng = np.random.default_rng(image_id)
    masks, labels, scores = [], [], []
    for i, (img, category_id, mask) in enumerate(INSTANCES):
        if img != image_id:
            continue
        label = CATEGORY_IDS.index(category_id)
        if transform is not None:
            mask, label = transform(mask, label)
        masks.append(mask)
        labels.append(label)
        scores.append(0.9 - 0.01 * i)
    num = len(masks) + num_padding
    for _ in range(num_padding):
        masks.append(rng.random(size) > 0.5)
        labels.append(-1)
        scores.append(0.99)
    # Beyond num_detections: must be ignored even though its label is valid.
    masks.append(np.ones(size, bool))
    labels.append(0)
    scores.append(0.95)
    return {
        "masks": np.stack(masks)[None].astype(np.uint8),
        "labels": np.array([labels], np.int32),
        "scores": np.array([scores], np.float32),
        "boxes": np.zeros((1, len(labels), 4), np.float32),
        "num_detections": np.array([num], np.int32),
    }


def results_for(transform=None, category_ids=CATEGORY_IDS):
    results = []
    for image_id in IMAGE_SIZES:
        prediction = prediction_for(image_id, transform)
        results += coco_results_of_batch(prediction, [image_id], category_ids)
    return results


class GroundTruthModel:
    """Stands in for SOLOv2: finds the image by a marker pixel, returns its GT."""

    def __init__(self):
        self.batch_sizes = []

    def predict(self, images, verbose="auto"):
        assert images.dtype == np.uint8 and images.ndim == 4 and images.shape[-1] == 3
        self.batch_sizes.append(len(images))
        outputs = [prediction_for(int(image[0, 0, 0])) for image in images]
        # The same number of slots per image, so that they can be stacked.
        slots = max(o["labels"].shape[1] for o in outputs)
        batch = {}
        for key, fill in [("masks", 0), ("labels", -1), ("scores", 0), ("boxes", 0)]:
            padded = []
            for o in outputs:
                pad = [(0, 0)] * o[key].ndim
                pad[1] = (0, slots - o[key].shape[1])
                padded.append(np.pad(o[key], pad, constant_values=fill))
            batch[key] = np.concatenate(padded)
        batch["num_detections"] = np.concatenate([o["num_detections"] for o in outputs])
        return batch


def cocoeval_by_hand(coco_gt, coco_dt, iou_type="segm"):
    """The 12 statistics of pycocotools' COCOeval, run as its README says."""
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(coco_gt, coco_dt, iouType=iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return dict(zip(STAT_NAMES, (float(v) for v in evaluator.stats), strict=True))


class ShiftedModel(GroundTruthModel):
    """The ground truth moved by a few pixels and relabelled for one class:
    an AP between 0 and 1 that depends on masks, boxes, labels and scores."""

    def predict(self, images, verbose="auto"):
        out = super().predict(images, verbose)
        out["masks"] = np.roll(out["masks"], (3, 2), axis=(2, 3))
        out["labels"] = np.where(out["labels"] == 2, 1, out["labels"])
        return out


def with_a_truncated_image(annotation_file, image_dir):
    """Adds image 9, a truncated PNG with one annotation, to the dataset."""
    with open(annotation_file) as f:
        dataset = json.load(f)
    dataset["images"].append(
        {"id": 9, "height": 20, "width": 20, "file_name": "000000000009.png"}
    )
    ann = dict(dataset["annotations"][0], id=99, image_id=9)
    ann["segmentation"] = encode(rectangle((20, 20), 2, 2, 10, 10))
    dataset["annotations"].append(ann)
    with open(annotation_file, "w") as f:
        json.dump(dataset, f)
    Image.new("RGB", (20, 20)).save(f"{image_dir}/000000000009.png")
    with open(f"{image_dir}/000000000009.png", "r+b") as f:
        f.truncate(40)
