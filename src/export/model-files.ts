/**
 * Reading and writing a trained model folder: model.json + weights.bin (TF.js Layers format, loadable by plain
 * @tensorflow/tfjs `loadLayersModel`) and graft.json (labels, preprocessing, base, cut, metrics, versions).
 * A folder is written under a temporary name and renamed into place, so a crash never leaves half a model.
 */
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
import type { Preprocessing } from '../base/preprocessing.ts';
import { tf, type tfl } from '../tfjs/tf.ts';
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
  metrics: Record<string, unknown>;
  training: Record<string, unknown>;
  versions: Record<string, string>;
  createdAt: string;
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
  if (!artifacts) throw new Error('model serialisation produced nothing');
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
 * Writes files into `<out>.tmp~<host>~<pid>~<random>`, then swaps that folder into place: `<out>` only ever holds a
 * complete model (the old one, or the new one). Leftovers of writers that were killed (kill -9, power loss) are
 * cleaned first (see removeStaleTemporaries). An abort before the swap leaves nothing behind.
 */
export function writeModelFolder(out: string, files: Record<string, string | Uint8Array>, signal?: AbortSignal): void {
  const target = path.resolve(out);
  if (existsSync(target) && readdirSync(target).length > 0 && !existsSync(path.join(target, METADATA_FILE))) {
    // Never replace a folder that holds something other than a graft model.
    throw new Error(`${out}: exists and is not a graft model folder; choose another --out`);
  }
  mkdirSync(path.dirname(target), { recursive: true });
  removeStaleTemporaries(target);
  const tmp = `${target}.tmp${tempTag()}`;
  mkdirSync(tmp);
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
    throw e;
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
  writeModelFolder(
    out,
    {
      'model.json': JSON.stringify(modelJson),
      'weights.bin': weights,
      [METADATA_FILE]: `${JSON.stringify(metadata, null, 2)}\n`,
      ...extra,
    },
    signal,
  );
}

export interface LoadedModelFiles {
  dir: string;
  metadata: ModelMetadata;
  artifacts: io.ModelArtifacts;
}

/** Reads a model folder (or the path of its model.json / graft.json), checking it is a graft model. */
export function readModelFolder(where: string): LoadedModelFiles {
  let dir = path.resolve(where);
  if (/\.(json)$/i.test(dir)) dir = path.dirname(dir);
  if (!existsSync(dir)) throw new Error(`${where}: model folder does not exist`);
  const metaFile = path.join(dir, METADATA_FILE);
  if (!existsSync(metaFile)) throw new Error(`${where}: not a graft model (no ${METADATA_FILE})`);
  let metadata: ModelMetadata;
  let modelJson: { modelTopology: object; weightsManifest: { paths: string[]; weights: io.WeightsManifestEntry[] }[] };
  try {
    metadata = JSON.parse(readFileSync(metaFile, 'utf8'));
    // Trained on a graph or ONNX base: no Layers model.json; the base file and the head (headData) stand in for it.
    if (metadata.format === 'graft-model' && metadata.foreign) return { dir, metadata, artifacts: {} };
    modelJson = JSON.parse(readFileSync(path.join(dir, 'model.json'), 'utf8'));
  } catch (e) {
    throw new Error(`${where}: unreadable model files (${(e as Error).message.split('\n')[0]})`);
  }
  if (metadata.format !== 'graft-model') throw new Error(`${metaFile}: not a graft model metadata file`);
  const specs = modelJson.weightsManifest.flatMap((g) => g.weights);
  const bytes = Buffer.concat(
    modelJson.weightsManifest.flatMap((g) => g.paths.map((p) => readFileSync(path.join(dir, p)))),
  );
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
