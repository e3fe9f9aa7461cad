"""Helpers shared by the benchmark scripts (run as scripts: this folder is on
their path)."""

import platform
import statistics
import time


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
