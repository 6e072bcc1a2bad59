import { DataError, opt, shown, UsageError, words } from '../util/errors.ts';

/**
 * How raw RGB pixels (0..255) become network input: value = pixel * scale + offset, after resizing to `size`.
 * Stored in every exported model's metadata so prediction reproduces training exactly.
 */
export interface Preprocessing {
  /** Network input height and width in pixels. */
  size: [number, number];
  /** Multiplier applied to 0..255 pixel values. */
  scale: number;
  /** Added after scaling. */
  offset: number;
  /** `cover`: the largest centred box of the input's aspect ratio (default); `fill`: the whole image, stretched. */
  resize: 'cover' | 'fill';
  /**
   * Central fraction kept (default 1, the whole box `resize` chooses): the central `crop` of that box, in each
   * dimension, is resized to `size`, as ImageNet networks are evaluated (0.875: torchvision's Resize(256) +
   * CenterCrop(224), TF-slim's central_fraction). Objects photographed in the middle of the frame then fill more of
   * the network's input. See dataset/resize.ts.
   */
  crop?: number;
  /**
   * Graph and ONNX bases only (applied in JS before the network, not inside a model): per-channel R,G,B mean and
   * standard deviation subtracted from and divided into the scaled values, as torchvision normalises 0..1 pixels.
   */
  mean?: [number, number, number];
  std?: [number, number, number];
  /** ONNX bases: the layout the network's input takes (graft's pixels are NHWC). */
  layout?: 'nchw' | 'nhwc';
}

/** The preprocessing that maps 0..255 linearly onto [min, max]. */
export function fromRange(
  size: [number, number],
  min: number,
  max: number,
  resize: Preprocessing['resize'] = 'cover',
): Preprocessing {
  return { size, scale: (max - min) / 255, offset: min, resize };
}

/** Checks a central-crop fraction (the `crop` option): in (0, 1]. `where` names a file that holds a bad one. */
export function checkCrop<T extends number | undefined>(crop: T, where?: string): T {
  if (crop === undefined || (typeof crop === 'number' && crop > 0 && crop <= 1)) return crop;
  if (where) throw new DataError('invalid-crop', where, `crop must be a fraction in (0, 1] (got ${shown(crop)})`);
  throw new UsageError('invalid-value', words`${opt('crop')} must be a fraction in (0, 1] (got ${shown(crop)})`);
}

/** Parses `MIN,MAX` as given to `--input-range`. */
export function parseRange(text: string): [number, number] {
  const parts = text.split(',').map((s) => Number(s.trim()));
  if (parts.length !== 2 || parts.some((n) => !Number.isFinite(n)) || parts[0] >= parts[1]) {
    throw new UsageError(
      'invalid-value',
      words`${opt('inputRange')} must be MIN,MAX with MIN < MAX (got ${shown(text)})`,
    );
  }
  return [parts[0], parts[1]];
}

/**
 * Names the resampling in every cache key: activations cached under another resampler (before graft resized with its
 * own, dataset/resize.ts, sharp did) are never mistaken for these.
 */
export const RESAMPLER = 'tri1';

/** A stable string for cache keys: two specs that give the same input give the same key. */
export function preprocessingKey(p: Preprocessing): string {
  const crop = p.crop !== undefined && p.crop !== 1 ? `:c${p.crop.toPrecision(9)}` : '';
  const base = `${p.size[0]}x${p.size[1]}:${p.resize}${crop}:${RESAMPLER}:${p.scale.toPrecision(9)}:${p.offset.toPrecision(9)}`;
  // Only present on graph/ONNX bases, so Layers bases keep the keys their caches were written under.
  const norm = p.mean || p.std ? `:m${(p.mean ?? [0, 0, 0]).join(',')}:s${(p.std ?? [1, 1, 1]).join(',')}` : '';
  return `${base}${norm}${p.layout ? `:${p.layout}` : ''}`;
}

/** Converts decoded RGB bytes (HWC, 0..255) into network input values. */
export function applyPreprocessing(rgb: Uint8Array, p: Preprocessing, out?: Float32Array): Float32Array {
  const result = out ?? new Float32Array(rgb.length);
  for (let i = 0; i < rgb.length; i++) result[i] = rgb[i] * p.scale + p.offset;
  return result;
}

/**
 * Raw NHWC pixels (0..255) → network input in `layout`, with scale/offset and the per-channel mean/std applied: what a
 * graph or ONNX base is fed (Layers bases do this inside the model instead).
 */
export function normalisePixels(
  pixels: Float32Array,
  n: number,
  p: Preprocessing,
  layout: 'nchw' | 'nhwc' = 'nhwc',
): Float32Array {
  const [h, w] = p.size;
  const hw = h * w;
  const mean = p.mean ?? [0, 0, 0];
  const std = p.std ?? [1, 1, 1];
  const mul = std.map((s) => p.scale / s);
  const add = std.map((s, c) => (p.offset - mean[c]) / s);
  const out = new Float32Array(pixels.length);
  for (let i = 0; i < n; i++) {
    const o = i * hw * 3;
    for (let q = 0; q < hw; q++) {
      for (let c = 0; c < 3; c++) {
        const v = pixels[o + q * 3 + c] * mul[c] + add[c];
        out[layout === 'nchw' ? o + c * hw + q : o + q * 3 + c] = v;
      }
    }
  }
  return out;
}
