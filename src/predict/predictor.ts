/**
 * The predictor: an exported model folder plus exactly the preprocessing it was trained with. Raw pixels go in
 * (resized as the metadata says); the model itself applies scale and offset.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { listDataset, type Skipped } from '../dataset/dataset.ts';
import { decodeImage, ImageDecodeError } from '../dataset/decode.ts';
import { mirrorImages } from '../dataset/views.ts';
import type { EngineChoice } from '../engines/engine-choice.ts';
import { type TrunkRunner, tfjsTrunkRunner } from '../engines/trunk.ts';
import { METADATA_FILE, type ModelMetadata, readModelFolder } from '../export/model-files.ts';
import { ensureTf, tf, tfl } from '../tfjs/tf.ts';
import type { HeadJson, TrainedHead } from '../train/features.ts';
import { headFromJSON } from '../train/heads.ts';
import { accuracy, argmaxRows, confusionMatrix, perClassMetrics } from '../train/metrics.ts';
import type { Tta } from '../train/tta.ts';
import { DataError, errnoOf, oneLine, opt, UsageError, words } from '../util/errors.ts';
import { checkInteger, checkOneOf } from '../util/options.ts';
import { checkAbort, type ProgressCallback } from '../util/progress.ts';

export interface Prediction {
  file: string;
  /** Best classes first. */
  top: { label: string; probability: number }[];
}

export class Predictor {
  readonly metadata: ModelMetadata;
  /** The TF.js Layers model of the folder; absent for models on graph or ONNX bases, which keep the base file. */
  readonly model: tfl.LayersModel | undefined;
  private readonly knn?: TrainedHead;
  private readonly runner: TrunkRunner;

  /** The model folder, as given to `load`. */
  readonly dir: string;

  private constructor(
    dir: string,
    metadata: ModelMetadata,
    model: tfl.LayersModel | undefined,
    runner: TrunkRunner,
    knn?: TrainedHead,
  ) {
    this.dir = dir;
    this.metadata = metadata;
    this.model = model;
    this.runner = runner;
    this.knn = knn;
  }

  /** Loads a model folder. `engine` chooses what runs the network: ONNX Runtime when it loads (auto), or TF.js. */
  static async load(dir: string, o: { engine?: EngineChoice } = {}): Promise<Predictor> {
    await ensureTf();
    const files = readModelFolder(dir);
    if (files.metadata.foreign) {
      // Graph/ONNX base: the base file runs to the cut, the head runs in JS from headData.
      const { openForeignRunner } = await import('../export/foreign-model.ts');
      const runner = await openForeignRunner(files.dir, files.metadata, o.engine);
      try {
        return new Predictor(dir, files.metadata, undefined, runner, headOf(files.dir, files.metadata.headData));
      } catch (e) {
        await runner.dispose();
        throw e;
      }
    }
    let model: tfl.LayersModel;
    try {
      model = await tfl.loadLayersModel(tf.io.fromMemory(files.artifacts));
    } catch (e) {
      throw new DataError(
        'corrupt-model',
        path.join(files.dir, 'model.json'),
        `cannot be loaded as a TF.js model (${oneLine((e as Error).message)})`,
        e,
      );
    }
    let knn: TrainedHead | undefined;
    try {
      knn = files.metadata.headData ? headOf(files.dir, files.metadata.headData) : undefined;
      const engine = o.engine ?? 'wasm';
      let runner = tfjsTrunkRunner(model);
      if (engine !== 'wasm') {
        const onnx = await import('../engines/onnx.ts');
        if (await onnx.onnxAvailable()) runner = await onnx.onnxTrunkRunner(model);
        else if (engine === 'onnx')
          throw new UsageError(
            'engine-unavailable',
            words`${opt('engine')} onnx: onnxruntime-node does not load on this machine`,
          );
      }
      return new Predictor(dir, files.metadata, model, runner, knn);
    } catch (e) {
      knn?.dispose();
      model.dispose();
      throw e;
    }
  }

  /** The engine running the network: 'onnx', 'wasm' or 'cpu'. */
  get engine(): string {
    return this.runner.engine;
  }

  get labels(): string[] {
    return this.metadata.labels;
  }

  /** The test-time augmentation the model folder records (what predictions use unless told otherwise). */
  get tta(): Tta {
    return this.metadata.tta === 'flip' ? 'flip' : 'none';
  }

  /**
   * Class probabilities for n images of raw pixels (n × h × w × 3, values 0..255). `tta` 'flip' averages each image's
   * probabilities with its mirror's (default: what the model records, see `tta`).
   */
  async predictPixels(pixels: Float32Array, n: number, o: { tta?: Tta } = {}): Promise<Float32Array> {
    const tta = o.tta ?? this.tta;
    checkOneOf('tta', tta, ['flip', 'none']);
    if (tta === 'none' || n === 0) return this.probabilities(pixels, n);
    const both = new Float32Array(2 * pixels.length);
    both.set(pixels);
    both.set(mirrorImages(pixels, n, this.metadata.preprocessing.size), pixels.length);
    const p = await this.probabilities(both, 2 * n);
    const half = n * this.labels.length;
    return Float32Array.from(p.subarray(0, half), (v, i) => (v + p[half + i]) / 2);
  }

  private async probabilities(pixels: Float32Array, n: number): Promise<Float32Array> {
    const [out] = await this.runner.run(pixels, n);
    const probs = this.knn ? this.knn.predictProba(out, n) : out;
    // Finite pixels in, so a NaN out means damaged weights (e.g. a weights.bin overwritten in place): never a result.
    for (let i = 0; i < probs.length; i++) {
      if (!Number.isFinite(probs[i]))
        throw new DataError(
          'non-finite',
          this.dir,
          'the model outputs NaN or infinity: its weights are damaged (restore the folder or retrain)',
        );
    }
    return probs;
  }

  /** Decodes and classifies image files; files that do not decode are returned in `skipped`. */
  async predictFiles(
    files: string[],
    o: { topK?: number; batchSize?: number; tta?: Tta; onProgress?: ProgressCallback; signal?: AbortSignal } = {},
  ): Promise<{ predictions: Prediction[]; probabilities: Float32Array[]; skipped: Skipped[] }> {
    const [h, w] = this.metadata.preprocessing.size;
    const px = h * w * 3;
    const bs = o.batchSize ?? 16;
    const predictions: Prediction[] = [];
    const probabilities: Float32Array[] = [];
    const skipped: Skipped[] = [];
    const k = Math.min(checkInteger('topK', o.topK) ?? 3, this.labels.length);
    for (let start = 0; start < files.length; start += bs) {
      checkAbort(o.signal);
      const batch: string[] = [];
      const pixels = new Float32Array(Math.min(bs, files.length - start) * px);
      for (const file of files.slice(start, start + bs)) {
        try {
          const bytes = await readFile(file);
          pixels.set(await decodeImage(bytes, file, this.metadata.preprocessing), batch.length * px);
          batch.push(file);
        } catch (e) {
          const code = errnoOf(e);
          const reason =
            e instanceof ImageDecodeError
              ? e.reason
              : code === 'ENOENT'
                ? 'file does not exist'
                : code === 'EISDIR'
                  ? 'not a regular file'
                  : `cannot read (${code})`;
          skipped.push({ file, reason });
        }
      }
      if (batch.length) {
        const probs = await this.predictPixels(pixels.subarray(0, batch.length * px), batch.length, { tta: o.tta });
        const c = this.labels.length;
        batch.forEach((file, r) => {
          const row = probs.slice(r * c, (r + 1) * c);
          probabilities.push(row);
          const order = [...row.keys()].sort((a, b) => row[b] - row[a]).slice(0, k);
          predictions.push({ file, top: order.map((i) => ({ label: this.labels[i], probability: row[i] })) });
        });
      }
      o.onProgress?.({ phase: 'predict', done: Math.min(start + bs, files.length), total: files.length });
    }
    return { predictions, probabilities, skipped };
  }

  dispose(): void {
    void this.runner.dispose();
    this.model?.dispose();
    this.knn?.dispose();
  }
}

/** The head stored in graft.json; damaged data there is the model folder's fault, named as such. */
function headOf(dir: string, data: unknown): TrainedHead {
  try {
    return headFromJSON(data as HeadJson);
  } catch (e) {
    if (e instanceof DataError)
      throw new DataError('corrupt-model', path.join(dir, METADATA_FILE), `head data: ${e.reason}`, e);
    throw e;
  }
}

export interface Evaluation {
  accuracy: number;
  images: number;
  perClass: { label: string; precision: number; recall: number; f1: number; support: number }[];
  /** confusion[true][predicted], in the order of `labels`. */
  confusion: number[][];
  labels: string[];
  skipped: Skipped[];
  /** Each image's label and class probabilities (in the order of `labels`). */
  predictions: { file: string; label: string; probabilities: number[] }[];
  /** The test-time augmentation the predictions used. */
  tta: Tta;
}

/** Accuracy, per-class precision/recall and the confusion matrix of a model on a labelled data set. */
export async function evaluateModel(
  predictor: Predictor,
  data: string,
  o: { tta?: Tta; onProgress?: ProgressCallback; signal?: AbortSignal } = {},
): Promise<Evaluation> {
  const listing = await listDataset(data);
  const labels = predictor.labels;
  const skipped: Skipped[] = [...listing.skipped];
  const samples = listing.samples.filter((s) => {
    if (labels.includes(s.label)) return true;
    skipped.push({ file: s.file, reason: `class '${s.label}' is not one of the model's labels` });
    return false;
  });
  if (samples.length === 0)
    throw new DataError(
      'no-known-labels',
      data,
      `none of its classes (${listing.classes.join(', ')}) is one of the model's labels (${labels.join(', ')})`,
    );
  const r = await predictor.predictFiles(
    samples.map((s) => s.file),
    { topK: 1, ...o },
  );
  skipped.push(...r.skipped);
  if (r.predictions.length === 0)
    throw new DataError(
      'no-usable-images',
      data,
      `none of its ${samples.length} images could be read (e.g. ${r.skipped[0]?.file}: ${r.skipped[0]?.reason})`,
    );
  const labelOf = new Map(samples.map((s) => [s.file, s.label]));
  const y = Int32Array.from(r.predictions.map((p) => labels.indexOf(labelOf.get(p.file)!)));
  const c = labels.length;
  const proba = new Float32Array(r.probabilities.length * c);
  r.probabilities.forEach((row, i) => {
    proba.set(row, i * c);
  });
  const confusion = confusionMatrix(argmaxRows(proba, y.length, c), y, c);
  return {
    accuracy: accuracy(proba, y, c),
    images: y.length,
    perClass: perClassMetrics(confusion, labels),
    confusion,
    labels,
    skipped,
    predictions: r.predictions.map((p, i) => ({
      file: p.file,
      label: labelOf.get(p.file)!,
      probabilities: Array.from(r.probabilities[i]),
    })),
    tta: o.tta ?? predictor.tta,
  };
}
