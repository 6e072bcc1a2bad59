import assert from 'node:assert/strict';
import { test } from 'node:test';
import { applyView, augmentViews, mirrorImages, parseAugment } from './views.ts';

function randomImage(h: number, w: number, seed: number): Uint8Array {
  let s = seed;
  return Uint8Array.from({ length: h * w * 3 }, () => {
    s = (s * 1103515245 + 12345) >>> 0;
    return s >>> 24;
  });
}

test('flip mirrors each row and keeps the channel order of every pixel', () => {
  const [h, w] = [3, 5];
  const img = randomImage(h, w, 7);
  const f = applyView(img, [h, w], 'flip');
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      for (let c = 0; c < 3; c++) assert.equal(f[(y * w + x) * 3 + c], img[(y * w + (w - 1 - x)) * 3 + c]);
    }
  }
  assert.notDeepEqual(f, img);
  assert.deepEqual(applyView(f, [h, w], 'flip'), img);
});

test('orig is the identity and sizes are checked', () => {
  const img = randomImage(2, 2, 1);
  assert.equal(applyView(img, [2, 2], 'orig'), img);
  assert.throws(() => applyView(img, [3, 2], 'flip'), /12 values for a 3x2x3 image/);
});

test('--augment values map to extra views; unknown values are one-line errors', () => {
  assert.deepEqual(augmentViews('flip'), ['flip']);
  assert.deepEqual(augmentViews('none'), []);
  assert.equal(parseAugment(undefined), 'flip');
  assert.throws(() => parseAugment('crop'), {
    name: 'UsageError',
    message: /^augment must be flip or none \(got 'crop'\)/,
  });
});

test('mirrorImages mirrors each image of a float batch, as applyView does one image', () => {
  const [h, w] = [2, 3];
  const a = randomImage(h, w, 3);
  const b = randomImage(h, w, 4);
  const batch = new Float32Array(2 * h * w * 3);
  batch.set(a);
  batch.set(b, a.length);
  const m = mirrorImages(batch, 2, [h, w]);
  assert.ok(m instanceof Float32Array);
  assert.deepEqual(Array.from(m.subarray(0, a.length)), Array.from(applyView(a, [h, w], 'flip')));
  assert.deepEqual(Array.from(m.subarray(a.length)), Array.from(applyView(b, [h, w], 'flip')));
  assert.throws(() => mirrorImages(batch, 3, [h, w]), /36 values for 3 2x3x3 images/);
});
