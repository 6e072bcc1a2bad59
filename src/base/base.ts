/**
 * A Base is a pretrained network plus what is needed to feed it: preprocessing, default cut, provenance.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import type { GraphModel } from '@tensorflow/tfjs-converter';
import type { io } from '@tensorflow/tfjs-core';
import { ensureTf, tf, tfl } from '../tfjs/tf.ts';
import { BaseError, GraftError, oneLine, opt, shown, UsageError, words } from '../util/errors.ts';
import { checkOneOf } from '../util/options.ts';
import type { ProgressCallback } from '../util/progress.ts';
import { fingerprint, type ModelJson, readLocalModel, readRemoteModel } from './artifacts.ts';
import { BUNDLED, bundledArtifacts } from './bundled.ts';
import { type ForeignTrunk, formatWords } from './foreign.ts';
import { defaultCut, layersTrunk, type TrunkSource } from './graph.ts';
import type { OnnxTrunkSpec } from './onnx-base.ts';
import { checkCrop, fromRange, type Preprocessing } from './preprocessing.ts';
import { DEFAULT_ZOO_BASE, findZooEntry, loadZooFiles, type ZooEntry } from './zoo.ts';

/** Why the default base was not used: the reason as one line, and the error itself for surfaces that word it their way. */
export interface Fallback {
  wanted: string;
  reason: string;
  error?: GraftError;
}

export type BaseKind = 'bundled' | 'file' | 'url' | 'zoo';

/** What every base has, whatever its format. */
interface BaseInfo {
  /** Name shown to users and recorded in metadata (bundled name, or the path/URL given). */
  name: string;
  /** Content fingerprint of topology + weights; part of every activation cache key. */
  id: string;
  kind: BaseKind;
  /** Where the files came from (path or URL). */
  source: string;
  preprocessing: Preprocessing;
  /** The layer graft cuts at when the user names none: the one below the base's own classifier. */
  defaultCut: string;
  /** Set when no base was named and the default zoo base could not be had, so a bundled one stands in. */
  fallback?: Fallback;
  /** Zoo bases: cached files that failed their size or SHA-256 check on this load, deleted and downloaded again. */
  repaired?: string[];
  /** Cut points and feature sizes: all that feature transfer asks of a base. */
  trunk: TrunkSource;
}

/** A TF.js Layers network: every kind of transfer (feature, parameter, fine-tuning) and every export. */
export interface LayersBase extends BaseInfo {
  format: 'layers';
  model: tfl.LayersModel;
  /** Raw files, kept so exports and converters can re-read the original network. */
  artifacts: io.ModelArtifacts;
}

/** A TF.js graph model: feature transfer only, run by TF.js (engines/graph-model.ts). */
export interface GraphBase extends BaseInfo {
  format: 'graph';
  trunk: ForeignTrunk;
  graph: { model: GraphModel; inputName: string };
  artifacts: io.ModelArtifacts;
}

/** An ONNX file: feature transfer only, run by ONNX Runtime (engines/onnx-base.ts). */
export interface OnnxBase extends BaseInfo {
  format: 'onnx';
  trunk: ForeignTrunk;
  onnx: OnnxTrunkSpec;
}

/** Bases graft cannot rebuild layer by layer: the compiler keeps them away from Layers-only code. */
export type ForeignBase = GraphBase | OnnxBase;

/**
 * A pretrained network plus what is needed to feed it. `format` says what it is; code that needs the Layers model
 * (tails, fine-tuning, stitching, TF.js export) takes a LayersBase, so a graph or ONNX base cannot reach it.
 */
export type Base = LayersBase | ForeignBase;

export interface BaseOptions {
  /** Pixel range the network expects, e.g. [-1, 1]; overrides the metadata file. Default [0, 1]. */
  inputRange?: [number, number];
  /** Central fraction of each image kept (see Preprocessing.crop); overrides the metadata file. Default 1. */
  crop?: number;
  /** How images are fitted to the input size (see Preprocessing.resize); overrides the metadata file. */
  resize?: Preprocessing['resize'];
  /** Zoo downloads: base URL standing in for https://storage.googleapis.com/ (default GRAFT_MODEL_MIRROR). */
  mirror?: string;
  /** Zoo bases: use the download cache only, never the network. */
  offline?: boolean;
  onProgress?: ProgressCallback;
  signal?: AbortSignal;
  /** Graph and ONNX bases: input size when the model's is dynamic. */
  inputSize?: [number, number];
  /** ONNX bases: input layout (default: read from the input shape, the dimension of size 3). */
  inputLayout?: 'nchw' | 'nhwc';
  /** Graph and ONNX bases: per-channel mean and std applied to 0..1 pixels (torchvision's convention). */
  mean?: [number, number, number];
  std?: [number, number, number];
}

/** Name of the optional metadata file read from beside a local model.json. */
export const BASE_METADATA_FILE = 'graft-base.json';

export interface BaseMetadataFile {
  inputRange?: [number, number];
  /** Graph models with a dynamic input size. */
  inputSize?: [number, number];
  mean?: [number, number, number];
  std?: [number, number, number];
  resize?: Preprocessing['resize'];
  crop?: number;
  defaultCut?: string;
  name?: string;
}

export const DEFAULT_BASE = DEFAULT_ZOO_BASE;
/** Bundled, so it works offline: stands in for DEFAULT_BASE when that cannot be downloaded. */
export const FALLBACK_BASE = 'nsfw-mobilenet-v2';

/**
 * Loads a base by bundled name, zoo name, local model.json path (or its folder), or http(s) URL. With no spec, the
 * default zoo base; if it is neither cached nor downloadable, the bundled FALLBACK_BASE with `fallback` set.
 * Named bases never fall back.
 */
export async function loadBase(spec?: string, options: BaseOptions = {}): Promise<Base> {
  checkBaseOptions(options);
  const base = await loadAny(spec, options);
  if (options.crop !== undefined) base.preprocessing = { ...base.preprocessing, crop: options.crop };
  if (options.resize !== undefined) base.preprocessing = { ...base.preprocessing, resize: options.resize };
  return base;
}

/** Throws a UsageError naming the first BaseOptions value that is out of range or conflicts with another. */
export function checkBaseOptions(o: BaseOptions): void {
  checkCrop(o.crop);
  checkOneOf('resize', o.resize, ['cover', 'fill']);
  checkOneOf('inputLayout', o.inputLayout, ['nchw', 'nhwc']);
  const numbers = (name: string, v: unknown, n: number, ok: (x: number) => boolean, what: string) => {
    if (v === undefined) return;
    if (!Array.isArray(v) || v.length !== n || !v.every((x) => typeof x === 'number' && Number.isFinite(x) && ok(x)))
      throw new UsageError('invalid-value', words`${opt(name)} must be ${what} (got ${shown(JSON.stringify(v))})`);
  };
  numbers('inputRange', o.inputRange, 2, () => true, 'two numbers [min, max]');
  if (o.inputRange && !(o.inputRange[0] < o.inputRange[1]))
    throw new UsageError(
      'invalid-value',
      words`${opt('inputRange')} must have min < max (got ${o.inputRange.join(',')})`,
    );
  numbers('mean', o.mean, 3, () => true, 'three numbers [r, g, b]');
  numbers('std', o.std, 3, (x) => x > 0, 'three numbers [r, g, b] above 0');
  numbers('inputSize', o.inputSize, 2, (x) => Number.isInteger(x) && x >= 1, 'two positive integers [height, width]');
  if (o.inputRange && (o.mean || o.std))
    throw new UsageError('conflict', words`give ${opt('inputRange')} or ${opt('mean')}/${opt('std')}, not both`);
  if (o.mirror !== undefined && !/^https?:\/\/[^/]/i.test(o.mirror))
    throw new UsageError('invalid-value', words`${opt('mirror')} must be an http(s) URL (got ${shown(o.mirror)})`);
}

async function loadAny(spec: string | undefined, options: BaseOptions): Promise<Base> {
  await ensureTf();
  if (spec === undefined) {
    try {
      return await loadZoo(findZooEntry(DEFAULT_BASE) as ZooEntry, options);
    } catch (e) {
      if (options.signal?.aborted) throw e;
      const reason = oneLine((e as Error).message);
      const error = e instanceof GraftError ? e : undefined;
      let fallback: Base;
      try {
        fallback = await loadBase(FALLBACK_BASE, options);
      } catch (f) {
        // Without nsfwjs there is nothing to fall back on: say why the default base failed, and what would help.
        throw new BaseError(
          'no-fallback',
          DEFAULT_BASE,
          `${reason}; no bundled base to fall back on: ${oneLine((f as Error).message)}`,
          e,
        );
      }
      return { ...fallback, fallback: { wanted: DEFAULT_BASE, reason, error } };
    }
  }
  const bundled = BUNDLED.find((b) => b.name === spec);
  if (bundled) {
    const artifacts = bundledArtifacts(bundled);
    // nsfwjs divides pixels by 255 before its networks: input range [0, 1].
    return finish(spec, 'bundled', `nsfwjs/dist/models/${bundled.folder}`, artifacts, options.inputRange ?? [0, 1], {});
  }
  const zoo = findZooEntry(spec);
  if (zoo) return loadZoo(zoo, options);
  if (/\.onnx$/i.test(spec)) {
    if (/^https?:\/\//i.test(spec))
      throw new BaseError('remote-onnx', spec, 'ONNX bases are read from a local file; download it first');
    if (!existsSync(spec)) throw new BaseError('not-found', spec, 'ONNX file does not exist');
    return (await import('./onnx-base.ts')).loadOnnxBase(spec, options);
  }
  if (/^https?:\/\//i.test(spec)) {
    const { json, artifacts } = await readRemoteModel(spec);
    if (json.format === 'graph-model')
      return (await import('./graph-model.ts')).loadGraphModelBase(
        spec,
        'url',
        spec,
        json,
        artifacts,
        options,
        metaOf(json),
      );
    return finish(spec, 'url', spec, artifacts, options.inputRange ?? [0, 1], metaOf(json));
  }
  let file = spec;
  if (existsSync(file) && statSync(file).isDirectory()) file = path.join(file, 'model.json');
  if (!existsSync(file)) {
    const names = BUNDLED.map((b) => b.name).join(', ');
    throw new BaseError(
      'unknown-base',
      spec,
      `no such base (not a bundled name [${names}], a zoo name (graft models), a model.json path or an http(s) URL)`,
    );
  }
  const { json, artifacts } = await readLocalModel(file);
  const meta = { ...metaOf(json), ...readMetadataFile(path.dirname(file)) };
  if (json.format === 'graph-model') {
    return (await import('./graph-model.ts')).loadGraphModelBase(
      meta.name ?? spec,
      'file',
      path.resolve(file),
      json,
      artifacts,
      options,
      meta,
    );
  }
  return finish(
    meta.name ?? spec,
    'file',
    path.resolve(file),
    artifacts,
    options.inputRange ?? meta.inputRange ?? [0, 1],
    meta,
  );
}

async function loadZoo(entry: ZooEntry, options: BaseOptions): Promise<LayersBase> {
  const { artifacts, repaired } = await loadZooFiles(entry, {
    mirror: options.mirror,
    offline: options.offline,
    onProgress: options.onProgress,
    signal: options.signal,
  });
  const meta = { defaultCut: entry.defaultCut, crop: entry.crop, resize: entry.resize };
  const base = await finish(entry.name, 'zoo', entry.url, artifacts, options.inputRange ?? entry.inputRange, meta);
  if (entry.preprocessing && !options.inputRange)
    base.preprocessing = { ...base.preprocessing, ...entry.preprocessing };
  if (repaired.length) base.repaired = repaired;
  return base;
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
  } catch {
    throw new BaseError('invalid-metadata', file, 'not valid JSON');
  }
}

async function finish(
  name: string,
  kind: BaseKind,
  source: string,
  artifacts: io.ModelArtifacts,
  range: [number, number],
  meta: BaseMetadataFile,
): Promise<LayersBase> {
  let model: tfl.LayersModel;
  try {
    model = await tfl.loadLayersModel(tf.io.fromMemory(artifacts));
  } catch (e) {
    throw new BaseError(
      'not-a-model',
      source,
      `cannot build a TF.js Layers model (${oneLine((e as Error).message)})`,
      e,
    );
  }
  const shape = model.inputs[0].shape;
  if (shape.length !== 4 || shape[3] !== 3 || !shape[1] || !shape[2]) {
    throw new BaseError(
      'not-an-image-model',
      source,
      `expected an image input [batch, height, width, 3], found ${JSON.stringify(shape)}`,
    );
  }
  const preprocessing = fromRange([shape[1], shape[2]], range[0], range[1], meta.resize ?? 'cover');
  if (meta.crop !== undefined) preprocessing.crop = checkCrop(meta.crop, source);
  const cut = meta.defaultCut ?? defaultCut(model);
  return {
    format: 'layers',
    name,
    id: fingerprint(artifacts),
    kind,
    source,
    model,
    preprocessing,
    defaultCut: cut,
    artifacts,
    trunk: layersTrunk(model, cut),
  };
}

/** loadBase for callers that need the Layers model itself (tails, fine-tuning, stitching, TF.js export). */
export async function loadLayersBase(spec?: string, options: BaseOptions = {}): Promise<LayersBase> {
  const base = await loadBase(spec, options);
  if (base.format === 'layers') return base;
  disposeBase(base);
  throw new BaseError(
    'not-layers',
    spec ?? base.name,
    `this base is ${formatWords(base.format)}, which serves feature transfer only; parameter transfer, fine-tuning and TF.js export need a TF.js Layers base`,
  );
}

/**
 * Releases a base's weights. Trunks, tails and stitched models re-apply the base's layers, which raises their
 * reference counts, so `model.dispose()` alone would leave shared weights allocated; this frees them outright. Only
 * for bases the caller owns and will not use again.
 */
export function disposeBase(base: Base): void {
  if (base.format !== 'layers') {
    base.trunk.dispose();
    return;
  }
  for (const layer of base.model.layers) {
    for (const w of layer.weights) {
      if (!(w as unknown as { val: { isDisposed: boolean } }).val.isDisposed) w.dispose();
    }
  }
}
