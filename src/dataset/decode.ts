/**
 * Image decoding for graft: bytes in, fixed-size RGB pixels out.
 *
 * Conventions, chosen once so that training, evaluation and prediction see identical pixels:
 * - Formats: JPEG, PNG, WebP, GIF (first frame only), TIFF (first page) and AVIF: what the prebuilt sharp decodes on
 *   every platform. Refused by name as 'unsupported format (…)': BMP, HEIC (sharp's libheif carries no HEVC decoder),
 *   JPEG XL and SVG (a vector drawing, not a photo: rasterising it would depend on librsvg, fonts and external
 *   references). Formats are sniffed from the bytes, never from the file name.
 * - Decompression bombs: an image whose header declares more than MAX_IMAGE_PIXELS pixels is refused from its header,
 *   before any pixel is decoded, so it costs milliseconds and no memory.
 * - EXIF orientation is applied before resizing, so a portrait photo stays portrait.
 * - Alpha is composited onto black. Note that TF's decode_png(channels=3) and PIL's convert('RGB') instead drop the
 *   alpha channel and keep whatever colour the transparent pixels store; compositing makes the result independent of
 *   those hidden values, at the price of differing from them on transparent pixels.
 * - Greyscale, palette, CMYK and 16-bit inputs all come out as 8-bit sRGB with 3 channels.
 * - sharp only decodes (whole image, full resolution); resizing and cropping are graft's own (dataset/resize.ts: an
 *   antialiased triangle filter, as Pillow's and torchvision's bilinear resize), the code a browser runs too
 *   (`graft/predict`), so served predictions see the pixels training saw. Decoding at full resolution forgoes sharp's
 *   shrink-on-load for large JPEGs: the price of one resampler for both places (docs/BENCHMARKS.md, decode).
 */
import os from 'node:os';
import sharp, { type OutputInfo } from 'sharp';
import { DataError } from '../util/errors.ts';
import { resizeImage } from './resize.ts';

export interface DecodeOptions {
  /** [height, width] of the output. */
  size: [number, number];
  /** 'cover': the largest centred box of the output's aspect ratio; 'fill': the whole image, stretched. */
  resize: 'cover' | 'fill';
  /** Central fraction of that box kept (default 1: all of it); see dataset/resize.ts. */
  crop?: number;
}

/**
 * An image file that cannot be decoded. `reason` is short, stable and human-readable, e.g. 'empty file' or
 * 'truncated or corrupt image data'. Data sets skip and list such files; prediction lists them as skipped.
 */
export class ImageDecodeError extends DataError {
  constructor(file: string, reason: string, cause?: unknown) {
    super('undecodable', file, reason, cause);
    this.name = 'ImageDecodeError';
  }
}

/**
 * The largest image graft decodes, in pixels (width × height as the header declares them): Pillow's
 * DecompressionBombError threshold (2 × its MAX_IMAGE_PIXELS), about 13,400 × 13,400. A 200-megapixel phone photo is
 * above it; such images are best downscaled before training (graft resizes to the base's 224 px or so anyway).
 */
export const MAX_IMAGE_PIXELS = 178_956_970;

// Decoded images are used once and then cached as activations, so sharp's operation cache only costs memory.
sharp.cache(false);
// Callers decode several images at once (one per libuv worker); more than one libvips thread per image then just
// oversubscribes a small machine. On 2 cores, 1 thread per image measured fastest in throughput.
sharp.concurrency(Math.max(1, Math.min(2, Math.floor(os.availableParallelism() / 2))));

type Sniffed = 'jpeg' | 'png' | 'webp' | 'gif' | 'tiff' | 'avif' | { unsupported: string } | null;

function startsWith(b: Uint8Array, sig: number[], at = 0): boolean {
  if (b.length < at + sig.length) return false;
  for (let i = 0; i < sig.length; i++) if (b[at + i] !== sig[i]) return false;
  return true;
}

const ascii = (s: string) => [...s].map((c) => c.charCodeAt(0));

/** Identifies the container from its magic bytes, so a text file or random data gets a clear reason. */
function sniff(b: Uint8Array): Sniffed {
  if (startsWith(b, [0xff, 0xd8, 0xff])) return 'jpeg';
  if (startsWith(b, [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])) return 'png';
  if (startsWith(b, ascii('GIF87a')) || startsWith(b, ascii('GIF89a'))) return 'gif';
  if (startsWith(b, ascii('RIFF')) && startsWith(b, ascii('WEBP'), 8)) return 'webp';
  if (startsWith(b, ascii('II*\0')) || startsWith(b, ascii('MM\0*'))) return decodable('tiff', 'TIFF');
  if (startsWith(b, ascii('BM'))) return { unsupported: 'BMP' };
  if (startsWith(b, ascii('ftyp'), 4)) {
    // ISO media: the major brand (bytes 8..11) and the compatible brands after it say AVIF or HEIC.
    const box = Math.min(b.length, new DataView(b.buffer, b.byteOffset).getUint32(0));
    const brands = new Set<string>();
    for (let i = 8; i + 4 <= box; i += 4) if (i !== 12) brands.add(String.fromCharCode(...b.subarray(i, i + 4)));
    if (brands.has('avif') || brands.has('avis')) return decodable('avif', 'AVIF');
    return { unsupported: 'HEIC/HEIF' };
  }
  if (looksLikeSvg(b)) return { unsupported: 'SVG' };
  if (startsWith(b, [0xff, 0x0a]) || startsWith(b, [0, 0, 0, 0x0c, 0x4a, 0x58, 0x4c, 0x20])) {
    return { unsupported: 'JPEG XL' };
  }
  return null;
}

/** The format when this sharp build decodes it (a self-built libvips may lack a codec), else refused by name. */
function decodable(format: 'tiff' | 'avif', name: string): Sniffed {
  const id = format === 'avif' ? 'heif' : format;
  return (sharp.format as unknown as Record<string, { input?: { buffer?: boolean } }>)[id]?.input?.buffer
    ? format
    : { unsupported: `${name}: not in this build of sharp` };
}

/** XML or bare markup whose first kilobyte opens an <svg> element. */
function looksLikeSvg(b: Uint8Array): boolean {
  const head = new TextDecoder('utf-8', { fatal: false })
    .decode(b.subarray(0, 1024))
    .replace(/^\uFEFF/, '')
    .trimStart();
  return head.startsWith('<') && /<svg[\s>]/i.test(head);
}

/** True when the first bytes look like text (UTF-8/ASCII without control characters other than whitespace). */
function looksLikeText(b: Uint8Array): boolean {
  const n = Math.min(b.length, 512);
  for (let i = 0; i < n; i++) {
    const c = b[i];
    if (c < 0x09 || (c > 0x0d && c < 0x20) || c === 0x7f) return false;
  }
  return true;
}

function checkOptions(opts: DecodeOptions): void {
  const [h, w] = opts.size;
  if (!Number.isInteger(h) || !Number.isInteger(w) || h < 1 || w < 1) {
    throw new RangeError(`decodeImage: size must be two positive integers [height, width], got [${opts.size}]`);
  }
  if (opts.resize !== 'cover' && opts.resize !== 'fill') {
    throw new RangeError(`decodeImage: resize must be 'cover' or 'fill', got '${String(opts.resize)}'`);
  }
  if (opts.crop !== undefined && !(opts.crop > 0 && opts.crop <= 1)) {
    throw new RangeError(`decodeImage: crop must be in (0, 1], got ${opts.crop}`);
  }
}

async function reasonFromSharp(message: string, bytes: Uint8Array): Promise<string> {
  if (/pixel limit|exceeds/i.test(message)) {
    // Only the header is read (no pixel limit applies to that), to say how large.
    const m = await sharp(bytes, { limitInputPixels: false })
      .metadata()
      .catch(() => undefined);
    const dims = m?.width && m?.height ? `${m.width}x${m.height} pixels, ` : '';
    return `image too large (${dims}above graft's limit of ${MAX_IMAGE_PIXELS} pixels)`;
  }
  if (/unsupported image format/i.test(message)) return 'not a decodable image (unrecognised format)';
  return 'truncated or corrupt image data';
}

/**
 * Decodes JPEG, PNG, WebP, GIF (first frame), TIFF (first page) or AVIF bytes into RGB pixels, HWC order, exactly h*w*3 bytes.
 * Throws ImageDecodeError for anything that is not a complete image in one of those formats; argument mistakes
 * (bad size or resize mode) throw RangeError instead, since they are bugs rather than bad files.
 */
export async function decodeImage(bytes: Uint8Array, file: string, opts: DecodeOptions): Promise<Uint8Array> {
  checkOptions(opts);
  if (bytes.length === 0) throw new ImageDecodeError(file, 'empty file');
  const kind = sniff(bytes);
  if (kind === null) {
    const what = looksLikeText(bytes) ? 'looks like a text file' : 'unrecognised format';
    throw new ImageDecodeError(file, `not a decodable image (${what})`);
  }
  if (typeof kind === 'object') throw new ImageDecodeError(file, `unsupported format (${kind.unsupported})`);

  let data: Buffer;
  let info: OutputInfo;
  try {
    // failOn 'error' makes truncated or corrupt pixel data throw instead of being padded with grey; it still accepts
    // files that only raise libjpeg warnings (e.g. stray bytes before a marker), which decode fine everywhere else.
    ({ data, info } = await sharp(bytes, { failOn: 'error', pages: 1, limitInputPixels: MAX_IMAGE_PIXELS })
      .rotate()
      .flatten({ background: { r: 0, g: 0, b: 0 } })
      .toColourspace('srgb')
      .raw({ depth: 'uchar' })
      .toBuffer({ resolveWithObject: true }));
  } catch (e) {
    const message = e instanceof Error ? e.message : String(e);
    throw new ImageDecodeError(file, await reasonFromSharp(message, bytes), e);
  }
  if (info.channels !== 3 || data.length !== info.width * info.height * 3) {
    // Would mean the pipeline above does not do what it says; fail loudly rather than feed misshapen pixels on.
    throw new ImageDecodeError(file, `decoded to ${info.width}x${info.height}x${info.channels}, expected RGB`);
  }
  const rgb = new Uint8Array(data.buffer, data.byteOffset, data.length);
  return resizeImage({ data: rgb, width: info.width, height: info.height, channels: 3 }, opts);
}
