import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import type { io } from '@tensorflow/tfjs-core';
import { closedPort } from '../../test/helpers.ts';
import { modelsCommand } from '../cli/models/index.ts';
import { serialiseLayersModel } from '../export/model-files.ts';
import { initTf, tfl } from '../tfjs/tf.ts';
import { weightsDigest } from './artifacts.ts';
import { DEFAULT_BASE, disposeBase, FALLBACK_BASE, loadBase, loadLayersBase } from './base.ts';
import { defaultCut } from './graph.ts';
import { DEFAULT_ZOO_BASE, findZooEntry, ZOO, type ZooEntry } from './zoo.ts';

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

test('weightsDigest holds the values, not the layout: re-sharded, renamed and reordered weights match, one changed byte does not', async () => {
  await initTf();
  const input = tfl.input({ shape: [4] });
  const h = tfl.layers.dense({ units: 3, name: 'a' }).apply(input);
  const out = tfl.layers.dense({ units: 2, name: 'b' }).apply(h) as tfl.SymbolicTensor;
  const model = tfl.model({ inputs: input, outputs: out });
  const { modelJson, weights } = await serialiseLayersModel(model);
  model.dispose();
  const specs = (modelJson as { weightsManifest: { weights: io.WeightsManifestEntry[] }[] }).weightsManifest[0].weights;
  const buffer = (b: Uint8Array) => b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer;
  const one: io.ModelArtifacts = { weightSpecs: specs, weightData: buffer(weights) };
  // The same tensors in reverse order, under other names, in two shards.
  const sizes = specs.map((w) => w.shape.reduce((a, b) => a * b, 1) * 4);
  const starts = sizes.map((_, i) => sizes.slice(0, i).reduce((a, b) => a + b, 0));
  const order = [...specs.keys()].reverse();
  const bytes = Buffer.concat(order.map((i) => weights.subarray(starts[i], starts[i] + sizes[i])));
  const cut = sizes[order[0]];
  const other: io.ModelArtifacts = {
    weightSpecs: order.map((i, k) => ({ ...specs[i], name: `renamed_${k}` })),
    weightData: [buffer(bytes.subarray(0, cut)), buffer(bytes.subarray(cut))] as unknown as ArrayBuffer,
  };
  assert.equal(weightsDigest(other), weightsDigest(one));
  const changed = Buffer.from(weights);
  changed[5] ^= 1;
  assert.notEqual(weightsDigest({ weightSpecs: specs, weightData: buffer(changed) }), weightsDigest(one));
  // A tensor reshaped is another network.
  const reshaped = specs.map((w, i) => (i === 0 ? { ...w, shape: [...w.shape].reverse() } : w));
  assert.notEqual(weightsDigest({ weightSpecs: reshaped, weightData: buffer(weights) }), weightsDigest(one));
});

/** Static server over a mirror folder (default the shared one), counting requests. */
function serveMirror(
  root = MIRROR_ROOT,
): Promise<{ base: string; requests: () => number; close: () => Promise<void> }> {
  let n = 0;
  const server = http.createServer((req, res) => {
    n++;
    const file = path.join(root, decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname));
    if (!file.startsWith(root) || !existsSync(file) || !statSync(file).isFile()) return void res.writeHead(404).end();
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

  test('mobilenet_v1_0.75_224 from the mirror: its entry’s preprocessing by default, the flags override it, the cut below its classifier', async (t) => {
    const entry = findZooEntry('mobilenet_v1_0.75_224') as ZooEntry;
    const rel = new URL(entry.url).pathname;
    if (!existsSync(path.join(MIRROR_ROOT, rel))) return t.skip(`${path.join(MIRROR_ROOT, rel)} is absent`);
    useCache('v1');
    const b = await loadLayersBase('mobilenet_v1_0.75_224', { mirror: srv.base });
    try {
      // Measured: the plain whole image, fitted by cover, beat the central crop on the validation images.
      assert.equal(b.preprocessing.crop ?? 1, entry.crop ?? 1);
      assert.equal(entry.crop ?? 1, 1);
      assert.equal(b.preprocessing.resize, 'cover');
      assert.equal(b.defaultCut, 'conv_pw_13_relu');
      // The graph rule finds the same cut on its own: below pooling, reshape, dropout, the 1x1 conv_preds and softmax.
      assert.equal(defaultCut(b.model), 'conv_pw_13_relu');
    } finally {
      disposeBase(b);
    }
    const plain = await loadBase('mobilenet_v1_0.75_224', { offline: true, crop: 0.875, resize: 'fill' });
    assert.equal(plain.preprocessing.crop, 0.875);
    assert.equal(plain.preprocessing.resize, 'fill');
    disposeBase(plain);
  });

  test('pinned weights: a mirror serving changed values is refused (and the copy removed), a re-sharded copy passes', async () => {
    // The default base, whichever it is, with one weight changed in its largest file.
    const entry = findZooEntry(DEFAULT_BASE) as ZooEntry;
    assert.ok(entry.weightsSha256, 'the default base is pinned');
    const rel = path.dirname(new URL(entry.url).pathname);
    const tampered = path.join(tmp, 'tampered-mirror');
    cpSync(path.join(MIRROR_ROOT, rel), path.join(tampered, rel), { recursive: true });
    const largest = readdirSync(path.join(tampered, rel))
      .map((f) => path.join(tampered, rel, f))
      .sort((a, b) => statSync(b).size - statSync(a).size)[0];
    const w = readFileSync(largest);
    w.writeFloatLE(w.readFloatLE(4000) + 0.5, 4000);
    writeFileSync(largest, w);
    const bad = await serveMirror(tampered);
    try {
      const cache = useCache('tampered');
      await assert.rejects(loadBase(DEFAULT_BASE, { mirror: bad.base }), {
        message: new RegExp(
          `^${DEFAULT_BASE.replace(/\./g, '\\.')}: the downloaded weights differ from the pinned SHA-256 .*; refused and removed from the cache$`,
        ),
      });
      assert.ok(!existsSync(path.join(cache, 'models', 'storage.googleapis.com', rel)), 'the refused copy is gone');
      const fallback = await loadBase(undefined, { mirror: bad.base });
      assert.equal(fallback.name, FALLBACK_BASE);
      assert.match(fallback.fallback?.reason ?? '', /differ from the pinned SHA-256/);
    } finally {
      await bad.close();
    }
    // The same values re-laid out in two shards under a new model.json: the pin holds values, so it passes.
    const resharded = path.join(tmp, 'resharded-mirror');
    mkdirSync(path.join(resharded, REL), { recursive: true });
    const json = JSON.parse(readFileSync(path.join(MIRROR_ROOT, REL, 'model.json'), 'utf8'));
    const all = readFileSync(path.join(MIRROR_ROOT, REL, 'weights.bin'));
    const half = 4 * Math.floor(all.length / 8);
    writeFileSync(path.join(resharded, REL, 'part1.bin'), all.subarray(0, half));
    writeFileSync(path.join(resharded, REL, 'part2.bin'), all.subarray(half));
    json.weightsManifest[0].paths = ['part1.bin', 'part2.bin'];
    writeFileSync(path.join(resharded, REL, 'model.json'), JSON.stringify(json));
    const good = await serveMirror(resharded);
    try {
      useCache('resharded');
      const b = await loadBase('mobilenet_v2_0.35', { mirror: good.base });
      assert.equal(b.name, 'mobilenet_v2_0.35');
      disposeBase(b);
    } finally {
      await good.close();
    }
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
    assert.equal(m.weightsSha256, findZooEntry('mobilenet_v2_0.35')?.weightsSha256);
    assert.equal(models.find((x: { name: string }) => x.name === 'mobilenet_v2_1.00').weightsSha256, undefined);
    const human = await promisify(execFile)(process.execPath, [...cli, 'models'], { env, cwd: ROOT });
    assert.match(human.stdout.split('\n')[0], /crop\s+resize\s+pinned/);
  });
});
