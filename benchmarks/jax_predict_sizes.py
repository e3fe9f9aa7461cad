"""JAX `predict` on photos of several sizes: the split step against one jit.

    KERAS_BACKEND=jax python benchmarks/jax_predict_sizes.py [--variant light_r18]

`SOLOv2.predict` on JAX compiles the network once per canvas and only the
small resize and paste per photo size (`_JaxPredict`). The baseline, in the
same run, is `jax.jit` of the whole `predict_step`, which compiles
everything for every photo size. The photos are five sizes of a 4:3 camera
that resize into the same canvas, then each again (compiled: run time only).
Prints seconds per photo, first and second pass, for both.
"""

import argparse
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from common import cpu_name  # noqa: E402

SIZES = ((480, 640), (481, 640), (479, 639), (478, 638), (482, 641))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variant", default="light_r18")
    args = parser.parse_args()
    import jax
    import keras
    import numpy as np

    import keras_solov2

    if keras.backend.backend() != "jax":
        raise SystemExit("Run with KERAS_BACKEND=jax.")
    model = keras_solov2.SOLOv2.from_preset(args.variant, load_weights=False)
    model.compile(jit_compile=True)
    state = (
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
    )
    whole = jax.jit(lambda s, images: model.predict_step(s, (images,)))
    rng = np.random.default_rng(0)
    photos = [rng.integers(0, 256, (1, *s, 3)).astype("uint8") for s in SIZES]

    def timed(run):
        out = []
        for photo in photos:
            start = time.perf_counter()
            jax.block_until_ready(run(photo))
            out.append(time.perf_counter() - start)
        return out

    rows = {
        "jax.jit(predict_step)": lambda p: whole(state, p),
        "SOLOv2.predict (split)": lambda p: model.predict(p, verbose=0),
    }
    print(f"CPU: {cpu_name()}; {jax.devices()[0].device_kind}; {args.variant}")
    print(f"photo sizes {SIZES}, one canvas\n")
    print("| step | first pass, s per photo | second pass, s per photo |")
    print("|---|---|---|")
    for name, run in rows.items():
        first, second = timed(run), timed(run)
        print(
            f"| {name} | {' / '.join(f'{t:.1f}' for t in first)} "
            f"| {np.median(second):.2f} (median) |"
        )


if __name__ == "__main__":
    main()
