/**
 * @file In-browser prediction on the page: the trained model folder (served under /m/<token>/) loaded by
 * `graft/predict`, the entry a user's own web app imports, so the page shows what that app will get. graft/predict
 * resizes with graft's own resampler (dataset/resize.ts), the code training ran after sharp decoded each file; the
 * page only picks the TF.js backend.
 */
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { setWasmPaths } from '@tensorflow/tfjs-backend-wasm';
import { type ImageInput, loadModel } from '../../predict/web.ts';

let backend: Promise<string> | undefined;

/**
 * TF.js on WebAssembly (its binaries served by graft serve under /wasm/), about ten times faster than the CPU
 * backend, which stands in where WebAssembly is refused. WebGL is not used: headless and GPU-less browsers emulate it.
 */
export function pageBackend(): Promise<string> {
  backend ??= (async () => {
    setWasmPaths('/wasm/');
    if (await tf.setBackend('wasm').catch(() => false)) return 'wasm';
    await tf.setBackend('cpu');
    return 'cpu';
  })();
  return backend;
}

export interface BrowserModel {
  /** The TF.js backend the page runs on. */
  backend: string;
  labels: string[];
  /** Class probabilities, in the order of `labels`. */
  predict(source: ImageInput): Promise<number[]>;
  dispose(): void;
}

/** Loads graft.json + model.json + weights.bin from `base` (a URL ending in '/'). */
export async function loadBrowserModel(base: string): Promise<BrowserModel> {
  const be = await pageBackend();
  const model = await loadModel(base);
  return {
    backend: be,
    labels: model.labels,
    async predict(src) {
      const [p] = await model.probabilities([src]);
      return Array.from(p);
    },
    dispose: () => model.dispose(),
  };
}

/**
 * The full-resolution pixels of an image file as the browser decodes it, EXIF orientation applied (sharp's rotate()
 * in training): what graft/predict must resize, rather than an <img> preview scaled for the screen.
 */
export async function decodeFile(file: Blob): Promise<ImageBitmap> {
  return createImageBitmap(file, { imageOrientation: 'from-image' });
}
