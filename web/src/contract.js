// The .tflite contract of keras_solov2.export.tflite (see its docstring and
// docs/android.md): checked on MODEL.tflite.json before loading, and on the
// compiled model's signature after, so that a file that is not an
// end-to-end keras-solov2 export gets a message that says what is wrong.

/** An error whose message the page shows as it is (it says what to do). */
export class PageError extends Error {}

const EXPORT_HINT =
  'Export one with `keras-solov2 export MODEL --format tflite --output model.tflite`.';

/** Checks MODEL.tflite.json; returns it with the derived mask shape. */
export function checkMetadata(metadata, name) {
  if (!metadata || typeof metadata !== 'object' ||
      !String(metadata.format || '').startsWith('keras_solov2.tflite/')) {
    throw new PageError(
      `${name} is not the JSON that keras-solov2 writes beside a .tflite ` +
      `(no "format": "keras_solov2.tflite/1"). ${EXPORT_HINT}`);
  }
  const missing = ['masks', 'labels', 'scores', 'boxes', 'num_detections']
    .filter((output) => !(metadata.outputs || []).includes(output));
  if (missing.length) {
    throw new PageError(
      `${name} describes a file without the outputs ${missing.join(', ')}: ` +
      'it holds the dense body only (exported with --no-postprocessing). ' +
      'The page needs the end-to-end file: export again without --no-postprocessing.');
  }
  const shape = metadata.input && metadata.input.shape;
  if (!Array.isArray(shape) || shape.length !== 4 || shape[0] !== 1 || shape[3] !== 3) {
    throw new PageError(`${name}: "input.shape" must be [1, H, W, 3]; got ${JSON.stringify(shape)}.`);
  }
  const stride = metadata.mask_stride;
  const padded = metadata.padded_size;
  return {
    ...metadata,
    imageShape: [shape[1], shape[2]],
    padValue: metadata.input.pad_value,
    maskShape: [1, metadata.max_detections, padded[0] / stride, padded[1] / stride],
  };
}

const describe = (details) => `${details.dtype} [${Array.from(details.shape).join(', ')}]`;

/** Checks the compiled model's signature against MODEL.tflite.json. */
export function checkSignature(inputs, outputs, metadata, name) {
  const [height, width] = metadata.imageShape;
  const slots = metadata.max_detections;
  const wantInput = { name: 'image', dtype: 'uint8', shape: [1, height, width, 3] };
  const problems = [];
  if (inputs.length !== 1) {
    problems.push(`it has ${inputs.length} inputs (${inputs.map((i) => i.name).join(', ')}), not one`);
  } else if (inputs[0].dtype !== wantInput.dtype ||
             Array.from(inputs[0].shape).join() !== wantInput.shape.join()) {
    problems.push(
      `its input "${inputs[0].name}" is ${describe(inputs[0])}, not ` +
      `uint8 [${wantInput.shape.join(', ')}] as its JSON says`);
  }
  const want = {
    masks: ['float32', metadata.maskShape],
    labels: ['int32', [1, slots]],
    scores: ['float32', [1, slots]],
    boxes: ['float32', [1, slots, 4]],
    num_detections: ['int32', [1]],
  };
  const byName = Object.fromEntries(outputs.map((o) => [o.name, o]));
  const absent = Object.keys(want).filter((key) => !(key in byName));
  if (absent.length) {
    problems.push(
      `it lacks the outputs ${absent.join(', ')} (it has ` +
      `${outputs.map((o) => o.name).join(', ') || 'none'})`);
  }
  for (const [key, [dtype, shape]] of Object.entries(want)) {
    const got = byName[key];
    if (got && (got.dtype !== dtype || Array.from(got.shape).join() !== shape.join())) {
      problems.push(`its output "${key}" is ${describe(got)}, not ${dtype} [${shape.join(', ')}]`);
    }
  }
  if (problems.length) {
    throw new PageError(
      `${name} is not a keras-solov2 end-to-end export: ${problems.join('; ')}. ${EXPORT_HINT}`);
  }
}
