"""The in-browser page (web/) served by `keras-solov2 web`.

The browser tests export a tiny model, start `keras-solov2 web` on a free
port, drive headless Chromium with Playwright, upload a real COCO image and
compare what the page reports with LiteRT's Python interpreter on the very
bytes the page gave the model. They need Chromium (/usr/bin/chromium),
Playwright (the `dev` extra) and the built page (`make web`); without them
they skip, except in CI (CI=true), where they fail.
"""

import base64
import io
import json
import os
import queue
import subprocess
import sys
import threading

import numpy as np
import pytest
from helpers import (
    FIXTURES,
    IMAGE_SIZE,
    REPO,
    detecting_model,
    require,
    run_interpreter,
)

from keras_solov2 import export
from keras_solov2.app import web

ROOT = str(REPO)
CHROMIUM = "/usr/bin/chromium"
# 640 x 408, landscape: letterboxed into 60 x 90 with padding at the bottom.
COCO_IMAGE = os.path.join(FIXTURES, "coco_mini", "val2017", "000000205401.jpg")
# Headless Chromium has no GPU here: Dawn's SwiftShader (software Vulkan) is
# the one adapter it offers WebGPU (lavapipe is listed but blocklisted).
WEBGPU_FLAGS = [
    "--enable-unsafe-webgpu",
    "--enable-unsafe-swiftshader",
    "--use-webgpu-adapter=swiftshader",
]
# Screenshots of every page state the tests reach (git-ignored).
SCREENSHOTS = os.path.join(ROOT, "outputs", "web")
STATES = {
    "loaded": "['ready', 'model-error'].includes(document.body.dataset.state)",
    "ran": "['done', 'image-error'].includes(document.body.dataset.state)",
}


def require_browser():
    require(
        os.path.isfile(os.path.join(web.default_page_dir(), "index.html")),
        f"the page is not built ({web.default_page_dir()}): run `make web`",
    )
    require(
        os.access(CHROMIUM, os.X_OK),
        f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium)",
    )
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        require(False, "Playwright is not installed (pip install -e '.[dev]')")


# ------------------------------------------------------------ in the browser
@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The tiny model's end-to-end and body-only files, and files not ours."""
    require_browser()
    import tensorflow as tf

    folder = tmp_path_factory.mktemp("web")
    model = detecting_model()
    files = {
        "end_to_end": export.tflite(
            model, str(folder / "tiny.tflite"), input_size=IMAGE_SIZE, verbose=False
        ),
    }
    metadata = (folder / "tiny.tflite.json").read_text()
    body = export.tflite(
        model,
        str(folder / "body.tflite"),
        input_size=IMAGE_SIZE,
        include_postprocessing=False,
        verbose=False,
    )
    files["body_only"] = body  # with its own JSON: outputs are the body's
    # The body file behind an end-to-end JSON: the tensors lack the outputs.
    (folder / "lying").mkdir()
    files["missing_outputs"] = str(folder / "lying" / "body.tflite")
    with open(body, "rb") as src, open(files["missing_outputs"], "wb") as dst:
        dst.write(src.read())
    (folder / "lying" / "body.tflite.json").write_text(metadata)

    # Someone else's model: a float32 input called `image`, one output.
    @tf.function(input_signature=[tf.TensorSpec((1, *IMAGE_SIZE, 3), tf.float32)])
    def foreign(image):
        return {"pooled": tf.nn.avg_pool2d(image, 2, 2, "VALID")}

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [foreign.get_concrete_function()], tf.Module()
    )
    files["wrong_input"] = str(folder / "foreign.tflite")
    with open(files["wrong_input"], "wb") as f:
        f.write(converter.convert())
    (folder / "foreign.tflite.json").write_text(metadata)

    files["not_tflite"] = str(folder / "garbage.tflite")
    with open(files["not_tflite"], "wb") as f:
        f.write(np.random.default_rng(0).bytes(4096))
    (folder / "garbage.tflite.json").write_text(metadata)
    return files


def start_cli_server(model):
    """`keras-solov2 web MODEL --port 0` in a subprocess; returns (process, url)."""
    script = os.path.join(os.path.dirname(sys.executable), "keras-solov2")
    command = (
        [script]
        if os.access(script, os.X_OK)
        else [sys.executable, "-m", "keras_solov2"]
    )
    process = subprocess.Popen(
        [*command, "web", model, "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    lines = queue.Queue()
    threading.Thread(
        target=lambda: [lines.put(line) for line in process.stdout], daemon=True
    ).start()
    try:
        first = lines.get(timeout=120)
    except queue.Empty:
        first = ""
    if "http://127.0.0.1:" not in first:
        process.kill()
        pytest.fail(
            f"keras-solov2 web printed {first!r}; stderr: {process.stderr.read()}"
        )
    url = first[first.index("http://") :].split()[0]
    assert not url.endswith(":0/"), "port 0 must be replaced by the port picked"
    return process, url


@pytest.fixture(scope="module")
def page_url(models):
    process, url = start_cli_server(models["end_to_end"])
    yield url
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture(scope="module")
def playwright_session():
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as session:
        yield session


def launch(session, flags=()):
    # --no-sandbox: Chromium refuses to start its sandbox as root.
    return session.chromium.launch(
        executable_path=CHROMIUM, args=["--no-sandbox", *flags]
    )


@pytest.fixture(scope="module")
def browser(playwright_session):
    browser = launch(playwright_session)
    yield browser
    browser.close()


def screenshot(page, name):
    os.makedirs(SCREENSHOTS, exist_ok=True)
    path = os.path.join(SCREENSHOTS, name)
    page.screenshot(path=path, full_page=True)
    return path


def open_page(browser, url):
    page = browser.new_page()
    page.goto(url)
    page.wait_for_function(STATES["loaded"], timeout=120_000)
    return page


def run_image(page, path):
    page.set_input_files("#file", path)
    page.wait_for_function(STATES["ran"], timeout=120_000)
    return page.evaluate("window.solov2.result")


def page_bytes(page, what, shape, *args):
    data = page.evaluate(f"(args) => window.solov2.debug.{what}(...args)", list(args))
    return np.frombuffer(base64.b64decode(data), np.uint8).reshape(shape)


def check_against_interpreter(page, result, model_path, score_atol):
    """The page's detections against LiteRT's Python interpreter on the
    page's own input bytes; returns the interpreter's outputs."""
    height, width = result["imageShape"]
    decoded = page_bytes(page, "image", (height, width, 3))
    canvas = page_bytes(page, "input", (*IMAGE_SIZE, 3))
    # The page letterboxes exactly as keras_solov2.export.letterbox does.
    python_canvas, scale, resized = export.letterbox(decoded, IMAGE_SIZE)
    np.testing.assert_array_equal(canvas, python_canvas)
    assert result["scale"] == scale and result["resized"] == list(resized)

    out = run_interpreter(model_path, canvas[None])
    n = int(out["num_detections"][0])
    assert n >= 5, "the test model must detect something to compare"
    assert result["numDetections"] == n
    detections = result["detections"]
    np.testing.assert_array_equal(
        [d["label"] for d in detections], out["labels"][0, :n]
    )
    np.testing.assert_allclose(
        [d["score"] for d in detections], out["scores"][0, :n], atol=score_atol
    )
    boxes = np.minimum(out["boxes"][0, :n] / scale, [width, height, width, height])
    np.testing.assert_allclose([d["box"] for d in detections], boxes, atol=0.05)
    return out, decoded, resized


@pytest.mark.slow
def test_page_detections_equal_the_python_interpreters(browser, page_url, models):
    from PIL import Image

    from keras_solov2.io import load_image
    from keras_solov2.layers import paste_masks

    page = open_page(browser, page_url + "?backend=wasm&min_score=0")
    assert page.evaluate("window.solov2.state") == "ready", page.evaluate(
        "window.solov2.error"
    )
    assert page.evaluate("window.solov2.backend") == "wasm"
    assert "XNNPACK on WebAssembly" in page.inner_text("#backend")
    result = run_image(page, COCO_IMAGE)
    assert page.evaluate("window.solov2.state") == "done", page.evaluate(
        "window.solov2.error"
    )
    metadata = json.loads(open(models["end_to_end"] + ".json").read())
    out, decoded, resized = check_against_interpreter(
        page, result, models["end_to_end"], score_atol=1e-3
    )
    # Chromium decodes the JPEG as Pillow does (both libjpeg-turbo).
    original = load_image(COCO_IMAGE)
    assert decoded.shape == original.shape
    assert np.abs(decoded.astype(int) - original).max() <= 2

    # The drawn masks: the page's one bilinear step against paste_masks'
    # two (x4, then to the image): equal but for edge pixels.
    n = result["numDetections"]
    assert result["displayShape"] == result["imageShape"]
    pasted = np.asarray(
        paste_masks(
            out["masks"],
            resized,
            original.shape[:2],
            mask_threshold=metadata["mask_threshold"],
            mask_stride=metadata["mask_stride"],
            num_detections=out["num_detections"],
        )
    )[0]
    ious = []
    for k in range(n):
        drawn = page_bytes(page, "mask", original.shape[:2], k).astype(bool)
        assert drawn.sum() == result["detections"][k]["maskArea"]
        union = np.logical_or(drawn, pasted[k]).sum()
        if union >= 100:
            ious.append(np.logical_and(drawn, pasted[k]).sum() / union)
    assert len(ious) >= 5 and np.median(ious) >= 0.95, ious

    # What the user sees: the backend, the latency, the count, the masks.
    assert "ms model (WebAssembly)" in page.inner_text("#latency")
    assert f"{n} detections" in page.inner_text("#status")
    assert page.locator("#detections li").count() == n
    assert page.is_hidden("#error")
    # The score slider hides the faint detections without running again.
    page.locator("#min-score").fill("0.3")
    shown = sum(d["score"] >= 0.3 for d in result["detections"])
    assert 0 < shown < n
    assert page.locator("#detections li").count() == shown
    assert f"{shown} shown (score ≥ 0.30)" in page.inner_text("#status")
    shot = screenshot(page, "wasm.png")
    view = np.asarray(Image.open(io.BytesIO(page.locator("#view").screenshot())))
    assert view.shape[:2] == tuple(result["displayShape"])
    # The masks recolour the photo: many canvas pixels differ from it.
    changed = np.abs(view[..., :3].astype(int) - original).sum(-1) > 30
    assert changed.mean() > 0.05
    print(f"screenshot: {shot}; latency {result['latencyMs']}")


@pytest.mark.slow
def test_page_says_when_a_file_is_not_an_image(browser, page_url, tmp_path):
    page = open_page(browser, page_url + "?backend=wasm")
    fake = tmp_path / "holiday.jpg"
    fake.write_text("this is a text file, not a photo")
    run_image(page, str(fake))
    assert page.evaluate("window.solov2.state") == "image-error"
    assert page.is_visible("#error")
    message = page.inner_text("#error")
    assert "holiday.jpg is not an image this browser can read" in message, message
    screenshot(page, "not_an_image.png")
    # The model is still loaded: the next image runs and clears the message.
    result = run_image(page, COCO_IMAGE)
    assert page.evaluate("window.solov2.state") == "done" and page.is_hidden("#error")
    assert result["numDetections"] >= 5


@pytest.mark.slow
@pytest.mark.parametrize(
    "kind,expected",
    [
        ("body_only", "holds the dense body only"),
        ("missing_outputs", "lacks the outputs masks, labels, scores, boxes"),
        ("wrong_input", 'its input "image" is float32 [1, 60, 90, 3], not uint8'),
        ("not_tflite", "Loading model.tflite failed"),
    ],
)
def test_page_says_when_the_model_is_not_ours(browser, models, kind, expected):
    server = web.make_server(models[kind], port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        page = open_page(browser, server.url + "?backend=wasm")
        assert page.evaluate("window.solov2.state") == "model-error"
        assert page.is_visible("#error")
        message = page.inner_text("#error")
        assert expected in message, message
        assert page.locator("#file").is_disabled()
        screenshot(page, f"model_{kind}.png")
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow
def test_page_on_webgpu_gives_the_interpreters_detections(
    playwright_session, page_url, models
):
    browser = launch(playwright_session, WEBGPU_FLAGS)
    try:
        page = open_page(browser, page_url + "?backend=webgpu")
        state = page.evaluate("window.solov2")
        assert state["state"] == "ready", state["error"]
        assert state["backend"] == "webgpu", state["backendDetail"]
        # Every op, the post-processing included, on the GPU.
        assert state["fullyAccelerated"], state["backendDetail"]
        assert "WebGPU" in page.inner_text("#backend")
        result = run_image(page, COCO_IMAGE)
        assert page.evaluate("window.solov2.state") == "done", page.evaluate(
            "window.solov2.error"
        )
        # Looser: the GPU may compute in float16.
        check_against_interpreter(page, result, models["end_to_end"], score_atol=1e-2)
        assert "ms model (WebGPU)" in page.inner_text("#latency")
        screenshot(page, "webgpu.png")
        print(f"WebGPU: {state['backendDetail']}; adapter {state['adapter']}")
    finally:
        browser.close()
