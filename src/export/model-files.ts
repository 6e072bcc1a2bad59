/**
 * Reading and writing a trained model folder: model.json + weights.bin (TF.js Layers format, loadable by plain
 * @tensorflow/tfjs `loadLayersModel`) and graft.json (labels, preprocessing, base, cut, metrics, versions).
 * A folder is written under a temporary name and renamed into place, so a crash never leaves half a model.
 */
import { createHash } from 'node:crypto';
import {
  closeSync,
  existsSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import path from 'node:path';
import type { io } from '@tensorflow/tfjs-core';
import { weightDataBytes } from '../base/artifacts.ts';
import type { Preprocessing } from '../base/preprocessing.ts';
import { tf, type tfl } from '../tfjs/tf.ts';
import { checkCanCreateDir, MakeDirError, makeDirs } from '../util/dirs.ts';
import { DataError, errnoOf, InternalError, opt, shown, UsageError, words } from '../util/errors.ts';
import { isStaleTemp, processAlive, tempOwner, tempTag } from '../util/files.ts';
import { checkAbort } from '../util/progress.ts';

export const METADATA_FILE = 'graft.json';

export interface ModelMetadata {
  format: 'graft-model';
  formatVersion: 1;
  labels: string[];
  /**
   * Input the model expects. `scale`/`offset` are applied INSIDE the model (a Rescaling layer), so callers feed raw RGB
   * pixel values 0..255, resized to `size` as `resize` says. false for models on graph or ONNX bases, whose folder
   * holds the base file as it was given: graft applies scale, offset, mean/std and layout in JS before it.
   */
  preprocessing: Preprocessing & { inModel: boolean };
  base: { name: string; id: string; source: string; kind: string };
  cut: string;
  mode: string;
  head: { kind: string; [k: string]: unknown };
  /** For heads that are not expressible as layers (k-NN): the model outputs features and this holds the head. */
  headData?: unknown;
  /**
   * Test-time augmentation predictors apply unless told otherwise: 'flip' averages the probabilities of an image and
   * its mirror (written when training measured it to help, or was asked to). The network itself stays single-view.
   */
  tta?: 'flip' | 'none';
  metrics: Record<string, unknown>;
  training: Record<string, unknown>;
  versions: Record<string, string>;
  createdAt: string;
  /** Size and SHA-256 of each file the model needs (weights.bin, base.onnx…), checked on load: a damaged or replaced
   *  file is an error, never a model that predicts NaN. Absent in folders written before graft recorded it. */
  files?: Record<string, { size: number; sha256: string }>;
  [k: string]: unknown;
}

/** Serialises a Layers model to { model.json text, weights bytes } without touching the file system. */
export async function serialiseLayersModel(
  model: tfl.LayersModel,
): Promise<{ modelJson: object; weights: Uint8Array }> {
  let artifacts: io.ModelArtifacts | undefined;
  await model.save(
    tf.io.withSaveHandler(async (a) => {
      artifacts = a;
      return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON' } };
    }),
  );
  if (!artifacts) throw new InternalError('model serialisation produced nothing');
  const data = artifacts.weightData;
  const weights =
    data instanceof ArrayBuffer
      ? new Uint8Array(data)
      : Buffer.concat((data as ArrayBuffer[]).map((d) => new Uint8Array(d)));
  const modelJson = {
    format: 'layers-model',
    generatedBy: artifacts.generatedBy,
    convertedBy: 'graft',
    modelTopology: artifacts.modelTopology,
    weightsManifest: [{ paths: ['weights.bin'], weights: artifacts.weightSpecs }],
  };
  return { modelJson, weights };
}

/**
 * Checks, before any work, that a model folder can be written at `out` (the `out` option): not an existing file, not
 * a folder holding something other than a graft model (never replaced), and a parent in which folders can be made.
 * Throws a UsageError naming `out`; creates nothing.
 */
export function checkModelOut(out: string): void {
  const target = path.resolve(out);
  let st: ReturnType<typeof statSync> | undefined;
  try {
    st = statSync(target);
  } catch (e) {
    if (errnoOf(e) !== 'ENOENT' && errnoOf(e) !== 'ENOTDIR')
      throw new UsageError('out-not-writable', words`${opt('out')} ${shown(out)}: cannot be read (${errnoOf(e)})`, e);
  }
  if (st && !st.isDirectory())
    throw new UsageError('out-is-file', words`${opt('out')} ${shown(out)} is a file; give a folder for the model`);
  if (st && readdirSync(target).length > 0 && !existsSync(path.join(target, METADATA_FILE)))
    throw new UsageError(
      'out-not-model-folder',
      words`${opt('out')} ${shown(out)} exists and is not a graft model folder; choose another ${opt('out')}`,
    );
  try {
    // The folder is written beside its final place and renamed into it.
    checkCanCreateDir(path.dirname(target));
  } catch (e) {
    if (!(e instanceof MakeDirError)) throw e;
    throw new UsageError('out-not-writable', words`${opt('out')} ${shown(out)}: ${e.message}`, e);
  }
}

/** Checks, before any work, that a single file (an export) can be written at `out`: not a folder, parent creatable. */
export function checkFileOut(out: string): void {
  const target = path.resolve(out);
  let isDir = false;
  try {
    isDir = statSync(target).isDirectory();
  } catch {}
  if (isDir) throw new UsageError('out-is-folder', words`${opt('out')} ${shown(out)} is a folder; give a file name`);
  try {
    checkCanCreateDir(path.dirname(target));
  } catch (e) {
    if (!(e instanceof MakeDirError)) throw e;
    throw new UsageError('out-not-writable', words`${opt('out')} ${shown(out)}: ${e.message}`, e);
  }
}

/** Size and SHA-256 of each file, as recorded in graft.json's `files`. */
export function fileDigests(
  files: Record<string, string | Uint8Array>,
): Record<string, { size: number; sha256: string }> {
  return Object.fromEntries(
    Object.entries(files).map(([name, content]) => {
      const bytes = typeof content === 'string' ? Buffer.from(content) : content;
      return [name, { size: bytes.byteLength, sha256: createHash('sha256').update(bytes).digest('hex') }];
    }),
  );
}

/**
 * Writes files into `<out>.tmp~<host>~<pid>~<random>`, then swaps that folder into place: `<out>` only ever holds a
 * complete model (the old one, or the new one). Leftovers of writers that were killed (kill -9, power loss) are
 * cleaned first (see removeStaleTemporaries). An abort before the swap leaves nothing behind.
 */
export function writeModelFolder(out: string, files: Record<string, string | Uint8Array>, signal?: AbortSignal): void {
  const target = path.resolve(out);
  checkModelOut(out);
  try {
    makeDirs(path.dirname(target));
  } catch (e) {
    throw new UsageError('out-not-writable', words`${opt('out')} ${shown(out)}: ${(e as Error).message}`, e);
  }
  removeStaleTemporaries(target);
  const tmp = `${target}.tmp${tempTag()}`;
  try {
    mkdirSync(tmp);
  } catch (e) {
    throw new UsageError('out-not-writable', words`${opt('out')} ${shown(out)}: cannot write (${errnoOf(e)})`, e);
  }
  try {
    for (const [name, content] of Object.entries(files)) writeDurably(path.join(tmp, name), content);
    checkAbort(signal);
    if (existsSync(target)) {
      const old = `${target}.old${tempTag()}`;
      renameSync(target, old);
      renameSync(tmp, target);
      rmSync(old, { recursive: true, force: true });
    } else {
      renameSync(tmp, target);
    }
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    // A file-system failure (disk full, permissions) is about `out`; anything else (an abort) passes as it is.
    if (typeof (e as NodeJS.ErrnoException).code !== 'string') throw e;
    throw new UsageError('out-not-writable', words`${opt('out')} ${shown(out)}: cannot write (${errnoOf(e)})`, e);
  }
}

/** Written and flushed to disk before the folder is renamed, so a power loss cannot leave a renamed, empty file. */
function writeDurably(file: string, content: string | Uint8Array): void {
  const fd = openSync(file, 'w');
  try {
    writeFileSync(fd, content);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * Removes `<out>.tmp…` folders whose writer is gone (a half-written weights.bin from a killed export), including the
 * `<out>.tmp-<pid>-<time>` names of earlier graft versions. A `<out>.old…` folder of a dead writer is the previous
 * model, moved aside in the instant before the new one was renamed in: it goes back to `<out>` when `<out>` is
 * missing, and is removed otherwise. Temporaries of live writers are never touched.
 */
export function removeStaleTemporaries(target: string): void {
  const dir = path.dirname(target);
  const base = path.basename(target);
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return;
  }
  for (const name of names) {
    if (!name.startsWith(`${base}.tmp`) && !name.startsWith(`${base}.old`)) continue;
    const rest = name.slice(base.length + 4);
    const legacy = /^-(\d+)-\d+$/.exec(rest);
    const full = path.join(dir, name);
    let stale: boolean;
    if (legacy) stale = !processAlive(Number(legacy[1]));
    else if (tempOwner(rest)) stale = isStaleTemp(rest, statSync(full, { throwIfNoEntry: false })?.mtimeMs ?? 0);
    else continue;
    if (!stale) continue;
    if (name.startsWith(`${base}.old`) && !existsSync(target)) renameSync(full, target);
    else rmSync(full, { recursive: true, force: true });
  }
}

export async function saveModel(
  out: string,
  model: tfl.LayersModel,
  metadata: ModelMetadata,
  extra: Record<string, string | Uint8Array> = {},
  signal?: AbortSignal,
): Promise<void> {
  const { modelJson, weights } = await serialiseLayersModel(model);
  const files = { 'model.json': JSON.stringify(modelJson), 'weights.bin': weights, ...extra };
  writeModelFolder(
    out,
    { ...files, [METADATA_FILE]: `${JSON.stringify({ ...metadata, files: fileDigests(files) }, null, 2)}\n` },
    signal,
  );
}

export interface LoadedModelFiles {
  dir: string;
  metadata: ModelMetadata;
  artifacts: io.ModelArtifacts;
}

/**
 * Reads a model folder (or the path of its model.json / graft.json), checking it is a graft model whose files are
 * whole: the sizes and checksums graft.json records, and weight data of the length model.json's manifest describes.
 * Throws a DataError naming the folder or the damaged file.
 */
export function readModelFolder(where: string): LoadedModelFiles {
  let dir = path.resolve(where);
  if (/\.(json)$/i.test(dir)) dir = path.dirname(dir);
  if (!existsSync(dir)) throw new DataError('not-found', where, 'model folder does not exist');
  if (!statSync(dir).isDirectory()) throw new DataError('not-a-model', where, 'not a model folder (a file)');
  const metaFile = path.join(dir, METADATA_FILE);
  if (!existsSync(metaFile))
    throw new DataError(
      'not-a-model',
      where,
      `not a graft model folder (no ${METADATA_FILE}; graft train --out writes one)`,
    );
  const metadata = readJson(metaFile, 'model metadata') as ModelMetadata;
  if (!metadata || typeof metadata !== 'object' || metadata.format !== 'graft-model')
    throw new DataError('not-a-model', metaFile, 'not graft model metadata (no "format": "graft-model")');
  if (!Array.isArray(metadata.labels) || !metadata.preprocessing || !metadata.cut)
    throw new DataError('corrupt-model', metaFile, 'incomplete model metadata (labels, preprocessing or cut missing)');
  checkFiles(dir, metadata);
  // Trained on a graph or ONNX base: no Layers model.json; the base file and the head (headData) stand in for it.
  if (metadata.foreign) return { dir, metadata, artifacts: {} };
  const modelFile = path.join(dir, 'model.json');
  const modelJson = readJson(modelFile, 'model.json') as {
    modelTopology: object;
    weightsManifest: { paths: string[]; weights: io.WeightsManifestEntry[] }[];
  };
  if (!modelJson?.modelTopology || !Array.isArray(modelJson.weightsManifest))
    throw new DataError('corrupt-model', modelFile, 'not a TF.js model.json (needs modelTopology and weightsManifest)');
  const specs = modelJson.weightsManifest.flatMap((g) => g.weights);
  const parts = modelJson.weightsManifest.flatMap((g) =>
    g.paths.map((p) => {
      try {
        return readFileSync(path.join(dir, p));
      } catch (e) {
        throw new DataError('corrupt-model', path.join(dir, p), `weight file cannot be read (${errnoOf(e)})`, e);
      }
    }),
  );
  const bytes = Buffer.concat(parts);
  const expected = weightDataBytes(specs);
  if (expected !== undefined && bytes.byteLength !== expected) {
    const file = path.join(dir, modelJson.weightsManifest[0]?.paths[0] ?? 'weights.bin');
    throw new DataError(
      'truncated',
      file,
      `weight data is ${bytes.byteLength} bytes, model.json describes ${expected}: the file is truncated or from another model`,
    );
  }
  return {
    dir,
    metadata,
    artifacts: {
      modelTopology: modelJson.modelTopology,
      weightSpecs: specs,
      weightData: bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer,
    },
  };
}

function readJson(file: string, what: string): unknown {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new DataError('corrupt-model', file, `${what} cannot be read (${errnoOf(e)})`, e);
  }
  try {
    return JSON.parse(text);
  } catch {
    throw new DataError('corrupt-model', file, `${what} is not valid JSON (damaged or truncated)`);
  }
}

/** The sizes and SHA-256 graft.json records for the folder's files, checked. */
function checkFiles(dir: string, m: ModelMetadata): void {
  for (const [name, want] of Object.entries(m.files ?? {})) {
    const file = path.join(dir, name);
    let bytes: Buffer;
    try {
      bytes = readFileSync(file);
    } catch (e) {
      throw new DataError('corrupt-model', file, `cannot be read (${errnoOf(e)})`, e);
    }
    if (bytes.byteLength !== want.size)
      throw new DataError(
        'truncated',
        file,
        `is ${bytes.byteLength} bytes, ${METADATA_FILE} records ${want.size}: truncated or replaced`,
      );
    if (createHash('sha256').update(bytes).digest('hex') !== want.sha256)
      throw new DataError(
        'checksum',
        file,
        `does not match the SHA-256 in ${METADATA_FILE}: the file is damaged or was replaced`,
      );
  }
}
