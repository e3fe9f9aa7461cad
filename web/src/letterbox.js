// The letterbox of keras_solov2/export/letterbox.py, pixel for pixel.
//
// Python resizes with tf.image.resize(image, (h', w'), "bilinear",
// antialias=scale < 1): TensorFlow's ScaleAndTranslate with a triangle
// kernel when shrinking, ResizeBilinear with half-pixel centres otherwise,
// both in float32; then rounds half to even (np.round) and pads the bottom
// and right with the model's padding value. Every float32 operation below is
// rounded with Math.fround in TensorFlow's order, so the page feeds the
// model the same bytes as keras_solov2.export.letterbox.

const f32 = Math.fround;

/** The fit factor and the size of the image inside the canvas. */
export function letterboxGeometry(height, width, canvasHeight, canvasWidth) {
  // image_geometry.fit_factor and scaled_length, in float64 like Python.
  const scale = Math.min(canvasHeight / height, canvasWidth / width);
  const newHeight = Math.min(canvasHeight, Math.max(1, Math.floor(height * scale + 0.5)));
  const newWidth = Math.min(canvasWidth, Math.max(1, Math.floor(width * scale + 0.5)));
  return { scale, resized: [newHeight, newWidth] };
}

/**
 * ScaleAndTranslate's spans for one axis (triangle kernel, antialiased,
 * zero translation): for each output index, the first input index and the
 * normalised weights.
 */
function triangleSpans(outputSize, inputSize) {
  const scale = f32(f32(outputSize) / f32(inputSize));
  const invScale = f32(1.0 / scale);
  const kernelScale = Math.max(invScale, 1.0);
  const radius = f32(1.0 * kernelScale);
  const spanSize = Math.min(2 * Math.ceil(radius) + 1, inputSize);
  const oneOverKernelScale = f32(1.0 / kernelScale);
  const starts = new Int32Array(outputSize);
  const weights = new Float32Array(spanSize * outputSize);
  for (let x = 0; x < outputSize; x++) {
    const sample = f32(f32(f32(x + 0.5) * invScale) + f32(-invScale * 0));
    if (sample < 0 || sample > inputSize) continue;
    let start = Math.ceil(f32(f32(sample - radius) - 0.5));
    let end = Math.floor(f32(f32(sample + radius) - 0.5));
    start = Math.min(Math.max(start, 0), inputSize - 1);
    end = Math.min(Math.max(end, 0), inputSize - 1) + 1;
    const raw = [];
    let total = 0;
    for (let source = start; source < end; source++) {
      const position = f32(f32(source + 0.5) - sample);
      const distance = Math.abs(f32(position * oneOverKernelScale));
      const weight = distance < 1 ? f32(1 - distance) : 0;
      total = f32(total + weight);
      raw.push(weight);
    }
    if (Math.abs(total) >= 1000 * 1.1754943508222875e-38) {
      const inverse = f32(1 / total);
      for (let k = 0; k < raw.length; k++) weights[spanSize * x + k] = f32(raw[k] * inverse);
    }
    starts[x] = start;
  }
  return { starts, weights, spanSize };
}

/** Antialiased triangle-kernel resize (TF's GatherRows then GatherColumns). */
function resizeAntialiased(pixels, height, width, newHeight, newWidth) {
  const rows = triangleSpans(newHeight, height);
  const cols = triangleSpans(newWidth, width);
  const rowSize = width * 3;
  const intermediate = new Float32Array(newHeight * rowSize);
  for (let y = 0; y < newHeight; y++) {
    const out = y * rowSize;
    const start = rows.starts[y];
    const span = Math.min(start + rows.spanSize, height) - start;
    for (let k = 0; k < span; k++) {
      const weight = rows.weights[y * rows.spanSize + k];
      const input = (start + k) * rowSize;
      for (let i = 0; i < rowSize; i++) {
        intermediate[out + i] = f32(intermediate[out + i] + f32(weight * pixels[input + i]));
      }
    }
  }
  const result = new Float32Array(newHeight * newWidth * 3);
  for (let y = 0; y < newHeight; y++) {
    for (let x = 0; x < newWidth; x++) {
      const start = cols.starts[x];
      const span = Math.min(start + cols.spanSize, width) - start;
      const out = (y * newWidth + x) * 3;
      for (let k = 0; k < span; k++) {
        const weight = cols.weights[x * cols.spanSize + k];
        const input = y * rowSize + (start + k) * 3;
        for (let c = 0; c < 3; c++) {
          result[out + c] = f32(result[out + c] + f32(weight * intermediate[input + c]));
        }
      }
    }
  }
  return result;
}

/** ResizeBilinear's per-axis lower/upper indices and lerp (half-pixel). */
function bilinearAxis(outputSize, inputSize) {
  const scale = f32(inputSize / outputSize);
  const lower = new Int32Array(outputSize);
  const upper = new Int32Array(outputSize);
  const lerp = new Float32Array(outputSize);
  for (let i = 0; i < outputSize; i++) {
    const position = f32(f32(f32(i + 0.5) * scale) - 0.5);
    const floor = Math.floor(position);
    lower[i] = Math.max(floor, 0);
    upper[i] = Math.min(Math.ceil(position), inputSize - 1);
    lerp[i] = f32(position - floor);
  }
  return { lower, upper, lerp };
}

/** Bilinear resize with half-pixel centres, no antialiasing (upscaling). */
function resizeBilinear(pixels, height, width, newHeight, newWidth) {
  const ys = bilinearAxis(newHeight, height);
  const xs = bilinearAxis(newWidth, width);
  const result = new Float32Array(newHeight * newWidth * 3);
  for (let y = 0; y < newHeight; y++) {
    const top = ys.lower[y] * width * 3;
    const bottom = ys.upper[y] * width * 3;
    const yLerp = ys.lerp[y];
    for (let x = 0; x < newWidth; x++) {
      const left = xs.lower[x] * 3;
      const right = xs.upper[x] * 3;
      const xLerp = xs.lerp[x];
      for (let c = 0; c < 3; c++) {
        const topLeft = pixels[top + left + c];
        const topRight = pixels[top + right + c];
        const bottomLeft = pixels[bottom + left + c];
        const bottomRight = pixels[bottom + right + c];
        const upperRow = f32(topLeft + f32(f32(topRight - topLeft) * xLerp));
        const lowerRow = f32(bottomLeft + f32(f32(bottomRight - bottomLeft) * xLerp));
        result[(y * newWidth + x) * 3 + c] = f32(upperRow + f32(f32(lowerRow - upperRow) * yLerp));
      }
    }
  }
  return result;
}

/** np.round: half to even. */
function roundHalfEven(value) {
  const floor = Math.floor(value);
  const fraction = value - floor;
  if (fraction > 0.5) return floor + 1;
  if (fraction < 0.5) return floor;
  return floor % 2 === 0 ? floor : floor + 1;
}

/**
 * Fits an RGB image into the model's input, keeping its aspect ratio.
 *
 * @param {Uint8Array|Uint8ClampedArray} rgb (height, width, 3) pixels.
 * @param {number[]} imageShape [height, width] of `rgb`.
 * @param {number[]} canvasShape [H, W] of the model's input.
 * @param {number[]} padValue the model's padding colour (MODEL.tflite.json).
 * @return {{canvas: Uint8Array, scale: number, resized: number[]}} the
 *     (H, W, 3) input, the resize factor and the size of the image in it.
 */
export function letterbox(rgb, imageShape, canvasShape, padValue) {
  const [height, width] = imageShape;
  const [canvasHeight, canvasWidth] = canvasShape;
  const { scale, resized } = letterboxGeometry(height, width, canvasHeight, canvasWidth);
  const [newHeight, newWidth] = resized;
  const values = scale < 1
    ? resizeAntialiased(rgb, height, width, newHeight, newWidth)
    : resizeBilinear(rgb, height, width, newHeight, newWidth);
  const canvas = new Uint8Array(canvasHeight * canvasWidth * 3);
  for (let i = 0; i < canvas.length; i += 3) canvas.set(padValue, i);
  for (let y = 0; y < newHeight; y++) {
    for (let i = 0; i < newWidth * 3; i++) {
      const value = roundHalfEven(values[y * newWidth * 3 + i]);
      canvas[y * canvasWidth * 3 + i] = Math.min(255, Math.max(0, value));
    }
  }
  return { canvas, scale, resized };
}
