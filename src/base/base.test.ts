import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { before, test } from 'node:test';
import { tmpDir, writeTinyBase } from '../../test/helpers.ts';
import { BASE_METADATA_FILE, disposeBase, loadBase } from './base.ts';

let file: string;

before(async () => {
  file = await writeTinyBase(path.join(tmpDir(), 'base'));
});

test('a local model.json: input size from the model, pixel range from --input-range, default cut below the classifier', async () => {
  const b = await loadBase(file, { inputRange: [-1, 1] });
  assert.equal(b.kind, 'file');
  assert.deepEqual(b.preprocessing.size, [32, 32]);
  assert.equal(b.preprocessing.offset, -1);
  assert.ok(Math.abs(b.preprocessing.scale * 255 - 2) < 1e-12);
  assert.equal(b.defaultCut, 'top_relu');
  const plain = await loadBase(path.dirname(file));
  assert.deepEqual(
    [plain.preprocessing.scale, plain.preprocessing.offset],
    [1 / 255, 0],
    'default range 0,1; a folder finds its model.json',
  );
  assert.equal(plain.id, b.id, 'same files, same fingerprint');
  disposeBase(b);
  disposeBase(plain);
});

test('a metadata file beside the model sets the range and default cut; the flag still wins', async () => {
  const dir = path.join(tmpDir(), 'withmeta');
  const copy = await writeTinyBase(dir);
  writeFileSync(
    path.join(dir, BASE_METADATA_FILE),
    JSON.stringify({ inputRange: [-1, 1], defaultCut: 'block_1_add', name: 'tiny' }),
  );
  const b = await loadBase(copy);
  assert.equal(b.preprocessing.offset, -1);
  assert.equal(b.defaultCut, 'block_1_add');
  assert.equal(b.name, 'tiny');
  const overridden = await loadBase(copy, { inputRange: [0, 2] });
  assert.equal(overridden.preprocessing.offset, 0);
  disposeBase(b);
  disposeBase(overridden);
});

test('an http(s) URL to a model.json loads, following weightsManifest', async () => {
  const dir = path.dirname(file);
  let requests = 0;
  const server = createServer((req, res) => {
    requests++;
    try {
      res.end(readFileSync(path.join(dir, path.basename(req.url ?? ''))));
    } catch {
      res.statusCode = 404;
      res.end();
    }
  });
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/model.json`;
  try {
    const remote = await loadBase(url);
    const local = await loadBase(file);
    assert.equal(remote.kind, 'url');
    assert.equal(remote.id, local.id);
    assert.equal(requests, 2, 'model.json + weights.bin');
    await assert.rejects(loadBase(url.replace('model.json', 'nothing.json')), /HTTP 404/);
    disposeBase(remote);
    disposeBase(local);
  } finally {
    server.close();
  }
});

test('bad base specs are one-line errors naming the path', async () => {
  await assert.rejects(
    loadBase('/nonexistent/model.json'),
    (e: Error) => e.message.includes('/nonexistent/model.json') && !e.message.includes('\n'),
  );
  const dir = tmpDir();
  writeFileSync(path.join(dir, 'model.json'), '{"not": "a model"}');
  await assert.rejects(loadBase(path.join(dir, 'model.json')), /not a TF.js model.json/);
  writeFileSync(path.join(dir, 'model.json'), '{oops');
  await assert.rejects(loadBase(path.join(dir, 'model.json')), /not valid JSON/);
});
