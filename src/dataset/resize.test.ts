import assert from 'node:assert/strict';
import { test } from 'node:test';
import { type RawImage, resizeImage, sourceBox } from './resize.ts';

function image(width: number, height: number, at: (x: number, y: number) => [number, number, number]): RawImage {
  const data = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) data.set(at(x, y), (y * width + x) * 3);
  return { data, width, height, channels: 3 };
}

const px = (rgb: Uint8Array, w: number, x: number, y: number) =>
  Array.from(rgb.subarray((y * w + x) * 3, (y * w + x) * 3 + 3));

test('the same size with fill and no crop is the identity', () => {
  const img = image(7, 5, (x, y) => [x * 30, y * 50, (x * y * 17) % 256]);
  assert.deepEqual(resizeImage(img, { size: [5, 7], resize: 'fill' }), img.data);
});

test('a constant image stays constant at any scale, up or down', () => {
  const img = image(37, 23, () => [10, 128, 250]);
  for (const size of [
    [5, 9],
    [23, 37],
    [64, 80],
  ] as [number, number][]) {
    const out = resizeImage(img, { size, resize: 'cover', crop: 0.875 });
    for (let i = 0; i < out.length; i += 3) assert.deepEqual(Array.from(out.subarray(i, i + 3)), [10, 128, 250]);
  }
});

test('shrinking is antialiased: a one-pixel checkerboard averages to grey instead of aliasing', () => {
  const img = image(64, 64, (x, y) => ((x + y) % 2 ? [255, 255, 255] : [0, 0, 0]));
  const out = resizeImage(img, { size: [16, 16], resize: 'fill' });
  // A 2x2 bilinear sample (no antialiasing) would give 0 or 255 here; the widened triangle filter gives ~127.
  for (const v of out) assert.ok(Math.abs(v - 127.5) <= 2, `${v}`);
});

test('enlarging is bilinear interpolation between pixel centres', () => {
  const img = image(2, 1, (x) => (x ? [200, 200, 200] : [0, 0, 0]));
  const out = resizeImage(img, { size: [1, 4], resize: 'fill' });
  // Output centres at source x = 0.25, 0.75, 1.25, 1.75; pixel centres at 0.5 and 1.5; edges clamp.
  assert.deepEqual(
    [0, 1, 2, 3].map((x) => px(out, 4, x, 0)[0]),
    [0, 50, 150, 200],
  );
});

test('cover keeps the centred box of the output aspect; fill stretches; crop keeps the central fraction', () => {
  // 90 x 30: three 30-px squares, red | green | blue.
  const colours: [number, number, number][] = [
    [255, 0, 0],
    [0, 255, 0],
    [0, 0, 255],
  ];
  const img = image(90, 30, (x) => colours[Math.floor(x / 30)]);
  assert.deepEqual(sourceBox(90, 30, { size: [10, 10], resize: 'cover' }), [30, 0, 30, 30]);
  assert.deepEqual(sourceBox(90, 30, { size: [10, 10], resize: 'fill', crop: 0.5 }), [22.5, 7.5, 45, 15]);
  const cover = resizeImage(img, { size: [10, 10], resize: 'cover' });
  for (let x = 1; x < 9; x++) assert.deepEqual(px(cover, 10, x, 5), [0, 255, 0], `cover x=${x}`);
  // At the box's edges the filter reads past it, as resizing the whole image and then cutting out would.
  assert.ok(px(cover, 10, 0, 5)[0] > 0 && px(cover, 10, 0, 5)[1] > 200);
  const fill = resizeImage(img, { size: [10, 9], resize: 'fill' });
  assert.deepEqual(px(fill, 9, 0, 5), [255, 0, 0]);
  assert.deepEqual(px(fill, 9, 4, 5), [0, 255, 0]);
  assert.deepEqual(px(fill, 9, 8, 5), [0, 0, 255]);
  // Tall image, cover: the middle rows.
  const tall = image(10, 40, (_, y) => (y < 15 ? [255, 0, 0] : y < 25 ? [0, 255, 0] : [0, 0, 255]));
  assert.deepEqual(sourceBox(10, 40, { size: [4, 4], resize: 'cover', crop: 0.5 }), [2.5, 17.5, 5, 5]);
  const mid = resizeImage(tall, { size: [4, 4], resize: 'cover', crop: 0.5 });
  for (let i = 0; i < mid.length; i += 3) assert.deepEqual(Array.from(mid.subarray(i, i + 3)), [0, 255, 0]);
});

test('RGBA is composited onto black; fully opaque RGBA equals RGB', () => {
  const rgb = image(6, 4, (x, y) => [x * 40, y * 60, 200]);
  const rgba = new Uint8Array(6 * 4 * 4);
  for (let i = 0; i < 24; i++) rgba.set([...rgb.data.subarray(i * 3, i * 3 + 3), 255], i * 4);
  const spec = { size: [3, 5] as [number, number], resize: 'cover' as const };
  assert.deepEqual(resizeImage({ data: rgba, width: 6, height: 4, channels: 4 }, spec), resizeImage(rgb, spec));
  for (let i = 0; i < 24; i++) rgba[i * 4 + 3] = i % 2 ? 0 : 255;
  const half = resizeImage({ data: rgba, width: 6, height: 4, channels: 4 }, { size: [4, 6], resize: 'fill' });
  assert.deepEqual(px(half, 6, 1, 0), [0, 0, 0], 'a transparent pixel is black');
  assert.deepEqual(px(half, 6, 2, 0), [80, 0, 200]);
});

test('bad arguments are RangeErrors', () => {
  const img = image(4, 4, () => [0, 0, 0]);
  assert.throws(() => resizeImage(img, { size: [0, 4], resize: 'fill' }), RangeError);
  assert.throws(() => resizeImage(img, { size: [4, 4], resize: 'crop' as 'fill' }), RangeError);
  assert.throws(() => resizeImage(img, { size: [4, 4], resize: 'fill', crop: 0 }), RangeError);
  assert.throws(() => resizeImage({ ...img, width: 5 }, { size: [4, 4], resize: 'fill' }), RangeError);
});
