import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { closedPort } from '../../test/helpers.ts';
import { modelsCommand } from '../cli/models/index.ts';
import { DEFAULT_BASE, FALLBACK_BASE, loadBase, loadLayersBase } from './base.ts';
import { DEFAULT_ZOO_BASE, findZooEntry, ZOO } from './zoo.ts';

const ROOT = path.resolve(import.meta.dirname, '../..');
const MIRROR_ROOT = path.resolve(ROOT, '../shared/models/mirror');
const REL = 'teachable-machine-models/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top';
const skip = existsSync(path.join(MIRROR_ROOT, REL, 'model.json')) ? false : `${MIRROR_ROOT} is absent`;

test('zoo entries are well-formed and state URL, preprocessing and licence', () => {
  const names = new Set(ZOO.map((z) => z.name));
  assert.equal(names.size, ZOO.length, 'names are unique');
  for (const z of ZOO) {
    assert.match(z.url, /^https:\/\/storage\.googleapis\.com\/.+\/model\.json$/);
    assert.ok(z.licence.startsWith('Apache-2.0'));
    assert.ok(z.inputRange[0] < z.inputRange[1]);
  }
  for (const w of ['0.35', '0.50', '0.75', '1.00']) {
    const z = findZooEntry(`mobilenet_v2_${w}`);
    assert.ok(z);
    assert.equal(
      z.url,
      `https://storage.googleapis.com/teachable-machine-models/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_${w}_224_no_top/model.json`,
    );
    assert.equal(z.defaultCut, 'out_relu');
    // Teachable Machine's x/127 - 1, not the 1/127.5 a clean [-1, 1] range would give.
    assert.deepEqual(z.preprocessing, { scale: 1 / 127, offset: -1 });
  }
  const v1 = findZooEntry('mobilenet_v1_1.0_224');
  assert.equal(v1?.url, 'https://storage.googleapis.com/tfjs-models/tfjs/mobilenet_v1_1.0_224/model.json');
  assert.equal(v1?.defaultCut, 'conv_pw_13_relu');
  assert.equal(findZooEntry('mobilenet_v1_0.25_128')?.inputSize, 128);
  assert.equal(ZOO.filter((z) => z.architecture === 'MobileNet v1').length, 16);
  assert.equal(DEFAULT_BASE, DEFAULT_ZOO_BASE);
  assert.ok(findZooEntry(DEFAULT_BASE));
});

/** Static server over the shared mirror folder, counting requests. */
function serveMirror(): Promise<{ base: string; requests: () => number; close: () => Promise<void> }> {
  let n = 0;
  const server = http.createServer((req, res) => {
    n++;
    const file = path.join(MIRROR_ROOT, decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname));
    if (!file.startsWith(MIRROR_ROOT) || !existsSync(file) || !statSync(file).isFile())
      return void res.writeHead(404).end();
    const body = readFileSync(file);
    res.writeHead(200, { 'content-length': body.length }).end(body);
  });
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      resolve({
        base: `http://127.0.0.1:${port}`,
        requests: () => n,
        close: () => new Promise((r) => server.close(() => r())),
      });
    }),
  );
}

/**
 * The JSON line a command prints while `fn` runs. Only string writes starting with `{"<key>"` are taken: the test
 * runner talks to its parent over this same stdout, and its messages must pass through.
 */
async function captureJson(key: string, fn: () => Promise<unknown>): Promise<string> {
  const write = process.stdout.write;
  let out = '';
  process.stdout.write = ((chunk: string | Uint8Array, ...rest: unknown[]) => {
    if (typeof chunk === 'string' && chunk.startsWith(`{"${key}"`)) {
      out += chunk;
      return true;
    }
    return (write as (...a: unknown[]) => boolean).call(process.stdout, chunk, ...rest);
  }) as typeof process.stdout.write;
  try {
    await fn();
  } finally {
    process.stdout.write = write;
  }
  return out;
}

describe('zoo bases through loadBase and the CLI', { skip }, () => {
  let tmp: string;
  let srv: Awaited<ReturnType<typeof serveMirror>>;
  const saved = { cache: process.env.GRAFT_CACHE_DIR, mirror: process.env.GRAFT_MODEL_MIRROR };
  const useCache = (name: string) => {
    process.env.GRAFT_CACHE_DIR = path.join(tmp, name);
    return process.env.GRAFT_CACHE_DIR;
  };

  before(async () => {
    tmp = mkdtempSync(path.join(os.tmpdir(), 'graft-zoo-'));
    delete process.env.GRAFT_MODEL_MIRROR;
    srv = await serveMirror();
  });
  after(async () => {
    await srv.close();
    rmSync(tmp, { recursive: true, force: true });
    for (const [k, v] of [
      ['GRAFT_CACHE_DIR', saved.cache],
      ['GRAFT_MODEL_MIRROR', saved.mirror],
    ] as const) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  });

  test('a zoo name downloads through the mirror and loads with its preprocessing and cut; offline then needs no request', async () => {
    const cache = useCache('named');
    const base = await loadLayersBase('mobilenet_v2_0.35', { mirror: srv.base });
    assert.equal(base.kind, 'zoo');
    assert.equal(base.name, 'mobilenet_v2_0.35');
    assert.equal(base.source, findZooEntry('mobilenet_v2_0.35')?.url);
    assert.equal(base.defaultCut, 'out_relu');
    assert.equal(base.preprocessing.scale, 1 / 127);
    assert.equal(base.preprocessing.offset, -1);
    assert.deepEqual(base.preprocessing.size, [224, 224]);
    assert.deepEqual(base.model.outputs[0].shape, [null, 7, 7, 1280]);
    assert.equal(base.model.countParams(), 410_208);
    assert.equal(base.fallback, undefined);
    assert.ok(existsSync(path.join(cache, 'models', 'storage.googleapis.com', REL, 'model.json')));

    const n = srv.requests();
    const again = await loadBase('mobilenet_v2_0.35', { offline: true });
    assert.equal(srv.requests(), n);
    assert.equal(again.id, base.id);
    const ranged = await loadBase('mobilenet_v2_0.35', { offline: true, inputRange: [0, 1] });
    assert.equal(ranged.preprocessing.offset, 0, '--input-range still overrides the zoo preprocessing');
  });

  test('a cached weights file overwritten with same-size garbage is reported, downloaded again, never loaded', async () => {
    const cache = useCache('damaged');
    const good = await loadLayersBase('mobilenet_v2_0.35', { mirror: srv.base });
    assert.equal(good.repaired, undefined);
    const weights = path.join(cache, 'models', 'storage.googleapis.com', REL, 'weights.bin');
    writeFileSync(weights, Buffer.alloc(statSync(weights).size, 7));
    const again = await loadBase('mobilenet_v2_0.35', { mirror: srv.base });
    assert.deepEqual(again.repaired, ['weights.bin']);
    assert.equal(again.id, good.id, 'the weights loaded are the published ones');
    const third = await loadBase('mobilenet_v2_0.35', { offline: true });
    assert.equal(third.repaired, undefined, 'reported once');
  });

  test('no spec: the default zoo base when it can be had', async () => {
    useCache('default-ok');
    const base = await loadBase(undefined, { mirror: srv.base });
    assert.equal(base.name, DEFAULT_BASE);
    assert.equal(base.fallback, undefined);
  });

  test('no spec and no way to the default: the bundled base, with a one-line reason; named bases never fall back', async () => {
    useCache('default-missing');
    const port = await closedPort();
    const base = await loadBase(undefined, { mirror: `http://127.0.0.1:${port}` });
    assert.equal(base.kind, 'bundled');
    assert.equal(base.name, FALLBACK_BASE);
    assert.equal(base.fallback?.wanted, DEFAULT_BASE);
    assert.match(base.fallback?.reason ?? '', /^cannot download .*ECONNREFUSED/);
    assert.ok(!base.fallback?.reason.includes('\n'));

    const offline = await loadBase(undefined, { offline: true });
    assert.equal(offline.name, FALLBACK_BASE);
    assert.equal(offline.fallback?.reason, `${DEFAULT_BASE}: not in the cache and offline is set`);

    await assert.rejects(loadBase('mobilenet_v2_0.35', { offline: true }), /not in the cache and offline is set/);
    const bundled = await loadBase('nsfw-mobilenet-v2');
    assert.equal(bundled.fallback, undefined);
  });

  test('graft models pull downloads ahead of time; graft models lists the zoo with cache state', async () => {
    const cache = useCache('cli');
    const pulled = JSON.parse(
      await captureJson('pulled', () =>
        modelsCommand().parseAsync(['pull', 'mobilenet_v2_0.35', '--model-mirror', srv.base, '--json'], {
          from: 'user',
        }),
      ),
    );
    assert.deepEqual(pulled.pulled[0].downloaded, ['model.json', 'weights.bin']);
    await assert.rejects(modelsCommand().parseAsync(['pull', 'mobilenet_v1_1.0_224', '--offline'], { from: 'user' }), {
      message: 'mobilenet_v1_1.0_224: not in the cache and offline is set',
    });
    // Through the real entry point once, so registration and the last-line JSON contract are covered too.
    const cli = [path.join(ROOT, 'node_modules/tsx/dist/cli.mjs'), path.join(ROOT, 'src/cli/main.ts')];
    const env = { ...process.env, GRAFT_CACHE_DIR: cache };
    const list = await promisify(execFile)(process.execPath, [...cli, 'models', '--json'], { env, cwd: ROOT });
    const { models } = JSON.parse(list.stdout.trim().split('\n').at(-1) ?? '');
    const m = models.find((x: { name: string }) => x.name === 'mobilenet_v2_0.35');
    assert.equal(m.cached, true);
    assert.equal(m.cachedFiles.length, 2);
    assert.equal(models.find((x: { name: string }) => x.name === 'mobilenet_v2_1.00').cached, false);
  });
});
