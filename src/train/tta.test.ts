import assert from 'node:assert/strict';
import { test } from 'node:test';
import { judgeTta, parseTta } from './tta.ts';

test('judgeTta: an image alone against its mean with its views', () => {
  // Two images, both labelled 0, and one view of each; two classes.
  const y = Int32Array.of(0, 0);
  // Image 1 is wrong alone (0.4) and right with its view (mean 0.6); image 0 right either way.
  const t = judgeTta(Float32Array.of(0.9, 0.1, 0.4, 0.6), [Float32Array.of(0.7, 0.3, 0.8, 0.2)], y, 2, 'test');
  assert.equal(t.images, 2);
  assert.equal(t.single.accuracy, 0.5);
  assert.equal(t.flip.accuracy, 1);
  assert.ok(Math.abs(t.single.logLoss - -(Math.log(0.9) + Math.log(0.4)) / 2) < 1e-6);
  assert.ok(Math.abs(t.flip.logLoss - -(Math.log(0.8) + Math.log(0.6)) / 2) < 1e-6);
  assert.ok(t.helps);
  // Views that only blur confident right answers: lower accuracy never counts as help, even with a lower log loss.
  const worse = judgeTta(Float32Array.of(0.9, 0.1, 0.6, 0.4), [Float32Array.of(0.7, 0.3, 0.2, 0.8)], y, 2, 'test');
  assert.equal(worse.flip.accuracy, 0.5);
  assert.equal(worse.helps, false);
});

test('parseTta', () => {
  assert.equal(parseTta(undefined), 'none');
  assert.equal(parseTta(undefined, true), 'auto');
  assert.equal(parseTta('flip'), 'flip');
  assert.throws(() => parseTta('auto'), /tta must be flip or none \(got 'auto'\)/);
  assert.throws(() => parseTta('crop', true), /tta must be auto, flip or none/);
});
