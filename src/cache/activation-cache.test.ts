import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, renameSync, statSync, utimesSync, writeFileSync } from 'node:fs';
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

const tmp = () => mkdtempSync(path.join(os.tmpdir(), 'graft-cache-'));

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
  const dir = tmp();
  const cache = new ActivationCache(dir);
  assert.equal(cache.get(parts, 4), undefined);
  const data = new Float32Array([0.5, -1.25, 3e-8, 42]);
  cache.put(parts, data);
  assert.deepEqual(cache.get(parts, 4), data);
  assert.deepEqual([cache.hits, cache.misses, cache.damaged.length], [1, 1, 0]);
  // a fresh instance on the same folder sees the stored value: it is on disk, not in memory
  assert.deepEqual(new ActivationCache(dir).get(parts, 4), data);
  // stored per base and cut, and no temporary files are left behind
  const file = cache.file(parts);
  assert.equal(path.relative(dir, file).split(path.sep).slice(0, 2).join('/'), 'b1/out_relu');
  assert.deepEqual(readdirSync(path.dirname(file)), [path.basename(file)]);
});

test('cut names that are not file names are stored safely', () => {
  const dir = tmp();
  const cache = new ActivationCache(dir);
  const odd = { ...parts, cut: '../x/conv:0:spatial', base: '..' };
  cache.put(odd, new Float32Array([1, 2]));
  assert.ok(cache.file(odd).startsWith(dir + path.sep));
  assert.ok(!path.relative(dir, cache.file(odd)).split(path.sep).includes('..'));
  assert.deepEqual(new ActivationCache(dir).get(odd, 2), new Float32Array([1, 2]));
});

/** Every way an entry can go bad on disk: each is a miss, deleted, and reported once. */
test('a damaged entry is never served: reported once, deleted, recomputed', () => {
  const data = new Float32Array(64).map((_, i) => Math.sin(i) * 10);
  const damage: [string, (file: string) => void][] = [
    ['same-size zeros', (f) => writeFileSync(f, Buffer.alloc(statSync(f).size))],
    [
      'same-size garbage',
      (f) => writeFileSync(f, Buffer.from(Array.from({ length: statSync(f).size }, (_, i) => (i * 37 + 11) % 256))),
    ],
    [
      'one flipped payload byte',
      (f) => {
        const b = readFileSync(f);
        b[b.length - 3] ^= 0x40;
        writeFileSync(f, b);
      },
    ],
    ['truncated', (f) => writeFileSync(f, readFileSync(f).subarray(0, 100))],
    ['empty', (f) => writeFileSync(f, '')],
    ['headerless payload of the right length (old format)', (f) => writeFileSync(f, Buffer.from(data.buffer))],
    [
      'a valid entry of another key copied over it',
      (f) => {
        const other = new ActivationCache(path.dirname(path.dirname(path.dirname(path.dirname(f)))));
        const p2 = { ...parts, view: 'flip' };
        other.put(
          p2,
          data.map((v) => v + 1),
        );
        renameSync(other.file(p2), f);
      },
    ],
  ];
  for (const [what, spoil] of damage) {
    const dir = tmp();
    const cache = new ActivationCache(dir);
    cache.put(parts, data);
    spoil(cache.file(parts));
    assert.equal(cache.get(parts, 64), undefined, what);
    assert.equal(cache.damaged.length, 1, what);
    assert.equal(cache.damaged[0].file, cache.file(parts));
    assert.throws(() => statSync(cache.file(parts)), /ENOENT/, `${what}: the damaged file is deleted`);
    // reported once: the next look is a plain miss
    assert.equal(cache.get(parts, 64), undefined);
    assert.equal(cache.damaged.length, 1, what);
    cache.put(parts, data);
    assert.deepEqual(cache.get(parts, 64), data, what);
  }
});

test('an entry read with the wrong size is damaged, not a truncated or padded hit', () => {
  const cache = new ActivationCache(tmp());
  cache.put(parts, new Float32Array(8));
  assert.equal(cache.get(parts, 4), undefined);
  assert.match(cache.damaged[0].reason, /bytes, expected/);
});

test('a hit refreshes the time stamp of an entry unused for days (pruning by age spares entries in use)', () => {
  const cache = new ActivationCache(tmp());
  cache.put(parts, new Float32Array(4));
  const file = cache.file(parts);
  const old = new Date(Date.now() - 10 * 86400e3);
  utimesSync(file, old, old);
  assert.ok(cache.get(parts, 4));
  assert.ok(Date.now() - statSync(file).mtimeMs < 60e3);
});
