"""Runs a .tflite file with LiteRT's CompiledModel; a subprocess of the tests.

    python tests/litert_run.py MODEL.tflite {gpu,gpu+cpu,cpu} INPUT.npy OUT.npz [fp32]

INPUT.npy holds one input, or a stack of them (one more leading axis; the
outputs are then stacked the same way).
Imports only numpy and ai_edge_litert: with TensorFlow in the same process
the GPU accelerator segfaulted, and a refused graph can abort the process.
With `fp32` the GPU computes in float32 (`GpuOptions(enforce_f32=True)`);
by default it computes in float16, as on a phone. Writes every output of the
`serving_default` signature to OUT.npz, and `fully_accelerated` (whether
every op went to the requested accelerators).
"""

import os
import sys
import time

import numpy as np
from ai_edge_litert.compiled_model import CompiledModel, HardwareAccelerator
from ai_edge_litert.options import CpuOptions, GpuOptions, Options

ACCELERATORS = {
    "gpu": HardwareAccelerator.GPU,
    "gpu+cpu": HardwareAccelerator.GPU | HardwareAccelerator.CPU,
    "cpu": HardwareAccelerator.CPU,
}


def run_and_read(model, index, inputs, names, details, attempts=3):
    """One run's outputs by name.

    On software Vulkan a large model (R50 at 800x1088) can outlast LiteRT's
    wait to lock the first output it reads ("Failed to lock custom tensor
    buffer"), and that buffer stays locked. Then the other outputs are read,
    which waits for the GPU to finish, and the model runs again into fresh
    buffers, read only after as long as the first run took.
    """
    wait = 0.0
    for attempt in range(attempts):
        outputs = model.create_output_buffers(index)
        start = time.monotonic()
        model.run_by_index(index, inputs, outputs)
        time.sleep(wait)
        run, failed = {}, None
        for name, buffer in zip(names, outputs, strict=True):
            shape = tuple(details[name]["shape"])
            dtype = np.dtype(details[name]["dtype"])
            try:
                values = buffer.read(int(np.prod(shape)), dtype)
            except RuntimeError as error:
                if "Failed to lock" not in str(error) or attempt == attempts - 1:
                    raise
                failed = name
                continue
            run[name] = np.asarray(values).reshape(shape)
        if failed is None:
            return run
        wait = time.monotonic() - start


def main(model_path, accelerator, input_path, output_path, precision="fp16"):
    # Dawn (the WebGPU backend) wants a private runtime folder.
    if not os.environ.get("XDG_RUNTIME_DIR"):
        folder = os.path.join(os.path.dirname(os.path.abspath(output_path)), "xdg")
        os.makedirs(folder, mode=0o700, exist_ok=True)
        os.environ["XDG_RUNTIME_DIR"] = folder
    options = Options(
        hardware_accelerators=ACCELERATORS[accelerator],
        cpu_options=CpuOptions(num_threads=2),
        gpu_options=GpuOptions(enforce_f32=precision == "fp32"),
    )
    model = CompiledModel.from_file(model_path, options=options)
    signature = "serving_default"
    index = model.get_signature_index(signature)
    inputs = model.create_input_buffers(index)
    details = model.get_output_tensor_details(signature)
    names = model.get_signature_list()[signature]["outputs"]
    images = np.load(input_path)
    # A stack of inputs (one more axis) runs one after the other.
    batch = images if images.ndim == 5 else images[None]
    runs = []
    for image in batch:
        inputs[0].write(image)
        runs.append(run_and_read(model, index, inputs, names, details))
    results = {"fully_accelerated": np.asarray(model.is_fully_accelerated())}
    for name in names:
        stacked = np.stack([run[name] for run in runs])
        results[name] = stacked if images.ndim == 5 else stacked[0]
    np.savez(output_path, **results)


if __name__ == "__main__":
    main(*sys.argv[1:])
