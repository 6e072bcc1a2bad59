import assert from 'node:assert/strict';
import { test } from 'node:test';
import { concatRows, imageFolds, selectRows, stratifiedFolds } from './folds.ts';

test('folds are stratified: each fold holds each class in proportion', () => {
  const y = Int32Array.from([...Array(50).fill(0), ...Array(20).fill(1), ...Array(7).fill(2)]);
  const folds = stratifiedFolds(y, 5, 1);
  for (let f = 0; f < 5; f++) {
    const counts = [0, 1, 2].map((c) => [...y.keys()].filter((i) => y[i] === c && folds[i] === f).length);
    assert.equal(counts[0], 10, `fold ${f} class 0`);
    assert.equal(counts[1], 4, `fold ${f} class 1`);
    assert.ok(counts[2] >= 1 && counts[2] <= 2, `fold ${f} class 2: ${counts[2]}`);
  }
});

test('folds are deterministic for a seed and change with it', () => {
  const y = Int32Array.from({ length: 60 }, (_, i) => i % 3);
  assert.deepEqual(stratifiedFolds(y, 5, 9), stratifiedFolds(y, 5, 9));
  assert.notDeepEqual(stratifiedFolds(y, 5, 9), stratifiedFolds(y, 5, 10));
});

test('k below 2 is refused; selectRows picks rows', () => {
  assert.throws(() => stratifiedFolds(new Int32Array(4), 1, 0), /k >= 2/);
  assert.deepEqual(selectRows(Float32Array.from([1, 2, 3, 4, 5, 6]), 2, [2, 0]), Float32Array.from([5, 6, 1, 2]));
});

test('concatRows joins sets lying one after another in one buffer without copying, and copies others', () => {
  const buf = Float32Array.from({ length: 12 }, (_, i) => i);
  const a = { x: buf.subarray(0, 4), n: 2, y: Int32Array.from([0, 1]) };
  const b = { x: buf.subarray(4, 10), n: 3, y: Int32Array.from([1, 1, 0]) };
  const joined = concatRows([a, b], 2);
  assert.equal(joined.x.buffer, buf.buffer, 'no copy');
  assert.deepEqual(Array.from(joined.x), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  assert.deepEqual(Array.from(joined.y), [0, 1, 1, 1, 0]);
  const apart = concatRows([b, a], 2);
  assert.notEqual(apart.x.buffer, buf.buffer);
  assert.deepEqual(Array.from(apart.x), [4, 5, 6, 7, 8, 9, 0, 1, 2, 3]);
});

test('imageFolds: images stratified as stratifiedFolds assigns them, every view in its image’s fold', () => {
  // 30 images (rows 0..29), then two views of each (rows 30..89).
  const y = Int32Array.from({ length: 90 }, (_, r) => (r % 30) % 3);
  const source = Int32Array.from({ length: 90 }, (_, r) => r % 30);
  const fold = imageFolds(y, source, 5, 4);
  assert.deepEqual(fold.subarray(0, 30), stratifiedFolds(y.subarray(0, 30), 5, 4));
  for (let r = 30; r < 90; r++) assert.equal(fold[r], fold[r % 30], `view row ${r}`);
});
