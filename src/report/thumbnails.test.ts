import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import sharp from 'sharp';
import { pruneThumbnails, thumbnail, thumbnails, thumbnailUsage } from './thumbnails.ts';

const dir = mkdtempSync(path.join(os.tmpdir(), 'graft-thumbs-'));
after(() => rmSync(dir, { recursive: true, force: true }));

async function photo(name: string, seed: number): Promise<string> {
  const w = 240;
  const h = 160;
  const px = Buffer.alloc(w * h * 3);
  let s = seed;
  for (let i = 0; i < px.length; i++) {
    s = (s * 1103515245 + 12345) >>> 0;
    px[i] = (s >>> 16) & 0xff;
  }
  const file = path.join(dir, name);
  writeFileSync(
    file,
    await sharp(px, { raw: { width: w, height: h, channels: 3 } })
      .jpeg()
      .toBuffer(),
  );
  return file;
}

const entries = (cache: string) => readdirSync(cache, { recursive: true }).filter((f) => String(f).endsWith('.jpg'));
const decode = (uri: string) => Buffer.from(uri.slice('data:image/jpeg;base64,'.length), 'base64');

test('a thumbnail is made once and then read from the cache; a changed image gets its own entry', async () => {
  const cache = path.join(dir, 'cache-1');
  const a = await photo('a.jpg', 1);
  const first = (await thumbnail(a, { cacheDir: cache })) ?? '';
  assert.ok(first?.startsWith('data:image/jpeg;base64,'));
  const meta = await sharp(decode(first)).metadata();
  assert.equal(Math.max(meta.width ?? 0, meta.height ?? 0), 96, 'longest side 96 px');
  const [entry] = entries(cache);
  assert.ok(entry, 'one cache entry');
  // Put another valid JPEG in the entry's place: a cache hit must return it, so the cache is really read.
  const other = await sharp({ create: { width: 96, height: 64, channels: 3, background: '#f00' } })
    .jpeg()
    .toBuffer();
  writeFileSync(path.join(cache, String(entry)), other);
  assert.deepEqual(decode((await thumbnail(a, { cacheDir: cache }))!), other);
  // Same name, other bytes: another key, so the stale picture is not shown.
  writeFileSync(a, readFileSync(await photo('b.jpg', 2)));
  const changed = await thumbnail(a, { cacheDir: cache });
  assert.notDeepEqual(decode(changed!), other);
  assert.equal(entries(cache).length, 2);
  assert.deepEqual(thumbnailUsage(cache).files, 2);
});

test('a damaged entry is made again; an unwritable cache or an unreadable image does not fail the report', async () => {
  const cache = path.join(dir, 'cache-2');
  const a = await photo('c.jpg', 3);
  const good = (await thumbnail(a, { cacheDir: cache }))!;
  const entry = path.join(cache, String(entries(cache)[0]));
  const bytes = readFileSync(entry);
  writeFileSync(entry, bytes.subarray(0, bytes.length >> 1)); // truncated: no end-of-image marker
  assert.equal(await thumbnail(a, { cacheDir: cache }), good);
  assert.deepEqual(readFileSync(entry), bytes, 'the entry is written again, whole');
  // /proc accepts no new folders: the thumbnail is still made.
  assert.equal(await thumbnail(a, { cacheDir: '/proc/graft-no-such-dir/thumbs' }), good);
  assert.equal(await thumbnail(a, { cacheDir: null }), good);
  const notImage = path.join(dir, 'not-image.jpg');
  writeFileSync(notImage, 'hello');
  const m = await thumbnails([a, notImage, path.join(dir, 'missing.jpg'), a], { cacheDir: cache });
  assert.equal(m.size, 3);
  assert.equal(m.get(a), good);
  assert.equal(m.get(notImage), undefined);
  assert.equal(entries(cache).length, 1, 'nothing cached for files that gave no thumbnail');
});

test('prune removes thumbnails unused for longer than the given age, and all of them without one', async () => {
  const cache = path.join(dir, 'cache-3');
  const files = [await photo('d.jpg', 4), await photo('e.jpg', 5), await photo('f.jpg', 6)];
  await thumbnails(files, { cacheDir: cache });
  const all = entries(cache).map((e) => path.join(cache, String(e)));
  assert.equal(all.length, 3);
  const old = new Date(Date.now() - 40 * 86400e3);
  for (const f of all) utimesSync(f, old, old);
  // A hit marks its entry as used: it survives the age prune that removes the other two.
  await thumbnail(files[1], { cacheDir: cache });
  assert.equal(entries(cache).length, 3, 'the hit made no new entry');
  assert.equal(pruneThumbnails(cache, 30 * 86400e3).files, 2);
  assert.equal(thumbnailUsage(cache).files, 1);
  assert.equal(pruneThumbnails(cache).files, 1);
  assert.equal(thumbnailUsage(cache).files, 0);
});
