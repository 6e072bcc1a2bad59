/**
 * `graft/predict` in a real browser against `graft predict` in Node, on models trained on hymenoptera with the default
 * base (through a local mirror): one with the default `--resize cover`, one with `--crop 0.875`. A page bundled by
 * esbuild imports `graft/predict`, loads each model folder over HTTP and classifies 20 validation images given as
 * <img> elements; top-1 must be identical to `graft predict`'s (the Predictor it runs) and every probability within
 * 0.01. Also measured and written to
 * test-artifacts/predict-browser.json: how far Chromium's JPEG decoding moves the network's input pixels.
 */
import assert from 'node:assert/strict';
import { createReadStream, existsSync, mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { build } from 'esbuild';
import { DEFAULT_BASE } from '../src/base/base.ts';
import { decodeImage } from '../src/dataset/decode.ts';
import { Predictor, train } from '../src/index.ts';
import { artifactPath, browserSkipReason, launchBrowser, watchPage } from './browser.ts';

const ROOT = path.resolve(import.meta.dirname, '..');
const SHARED = path.resolve(ROOT, '..', 'shared');
const HYM = path.join(SHARED, 'data', 'hymenoptera');
const MIRROR = path.join(SHARED, 'models', 'mirror');
const skip =
  !existsSync(HYM) || !existsSync(MIRROR) ? `needs ${SHARED} (hymenoptera and the model mirror)` : browserSkipReason();

const dir = mkdtempSync(path.join(os.tmpdir(), 'graft-predict-web-'));
let server: Server;
let origin = '';

/** Serves the page, its bundle, the model folders and images, and the model mirror, on a free loopback port. */
function serve(routes: Record<string, string>, bundle: string): Promise<void> {
  const types: Record<string, string> = { '.html': 'text/html', '.js': 'text/javascript', '.json': 'application/json' };
  server = createServer((req, res) => {
    const url = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
    if (url === '/') {
      res.writeHead(200, { 'content-type': 'text/html' });
      return res.end('<!doctype html><meta charset="utf-8"><script type="module" src="/page.js"></script>');
    }
    if (url === '/favicon.ico') {
      res.writeHead(204);
      return res.end();
    }
    if (url === '/page.js') {
      res.writeHead(200, { 'content-type': 'text/javascript' });
      return res.end(bundle);
    }
    const prefix = Object.keys(routes).find((p) => url.startsWith(p));
    const file = prefix && path.join(routes[prefix], url.slice(prefix.length));
    if (!file || !existsSync(file) || !statSync(file).isFile()) {
      res.writeHead(404);
      return res.end();
    }
    res.writeHead(200, { 'content-type': types[path.extname(file)] ?? 'application/octet-stream' });
    createReadStream(file).pipe(res);
  });
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => {
      origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      resolve();
    }),
  );
}

// The page: the host app picks the backend (WebGL, as most sites would), graft/predict does the rest.
const PAGE = `
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-webgl';
import '@tensorflow/tfjs-backend-cpu';
import { loadModel } from 'graft/predict';
window.classify = async (modelUrl, imageUrls) => {
  if (!(await tf.setBackend('webgl').catch(() => false))) await tf.setBackend('cpu');
  await tf.ready();
  const model = await loadModel(modelUrl);
  const rows = [];
  for (const url of imageUrls) {
    const img = new Image();
    img.src = url;
    await img.decode();
    const [p] = await model.probabilities([img]);
    const top = await model.predict(img, { topK: 1 });
    let s = '';
    for (const b of model.networkInput(img)) s += String.fromCharCode(b);
    rows.push({ url, probabilities: Array.from(p), top: top[0].label, input: btoa(s) });
    // What a user would see: the image and graft's answer for it.
    const fig = document.createElement('figure');
    fig.style.cssText = 'display:inline-block;margin:4px;font:12px sans-serif;width:112px';
    img.style.cssText = 'width:112px;height:112px;object-fit:cover';
    const cap = document.createElement('figcaption');
    cap.textContent = top[0].label + ' ' + top[0].probability.toFixed(3);
    fig.append(img, cap);
    document.body.append(fig);
  }
  const labels = model.labels;
  model.dispose();
  return { backend: tf.getBackend(), labels, rows };
};
window.ready = true;
`;

before(async () => {
  if (skip) return;
  const bundled = await build({
    stdin: { contents: PAGE, resolveDir: ROOT, loader: 'js' },
    bundle: true,
    format: 'esm',
    platform: 'browser',
    write: false,
    alias: { 'graft/predict': './src/predict/web.ts' },
    logLevel: 'silent',
  });
  await serve({ '/mirror/': MIRROR, '/models/': dir, '/images/': path.join(HYM, 'val') }, bundled.outputFiles[0].text);
});

after(() => server?.close());

/** 10 ants and 10 bees from the validation set, by name. */
const IMAGES = ['ants', 'bees'].flatMap((c) =>
  readdirSync(path.join(HYM, 'val', c))
    .sort()
    .slice(0, 10)
    .map((f) => `${c}/${f}`),
);

test('graft/predict in Chromium agrees with graft predict: same top-1, probabilities within 0.01', {
  skip,
}, async (t) => {
  process.env.GRAFT_CACHE_DIR = path.join(dir, 'cache');
  const models = { cover: {}, crop: { crop: 0.875 } } as const;
  const browser = await launchBrowser();
  const report: Record<string, unknown> = {};
  try {
    const page = await browser.newPage();
    const watch = watchPage(page, [origin]);
    await page.goto(`${origin}/`);
    await page.waitForFunction(() => (window as unknown as { ready?: boolean }).ready === true);
    for (const [name, options] of Object.entries(models)) {
      const out = path.join(dir, name);
      // Parity, not accuracy, is under test: the training images alone, no augmentation, keep it quick.
      await train({
        data: path.join(HYM, 'train'),
        valSplit: 0,
        mirror: `${origin}/mirror/`,
        augment: 'none',
        out,
        ...options,
      });
      const meta = JSON.parse(readFileSync(path.join(out, 'graft.json'), 'utf8'));
      assert.equal(meta.base.name, DEFAULT_BASE, 'trained on the default base');
      assert.equal(meta.preprocessing.crop, 'crop' in options ? 0.875 : undefined);
      const files = IMAGES.map((f) => path.join(HYM, 'val', f));
      // What `graft predict MODEL FILES --top 2` runs (sharp decodes, graft resizes, ONNX Runtime or TF.js WASM).
      const predictor = await Predictor.load(out);
      const node = (await predictor.predictFiles(files, { topK: 2 })).predictions;
      predictor.dispose();
      const web = await page.evaluate(
        ([m, urls]) =>
          (
            window as unknown as {
              classify: (
                m: string,
                u: string[],
              ) => Promise<{
                backend: string;
                labels: string[];
                rows: { url: string; probabilities: number[]; top: string; input: string }[];
              }>;
            }
          ).classify(m, urls),
        [`${origin}/models/${name}/`, IMAGES.map((f) => `${origin}/images/${f}`)] as const,
      );
      let maxProb = 0;
      let maxPixel = 0;
      let differing = 0;
      let values = 0;
      for (const [i, row] of web.rows.entries()) {
        const want = node[i];
        assert.equal(want.file, files[i]);
        assert.equal(row.top, want.top[0].label, `${IMAGES[i]}: top-1`);
        for (const { label, probability } of want.top) {
          const got = row.probabilities[web.labels.indexOf(label)];
          maxProb = Math.max(maxProb, Math.abs(got - probability));
          assert.ok(Math.abs(got - probability) <= 0.01, `${name} ${IMAGES[i]} ${label}: ${got} vs ${probability}`);
        }
        // The network input each side built: the same resampler, so only the JPEG decoders can differ.
        const mine = await decodeImage(readFileSync(files[i]), files[i], meta.preprocessing);
        const theirs = Buffer.from(row.input, 'base64');
        assert.equal(theirs.length, mine.length);
        for (let k = 0; k < mine.length; k++) {
          const d = Math.abs(mine[k] - theirs[k]);
          if (d) differing++;
          maxPixel = Math.max(maxPixel, d);
        }
        values += mine.length;
      }
      await page.screenshot({ path: artifactPath(`predict-browser-${name}.png`), fullPage: true });
      await page.evaluate(() => {
        document.body.textContent = '';
      });
      report[name] = {
        backend: web.backend,
        images: web.rows.length,
        maxProbabilityDifference: maxProb,
        maxInputPixelDifference: maxPixel,
        inputValuesDiffering: differing / values,
      };
      t.diagnostic(`${name}: ${JSON.stringify(report[name])}`);
    }
    assert.deepEqual(watch.errors, [], 'console errors');
    assert.deepEqual(watch.requests, [], 'the page reaches nothing but the test server');
  } finally {
    await browser.close();
    writeFileSync(artifactPath('predict-browser.json'), `${JSON.stringify(report, null, 2)}\n`);
  }
});
