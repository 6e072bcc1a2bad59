import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import sharp from 'sharp';
import { confusedPairs, mistakesOf, type ReportData, trainCommandLine } from './data.ts';
import { renderReport, reportSections } from './render.ts';

const classes = ['ants', 'bees'];

function minimal(over: Partial<ReportData> = {}): ReportData {
  return {
    version: 1,
    kind: 'train',
    title: 'a <test> & report',
    createdAt: '2026-01-01T00:00:00.000Z',
    summary: {
      data: { train: '/d/train' },
      classes,
      counts: [{ split: 'training', perClass: [3, 4] }],
      skipped: [{ file: '/d/train/ants/bad.jpg', reason: 'not an image' }],
      base: 'b',
      cut: 'c',
      mode: 'feature',
      engine: 'wasm',
      head: 'softmax',
      settings: { seed: 42 },
      seconds: { total: 1 },
    },
    ...over,
  };
}

test('mistakes: wrong top class only, most confident first; confused pairs: off-diagonal, largest first', () => {
  const m = mistakesOf(
    [
      { file: 'a', label: 'ants', probabilities: [0.9, 0.1] },
      { file: 'b', label: 'ants', probabilities: [0.4, 0.6] },
      { file: 'c', label: 'bees', probabilities: [0.95, 0.05] },
      { file: 'd', label: 'bees', probabilities: [0.2, 0.8] },
    ],
    classes,
  );
  assert.deepEqual(
    m.map((x) => [x.file, x.predicted]),
    [
      ['c', 'ants'],
      ['b', 'bees'],
    ],
  );
  assert.deepEqual(
    confusedPairs(
      [
        [5, 1, 0],
        [4, 2, 0],
        [0, 0, 3],
      ],
      ['x', 'y', 'z'],
    ),
    [
      { actual: 'y', predicted: 'x', count: 4 },
      { actual: 'x', predicted: 'y', count: 1 },
    ],
  );
});

test('the command line rebuilt from options quotes what a shell would split', () => {
  assert.equal(
    trainCommandLine({ data: 'my photos/', val: 'v', mode: 'auto', epochs: 5, reinit: false, out: "it's" }),
    `graft train 'my photos/' --val v --mode auto --epochs 5 --out 'it'\\''s'`,
  );
});

test('a section appears only with content; text is escaped; no external reference', async () => {
  const bare = await reportSections(minimal());
  assert.deepEqual(
    bare.map((s) => s.id),
    ['summary'],
  );
  const dir = mkdtempSync(path.join(os.tmpdir(), 'graft-report-unit-'));
  const img = path.join(dir, 'ant.png');
  writeFileSync(
    img,
    await sharp({ create: { width: 300, height: 200, channels: 3, background: '#c84' } })
      .png()
      .toBuffer(),
  );
  const full = minimal({
    accuracy: {
      split: 'validation',
      correct: 7,
      total: 8,
      value: 0.875,
      low: 0.529,
      high: 0.978,
      usedForSelection: false,
    },
    selection: {
      method: '5-fold cross-validation on the training images',
      chose: ['epochs'],
      score: 0.8,
      sd: 0.1,
      usedValidation: false,
    },
    history: [
      { stage: 'head', epoch: 1, loss: 0.7, accuracy: 0.5, valLoss: 0.69, valAccuracy: 0.5, seconds: 0 },
      { stage: 'head', epoch: 2, loss: 0.5, accuracy: 0.8, valLoss: 0.6, valAccuracy: 0.75, seconds: 0 },
    ],
    stages: [{ stage: 'head', epochs: 2, bestEpoch: 2, lr: 0.001, seconds: 0.1 }],
    sweep: {
      method: '5-fold',
      rows: [
        { cut: 'c', depth: 0, featureSize: 4, score: 0.8, sd: 0.1, seconds: 1, chosen: true },
        { cut: 'd', depth: 1, featureSize: 8, score: 0.7, sd: 0.1, seconds: 1 },
      ],
    },
    confusion: [
      [3, 1],
      [0, 4],
    ],
    perClass: [
      { label: 'ants', precision: 1, recall: 0.75, f1: 0.857, support: 4 },
      { label: 'bees', precision: 0.8, recall: 1, f1: 0.889, support: 4 },
    ],
    confusedPairs: [{ actual: 'ants', predicted: 'bees', count: 1 }],
    mistakes: [{ file: img, label: 'ants', predicted: 'bees', probability: 0.7 }],
    labelIssues: [],
    duplicates: [
      {
        a: img,
        b: path.join(dir, 'gone.jpg'),
        similarity: 0.99,
        splits: ['train', 'val'],
        labels: ['ants', 'bees'],
        leak: true,
        conflict: true,
      },
    ],
    duplicateThreshold: 0.95,
    duplicateImages: 8,
  });
  const sections = await reportSections(full);
  assert.deepEqual(
    sections.map((s) => s.id),
    ['summary', 'curves', 'cut-search', 'confusion', 'mistakes', 'label-issues', 'duplicates'],
  );
  const byId = Object.fromEntries(sections.map((s) => [s.id, s.html]));
  assert.match(byId.summary, /87\.5%.*52\.9% – 97\.8%.*chose nothing/s);
  assert.match(byId.summary, /1 file skipped/);
  assert.match(byId['label-issues'], /None found/);
  assert.match(byId.duplicates, /1 leak, 1 conflict/);
  assert.match(byId.duplicates, /image not readable/, 'a vanished file is said, not fatal');
  for (const id of ['curves', 'cut-search', 'confusion']) assert.match(byId[id], /<svg[^>]*>.*<path/s, `${id} chart`);
  const page = await renderReport(full);
  assert.match(page, /<title>a &lt;test&gt; &amp; report<\/title>/);
  assert.equal((page.match(/src="data:image\/jpeg;base64,/g) ?? []).length, 2);
  assert.doesNotMatch(page, /(src|href)="(?!data:|#)/);
  assert.doesNotMatch(page, /<script/);
  assert.match(byId.curves, /number of epochs was chosen by cross-validation/);
  // The logistic head chose an L2 strength, not epochs: the curves note says so.
  const logistic = await reportSections({
    ...full,
    selection: { ...full.selection!, chose: ['L2 strength'] },
    history: [full.history![0]],
    stages: [{ stage: 'head', epochs: 1, bestEpoch: 1, lr: 0.001, seconds: 0.1 }],
  });
  const curves = logistic.find((s) => s.id === 'curves')?.html ?? '';
  assert.match(curves, /logistic head has no epochs.*L2 strength chosen by cross-validation/s);
  assert.doesNotMatch(curves, /number of epochs was chosen/);
});
