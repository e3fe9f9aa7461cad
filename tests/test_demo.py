"""examples/demo.py trains a fixed number of steps, whatever the machine."""

import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "examples"))

import demo  # noqa: E402


def test_demo_trains_the_steps_asked_and_reports(tmp_path, capsys):
    out = str(tmp_path / "out")
    demo.main(
        [
            "--steps",
            "3",
            "--train-images",
            "16",
            "--val-images",
            "4",
            "--output-dir",
            out,
        ]
    )
    with open(os.path.join(out, "metrics.json")) as f:
        metrics = json.load(f)
    assert metrics["steps"] == 3 and metrics["batch_size"] == 8
    assert metrics["median_step_seconds"] > 0
    assert 0.0 <= metrics["coco_mask"]["AP"] <= 1.0
    printed = capsys.readouterr().out
    # The progress line of the last step, with the time left.
    assert "[demo] step 3/3 (100%)" in printed and "min left" in printed
    assert "trained 3 steps (24 images)" in printed
    for name in ("predictions.png", "solov2_shapes.keras"):
        assert os.path.getsize(os.path.join(out, name)) > 0


def test_the_default_steps_are_fixed_and_documented():
    """`make demo` trains DEFAULT_STEPS on every machine; the docs say how many."""
    assert demo.DEFAULT_STEPS == 5400
    steps = f"{demo.DEFAULT_STEPS:,}"
    for page in ("README.md", os.path.join("docs", "demo.md")):
        with open(os.path.join(ROOT, page)) as f:
            assert f"{steps} steps" in f.read(), page
