/**
 * Odd input files for the bad-input suite, generated in the test (nothing downloaded): broken and unusual images,
 * decompression bombs built from headers alone, and bytes that only pretend to be images.
 */
import { deflateSync } from 'node:zlib';
import sharp from 'sharp';

/** Bytes from a seeded generator: the same "random" file on every run. */
export function seededBytes(n: number, seed: number): Buffer {
  const out = Buffer.alloc(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s >>> 24;
  }
  return out;
}

/** A noisy RGB image large enough that its first half ends inside the compressed pixel data. */
export function noisy(width = 96, height = 64, seed = 5) {
  return sharp(seededBytes(width * height * 3, seed), { raw: { width, height, channels: 3 } });
}

export function solid(width: number, height: number, rgb: [number, number, number], alpha?: number) {
  const [r, g, b] = rgb;
  return sharp({
    create: {
      width,
      height,
      channels: alpha === undefined ? 3 : 4,
      background: alpha === undefined ? { r, g, b } : { r, g, b, alpha },
    },
  });
}

/** Left half `left`, right half `right`: turned by EXIF orientation 6, left becomes top. */
export async function halves(
  width: number,
  height: number,
  left: [number, number, number],
  right: [number, number, number],
) {
  const px = Buffer.alloc(width * height * 3);
  for (let y = 0; y < height; y++)
    for (let x = 0; x < width; x++) px.set(x < width / 2 ? left : right, (y * width + x) * 3);
  return sharp(px, { raw: { width, height, channels: 3 } });
}

/** A two-frame animated GIF: red, then blue. */
export async function animatedGif(): Promise<Buffer> {
  const red = await solid(16, 16, [255, 0, 0]).png().toBuffer();
  const blue = await solid(16, 16, [0, 0, 255]).png().toBuffer();
  return sharp([red, blue], { join: { animated: true } })
    .gif()
    .toBuffer();
}

/** A valid 2x2 24-bit BMP, written by hand (sharp cannot write BMP). */
export function bmp(): Buffer {
  const rowBytes = 8; // 2 pixels * 3 bytes, padded to 4
  const pixels = Buffer.alloc(rowBytes * 2, 0x80);
  const header = Buffer.alloc(54);
  header.write('BM', 0, 'latin1');
  header.writeUInt32LE(54 + pixels.length, 2);
  header.writeUInt32LE(54, 10);
  header.writeUInt32LE(40, 14);
  header.writeInt32LE(2, 18);
  header.writeInt32LE(2, 22);
  header.writeUInt16LE(1, 26);
  header.writeUInt16LE(24, 28);
  header.writeUInt32LE(pixels.length, 34);
  return Buffer.concat([header, pixels]);
}

/** An ISO-media header whose brands name HEIC only (an iPhone photo's container). */
export function heicHeader(): Buffer {
  const ftyp = Buffer.concat([
    Buffer.from([0, 0, 0, 24]),
    Buffer.from('ftypheic'),
    Buffer.alloc(4),
    Buffer.from('mif1heic'),
  ]);
  return Buffer.concat([ftyp, seededBytes(200, 9)]);
}

export const SVG =
  '<?xml version="1.0" encoding="UTF-8"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"><rect width="64" height="64" fill="red"/></svg>\n';

function crc32(buf: Buffer): number {
  let crc = 0xffffffff;
  for (const byte of buf) {
    crc ^= byte;
    for (let k = 0; k < 8; k++) crc = crc & 1 ? 0xedb88320 ^ (crc >>> 1) : crc >>> 1;
  }
  return (crc ^ 0xffffffff) >>> 0;
}

function pngChunk(type: string, data: Buffer): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const body = Buffer.concat([Buffer.from(type, 'latin1'), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(body));
  return Buffer.concat([len, body, crc]);
}

/** A PNG whose header declares `size` x `size` RGB pixels, with a few rows of data: a decompression bomb's shape. */
export function pngBomb(size = 20000): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(size, 0);
  ihdr.writeUInt32BE(size, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // RGB
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    pngChunk('IHDR', ihdr),
    pngChunk('IDAT', deflateSync(Buffer.alloc((size * 3 + 1) * 4))),
    pngChunk('IEND', Buffer.alloc(0)),
  ]);
}

/** A small baseline JPEG whose SOF0 header is rewritten to declare `size` x `size` pixels. */
export async function jpegBomb(size = 20000): Promise<Buffer> {
  const jpeg = Buffer.from(await solid(16, 16, [10, 200, 10]).jpeg({ progressive: false }).toBuffer());
  for (let i = 2; i + 9 < jpeg.length; i++) {
    if (jpeg[i] === 0xff && jpeg[i + 1] === 0xc0) {
      jpeg.writeUInt16BE(size, i + 5);
      jpeg.writeUInt16BE(size, i + 7);
      return jpeg;
    }
  }
  throw new Error('no SOF0 marker in the generated JPEG');
}

/** A small GIF whose screen and image descriptor are rewritten to declare `size` x `size` pixels. */
export async function gifBomb(size = 20000): Promise<Buffer> {
  const gif = Buffer.from(await solid(16, 16, [10, 10, 200]).gif().toBuffer());
  gif.writeUInt16LE(size, 6);
  gif.writeUInt16LE(size, 8);
  const at = gif.indexOf(0x2c, 13);
  if (at > 0) {
    gif.writeUInt16LE(size, at + 5);
    gif.writeUInt16LE(size, at + 7);
  }
  return gif;
}
