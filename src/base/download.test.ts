import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { closedPort } from '../../test/helpers.ts';
import { hostName } from '../util/files.ts';
import { cacheStatus, ensureModelFiles, FILES_MANIFEST, LOCK_FILE, mirrorUrl } from './download.ts';

const MIRROR_ROOT = path.resolve(import.meta.dirname, '../../../shared/models/mirror');
const REL = 'teachable-machine-models/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top';
const URL_ = `https://storage.googleapis.com/${REL}/model.json`;
const skip = existsSync(path.join(MIRROR_ROOT, REL, 'model.json')) ? false : `${MIRROR_ROOT} is absent`;

const sha = (buf: Buffer) => createHash('sha256').update(buf).digest('hex');
const shaOf = (file: string) => sha(readFileSync(file));

interface Logged {
  path: string;
  range?: string;
  status: number;
}

/**
 * Serves MIRROR_ROOT like a static bucket with Range support. `cutOnce` makes the first request for a path send only
 * that many body bytes and then drop the connection, as a network failure half-way would; `ignoreRange` answers 200
 * to Range requests like servers without range support; `stall` sends headers and then nothing.
 */
function startServer(
  o: { cutOnce?: Record<string, number>; ignoreRange?: boolean; stall?: boolean; slowMs?: number } = {},
) {
  const log: Logged[] = [];
  const cut = { ...o.cutOnce };
  const server = http.createServer((req, res) => {
    const urlPath = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
    const file = path.join(MIRROR_ROOT, urlPath);
    const entry: Logged = { path: urlPath, range: req.headers.range, status: 200 };
    log.push(entry);
    if (!file.startsWith(MIRROR_ROOT) || !existsSync(file) || !statSync(file).isFile()) {
      entry.status = 404;
      res.writeHead(404).end('not found');
      return;
    }
    const body = readFileSync(file);
    if (o.stall) {
      res.writeHead(200, { 'content-length': body.length });
      res.flushHeaders();
      return;
    }
    let start = 0;
    const m = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
    if (m && !o.ignoreRange) {
      start = Number(m[1]);
      const end = m[2] ? Number(m[2]) : body.length - 1;
      if (start >= body.length) {
        entry.status = 416;
        res.writeHead(416, { 'content-range': `bytes */${body.length}` }).end();
        return;
      }
      entry.status = 206;
      res.writeHead(206, {
        'content-length': end - start + 1,
        'content-range': `bytes ${start}-${end}/${body.length}`,
      });
      res.end(body.subarray(start, end + 1));
      return;
    }
    res.writeHead(200, { 'content-length': body.length });
    if (o.slowMs) {
      // In eight pieces, slowMs apart: long enough for a concurrent caller to arrive mid-download.
      const piece = Math.ceil(body.length / 8);
      const send = (k: number) => {
        if (k >= 8) return res.end();
        res.write(body.subarray(k * piece, (k + 1) * piece), () => setTimeout(() => send(k + 1), o.slowMs));
      };
      send(0);
      return;
    }
    const n = cut[urlPath];
    if (n !== undefined) {
      delete cut[urlPath];
      res.write(body.subarray(0, n), () => setTimeout(() => res.socket?.destroy(), 20));
      return;
    }
    res.end(body);
  });
  return new Promise<{ base: string; log: Logged[]; close: () => Promise<void> }>((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      resolve({
        base: `http://127.0.0.1:${port}/`,
        log,
        close: () =>
          new Promise((r) => {
            server.closeAllConnections();
            server.close(() => r());
          }),
      });
    });
  });
}

describe('ensureModelFiles', { skip }, () => {
  let tmp: string;
  const dirs: string[] = [];
  const freshCache = () => {
    const d = mkdtempSync(path.join(tmp, 'cache-'));
    dirs.push(d);
    return d;
  };
  const srcWeights = () => path.join(MIRROR_ROOT, REL, 'weights.bin');

  before(() => {
    tmp = mkdtempSync(path.join(os.tmpdir(), 'graft-download-'));
  });
  after(() => rmSync(tmp, { recursive: true, force: true }));

  test('the mirror replaces only the storage.googleapis.com prefix', () => {
    assert.equal(mirrorUrl(URL_, 'http://127.0.0.1:9/m/'), `http://127.0.0.1:9/m/${REL}/model.json`);
    assert.equal(
      mirrorUrl('https://example.com/a/model.json', 'http://127.0.0.1:9'),
      'https://example.com/a/model.json',
    );
  });

  test('downloads model.json and the weights weightsManifest names, under the canonical URL path; a second call fetches nothing', async () => {
    const srv = await startServer();
    try {
      const cacheDir = freshCache();
      const progress: number[] = [];
      const r = await ensureModelFiles(URL_, {
        cacheDir,
        mirror: srv.base,
        onProgress: (p) => p.phase === 'download' && progress.push(p.done),
      });
      assert.equal(r.modelJsonPath, path.join(cacheDir, 'storage.googleapis.com', REL, 'model.json'));
      assert.deepEqual(r.downloaded, ['model.json', 'weights.bin']);
      assert.equal(r.fromCache, false);
      assert.equal(shaOf(path.join(path.dirname(r.modelJsonPath), 'weights.bin')), shaOf(srcWeights()));
      assert.ok(progress.length >= 2, 'progress reported');
      const manifest = JSON.parse(readFileSync(path.join(path.dirname(r.modelJsonPath), FILES_MANIFEST), 'utf8'));
      assert.equal(manifest.files['weights.bin'].sha256, shaOf(srcWeights()));
      assert.equal(manifest.files['weights.bin'].size, statSync(srcWeights()).size);
      assert.ok(!existsSync(`${path.join(path.dirname(r.modelJsonPath), 'weights.bin')}.partial`));

      const before = srv.log.length;
      const again = await ensureModelFiles(URL_, { cacheDir, mirror: srv.base });
      assert.deepEqual(again.downloaded, []);
      assert.equal(again.fromCache, true);
      assert.equal(srv.log.length, before, 'a warm cache makes no request');
      const st = await cacheStatus(URL_, cacheDir);
      assert.equal(st.cached, true);
      assert.equal(st.cachedFiles.length, 2);
    } finally {
      await srv.close();
    }
  });

  test('a download cut half-way resumes with a Range request and ends byte-identical', async () => {
    const srv = await startServer({ cutOnce: { [`/${REL}/weights.bin`]: 700_000 } });
    try {
      const cacheDir = freshCache();
      await assert.rejects(ensureModelFiles(URL_, { cacheDir, mirror: srv.base }), (e: Error) => {
        assert.match(
          e.message,
          /^cannot download http:\/\/127\.0\.0\.1:\d+\/.*weights\.bin: connection lost after \d+ of \d+ bytes/,
        );
        assert.ok(!e.message.includes('\n'));
        return true;
      });
      const dir = path.join(cacheDir, 'storage.googleapis.com', REL);
      const partialSize = statSync(path.join(dir, 'weights.bin.partial')).size;
      assert.ok(partialSize > 0 && partialSize <= 700_000, `partial holds the bytes received (${partialSize})`);
      assert.ok(!existsSync(path.join(dir, 'weights.bin')), 'nothing incomplete under the final name');

      const r = await ensureModelFiles(URL_, { cacheDir, mirror: srv.base });
      assert.deepEqual(r.downloaded, ['weights.bin'], 'model.json was kept from the first run');
      const resumed = srv.log.filter((l) => l.path.endsWith('weights.bin')).at(-1);
      assert.equal(resumed?.range, `bytes=${partialSize}-`);
      assert.equal(resumed?.status, 206);
      assert.equal(shaOf(path.join(dir, 'weights.bin')), shaOf(srcWeights()));
      assert.ok(!existsSync(path.join(dir, 'weights.bin.partial')));
    } finally {
      await srv.close();
    }
  });

  test('a server that ignores Range (200) restarts the file cleanly', async () => {
    const srv = await startServer({ ignoreRange: true });
    try {
      const cacheDir = freshCache();
      const dir = path.join(cacheDir, 'storage.googleapis.com', REL);
      await ensureModelFiles(URL_, { cacheDir, mirror: srv.base });
      rmSync(path.join(dir, 'weights.bin'));
      writeFileSync(path.join(dir, 'weights.bin.partial'), Buffer.alloc(5000, 7));
      const r = await ensureModelFiles(URL_, { cacheDir, mirror: srv.base });
      assert.deepEqual(r.downloaded, ['weights.bin']);
      assert.equal(srv.log.at(-1)?.range, 'bytes=5000-');
      assert.equal(srv.log.at(-1)?.status, 200);
      assert.equal(shaOf(path.join(dir, 'weights.bin')), shaOf(srcWeights()));
    } finally {
      await srv.close();
    }
  });

  test('a damaged cached file is detected by SHA-256 and fetched again', async () => {
    const srv = await startServer();
    try {
      const cacheDir = freshCache();
      const { modelJsonPath } = await ensureModelFiles(URL_, { cacheDir, mirror: srv.base });
      const weights = path.join(path.dirname(modelJsonPath), 'weights.bin');
      const bytes = readFileSync(weights);
      bytes.fill(0, 1000, 1100); // same size, different content
      writeFileSync(weights, bytes);
      const r = await ensureModelFiles(URL_, { cacheDir, mirror: srv.base });
      assert.deepEqual(r.repaired, ['weights.bin']);
      assert.deepEqual(r.downloaded, ['weights.bin']);
      assert.equal(shaOf(weights), shaOf(srcWeights()));

      writeFileSync(modelJsonPath, '{"truncated"'); // different size
      const r2 = await ensureModelFiles(URL_, { cacheDir, mirror: srv.base });
      assert.deepEqual(r2.repaired, ['model.json']);
      assert.equal(shaOf(modelJsonPath), shaOf(path.join(MIRROR_ROOT, REL, 'model.json')));

      bytes.fill(1, 0, 10);
      writeFileSync(weights, bytes);
      await assert.rejects(
        ensureModelFiles(URL_, { cacheDir, offline: true, name: 'mobilenet_v2_0.35' }),
        /damaged.*and offline is set/,
      );
    } finally {
      await srv.close();
    }
  });

  test('offline: an empty cache is an error, a warm one makes no request', async () => {
    const srv = await startServer();
    try {
      const cacheDir = freshCache();
      await assert.rejects(
        ensureModelFiles(URL_, { cacheDir, mirror: srv.base, offline: true, name: 'mobilenet_v2_0.35' }),
        { name: 'DownloadError', code: 'offline', message: 'mobilenet_v2_0.35: not in the cache and offline is set' },
      );
      assert.equal(srv.log.length, 0);
      await ensureModelFiles(URL_, { cacheDir, mirror: srv.base });
      const n = srv.log.length;
      const r = await ensureModelFiles(URL_, { cacheDir, mirror: srv.base, offline: true });
      assert.equal(r.fromCache, true);
      assert.equal(srv.log.length, n);
    } finally {
      await srv.close();
    }
  });

  test('HTTP errors, refused connections, stalls and wrong known hashes are one-line errors naming the URL', async () => {
    const srv = await startServer();
    try {
      const cacheDir = freshCache();
      const missing = 'https://storage.googleapis.com/no-such-bucket/model.json';
      await assert.rejects(ensureModelFiles(missing, { cacheDir, mirror: srv.base }), {
        message: `cannot download ${srv.base}no-such-bucket/model.json: HTTP 404 Not Found`,
      });
      const port = await closedPort();
      await assert.rejects(ensureModelFiles(URL_, { cacheDir, mirror: `http://127.0.0.1:${port}` }), (e: Error) => {
        assert.match(
          e.message,
          new RegExp(`^cannot download http://127\\.0\\.0\\.1:${port}/.*model\\.json: .*ECONNREFUSED`),
        );
        assert.ok(!e.message.includes('\n'));
        return true;
      });
      const wrong = '0'.repeat(64);
      await assert.rejects(
        ensureModelFiles(URL_, { cacheDir, mirror: srv.base, sha256: { 'weights.bin': wrong } }),
        /weights\.bin: SHA-256 is [0-9a-f]{64}, expected 0{64}$/,
      );
      assert.ok(!existsSync(path.join(cacheDir, 'storage.googleapis.com', REL, 'weights.bin')));
    } finally {
      await srv.close();
    }
    const stalled = await startServer({ stall: true });
    try {
      await assert.rejects(
        ensureModelFiles(URL_, { cacheDir: freshCache(), mirror: stalled.base, stallTimeoutMs: 300 }),
        /model\.json: .*no data for 300 ms/,
      );
    } finally {
      await stalled.close();
    }
  });

  test("an abort stops the download with the caller's reason and keeps the partial file for later", async () => {
    const srv = await startServer({ stall: true });
    try {
      const ctrl = new AbortController();
      const cacheDir = freshCache();
      const partial = path.join(cacheDir, 'storage.googleapis.com', REL, 'model.json.partial');
      // Aborted while the body stalls, once the partial file is open (its first progress report), not after a timer
      // that a loaded machine may fire before the response arrives. The stall timeout is far off: only the abort ends
      // the download.
      let abortedWithPartial = false;
      const onProgress = (p: { phase: string; detail?: string }) => {
        if (ctrl.signal.aborted || p.phase !== 'download' || p.detail !== 'model.json') return;
        abortedWithPartial = existsSync(partial);
        ctrl.abort(new Error('user cancelled'));
      };
      await assert.rejects(
        ensureModelFiles(URL_, {
          cacheDir,
          mirror: srv.base,
          signal: ctrl.signal,
          onProgress,
          stallTimeoutMs: 60_000,
        }),
        { message: 'user cancelled' },
      );
      assert.ok(abortedWithPartial, 'aborted mid-download, with the partial file open');
      assert.ok(existsSync(partial), 'the partial file is kept');
    } finally {
      await srv.close();
    }
  });

  test('two concurrent calls on one cache: one downloads under the lock, the other waits and finds the files whole', async () => {
    const srv = await startServer({ slowMs: 40 });
    try {
      const cacheDir = freshCache();
      const [a, b] = await Promise.all([
        ensureModelFiles(URL_, { cacheDir, mirror: srv.base }),
        ensureModelFiles(URL_, { cacheDir, mirror: srv.base }),
      ]);
      const dir = path.dirname(a.modelJsonPath);
      assert.equal(b.modelJsonPath, a.modelJsonPath);
      assert.deepEqual([a.downloaded, b.downloaded].sort(), [[], ['model.json', 'weights.bin']]);
      assert.equal(srv.log.filter((l) => l.path.endsWith('weights.bin')).length, 1, 'weights fetched once');
      assert.equal(shaOf(path.join(dir, 'weights.bin')), shaOf(srcWeights()));
      assert.ok(!existsSync(path.join(dir, LOCK_FILE)), 'the lock is released');
    } finally {
      await srv.close();
    }
  });

  test('a lock left by a killed process is taken over; a live holder is waited for', async () => {
    const srv = await startServer();
    try {
      const cacheDir = freshCache();
      const dir = path.join(cacheDir, 'storage.googleapis.com', REL);
      mkdirSync(dir, { recursive: true });
      const dead = Number(spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))']).stdout);
      writeFileSync(
        path.join(dir, LOCK_FILE),
        JSON.stringify({ host: hostName(), pid: dead, since: new Date().toISOString() }),
      );
      const r = await ensureModelFiles(URL_, { cacheDir, mirror: srv.base });
      assert.deepEqual(r.downloaded, ['model.json', 'weights.bin']);

      // A live holder (this process, as another caller would be): the call waits until the lock goes.
      rmSync(path.join(dir, 'weights.bin'));
      writeFileSync(
        path.join(dir, LOCK_FILE),
        JSON.stringify({ host: hostName(), pid: process.pid, since: new Date().toISOString() }),
      );
      let released = 0;
      setTimeout(() => {
        released = Date.now();
        rmSync(path.join(dir, LOCK_FILE));
      }, 600);
      const again = await ensureModelFiles(URL_, { cacheDir, mirror: srv.base });
      assert.ok(released > 0 && Date.now() >= released, 'waited for the holder');
      assert.deepEqual(again.downloaded, ['weights.bin']);
    } finally {
      await srv.close();
    }
  });
});
