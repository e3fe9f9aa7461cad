// The page: load MODEL.tflite.json and the .tflite, pick WebGPU or XNNPACK on
// WebAssembly, then letterbox each image the user gives, run the model and
// draw its masks. Nothing is sent anywhere: the image is read, resized and
// run in this page.
//
// URL parameters: ?model=path/to/model.tflite (default model.tflite, its
// JSON beside it), ?backend=auto|wasm|webgpu (default auto; webgpu fails
// instead of falling back, for checking a browser) and ?min_score=0.3 (the
// score slider's start; default 0.3).
//
// For scripts and tests the page keeps its state in `window.solov2` and in
// `document.body.dataset.state` ("loading", "ready", "running", "done",
// "image-error", "model-error").

import {
  Tensor,
  getGlobalLiteRt,
  isWebGPUSupported,
  loadAndCompile,
  loadLiteRt,
  supportsFeature,
} from '@litertjs/core';

import { PageError, checkMetadata, checkSignature } from './contract.js';
import { letterbox } from './letterbox.js';
import { colour, detectionsFrom, maskAt, samplingGrid } from './masks.js';

const OUTPUTS = ['masks', 'labels', 'scores', 'boxes', 'num_detections'];
// The image is shown with its long side within these bounds (masks are
// drawn at the displayed size).
const MAX_DISPLAY_SIDE = 1280;
const MIN_DISPLAY_SIDE = 480;
const MASK_ALPHA = 0.5;
// The score slider's start: the model returns every detection that Matrix
// NMS keeps (down to about 0.05); this hides the faint ones until asked.
const DEFAULT_MIN_SCORE = 0.3;

const $ = (id) => document.getElementById(id);
const state = {
  state: 'loading',
  backend: null,
  backendDetail: null,
  fullyAccelerated: null,
  adapter: null,
  error: null,
  result: null,
};
window.solov2 = state;
let model = null;
let metadata = null;
let last = null; // typed arrays of the last run, for debug()

function setState(name) {
  state.state = name;
  document.body.dataset.state = name;
}

function showError(message, kind) {
  state.error = { kind, message };
  const box = $('error');
  box.textContent = message;
  box.hidden = false;
  setState(kind === 'model' ? 'model-error' : 'image-error');
  $('status').textContent = kind === 'model'
    ? 'The model could not be loaded.' : 'Pick another image.';
}

function clearError() {
  state.error = null;
  $('error').hidden = true;
}

async function fetchJson(url, fetched) {
  const response = fetched || await fetch(url);
  if (!response.ok) {
    throw new PageError(
      `Could not load ${url} (HTTP ${response.status}): the page needs the JSON that ` +
      'keras-solov2 writes beside the .tflite.');
  }
  try {
    return await response.json();
  } catch (error) {
    throw new PageError(`${url} is not valid JSON (${error.message}).`);
  }
}

/** MODEL.tflite.json, or MODEL.json as earlier exports named it. */
async function fetchMetadata(url) {
  const jsonUrl = `${url}.json`;
  const response = await fetch(jsonUrl);
  const oldUrl = url.replace(/\.tflite$/i, '') + '.json';
  if (response.status === 404 && oldUrl !== jsonUrl) {
    const old = await fetch(oldUrl);
    if (old.ok) return { json: await fetchJson(oldUrl, old), jsonUrl: oldUrl };
  }
  return { json: await fetchJson(jsonUrl, response), jsonUrl };
}

/** Whether to try WebGPU, and why not when not. */
async function webGpuChoice(requested) {
  if (requested === 'wasm') return { gpu: false, reason: 'WebAssembly was requested (?backend=wasm)' };
  if (!isWebGPUSupported()) return { gpu: false, reason: 'this browser has no WebGPU' };
  try {
    const adapter = await navigator.gpu.requestAdapter({ powerPreference: 'high-performance' });
    if (!adapter) return { gpu: false, reason: 'WebGPU found no GPU adapter' };
    const info = adapter.info || {};
    state.adapter = {
      vendor: info.vendor, architecture: info.architecture,
      device: info.device, description: info.description,
    };
  } catch (error) {
    return { gpu: false, reason: `WebGPU failed: ${error.message}` };
  }
  return { gpu: true, reason: null };
}

/** Loads LiteRT.js's Wasm: JSPI for WebGPU (mixed execution), else threads. */
async function loadRuntime(gpu) {
  const wasmUrl = new URL('wasm/', window.location.href).href;
  const jspi = await supportsFeature('jspi');
  const threads = window.crossOriginIsolated && await supportsFeature('threads') &&
    await supportsFeature('relaxedSimd');
  const options = gpu && jspi ? { jspi: true } : !gpu && threads ? { threads: true } : {};
  await loadLiteRt(wasmUrl, options);
  return options;
}

async function warmUp(compiled) {
  const [height, width] = metadata.imageShape;
  const input = new Tensor(new Uint8Array(height * width * 3), [1, height, width, 3]);
  try {
    const outputs = await compiled.run({ image: input });
    await outputs.num_detections.data();
    for (const tensor of Object.values(outputs)) tensor.delete();
  } finally {
    input.delete();
  }
}

async function compile(bytes, accelerator) {
  const compiled = await loadAndCompile(bytes, { accelerator });
  try {
    checkSignature(compiled.getInputDetails(), compiled.getOutputDetails(), metadata, modelUrl());
    await warmUp(compiled);
  } catch (error) {
    compiled.delete();
    throw error;
  }
  return compiled;
}

function modelUrl() {
  return new URLSearchParams(window.location.search).get('model') || 'model.tflite';
}

async function fetchModel(url) {
  const response = await fetch(url);
  if (!response.ok) throw new PageError(`Could not load ${url} (HTTP ${response.status}).`);
  return new Uint8Array(await response.arrayBuffer());
}

function describeBackend(compiled, reason) {
  if (compiled.options.accelerator === 'webgpu') {
    state.backend = 'webgpu';
    state.fullyAccelerated = compiled.isFullyAccelerated;
    const adapter = state.adapter || {};
    const name = adapter.description || [adapter.vendor, adapter.architecture].filter(Boolean).join(' ');
    const on = name ? ` on ${name}` : '';
    return compiled.isFullyAccelerated
      ? `WebGPU${on} (the whole model on the GPU)`
      : `WebGPU${on}, with the ops that WebGPU cannot run on XNNPACK (WebAssembly)`;
  }
  state.backend = 'wasm';
  state.adapter = null;
  state.fullyAccelerated = false;
  const threads = getGlobalLiteRt().liteRtWasm.getThreadCount();
  const why = reason ? ` (not WebGPU: ${reason})` : '';
  return `XNNPACK on WebAssembly, ${threads} thread${threads === 1 ? '' : 's'}${why}`;
}

async function init() {
  const params = new URLSearchParams(window.location.search);
  const requested = params.get('backend') || 'auto';
  const url = modelUrl();
  const { json, jsonUrl } = await fetchMetadata(url);
  metadata = checkMetadata(json, jsonUrl);
  const [height, width] = metadata.imageShape;
  const names = metadata.class_names || [];
  $('model-info').textContent =
    `${url}: input ${height} × ${width}, ${metadata.num_classes} classes` +
    `${names.length ? ` (${names.slice(0, 6).join(', ')}${names.length > 6 ? ', …' : ''})` : ''}` +
    `, quantization ${metadata.quantization || 'none (float32)'}`;
  const threshold = Number(params.get('min_score') ?? DEFAULT_MIN_SCORE);
  $('min-score').value = String(threshold);
  $('min-score-value').textContent = Number($('min-score').value).toFixed(2);
  const choice = await webGpuChoice(requested);
  if (requested === 'webgpu' && !choice.gpu) {
    throw new PageError(`WebGPU was requested (?backend=webgpu), but ${choice.reason}.`);
  }
  const loaded = await loadRuntime(choice.gpu);
  const bytes = await fetchModel(url);
  const started = performance.now();
  let reason = choice.reason;
  if (choice.gpu) {
    try {
      model = await compile(bytes, 'webgpu');
      if (model.options.accelerator !== 'webgpu') {
        reason = 'the model does not run whole on WebGPU and this browser has no JSPI for mixed execution';
      }
    } catch (error) {
      if (error instanceof PageError || requested === 'webgpu') throw error;
      reason = `WebGPU failed: ${error.message}`;
      console.warn('WebGPU failed, using WebAssembly:', error);
    }
  }
  if (!model) model = await compile(bytes, 'wasm');
  state.compileMs = performance.now() - started;
  state.backendDetail = describeBackend(model, reason);
  state.runtime = loaded;
  $('backend').textContent = state.backendDetail;
  for (const input of [$('file'), $('camera'), $('min-score')]) input.disabled = false;
  $('status').textContent = 'Choose, drop or photograph an image.';
  setState('ready');
}

/** Decodes an image file to RGB pixels as the browser shows it (EXIF turned). */
async function decode(file) {
  let bitmap;
  try {
    bitmap = await createImageBitmap(file, {
      imageOrientation: 'from-image',
      colorSpaceConversion: 'none',
      premultiplyAlpha: 'none',
    });
  } catch (error) {
    throw new PageError(
      `${file.name || 'The file'} is not an image this browser can read ` +
      `(type ${file.type || 'unknown'}). Choose a JPEG, PNG or WebP photo.`);
  }
  const { width, height } = bitmap;
  const canvas = new OffscreenCanvas(width, height);
  const context = canvas.getContext('2d', { willReadFrequently: true });
  context.drawImage(bitmap, 0, 0);
  bitmap.close();
  const rgba = context.getImageData(0, 0, width, height).data;
  const rgb = new Uint8Array(width * height * 3);
  for (let i = 0, j = 0; i < rgba.length; i += 4, j += 3) {
    rgb[j] = rgba[i];
    rgb[j + 1] = rgba[i + 1];
    rgb[j + 2] = rgba[i + 2];
  }
  return { rgb, height, width, rgba };
}

async function infer(canvas) {
  const [height, width] = metadata.imageShape;
  const input = new Tensor(canvas, [1, height, width, 3]);
  let tensors;
  try {
    tensors = await model.run({ image: input });
    const outputs = {};
    for (const name of OUTPUTS) outputs[name] = await tensors[name].data();
    if (tensors.candidates_overflow) {
      outputs.candidates_overflow = await tensors.candidates_overflow.data();
    }
    return outputs;
  } finally {
    input.delete();
    if (tensors) for (const tensor of Object.values(tensors)) tensor.delete();
  }
}

function minScore() {
  return Number($('min-score').value);
}

/** Draws the image and the detections scoring at least minScore(). */
function draw(run) {
  const { image, outputs, detections, scale } = run;
  const side = Math.max(image.height, image.width);
  const zoom = Math.min(MAX_DISPLAY_SIDE / side, Math.max(1, MIN_DISPLAY_SIDE / side));
  const width = Math.round(image.width * zoom);
  const height = Math.round(image.height * zoom);
  const view = $('view');
  view.width = width;
  view.height = height;
  const context = view.getContext('2d', { willReadFrequently: true });
  const source = new OffscreenCanvas(image.width, image.height);
  source.getContext('2d').putImageData(new ImageData(image.rgba, image.width, image.height), 0, 0);
  context.imageSmoothingEnabled = zoom < 1; // enlarge small images pixel by pixel
  context.drawImage(source, 0, 0, width, height);
  const pixels = context.getImageData(0, 0, width, height);
  const data = pixels.data;
  run.grid = samplingGrid(metadata, scale, zoom, [height, width]);
  run.displayShape = [height, width];
  // Colours follow the rank among all detections, whatever is shown.
  const shown = detections.map((detection, k) => [detection, k])
    .filter(([detection]) => detection.score >= minScore());
  // Lowest score first, so that the best detections are drawn on top.
  for (const [detection, k] of [...shown].reverse()) {
    const { bits, area, region } = maskAt(outputs, metadata, detection.index, run.grid, detection.box);
    detection.maskArea = area;
    const [r, g, b] = colour(k);
    const [x0, y0, x1, y1] = region;
    for (let y = y0; y < y1; y++) {
      for (let p = y * width + x0; p < y * width + x1; p++) {
        if (!bits[p]) continue;
        // ImageData is a Uint8ClampedArray: assignment rounds.
        data[4 * p] = data[4 * p] * (1 - MASK_ALPHA) + r * MASK_ALPHA;
        data[4 * p + 1] = data[4 * p + 1] * (1 - MASK_ALPHA) + g * MASK_ALPHA;
        data[4 * p + 2] = data[4 * p + 2] * (1 - MASK_ALPHA) + b * MASK_ALPHA;
      }
    }
  }
  context.putImageData(pixels, 0, 0);
  const font = Math.max(12, Math.round(Math.min(width, height) / 32));
  context.font = `600 ${font}px system-ui, sans-serif`;
  context.textBaseline = 'top';
  for (const [{ box, name, score }, k] of [...shown].reverse()) {
    const [r, g, b] = colour(k);
    const [x1, y1, x2, y2] = box.map((v) => v * zoom);
    context.strokeStyle = `rgb(${r},${g},${b})`;
    context.lineWidth = Math.max(1, font / 8);
    context.strokeRect(x1, y1, x2 - x1, y2 - y1);
    const text = `${name} ${score.toFixed(2)}`;
    const textWidth = context.measureText(text).width + 6;
    const ty = y1 >= font + 4 ? y1 - font - 4 : y1;
    context.fillStyle = `rgb(${r},${g},${b})`;
    context.fillRect(x1, ty, textWidth, font + 4);
    context.fillStyle = (0.299 * r + 0.587 * g + 0.114 * b) > 150 ? 'black' : 'white';
    context.fillText(text, x1 + 3, ty + 2);
  }
  listDetections(shown);
  return shown.length;
}

function listDetections(shown) {
  const list = $('detections');
  list.replaceChildren();
  for (const [detection, k] of shown) {
    const item = document.createElement('li');
    const swatch = document.createElement('span');
    swatch.className = 'swatch';
    swatch.style.background = `rgb(${colour(k).join(',')})`;
    item.append(swatch, `${detection.name} ${detection.score.toFixed(3)}`);
    list.append(item);
  }
}

function describeRun(run, count) {
  const n = run.detections.length;
  const hidden = n - count;
  $('status').textContent =
    `${n} detection${n === 1 ? '' : 's'} in ${run.file} (${run.image.width} × ${run.image.height})` +
    (hidden ? `, ${count} shown (score ≥ ${minScore().toFixed(2)}).` : '.');
}

async function handleFile(file) {
  if (!model || state.state === 'running') return;
  clearError();
  setState('running');
  const name = file.name || 'the image';
  $('status').textContent = `Running on ${name}…`;
  try {
    const t0 = performance.now();
    const image = await decode(file);
    const t1 = performance.now();
    const { canvas, scale, resized } = letterbox(
      image.rgb, [image.height, image.width], metadata.imageShape, metadata.padValue);
    const t2 = performance.now();
    const outputs = await infer(canvas);
    const t3 = performance.now();
    const detections = detectionsFrom(outputs, metadata, scale, [image.height, image.width]);
    const run = { file: name, image, canvas, outputs, detections, scale };
    const count = draw(run);
    const t4 = performance.now();
    const latencyMs = {
      decode: t1 - t0, letterbox: t2 - t1, inference: t3 - t2, draw: t4 - t3, total: t4 - t0,
    };
    last = run;
    state.result = {
      file: name,
      imageShape: [image.height, image.width],
      displayShape: run.displayShape,
      scale,
      resized,
      numDetections: detections.length,
      candidatesOverflow: outputs.candidates_overflow ? outputs.candidates_overflow[0] : null,
      detections: detections.map(({ index, ...rest }) => rest),
      latencyMs,
      backend: state.backend,
    };
    $('latency').textContent =
      `${latencyMs.inference.toFixed(1)} ms model (${state.backend === 'webgpu' ? 'WebGPU' : 'WebAssembly'}), ` +
      `${latencyMs.letterbox.toFixed(1)} ms letterbox, ${latencyMs.draw.toFixed(1)} ms drawing`;
    describeRun(run, count);
    setState('done');
  } catch (error) {
    console.error(error);
    showError(error instanceof PageError ? error.message : `Running the model failed: ${error.message}`, 'image');
  }
}

function redraw() {
  $('min-score-value').textContent = minScore().toFixed(2);
  if (last && state.state === 'done') {
    describeRun(last, draw(last));
    state.result.detections = last.detections.map(({ index, ...rest }) => rest);
  }
}

function toBase64(bytes) {
  if (bytes.toBase64) return bytes.toBase64();
  let text = '';
  for (let i = 0; i < bytes.length; i += 0x8000) {
    text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(text);
}

// For tests: the bytes the model saw, the decoded image, and the mask of the
// k-th detection as drawn (0/1 per displayed pixel).
state.debug = {
  input: () => last && toBase64(last.canvas),
  image: () => last && toBase64(last.image.rgb),
  mask: (k) => last && toBase64(maskAt(last.outputs, metadata, last.detections[k].index,
    last.grid, last.detections[k].box).bits),
};

function wireInputs() {
  $('min-score').addEventListener('input', redraw);
  for (const input of [$('file'), $('camera')]) {
    input.addEventListener('change', () => {
      if (input.files.length) handleFile(input.files[0]);
      input.value = '';
    });
  }
  document.addEventListener('dragover', (event) => {
    event.preventDefault();
    document.body.classList.add('dragging');
  });
  document.addEventListener('dragleave', () => document.body.classList.remove('dragging'));
  document.addEventListener('drop', (event) => {
    event.preventDefault();
    document.body.classList.remove('dragging');
    const file = event.dataTransfer.files[0];
    if (file) handleFile(file);
  });
}

wireInputs();
init().catch((error) => {
  console.error(error);
  const message = error instanceof PageError ? error.message
    : `Loading ${modelUrl()} failed: ${error.message || error}. Is it a .tflite written by ` +
      '`keras-solov2 export --format tflite`?';
  $('backend').textContent = '–';
  showError(message, 'model');
});
