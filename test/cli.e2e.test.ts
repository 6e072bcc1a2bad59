/**
 * The command line as users meet it: bad input gives one line, a non-zero exit and no output folder; bad files in a
 * data set are skipped and listed; --json ends stdout with one object.
 */
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { before, test } from 'node:test';
import sharp from 'sharp';
import { thumbnail } from '../src/report/thumbnails.ts';
import { runCli, tmpDir, writeColourDataset, writeTinyBase } from './helpers.ts';

let base: string;
let data: string;
let env: Record<string, string>;

before(async () => {
  const dir = tmpDir();
  base = await writeTinyBase(path.join(dir, 'base'));
  data = await writeColourDataset(path.join(dir, 'data'), ['cats', 'dogs'], 8);
  env = { GRAFT_CACHE_DIR: path.join(dir, 'cache') };
});

function assertOneLineError(r: ReturnType<typeof runCli>, mentions: string) {
  assert.notEqual(r.status, 0, 'exit status must be non-zero');
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 1, `expected one line on stderr, got:\n${r.stderr}`);
  assert.match(lines[0], /error/);
  assert.ok(lines[0].includes(mentions), `'${lines[0]}' should mention ${mentions}`);
  assert.ok(!/\s+at .*\(.*:\d+:\d+\)/.test(r.stderr), 'no stack trace without --verbose');
}

test('bad files in a data set are skipped and listed, and training goes on', async () => {
  const dir = tmpDir();
  const bad = await writeColourDataset(path.join(dir, 'data'), ['cats', 'dogs'], 8);
  writeFileSync(path.join(bad, 'cats', 'empty.jpg'), '');
  writeFileSync(path.join(bad, 'cats', 'notes.jpg'), 'this is text, not a JPEG\n');
  const jpeg = await sharp({ create: { width: 64, height: 64, channels: 3, background: { r: 200, g: 10, b: 10 } } })
    .jpeg()
    .toBuffer();
  writeFileSync(path.join(bad, 'dogs', 'truncated.jpg'), jpeg.subarray(0, Math.floor(jpeg.length / 2)));
  writeFileSync(
    path.join(bad, 'dogs', 'noise.png'),
    Buffer.from(Array.from({ length: 3000 }, (_, i) => (i * 131 + 7) % 256)),
  );
  const out = path.join(dir, 'model');
  const r = runCli(
    ['train', bad, '--base', base, '--cut', 'top_relu', '--engine', 'wasm', '--epochs', '5', '--out', out, '--json'],
    env,
  );
  assert.equal(r.status, 0, r.stderr);
  const skipped = (r.json!.skipped as { file: string; reason: string }[]).map((s) => path.basename(s.file)).sort();
  assert.deepEqual(skipped, ['empty.jpg', 'noise.png', 'notes.jpg', 'truncated.jpg']);
  for (const name of skipped) assert.ok(r.stderr.includes(name), `${name} listed for humans too`);
  assert.equal((r.json?.trainImages as number) + (r.json?.valImages as number), 16);
  assert.ok(existsSync(path.join(out, 'model.json')));
});

test('a missing data folder is a one-line error and writes nothing', () => {
  const out = path.join(tmpDir(), 'model');
  const r = runCli(['train', '/nonexistent/data', '--base', base, '--out', out], env);
  assertOneLineError(r, '/nonexistent/data');
  assert.equal(existsSync(out), false);
});

test('a data set with one class is a one-line error and writes nothing', async () => {
  const dir = tmpDir();
  const one = await writeColourDataset(path.join(dir, 'one'), ['cats'], 3);
  const out = path.join(dir, 'model');
  const r = runCli(['train', one, '--base', base, '--out', out], env);
  assertOneLineError(r, one);
  assert.equal(existsSync(out), false);
});

test('a class whose every file is unusable is a one-line error', async () => {
  const dir = tmpDir();
  const d = await writeColourDataset(path.join(dir, 'd'), ['cats', 'dogs'], 3);
  for (const f of ['dogs-0.png', 'dogs-1.png', 'dogs-2.png']) writeFileSync(path.join(d, 'dogs', f), 'nope');
  const out = path.join(dir, 'model');
  const r = runCli(['train', d, '--base', base, '--engine', 'wasm', '--out', out], env);
  assertOneLineError(r, 'dogs');
  assert.equal(existsSync(out), false);
});

test('a base model path that does not exist is a one-line error and writes nothing', () => {
  const out = path.join(tmpDir(), 'model');
  const r = runCli(['train', data, '--base', '/nonexistent/model.json', '--out', out], env);
  assertOneLineError(r, '/nonexistent/model.json');
  assert.equal(existsSync(out), false);
});

test('predict and evaluate on a model folder that does not exist are one-line errors', () => {
  assertOneLineError(
    runCli(['predict', '/nonexistent/model', path.join(data, 'cats', 'cats-0.png')], env),
    '/nonexistent/model',
  );
  assertOneLineError(runCli(['evaluate', '/nonexistent/model', data], env), '/nonexistent/model');
});

test('--verbose adds the stack trace', () => {
  const r = runCli(['train', '/nonexistent/data', '--base', base, '--verbose'], env);
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /\s+at /);
});

test('train → predict → evaluate through the CLI with --json', async () => {
  const dir = tmpDir();
  const out = path.join(dir, 'model');
  const t = runCli(
    ['train', data, '--base', base, '--engine', 'wasm', '--val-split', '0.25', '--out', out, '--json'],
    env,
  );
  assert.equal(t.status, 0, t.stderr);
  for (const key of [
    'valAccuracy',
    'trainImages',
    'valImages',
    'classes',
    'base',
    'cut',
    'seconds',
    'cache',
    'skipped',
  ]) {
    assert.ok(key in (t.json ?? {}), `train --json has ${key}`);
  }
  const img = path.join(dir, 'a cat.png');
  copyFileSync(path.join(data, 'cats', 'cats-3.png'), img);
  const p = runCli(['predict', out, img, '--json'], env);
  assert.equal(p.status, 0, p.stderr);
  const preds = p.json?.predictions as { file: string; top: { label: string }[] }[];
  assert.equal(preds.length, 1);
  assert.equal(preds[0].top[0].label, 'cats');
  const e = runCli(['evaluate', out, data, '--json'], env);
  assert.equal(e.status, 0, e.stderr);
  assert.equal(typeof e.json?.accuracy, 'number');
  assert.deepEqual(
    (e.json!.confusion as number[][]).flat().reduce((a, b) => a + b, 0),
    16,
  );
  // human output of evaluate names the classes
  const human = runCli(['evaluate', out, data], env);
  assert.match(human.stdout, /precision/);
  assert.match(human.stdout, /cats/);
  // the model folder holds exactly one model and its metadata
  assert.deepEqual(JSON.parse(readFileSync(path.join(out, 'graft.json'), 'utf8')).labels, ['cats', 'dogs']);
});

test('inspect lists candidate cut points from the graph, excluding layers inside the residual block', () => {
  const r = runCli(['inspect', base, '--json'], env);
  assert.equal(r.status, 0, r.stderr);
  const names = (r.json!.candidates as { name: string }[]).map((c) => c.name);
  assert.ok(names.includes('stem_relu'));
  assert.ok(names.includes('block_1_add'));
  assert.ok(names.includes('top_relu'));
  assert.ok(!names.includes('block_1_conv'), 'a layer inside the residual block is not a cut point');
  assert.ok(!names.includes('block_1_relu'));
  assert.equal(r.json?.defaultCut, 'top_relu');
});

const thumbs = (json: Record<string, unknown> | undefined) =>
  (json?.thumbnails as { files: number } | undefined)?.files;

test('graft cache counts the report thumbnails it keeps, and clear removes them', async () => {
  const cacheEnv = { GRAFT_CACHE_DIR: path.join(tmpDir(), 'cache') };
  await thumbnail(path.join(data, 'cats', 'cats-3.png'), {
    cacheDir: path.join(cacheEnv.GRAFT_CACHE_DIR, 'thumbnails'),
  });
  const before = runCli(['cache', '--json'], cacheEnv);
  assert.equal(before.status, 0, before.stderr);
  assert.equal(thumbs(before.json), 1);
  assert.match(runCli(['cache'], cacheEnv).stdout, /report thumbnails: 1,/);
  const cleared = runCli(['cache', 'clear', '--json'], cacheEnv);
  assert.equal(thumbs(cleared.json), 1);
  assert.equal(thumbs(runCli(['cache', '--json'], cacheEnv).json), 0);
});
