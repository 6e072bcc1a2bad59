/**
 * @file In-browser prediction with the exported TF.js model. PROVISIONAL until graft's browser prediction entry
 * (`graft/predict`) lands: this one fits the image to the input size with the canvas (cover or fill, central crop),
 * whose resampling is not sharp's, so probabilities can differ slightly from the server's.
 */
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { setWasmPaths } from '@tensorflow/tfjs-backend-wasm';
import * as tfl from '@tensorflow/tfjs-layers';

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
  size: [number, number];
  predict(source: CanvasImageSource): Promise<number[]>;
  dispose(): void;
}

interface Meta {
  labels: string[];
  preprocessing: { size: [number, number]; resize: 'cover' | 'fill'; crop?: number; inModel: boolean };
  headData?: unknown;
}

function dims(src: CanvasImageSource): [number, number] {
  if (src instanceof HTMLVideoElement) return [src.videoWidth, src.videoHeight];
  if (src instanceof HTMLImageElement) return [src.naturalWidth, src.naturalHeight];
  const s = src as { width: number; height: number };
  return [s.width, s.height];
}

/** Raw RGB 0..255 pixels, fitted to the model's input as graft.json says. */
export function fit(src: CanvasImageSource, m: Meta['preprocessing']): Float32Array {
  const [h, w] = m.size;
  const crop = m.crop ?? 1;
  const [sw, sh] = dims(src);
  const rw = crop === 1 ? w : Math.round(w / crop);
  const rh = crop === 1 ? h : Math.round(h / crop);
  // Source rectangle that ends up as the output after resize (cover: shorter side fits) and the centre cut.
  const sx = m.resize === 'fill' ? rw / sw : Math.max(rw / sw, rh / sh);
  const sy = m.resize === 'fill' ? rh / sh : sx;
  const cw = w / sx;
  const ch = h / sy;
  const c = document.createElement('canvas');
  c.width = w;
  c.height = h;
  const ctx = c.getContext('2d', { willReadFrequently: true })!;
  ctx.imageSmoothingQuality = 'high';
  ctx.drawImage(src, (sw - cw) / 2, (sh - ch) / 2, cw, ch, 0, 0, w, h);
  const rgba = ctx.getImageData(0, 0, w, h).data;
  const out = new Float32Array(w * h * 3);
  for (let i = 0, j = 0; i < rgba.length; i += 4, j += 3) {
    out[j] = rgba[i];
    out[j + 1] = rgba[i + 1];
    out[j + 2] = rgba[i + 2];
  }
  return out;
}

/** Loads model.json + weights.bin + graft.json from `base` (a URL ending in '/'). */
export async function loadBrowserModel(base: string): Promise<BrowserModel> {
  const be = await pageBackend();
  const meta = (await (await fetch(`${base}graft.json`)).json()) as Meta;
  if (!meta.preprocessing.inModel || meta.headData)
    throw new Error('this model cannot run in the browser (its head or base runs outside TF.js Layers)');
  const model = await tfl.loadLayersModel(`${base}model.json`);
  const [h, w] = meta.preprocessing.size;
  return {
    backend: be,
    labels: meta.labels,
    size: meta.preprocessing.size,
    async predict(src) {
      const px = fit(src, meta.preprocessing);
      const out = tf.tidy(() => model.predict(tf.tensor4d(px, [1, h, w, 3])) as tf.Tensor);
      const probs = Array.from(await out.data());
      out.dispose();
      return probs;
    },
    dispose: () => model.dispose(),
  };
}
