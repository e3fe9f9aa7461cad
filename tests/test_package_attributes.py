"""Every public subpackage and module is an attribute after `import keras_solov2`.

Each check runs in a fresh interpreter: in the test process, other tests (or
conftest) have imported the submodules already, and importing a submodule
sets it as an attribute of its package, which would hide a missing import.
"""

import json
import os
import pkgutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE_DIR = os.path.join(ROOT, "keras_solov2")

# The application's modules under their names before `keras_solov2.app`:
# reachable for one release, with a DeprecationWarning, and not in `__all__`.
MOVED = {"cli": "app.cli", "inference": "app.outputs", "web": "app.web"}

# Listed from the source tree, so that a new subpackage is checked too.
PUBLIC = sorted(
    info.name
    for info in pkgutil.iter_modules([PACKAGE_DIR])
    if not info.name.startswith("_") and info.name not in MOVED
)

# In a fresh process: the package's own attributes right after the import
# (before any attribute access could import a submodule), then every name
# asked for, in order, and whether it is the submodule itself.
PROBE = """
import json, sys
import keras_solov2
present = sorted(vars(keras_solov2))
found = {}
for name in sys.argv[1:]:
    try:
        value = getattr(keras_solov2, name)
    except AttributeError as error:
        found[name] = "AttributeError: %s" % error
    else:
        found[name] = value is sys.modules.get("keras_solov2." + name)
export = getattr(keras_solov2, "export", None)
print(json.dumps({"present": present, "found": found, "all": keras_solov2.__all__,
                  "dir": dir(keras_solov2),
                  "tflite": callable(getattr(export, "tflite", None))}))
"""


def probe(*names):
    return run_python(PROBE, *names)


def run_python(code, *args):
    """The JSON that `code` prints last, run in a fresh interpreter."""
    result = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def fresh():
    return probe(*PUBLIC, "no_such_module")


def test_the_source_tree_has_the_subpackages_we_expect():
    # Guards the listing itself: an empty or wrong PUBLIC would pass below.
    for name in ("convert", "data", "evaluation", "export", "layers", "models"):
        assert name in PUBLIC


def test_every_public_module_is_an_attribute_of_the_package(fresh):
    assert {name: fresh["found"][name] for name in PUBLIC} == dict.fromkeys(
        PUBLIC, True
    )
    # The example: `keras_solov2.export.tflite(...)`.
    assert fresh["tflite"]


def test_public_modules_are_listed_in_all_and_dir(fresh):
    assert set(PUBLIC) <= set(fresh["all"])
    assert set(PUBLIC) <= set(fresh["dir"])


def test_each_module_imported_on_access_works_on_its_own(fresh):
    """A module not imported by `import keras_solov2` is checked alone.

    In the shared probe an earlier access could have imported it as a side
    effect; here it is the first and only name asked for.
    """
    lazy = [name for name in PUBLIC if name not in fresh["present"]]
    for name in lazy:
        assert probe(name)["found"] == {name: True}


def test_the_moved_modules_still_work_warn_and_are_the_apps():
    code = """
import importlib, json, sys, warnings
import keras_solov2
found = {}
for old, new in json.loads(sys.argv[1]).items():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = getattr(keras_solov2, old)
    found[old] = [
        value is importlib.import_module("keras_solov2." + new),
        [str(w.message) for w in caught if w.category is DeprecationWarning],
    ]
print(json.dumps(found))
"""
    found = run_python(code, json.dumps(MOVED))
    for old, new in MOVED.items():
        same, messages = found[old]
        assert same, old
        assert any(f"use keras_solov2.{new}" in m for m in messages), messages


def test_an_unknown_attribute_is_still_an_attribute_error(fresh):
    assert fresh["found"]["no_such_module"].startswith("AttributeError")
