/**
 * graft's public library API. Everything the CLI does is available here as typed functions; nothing here prints.
 * Long calls take `onProgress` and an `AbortSignal`.
 */
import {
  type Base,
  type BaseOptions,
  DEFAULT_BASE,
  disposeBase,
  type ForeignBase,
  type GraphBase,
  type LayersBase,
  loadBase,
  loadLayersBase,
  type OnnxBase,
} from './base/base.ts';
import { type BaseInspection, inspectBase } from './base/inspect.ts';
import { startCharts, stopCharts } from './report/charts.ts';
import { trainReportData } from './report/data.ts';
import { writeReport } from './report/write.ts';
import {
  train as trainModel,
  type TrainOptions as WorkflowTrainOptions,
  type TrainResult as WorkflowTrainResult,
} from './workflows/train.ts';

export { BUNDLED } from './base/bundled.ts';
export type { CutPoint, TrunkSource } from './base/graph.ts';
export { candidateCuts, cutPointIndices, defaultCut } from './base/graph.ts';
export type { Preprocessing } from './base/preprocessing.ts';
export type { Progress, ProgressCallback } from './util/progress.ts';
export type { Base, BaseInspection, BaseOptions, ForeignBase, GraphBase, LayersBase, OnnxBase };
export { DEFAULT_BASE, disposeBase, loadBase, loadLayersBase };

/** Describes a base: layers, parameter counts, candidate cut points (`graft inspect`). */
export async function inspect(base?: string | Base, options: BaseOptions = {}): Promise<BaseInspection> {
  return inspectBase(typeof base === 'object' ? base : await loadBase(base, options));
}

export type { DownloadedModel } from './base/download.ts';
export { listDownloads, removeDownload } from './base/download.ts';
export { ActivationCache } from './cache/activation-cache.ts';
export type { CacheUsage, PruneOptions, PruneResult } from './cache/maintenance.ts';
export { cacheUsage, clearCache, parseDuration, parseSize, pruneCache, verifyCache } from './cache/maintenance.ts';
export type { DatasetListing, Sample, Skipped } from './dataset/dataset.ts';
export { listDataset, splitByHash } from './dataset/dataset.ts';
export type { DecodeOptions } from './dataset/decode.ts';
export { decodeImage, ImageDecodeError, MAX_IMAGE_PIXELS } from './dataset/decode.ts';
export type { RawImage, ResizeSpec } from './dataset/resize.ts';
export { resizeImage, sourceBox } from './dataset/resize.ts';
export type { EngineChoice, RunnerFactory } from './engines/engine-choice.ts';
export { runnerFor, tfjsRunner } from './engines/engine-choice.ts';
export type { TrunkRunner } from './engines/trunk.ts';
export type { OnnxExportResult } from './export/onnx-export.ts';
export { exportOnnx } from './export/onnx-export.ts';
export { stitchModel } from './export/stitch.ts';
export { layersToOnnx } from './onnx/convert.ts';
export type { Evaluation, Prediction } from './predict/predictor.ts';
export { evaluateModel, Predictor } from './predict/predictor.ts';
export type { Mistake, ReportData } from './report/data.ts';
export { evaluationReportData, REPORT_HTML, REPORT_JSON, trainReportData } from './report/data.ts';
export { type ReportSection, renderReport, reportSections } from './report/render.ts';
export { readReportData, writeReport } from './report/write.ts';
export type { HeadKind, LogisticFitInfo } from './train/features.ts';
export { HEAD_DEFAULTS, HEAD_KINDS } from './train/trainer.ts';
/** Errors graft throws: every one a GraftError with a `kind` and a stable `code`; see util/errors.ts. */
export type { ErrorKind, Warning, Words } from './util/errors.ts';
export {
  BaseError,
  DataError,
  DownloadError,
  GraftError,
  InternalError,
  isUserError,
  renderWords,
  UsageError,
} from './util/errors.ts';
export { writeDemoDataset } from './workflows/demo.ts';
export type { Extracted, ExtractOptions } from './workflows/extract.ts';
export { extractFeatures } from './workflows/extract.ts';
export type { DuplicateReport, LabelIssueReport } from './workflows/findings.ts';
export type { Selection, StageSummary } from './workflows/train.ts';
export { prepareData } from './workflows/train.ts';

export interface TrainOptions extends WorkflowTrainOptions {
  /** Write report.html (and report.json, its data) into the model folder `out`. Default true. */
  report?: boolean;
  /** The command line shown in the report as the way to reproduce the run (default: rebuilt from the options). */
  command?: string;
}

export interface TrainResult extends WorkflowTrainResult {
  /** The report written into the model folder. */
  report?: string;
  seconds: WorkflowTrainResult['seconds'] & { report?: number };
}

/**
 * Trains a model (see TrainOptions) and, when `out` is given, writes the model folder with its report: curves,
 * confusion matrix, cut search, mistakes, label issues, near duplicates and an accuracy that chose nothing.
 */
export async function train(o: TrainOptions): Promise<TrainResult> {
  const wantReport = o.out !== undefined && o.report !== false;
  // The chart renderer loads vega on a worker thread while the model trains.
  if (wantReport) startCharts();
  try {
    const r: TrainResult = await trainModel(o);
    if (r.out && wantReport) {
      const t = performance.now();
      r.report = await writeReport(trainReportData(r, o), { dir: r.out });
      r.seconds.report = (performance.now() - t) / 1000;
      r.seconds.total += r.seconds.report;
    }
    return r;
  } finally {
    if (wantReport) await stopCharts();
  }
}
