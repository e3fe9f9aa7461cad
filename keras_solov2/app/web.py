"""`keras-solov2 web`: the in-browser page, served locally with one model.

The page (`web/` in the repository, built by `make web` into
`keras_solov2/app/web_page/`, package data that the wheel carries) runs an
exported `.tflite` with LiteRT.js in the browser: WebGPU when the browser has
it, XNNPACK on WebAssembly otherwise. This module only serves
files on 127.0.0.1: the page, LiteRT.js's Wasm files, the model at
`/model.tflite` and its JSON at `/model.tflite.json`. Images never reach
it; the page reads them in the browser.
"""

import functools
import http.server
import json
import os

_PACKAGE_PAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "web_page")
BUILD_COMMAND = "make web (that is: cd web && npm ci && npm run build)"
EXPORT_COMMAND = "keras-solov2 export MODEL --format tflite --output model.tflite"
END_TO_END_OUTPUTS = ("masks", "labels", "scores", "boxes", "num_detections")

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".map": "application/json",
    ".json": "application/json",
    ".wasm": "application/wasm",
    ".tflite": "application/octet-stream",
}


def default_page_dir():
    """`web_page/` of the installed package: in a wheel built after `make web`,
    or in a checkout (editable install) once `make web` has run there."""
    return _PACKAGE_PAGE


def check_files(model, page_dir=None):
    """`(model, metadata, page_dir)` as absolute paths, or a clear error.

    The model's JSON is `model.tflite.json` (or `model.json`, as earlier
    exports named it) and must be keras-solov2's for a `.tflite`.

    Raises:
        FileNotFoundError: the `.tflite`, its JSON or the built page is
            missing; the message says which and what to do.
        ValueError: `model` is not a `.tflite` file name, or its JSON is not
            the one `keras-solov2 export --format tflite` writes.
    """
    from keras_solov2.export.common import read_metadata

    model = os.path.abspath(model)
    if not model.endswith(".tflite"):
        raise ValueError(
            f"{model} is not a .tflite file; the page runs the file that "
            f"`{EXPORT_COMMAND}` writes."
        )
    if not os.path.isfile(model):
        raise FileNotFoundError(
            f"No such model file: {model}. Export one with `{EXPORT_COMMAND}`."
        )
    _, metadata = read_metadata(model, "tflite")
    page_dir = os.path.abspath(page_dir or default_page_dir())
    if not os.path.isfile(os.path.join(page_dir, "index.html")):
        raise FileNotFoundError(
            f"The web page is not built: no index.html in {page_dir}. Build it "
            f"in a keras-solov2 checkout with `{BUILD_COMMAND}` (needs Node.js "
            "and npm) before installing or building the wheel, or pass --page "
            "with a built copy."
        )
    return model, metadata, page_dir


def check_model(model, metadata):
    """What the page would refuse, said before serving: `model` must be a
    TFLite file and `metadata` (its JSON's path) describe the end-to-end
    export, not the dense body (`--no-postprocessing`).

    Raises:
        ValueError: naming the file and what to export instead.
    """
    with open(model, "rb") as f:
        identifier = f.read(8)[4:]
    if identifier != b"TFL3":
        raise ValueError(
            f"{model} is not a TFLite model (no TFL3 file identifier); export "
            f"one with `{EXPORT_COMMAND}`."
        )
    with open(metadata) as f:
        outputs = json.load(f).get("outputs") or []
    missing = [name for name in END_TO_END_OUTPUTS if name not in outputs]
    if missing:
        raise ValueError(
            f"{metadata} describes a file without the outputs {missing} (the "
            "dense body of --no-postprocessing); the page needs the end-to-end "
            "file: export again without --no-postprocessing."
        )


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Static files from the page folder, plus the model and its JSON."""

    def __init__(self, *args, routes, **kwargs):
        self.routes = routes
        super().__init__(*args, **kwargs)

    def translate_path(self, path):
        route = self.routes.get(path.split("?", 1)[0].split("#", 1)[0])
        return route if route else super().translate_path(path)

    def guess_type(self, path):
        return _TYPES.get(os.path.splitext(path)[1].lower()) or super().guess_type(path)

    def end_headers(self):
        # Cross-origin isolation lets LiteRT.js use its threaded Wasm.
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_request(self, code="-", size="-"):
        # Failed requests are still logged (send_error calls log_error).
        pass


def make_server(model, port=8000, page_dir=None, host="127.0.0.1"):
    """A `ThreadingHTTPServer` for the page and `model`, not yet serving.

    `port=0` picks a free port; `server.url` is the address to open.
    """
    model, metadata, page_dir = check_files(model, page_dir)
    handler = functools.partial(
        _Handler,
        directory=page_dir,
        routes={"/model.tflite": model, "/model.tflite.json": metadata},
    )
    try:
        server = http.server.ThreadingHTTPServer((host, port), handler)
    except OSError as error:
        raise OSError(
            f"Cannot serve on {host}:{port} ({error.strerror or error}); pick "
            "another port with --port (0 picks a free one)."
        ) from error
    server.daemon_threads = True
    server.url = f"http://{host}:{server.server_address[1]}/"
    server.model = model
    return server


def serve(model, port=8000, page_dir=None):
    """Checks `model` and its JSON (`check_files`, `check_model`), then
    serves the page for it until Ctrl+C."""
    model, metadata, page_dir = check_files(model, page_dir)
    check_model(model, metadata)
    server = make_server(model, port, page_dir)
    try:
        print(
            f"Serving the SOLOv2 page for {server.model} at {server.url}\n"
            "Open it in a browser (WebGPU when the browser has it, WebAssembly "
            "otherwise); images stay in the browser. Ctrl+C stops.",
            flush=True,
        )
        server.serve_forever()
    except KeyboardInterrupt:
        print("\nStopped.")
    finally:
        server.server_close()
