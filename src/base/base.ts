/**
 * A Base is a pretrained network plus what is needed to feed it: preprocessing, default cut, provenance.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import type { io } from '@tensorflow/tfjs-core';
import { initTf, tf, tfl } from '../engines/tf.ts';
import { type ModelJson, fingerprint, readLocalModel, readRemoteModel } from './artifacts.ts';
import { BUNDLED, bundledArtifacts } from './bundled.ts';
import { defaultCut } from './graph.ts';
import { type Preprocessing, fromRange } from './preprocessing.ts';

export type BaseKind = 'bundled' | 'file' | 'url' | 'zoo';

export interface Base {
  /** Name shown to users and recorded in metadata (bundled name, or the path/URL given). */
  name: string;
  /** Content fingerprint of topology + weights; part of every activation cache key. */
  id: string;
  kind: BaseKind;
  /** Where the files came from (path or URL). */
  source: string;
  model: tfl.LayersModel;
  preprocessing: Preprocessing;
  /** The layer graft cuts at when the user names none: the one below the base's own classifier. */
  defaultCut: string;
  /** Raw files, kept so exports and converters can re-read the original network. */
  artifacts: io.ModelArtifacts;
}

export interface BaseOptions {
  /** Pixel range the network expects, e.g. [-1, 1]; overrides the metadata file. Default [0, 1]. */
  inputRange?: [number, number];
}

/** Name of the optional metadata file read from beside a local model.json. */
export const BASE_METADATA_FILE = 'graft-base.json';

export interface BaseMetadataFile {
  inputRange?: [number, number];
  resize?: Preprocessing['resize'];
  defaultCut?: string;
  name?: string;
}

export const DEFAULT_BASE = 'nsfw-mobilenet-v2';

/** Loads a base by bundled name, local model.json path (or its folder), or http(s) URL. */
export async function loadBase(spec: string = DEFAULT_BASE, options: BaseOptions = {}): Promise<Base> {
  await initTf();
  const bundled = BUNDLED.find((b) => b.name === spec);
  if (bundled) {
    const artifacts = bundledArtifacts(bundled);
    // nsfwjs divides pixels by 255 before its networks: input range [0, 1].
    return finish(spec, 'bundled', `nsfwjs/dist/models/${bundled.folder}`, artifacts, options.inputRange ?? [0, 1], {});
  }
  if (/^https?:\/\//i.test(spec)) {
    const { json, artifacts } = await readRemoteModel(spec);
    return finish(spec, 'url', spec, artifacts, options.inputRange ?? [0, 1], metaOf(json));
  }
  let file = spec;
  if (existsSync(file) && statSync(file).isDirectory()) file = path.join(file, 'model.json');
  if (!existsSync(file)) {
    const names = BUNDLED.map((b) => b.name).join(', ');
    throw new Error(`${spec}: no such base (not a bundled name [${names}], a model.json path or an http(s) URL)`);
  }
  const { json, artifacts } = await readLocalModel(file);
  const meta = { ...metaOf(json), ...readMetadataFile(path.dirname(file)) };
  return finish(meta.name ?? spec, 'file', path.resolve(file), artifacts, options.inputRange ?? meta.inputRange ?? [0, 1], meta);
}

function metaOf(json: ModelJson): BaseMetadataFile {
  const g = (json as { graft?: BaseMetadataFile }).graft;
  return g && typeof g === 'object' ? g : {};
}

function readMetadataFile(dir: string): BaseMetadataFile {
  const file = path.join(dir, BASE_METADATA_FILE);
  if (!existsSync(file)) return {};
  try {
    return JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new Error(`${file}: not valid JSON (${(e as Error).message})`);
  }
}

async function finish(
  name: string,
  kind: BaseKind,
  source: string,
  artifacts: io.ModelArtifacts,
  range: [number, number],
  meta: BaseMetadataFile,
): Promise<Base> {
  let model: tfl.LayersModel;
  try {
    model = await tfl.loadLayersModel(tf.io.fromMemory(artifacts));
  } catch (e) {
    throw new Error(`${source}: cannot build a TF.js Layers model (${(e as Error).message})`);
  }
  const shape = model.inputs[0].shape;
  if (shape.length !== 4 || shape[3] !== 3 || !shape[1] || !shape[2]) {
    throw new Error(`${source}: expected an image input [batch, height, width, 3], found ${JSON.stringify(shape)}`);
  }
  const preprocessing = fromRange([shape[1], shape[2]], range[0], range[1], meta.resize ?? 'cover');
  return {
    name,
    id: fingerprint(artifacts),
    kind,
    source,
    model,
    preprocessing,
    defaultCut: meta.defaultCut ?? defaultCut(model),
    artifacts,
  };
}
