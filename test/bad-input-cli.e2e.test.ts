/**
 * The bad-input suite, CLI part: what only the command line can show. Exit statuses, flag names in messages, one line
 * on stderr, `--json` ending stdout with one object on errors too, colours only on a terminal, and checks that finish
 * before any work (no cache folder appears). The library cases are in bad-input.e2e.test.ts.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { before, test } from 'node:test';
import { train as trainModel } from '../src/index.ts';
import { hasUnprintable } from '../src/util/errors.ts';
import { type CliResult, runCli, tmpDir, writeColourDataset, writeTinyBase } from './helpers.ts';
import { seededBytes } from './odd-inputs.ts';

const ESC = String.fromCharCode(27);

let dir: string;
let base: string;
let data: string;
let model: string;

before(async () => {
  dir = tmpDir('graft-bad-cli-');
  base = await writeTinyBase(path.join(dir, 'base'));
  data = await writeColourDataset(path.join(dir, 'data'), ['cats', 'dogs'], 4, 16);
  model = path.join(dir, 'model');
  await trainModel({ data, base, engine: 'wasm', epochs: 2, out: model, cacheDir: path.join(dir, 'cache') });
});

const train = (extra: string[]) => ['train', data, '--base', base, '--engine', 'wasm', '--epochs', '2', ...extra];

/** A fresh cache folder: if it still does not exist after a run, the run stopped before any work. */
const freshCache = () => ({ GRAFT_CACHE_DIR: path.join(tmpDir('graft-bad-cli-cache-'), 'cache') });

/** One line on stderr naming `mentions`, a non-zero exit, no stack trace; with --json, stdout ends with the error. */
function oneLineError(r: CliResult, mentions: RegExp): void {
  assert.notEqual(r.status, 0, 'non-zero exit');
  const lines = r.stderr.trimEnd().split('\n');
  assert.equal(lines.length, 1, `one line on stderr, got:\n${r.stderr}`);
  assert.match(lines[0], /^graft: error: /);
  assert.match(lines[0], mentions);
  assert.doesNotMatch(r.stderr, /\s+at .*:\d+:\d+/, 'no stack trace');
}

function jsonError(r: CliResult): { kind: string; code: string; message: string; option?: string } {
  assert.ok(r.json, `stdout ends with one JSON object; stdout was:\n${r.stdout}`);
  const e = r.json.error as { kind: string; code: string; message: string; option?: string };
  assert.ok(e && typeof e.message === 'string', `an "error" object: ${JSON.stringify(r.json)}`);
  return e;
}

test('--json: a usage error ends stdout with {"error": …} naming the flag (issue 15)', () => {
  const env = freshCache();
  const r = runCli(train(['--epochs', '0', '--json']), env);
  oneLineError(r, /--epochs must be a positive integer \(got 0\)/);
  assert.deepEqual(jsonError(r), {
    kind: 'usage',
    code: 'invalid-value',
    message: '--epochs must be a positive integer (got 0)',
    option: '--epochs',
  });
  assert.equal(existsSync(env.GRAFT_CACHE_DIR), false, 'failed before extraction: no cache folder');
});

test('--json: commander errors (unknown flag) end stdout with {"error": …} too', () => {
  const r = runCli(['train', data, '--no-such-flag', '--json']);
  assert.notEqual(r.status, 0);
  assert.match(jsonError(r).message, /unknown option '--no-such-flag'/);
});

test('--json: predict on a folder that is not a model ends stdout with {"error": …}', () => {
  const r = runCli(['predict', data, path.join(data, 'cats', 'cats-0.png'), '--json']);
  oneLineError(r, /not a graft model folder/);
  assert.equal(jsonError(r).kind, 'data');
});

test('--val-split "" is an error, not "no validation" (issue 15)', () => {
  const out = path.join(dir, 'empty-split');
  const r = runCli(train(['--val-split', '', '--out', out]), freshCache());
  oneLineError(r, /--val-split must be a number \(got ''\)/);
  assert.equal(existsSync(out), false);
});

test('a flag whose value is not a number is named, before any work', () => {
  // The ranges are the library's (bad-input.e2e.test.ts); the CLI parses the text and names the flag.
  const env = freshCache();
  const r = runCli(train(['--batch-size', 'abc']), env);
  oneLineError(r, /--batch-size must be a number \(got 'abc'\)/);
  assert.equal(existsSync(env.GRAFT_CACHE_DIR), false);
});

test('--out on an existing file fails before any work, with a one-line message (issue 15)', () => {
  const f = path.join(dir, 'not-a-folder');
  writeFileSync(f, 'keep');
  const env = freshCache();
  const r = runCli(train(['--out', f]), env);
  oneLineError(r, /--out '.*not-a-folder' is a file; give a folder for the model/);
  assert.equal(existsSync(env.GRAFT_CACHE_DIR), false);
  assert.equal(readFileSync(f, 'utf8'), 'keep');
});

test('--out and GRAFT_CACHE_DIR under /proc fail at once instead of spinning (issue 15)', () => {
  const a = spawnCli(train(['--out', '/proc/graft-cli-test/model']), freshCache());
  oneLineError(a, /--out '\/proc\/graft-cli-test\/model': cannot create \/proc\/graft-cli-test/);
  const b = spawnCli(train([]), { GRAFT_CACHE_DIR: '/proc/graft-cli-test/cache' });
  oneLineError(b, /the cache folder \(GRAFT_CACHE_DIR\) '\/proc\/graft-cli-test\/cache': cannot create/);
});

/** runCli with a time limit: a hang fails the test instead of stalling the suite. */
function spawnCli(args: string[], env: Record<string, string>): CliResult {
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], {
    encoding: 'utf8',
    env: { ...process.env, ...env },
    timeout: 60_000,
  });
  assert.equal(r.signal, null, 'finished (not killed after 60 s)');
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

test('predict on a model with a truncated weights.bin names the file (issue 15)', () => {
  const m = path.join(dir, 'truncated-model');
  cpSync(model, m, { recursive: true });
  const w = path.join(m, 'weights.bin');
  writeFileSync(w, readFileSync(w).subarray(0, 100));
  const r = runCli(['predict', m, path.join(data, 'cats', 'cats-0.png')]);
  oneLineError(r, /weights\.bin: is 100 bytes, graft\.json records \d+: truncated or replaced/);
});

test('predict on a model whose weights.bin is same-size garbage fails instead of printing NaN (issue 15)', () => {
  const m = path.join(dir, 'garbage-model');
  cpSync(model, m, { recursive: true });
  const w = path.join(m, 'weights.bin');
  writeFileSync(w, seededBytes(statSync(w).size, 3));
  const r = runCli(['predict', m, path.join(data, 'cats', 'cats-0.png'), '--json']);
  oneLineError(r, /weights\.bin: does not match the SHA-256 in graft\.json/);
  assert.doesNotMatch(r.stdout, /NaN|null/);
});

test('random bytes given as --base are named, not echoed (issue 15)', () => {
  const f = path.join(dir, 'random-base');
  writeFileSync(f, seededBytes(3000, 4));
  const r = runCli(train(['--base', f]), freshCache());
  oneLineError(r, /random-base: not a model: binary data/);
  assert.equal(hasUnprintable(r.stderr), false, 'no raw bytes on stderr');
});

test('a file name with a leading dash is predicted after --', () => {
  const f = path.join(dir, '-rf.png');
  cpSync(path.join(data, 'cats', 'cats-0.png'), f);
  const r = runCli(['predict', model, '--json', '--', f]);
  assert.equal(r.status, 0, r.stderr);
  assert.equal((r.json!.predictions as unknown[]).length, 1);
});

test('warnings go to stderr and into --json: --val is the training data, --out inside it (issue 15)', () => {
  const out = path.join(data, 'inside-model');
  const r = runCli(train(['--val', data, '--out', out, '--json']), freshCache());
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, /graft: warning: --out '.*inside-model' is inside the data folder/);
  assert.match(r.stderr, /graft: warning: --val is the training data/);
  assert.deepEqual(
    (r.json!.warnings as { code: string }[]).map((w) => w.code),
    ['out-inside-data', 'val-is-train'],
  );
});

test('no colour codes in redirected stderr, even when CI is set or stdout is a terminal (issue 15)', () => {
  const r = runCli(train(['--epochs', '0']), { ...freshCache(), CI: 'true', FORCE_COLOR: '', NO_COLOR: '' });
  assert.notEqual(r.status, 0);
  assert.ok(!r.stderr.includes(ESC), 'CI set, stderr a pipe');
  // stdout on a terminal (script(1) gives the command a pseudo-terminal), stderr to a file.
  const err = path.join(dir, 'stderr.txt');
  const cmd = `${process.execPath} --import tsx src/cli/main.ts train ${data} --base ${base} --epochs 0 2>${err}`;
  const s = spawnSync('script', ['-qec', cmd, '/dev/null'], { encoding: 'utf8', env: { ...process.env, CI: '' } });
  if (s.error) return; // no script(1) here: the CI case above still holds
  const text = readFileSync(err, 'utf8');
  assert.match(text, /graft: error: --epochs/);
  assert.ok(!text.includes(ESC), 'stdout a terminal, stderr a file');
});
