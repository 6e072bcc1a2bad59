/**
 * @file The report's content as one typed, plain-JSON object. `graft train --out` stores it in the model folder
 * (report.json) and renders report.html from it; `graft report MODEL` renders it again; `graft serve` can show the same
 * object its own way. Everything here is computed once, from the run's results: rendering only lays it out.
 */
import path from 'node:path';
import type { Skipped } from '../dataset/dataset.ts';
import { DUPLICATE_THRESHOLD as DEFAULT_DUPLICATE_THRESHOLD } from '../train/duplicates.ts';
import { perClassMetrics, wilsonInterval } from '../train/metrics.ts';
import type { SweepRow } from '../workflows/autocut.ts';
import type { DuplicateReport, LabelIssueReport } from '../workflows/findings.ts';
import type { StageLog } from '../workflows/parameter.ts';
import type { Selection, StageSummary, TrainOptions, TrainResult } from '../workflows/train.ts';

export const REPORT_VERSION = 1;
/** File names inside a model folder. */
export const REPORT_HTML = 'report.html';
export const REPORT_JSON = 'report.json';

export interface Mistake {
  file: string;
  label: string;
  predicted: string;
  /** Probability the model gave the predicted class. */
  probability: number;
}

export interface ReportData {
  version: typeof REPORT_VERSION;
  kind: 'train' | 'evaluate';
  title: string;
  createdAt: string;
  /** A command line that reproduces the run. */
  command?: string;
  summary: {
    /** Model folder (absolute). */
    model?: string;
    /** Data folders or CSVs (absolute). */
    data: { train?: string; val?: string; valSplit?: number; evaluated?: string };
    classes: string[];
    /** Images per class (in the order of `classes`) per split. */
    counts: { split: string; perClass: number[] }[];
    skipped: Skipped[];
    base: string;
    baseFallback?: string;
    cut: string;
    mode: string;
    engine: string;
    head: string;
    settings: Record<string, string | number | boolean | null>;
    /** Wall seconds per stage of the run. */
    seconds: Record<string, number>;
  };
  /** Accuracy on the held-out (or evaluated) images, with a 95% Wilson interval. */
  accuracy?: {
    split: string;
    correct: number;
    total: number;
    value: number;
    low: number;
    high: number;
    /** The same images also chose something (early stopping): the figure is optimistic. */
    usedForSelection: boolean;
  };
  trainAccuracy?: number;
  selection?: Selection;
  history?: StageLog[];
  stages?: StageSummary[];
  sweep?: { method: string; rows: SweepRow[] };
  /** confusion[true][predicted] on the held-out images. */
  confusion?: number[][];
  perClass?: { label: string; precision: number; recall: number; f1: number; support: number }[];
  confusedPairs?: { actual: string; predicted: string; count: number }[];
  /** Every held-out image the model gets wrong, most confident first. */
  mistakes?: Mistake[];
  labelIssues?: LabelIssueReport[];
  duplicates?: DuplicateReport[];
  /** Threshold the duplicates were found with. */
  duplicateThreshold?: number;
  /** Images the duplicate search looked at. */
  duplicateImages?: number;
}

/** Off-diagonal cells of a confusion matrix, largest first. */
export function confusedPairs(confusion: number[][], classes: string[], limit = 10): ReportData['confusedPairs'] {
  const pairs: { actual: string; predicted: string; count: number }[] = [];
  confusion.forEach((row, t) => {
    row.forEach((count, p) => {
      if (t !== p && count > 0) pairs.push({ actual: classes[t], predicted: classes[p], count });
    });
  });
  return pairs.sort((a, b) => b.count - a.count).slice(0, limit);
}

/** Images whose top class is not their label, most confident first (fastai's top losses, by confidence). */
export function mistakesOf(
  predictions: { file: string; label: string; probabilities: number[] }[],
  classes: string[],
): Mistake[] {
  const out: Mistake[] = [];
  for (const p of predictions) {
    let best = 0;
    for (let c = 1; c < p.probabilities.length; c++) if (p.probabilities[c] > p.probabilities[best]) best = c;
    if (classes[best] !== p.label)
      out.push({ file: p.file, label: p.label, predicted: classes[best], probability: p.probabilities[best] });
  }
  return out.sort((a, b) => b.probability - a.probability || a.file.localeCompare(b.file));
}

function accuracyOf(confusion: number[][] | undefined, split: string, usedForSelection: boolean) {
  if (!confusion) return undefined;
  const total = confusion.flat().reduce((a, b) => a + b, 0);
  if (total === 0) return undefined;
  const correct = confusion.reduce((a, row, i) => a + row[i], 0);
  return { split, correct, total, value: correct / total, ...wilsonInterval(correct, total), usedForSelection };
}

function confusionFrom(predictions: { label: string; probabilities: number[] }[], classes: string[]): number[][] {
  const m = classes.map(() => classes.map(() => 0));
  for (const p of predictions) {
    let best = 0;
    for (let c = 1; c < p.probabilities.length; c++) if (p.probabilities[c] > p.probabilities[best]) best = c;
    m[classes.indexOf(p.label)][best]++;
  }
  return m;
}

/** A shell word: left bare when safe, single-quoted otherwise. */
function shellWord(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replaceAll("'", `'\\''`)}'`;
}

/** The `graft train` command line equivalent to library options (the CLI passes its own argv instead). */
export function trainCommandLine(o: TrainOptions): string {
  const words = ['graft', 'train', o.data];
  const flag = (name: string, v: unknown) => {
    if (v === undefined || v === false) return;
    words.push(`--${name}`);
    if (v !== true) words.push(String(v));
  };
  flag('val', o.val);
  if (!o.val) flag('val-split', o.valSplit);
  flag('base', typeof o.base === 'object' ? o.base.name : o.base);
  flag('mode', o.mode);
  flag('cut', o.cut);
  flag('head', o.head);
  flag('epochs', o.epochs);
  flag('lr', o.lr);
  flag('batch-size', o.batchSize);
  flag('seed', o.seed);
  flag('patience', o.patience);
  flag('augment', o.augment);
  flag('engine', o.engine);
  flag('retrain-layers', o.retrainLayers);
  flag('reinit', o.reinit);
  flag('fine-tune', o.fineTune);
  flag('unfreeze-from', o.unfreezeFrom);
  flag('out', o.out);
  return words.map(shellWord).join(' ');
}

export function commandLine(argv: string[]): string {
  return ['graft', ...argv].map(shellWord).join(' ');
}

export function trainReportData(r: TrainResult, o: TrainOptions & { command?: string }): ReportData {
  const classes = r.classes;
  const usedVal = r.selection?.usedValidation ?? false;
  const confusion = r.valPredictions ? confusionFrom(r.valPredictions, classes) : undefined;
  return {
    version: REPORT_VERSION,
    kind: 'train',
    title: `graft train: ${path.basename(path.resolve(o.data))}${r.out ? ` → ${path.basename(r.out)}` : ''}`,
    createdAt: new Date().toISOString(),
    command: o.command ?? trainCommandLine(o),
    summary: {
      model: r.out,
      data: {
        train: path.resolve(o.data),
        val: o.val ? path.resolve(o.val) : undefined,
        valSplit: o.val ? undefined : (o.valSplit ?? 0.2),
      },
      classes,
      counts: [
        { split: 'training', perClass: r.classCounts.train },
        { split: 'validation', perClass: r.classCounts.val },
      ],
      skipped: r.skipped,
      base: r.base,
      baseFallback: r.baseFallback?.reason,
      cut: r.cut,
      mode: r.mode,
      engine: r.engine,
      head: r.head,
      // A logistic head is fitted to convergence: it has an L2 strength, and no epochs, learning rate or batches.
      settings: r.headFit
        ? { augment: r.augment, 'L2 strength': r.headFit.lambda, seed: o.seed ?? 42 }
        : {
            augment: r.augment,
            'max epochs': o.epochs ?? null,
            'epochs trained': r.epochs,
            lr: o.lr ?? null,
            'batch size': o.batchSize ?? null,
            seed: o.seed ?? 42,
            patience: o.patience ?? null,
          },
      seconds: { ...r.seconds },
    },
    accuracy: accuracyOf(confusion, 'validation', usedVal),
    trainAccuracy: r.trainAccuracy,
    selection: r.selection,
    history: r.history,
    stages: r.stages,
    sweep: r.sweep ? { method: r.sweepMethod ?? '', rows: r.sweep } : undefined,
    confusion,
    perClass: confusion ? perClassMetrics(confusion, classes) : undefined,
    confusedPairs: confusion ? confusedPairs(confusion, classes) : undefined,
    mistakes: r.valPredictions ? mistakesOf(r.valPredictions, classes) : undefined,
    labelIssues: r.labelIssues,
    duplicates: r.duplicates,
    duplicateThreshold: r.duplicates ? (o.duplicateThreshold ?? DEFAULT_DUPLICATE_THRESHOLD) : undefined,
    duplicateImages: r.duplicates ? r.trainImages + r.valImages : undefined,
  };
}

/** For an already trained model run on labelled data (`graft evaluate MODEL DATA --report`). */
export function evaluationReportData(
  e: {
    labels: string[];
    predictions: { file: string; label: string; probabilities: number[] }[];
    skipped: Skipped[];
    engine: string;
    seconds: number;
  },
  model: { dir: string; metadata: { base: { name: string }; cut: string; mode: string; head: { kind: string } } },
  data: string,
  command?: string,
): ReportData {
  const classes = e.labels;
  const confusion = confusionFrom(e.predictions, classes);
  return {
    version: REPORT_VERSION,
    kind: 'evaluate',
    title: `graft evaluate: ${path.basename(model.dir)} on ${path.basename(path.resolve(data))}`,
    createdAt: new Date().toISOString(),
    command,
    summary: {
      model: model.dir,
      data: { evaluated: path.resolve(data) },
      classes,
      counts: [{ split: 'evaluated', perClass: confusion.map((row) => row.reduce((a, b) => a + b, 0)) }],
      skipped: e.skipped,
      base: model.metadata.base.name,
      cut: model.metadata.cut,
      mode: model.metadata.mode,
      engine: e.engine,
      head: model.metadata.head.kind,
      settings: {},
      seconds: { total: e.seconds },
    },
    accuracy: accuracyOf(confusion, 'evaluated', false),
    confusion,
    perClass: perClassMetrics(confusion, classes),
    confusedPairs: confusedPairs(confusion, classes),
    mistakes: mistakesOf(e.predictions, classes),
  };
}
