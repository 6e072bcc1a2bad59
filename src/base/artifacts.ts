/**
 * Reading TF.js Layers-format model files (model.json + weight shards) from disk or over http(s), without tfjs-node.
 * Weight files are found through `weightsManifest`, never by guessing their names.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type { io } from '@tensorflow/tfjs-core';
import { BaseError, DownloadError, hasUnprintable } from '../util/errors.ts';

export interface ModelJson {
  format?: string;
  modelTopology: object;
  weightsManifest: { paths: string[]; weights: io.WeightsManifestEntry[] }[];
  [key: string]: unknown;
}

export function parseModelJson(text: string, where: string): ModelJson {
  let json: ModelJson;
  try {
    json = JSON.parse(text);
  } catch {
    // JSON.parse quotes the text it failed on: never echo a binary file's bytes into a message.
    const binary = hasUnprintable(text.slice(0, 512));
    throw new BaseError(
      'not-a-model',
      where,
      binary
        ? 'not a model: binary data, neither a model.json nor an .onnx file'
        : 'not valid JSON, so not a model.json (damaged or truncated?)',
    );
  }
  if (!json || typeof json !== 'object' || !json.modelTopology || !Array.isArray(json.weightsManifest)) {
    throw new BaseError('not-a-model', where, 'not a TF.js model.json (needs modelTopology and weightsManifest)');
  }
  return json;
}

/** Assembles artifacts from a parsed model.json and a reader for its weight files (paths relative to it). */
export async function assembleArtifacts(
  json: ModelJson,
  read: (relPath: string) => Promise<Uint8Array>,
  where = 'model.json',
): Promise<io.ModelArtifacts> {
  const specs: io.WeightsManifestEntry[] = [];
  const parts: Uint8Array[] = [];
  for (const group of json.weightsManifest) {
    specs.push(...group.weights);
    for (const p of group.paths) parts.push(await read(p));
  }
  const all = Buffer.concat(parts);
  // TF.js would fail later with an internal message that names no file; say which file is short.
  const expected = weightDataBytes(specs);
  if (expected !== undefined && all.byteLength !== expected) {
    const files = json.weightsManifest.flatMap((g) => g.paths).join(', ');
    throw new BaseError(
      'truncated',
      where,
      `weight data (${files}) is ${all.byteLength} bytes, the weightsManifest describes ${expected}: truncated or from another model`,
    );
  }
  return {
    modelTopology: json.modelTopology,
    format: json.format,
    weightSpecs: specs,
    weightData: all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength) as ArrayBuffer,
  };
}

export async function readLocalModel(file: string): Promise<{ json: ModelJson; artifacts: io.ModelArtifacts }> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new BaseError(
      code === 'ENOENT' ? 'not-found' : 'unreadable',
      file,
      code === 'ENOENT' ? 'model file does not exist' : `cannot read model file (${code})`,
    );
  }
  const json = parseModelJson(text, file);
  const dir = path.dirname(file);
  const artifacts = await assembleArtifacts(
    json,
    async (rel) => {
      try {
        return await readFile(path.join(dir, rel));
      } catch {
        throw new BaseError('not-found', file, `weight file '${rel}' named in weightsManifest is missing`);
      }
    },
    file,
  );
  return { json, artifacts };
}

export async function fetchBytes(url: string): Promise<Uint8Array> {
  let res: Response;
  try {
    res = await fetch(url);
  } catch (e) {
    throw new DownloadError(
      'network',
      url,
      `${url}: cannot download (${(e as Error).cause ?? (e as Error).message})`,
      e,
    );
  }
  if (!res.ok) throw new DownloadError('http-status', url, `${url}: download failed with HTTP ${res.status}`);
  return new Uint8Array(await res.arrayBuffer());
}

export async function readRemoteModel(url: string): Promise<{ json: ModelJson; artifacts: io.ModelArtifacts }> {
  const json = parseModelJson(new TextDecoder().decode(await fetchBytes(url)), url);
  const artifacts = await assembleArtifacts(json, (rel) => fetchBytes(new URL(rel, url).toString()), url);
  return { json, artifacts };
}

/** A short content fingerprint of a network: same topology and weights, same id, wherever it was loaded from. */
export function fingerprint(artifacts: io.ModelArtifacts): string {
  const h = createHash('sha256');
  h.update(JSON.stringify(artifacts.modelTopology));
  h.update(JSON.stringify(artifacts.weightSpecs));
  const data = artifacts.weightData;
  if (data instanceof ArrayBuffer) h.update(new Uint8Array(data));
  else if (Array.isArray(data)) for (const d of data) h.update(new Uint8Array(d));
  return h.digest('hex').slice(0, 16);
}

const BYTES: Record<string, number> = { float32: 4, int32: 4, bool: 1, uint8: 1, int16: 2, float16: 2, complex64: 8 };

/** The byte length weight data must have for these specs; undefined when it cannot be known (string tensors). */
export function weightDataBytes(specs: io.WeightsManifestEntry[]): number | undefined {
  let n = 0;
  for (const w of specs) {
    const per = BYTES[w.quantization?.dtype ?? w.dtype];
    if (per === undefined) return undefined;
    n += w.shape.reduce((a, b) => a * b, 1) * per;
  }
  return n;
}

/** Bytes one weight takes in the weight data (quantised weights as stored). */
function storedBytes(spec: io.WeightsManifestEntry): number {
  const n = weightDataBytes([spec]);
  if (n === undefined) throw new BaseError('unsupported', spec.name, `${spec.dtype} weights cannot be fingerprinted`);
  return n;
}

/**
 * SHA-256 of a network's weights alone, independent of how they are stored: each tensor is hashed with its dtype and
 * shape, and the sorted list of those hashes is hashed again. Sharding, file names, weight names and their order do
 * not change it; any changed value does. What a zoo pin holds (see ZooEntry.weightsSha256).
 */
export function weightsDigest(artifacts: io.ModelArtifacts): string {
  const data = artifacts.weightData;
  const bytes =
    data instanceof ArrayBuffer
      ? new Uint8Array(data)
      : Buffer.concat((data as ArrayBuffer[] | undefined)?.map((d) => new Uint8Array(d)) ?? []);
  const hashes: string[] = [];
  let offset = 0;
  for (const spec of artifacts.weightSpecs ?? []) {
    const size = storedBytes(spec);
    if (offset + size > bytes.byteLength)
      throw new BaseError('truncated', spec.name, 'the weight data ends before this weight does');
    const h = createHash('sha256');
    h.update(`${spec.dtype}:${spec.quantization ? JSON.stringify(spec.quantization) : ''}:${spec.shape.join('x')}:`);
    h.update(bytes.subarray(offset, offset + size));
    hashes.push(h.digest('hex'));
    offset += size;
  }
  return createHash('sha256').update(hashes.sort().join('\n')).digest('hex');
}
