/**
 * Ctrl-C and SIGTERM: `graft train` stops within a second or two in any phase, exits 128 + signal with one line,
 * leaves no model folder and no temporaries, keeps the activations it computed, and a rerun continues from them.
 * (kill -9 at random moments is scripts/kill-test.ts, run by .ci/run.)
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { before, test } from 'node:test';
import { train } from '../src/index.ts';
import { runCli, tmpDir, writeColourDataset, writeTinyBase } from './helpers.ts';

let base: string;
let data: string;

before(async () => {
  const dir = tmpDir();
  base = await writeTinyBase(path.join(dir, 'base'));
  data = await writeColourDataset(path.join(dir, 'data'), ['a', 'b'], 200, 64);
});

/** Files under `dir` (recursively) whose names satisfy `keep`. */
function files(dir: string, keep: (name: string) => boolean): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (keep(e.name)) out.push(p);
      if (e.isDirectory()) walk(p);
    }
  };
  if (existsSync(dir)) walk(dir);
  return out;
}
const isEntry = (n: string) => n.endsWith('.act');
const isTemp = (n: string) => /\.tmp|\.old|\.partial|\.lock/.test(n);

const LINE_TIMEOUT_MS = 180_000;

interface Run {
  child: ChildProcess;
  stderr: () => string;
  /** Resolves when a stderr line matches. */
  line: (re: RegExp) => Promise<void>;
  exit: Promise<{ code: number | null; at: number }>;
}

function start(args: string[], env: Record<string, string>): Run {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], {
    env: { ...process.env, ...env, GRAFT_PROGRESS: 'lines' },
  });
  let err = '';
  const waiters: { re: RegExp; resolve: () => void }[] = [];
  child.stderr!.on('data', (d) => {
    err += d;
    for (const w of waiters.filter((w) => w.re.test(err))) {
      waiters.splice(waiters.indexOf(w), 1);
      w.resolve();
    }
  });
  child.stdout!.resume();
  const exit = new Promise<{ code: number | null; at: number }>((resolve) =>
    child.on('close', (code) => resolve({ code, at: performance.now() })),
  );
  return {
    child,
    stderr: () => err,
    line: (re) =>
      re.test(err)
        ? Promise.resolve()
        : new Promise<void>((resolve, reject) => {
            // A run that never gets there (a hang, or a graft without this phase) fails instead of waiting forever.
            const timer = setTimeout(() => {
              child.kill('SIGKILL');
              reject(new Error(`no ${re} within ${LINE_TIMEOUT_MS / 1000} s:\n${err}`));
            }, LINE_TIMEOUT_MS);
            waiters.push({
              re,
              resolve: () => {
                clearTimeout(timer);
                resolve();
              },
            });
            exit.then(() => {
              clearTimeout(timer);
              reject(new Error(`exited before ${re}:\n${err}`));
            });
          }),
    exit,
  };
}

/** Stderr without the GRAFT_PROGRESS lines and colour codes: what a user reads. */
const message = (s: string) =>
  s
    // biome-ignore lint/suspicious/noControlCharactersInRegex: ANSI colour codes start with ESC
    .replace(/\x1b\[[0-9;]*m/g, '')
    .split('\n')
    .filter((l) => l && !l.startsWith('progress '))
    .join('\n');

test('SIGINT during extraction: exit 130 at once, no model, no temporaries; the rerun starts from the cached activations', async (t) => {
  const dir = tmpDir();
  const cache = path.join(dir, 'cache');
  const out = path.join(dir, 'model');
  const args = ['train', data, '--base', base, '--cut', 'top_relu', '--epochs', '3', '--out', out];
  const run = start(args, { GRAFT_CACHE_DIR: cache });
  await run.line(/progress extract/);
  // Wait for the first stored batch, then interrupt.
  let exited = false;
  run.exit.then(() => {
    exited = true;
  });
  const deadline = performance.now() + LINE_TIMEOUT_MS;
  while (files(cache, isEntry).length === 0 && !exited && performance.now() < deadline)
    await new Promise((r) => setTimeout(r, 10));
  assert.ok(!exited, `the run ended before storing its first batch:\n${run.stderr()}`);
  const sent = performance.now();
  run.child.kill('SIGINT');
  const { code, at } = await run.exit;
  const stopped = (at - sent) / 1000;
  t.diagnostic(`stopped ${stopped.toFixed(2)} s after SIGINT`);
  assert.equal(code, 130, run.stderr());
  assert.ok(stopped < 5, `stopped after ${stopped.toFixed(2)} s`);
  const msg = message(run.stderr());
  assert.equal(msg.split('\n').length, 1, msg);
  assert.match(msg, /interrupted \(SIGINT\)/);
  assert.ok(!existsSync(out), 'no model folder');
  assert.deepEqual(files(dir, isTemp), [], 'no temporaries');
  const kept = files(cache, isEntry).length;
  assert.ok(kept > 0 && kept < 710, `${kept} activations kept`);

  const again = runCli([...args, '--json'], { GRAFT_CACHE_DIR: cache });
  assert.equal(again.status, 0, again.stderr);
  const c = again.json!.cache as { hits: number; misses: number };
  assert.equal(c.hits, kept, 'every activation stored before the interrupt is used');
  assert.equal(c.hits + c.misses, 710);
  assert.ok(existsSync(path.join(out, 'weights.bin')));
});

test('SIGTERM during training: exit 143 at once, no model, no temporaries', async (t) => {
  const dir = tmpDir();
  const out = path.join(dir, 'model');
  const run = start(
    // An epoch-trained head, so training lasts until the signal (the default logistic head is done in a second).
    [
      'train',
      data,
      '--base',
      base,
      '--cut',
      'top_relu',
      '--head',
      'softmax',
      '--epochs',
      '100000',
      '--patience',
      '100000',
      '--out',
      out,
    ],
    { GRAFT_CACHE_DIR: path.join(dir, 'cache') },
  );
  await run.line(/progress train/);
  await new Promise((r) => setTimeout(r, 300));
  const sent = performance.now();
  run.child.kill('SIGTERM');
  const { code, at } = await run.exit;
  t.diagnostic(`stopped ${((at - sent) / 1000).toFixed(2)} s after SIGTERM`);
  assert.equal(code, 143, run.stderr());
  assert.ok((at - sent) / 1000 < 5, `stopped after ${((at - sent) / 1000).toFixed(2)} s`);
  assert.match(message(run.stderr()), /^graft: error: interrupted \(SIGTERM\)/);
  assert.ok(!existsSync(out));
  assert.deepEqual(files(dir, isTemp), []);
});

test('an abort during export leaves neither the model folder nor its temporary', async () => {
  const dir = tmpDir();
  const out = path.join(dir, 'model');
  const ac = new AbortController();
  await assert.rejects(
    train({
      data,
      base,
      cut: 'top_relu',
      epochs: 2,
      engine: 'wasm',
      cacheDir: path.join(dir, 'cache'),
      out,
      signal: ac.signal,
      onProgress: (p) => {
        if (p.phase === 'export') ac.abort(new Error('stop in export'));
      },
    }),
    /stop in export/,
  );
  assert.deepEqual(readdirSync(dir).sort(), ['cache']);
});
