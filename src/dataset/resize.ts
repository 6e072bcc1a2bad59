/**
 * @file graft's one resampler: full-resolution pixels → the network's input size, by `resize` (cover or fill) and the
 * central `crop`. Training (Node: sharp decodes, this resizes) and prediction in a browser (canvas gives the pixels,
 * this resizes) run this same code, so a model sees the same pixels in both places; resampling was the whole of the
 * train/serve skew measured in issue 13 (a browser's canvas scaler is not sharp's).
 *
 * The filter is the triangle (bilinear) filter of Pillow's `Image.resize(..., BILINEAR)`, which torchvision's
 * evaluation transforms use: when shrinking, its support widens with the reduction, so every source pixel counts
 * (antialiased) instead of a 2x2 sample; when enlarging it is plain bilinear interpolation. Sample centres sit at
 * half-pixels. The two passes (columns, then rows) are separable; weights are normalised where the support meets the
 * image's edge. Plain JavaScript arithmetic in a fixed order: the same input gives the same bytes in every engine.
 *
 * Geometry, in continuous source coordinates (no rounding to whole pixels): `fill` uses the whole image, `cover` the
 * largest centred box with the output's aspect ratio; then the central fraction `crop` of that box (in each
 * dimension) is kept, and the box is resampled to exactly the output size.
 *
 * Browser-safe: no Node modules.
 */

export interface ResizeSpec {
  /** Output [height, width]. */
  size: [number, number];
  /** 'cover': the largest centred box of the output's aspect ratio; 'fill': the whole image, stretched. */
  resize: 'cover' | 'fill';
  /** Central fraction of that box kept, in (0, 1] (default 1). */
  crop?: number;
}

/** Pixels as canvas ImageData and sharp's raw output hold them: rows top to bottom, `channels` values per pixel. */
export interface RawImage {
  data: Uint8Array | Uint8ClampedArray;
  width: number;
  height: number;
  /** 3 (RGB) or 4 (RGBA; composited onto black, as decoding does). */
  channels: 3 | 4;
}

/** The source rectangle [x, y, width, height] (continuous coordinates) that becomes the output. */
export function sourceBox(width: number, height: number, spec: ResizeSpec): [number, number, number, number] {
  const [h, w] = spec.size;
  let bw = width;
  let bh = height;
  if (spec.resize === 'cover') {
    // Wider than the output: the height fits and the sides are cut; otherwise the width fits.
    if (width * h > height * w) bw = (height * w) / h;
    else bh = (width * h) / w;
  }
  const crop = spec.crop ?? 1;
  bw *= crop;
  bh *= crop;
  return [(width - bw) / 2, (height - bh) / 2, bw, bh];
}

interface Taps {
  /** First source index of each output position. */
  start: Int32Array;
  /** Number of taps of each output position. */
  count: Int32Array;
  /** Weights, `stride` per output position, normalised to sum 1. */
  weights: Float64Array;
  stride: number;
}

/** Triangle-filter taps for `out` samples over [from, from + span) of a source line of `size` pixels. */
function taps(size: number, from: number, span: number, out: number): Taps {
  const scale = span / out;
  const filterScale = Math.max(scale, 1);
  const support = filterScale;
  const stride = Math.ceil(support) * 2 + 1;
  const start = new Int32Array(out);
  const count = new Int32Array(out);
  const weights = new Float64Array(out * stride);
  for (let i = 0; i < out; i++) {
    const centre = from + (i + 0.5) * scale;
    const lo = Math.max(0, Math.trunc(centre - support + 0.5));
    const hi = Math.min(size, Math.trunc(centre + support + 0.5));
    let sum = 0;
    for (let x = lo; x < hi; x++) {
      const t = Math.abs((x + 0.5 - centre) / filterScale);
      const wt = t < 1 ? 1 - t : 0;
      weights[i * stride + x - lo] = wt;
      sum += wt;
    }
    if (sum > 0) for (let k = 0; k < hi - lo; k++) weights[i * stride + k] /= sum;
    else {
      // A box narrower than a pixel on the edge: take the nearest pixel.
      weights[i * stride] = 1;
    }
    start[i] = sum > 0 ? lo : Math.min(size - 1, Math.max(0, Math.floor(centre)));
    count[i] = sum > 0 ? hi - lo : 1;
  }
  return { start, count, weights, stride };
}

function checkImage(img: RawImage): void {
  const { width, height, channels, data } = img;
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1)
    throw new RangeError(`resizeImage: image size must be positive integers, got ${width}x${height}`);
  if (channels !== 3 && channels !== 4) throw new RangeError(`resizeImage: channels must be 3 or 4, got ${channels}`);
  if (data.length !== width * height * channels)
    throw new RangeError(`resizeImage: ${data.length} values for a ${width}x${height}x${channels} image`);
}

function checkSpec(spec: ResizeSpec): void {
  const [h, w] = spec.size;
  if (!Number.isInteger(h) || !Number.isInteger(w) || h < 1 || w < 1)
    throw new RangeError(`resizeImage: size must be two positive integers [height, width], got [${spec.size}]`);
  if (spec.resize !== 'cover' && spec.resize !== 'fill')
    throw new RangeError(`resizeImage: resize must be 'cover' or 'fill', got '${String(spec.resize)}'`);
  if (spec.crop !== undefined && !(spec.crop > 0 && spec.crop <= 1))
    throw new RangeError(`resizeImage: crop must be in (0, 1], got ${spec.crop}`);
}

/**
 * Resizes (and crops) an image to `spec.size`: RGB bytes, HWC, exactly h*w*3 values. RGBA input is composited onto
 * black first (value * alpha / 255), as graft's decoding flattens transparent images.
 */
export function resizeImage(img: RawImage, spec: ResizeSpec): Uint8Array {
  checkImage(img);
  checkSpec(spec);
  const { data, width, height, channels } = img;
  const [outH, outW] = spec.size;
  const [bx, by, bw, bh] = sourceBox(width, height, spec);
  const cols = taps(width, bx, bw, outW);
  const rows = taps(height, by, bh, outH);
  // Only the source rows some output row reads go through the first pass.
  const rowLo = rows.start[0];
  const rowHi = rows.start[outH - 1] + rows.count[outH - 1];
  const opaque = channels === 3 || everyAlphaOpaque(data, rowLo * width, rowHi * width);

  // Pass 1: each needed source row → outW columns (3 channels).
  const line = outW * 3;
  const mid = new Float64Array((rowHi - rowLo) * line);
  const cw = cols.weights;
  for (let y = rowLo; y < rowHi; y++) {
    const src = y * width * channels;
    let o = (y - rowLo) * line;
    for (let i = 0; i < outW; i++, o += 3) {
      const n = cols.count[i];
      const wo = i * cols.stride;
      let p = src + cols.start[i] * channels;
      let r = 0;
      let g = 0;
      let b = 0;
      if (opaque) {
        for (let k = 0; k < n; k++, p += channels) {
          const wt = cw[wo + k];
          r += data[p] * wt;
          g += data[p + 1] * wt;
          b += data[p + 2] * wt;
        }
      } else {
        for (let k = 0; k < n; k++, p += channels) {
          const wt = (cw[wo + k] * data[p + 3]) / 255;
          r += data[p] * wt;
          g += data[p + 1] * wt;
          b += data[p + 2] * wt;
        }
      }
      mid[o] = r;
      mid[o + 1] = g;
      mid[o + 2] = b;
    }
  }

  // Pass 2: rows → outH, rounded to bytes. Rows are summed whole, in tap order, for sequential memory access.
  const out = new Uint8Array(outH * line);
  const acc = new Float64Array(line);
  for (let j = 0; j < outH; j++) {
    const n = rows.count[j];
    const wo = j * rows.stride;
    acc.fill(0);
    for (let k = 0; k < n; k++) {
      const wt = rows.weights[wo + k];
      const from = (rows.start[j] - rowLo + k) * line;
      for (let q = 0; q < line; q++) acc[q] += mid[from + q] * wt;
    }
    const dst = j * line;
    for (let q = 0; q < line; q++) {
      const v = acc[q];
      out[dst + q] = v <= 0 ? 0 : v >= 255 ? 255 : Math.round(v);
    }
  }
  return out;
}

function everyAlphaOpaque(data: Uint8Array | Uint8ClampedArray, fromPixel: number, toPixel: number): boolean {
  for (let p = fromPixel * 4 + 3; p < toPixel * 4; p += 4) if (data[p] !== 255) return false;
  return true;
}
