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
  /** `cover`: resize the shorter side then centre-crop (default); `fill`: stretch to the size. */
  resize: 'cover' | 'fill';
}

/** The preprocessing that maps 0..255 linearly onto [min, max]. */
export function fromRange(size: [number, number], min: number, max: number, resize: Preprocessing['resize'] = 'cover'): Preprocessing {
  return { size, scale: (max - min) / 255, offset: min, resize };
}

/** Parses `MIN,MAX` as given to `--input-range`. */
export function parseRange(text: string): [number, number] {
  const parts = text.split(',').map((s) => Number(s.trim()));
  if (parts.length !== 2 || parts.some((n) => !Number.isFinite(n)) || parts[0] >= parts[1]) {
    throw new Error(`--input-range must be MIN,MAX with MIN < MAX (got '${text}')`);
  }
  return [parts[0], parts[1]];
}

/** A stable string for cache keys: two specs that give the same input give the same key. */
export function preprocessingKey(p: Preprocessing): string {
  return `${p.size[0]}x${p.size[1]}:${p.resize}:${p.scale.toPrecision(9)}:${p.offset.toPrecision(9)}`;
}

/** Converts decoded RGB bytes (HWC, 0..255) into network input values. */
export function applyPreprocessing(rgb: Uint8Array, p: Preprocessing, out?: Float32Array): Float32Array {
  const result = out ?? new Float32Array(rgb.length);
  for (let i = 0; i < rgb.length; i++) result[i] = rgb[i] * p.scale + p.offset;
  return result;
}
