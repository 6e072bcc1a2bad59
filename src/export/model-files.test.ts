import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { tempTag } from '../util/files.ts';
import { METADATA_FILE, removeStaleTemporaries, writeModelFolder } from './model-files.ts';

const deadPid = () => Number(spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))']).stdout);
const tagOf = (pid: number) => tempTag().replace(`~${process.pid}~`, `~${pid}~`);
const files = (v: string) => ({
  'model.json': `{"v":"${v}"}`,
  'weights.bin': Buffer.alloc(64, v),
  [METADATA_FILE]: '{}',
});

test('leftovers of a writer killed mid-export are removed by the next write; a live writer’s are kept', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'graft-model-files-'));
  const out = path.join(dir, 'model');
  const dead = deadPid();
  // kill -9 during export: a half-written weights.bin in a temporary folder (this and the older naming)
  for (const name of [`model.tmp${tagOf(dead)}`, `model.tmp-${dead}-1700000000000`]) {
    mkdirSync(path.join(dir, name));
    writeFileSync(path.join(dir, name, 'weights.bin'), Buffer.alloc(10));
  }
  const live = `model.tmp${tempTag()}`;
  mkdirSync(path.join(dir, live));
  mkdirSync(path.join(dir, 'model.tmpfiles'), { recursive: true }); // not ours: no writer tag
  writeModelFolder(out, files('a'));
  assert.deepEqual(readdirSync(dir).sort(), ['model', live, 'model.tmpfiles'].sort());
  assert.equal(readFileSync(path.join(out, 'model.json'), 'utf8'), '{"v":"a"}');
});

test('killed between moving the old model aside and renaming the new one in: the old model comes back', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'graft-model-files-'));
  const out = path.join(dir, 'model');
  const dead = deadPid();
  const aside = path.join(dir, `model.old${tagOf(dead)}`);
  mkdirSync(aside);
  for (const [n, c] of Object.entries(files('old'))) writeFileSync(path.join(aside, n), c);
  writeModelFolder(path.join(dir, 'other'), files('x'));
  assert.ok(!existsSync(out), 'only leftovers of the same --out are touched');
  removeStaleTemporaries(out);
  assert.equal(readFileSync(path.join(out, 'model.json'), 'utf8'), '{"v":"old"}', 'the previous model is back');
  assert.deepEqual(readdirSync(dir).sort(), ['model', 'other']);
  writeModelFolder(out, files('new'));
  assert.equal(readFileSync(path.join(out, 'model.json'), 'utf8'), '{"v":"new"}');
  assert.deepEqual(readdirSync(dir).sort(), ['model', 'other']);
});

test('an abort before the swap leaves the previous model and no temporary', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'graft-model-files-'));
  const out = path.join(dir, 'model');
  writeModelFolder(out, files('a'));
  const ac = new AbortController();
  ac.abort(new Error('stop'));
  assert.throws(() => writeModelFolder(out, files('b'), ac.signal), /stop/);
  assert.deepEqual(readdirSync(dir), ['model']);
  assert.equal(readFileSync(path.join(out, 'model.json'), 'utf8'), '{"v":"a"}');
});
