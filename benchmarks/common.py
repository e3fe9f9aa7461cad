"""Helpers shared by the benchmark scripts (run as scripts: this folder is on
their path)."""

import os
import platform
import statistics
import time

import numpy as np

COCO_MINI = os.path.join(
    os.path.dirname(os.path.abspath(__file__)),
    "..",
    "..",
    "shared",
    "data",
    "coco_mini",
    "train2017",
)


def cpu_name():
    """The CPU model from /proc/cpuinfo (what `lscpu` calls "Model name")."""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def median_seconds(fn, runs):
    """The median wall time of `runs` calls of `fn`, after one warm-up call
    (tracing, allocation)."""
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def calibration_images(folder, count):
    """`(images, source)`: the first `count` photos of `folder` for an int8
    calibration, or 8 random 480x640 images when the folder is absent."""
    from keras_solov2.io import load_image

    if folder and os.path.isdir(folder):
        names = sorted(os.listdir(folder))[:count]
        return [load_image(os.path.join(folder, n)) for n in names], folder
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (480, 640, 3)).astype("uint8") for _ in range(8)]
    return images, "random images"


def peak_rss_mib():
    """This process's peak resident memory, MiB: `VmHWM` of /proc/self/status.

    Not `getrusage`'s `ru_maxrss`: Linux keeps that across `execve`, so a
    child started by a large parent reports the parent's peak.
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def run_children(script, modes, options):
    """Runs `script --child MODE --out FILE [options]` once per mode, each in
    a fresh process (its own peak memory), and returns `{mode: its json}`.

    `options` is a list of command-line arguments passed to every child.
    """
    import json
    import subprocess
    import sys
    import tempfile

    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for mode in modes:
            out = os.path.join(folder, f"{mode}.json")
            command = [sys.executable, script, "--child", mode, "--out", out]
            subprocess.run(command + [str(o) for o in options], check=True)
            with open(out) as f:
                results[mode] = json.load(f)
    return results
