"""Run an exported SOLOv2 .tflite on one image with LiteRT (no TensorFlow).

    python examples/tflite_predict.py model.tflite photo.jpg [--output masks.png]

Needs only numpy, Pillow and ai-edge-litert (`pip install ai-edge-litert
pillow`). The steps are the ones an app takes (docs/android.md):

1. letterbox the image to the model's fixed input size (keep the aspect
   ratio, pad the bottom and right with the ImageNet mean), uint8 RGB;
2. run the `serving_default` signature;
3. for each of the first `num_detections` slots: crop its `input_masks`
   mask (uint8, at the input size) to the letterboxed image (slots past
   `input_masks` upsample their stride-4 `masks` probabilities instead),
   and divide its box by the letterbox scale. That is all the app's own
   work (`read_detections`); the masks are drawn scaled to the photo.

Prints one line per detection and writes a PNG with the masks drawn. The
class names and the mask threshold come from the JSON file that
`keras_solov2.export.tflite` writes beside the model.
"""

import argparse
import json
import os
import sys
import time

import numpy as np
from ai_edge_litert.interpreter import Interpreter
from PIL import Image, ImageDraw

# ImageNet mean rounded to uint8: the padding that the model expects.
PAD_VALUE = (124, 116, 104)


def letterbox(image, height, width):
    """`(canvas, scale, (h, w))`: `image` resized to fit, padded with the mean."""
    scale = min(height / image.height, width / image.width)
    h = min(height, max(1, int(image.height * scale + 0.5)))
    w = min(width, max(1, int(image.width * scale + 0.5)))
    canvas = Image.new("RGB", (width, height), PAD_VALUE)
    canvas.paste(image.resize((w, h), Image.BILINEAR), (0, 0))
    return np.asarray(canvas, np.uint8), scale, (h, w)


def paste_mask(probs, stride, resized, threshold):
    """Stride-`stride` probabilities -> a bool mask of the letterboxed image."""
    h, w = probs.shape
    up = Image.fromarray(probs.astype(np.float32), mode="F").resize(
        (w * stride, h * stride), Image.BILINEAR
    )
    return np.asarray(up)[: resized[0], : resized[1]] > threshold


def read_detections(outputs, scale, resized, names, threshold, stride):
    """The app's own work after the call: a dict per detection.

    Masks are uint8 alpha masks (0 or 255) at the letterboxed size
    (`resized`), where the model saw the image; an app draws them scaled by
    `1 / scale`. The first slots' masks come from `input_masks`, uint8 at
    the input size, so they are only cropped (a view, no copy); later slots
    are upsampled from the stride-4 probabilities in `masks` (about 2 ms
    each).
    """
    input_masks = outputs["input_masks"][0]
    detections = []
    for i in range(int(outputs["num_detections"][0])):
        label = int(outputs["labels"][0, i])
        if i < len(input_masks):
            mask = input_masks[i, : resized[0], : resized[1]]
        else:
            probs = outputs["masks"][0, i]
            mask = paste_mask(probs, stride, resized, threshold).astype(np.uint8) * 255
        detections.append(
            {
                "label": label,
                "name": names[label] if names else str(label),
                "score": float(outputs["scores"][0, i]),
                # Letterboxed pixels -> original pixels.
                "box": [float(v / scale) for v in outputs["boxes"][0, i]],
                "mask": mask,
            }
        )
    return detections


def at_original_size(mask, size):
    """A letterboxed-size alpha mask as a bool mask of size `(h, w)`."""
    if mask.shape != tuple(size):
        image = Image.fromarray(np.ascontiguousarray(mask))
        mask = np.asarray(image.resize((size[1], size[0]), Image.NEAREST))
    return mask > 0


def predict(model_path, image, num_threads=2):
    """Detections of one PIL image, masks at its size, and timings in ms.

    Returns `(detections, timings)`: `timings["model_ms"]` is the call,
    `timings["app_ms"]` the app's own work after it (`read_detections`).
    """
    metadata_path = model_path + ".json"
    metadata = {}
    if os.path.exists(metadata_path):
        with open(metadata_path) as f:
            metadata = json.load(f)
    interpreter = Interpreter(model_path=model_path, num_threads=num_threads)
    runner = interpreter.get_signature_runner("serving_default")
    (input_details,) = runner.get_input_details().values()
    _, height, width, _ = input_details["shape"]
    canvas, scale, resized = letterbox(image, height, width)
    start = time.perf_counter()
    outputs = runner(image=canvas[None])
    middle = time.perf_counter()
    detections = read_detections(
        outputs,
        scale,
        resized,
        metadata.get("class_names"),
        metadata.get("mask_threshold", 0.5),
        metadata.get("mask_stride", 4),
    )
    end = time.perf_counter()
    for det in detections:
        det["mask"] = at_original_size(det["mask"], (image.height, image.width))
        det["box"] = [
            min(v, limit)
            for v, limit in zip(
                det["box"], [image.width, image.height] * 2, strict=True
            )
        ]
    timings = {"model_ms": 1000 * (middle - start), "app_ms": 1000 * (end - middle)}
    return detections, timings


def draw(image, detections):
    """The image with each mask blended in its own colour, and a label."""
    rng = np.random.default_rng(0)
    pixels = np.asarray(image, np.float32).copy()
    for det in detections:
        colour = rng.integers(60, 256, 3).astype(np.float32)
        pixels[det["mask"]] = 0.5 * pixels[det["mask"]] + 0.5 * colour
    result = Image.fromarray(pixels.astype(np.uint8))
    pen = ImageDraw.Draw(result)
    for det in detections:
        x1, y1 = det["box"][:2]
        pen.text((x1 + 2, y1 + 1), f"{det['name']} {det['score']:.2f}", fill="white")
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="the exported .tflite file")
    parser.add_argument("image", help="an image file")
    parser.add_argument("--output", default="tflite_masks.png", help="PNG to write")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    image = Image.open(args.image).convert("RGB")
    detections, timings = predict(args.model, image, args.threads)
    print(
        f"{len(detections)} detections in {timings['model_ms']:.0f} ms "
        f"+ {timings['app_ms']:.2f} ms after the call ({args.model})"
    )
    for det in detections:
        box = ", ".join(f"{v:.0f}" for v in det["box"])
        print(
            f"  {det['name']:>16s}  score {det['score']:.3f}  box [{box}]  "
            f"mask {int(det['mask'].sum())} px"
        )
    draw(image, detections).save(args.output)
    print(f"Wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
