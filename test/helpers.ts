/** Fixtures shared by the end-to-end tests: a tiny base network, small image sets, and a CLI runner. */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { serialiseLayersModel } from '../src/export/model-files.ts';
import { initTf, tfl } from '../src/tfjs/tf.ts';

export const SHARED = path.resolve('../shared');
export const HAVE_SHARED = existsSync(path.join(SHARED, 'data', 'hymenoptera'));
export const HYMENOPTERA = path.join(SHARED, 'data', 'hymenoptera');

export function tmpDir(prefix = 'graft-test-'): string {
  return mkdtempSync(path.join(os.tmpdir(), prefix));
}

/**
 * A small residual CNN (32x32 input) saved as a TF.js Layers model.json with random weights: fast enough for many
 * end-to-end runs, and shaped like the real bases (conv stem, a residual block that is not a cut point, pooling).
 */
export async function writeTinyBase(dir: string, seed = 1): Promise<string> {
  await initTf();
  const init = (s: number) => tfl.initializers.glorotUniform({ seed: seed * 100 + s });
  const input = tfl.input({ shape: [32, 32, 3], name: 'input_1' });
  const c1 = tfl.layers
    .conv2d({ filters: 8, kernelSize: 3, strides: 2, padding: 'same', name: 'stem_conv', kernelInitializer: init(1) })
    .apply(input);
  const r1 = tfl.layers.reLU({ name: 'stem_relu' }).apply(c1);
  const b1 = tfl.layers
    .conv2d({ filters: 8, kernelSize: 3, padding: 'same', name: 'block_1_conv', kernelInitializer: init(2) })
    .apply(r1);
  const b1r = tfl.layers.reLU({ name: 'block_1_relu' }).apply(b1);
  const add = tfl.layers.add({ name: 'block_1_add' }).apply([r1, b1r] as never);
  const c2 = tfl.layers
    .conv2d({ filters: 16, kernelSize: 3, strides: 2, padding: 'same', name: 'top_conv', kernelInitializer: init(3) })
    .apply(add);
  const r2 = tfl.layers.reLU({ name: 'top_relu' }).apply(c2);
  const gap = tfl.layers.globalAveragePooling2d({ name: 'pool' }).apply(r2);
  const out = tfl.layers
    .dense({ units: 4, activation: 'softmax', name: 'predictions', kernelInitializer: init(4) })
    .apply(gap);
  const model = tfl.model({ inputs: input, outputs: out as never, name: 'tiny' });
  const { modelJson, weights } = await serialiseLayersModel(model);
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, 'model.json'), JSON.stringify(modelJson));
  writeFileSync(path.join(dir, 'weights.bin'), weights);
  return path.join(dir, 'model.json');
}

/** Class folders of solid-ish images whose colour depends on the class, with per-image noise: easy to separate. */
export async function writeColourDataset(dir: string, classes: string[], perClass: number, size = 40): Promise<string> {
  const palette = [
    [220, 40, 40],
    [40, 200, 60],
    [40, 60, 220],
    [230, 200, 40],
  ];
  let rnd = 12345;
  const next = () => {
    rnd = (rnd * 1103515245 + 12345) & 0x7fffffff;
    return rnd / 0x7fffffff;
  };
  for (const [ci, c] of classes.entries()) {
    mkdirSync(path.join(dir, c), { recursive: true });
    for (let i = 0; i < perClass; i++) {
      const px = Buffer.alloc(size * size * 3);
      for (let p = 0; p < size * size; p++) {
        for (let ch = 0; ch < 3; ch++)
          px[p * 3 + ch] = Math.max(0, Math.min(255, palette[ci % 4][ch] + Math.round((next() - 0.5) * 120)));
      }
      await sharp(px, { raw: { width: size, height: size, channels: 3 } })
        .png()
        .toFile(path.join(dir, c, `${c}-${i}.png`));
    }
  }
  return dir;
}

export interface CliResult {
  status: number;
  stdout: string;
  stderr: string;
  json?: Record<string, unknown>;
}

/** Runs the CLI exactly as `npm run graft -- ...` does. */
export function runCli(args: string[], env: Record<string, string> = {}): CliResult {
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], {
    encoding: 'utf8',
    env: { ...process.env, ...env },
    maxBuffer: 64 * 1024 * 1024,
  });
  const lines = r.stdout.trim().split('\n');
  let json: Record<string, unknown> | undefined;
  try {
    json = JSON.parse(lines[lines.length - 1]);
  } catch {
    json = undefined;
  }
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr, json };
}

/** Deterministic pixels in (0, 255]: seeded so a failure reproduces, never zero so padding bugs cannot hide. */
export function seededPixels(count: number, seed: number): Float32Array {
  const out = new Float32Array(count);
  let s = seed >>> 0;
  for (let i = 0; i < count; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = 1 + (s / 2 ** 32) * 254;
  }
  return out;
}

/** A loopback port nothing listens on (fetch refuses well-known ports such as 1 outright, which tests nothing). */
export function closedPort(): Promise<number> {
  const s = createServer();
  return new Promise((resolve) =>
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as AddressInfo;
      s.close(() => resolve(port));
    }),
  );
}

/** Images whose left and right halves differ (a horizontal ramp plus noise), so a mirror changes the activations. */
export async function writeRampDataset(dir: string, classes: string[], perClass: number): Promise<string> {
  let s = 99;
  const next = () => {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    return s / 2 ** 32;
  };
  for (const [ci, c] of classes.entries()) {
    mkdirSync(path.join(dir, c), { recursive: true });
    for (let i = 0; i < perClass; i++) {
      const size = 40;
      const px = Buffer.alloc(size * size * 3);
      for (let y = 0; y < size; y++) {
        for (let x = 0; x < size; x++) {
          const ramp = ci === 0 ? x * 6 : 255 - x * 6;
          for (let ch = 0; ch < 3; ch++)
            px[(y * size + x) * 3 + ch] = Math.max(0, Math.min(255, ramp + ch * 40 + Math.round((next() - 0.5) * 60)));
        }
      }
      await sharp(px, { raw: { width: size, height: size, channels: 3 } })
        .png()
        .toFile(path.join(dir, c, `${c}-${i}.png`));
    }
  }
  return dir;
}
