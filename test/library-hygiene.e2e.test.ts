/**
 * graft as a guest in someone else's TF.js: loading a base keeps the backend the host chose and registers no kernels
 * or gradients; with no backend chosen, graft starts its default (WASM). Each case runs in a fresh process, since
 * TF.js's backend and kernel registry are process-wide.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { before, test } from 'node:test';
import { artifactPath } from './browser.ts';
import { tmpDir, writeTinyBase } from './helpers.ts';

const ROOT = path.resolve(import.meta.dirname, '..');
let base: string;

before(async () => {
  base = await writeTinyBase(path.join(tmpDir(), 'base'));
});

/** Runs a module in a fresh Node process (from inside the checkout, so packages resolve) and returns its JSON line. */
function host(name: string, body: string): Record<string, unknown> {
  const file = artifactPath(`${name}.mts`);
  writeFileSync(
    file,
    `import * as tf from '@tensorflow/tfjs-core';\nimport * as graft from ${JSON.stringify(path.join(ROOT, 'src', 'index.ts'))};\n${body}`,
  );
  const r = spawnSync(process.execPath, ['--import', 'tsx', file], { cwd: ROOT, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout.trim().split('\n').at(-1)!);
}

test('loadBase uses the backend the host set and registers nothing', () => {
  const r = host(
    'host-cpu',
    `import '@tensorflow/tfjs-backend-cpu';
await tf.setBackend('cpu');
const gradient = tf.getGradient('FusedBatchNorm');
const b = await graft.loadBase(${JSON.stringify(base)});
console.log(JSON.stringify({
  backend: tf.getBackend(),
  wasmGradientKernel: tf.getKernel('Conv2DBackpropFilter', 'wasm') !== undefined,
  sameBatchNormGradient: tf.getGradient('FusedBatchNorm') === gradient,
  format: b.format,
}));
graft.disposeBase(b);`,
  );
  assert.deepEqual(r, { backend: 'cpu', wasmGradientKernel: false, sameBatchNormGradient: true, format: 'layers' });
});

test('with no backend chosen, loadBase starts WASM, still without gradient kernels', () => {
  const r = host(
    'host-none',
    `const b = await graft.loadBase(${JSON.stringify(base)});
console.log(JSON.stringify({
  backend: tf.getBackend(),
  wasmGradientKernel: tf.getKernel('Conv2DBackpropFilter', 'wasm') !== undefined,
}));
graft.disposeBase(b);`,
  );
  assert.deepEqual(r, { backend: 'wasm', wasmGradientKernel: false });
});
