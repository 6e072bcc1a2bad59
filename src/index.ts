/**
 * graft's public library API. Everything the CLI does is available here as typed functions; nothing here prints.
 * Long calls take `onProgress` and an `AbortSignal`.
 */
import { type Base, type BaseOptions, DEFAULT_BASE, loadBase } from './base/base.ts';
import { type BaseInspection, inspectBase } from './base/inspect.ts';

export { loadBase, DEFAULT_BASE };
export type { Base, BaseOptions, BaseInspection };
export { BUNDLED } from './base/bundled.ts';
export { candidateCuts, cutPointIndices, defaultCut } from './base/graph.ts';
export type { CutPoint } from './base/graph.ts';
export type { Preprocessing } from './base/preprocessing.ts';
export type { Progress, ProgressCallback } from './util/progress.ts';

/** Describes a base: layers, parameter counts, candidate cut points (`graft inspect`). */
export async function inspect(base?: string | Base, options: BaseOptions = {}): Promise<BaseInspection> {
  return inspectBase(typeof base === 'object' ? base : await loadBase(base, options));
}

export { train, prepareData } from './workflows/train.ts';
export type { TrainOptions, TrainResult } from './workflows/train.ts';
export { extractFeatures } from './workflows/extract.ts';
export { Predictor, evaluateModel } from './predict/predictor.ts';
export type { Prediction, Evaluation } from './predict/predictor.ts';
export { writeDemoDataset } from './workflows/demo.ts';
export { listDataset, splitByHash } from './dataset/dataset.ts';
export type { DatasetListing, Sample, Skipped } from './dataset/dataset.ts';
export { ActivationCache } from './cache/activation-cache.ts';
export { stitchModel } from './export/stitch.ts';
export { exportOnnx } from './export/onnx-export.ts';
export type { OnnxExportResult } from './export/onnx-export.ts';
export { layersToOnnx } from './export/onnx/convert.ts';
