/**
 * The activation cache cannot lie: damaged entries are caught on read, reported once and recomputed; two processes
 * sharing one cache both finish with identical results; `graft cache` lists, prunes and clears.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { before, test } from 'node:test';
import { train } from '../src/index.ts';
import { runCli, tmpDir, writeColourDataset, writeTinyBase } from './helpers.ts';

let base: string;
let data: string;

before(async () => {
  const dir = tmpDir();
  base = await writeTinyBase(path.join(dir, 'base'));
  data = await writeColourDataset(path.join(dir, 'data'), ['red', 'green', 'blue'], 10);
});

/** Every file of the activation store except the per-base description. */
function entries(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name !== 'base.json') out.push(p);
    }
  };
  walk(dir);
  return out.sort();
}

test('entries overwritten in place with same-size zeros or garbage are reported once and recomputed, never served', async () => {
  const cacheDir = path.join(tmpDir(), 'cache');
  const opts = { data, base, cut: 'top_relu', cacheDir, engine: 'wasm' as const, epochs: 15, valSplit: 0.3 };
  const first = await train(opts);
  const files = entries(cacheDir);
  assert.equal(files.length, first.cache.misses);
  files.forEach((f, i) => {
    const size = statSync(f).size;
    const bytes = i % 2 ? Buffer.from(Array.from({ length: size }, (_, k) => (k * 7 + i) % 256)) : Buffer.alloc(size);
    writeFileSync(f, bytes);
  });
  const second = await train(opts);
  assert.equal(second.cache.hits, 0, 'no damaged entry is a hit');
  assert.equal(second.cache.damaged.length, files.length, 'each damaged entry is reported');
  assert.deepEqual(
    second.history.map((h) => h.loss),
    first.history.map((h) => h.loss),
    'recomputed activations train exactly as the first run',
  );
  assert.equal(second.valAccuracy, first.valAccuracy);
  const third = await train(opts);
  assert.deepEqual(third.cache, { hits: first.cache.misses, misses: 0, damaged: [] }, 'reported once, then whole');
});

/** Runs the CLI in the background, resolving with its exit status and output. */
function cli(args: string[], env: Record<string, string>): Promise<{ status: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], {
      env: { ...process.env, ...env },
    });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => {
      stdout += d;
    });
    p.stderr.on('data', (d) => {
      stderr += d;
    });
    p.on('close', (status) => resolve({ status: status ?? -1, stdout, stderr }));
  });
}

test('two processes training at once on one cache both succeed with identical models', async () => {
  const dir = tmpDir();
  const env = { GRAFT_CACHE_DIR: path.join(dir, 'cache') };
  const args = (out: string) => [
    'train',
    data,
    '--base',
    base,
    '--cut',
    'top_relu',
    '--engine',
    'wasm',
    '--epochs',
    '10',
    '--out',
    path.join(dir, out),
    '--json',
  ];
  const [a, b] = await Promise.all([cli(args('a'), env), cli(args('b'), env)]);
  assert.equal(a.status, 0, a.stderr);
  assert.equal(b.status, 0, b.stderr);
  const ja = JSON.parse(a.stdout.trim().split('\n').pop()!);
  const jb = JSON.parse(b.stdout.trim().split('\n').pop()!);
  assert.equal(ja.valAccuracy, jb.valAccuracy);
  assert.deepEqual(
    readFileSync(path.join(dir, 'a', 'weights.bin')),
    readFileSync(path.join(dir, 'b', 'weights.bin')),
    'bit-identical weights',
  );
  // the store holds one whole entry per image and view, and no temporaries
  const files = entries(path.join(dir, 'cache', 'activations'));
  assert.ok(files.every((f) => f.endsWith('.act')));
  assert.equal(files.length, ja.cache.hits + ja.cache.misses);
});

test('graft cache lists entries per base and cut, prunes by size and clears', async () => {
  const dir = tmpDir();
  const env = { GRAFT_CACHE_DIR: path.join(dir, 'cache') };
  const r = runCli(
    ['train', data, '--base', base, '--cut', 'top_relu', '--epochs', '3', '--engine', 'wasm', '--json'],
    env,
  );
  assert.equal(r.status, 0, r.stderr);
  const stored = 30 + (r.json!.trainImages as number); // every image, and the mirrored view of each training image
  const list = runCli(['cache', '--json'], env);
  assert.equal(list.status, 0, list.stderr);
  const usage = list.json!.activations as { entries: number; bytes: number; bases: { cuts: { cut: string }[] }[] };
  assert.equal(usage.entries, stored);
  assert.deepEqual(
    usage.bases[0].cuts.map((c) => c.cut),
    ['top_relu'],
  );
  const human = runCli(['cache'], env);
  assert.match(human.stdout, new RegExp(`top_relu\\s+${stored} entries`));
  const pruned = runCli(['cache', 'prune', '--max-size', `${Math.floor(usage.bytes / 2)}B`, '--json'], env);
  assert.equal(pruned.status, 0, pruned.stderr);
  assert.ok((pruned.json!.remaining as { bytes: number }).bytes <= usage.bytes / 2);
  assert.equal(runCli(['cache', 'prune', '--older-than', 'soon'], env).status, 1);
  const cleared = runCli(['cache', 'clear', '--json'], env);
  assert.equal(cleared.status, 0, cleared.stderr);
  assert.equal((runCli(['cache', '--json'], env).json!.activations as { entries: number }).entries, 0);
});
