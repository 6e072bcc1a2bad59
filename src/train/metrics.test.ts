import assert from 'node:assert/strict';
import { test } from 'node:test';
import { accuracy, argmaxRows, confusionMatrix, logLoss, perClassMetrics, wilsonInterval } from './metrics.ts';

test('argmaxRows, accuracy and logLoss on hand-made probabilities', () => {
  const p = Float32Array.from([0.7, 0.2, 0.1, 0.1, 0.1, 0.8, 0.3, 0.6, 0.1, 0.5, 0.5, 0]);
  assert.deepEqual(Array.from(argmaxRows(p, 4, 3)), [0, 2, 1, 0]);
  const y = Int32Array.from([0, 2, 0, 1]);
  assert.equal(accuracy(p, y, 3), 0.5);
  const expected = -(Math.log(0.7) + Math.log(0.8) + Math.log(0.3) + Math.log(0.5)) / 4;
  assert.ok(Math.abs(logLoss(p, y, 3) - expected) < 1e-6);
  // A zero probability on the true class stays finite.
  assert.ok(Number.isFinite(logLoss(Float32Array.from([1, 0]), Int32Array.from([1]), 2)));
});

test('confusion matrix is [true][pred] and per-class precision/recall/f1 follow from it', () => {
  const y = Int32Array.from([0, 0, 0, 0, 1, 1, 2, 2, 2]);
  const pred = Int32Array.from([0, 0, 0, 1, 1, 2, 2, 2, 0]);
  const m = confusionMatrix(pred, y, 3);
  assert.deepEqual(m, [
    [3, 1, 0],
    [0, 1, 1],
    [1, 0, 2],
  ]);
  const r = perClassMetrics(m, ['cat', 'dog', 'eel']);
  assert.deepEqual(
    r.map((c) => c.label),
    ['cat', 'dog', 'eel'],
  );
  const close = (a: number, b: number) => assert.ok(Math.abs(a - b) < 1e-12, `${a} != ${b}`);
  close(r[0].precision, 3 / 4);
  close(r[0].recall, 3 / 4);
  close(r[1].precision, 1 / 2);
  close(r[1].recall, 1 / 2);
  close(r[2].precision, 2 / 3);
  close(r[2].recall, 2 / 3);
  close(r[2].f1, 2 / 3);
  assert.deepEqual(
    r.map((c) => c.support),
    [4, 2, 3],
  );
  // A class that is never predicted and never present scores 0, not NaN.
  const z = perClassMetrics(confusionMatrix(Int32Array.from([0, 0]), Int32Array.from([0, 1]), 3), ['a', 'b', 'c']);
  assert.equal(z[1].precision, 0);
  assert.equal(z[1].recall, 0);
  assert.equal(z[2].f1, 0);
  close(z[0].precision, 0.5);
  close(z[0].f1, 2 / 3);
});

test('Wilson interval: known values, bounds inside [0, 1], narrower with more data', () => {
  const close = (a: number, b: number) => assert.ok(Math.abs(a - b) < 5e-4, `${a} != ${b}`);
  // 140 of 153 (hymenoptera val at 0.915): 0.860 to 0.950, Wilson's formula worked out separately in float64.
  const a = wilsonInterval(140, 153);
  close(a.low, 0.86);
  close(a.high, 0.9496);
  // 0 of 10: the lower bound is 0 and the upper one is not (1.96² / (10 + 1.96²) = 0.2775).
  const b = wilsonInterval(0, 10);
  assert.equal(b.low, 0);
  close(b.high, 0.2775);
  const c = wilsonInterval(10, 10);
  close(c.low, 0.7225);
  assert.equal(c.high, 1);
  const big = wilsonInterval(1400, 1530);
  assert.ok(big.high - big.low < (a.high - a.low) / 3);
  assert.deepEqual(wilsonInterval(0, 0), { low: 0, high: 1 });
});
