// From the model's outputs to detections and mask pixels on the image.
//
// The masks come at stride 4 of the padded input; a pixel of the displayed
// image reads them bilinearly (half-pixel centres) at its centre mapped into
// the letterboxed input, as docs/android.md's drawMask does, and is inside
// the mask where the probability is above the model's mask_threshold.
// keras_solov2.layers.paste_masks does the same in two resizes (x4, then to
// the original size): edges may differ by a pixel.

/** Kept detections of one run, boxes in original-image pixels. */
export function detectionsFrom(outputs, metadata, scale, imageShape) {
  const [height, width] = imageShape;
  const count = outputs.num_detections[0];
  const names = metadata.class_names;
  const detections = [];
  for (let i = 0; i < count; i++) {
    const label = outputs.labels[i];
    const box = Array.from(outputs.boxes.subarray(4 * i, 4 * i + 4), (v, k) =>
      Math.min(v / scale, k % 2 === 0 ? width : height));
    detections.push({
      index: i,
      label,
      name: names && names[label] !== undefined ? String(names[label]) : `class ${label}`,
      categoryId: metadata.category_ids ? metadata.category_ids[label] : null,
      score: outputs.scores[i],
      box,
    });
  }
  return detections;
}

/** One axis of the display's sampling grid: mask cells and weights. */
function axisTable(size, toGrid, cells) {
  const low = new Int32Array(size);
  const high = new Int32Array(size);
  const frac = new Float32Array(size);
  for (let i = 0; i < size; i++) {
    const g = Math.min(Math.max((i + 0.5) * toGrid - 0.5, 0), cells - 1);
    low[i] = Math.floor(g);
    high[i] = Math.min(low[i] + 1, cells - 1);
    frac[i] = g - low[i];
  }
  return { low, high, frac };
}

/**
 * Where each pixel of a display of the original image reads the masks.
 *
 * `zoom` is display px per original px; a display pixel centre maps into
 * the letterboxed input (x `scale / zoom`), then into the stride-4 grid.
 */
export function samplingGrid(metadata, scale, zoom, displayShape) {
  const [, , maskHeight, maskWidth] = metadata.maskShape;
  const toGrid = scale / (zoom * metadata.mask_stride);
  return {
    displayShape,
    zoom,
    // Bilinear reads reach one mask cell beyond the box's pixels.
    margin: (metadata.mask_stride / scale) * zoom + 1,
    rows: axisTable(displayShape[0], toGrid, maskHeight),
    cols: axisTable(displayShape[1], toGrid, maskWidth),
  };
}

/**
 * The mask of detection `index` on the grid's display, as a Uint8Array of
 * 0/1 (row-major), the number of pixels set and the display rectangle
 * `[x0, y0, x1, y1]` that was read: only pixels near `box` (in original
 * image pixels) can be set.
 */
export function maskAt(outputs, metadata, index, grid, box) {
  const [displayHeight, displayWidth] = grid.displayShape;
  const [, , maskHeight, maskWidth] = metadata.maskShape;
  const threshold = metadata.mask_threshold;
  const probs = outputs.masks.subarray(
    index * maskHeight * maskWidth, (index + 1) * maskHeight * maskWidth);
  const bits = new Uint8Array(displayHeight * displayWidth);
  const { zoom, margin, rows, cols } = grid;
  const x0 = Math.max(0, Math.floor(box[0] * zoom - margin));
  const y0 = Math.max(0, Math.floor(box[1] * zoom - margin));
  const x1 = Math.min(displayWidth, Math.ceil(box[2] * zoom + margin));
  const y1 = Math.min(displayHeight, Math.ceil(box[3] * zoom + margin));
  let area = 0;
  for (let y = y0; y < y1; y++) {
    const upper = rows.low[y] * maskWidth;
    const lower = rows.high[y] * maskWidth;
    const fy = rows.frac[y];
    const out = y * displayWidth;
    for (let x = x0; x < x1; x++) {
      const xa = cols.low[x];
      const xb = cols.high[x];
      const fx = cols.frac[x];
      const top = probs[upper + xa] + (probs[upper + xb] - probs[upper + xa]) * fx;
      const bottom = probs[lower + xa] + (probs[lower + xb] - probs[lower + xa]) * fx;
      if (top + (bottom - top) * fy > threshold) {
        bits[out + x] = 1;
        area++;
      }
    }
  }
  return { bits, area, region: [x0, y0, x1, y1] };
}

/** A distinct, saturated colour for the i-th detection. */
export function colour(i) {
  // Golden-angle hues: neighbours in score order get far-apart colours.
  const hue = (i * 137.508) % 360;
  const s = 0.85;
  const v = 0.95;
  const c = v * s;
  const h = hue / 60;
  const x = c * (1 - Math.abs((h % 2) - 1));
  const [r, g, b] = h < 1 ? [c, x, 0] : h < 2 ? [x, c, 0] : h < 3 ? [0, c, x]
    : h < 4 ? [0, x, c] : h < 5 ? [x, 0, c] : [c, 0, x];
  const m = v - c;
  return [r, g, b].map((value) => Math.round(255 * (value + m)));
}
