/**
 * @file The report's charts: Vega-Lite specifications compiled to Vega and rendered to SVG strings in Node (renderer
 * 'none', no browser, no canvas) on a worker thread. The SVG is inlined in the page, so opening it
 * needs no script and no network. vega is loaded only when a report is made: other commands never pay for it.
 */
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { CvEpoch } from '../train/cross-validate.ts';
import type { SweepRow } from '../workflows/autocut.ts';
import type { StageLog } from '../workflows/parameter.ts';
import type { StageSummary } from '../workflows/train.ts';

// biome-ignore lint/suspicious/noExplicitAny: vega-lite's TopLevelSpec is a deep union; specs are checked by compiling.
type Spec = Record<string, any>;

const FONT = 'system-ui, -apple-system, "Segoe UI", Roboto, sans-serif';
const CONFIG = {
  font: FONT,
  view: { stroke: '#ddd' },
  axis: { labelFontSize: 11, titleFontSize: 12, gridColor: '#eee' },
  legend: { labelFontSize: 11, titleFontSize: 12 },
  header: { labelFontSize: 12, titleFontSize: 12 },
};

/**
 * Renders Vega-Lite specs to SVG strings on the worker thread. vega and vega-lite are loaded from the single-file
 * builds both packages ship (build/vega.min.js, build/vega-lite.min.js), run as plain scripts that define the globals
 * `vega` and `vegaLite`: parsing two files costs a quarter of the CPU time of loading the hundred-odd ES modules behind
 * their package entries, and a warm `graft train` is only seconds of CPU (bench --sections=overhead).
 */
const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const { readFileSync } = require('node:fs');
const vm = require('node:vm');
// An eval'd worker has CommonJS's module, exports and require as globals; hidden here, each bundle takes its
// browser branch and sets a global (vega-lite reads vega from it) instead of requiring vega's ES module entry.
const load = () => {
  for (const file of [VEGA_FILE, VEGA_LITE_FILE]) {
    const code = '(function (module, exports, require, define) {' + readFileSync(file, 'utf8') + '\\n})';
    vm.runInThisContext(code, { filename: file }).call(globalThis);
  }
  return [globalThis.vega, globalThis.vegaLite];
};
let modules;
parentPort.on('message', async ({ id, spec }) => {
  try {
    const [vega, vl] = (modules ??= load());
    const view = new vega.View(vega.parse(vl.compile(spec).spec), { renderer: 'none' });
    try {
      parentPort.postMessage({ id, svg: await view.toSVG() });
    } finally {
      view.finalize();
    }
  } catch (e) {
    parentPort.postMessage({ id, error: e instanceof Error ? e.message : String(e) });
  }
});
setImmediate(() => {
  try {
    modules ??= load();
  } catch {
    // Reported with the first chart asked for.
  }
});
`;

/** The single-file build beside a package's resolved entry (both live in the package's build/ folder). */
const bundle = (pkg: string, file: string) => fileURLToPath(new URL(file, import.meta.resolve(pkg)));

let worker: Worker | undefined;
let pending = new Map<number, { resolve: (svg: string) => void; reject: (e: Error) => void }>();
let nextId = 0;

/**
 * Starts the chart renderer (a worker thread that loads vega and vega-lite) ahead of need, so that loading them overlaps
 * with training instead of following it. Safe to call more than once; `stopCharts` ends it.
 */
export function startCharts(): void {
  if (worker) return;
  // The worker is a script string (nothing to ship beside the compiled files) that loads vega and vega-lite from the
  // files resolved here; execArgv [] keeps tsx's module hooks out of it.
  const source = WORKER_SOURCE.replace('VEGA_FILE', JSON.stringify(bundle('vega', 'vega.min.js'))).replace(
    'VEGA_LITE_FILE',
    JSON.stringify(bundle('vega-lite', 'vega-lite.min.js')),
  );
  worker = new Worker(source, { eval: true, execArgv: [] });
  worker.unref();
  const failAll = (e: Error) => {
    for (const p of pending.values()) p.reject(e);
    pending = new Map();
  };
  worker.on('message', (m: { id: number; svg?: string; error?: string }) => {
    const p = pending.get(m.id);
    pending.delete(m.id);
    if (m.error !== undefined) p?.reject(new Error(`chart: ${m.error}`));
    else p?.resolve(m.svg ?? '');
  });
  worker.on('error', failAll);
  worker.on('exit', () => {
    failAll(new Error('chart renderer stopped'));
    worker = undefined;
  });
}

/** Ends the chart renderer started by startCharts. */
export async function stopCharts(): Promise<void> {
  const w = worker;
  worker = undefined;
  await w?.terminate();
}

/** Compiles a Vega-Lite spec and renders it to an SVG string (on the chart renderer, started here if need be). */
export async function renderSvg(spec: Spec): Promise<string> {
  startCharts();
  const id = nextId++;
  const done = new Promise<string>((resolve, reject) => pending.set(id, { resolve, reject }));
  worker!.ref();
  try {
    worker!.postMessage({ id, spec: { config: CONFIG, ...spec } });
    return await done;
  } finally {
    if (pending.size === 0) worker?.unref();
  }
}

/** Series of the curves chart: the head's fitting rows, the validation images, the folds' held-out rows. */
const SPLITS = ['training', 'validation', 'cross-validation (held out)'];

/**
 * Loss and accuracy per epoch, training and validation, one column per stage; the kept epoch marked by a rule. `cv`: the
 * pooled held-out curve of cross-validation that chose the head's epochs, drawn in the head's column.
 */
export function curvesSpec(history: StageLog[], stages: StageSummary[], cv?: CvEpoch[]): Spec {
  const best = new Map(stages.map((s) => [s.stage, s.bestEpoch]));
  const values = history.flatMap((l) => {
    const common = { stage: l.stage, epoch: l.epoch, best: best.get(l.stage) ?? 0 };
    const rows = [
      { ...common, metric: 'loss', split: 'training', value: l.loss },
      { ...common, metric: 'accuracy', split: 'training', value: l.accuracy },
    ];
    if (l.valLoss !== undefined) rows.push({ ...common, metric: 'loss', split: 'validation', value: l.valLoss });
    if (l.valAccuracy !== undefined)
      rows.push({ ...common, metric: 'accuracy', split: 'validation', value: l.valAccuracy });
    return rows;
  });
  for (const p of cv ?? []) {
    const common = { stage: 'head' as const, epoch: p.epoch, best: best.get('head') ?? 0 };
    values.push({ ...common, metric: 'loss', split: SPLITS[2], value: p.loss });
    values.push({ ...common, metric: 'accuracy', split: SPLITS[2], value: p.accuracy });
  }
  const order = stages.map((s) => s.stage);
  return {
    data: { values },
    facet: {
      row: { field: 'metric', type: 'nominal', sort: ['loss', 'accuracy'], title: null },
      column: {
        field: 'stage',
        type: 'nominal',
        sort: order,
        title: null,
        header: { labelExpr: "'stage: ' + datum.label" },
      },
    },
    spec: {
      width: stages.length > 1 ? 260 : 520,
      height: 150,
      layer: [
        {
          mark: { type: 'line', point: { size: 18 } },
          encoding: {
            x: { field: 'epoch', type: 'quantitative', axis: { tickMinStep: 1 }, title: 'epoch' },
            y: { field: 'value', type: 'quantitative', scale: { zero: false }, title: null },
            color: {
              field: 'split',
              type: 'nominal',
              scale: { domain: SPLITS, range: ['#4c78a8', '#e45756', '#54a24b'] },
              title: null,
            },
          },
        },
        {
          transform: [{ filter: "datum.epoch === datum.best && datum.split === 'training'" }],
          mark: { type: 'rule', strokeDash: [4, 3], color: '#555' },
          encoding: { x: { field: 'epoch', type: 'quantitative' } },
        },
      ],
    },
    resolve: { scale: { x: 'independent', y: 'independent' } },
  };
}

/** Cross-validated score ± sd per cut, deep cuts on the left, the chosen one highlighted. */
export function sweepSpec(rows: SweepRow[]): Spec {
  const values = rows.map((r) => ({
    cut: r.cut,
    depth: r.depth,
    score: r.score,
    low: Math.max(0, r.score - r.sd),
    high: Math.min(1, r.score + r.sd),
    chosen: r.chosen ? 'chosen' : 'candidate',
  }));
  const x = {
    field: 'cut',
    type: 'ordinal',
    sort: { field: 'depth', order: 'descending' },
    title: 'cut (deeper in the network to the left)',
    axis: { labelAngle: -40 },
  };
  return {
    data: { values },
    width: Math.max(360, 44 * rows.length),
    height: 220,
    layer: [
      {
        mark: { type: 'rule', color: '#999' },
        encoding: { x, y: { field: 'low', type: 'quantitative' }, y2: { field: 'high' } },
      },
      {
        mark: { type: 'point', filled: true, size: 70 },
        encoding: {
          x,
          y: { field: 'score', type: 'quantitative', scale: { zero: false }, title: 'cross-validated accuracy ± sd' },
          color: {
            field: 'chosen',
            type: 'nominal',
            scale: { domain: ['candidate', 'chosen'], range: ['#4c78a8', '#e45756'] },
            title: null,
          },
        },
      },
    ],
  };
}

/** counts[true][predicted] as a heat map with the counts written in. */
export function confusionSpec(confusion: number[][], classes: string[]): Spec {
  const values = confusion.flatMap((row, t) =>
    row.map((count, p) => ({ actual: classes[t], predicted: classes[p], count })),
  );
  const max = Math.max(1, ...values.map((v) => v.count));
  const cell = Math.max(28, Math.min(70, Math.floor(420 / Math.max(1, classes.length))));
  const enc = {
    x: { field: 'predicted', type: 'nominal', sort: classes, title: 'predicted', axis: { labelAngle: -40 } },
    y: { field: 'actual', type: 'nominal', sort: classes, title: 'true class' },
  };
  return {
    data: { values },
    width: cell * classes.length,
    height: cell * classes.length,
    layer: [
      {
        mark: 'rect',
        encoding: {
          ...enc,
          color: {
            field: 'count',
            type: 'quantitative',
            scale: { scheme: 'blues', domain: [0, max] },
            title: 'images',
          },
        },
      },
      {
        mark: { type: 'text', fontSize: classes.length > 12 ? 9 : 12 },
        encoding: {
          ...enc,
          text: { field: 'count', type: 'quantitative' },
          color: { condition: { test: `datum.count > ${max / 2}`, value: 'white' }, value: '#222' },
        },
      },
    ],
  };
}
