/**
 * `graft serve` refuses what a local tool must refuse, each with a clear status and a one-line reason: foreign
 * Origin and Host headers, missing tokens, names that climb out of the project, links pointing out of it, uploads
 * over the limits, files that are not images; and it listens on loopback only unless told otherwise.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { LIMITS } from '../src/web/security.ts';
import { startServer } from '../src/web/server.ts';
import { tmpDir, writeColourDataset } from './helpers.ts';
import { client, startServe } from './serve-helpers.ts';

let server: Awaited<ReturnType<typeof startServer>>;
let api: ReturnType<typeof client>;
let token: string;
let project: string;
let outside: string;
let images: string;

before(async () => {
  const root = tmpDir('graft-serve-sec-');
  project = path.join(root, 'project');
  outside = path.join(root, 'outside');
  mkdirSync(outside);
  writeFileSync(path.join(outside, 'secret.txt'), 'not for the server');
  images = await writeColourDataset(path.join(root, 'images'), ['red'], 2, 32);
  writeFileSync(path.join(outside, 'photo.png'), readBytes(path.join(images, 'red', 'red-0.png')));
  server = await startServer({ dir: project });
  const html = await (await fetch(server.url)).text();
  token = /name="graft-token" content="([^"]+)"/.exec(html)![1];
  api = client(server.url, token);
  assert.equal((await api('POST', '/api/classes', { name: 'red' })).status, 201);
});
after(async () => server?.close());

const readBytes = (f: string): Buffer => readFileSync(f);

function upload(files: { name: string; bytes: Uint8Array }[], cls = 'red') {
  const fd = new FormData();
  for (const f of files) fd.append('files', new Blob([f.bytes as Uint8Array<ArrayBuffer>]), f.name);
  return api('POST', `/api/images?class=${encodeURIComponent(cls)}`, fd);
}

test('a request from a foreign Origin is refused (403), even with the token', async () => {
  const r = await fetch(new URL('/api/classes', server.url), {
    method: 'POST',
    headers: { 'X-Graft-Token': token, Origin: 'http://evil.example', 'Content-Type': 'application/json' },
    body: JSON.stringify({ name: 'evil' }),
  });
  assert.equal(r.status, 403);
  assert.match((await r.json()).error, /foreign Origin/);
  const cross = await fetch(new URL('/api/classes', server.url), {
    method: 'POST',
    headers: { 'X-Graft-Token': token, 'Sec-Fetch-Site': 'cross-site', 'Content-Type': 'application/json' },
    body: JSON.stringify({ name: 'evil' }),
  });
  assert.equal(cross.status, 403);
  assert.ok(!existsSync(path.join(project, 'evil')));
});

test('a foreign Host header (DNS rebinding) is refused (403), for the page and the API', async () => {
  const get = (p: string, host: string) =>
    new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port: server.port, path: p, headers: { Host: host } }, (res) => {
        let body = '';
        res.on('data', (d) => {
          body += d;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      });
      req.on('error', reject);
      req.end();
    });
  const page = await get('/', `rebind.example:${server.port}`);
  assert.equal(page.status, 403);
  assert.ok(!page.body.includes(token), 'the token must not leak to a rebinding page');
  assert.equal((await get(`/api/project?t=${token}`, `rebind.example:${server.port}`)).status, 403);
  assert.equal((await get('/', `localhost:${server.port}`)).status, 200);
  assert.equal((await get('/', `127.0.0.1:${server.port}`)).status, 200);
  assert.equal((await get('/', 'localhost:1')).status, 403, 'another port is another origin');
});

test('a missing or wrong token is refused (401)', async () => {
  const none = await fetch(new URL('/api/classes', server.url), {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ name: 'x' }),
  });
  assert.equal(none.status, 401);
  assert.match((await none.json()).error, /token/);
  const wrong = await fetch(new URL('/api/project', server.url), { headers: { 'X-Graft-Token': 'nope' } });
  assert.equal(wrong.status, 401);
  // A token in the query string serves reads only (<img>, EventSource), never changes.
  const viaQuery = await fetch(new URL(`/api/classes?t=${token}`, server.url), {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ name: 'x' }),
  });
  assert.equal(viaQuery.status, 401);
  assert.ok(!existsSync(path.join(project, 'x')));
});

test('class and file names with ../ or absolute paths are refused (400)', async () => {
  for (const name of ['../escape', '..', 'a/../../b', '/tmp/abs', 'C:\\abs', '.graft', 'a/b']) {
    const r = await api('POST', '/api/classes', { name });
    assert.equal(r.status, 400, `class name ${name}: ${JSON.stringify(r.json)}`);
    assert.equal(typeof r.json.error, 'string');
  }
  assert.equal((await api('POST', '/api/classes/rename', { from: 'red', to: '../red' })).status, 400);
  const png = readBytes(path.join(images, 'red', 'red-0.png'));
  for (const name of ['../up.png', '/tmp/abs.png', '..\\win.png']) {
    const r = await upload([{ name, bytes: png }]);
    assert.equal(r.status, 400, `file name ${name}: ${JSON.stringify(r.json)}`);
  }
  const up = await upload([{ name: 'x.png', bytes: png }], '../outside');
  assert.equal(up.status, 400);
  for (const [cls, file] of [
    ['red', '../../outside/secret.txt'],
    ['..', 'outside/secret.txt'],
    ['red', '/etc/passwd'],
  ]) {
    const r = await api('GET', `/api/image?class=${encodeURIComponent(cls)}&file=${encodeURIComponent(file)}`);
    assert.equal(r.status, 400, `${cls}/${file}`);
  }
  const moved = await api('POST', '/api/images/move', { items: [{ class: 'red', file: 'x.png' }], to: '../outside' });
  assert.equal(moved.status, 400);
  assert.deepEqual(readdirSync(outside).sort(), ['photo.png', 'secret.txt']);
});

test('a symlink inside the project that points out of it is never followed (403, listed, training refused)', async () => {
  symlinkSync(path.join(outside, 'photo.png'), path.join(project, 'red', 'linked.png'));
  symlinkSync(outside, path.join(project, 'linkedclass'));
  try {
    const img = await api('GET', '/api/image?class=red&file=linked.png');
    assert.equal(img.status, 403);
    assert.match(String(img.json.error), /outside the project/);
    assert.equal((await api('GET', '/api/thumb?class=red&file=linked.png')).status, 403);
    assert.equal((await api('GET', '/api/image?class=linkedclass&file=secret.txt')).status, 403);
    const del = await api('POST', '/api/images/delete', { items: [{ class: 'linkedclass', file: 'secret.txt' }] });
    assert.equal(del.status, 403);
    const p = await api('GET', '/api/project');
    const problems = (p.json.problems as { path: string; reason: string }[]).map((x) => x.path).sort();
    assert.deepEqual(problems, ['linkedclass', 'red/linked.png']);
    assert.ok(!(p.json.classes as { name: string }[]).some((c) => c.name === 'linkedclass'));
    const up = await upload(
      [{ name: 'x.png', bytes: readBytes(path.join(images, 'red', 'red-0.png')) }],
      'linkedclass',
    );
    assert.equal(up.status, 403);
    const t = await api('POST', '/api/train');
    assert.equal(t.status, 409);
    assert.match(String(t.json.error), /outside the project/);
    assert.deepEqual(readdirSync(outside).sort(), ['photo.png', 'secret.txt']);
  } finally {
    rmSync(path.join(project, 'red', 'linked.png'));
    rmSync(path.join(project, 'linkedclass'));
  }
});

test(`uploads over the limits are refused (413): a file over ${LIMITS.fileBytes} bytes, more than ${LIMITS.filesPerRequest} files, a request over ${LIMITS.requestBytes} bytes`, async () => {
  const big = await upload([{ name: 'big.png', bytes: new Uint8Array(LIMITS.fileBytes + 1) }]);
  assert.equal(big.status, 413);
  assert.match(String(big.json.error), /limit/);
  const png = readBytes(path.join(images, 'red', 'red-1.png'));
  const many = await upload(
    Array.from({ length: LIMITS.filesPerRequest + 1 }, (_, i) => ({ name: `m${i}.png`, bytes: png })),
  );
  assert.equal(many.status, 413);
  assert.match(String(many.json.error), /limit of 100/);
  const huge = await fetch(new URL('/api/images?class=red', server.url), {
    method: 'POST',
    headers: {
      'X-Graft-Token': token,
      'Content-Type': 'multipart/form-data; boundary=x',
      'Content-Length': String(LIMITS.requestBytes + 1),
    },
    body: new Uint8Array(LIMITS.requestBytes + 1),
  });
  assert.equal(huge.status, 413);
  const p = await api('GET', '/api/project');
  const red = (p.json.classes as { name: string; images: unknown[] }[]).find((c) => c.name === 'red')!;
  assert.equal(red.images.length, 0, 'nothing of a refused upload is kept');
});

test('an upload that does not decode as an image is refused (415); a real one is kept', async () => {
  const text = await upload([{ name: 'notes.jpg', bytes: new TextEncoder().encode('hello, this is not a JPEG') }]);
  assert.equal(text.status, 415);
  assert.match(String(text.json.error), /notes\.jpg: not accepted \(not a decodable image/);
  const png = readBytes(path.join(images, 'red', 'red-0.png'));
  const truncated = await upload([{ name: 'cut.png', bytes: png.subarray(0, Math.floor(png.length / 2)) }]);
  assert.equal(truncated.status, 415);
  const ok = await upload([{ name: 'good.png', bytes: png }]);
  assert.equal(ok.status, 200);
  assert.deepEqual(ok.json.added, ['good.png']);
  assert.deepEqual(readdirSync(path.join(project, 'red')), ['good.png']);
});

test('graft serve listens on 127.0.0.1 by default, not on other addresses; --host warns', async () => {
  const dir = path.join(tmpDir(), 'p');
  const s = await startServe(dir);
  try {
    assert.match(s.url, /^http:\/\/127\.0\.0\.1:\d+\/$/);
    const port = Number(new URL(s.url).port);
    const others = Object.values(os.networkInterfaces())
      .flat()
      .filter((a) => a && !a.internal && a.family === 'IPv4')
      .map((a) => a!.address);
    for (const addr of others) {
      const reached = await fetch(`http://${addr}:${port}/`).then(
        () => true,
        () => false,
      );
      assert.equal(reached, false, `reachable on ${addr}`);
    }
  } finally {
    await s.stop();
  }
  const open = await startServe(dir, {}, ['--host', '0.0.0.0']);
  try {
    assert.match(open.stderr(), /warning: --host 0\.0\.0\.0/);
  } finally {
    await open.stop();
  }
});
