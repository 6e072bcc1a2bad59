import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { ActivationCache, activationKey, hashBytes } from './activation-cache.ts';

const parts = {
  image: hashBytes(new Uint8Array([1, 2, 3])),
  base: 'b1',
  cut: 'out_relu',
  preprocessing: '224x224:cover:1:0',
};

test('every key part changes the key', () => {
  const k = activationKey(parts);
  assert.equal(k, activationKey({ ...parts }));
  for (const change of [
    { image: hashBytes(new Uint8Array([1, 2, 4])) },
    { base: 'b2' },
    { cut: 'block_1' },
    { preprocessing: 'x' },
    { view: 'flip' },
  ]) {
    assert.notEqual(activationKey({ ...parts, ...change }), k, JSON.stringify(change));
  }
});

test('put then get returns the same floats and counts hits and misses', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'graft-cache-'));
  const cache = new ActivationCache(dir);
  const key = activationKey(parts);
  assert.equal(cache.get(key, 4), undefined);
  const data = new Float32Array([0.5, -1.25, 3e-8, 42]);
  cache.put(key, data);
  assert.deepEqual(cache.get(key, 4), data);
  assert.deepEqual([cache.hits, cache.misses], [1, 1]);
  // a fresh instance on the same folder sees the stored value: it is on disk, not in memory
  assert.deepEqual(new ActivationCache(dir).get(key, 4), data);
  // no temporary files are left behind
  const shard = readdirSync(dir)[0];
  assert.deepEqual(readdirSync(path.join(dir, shard)), [`${key}.f32`]);
});

test('a stored file of the wrong size is a miss, not garbage', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'graft-cache-'));
  const cache = new ActivationCache(dir);
  const key = activationKey(parts);
  cache.put(key, new Float32Array(8));
  assert.equal(cache.get(key, 4), undefined);
  writeFileSync(path.join(dir, key.slice(0, 2), `${key}.f32`), Buffer.alloc(7));
  assert.equal(cache.get(key, 8), undefined);
  assert.equal(cache.misses, 2);
});
