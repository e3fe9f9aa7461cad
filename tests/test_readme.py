"""The examples of README.md and docs/ run, as written, on the bundled images.

Each page's ```python blocks (README.md, then every docs/*.md) run in order in
one namespace per page (as a reader runs them one after the other), and so
do the `keras-solov2 ...` lines of its ```bash blocks (through
`keras_solov2.app.cli.main`), in a folder
holding `annotations.json` and `images/` (the five COCO 2017 images of
tests/fixtures/coco_mini with their original annotations, portrait photos
added by transposing two of them). Only the substitutions below are applied,
each one must match, and every block that cannot run here must be listed in
`NOT_RUN` (never run here) or `SLOW_ONLY` (run by `make test-slow`) with
the reason, by a line it holds, so that an example cannot rot silently. The
test prints each skipped block with its reason (`pytest -s` shows them), and
checks that every marker still matches a block.
"""

import glob
import json
import os
import re
import shlex
import shutil
import time

import numpy as np
import pytest
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "coco_mini")

# (pattern, replacement, why): applied to every block in which they match.
SUBSTITUTIONS = [
    (
        r'from_preset\(\n?(\s*)"(\w+_coco)",',
        r'from_preset(\n\1"\2", load_weights=False,',
        "no network in tests: the official weights cannot be downloaded",
    ),
    (r"steps_per_epoch=1000", "steps_per_epoch=1", "one step is enough to run"),
    (
        r"steps_per_epoch=10, epochs=2",
        "steps_per_epoch=1, epochs=1",
        "one step is enough to run",
    ),
    (r"batch_size=8", "batch_size=2", "a small batch on 2 CPU cores"),
    (
        r"jit_compile=True",
        "jit_compile=False",
        "XLA takes minutes to compile a light R18 training step on 2 cores; "
        "tests/models/solov2/test_solov2.py trains with jit_compile=True",
    ),
]
SUBSTITUTIONS += [
    (
        r"--epochs 12",
        "--epochs 1 --model light_r18 --batch-size 2 --scale 256 256",
        "one short epoch from random init (no weights offline)",
    ),
    (r"/data/coco_train", "coco_train", "shards in the test folder"),
    (r"--shards 64", "--shards 2", "seven images make two shards"),
    (r" \[--skip-invalid\]", "", "an optional flag, shown in brackets"),
    (
        r"--model light_r18_coco",
        "--model light_r18",
        "no network in tests: random init instead of the official weights",
    ),
]
# Blocks that need files, network or devices a test machine does not have,
# or that do not end, by a line they hold.
NOT_RUN = {
    "examples/demo.py --steps 300": (
        "installs a fresh venv and trains for minutes; tests/test_demo.py runs "
        "the demo, tests/app/test_workflow_cli.py runs predict and export"
    ),
    "export light_r18_coco": (
        "exports the official COCO weights, which need network; "
        "tests/export/test_export.py and tests/export/test_onnx.py export tiny models"
    ),
    "keras-solov2 web solov2.tflite": (
        "serves until stopped; tests/app/test_web_browser.py serves the page (slow)"
    ),
    'keras_solov2.export.onnx(model, "solov2_light.onnx"': (
        "needs the official COCO weights (network); tests/export/test_onnx.py"
    ),
    "import onnxruntime as ort": (
        "needs an exported file and a photo; tests/export/test_onnx.py runs "
        "ONNX Runtime"
    ),
    "tf.distribute.MirroredStrategy()": (
        "COCO 2017 on N GPUs; tests/test_distribute.py fits on 2 logical CPUs"
    ),
    'os.environ["KERAS_BACKEND"] = "jax"': (
        "switches the backend of a running process; tests/test_jax_*.py run "
        "JAX in subprocesses"
    ),
    "export TF_CONFIG": (
        "needs two machines; tests/test_distribute_multi_worker.py (slow)"
    ),
    "strategy = tf.distribute.MultiWorkerMirroredStrategy()": (
        "needs two machines and gs:// shards; "
        "tests/test_distribute_multi_worker.py (slow)"
    ),
    "jax.distributed.initialize(coordinator_address": "needs two hosts",
    'DeviceMesh((4, 2), ("batch", "model")': (
        "needs 8 devices; tests/test_jax_distribution.py shards on 2"
    ),
    "keras-solov2 convert solov2_r50": (
        "needs an official checkpoint; tests/convert/test_convert_and_presets.py "
        "converts one written by the tests"
    ),
    'from_mmdet("solov2.pth"': (
        "needs an official checkpoint; tests/convert/test_convert_and_presets.py "
        "converts one written by the tests"
    ),
}
# Blocks that the default suite skips for time, by a line they hold; the
# slow test (`make test-slow`) runs every block of the pages that hold them.
SLOW_ONLY = {
    "keras-solov2 train annotations.json": (
        "light R18 training, evaluation and export take minutes; "
        "tests/app/test_workflow_cli.py runs the same commands on a tiny model"
    ),
    'export.tflite(model, "solov2.tflite"': (
        "three exports of a light R18 take minutes; tests/export/test_export.py "
        "exports tiny models in the default suite"
    ),
    "--format onnx": (
        "the ONNX export of a light R18 takes about 30 s; tests/export/test_onnx.py "
        "exports a tiny model in the default suite"
    ),
    "--quantization int8": (
        "int8 calibration of a light R18 takes minutes; "
        "tests/export/test_export_quantization.py "
        "runs int8 on a tiny model in the default suite"
    ),
}


def pages():
    """README.md, then every page of the documentation site."""
    return ["README.md"] + sorted(
        os.path.relpath(path, ROOT)
        for path in glob.glob(os.path.join(ROOT, "docs", "*.md"))
    )


def page_blocks(page):
    """(language, code) of every ```python and ```bash block, in order."""
    with open(os.path.join(ROOT, page)) as f:
        text = f.read()
    return re.findall(r"```(python|bash)\n(.*?)```", text, flags=re.S)


def all_blocks():
    return [block for page in pages() for block in page_blocks(page)]


def python_blocks():
    return [code for language, code in all_blocks() if language == "python"]


def run_commands(block):
    """Runs the block's `keras-solov2 ...` lines; the number run."""
    from keras_solov2.app.cli import main

    lines = [line for line in block.splitlines() if line.startswith("keras-solov2 ")]
    for line in lines:
        assert main(shlex.split(line)[1:]) == 0, line
    return len(lines)


def make_data_folder(folder):
    """annotations.json + images/: coco_mini plus two portrait photos."""
    source = os.path.join(FIXTURES, "annotations", "instances_val2017.json")
    with open(source) as f:
        data = json.load(f)
    images = os.path.join(folder, "images")
    shutil.copytree(os.path.join(FIXTURES, "val2017"), images)
    landscape = [i for i in data["images"] if i["width"] > i["height"]][:2]
    next_image = max(i["id"] for i in data["images"]) + 1
    next_ann = max(a["id"] for a in data["annotations"]) + 1
    for entry in landscape:
        name = f"portrait_{entry['file_name']}"
        pixels = np.asarray(Image.open(os.path.join(images, entry["file_name"])))
        Image.fromarray(np.ascontiguousarray(pixels.transpose(1, 0, 2))).save(
            os.path.join(images, name), quality=95
        )
        data["images"].append(
            {
                "id": next_image,
                "file_name": name,
                "height": entry["width"],
                "width": entry["height"],
            }
        )
        for ann in [a for a in data["annotations"] if a["image_id"] == entry["id"]]:
            if ann.get("iscrowd") or not isinstance(ann["segmentation"], list):
                continue
            x, y, w, h = ann["bbox"]
            polygons = [
                [v for pair in zip(p[1::2], p[0::2], strict=True) for v in pair]
                for p in ann["segmentation"]
            ]
            data["annotations"].append(
                {
                    **ann,
                    "id": next_ann,
                    "image_id": next_image,
                    "bbox": [y, x, h, w],
                    "segmentation": polygons,
                }
            )
            next_ann += 1
        next_image += 1
    with open(os.path.join(folder, "annotations.json"), "w") as f:
        json.dump(data, f)
    return data


def prepared(block, include_slow=True):
    """The block with the substitutions applied, or `None` with a reason."""
    for marker, reason in NOT_RUN.items():
        if marker in block:
            return None, reason
    for marker, reason in SLOW_ONLY.items():
        if marker in block and not include_slow:
            return None, f"slow test only: {reason}"
    for pattern, replacement, _ in SUBSTITUTIONS:
        block = re.sub(pattern, replacement, block)
    return block, None


def test_substitutions_and_skips_still_match_the_readme():
    assert "docs/inference.md" in pages() and "docs/export.md" in pages()
    blocks = python_blocks()
    assert len(blocks) >= 3
    text = "\n".join(code for _, code in all_blocks())
    for pattern, _, why in SUBSTITUTIONS:
        assert re.search(pattern, text), f"substitution no longer matches ({why})"
    for marker in [*NOT_RUN, *SLOW_ONLY]:
        assert marker in text, f"marker {marker!r} is gone from the README"
    runnable = [b for b in blocks if prepared(b)[0] is not None]
    assert len(runnable) >= len(blocks) - len(NOT_RUN)


def test_readme_python_examples_run(tmp_path, monkeypatch):
    run_readme(tmp_path, monkeypatch, include_slow=False)


@pytest.mark.slow
def test_readme_examples_run_all_of_them(tmp_path, monkeypatch):
    run_readme(tmp_path, monkeypatch, include_slow=True)


def pages_with_slow_blocks():
    """The pages that hold a `SLOW_ONLY` block."""
    return [
        page
        for page in pages()
        if any(marker in code for _, code in page_blocks(page) for marker in SLOW_ONLY)
    ]


def run_readme(tmp_path, monkeypatch, include_slow):
    """Every page's blocks but the slow ones (`include_slow=False`), or every
    block of the pages that hold a slow one (a page's blocks share one
    namespace): the two runs together run every block."""
    data = make_data_folder(str(tmp_path))
    assert any(i["height"] > i["width"] for i in data["images"])  # portraits
    monkeypatch.chdir(tmp_path)
    ran, commands, slow_markers = 0, 0, set()
    for page in pages_with_slow_blocks() if include_slow else pages():
        namespace = {"__name__": "docs"}  # one namespace per page
        for number, (language, block) in enumerate(page_blocks(page)):
            where = f"{page} {language} block {number}"
            code, reason = prepared(block, include_slow)
            if code is None:
                print(f"{where} not run: {reason}")
                continue
            slow_markers.update(m for m in SLOW_ONLY if m in block)
            start = time.perf_counter()
            try:
                if language == "bash":
                    commands += run_commands(code)
                    continue
                exec(compile(code, where, "exec"), namespace)
            except Exception as error:
                raise AssertionError(f"{where} failed:\n{code}") from error
            print(f"{where} ran in {time.perf_counter() - start:.1f} s")
            ran += 1
    if include_slow:
        assert slow_markers == set(SLOW_ONLY) and commands >= 1
    else:
        assert not slow_markers and ran >= 8 and commands >= 1


def test_readme_is_a_front_door():
    """At most 150 lines, starting with the two commands for a fresh clone."""
    with open(os.path.join(ROOT, "README.md")) as f:
        lines = f.read().splitlines()
    assert len(lines) <= 150, len(lines)
    assert lines[3].startswith("make demo") and lines[4].startswith("make test")
