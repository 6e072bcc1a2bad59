import assert from 'node:assert/strict';
import { test } from 'node:test';
import { findLabelIssues } from './label-issues.ts';

test('a confidently contradicted label is an issue; an uncertain one or a correct one is not', () => {
  // Thresholds: class 0 mean p0 over rows labelled 0 = (0.9 + 0.8 + 0.1 + 0.55) / 4 = 0.5875;
  // class 1 mean p1 over rows labelled 1 = (0.9 + 0.7 + 0.3) / 3 = 0.633.
  const p = Float32Array.from(
    [
      [0.9, 0.1], // 0: right
      [0.8, 0.2], // 1: right
      [0.1, 0.9], // 2: labelled 0, the model is as sure of 1 as of its own 1s: issue (suggest 1)
      [0.55, 0.45], // 3: right, unsure
      [0.1, 0.9], // 4: labelled 1, right
      [0.3, 0.7], // 5: labelled 1, right
      [0.7, 0.3], // 6: labelled 1, predicted 0 at 0.7 >= 0.5875: issue, weaker than row 2
    ].flat(),
  );
  const y = Int32Array.from([0, 0, 0, 0, 1, 1, 1]);
  const issues = findLabelIssues(p, y, 2);
  assert.deepEqual(
    issues.map((i) => [i.index, i.given, i.suggested]),
    [
      [2, 0, 1],
      [6, 1, 0],
    ],
  );
  assert.ok(Math.abs(issues[0].confidence - 0.9) < 1e-6 && Math.abs(issues[0].givenProbability - 0.1) < 1e-6);
  // Predicted otherwise but below that class's typical confidence: not reported.
  const unsure = Float32Array.from([0.9, 0.1, 0.9, 0.1, 0.45, 0.55, 0.05, 0.95, 0.1, 0.9]);
  assert.deepEqual(findLabelIssues(unsure, Int32Array.from([0, 0, 0, 1, 1]), 2), []);
});

test('three classes: the suggestion is the confident other class; refuses mismatched sizes', () => {
  const p = Float32Array.from([0.8, 0.1, 0.1, 0.1, 0.8, 0.1, 0.1, 0.1, 0.8, 0.05, 0.05, 0.9]);
  const issues = findLabelIssues(p, Int32Array.from([0, 1, 2, 0]), 3);
  assert.deepEqual(
    issues.map((i) => [i.index, i.suggested]),
    [[3, 2]],
  );
  assert.throws(() => findLabelIssues(new Float32Array(5), Int32Array.from([0, 1]), 2), /5 probabilities for 2 rows/);
});
