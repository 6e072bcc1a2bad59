import assert from 'node:assert/strict';
import path from 'node:path';
import { before, test } from 'node:test';
import { loadLayersBase, train } from '../src/index.ts';
import { sweepCandidates } from '../src/workflows/autocut.ts';
import { runCli, tmpDir, writeColourDataset, writeTinyBase } from './helpers.ts';

let base: string;
let data: string;

before(async () => {
  const dir = tmpDir();
  base = await writeTinyBase(path.join(dir, 'base'));
  data = await writeColourDataset(path.join(dir, 'data'), ['red', 'green'], 12);
});

test('--mode auto scores every candidate from ONE trunk pass, picks one, and exports it', async () => {
  const cacheDir = path.join(tmpDir(), 'cache');
  const b = await loadLayersBase(base);
  const cuts = sweepCandidates(b).map((c) => c.cut);
  assert.deepEqual(cuts, ['stem_relu', 'block_1_add', 'top_relu']);
  const single = await train({ data, base: b, cacheDir: path.join(tmpDir(), 'c2'), engine: 'wasm', epochs: 5 });
  const r = await train({
    data,
    base: b,
    mode: 'auto',
    cacheDir,
    engine: 'wasm',
    epochs: 20,
    out: path.join(tmpDir(), 'm'),
  });
  assert.equal(r.mode, 'auto');
  assert.deepEqual(
    r.sweep!.map((s) => s.cut),
    cuts,
  );
  assert.equal(r.sweep!.filter((s) => s.chosen).length, 1);
  assert.equal(r.sweep!.find((s) => s.chosen)!.cut, r.cut);
  // cuts are always scored by 5-fold cross-validation on the training images: 5 heads per cut
  assert.equal(r.sweepMethod, '5-fold');
  for (const row of r.sweep!) {
    assert.ok(row.score >= 0 && row.score <= 1);
    assert.ok(row.sd >= 0);
  }
  // the activations of all three cuts came from as many trunk calls as a single cut needs; one activation per image
  // plus one per training image's flipped view (the default augmentation)
  assert.equal(r.cache.misses, 24 + r.trainImages);
  assert.equal(r.trunkCalls, single.trunkCalls);
  b.model.dispose();
});

test('ties go to the higher cut; the sweep is in --json and in the model metadata', async () => {
  const dir = tmpDir();
  const out = path.join(dir, 'model');
  const r = runCli(
    ['train', data, '--base', base, '--mode', 'auto', '--engine', 'wasm', '--epochs', '30', '--out', out, '--json'],
    {
      GRAFT_CACHE_DIR: path.join(dir, 'cache'),
    },
  );
  assert.equal(r.status, 0, r.stderr);
  const sweep = r.json?.sweep as { cut: string; depth: number; score: number; chosen?: boolean }[];
  assert.equal(sweep.length, 3);
  const best = Math.max(...sweep.map((s) => s.score));
  const chosen = sweep.find((s) => s.chosen)!;
  // colour classes are trivially separable at every cut: all tie at the best score, and the top cut must win
  const tied = sweep.filter((s) => s.score >= best - 0.005);
  assert.equal(chosen.depth, Math.min(...tied.map((s) => s.depth)));
  const meta = JSON.parse((await import('node:fs')).readFileSync(path.join(out, 'graft.json'), 'utf8'));
  assert.equal(meta.sweep.rows.length, 3);
  assert.equal(meta.cut, chosen.cut);
  const shown = runCli(['inspect', out]);
  assert.equal(shown.status, 0, shown.stderr);
  assert.match(shown.stdout, /cut search/);
  assert.match(shown.stdout, new RegExp(chosen.cut));
});
