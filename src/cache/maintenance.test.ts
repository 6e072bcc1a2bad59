import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, utimesSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { tempTag } from '../util/files.ts';
import { ActivationCache, hashBytes } from './activation-cache.ts';
import { cacheUsage, clearCache, parseDuration, parseSize, pruneCache, verifyCache } from './maintenance.ts';

const DAY = 86400e3;

function fill(dir: string) {
  const cache = new ActivationCache(dir);
  cache.describeBase('base-a', { name: 'mobilenet_v2_0.35', source: 'zoo' });
  const put = (base: string, cut: string, i: number, floats: number, ageDays: number) => {
    const p = { image: hashBytes(new Uint8Array([i])), base, cut, preprocessing: 'p' };
    cache.put(p, new Float32Array(floats));
    const t = new Date(Date.now() - ageDays * DAY);
    utimesSync(cache.file(p), t, t);
    return cache.file(p);
  };
  const files = [
    put('base-a', 'out_relu', 1, 100, 40),
    put('base-a', 'out_relu', 2, 100, 10),
    put('base-a', 'out_relu', 3, 100, 1),
    put('base-a', 'block_13:spatial', 4, 1000, 0),
    put('base-b', 'top', 5, 10, 50),
  ];
  return { cache, files };
}

test('usage lists entries and bytes per base and cut, with the base name', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'graft-usage-'));
  fill(dir);
  const u = cacheUsage(dir);
  assert.equal(u.entries, 5);
  const a = u.bases.find((b) => b.id === 'base-a')!;
  assert.equal(a.name, 'mobilenet_v2_0.35');
  assert.deepEqual(
    a.cuts.map((c) => [c.cut, c.entries, c.bytes]),
    [
      ['block_13:spatial', 1, 16 + 4000],
      ['out_relu', 3, 3 * (16 + 400)],
    ],
  );
  assert.equal(u.bases.find((b) => b.id === 'base-b')!.bytes, 16 + 40);
  assert.equal(u.bytes, 3 * 416 + 4016 + 56);
});

test('prune --older-than removes entries unused for longer, and --max-size the least recently used', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'graft-prune-'));
  const { files } = fill(dir);
  const r = pruneCache(dir, { olderThanMs: 30 * DAY });
  assert.equal(r.removed, 2);
  assert.deepEqual(
    files.map((f) => existsSync(f)),
    [false, true, true, true, false],
  );
  // 2 x 416 + 4016 bytes are left; at most 4100 drops the older out_relu entry first, then the next
  const r2 = pruneCache(dir, { maxBytes: 4100 });
  assert.equal(r2.removed, 2);
  assert.deepEqual(
    files.map((f) => existsSync(f)),
    [false, false, false, true, false],
  );
  assert.deepEqual(r2.remaining, { entries: 1, bytes: 4016 });
  assert.equal(clearCache(dir).removed, 1);
  assert.equal(cacheUsage(dir).entries, 0);
});

test('temporaries of dead writers are removed, a live writer’s are kept, old-format files are dropped', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'graft-temps-'));
  const { files } = fill(dir);
  const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
  const deadTag = tempTag().replace(`~${process.pid}~`, `~${dead.stdout}~`);
  const stale = `${files[2]}${deadTag}.tmp`;
  const live = `${files[2]}${tempTag()}.tmp`;
  writeFileSync(stale, 'half');
  writeFileSync(live, 'half');
  mkdirSync(path.join(dir, 'ab'));
  writeFileSync(path.join(dir, 'ab', `${'ab'.repeat(32)}.f32`), Buffer.alloc(400));
  const u = cacheUsage(dir);
  assert.deepEqual(u.temporaries, { live: 1, stale: 1, bytes: 8 });
  assert.deepEqual(u.legacy, { files: 1, bytes: 400 });
  const r = pruneCache(dir, {});
  assert.deepEqual([r.removed, r.temporaries, r.legacy], [0, 1, 1]);
  assert.ok(!existsSync(stale));
  assert.ok(existsSync(live), 'a running writer keeps its temporary');
  assert.ok(!existsSync(path.join(dir, 'ab')));
});

test('verify reads every entry and removes the damaged ones', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'graft-verify-'));
  const { files } = fill(dir);
  writeFileSync(files[1], Buffer.alloc(416));
  writeFileSync(files[3], 'short');
  const r = verifyCache(dir);
  assert.equal(r.checked, 5);
  assert.deepEqual(r.damaged.map((d) => d.file).sort(), [files[1], files[3]].sort());
  assert.deepEqual(
    files.map((f) => existsSync(f)),
    [true, false, true, false, true],
  );
  assert.deepEqual(verifyCache(dir), { checked: 3, damaged: [] });
});

test('sizes and durations parse as people write them', () => {
  assert.equal(parseSize('5GB'), 5e9);
  assert.equal(parseSize('500mb'), 5e8);
  assert.equal(parseSize('1.5G'), 1.5e9);
  assert.equal(parseSize('2GiB'), 2 * 1024 ** 3);
  assert.equal(parseSize('123'), 123);
  assert.throws(() => parseSize('lots'), /not a size/);
  assert.equal(parseDuration('30d'), 30 * DAY);
  assert.equal(parseDuration('12h'), 12 * 3600e3);
  assert.equal(parseDuration('2w'), 14 * DAY);
  assert.throws(() => parseDuration('30'), /not a duration/);
});
