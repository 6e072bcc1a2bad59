import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import sharp, { type Sharp } from 'sharp';
import { decodeImage, ImageDecodeError } from './decode.ts';

const RED = { r: 255, g: 0, b: 0 };
const GREEN = { r: 0, g: 255, b: 0 };
const BLUE = { r: 0, g: 0, b: 255 };
type RGB = typeof RED;

function solid(width: number, height: number, background: RGB | { r: number; g: number; b: number; alpha: number }) {
  const channels = 'alpha' in background ? 4 : 3;
  return sharp({ create: { width, height, channels, background } });
}

/** Vertical stripes of equal width, left to right, as a raw RGB buffer wrapped in sharp. */
async function stripes(stripeWidth: number, height: number, colours: RGB[]) {
  const base = await solid(stripeWidth * colours.length, height, colours[0])
    .png()
    .toBuffer();
  const overlays = await Promise.all(
    colours.slice(1).map(async (c, k) => ({
      input: await solid(stripeWidth, height, c).png().toBuffer(),
      left: stripeWidth * (k + 1),
      top: 0,
    })),
  );
  // Flatten the composite first so later encoders see a plain image, not a pending pipeline.
  return sharp(await sharp(base).composite(overlays).png().toBuffer());
}

function pixel(data: Uint8Array, width: number, y: number, x: number): [number, number, number] {
  const o = (y * width + x) * 3;
  return [data[o], data[o + 1], data[o + 2]];
}

/** Asserts a pixel is close to a colour; lossy formats and resampling move values a little. */
function assertColour(actual: [number, number, number], expected: RGB, what: string) {
  const d = Math.max(
    Math.abs(actual[0] - expected.r),
    Math.abs(actual[1] - expected.g),
    Math.abs(actual[2] - expected.b),
  );
  assert.ok(d <= 40, `${what}: got rgb(${actual}), expected about rgb(${expected.r},${expected.g},${expected.b})`);
}

async function rejects(bytes: Uint8Array, file: string, reason: RegExp) {
  await assert.rejects(decodeImage(bytes, file, { size: [8, 8], resize: 'cover' }), (e: unknown) => {
    assert.ok(e instanceof ImageDecodeError, `expected ImageDecodeError, got ${String(e)}`);
    assert.equal(e.file, file);
    assert.match(e.reason, reason);
    assert.ok(!e.message.includes('\n'), 'message must be one line');
    assert.ok(e.message.includes(file));
    return true;
  });
}

/** A JPEG large and noisy enough that its first half ends well inside the entropy-coded data. */
async function noisyJpeg(): Promise<Buffer> {
  const w = 160;
  const h = 120;
  const raw = Buffer.alloc(w * h * 3);
  let s = 12345;
  for (let i = 0; i < raw.length; i++) {
    s = (s * 1103515245 + 12345) >>> 0;
    raw[i] = s >>> 24;
  }
  return sharp(raw, { raw: { width: w, height: h, channels: 3 } })
    .jpeg({ quality: 90 })
    .toBuffer();
}

describe('decodeImage formats', () => {
  const formats = {
    png: (s: Sharp) => s.png(),
    jpeg: (s: Sharp) => s.jpeg(),
    webp: (s: Sharp) => s.webp(),
    gif: (s: Sharp) => s.gif(),
    tiff: (s: Sharp) => s.tiff(),
    avif: (s: Sharp) => s.avif(),
  };
  for (const [name, encode] of Object.entries(formats)) {
    test(`${name} decodes to h*w*3 RGB bytes`, async () => {
      const bytes = await encode(solid(40, 30, BLUE)).toBuffer();
      const out = await decodeImage(bytes, `x.${name}`, { size: [12, 20], resize: 'fill' });
      assert.ok(out instanceof Uint8Array);
      assert.equal(out.length, 12 * 20 * 3);
      assertColour(pixel(out, 20, 6, 10), BLUE, name);
    });
  }

  test('greyscale input is expanded to 3 channels', async () => {
    const bytes = await solid(10, 10, { r: 200, g: 200, b: 200 }).toColourspace('b-w').png().toBuffer();
    assert.equal((await sharp(bytes).metadata()).channels, 1);
    const out = await decodeImage(bytes, 'grey.png', { size: [5, 5], resize: 'fill' });
    assert.equal(out.length, 5 * 5 * 3);
    assert.deepEqual(pixel(out, 5, 2, 2), [200, 200, 200]);
  });

  test('alpha is composited onto black', async () => {
    const bytes = await solid(10, 10, { r: 255, g: 255, b: 255, alpha: 0 }).png().toBuffer();
    const out = await decodeImage(bytes, 'clear.png', { size: [4, 4], resize: 'fill' });
    assert.equal(out.length, 4 * 4 * 3);
    assert.deepEqual(pixel(out, 4, 1, 1), [0, 0, 0]);
  });

  test('16-bit PNG comes out as 8-bit', async () => {
    const bytes = await solid(10, 10, GREEN).png({ force: true }).toColourspace('rgb16').toBuffer();
    assert.equal((await sharp(bytes).metadata()).depth, 'ushort');
    const out = await decodeImage(bytes, 'deep.png', { size: [4, 4], resize: 'fill' });
    assert.equal(out.length, 4 * 4 * 3);
    assertColour(pixel(out, 4, 2, 2), GREEN, '16-bit');
  });
});

describe('decodeImage geometry', () => {
  test('EXIF orientation 6 is applied before resizing', async () => {
    // Stored 40 wide x 20 high: red left half, blue right half. Orientation 6 means "rotate 90° clockwise to display",
    // which puts the left (red) half on top of a 20 wide x 40 high image.
    const img = await stripes(20, 20, [RED, BLUE]);
    const jpeg = await img.jpeg({ quality: 95 }).withMetadata({ orientation: 6 }).toBuffer();
    assert.equal((await sharp(jpeg).metadata()).orientation, 6);
    const out = await decodeImage(jpeg, 'rotated.jpg', { size: [40, 20], resize: 'fill' });
    assertColour(pixel(out, 20, 5, 10), RED, 'top');
    assertColour(pixel(out, 20, 34, 10), BLUE, 'bottom');
    // Without orientation the same bytes would keep red on the left and blue on the right.
    assertColour(pixel(out, 20, 5, 2), RED, 'top left');
    assertColour(pixel(out, 20, 5, 17), RED, 'top right');
  });

  test('cover crops the centre, fill stretches', async () => {
    const png = await (await stripes(20, 20, [RED, GREEN, BLUE])).png().toBuffer(); // 60 x 20
    const cover = await decodeImage(png, 's.png', { size: [10, 10], resize: 'cover' });
    const fill = await decodeImage(png, 's.png', { size: [10, 10], resize: 'fill' });
    for (const x of [0, 5, 9]) assertColour(pixel(cover, 10, 5, x), GREEN, `cover x=${x}`);
    assertColour(pixel(fill, 10, 5, 0), RED, 'fill left');
    assertColour(pixel(fill, 10, 5, 5), GREEN, 'fill centre');
    assertColour(pixel(fill, 10, 5, 9), BLUE, 'fill right');
  });

  test('crop keeps the central fraction: the centre of a resize to size / crop', async () => {
    // 50 x 50 of five 10-px stripes: a 0.6 crop at 30 px is a resize to 50 (none) and the middle 30 columns, which are
    // exactly the three inner stripes; without the crop all five show.
    const png = await (await stripes(10, 50, [RED, GREEN, BLUE, GREEN, RED])).png().toBuffer();
    const cropped = await decodeImage(png, 's.png', { size: [30, 30], resize: 'cover', crop: 0.6 });
    assertColour(pixel(cropped, 30, 15, 2), GREEN, 'cropped left');
    assertColour(pixel(cropped, 30, 15, 15), BLUE, 'cropped centre');
    assertColour(pixel(cropped, 30, 15, 27), GREEN, 'cropped right');
    const whole = await decodeImage(png, 's.png', { size: [30, 30], resize: 'cover' });
    assertColour(pixel(whole, 30, 15, 1), RED, 'whole left');
    assertColour(pixel(whole, 30, 15, 28), RED, 'whole right');
    // Pixel for pixel: the same as resizing to 50 and cutting out the centre by hand.
    const big = await decodeImage(png, 's.png', { size: [50, 50], resize: 'cover' });
    for (let y = 0; y < 30; y++)
      for (let x = 0; x < 30; x++) assert.deepEqual(pixel(cropped, 30, y, x), pixel(big, 50, y + 10, x + 10));
  });

  test('bad options are a RangeError, not a decode error', async () => {
    const png = await solid(4, 4, RED).png().toBuffer();
    await assert.rejects(decodeImage(png, 'a.png', { size: [4, 4], resize: 'fill', crop: 0 }), RangeError);
    await assert.rejects(decodeImage(png, 'a.png', { size: [4, 4], resize: 'fill', crop: 1.5 }), RangeError);
    await assert.rejects(decodeImage(png, 'a.png', { size: [0, 4], resize: 'fill' }), RangeError);
    await assert.rejects(decodeImage(png, 'a.png', { size: [4, 4], resize: 'crop' as 'fill' }), RangeError);
  });
});

describe('decodeImage errors', () => {
  test('empty file', async () => {
    await rejects(new Uint8Array(0), '/d/cats/empty.jpg', /^empty file$/);
  });

  test('text file named .jpg', async () => {
    await rejects(
      Buffer.from('<!DOCTYPE html><html>404 not found</html>\n'),
      '/d/cats/page.jpg',
      /^not a decodable image \(/,
    );
  });

  test('random bytes named .png', async () => {
    const junk = new Uint8Array(512);
    for (let i = 0; i < junk.length; i++) junk[i] = (i * 7919 + 13) & 0xff;
    await rejects(junk, '/d/dogs/junk.png', /^not a decodable image \(/);
  });

  test('truncated JPEG (first half of a real one)', async () => {
    const jpeg = await noisyJpeg();
    // Sanity: the whole file decodes, so the failure below is due to truncation alone.
    await decodeImage(jpeg, 'whole.jpg', { size: [8, 8], resize: 'cover' });
    await rejects(jpeg.subarray(0, jpeg.length >> 1), '/d/dogs/half.jpg', /^truncated or corrupt image data$/);
  });

  test('PNG signature followed by garbage', async () => {
    const png = await solid(8, 8, RED).png().toBuffer();
    const bad = Buffer.concat([png.subarray(0, 8), Buffer.alloc(64, 0x5a)]);
    await rejects(bad, '/d/dogs/bad.png', /^truncated or corrupt image data$/);
  });

  test('formats outside the supported set are refused by name', async () => {
    const bmpHeader = Buffer.concat([Buffer.from('BM'), Buffer.alloc(60, 1)]);
    await rejects(bmpHeader, '/d/dogs/scan.bmp', /^unsupported format \(BMP\)$/);
    const svg = Buffer.from('<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"/>\n');
    await rejects(svg, '/d/dogs/logo.svg', /^unsupported format \(SVG\)$/);
    // An ISO-media header whose brands name HEIC only: sharp's libheif has no HEVC decoder.
    const heic = Buffer.concat([
      Buffer.from([0, 0, 0, 24]),
      Buffer.from('ftypheic'),
      Buffer.alloc(4),
      Buffer.from('mif1heic'),
    ]);
    await rejects(heic, '/d/dogs/phone.heic', /^unsupported format \(HEIC\/HEIF\)$/);
  });
});

describe('decodeImage on the shared hymenoptera data', () => {
  const ants = path.resolve('../shared/data/hymenoptera/train/ants');
  const present = existsSync(ants);
  test('the GIF among the ants decodes', { skip: present ? false : `${ants} is absent` }, async () => {
    const gifs = readdirSync(ants)
      .map((n) => path.join(ants, n))
      .filter((f) => readFileSync(f).subarray(0, 4).toString('latin1') === 'GIF8');
    assert.ok(gifs.length >= 1, 'expected at least one real GIF in the ants folder');
    for (const f of gifs) {
      const out = await decodeImage(readFileSync(f), f, { size: [224, 224], resize: 'cover' });
      assert.equal(out.length, 224 * 224 * 3);
    }
  });
});
