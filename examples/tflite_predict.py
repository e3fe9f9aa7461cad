"""Run an exported SOLOv2 .tflite on one image with LiteRT (no TensorFlow).

    python examples/tflite_predict.py model.tflite photo.jpg [--output masks.png]

Needs only numpy, Pillow and ai-edge-litert (`pip install ai-edge-litert
pillow`). The steps are the ones an app takes (docs/android.md):

1. letterbox the image to the model's fixed input size (keep the aspect
   ratio, pad the bottom and right with the ImageNet mean), uint8 RGB;
2. run the `serving_default` signature;
3. for each of the first `num_detections` slots: upsample its stride-4
   mask probabilities x4, crop them to the letterboxed image, resize to the
   original size and threshold; divide its box by the letterbox scale.

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


def paste_mask(probs, stride, resized, original, threshold):
    """Stride-`stride` probabilities -> a bool mask at the original size."""
    h, w = probs.shape
    up = Image.fromarray(probs.astype(np.float32), mode="F").resize(
        (w * stride, h * stride), Image.BILINEAR
    )
    up = up.crop((0, 0, resized[1], resized[0]))
    full = up.resize((original[1], original[0]), Image.BILINEAR)
    return np.asarray(full) > threshold


def predict(model_path, image, num_threads=2):
    """Detections of one PIL image: a list of dicts and the latency in ms."""
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
    latency_ms = 1000 * (time.perf_counter() - start)
    names = metadata.get("class_names")
    threshold = metadata.get("mask_threshold", 0.5)
    stride = metadata.get("mask_stride", 4)
    detections = []
    for i in range(int(outputs["num_detections"][0])):
        label = int(outputs["labels"][0, i])
        detections.append(
            {
                "label": label,
                "name": names[label] if names else str(label),
                "score": float(outputs["scores"][0, i]),
                # Canvas pixels -> original pixels.
                "box": [
                    float(min(v / scale, limit))
                    for v, limit in zip(
                        outputs["boxes"][0, i],
                        [image.width, image.height] * 2,
                        strict=True,
                    )
                ],
                "mask": paste_mask(
                    outputs["masks"][0, i],
                    stride,
                    resized,
                    (image.height, image.width),
                    threshold,
                ),
            }
        )
    return detections, latency_ms


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
    detections, latency_ms = predict(args.model, image, args.threads)
    print(f"{len(detections)} detections in {latency_ms:.0f} ms ({args.model})")
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
