/**
 * @file `graft/predict`: run a model folder written by `graft train` in a browser (or in Node without sharp, ONNX
 * Runtime or the file system's decoders), with exactly the preprocessing it was trained with. Only TF.js core and
 * layers are imported; the host page chooses the backend (import '@tensorflow/tfjs-backend-webgl', '-wasm', '-cpu' or
 * '@tensorflow/tfjs' before calling loadModel). graft registers nothing here and never changes the backend.
 *
 * Images go in as the browser has them (an <img>, <canvas>, <video> frame, ImageBitmap, ImageData) or as raw pixels;
 * they are drawn at full resolution onto black and resized by graft's own resampler (dataset/resize.ts), the code
 * training ran in Node after sharp decoded the file. So the network sees the pixels training saw, up to the browser's
 * own JPEG decoding (a level or two on some pixels).
 *
 *   import '@tensorflow/tfjs-backend-webgl';
 *   import { loadModel } from 'graft/predict';
 *   const model = await loadModel('/models/ants-bees/');          // the folder's URL (or a path, in Node)
 *   const top = await model.predict(document.querySelector('img')); // [{ label: 'bees', probability: 0.97 }, …]
 */
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import type { Preprocessing } from '../base/preprocessing.ts';
import { type RawImage, resizeImage } from '../dataset/resize.ts';
import { mirrorImages } from '../dataset/views.ts';

export type { RawImage, ResizeSpec } from '../dataset/resize.ts';
export { resizeImage, sourceBox } from '../dataset/resize.ts';

import type { ModelMetadata } from '../export/model-files.ts';
import { DataError, DownloadError, UsageError } from '../util/errors.ts';
import { checkOneOf } from '../util/options.ts';

/** Test-time augmentation: 'flip' averages an image's probabilities with its mirror's. */
export type Tta = 'flip' | 'none';

/** Pixels already in memory: `data` holds `width * height` pixels of 3 (RGB) or 4 (RGBA) values, rows top first. */
export interface Pixels {
  data: Uint8Array | Uint8ClampedArray;
  width: number;
  height: number;
}

/**
 * What `predict` takes: raw pixels or ImageData, or in a browser anything a canvas can draw (an <img> that has
 * loaded, a <canvas>, a <video> with a frame, an ImageBitmap, an OffscreenCanvas).
 */
export type ImageInput = Pixels | CanvasImageSource;

export interface Prediction {
  label: string;
  probability: number;
}

export interface LoadOptions {
  /** The fetch used for URLs (default: globalThis.fetch), e.g. to add credentials. */
  fetch?: typeof fetch;
}

/** Reads a file of the model folder. */
type ReadFile = (name: string) => Promise<Uint8Array>;

const isUrl = (s: string) => /^(https?|blob|data|file):/i.test(s);
const inNode = () => typeof process !== 'undefined' && !!process.versions?.node;

function folderReader(source: string | URL, o: LoadOptions): ReadFile {
  const text = String(source);
  if (source instanceof URL || isUrl(text) || !inNode()) {
    const base = new URL(text.endsWith('/') ? text : `${text}/`, globalThis.location?.href);
    const get = o.fetch ?? globalThis.fetch;
    return async (name) => {
      const url = new URL(name, base);
      const r = await get(url.href);
      if (!r.ok)
        throw new DownloadError('http-status', url.href, `${url.href}: HTTP ${r.status} ${r.statusText}`.trim());
      return new Uint8Array(await r.arrayBuffer());
    };
  }
  // A path in Node. The module name is not a literal, so bundlers for the web leave it alone.
  const fsModule = 'node:fs/promises';
  const dir = text.replace(/[/\\](graft|model)\.json$/i, '');
  return async (name) => {
    const fs = (await import(/* @vite-ignore */ fsModule)) as typeof import('node:fs/promises');
    return new Uint8Array(await fs.readFile(`${dir}/${name}`));
  };
}

const decodeJson = (bytes: Uint8Array, what: string) => {
  try {
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch (e) {
    throw new DataError('not-json', what, `not valid JSON (${(e as Error).message})`);
  }
};

/**
 * Loads a model folder (graft.json + model.json + weights) from a URL or, in Node, a path. The model runs on the TF.js
 * backend the caller has set up.
 */
export async function loadModel(source: string | URL, o: LoadOptions = {}): Promise<GraftModel> {
  await tf.ready().catch(() => undefined);
  if (!tf.getBackend())
    throw new UsageError(
      'no-backend',
      "graft/predict: no TF.js backend is registered; import one first, e.g. '@tensorflow/tfjs-backend-webgl'",
    );
  const read = folderReader(source, o);
  const where = String(source);
  const metadata = decodeJson(await read('graft.json'), `${where} graft.json`) as ModelMetadata;
  if (metadata.format !== 'graft-model') throw new DataError('not-a-model', where, "graft.json is not a graft model's");
  if (metadata.foreign)
    throw new DataError(
      'node-only',
      where,
      'trained on a graph-model or ONNX base, which graft/predict cannot run; use graft predict in Node',
    );
  if (metadata.headData)
    throw new DataError(
      'node-only',
      where,
      `a ${metadata.head.kind} head runs in Node only (graft predict); retrain with head 'logistic', 'softmax' or 'mlp'`,
    );
  const modelJson = decodeJson(await read('model.json'), `${where} model.json`) as {
    modelTopology: object;
    weightsManifest: { paths: string[]; weights: tf.io.WeightsManifestEntry[] }[];
  };
  const parts = await Promise.all(modelJson.weightsManifest.flatMap((g) => g.paths.map(read)));
  const weights = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  let at = 0;
  for (const p of parts) {
    weights.set(p, at);
    at += p.length;
  }
  const model = await tfl.loadLayersModel(
    tf.io.fromMemory({
      modelTopology: modelJson.modelTopology,
      weightSpecs: modelJson.weightsManifest.flatMap((g) => g.weights),
      weightData: weights.buffer,
    }),
  );
  return new GraftModel(metadata, model);
}

/** A trained model and the preprocessing it was trained with. */
export class GraftModel {
  readonly metadata: ModelMetadata;
  readonly model: tfl.LayersModel;

  constructor(metadata: ModelMetadata, model: tfl.LayersModel) {
    this.metadata = metadata;
    this.model = model;
  }

  get labels(): string[] {
    return this.metadata.labels;
  }

  get preprocessing(): Preprocessing {
    return this.metadata.preprocessing;
  }

  /**
   * The test-time augmentation the model folder records (graft.json's `tta`, written when training measured it to
   * help): every prediction applies it unless the call says otherwise, as `graft predict` does.
   */
  get tta(): Tta {
    return this.metadata.tta === 'flip' ? 'flip' : 'none';
  }

  /** The network's input for an image: RGB bytes, `preprocessing.size`, resized and cropped as in training. */
  networkInput(image: ImageInput): Uint8Array {
    return resizeImage(rawImage(image), this.preprocessing);
  }

  /** Class probabilities (in the order of `labels`) for each image; `tta` defaults to the recorded one. */
  async probabilities(images: ImageInput[], o: { tta?: Tta } = {}): Promise<Float32Array[]> {
    const [h, w] = this.preprocessing.size;
    const per = h * w * 3;
    const pixels = new Float32Array(images.length * per);
    images.forEach((img, i) => {
      pixels.set(this.networkInput(img), i * per);
    });
    return this.probabilitiesOfPixels(pixels, images.length, o);
  }

  /**
   * Class probabilities for n network inputs (n × h × w × 3 values 0..255, as networkInput gives them). With `tta`
   * 'flip' (default: the recorded one) each input also runs mirrored and the two are averaged.
   */
  async probabilitiesOfPixels(pixels: Float32Array, n: number, o: { tta?: Tta } = {}): Promise<Float32Array[]> {
    const tta = checkOneOf('tta', o.tta, ['flip', 'none']) ?? this.tta;
    const [h, w] = this.preprocessing.size;
    const views = tta === 'flip' ? 2 : 1;
    const input = new Float32Array(views * pixels.length);
    input.set(pixels);
    if (tta === 'flip') input.set(mirrorImages(pixels, n, [h, w]), pixels.length);
    const y = tf.tidy(() => this.model.predict(tf.tensor4d(input, [views * n, h, w, 3])) as tf.Tensor);
    try {
      const all = (await y.data()) as Float32Array;
      const c = this.labels.length;
      return Array.from({ length: n }, (_, i) => {
        const p = all.slice(i * c, (i + 1) * c);
        if (tta === 'flip') for (let k = 0; k < c; k++) p[k] = (p[k] + all[(n + i) * c + k]) / 2;
        return p;
      });
    } finally {
      y.dispose();
    }
  }

  /** The `topK` most likely labels (default 3) for one image, best first; `tta` defaults to the recorded one. */
  async predict(image: ImageInput, o: { topK?: number; tta?: Tta } = {}): Promise<Prediction[]> {
    const [p] = await this.probabilities([image], o);
    return topLabels(p, this.labels, o.topK ?? 3);
  }

  dispose(): void {
    this.model.dispose();
  }
}

/** The `k` largest probabilities with their labels, best first. */
export function topLabels(p: Float32Array, labels: string[], k: number): Prediction[] {
  return [...p.keys()]
    .sort((a, b) => p[b] - p[a])
    .slice(0, Math.min(k, labels.length))
    .map((i) => ({ label: labels[i], probability: p[i] }));
}

/** Full-resolution pixels of any input: raw data as it is, anything drawable through a canvas onto black. */
export function rawImage(image: ImageInput): RawImage {
  if ('data' in image && 'width' in image && 'height' in image) {
    const channels = image.data.length / (image.width * image.height);
    if (channels !== 3 && channels !== 4)
      throw new UsageError(
        'bad-image',
        `graft/predict: ${image.data.length} values for a ${image.width}x${image.height} image (RGB or RGBA)`,
      );
    return { data: image.data, width: image.width, height: image.height, channels };
  }
  const [width, height] = naturalSize(image);
  if (!width || !height)
    throw new UsageError('bad-image', 'graft/predict: the image has no pixels yet (not loaded, or no video frame)');
  const canvas =
    typeof OffscreenCanvas !== 'undefined'
      ? new OffscreenCanvas(width, height)
      : Object.assign(document.createElement('canvas'), { width, height });
  const ctx = canvas.getContext('2d', { willReadFrequently: true }) as
    | CanvasRenderingContext2D
    | OffscreenCanvasRenderingContext2D
    | null;
  if (!ctx) throw new Error('graft/predict: no 2D canvas context');
  // Transparent pixels become black, as decoding does in training; drawn at full size, so the browser does not resize.
  ctx.fillStyle = '#000';
  ctx.fillRect(0, 0, width, height);
  ctx.drawImage(image, 0, 0, width, height);
  const { data } = ctx.getImageData(0, 0, width, height);
  return { data, width, height, channels: 4 };
}

function naturalSize(image: CanvasImageSource): [number, number] {
  if (typeof HTMLImageElement !== 'undefined' && image instanceof HTMLImageElement)
    return [image.naturalWidth, image.naturalHeight];
  if (typeof HTMLVideoElement !== 'undefined' && image instanceof HTMLVideoElement)
    return [image.videoWidth, image.videoHeight];
  if (typeof VideoFrame !== 'undefined' && image instanceof VideoFrame)
    return [image.displayWidth, image.displayHeight];
  const sized = image as {
    width: number | { baseVal: { value: number } };
    height: number | { baseVal: { value: number } };
  };
  const size = (v: number | { baseVal: { value: number } }) => (typeof v === 'number' ? v : v.baseVal.value);
  return [size(sized.width), size(sized.height)];
}
