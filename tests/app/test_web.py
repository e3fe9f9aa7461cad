"""`keras-solov2 web` without a browser: its errors, its server, and the
page's letterbox against Python's (in Node.js). The page in headless
Chromium is in test_web_browser.py.
"""

import json
import os
import subprocess
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest
from helpers import REPO, require

from keras_solov2 import export
from keras_solov2.app import cli, web

ROOT = str(REPO)


# ------------------------------------------------ no browser, no model needed
def test_cli_web_says_which_file_is_missing_and_what_to_do(tmp_path, capsys):
    missing = str(tmp_path / "nope.tflite")
    assert cli.main(["web", missing, "--port", "0"]) == 2
    assert f"No such model file: {missing}" in capsys.readouterr().err

    model = tmp_path / "m.tflite"
    model.write_bytes(b"TFL3")
    assert cli.main(["web", str(model), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "No m.tflite.json beside" in err and "keras-solov2 export" in err

    (tmp_path / "m.tflite.json").write_text('{"format": "keras_solov2.tflite/1"}')
    empty = tmp_path / "no_page"
    empty.mkdir()
    assert cli.main(["web", str(model), "--port", "0", "--page", str(empty)]) == 2
    err = capsys.readouterr().err
    assert "The web page is not built" in err and "make web" in err

    with pytest.raises(ValueError, match="not a .tflite"):
        web.check_files(str(tmp_path / "m.tflite.json"))


def test_server_serves_the_page_the_model_and_its_json(tmp_path):
    page = tmp_path / "page"
    (page / "wasm").mkdir(parents=True)
    (page / "index.html").write_text("<!doctype html><title>page</title>")
    (page / "wasm" / "x.wasm").write_bytes(b"\0asm")
    model = tmp_path / "tiny.tflite"
    model.write_bytes(b"model bytes")
    (tmp_path / "tiny.tflite.json").write_text('{"format": "keras_solov2.tflite/1"}')
    server = web.make_server(str(model), port=0, page_dir=str(page))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert server.url.startswith("http://127.0.0.1:") and not server.url.endswith(
            ":0/"
        )

        def get(path):
            with urllib.request.urlopen(server.url + path.lstrip("/")) as response:
                return response.read(), response.headers

        body, headers = get("/")
        assert b"<title>page</title>" in body
        # Cross-origin isolation: LiteRT.js may use its threaded Wasm.
        assert headers["Cross-Origin-Opener-Policy"] == "same-origin"
        assert headers["Cross-Origin-Embedder-Policy"] == "require-corp"
        assert get("/model.tflite?v=1")[0] == b"model bytes"
        assert json.loads(get("/model.tflite.json")[0])["format"].startswith(
            "keras_solov2"
        )
        assert get("/wasm/x.wasm")[1]["Content-Type"] == "application/wasm"
        with pytest.raises(urllib.error.HTTPError, match="404"):
            get("/tiny.tflite")  # only the two routes expose files outside the page
    finally:
        server.shutdown()
        server.server_close()


def test_the_page_letterbox_gives_pythons_bytes(tmp_path):
    """web/src/letterbox.js against keras_solov2.export.letterbox, in Node."""
    import shutil

    node = shutil.which("node")
    require(node, "Node.js is not installed (needed to build and check the page)")
    rng = np.random.default_rng(0)
    # Shrinking (antialiased), enlarging, the identity, tall and wide frames.
    cases = [
        ((408, 640), (60, 90)),
        ((30, 20), (60, 90)),
        ((60, 90), (60, 90)),
        ((640, 480), (96, 128)),
        ((1000, 17), (64, 96)),
        ((37, 53), (448, 608)),
    ]
    expected = []
    for i, (shape, size) in enumerate(cases):
        image = rng.integers(0, 256, (*shape, 3)).astype(np.uint8)
        if i % 2:  # smooth images too: more values near the rounding ties
            steps = rng.integers(-3, 4, (*shape, 3))
            image = np.clip(np.cumsum(steps, axis=1) + 128, 0, 255).astype(np.uint8)
        image.tofile(tmp_path / f"in{i}.raw")
        canvas, scale, resized = export.letterbox(image, size)
        expected.append((canvas, scale, resized))
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    module = os.path.join(ROOT, "web", "src", "letterbox.js")
    script = (
        "import fs from 'node:fs';\n"
        f"import {{ letterbox }} from {json.dumps(module)};\n"
        "const [dir, pad] = [process.argv[1], JSON.parse(process.argv[2])];\n"
        "const cases = JSON.parse(fs.readFileSync(`${dir}/cases.json`));\n"
        "const meta = cases.map(([shape, size], i) => {\n"
        "  const rgb = new Uint8Array(fs.readFileSync(`${dir}/in${i}.raw`));\n"
        "  const out = letterbox(rgb, shape, size, pad);\n"
        "  fs.writeFileSync(`${dir}/out${i}.raw`, out.canvas);\n"
        "  return { scale: out.scale, resized: out.resized };\n"
        "});\n"
        "console.log(JSON.stringify(meta));\n"
    )
    result = subprocess.run(
        [
            node,
            "--input-type=module",
            "-e",
            script,
            str(tmp_path),
            json.dumps(list(export.PAD_VALUE)),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    meta = json.loads(result.stdout)
    for i, (canvas, scale, resized) in enumerate(expected):
        got = np.fromfile(tmp_path / f"out{i}.raw", np.uint8).reshape(canvas.shape)
        np.testing.assert_array_equal(got, canvas, err_msg=f"case {cases[i]}")
        assert meta[i] == {"scale": scale, "resized": list(resized)}, cases[i]
