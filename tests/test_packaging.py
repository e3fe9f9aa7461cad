"""The wheel, installed as a user installs it, with no checkout beside it.

`python -m build` makes the sdist and, from it, the wheel (so the sdist must
carry the built page too). The wheel goes, not editable, into a fresh venv
whose commands run in a temporary folder: `keras-solov2 --help`, `predict` on
the bundled sample image with a tiny random model, `export --format tflite`
of that model, and `keras-solov2 web` serving the page from the installed
package.

The fresh venv gets the wheel with `--no-deps`, and its third-party
dependencies from this environment's site-packages through a `.pth` line:
installing TensorFlow and the rest from PyPI takes about 3 minutes here (the
README's `pip install .`, with no pip cache), longer than this whole test.
That line adds the folder to `sys.path` without running the `.pth` files in
it, so the editable install of this checkout there (a `.pth` and its finder)
does not load: the test checks that `keras_solov2` is not importable before
the wheel is installed, that it then comes from the fresh venv's
site-packages, and that every requirement the wheel declares is met by the
versions it runs with. The build needs PyPI for its isolated build
environment (setuptools, wheel), about 10 s.

It needs the built page (`make web`): it skips without it, except in CI
(CI=true), where it fails.
"""

import json
import os
import signal
import subprocess
import sys
import sysconfig
import tarfile
import urllib.request
import venv
import zipfile

import pytest
from helpers import detecting_model, require
from pycocotools import mask as mask_util

from keras_solov2.app import web

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGE = "keras_solov2/app/web_page/"
SAMPLE = "keras_solov2/utils/shapes.jpg"
ENV = {
    **{k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")},
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "KERAS_BACKEND": "tensorflow",
}

# Run in the fresh venv: where the package, its page and its sample image
# are, and every declared requirement (no extra) against its installed version.
PROBE = """
import importlib.metadata as metadata, json
from packaging.requirements import Requirement
import keras_solov2, keras_solov2.app.web
unmet = []
for line in metadata.requires("keras-solov2"):
    requirement = Requirement(line)
    if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
        version = metadata.version(requirement.name)
        if not requirement.specifier.contains(version, prereleases=True):
            unmet.append(f"{requirement} (installed: {version})")
print(json.dumps({
    "package": keras_solov2.__file__,
    "page": keras_solov2.app.web.default_page_dir(),
    "sample": keras_solov2.utils.sample_image_path(),
    "unmet": unmet,
}))
"""


def run(command, cwd, timeout=300):
    result = subprocess.run(
        command, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, (
        command,
        result.stdout[-2000:],
        result.stderr[-3000:],
    )
    return result


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    """The sdist and the wheel that `python -m build` makes of this checkout."""
    require(
        os.path.isfile(os.path.join(web.default_page_dir(), "index.html")),
        f"the page is not built ({web.default_page_dir()}): run `make web`",
    )
    out = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "build", "--outdir", str(out), ROOT], cwd=out)
    (sdist,) = out.glob("keras_solov2-*.tar.gz")
    (wheel,) = out.glob("keras_solov2-*-py3-none-any.whl")
    return sdist, wheel


@pytest.fixture(scope="module")
def installed(dists, tmp_path_factory):
    """A fresh venv with the wheel; returns (bin folder, site-packages, cwd)."""
    root = tmp_path_factory.mktemp("fresh")
    venv.create(root / "venv", with_pip=False)
    python = str(root / "venv" / "bin" / "python")
    work = root / "work"
    work.mkdir()
    site = run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        cwd=work,
    ).stdout.strip()
    with open(os.path.join(site, "_dependencies.pth"), "w") as f:
        f.write(sysconfig.get_paths()["purelib"] + "\n")
    find = "import importlib.util as u; print(u.find_spec('{}') is not None)"
    assert run([python, "-c", find.format("tensorflow")], cwd=work).stdout == "True\n"
    assert (
        run([python, "-c", find.format("keras_solov2")], cwd=work).stdout == "False\n"
    ), "the checkout's editable install leaks into the fresh venv"
    run(
        [sys.executable, "-m", "pip", "--python", python, "install", "--no-deps"]
        + ["--no-index", "--quiet", str(dists[1])],
        cwd=work,
    )
    return os.path.dirname(python), site, work


def test_the_sdist_and_the_wheel_carry_the_page_and_no_tests(dists):
    sdist, wheel = dists
    with zipfile.ZipFile(wheel) as f:
        names = f.namelist()
    for name in ("index.html", "app.js", "style.css"):
        assert PAGE + name in names
    assert any(n.startswith(PAGE + "wasm/") and n.endswith(".wasm") for n in names)
    assert SAMPLE in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert {n.split("/")[0] for n in names} == {
        "keras_solov2",
        os.path.basename(wheel).split("-py3")[0] + ".dist-info",
    }
    with tarfile.open(sdist) as f:
        members = [n.split("/", 1)[1] for n in f.getnames() if "/" in n]
    for name in ("README.md", "LICENSE", PAGE + "index.html", SAMPLE, "web/build.mjs"):
        assert name in members
    assert not any(n.startswith(("tests/", "web/node_modules/")) for n in members)


# pycocotools' decode, on numpy 2.
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_the_installed_wheel_predicts_exports_and_serves_the_page(installed):
    bin_dir, site, work = installed
    script = os.path.join(bin_dir, "keras-solov2")
    probe = run([os.path.join(bin_dir, "python"), "-c", PROBE], cwd=work)
    found = json.loads(probe.stdout.strip().splitlines()[-1])
    assert found["package"] == os.path.join(site, "keras_solov2", "__init__.py")
    assert found["page"] == os.path.join(site, "keras_solov2", "app", "web_page")
    assert found["sample"] == os.path.join(site, *SAMPLE.split("/"))
    assert found["unmet"] == []

    help_text = run([script, "--help"], cwd=work).stdout
    for command in ("predict", "export", "web"):
        assert command in help_text

    model = detecting_model()
    model.score_threshold = 0.0
    model.filter_threshold = 0.0
    model.save(str(work / "tiny.keras"))
    run(
        [script, "predict", "tiny.keras", found["sample"], "--output", "predicted"]
        + ["--score-threshold", "0.0"],
        cwd=work,
    )
    with open(work / "predicted" / "shapes.json") as f:
        record = json.load(f)
    assert (record["image"], record["height"], record["width"]) == (
        found["sample"],
        240,
        320,
    )
    assert record["detections"]
    for detection in record["detections"]:
        assert set(detection) == {
            "label",
            "class_name",
            "category_id",
            "score",
            "box",
            "segmentation",
        }
        assert 0 <= detection["label"] < 3 and 0.0 <= detection["score"] <= 1.0
        assert len(detection["box"]) == 4
    masks = mask_util.decode([d["segmentation"] for d in record["detections"]])
    assert masks.shape == (240, 320, len(record["detections"]))
    assert (work / "predicted" / "shapes.png").stat().st_size > 0

    run(
        [script, "export", "tiny.keras", "--format", "tflite"]
        + ["--output", "tiny.tflite", "--input-size", "64", "64"],
        cwd=work,
    )
    tflite = (work / "tiny.tflite").read_bytes()
    assert tflite[4:8] == b"TFL3"
    with open(work / "tiny.tflite.json") as f:
        assert set(web.END_TO_END_OUTPUTS) <= set(json.load(f)["outputs"])

    serve_and_fetch(script, work, found["page"], tflite)


def serve_and_fetch(script, work, page, tflite):
    """`keras-solov2 web` on a free port: the page's files, the model; Ctrl+C."""
    process = subprocess.Popen(
        [script, "web", "tiny.tflite", "--port", "0"],
        cwd=work,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = process.stdout.readline()
        assert "http://127.0.0.1:" in first, (first, process.stderr.read()[-3000:])
        url = first[first.index("http://") :].split()[0]

        def get(path):
            with urllib.request.urlopen(url + path, timeout=30) as response:
                return response.headers["Content-Type"], response.read()

        kind, body = get("")
        with open(os.path.join(page, "index.html"), "rb") as f:
            assert (kind, body) == ("text/html; charset=utf-8", f.read())
        assert get("app.js")[0] == "text/javascript; charset=utf-8"
        wasm = sorted(n for n in os.listdir(os.path.join(page, "wasm")) if ".wasm" in n)
        kind, body = get(f"wasm/{wasm[0]}")
        assert kind == "application/wasm" and body[:4] == b"\0asm"
        assert get("model.tflite") == ("application/octet-stream", tflite)
        assert "outputs" in json.loads(get("model.tflite.json")[1])
    finally:
        process.send_signal(signal.SIGINT)
        try:
            # Generous: once it stopped 30 s late on this 2-core machine (the
            # fresh venv's first run still compiling its imports).
            out, _ = process.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert process.returncode == 0 and "Stopped." in out
