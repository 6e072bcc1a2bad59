/**
 * The networks that ship inside the `nsfwjs` npm package, read from its files so they work offline. nsfwjs stores
 * model.json and weight shards as CommonJS modules exporting a JSON object and a base64 string respectively.
 */
import { createRequire } from 'node:module';
import path from 'node:path';
import type { io } from '@tensorflow/tfjs-core';
import { BaseError } from '../util/errors.ts';

const require = createRequire(import.meta.url);

export interface BundledEntry {
  /** graft's name for the base. */
  name: string;
  /** Folder name under nsfwjs/dist/models. */
  folder: string;
  architecture: string;
  size: number;
  description: string;
}

export const BUNDLED: BundledEntry[] = [
  {
    name: 'nsfw-mobilenet-v2',
    folder: 'mobilenet_v2',
    architecture: 'MobileNetV2 1.0',
    size: 224,
    description: 'Keras MobileNetV2 (224 px) fine-tuned by nsfwjs for a 5-class content filter; bundled, offline',
  },
  {
    name: 'nsfw-inception-v3',
    folder: 'inception_v3',
    architecture: 'InceptionV3',
    size: 299,
    description: 'Keras InceptionV3 (299 px) fine-tuned by nsfwjs for a 5-class content filter; bundled, offline',
  },
];

/**
 * The nsfwjs package folder. nsfwjs is an optional peer dependency (its own peer, the whole @tensorflow/tfjs, is large),
 * so a missing package is a one-line error that says how to get it.
 */
export function nsfwjsRoot(): string {
  let entry: string;
  try {
    entry = require.resolve('nsfwjs');
  } catch {
    throw new BaseError(
      'not-installed',
      'nsfwjs',
      `the bundled bases (${BUNDLED.map((b) => b.name).join(', ')}) come with this package, which is not installed (npm install nsfwjs)`,
    );
  }
  // nsfwjs's exports map hides package.json, so climb from its resolved CommonJS entry (dist/cjs/index.js).
  return path.resolve(path.dirname(entry), '..', '..');
}

export function nsfwjsVersion(): string {
  return JSON.parse(require('node:fs').readFileSync(path.join(nsfwjsRoot(), 'package.json'), 'utf8')).version;
}

/** Reads a bundled network into TF.js model artifacts (topology + concatenated weights). */
export function bundledArtifacts(entry: BundledEntry): io.ModelArtifacts {
  const dir = path.join(nsfwjsRoot(), 'dist', 'models', entry.folder);
  const json = require(path.join(dir, 'model.min.js')) as {
    modelTopology: object;
    weightsManifest: { paths: string[]; weights: io.WeightsManifestEntry[] }[];
  };
  const specs: io.WeightsManifestEntry[] = [];
  const buffers: Buffer[] = [];
  for (const group of json.weightsManifest) {
    specs.push(...group.weights);
    for (const p of group.paths) {
      const b64 = require(path.join(dir, `${p.replace(/\.bin$/, '')}.min.js`)) as string;
      buffers.push(Buffer.from(b64, 'base64'));
    }
  }
  const all = Buffer.concat(buffers);
  return {
    modelTopology: json.modelTopology,
    weightSpecs: specs,
    weightData: all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength) as ArrayBuffer,
  };
}
