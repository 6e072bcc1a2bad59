/**
 * Reading TF.js Layers-format model files (model.json + weight shards) from disk or over http(s), without tfjs-node.
 * Weight files are found through `weightsManifest`, never by guessing their names.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type { io } from '@tensorflow/tfjs-core';

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
  } catch (e) {
    throw new Error(`${where}: not valid JSON (${(e as Error).message})`);
  }
  if (!json || typeof json !== 'object' || !json.modelTopology || !Array.isArray(json.weightsManifest)) {
    throw new Error(`${where}: not a TF.js model.json (needs modelTopology and weightsManifest)`);
  }
  return json;
}

/** Assembles artifacts from a parsed model.json and a reader for its weight files (paths relative to it). */
export async function assembleArtifacts(
  json: ModelJson,
  read: (relPath: string) => Promise<Uint8Array>,
): Promise<io.ModelArtifacts> {
  const specs: io.WeightsManifestEntry[] = [];
  const parts: Uint8Array[] = [];
  for (const group of json.weightsManifest) {
    specs.push(...group.weights);
    for (const p of group.paths) parts.push(await read(p));
  }
  const all = Buffer.concat(parts);
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
    throw new Error(`${file}: ${code === 'ENOENT' ? 'model file does not exist' : `cannot read model file (${code})`}`);
  }
  const json = parseModelJson(text, file);
  const dir = path.dirname(file);
  const artifacts = await assembleArtifacts(json, async (rel) => {
    try {
      return await readFile(path.join(dir, rel));
    } catch {
      throw new Error(`${file}: weight file '${rel}' named in weightsManifest is missing`);
    }
  });
  return { json, artifacts };
}

export async function fetchBytes(url: string): Promise<Uint8Array> {
  let res: Response;
  try {
    res = await fetch(url);
  } catch (e) {
    throw new Error(`${url}: cannot download (${(e as Error).cause ?? (e as Error).message})`);
  }
  if (!res.ok) throw new Error(`${url}: download failed with HTTP ${res.status}`);
  return new Uint8Array(await res.arrayBuffer());
}

export async function readRemoteModel(url: string): Promise<{ json: ModelJson; artifacts: io.ModelArtifacts }> {
  const json = parseModelJson(new TextDecoder().decode(await fetchBytes(url)), url);
  const artifacts = await assembleArtifacts(json, (rel) => fetchBytes(new URL(rel, url).toString()));
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
