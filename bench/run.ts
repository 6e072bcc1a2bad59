/**
 * `npm run bench`: speed and accuracy, with the PyTorch peer measured in the same run where it is installed, so that
 * figures are quoted as ratios (these machines are shared and noisy). Each section's results are stored in
 * docs/benchmarks.json with the date and machine they were measured on, and docs/BENCHMARKS.md is rendered from every
 * stored section: running one section never erases another. With --json the last line of stdout is one JSON object
 * (keys date, machine, trunk, peer, peerTrain, trainStep, train, accuracy, transfer, fineTune).
 *
 *   npm run bench                          # trunk, train-step, end-to-end and accuracy sections
 *   npm run bench -- --quick               # trunk timings only
 *   npm run bench -- --transfer            # the transfer-learning table on hymenoptera only (about an hour)
 *   npm run bench -- --sections=train-step,accuracy
 *   npm run bench -- --sections=accuracy --accuracy-rows=int8   # only the accuracy rows whose mode or base has 'int8'
 *   npm run bench -- --sections=decode     # decoding + resizing hymenoptera: graft's resampler against sharp's resize
 *   npm run bench -- --sections=serve     # graft serve: 2,000 images through the page, memory of page and server
 *   npm run bench -- --sections=train-step,fine-tune   # the training engines (ONNX Runtime against WASM, PyTorch)
 *   npm run bench -- --sections=fine-tune --fine-tune-rows=whole,tutorial   # only those fine-tune rows
 *   npm run bench -- --sections=scale           # 1k-100k generated images: memory and time per image (bench/scale.ts)
 *   npm run bench -- --sections=findings     # label-issue and near-duplicate checks (default base: GRAFT_MODEL_MIRROR)
 *   npm run bench -- --sections=overhead     # CPU seconds the report and the finders add to a warm-cache graft train
 *   npm run bench -- --sections=duplicate-search   # near-duplicate search on 50,000 random 1280-d rows (goal < 30 s)
 *   npm run bench -- --sections=          # measures nothing: renders BENCHMARKS.md from docs/benchmarks.json
 *   npm run bench -- --json
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DEFAULT_BASE, loadLayersBase } from '../src/base/base.ts';
import { onnxAvailable, onnxTrunkRunner } from '../src/engines/onnx.ts';
import { compileTail } from '../src/engines/ort-train.ts';
import { buildTrunkModel, tfjsTrunkRunner } from '../src/engines/trunk.ts';
import { initTf, tf } from '../src/tfjs/tf.ts';
import { registerWasmGradients } from '../src/tfjs/wasm-grad.ts';
import { wilsonInterval } from '../src/train/metrics.ts';
import { ortTailEngine } from '../src/train/ort-tail.ts';
import { type JointHead, type TailEngine, tfjsTailEngine } from '../src/train/tail-trainer.ts';
import { buildTail } from '../src/workflows/parameter.ts';
import {
  type DuplicateCheck,
  type DuplicateTiming,
  duplicateCheck,
  duplicateTiming,
  type LabelIssueCheck,
  labelIssueCheck,
} from './findings.ts';
import { parseTiming, timedNode } from './gnu-time.ts';
import { type OverheadResult, overheadSection, renderOverhead } from './overhead.ts';
import { renderScale, type ScaleRow, scaleSection } from './scale.ts';
import { MEMORY_BUDGET, type ServeMemoryRow, serveMemoryBench } from './serve-memory.ts';
import { timeRunner } from './timing.ts';
import {
  type BasesResult,
  basesSection,
  type DefaultResult,
  defaultSection,
  type HeadsResult,
  headsSection,
  renderBases,
  renderDefault,
  renderHeads,
} from './zoo.ts';

const argv = process.argv.slice(2);
const args = new Set(argv);
const json = args.has('--json');
const SECTIONS = [
  'trunk',
  'train-step',
  'train',
  'accuracy',
  'transfer',
  'decode',
  'serve',
  'fine-tune',
  'scale',
  'findings',
  'overhead',
  'duplicate-search',
  'bases',
  'heads',
  'default',
] as const;
type Section = (typeof SECTIONS)[number];
const listed = argv
  .find((a) => a.startsWith('--sections='))
  ?.slice('--sections='.length)
  .split(',')
  .filter(Boolean);
for (const s of listed ?? [])
  if (!SECTIONS.includes(s as Section)) throw new Error(`unknown section '${s}' (${SECTIONS.join(', ')})`);
const wanted = new Set<Section>(
  (listed as Section[] | undefined) ??
    (args.has('--transfer')
      ? ['transfer']
      : args.has('--quick')
        ? ['trunk']
        : ['trunk', 'train-step', 'train', 'accuracy']),
);
const log = (s: string) => (json ? process.stderr : process.stdout).write(`${s}\n`);
const HYM = path.resolve('../shared/data/hymenoptera');
const PEER = path.resolve('../shared/bench/peer_torch.py');
const PEER_TUTORIAL = path.resolve('../shared/bench/peer_torch_tutorial.py');
const V1 = path.resolve('../shared/models/mobilenet_v1_1.0_224_imagenet_trunc/model.json');
/** The ONNX model zoo's quantised MobileNetV2 1.0 (issue 15: a base found in the wild). */
const INT8 = path.resolve('../shared/models/onnx/mobilenetv2-12-int8.onnx');
/** --accuracy-rows=TEXT: measure only the accuracy rows whose mode or base contains TEXT; the other stored rows stay. */
const accuracyRows = argv.find((a) => a.startsWith('--accuracy-rows='))?.slice('--accuracy-rows='.length);
const STORE = 'docs/benchmarks.json';

interface TrunkRow {
  engine: string;
  base: string;
  arch: string;
  batch: number;
  msPerImage: number;
}
interface PeerRow {
  name: string;
  arch: string;
  what: string;
  msPerImage: number;
  threads: number;
  batch: number;
  version?: string;
}
interface TrainRow {
  engine: string;
  base: string;
  cache: 'cold' | 'warm';
  seconds: number;
  valAccuracy: number | null;
  valImages?: number;
  /** The score the run's choices (cut, epochs) were made on, and whether the validation images took part. */
  selection?: { method: string; score: number; sd?: number; usedValidation: boolean };
  cut: string;
  /** Process CPU time (user + sys, GNU time) where /usr/bin/time exists: less disturbed by a shared machine than wall. */
  cpuSeconds?: number;
  /** 1-minute load average before and after the run. */
  load?: [number, number];
}
interface StepRow {
  base: string;
  arch: string;
  trains: string;
  from: string;
  /** 'wasm' or 'onnx'; rows stored before both engines trained are WASM's. */
  engine?: string;
  batch: number;
  msPerImage: number;
  note?: string;
}
interface FineTuneRow {
  what: string;
  base: string;
  args: string;
  engine: string;
  seconds: number;
  trainSeconds: number;
  valAccuracy: number | null;
  /** Epochs of the last stage, and its seconds per epoch. */
  epochs: number;
  secondsPerEpoch: number;
  stages?: string;
  note?: string;
  cpuSeconds?: number;
  load?: [number, number];
}
interface TutorialRow {
  mode: string;
  epochs: number;
  seconds: number;
  secondsPerEpoch: number;
  trainImages: number;
  valImages: number;
  version?: string;
}
interface TransferRow {
  base: string;
  method: string;
  args: string;
  cut: string;
  valAccuracy: number | null;
  seconds: number;
  trainSeconds: number;
  stages?: string;
}
interface Stored<T> {
  date: string;
  machine: string;
  /** Load averages (1, 5, 15 min) when the section started and ended: these machines are shared (a number in older
   *  entries: the one-minute average at the start). */
  load?: string | number;
  rows: T;
}
interface Store {
  trunk?: Stored<TrunkRow[]>;
  peer?: Stored<PeerRow[]>;
  'train-step'?: Stored<StepRow[]>;
  train?: Stored<TrainRow[]>;
  accuracy?: Stored<(TrainRow & { mode: string; date?: string })[]>;
  transfer?: Stored<TransferRow[]>;
  findings?: Stored<{ labelIssues: LabelIssueCheck[]; duplicates: DuplicateCheck[]; timing: DuplicateTiming[] }>;
  overhead?: Stored<OverheadResult>;
  'duplicate-search'?: Stored<DuplicateTiming[]>;
  decode?: Stored<DecodeRow[]>;
  serve?: Stored<ServeMemoryRow[]>;
  'fine-tune'?: Stored<{ rows: FineTuneRow[]; tutorial: TutorialRow[] }>;
  scale?: Stored<ScaleRow[]>;
  bases?: Stored<BasesResult>;
  heads?: Stored<HeadsResult>;
  default?: Stored<DefaultResult>;
}

interface DecodeRow {
  what: string;
  resize: string;
  msPerImage: number;
}

/**
 * Decoding hymenoptera (398 files) to 224x224 network input, 4 images in flight as extraction decodes them: graft's
 * way (sharp decodes at full resolution, graft's resampler resizes, the code a browser runs too) against sharp doing
 * both (libvips resizes, shrinking JPEGs in the DCT domain while decoding). Best of 3 passes over the set.
 */
async function decodeBench(): Promise<DecodeRow[]> {
  const { decodeImage } = await import('../src/dataset/decode.ts');
  const { mapLimit } = await import('../src/workflows/extract.ts');
  const sharp = (await import('sharp')).default;
  const files = ['train/ants', 'train/bees', 'val/ants', 'val/bees'].flatMap((d) =>
    readdirSync(path.join(HYM, d)).map((f) => path.join(HYM, d, f)),
  );
  const bytes = files.map((f) => readFileSync(f));
  const time = async (fn: (b: Uint8Array) => Promise<unknown>) => {
    let best = Number.POSITIVE_INFINITY;
    for (let rep = 0; rep < 3; rep++) {
      const t = performance.now();
      await mapLimit(bytes, 4, (b) => fn(b).catch(() => undefined));
      best = Math.min(best, (performance.now() - t) / bytes.length);
    }
    return best;
  };
  const rows: DecodeRow[] = [];
  for (const crop of [1, 0.875]) {
    const p = { size: [224, 224] as [number, number], resize: 'cover' as const, crop };
    const resize = crop === 1 ? 'cover' : 'cover, crop 0.875';
    rows.push({
      what: 'graft: sharp decodes, graft resizes',
      resize,
      msPerImage: await time((b) => decodeImage(b, 'x', p)),
    });
    const side = Math.round(224 / crop);
    rows.push({
      what: 'sharp decodes and resizes (peer)',
      resize,
      msPerImage: await time((b) => {
        let img = sharp(b, { failOn: 'error', pages: 1 })
          .rotate()
          .flatten({ background: { r: 0, g: 0, b: 0 } })
          .resize({ width: side, height: side, fit: 'cover', kernel: 'linear' });
        if (side !== 224)
          img = img.extract({ left: (side - 224) >> 1, top: (side - 224) >> 1, width: 224, height: 224 });
        return img.toColourspace('srgb').raw().toBuffer();
      }),
    });
    for (const r of rows.slice(-2)) log(`decode ${r.resize}: ${r.what} ${r.msPerImage.toFixed(2)} ms/image`);
  }
  return rows;
}

/** Bundled bases are names, others are paths to a model.json: the folder names those. */
const baseLabel = (base: string) =>
  base.endsWith('.onnx') ? path.basename(base) : base.includes('/') ? path.basename(path.dirname(base)) : base;

async function trunkBench(): Promise<TrunkRow[]> {
  const rows: TrunkRow[] = [];
  const haveOnnx = await onnxAvailable();
  for (const [name, arch, size, wasmBatch, wasmReps] of [
    ['nsfw-mobilenet-v2', 'mobilenet_v2', 224, 16, 3],
    ['nsfw-inception-v3', 'inception_v3', 299, 4, 2],
  ] as const) {
    const base = await loadLayersBase(name);
    const model = buildTrunkModel(base, [base.defaultCut]);
    if (haveOnnx) {
      const r = await onnxTrunkRunner(model);
      rows.push({ engine: 'onnx', base: name, arch, batch: 16, msPerImage: await timeRunner(r, size, 16, 5) });
      await r.dispose();
      log(`trunk onnx ${name}: ${rows[rows.length - 1].msPerImage.toFixed(1)} ms/image`);
    }
    const w = tfjsTrunkRunner(model, wasmBatch);
    rows.push({
      engine: 'wasm',
      base: name,
      arch,
      batch: wasmBatch,
      msPerImage: await timeRunner(w, size, wasmBatch, wasmReps),
    });
    log(`trunk wasm ${name}: ${rows[rows.length - 1].msPerImage.toFixed(1)} ms/image`);
    base.model.dispose();
  }
  return rows;
}

function peerBench(): PeerRow[] {
  if (!existsSync('/usr/bin/python3') || !existsSync(PEER)) return [];
  const r = spawnSync('/usr/bin/python3', [PEER, '--json', '--train', '--arch', 'mobilenet_v2,inception_v3'], {
    encoding: 'utf8',
    timeout: 900_000,
  });
  if (r.status !== 0) {
    log(`peer: PyTorch not available (${(r.stderr || '').trim().split('\n').pop()})`);
    return [];
  }
  return r.stdout
    .trim()
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l))
    .map((o) => ({
      name: o.peer,
      arch: o.arch,
      what: o.what,
      msPerImage: o.ms_per_image,
      threads: o.threads,
      batch: o.batch,
      version: o.version,
    }));
}

/**
 * One training step (forward, backward, Adam update) of the bundled MobileNetV2 from a split up to the head input,
 * with graft's 2-class head, through the trainer's own runner on each engine (tail-trainer's TF.js runner on WASM,
 * the compiled graphs of engines/ort-train.ts on ONNX Runtime); random inputs, as the peer's. 'full' starts at the
 * image: what the peer's train_step does (its BatchNorm in training mode, graft's in inference mode, the fine-tuning
 * rule; the kernels are the same).
 */
async function trainStepBench(): Promise<StepRow[]> {
  await initTf('wasm');
  registerWasmGradients();
  const base = await loadLayersBase('nsfw-mobilenet-v2');
  const haveOnnx = await onnxAvailable();
  const rows: StepRow[] = [];
  // The full network at batch 16 exceeds the WASM heap (activations kept for backprop: ~150 MB per 224 px image).
  const splits: [string, string, number][] = [
    ['block_16_project_BN', 'Conv_1 (retrain 1 candidate)', 16],
    ['block_15_add', 'block 16 + Conv_1', 16],
    ['block_13_expand_relu', 'block 13 from its depthwise conv, 14-16, Conv_1', 16],
    ['block_10_project_BN', 'blocks 11-16 + Conv_1', 16],
    [base.model.layers[0].name, 'full network', 16],
  ];
  const dim = (base.model.getLayer(base.defaultCut).outputShape as number[]).slice(-1)[0];
  const C = 2;
  try {
    for (const [from, trains, batch] of splits) {
      const tail = buildTail(base, from, base.defaultCut, false);
      for (const l of tail.layers) l.trainable = true;
      const size = tail.inputShape.reduce((a, b) => a * b, 1);
      for (const engine of haveOnnx ? ['wasm', 'onnx'] : ['wasm']) {
        const n = engine === 'wasm' && from === base.model.layers[0].name ? 8 : batch;
        const x = tf.tidy(() =>
          (from === base.model.layers[0].name
            ? tf.randomUniform([n, ...tail.inputShape], -1, 1, 'float32', 2)
            : tf.relu(tf.randomNormal([n, ...tail.inputShape], 0, 1, 'float32', 2))
          ).dataSync(),
        ) as Float32Array;
        const labels = new Float32Array(n * C);
        for (let r = 0; r < n; r++) labels[r * C + (r % C)] = 1 / n;
        const mask = new Float32Array(n * dim).fill(1 / 0.8);
        const head: JointHead = {
          kernel: tf.variable(tf.randomNormal([dim, C], 0, 0.01, 'float32', 1)),
          bias: tf.variable(tf.zeros([C])),
          mean: tf.zeros([dim]),
          invStd: tf.ones([dim]),
          dim,
          numClasses: C,
        };
        const eng: TailEngine =
          engine === 'onnx' ? ortTailEngine(await compileTail(tail.toModel!())) : tfjsTailEngine(tail);
        const runner = await eng.runner(head, 1e-9);
        try {
          await runner.step(x.slice(0, n * size), n, labels, mask); // warm-up: plans, buffers, kernels
          const times: number[] = [];
          for (let r = 0; r < 3; r++) {
            const t = performance.now();
            await runner.step(x.slice(0, n * size), n, labels, mask);
            times.push(performance.now() - t);
          }
          times.sort((a, b) => a - b);
          rows.push({
            base: 'nsfw-mobilenet-v2',
            arch: 'mobilenet_v2',
            trains,
            from,
            engine,
            batch: n,
            msPerImage: times[1] / n,
          });
          log(`train step ${engine} ${trains} (batch ${n}): ${rows[rows.length - 1].msPerImage.toFixed(1)} ms/image`);
        } finally {
          await runner.release();
          await eng.release();
          tf.dispose([head.kernel, head.bias, head.mean, head.invStd]);
        }
      }
    }
  } finally {
    base.model.dispose();
  }
  return rows;
}

/** The fields of `graft train --json` that the tables read beyond TrainRow's. */
interface TrainJson {
  parameter?: { stages?: unknown };
  seconds?: { train?: number };
}

function trainRun(engine: string, base: string, extra: string[], cacheDir: string): TrainRow & { raw: TrainJson } {
  const load0 = os.loadavg()[0];
  const t = performance.now();
  const r = spawnSync(
    ...timedNode([
      '--import',
      'tsx',
      'src/cli/main.ts',
      'train',
      path.join(HYM, 'train'),
      '--val',
      path.join(HYM, 'val'),
      '--base',
      base,
      '--engine',
      engine,
      '--json',
      ...extra,
    ]),
    { encoding: 'utf8', env: { ...process.env, GRAFT_CACHE_DIR: cacheDir }, maxBuffer: 1 << 26 },
  );
  const seconds = (performance.now() - t) / 1000;
  const load: [number, number] = [load0, os.loadavg()[0]];
  const { timing, stderr } = parseTiming(r.stderr);
  if (r.status !== 0) throw new Error(`train failed: ${stderr.trim().split('\n').pop()}`);
  const out = JSON.parse(r.stdout.trim().split('\n').pop()!);
  const cache = out.cache.misses === 0 ? 'warm' : 'cold';
  const cpuSeconds = timing?.cpuSeconds;
  return {
    engine: out.engine,
    base,
    cache,
    seconds,
    cpuSeconds,
    load,
    valAccuracy: out.valAccuracy,
    valImages: out.valImages,
    selection: out.selection,
    cut: out.cut,
    raw: out,
  };
}

async function trainSection(): Promise<TrainRow[]> {
  const train: TrainRow[] = [];
  for (const engine of ['onnx', 'wasm']) {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'graft-bench-'));
    for (let k = 0; k < 2; k++) {
      const { raw, ...row } = trainRun(engine, 'nsfw-mobilenet-v2', [], dir);
      train.push(row);
      log(`train ${engine} ${row.cache}: ${row.seconds.toFixed(1)} s, val ${row.valAccuracy?.toFixed(3)}`);
    }
    rmSync(dir, { recursive: true, force: true });
  }
  return train;
}

type AccuracyRow = TrainRow & { mode: string; date?: string };
async function accuracySection(previous: AccuracyRow[]): Promise<AccuracyRow[]> {
  const accuracy: AccuracyRow[] = [];
  const dir = mkdtempSync(path.join(os.tmpdir(), 'graft-bench-acc-'));
  const runs: [string, string, string[]][] = [
    ['feature (default cut)', 'nsfw-mobilenet-v2', []],
    ['feature, block_13_expand_relu', 'nsfw-mobilenet-v2', ['--cut', 'block_13_expand_relu']],
    ['auto cut search', 'nsfw-mobilenet-v2', ['--mode', 'auto']],
    // The other bundled network, trained for the same content filter: how far the bundled features go on everyday photos.
    ['feature (default cut)', 'nsfw-inception-v3', []],
    ['auto cut search', 'nsfw-inception-v3', ['--mode', 'auto']],
    // Its BatchNorm layers have no gamma: the row shows tails train on it (mixed10 retrained, about 9 minutes here).
    ['parameter, 1 block retrained', 'nsfw-inception-v3', ['--mode', 'parameter']],
    ['feature (default cut)', V1, ['--input-range=-1,1']],
    ['auto cut search', V1, ['--input-range=-1,1', '--mode', 'auto']],
    ['auto cut search, --crop 0.875', V1, ['--input-range=-1,1', '--crop', '0.875', '--mode', 'auto']],
    // The default base: from graft's model cache or GRAFT_MODEL_MIRROR (e.g. ../shared/models/mirror served locally).
    ['feature (default cut)', DEFAULT_BASE, []],
    ['auto cut search', DEFAULT_BASE, ['--mode', 'auto']],
    ['feature (default cut), --augment none', DEFAULT_BASE, ['--augment', 'none']],
    // Quantised: every float tensor has a quantised twin; the cut is the pooled 1280 features below the logits.
    [
      'feature, int8 ONNX, pooled features',
      INT8,
      ['--mean', '0.485,0.456,0.406', '--std', '0.229,0.224,0.225', '--cut', '472_quantized'],
    ],
  ];
  const chosen = accuracyRows
    ? runs.filter(([mode, base]) => mode.includes(accuracyRows) || baseLabel(base).includes(accuracyRows))
    : runs;
  for (const [mode, base, extra] of chosen) {
    if (!existsSync(base) && base.includes('/')) continue;
    let row: TrainRow;
    try {
      const { raw: _raw, ...rest } = trainRun('auto', base, extra, dir);
      row = rest;
    } catch (e) {
      log(`accuracy ${mode} ${baseLabel(base)}: skipped (${(e as Error).message})`);
      continue;
    }
    accuracy.push({ ...row, mode });
    log(
      `accuracy ${mode} ${baseLabel(base)}: ${row.valAccuracy?.toFixed(3)} at ${row.cut} (${row.seconds.toFixed(1)} s)`,
    );
  }
  rmSync(dir, { recursive: true, force: true });
  if (!accuracyRows) return accuracy;
  const rows = [...previous];
  // Dated: the section's date (the table's header) is this partial run's, the other rows keep theirs.
  for (const row of accuracy.map((r) => ({ ...r, date: new Date().toISOString().slice(0, 10) }))) {
    const at = rows.findIndex((x) => x.mode === row.mode && x.base === row.base);
    if (at >= 0) rows[at] = row;
    else rows.push(row);
  }
  return rows;
}

/**
 * The transfer-learning table of issue 3, per base: feature transfer at the default and a mid cut, parameter transfer
 * retraining the top 1, 2, 3 blocks (pretrained and re-initialised), and fine-tuning. "Blocks" are the networks' own
 * (MobileNetV2 inverted residual blocks, MobileNet v1 depthwise + pointwise pairs), named by the split below them.
 */
function transferSection(): TransferRow[] {
  const plans: { base: string; extra: string[]; mid: string; blocks: string[]; unfreeze: string }[] = [
    {
      base: 'nsfw-mobilenet-v2',
      extra: [],
      mid: 'block_13_expand_relu',
      blocks: ['block_15_add', 'block_14_add', 'block_13_project_BN'],
      unfreeze: 'block_11_add',
    },
    // --crop 0.875: the central crop MobileNet v1 was evaluated with (TF-slim's central_fraction); see README.
    {
      base: V1,
      extra: ['--input-range=-1,1', '--crop', '0.875'],
      mid: 'conv_pw_10_relu',
      blocks: ['conv_pw_12_relu', 'conv_pw_11_relu', 'conv_pw_10_relu'],
      unfreeze: 'conv_pw_8_relu',
    },
  ];
  const rows: TransferRow[] = [];
  for (const p of plans) {
    if (p.base.includes('/') && !existsSync(p.base)) continue;
    const dir = mkdtempSync(path.join(os.tmpdir(), 'graft-bench-transfer-'));
    const runs: [string, string[]][] = [
      ['feature, default cut', []],
      ['feature, default cut, no augmentation', ['--augment', 'none']],
      [`feature, ${p.mid}`, ['--cut', p.mid]],
      [`feature, ${p.mid}, no augmentation`, ['--cut', p.mid, '--augment', 'none']],
      ['feature, cut search (--mode auto)', ['--mode', 'auto']],
      ...p.blocks.map((cut, i): [string, string[]] => [
        `parameter, ${i + 1} block${i ? 's' : ''} retrained`,
        ['--mode', 'parameter', '--cut', cut],
      ]),
      ...p.blocks.map((cut, i): [string, string[]] => [
        `parameter, ${i + 1} block${i ? 's' : ''} re-initialised`,
        ['--mode', 'parameter', '--cut', cut, '--reinit'],
      ]),
      ['feature, default cut + fine-tune (default unfreeze)', ['--fine-tune']],
      [
        `feature, ${p.mid} + fine-tune from ${p.unfreeze}`,
        ['--cut', p.mid, '--fine-tune', '--unfreeze-from', p.unfreeze],
      ],
    ];
    for (const [method, a] of runs) {
      try {
        const { raw, ...row } = trainRun('auto', p.base, [...p.extra, ...a], dir);
        const stages = (
          raw.parameter?.stages as
            | { stage: string; epochs: number; bestEpoch: number; valAccuracy?: number; seconds: number }[]
            | undefined
        )
          ?.map(
            (s) =>
              `${s.stage} ${s.bestEpoch}/${s.epochs} ep ${s.valAccuracy?.toFixed(3) ?? ''} ${s.seconds.toFixed(0)} s`,
          )
          .join('; ');
        rows.push({
          base: baseLabel(p.base),
          method,
          args: a.join(' '),
          cut: row.cut,
          valAccuracy: row.valAccuracy,
          seconds: row.seconds,
          trainSeconds: raw.seconds?.train ?? 0,
          stages,
        });
        log(`transfer ${baseLabel(p.base)} ${method}: ${row.valAccuracy?.toFixed(3)} (${row.seconds.toFixed(1)} s)`);
      } catch (e) {
        log(`transfer ${baseLabel(p.base)} ${method}: failed: ${(e as Error).message}`);
        rows.push({
          base: baseLabel(p.base),
          method,
          args: a.join(' '),
          cut: '',
          valAccuracy: null,
          seconds: 0,
          trainSeconds: 0,
          stages: `failed: ${(e as Error).message}`,
        });
      }
    }
    rmSync(dir, { recursive: true, force: true });
  }
  return rows;
}

const load = () =>
  `load average ${os
    .loadavg()
    .map((l) => l.toFixed(1))
    .join(', ')} on ${os.availableParallelism()} cores`;

/**
 * Parameter transfer and fine-tuning end to end on hymenoptera, ONNX Runtime against WASM with the same seed, both on
 * an activation cache warmed first (so both time training, not extraction); then the whole default base fine-tuned on
 * ONNX Runtime beside the PyTorch tutorial's fine-tuning of ResNet-18 (seconds per epoch; the tutorial's epoch is
 * 245 training images with random crops plus 153 validation images, graft's the 245 images and their mirrors plus the
 * 153 validation images).
 */
type FineTuneResult = { rows: FineTuneRow[]; tutorial: TutorialRow[] };
/** --fine-tune-rows=A,B: only the runs whose description contains A or B ('tutorial' for the peer); the rest stay stored. */
const fineTuneRows = argv
  .find((a) => a.startsWith('--fine-tune-rows='))
  ?.slice('--fine-tune-rows='.length)
  .split(',');
function fineTuneSection(previous: () => FineTuneResult, save: (r: FineTuneResult) => void): FineTuneResult {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'graft-bench-fine-tune-'));
  const mine: FineTuneRow[] = [];
  let myTutorial: TutorialRow[] | undefined;
  // With --fine-tune-rows, this run's rows replace theirs in the store as it is now (another bench run may have
  // stored rows meanwhile); the whole section replaces everything.
  const merged = (): FineTuneResult => {
    const cur = fineTuneRows ? previous() : { rows: [], tutorial: [] };
    const rows = [...cur.rows];
    for (const row of mine) {
      const at = rows.findIndex((x) => x.what === row.what && x.engine === row.engine);
      if (at >= 0) rows[at] = row;
      else rows.push(row);
    }
    return { rows, tutorial: myTutorial ?? cur.tutorial };
  };
  // Stored after every row: the whole section takes hours on a loaded machine.
  const add = (row: FineTuneRow) => {
    mine.push(row);
    save(merged());
  };
  const runs: [string, string, string[], string[]][] = [
    [
      'parameter, 3 blocks',
      'nsfw-mobilenet-v2',
      ['--mode', 'parameter', '--cut', 'block_13_project_BN'],
      ['onnx', 'wasm'],
    ],
    [
      'fine-tune from block_11_add',
      'nsfw-mobilenet-v2',
      ['--cut', 'block_13_expand_relu', '--fine-tune', '--unfreeze-from', 'block_11_add'],
      ['onnx', 'wasm'],
    ],
    // The default base: from graft's model cache or GRAFT_MODEL_MIRROR (e.g. ../shared/models/mirror served locally).
    // Three fine-tune epochs, as many as the PyTorch tutorial's run below (and a bounded run: about 10 minutes here).
    [
      'fine-tune of the whole network',
      DEFAULT_BASE,
      ['--fine-tune', '--unfreeze-from', 'all', '--fine-tune-epochs', '3'],
      ['onnx'],
    ],
  ];
  try {
    for (const [what, base, args, engines] of runs) {
      if (fineTuneRows && !fineTuneRows.some((f) => what.includes(f))) continue;
      // Warm the activation cache (spatial activations at the stages' cuts) with one cheap run.
      try {
        const quick = [
          '--epochs',
          '1',
          ...(args.includes('parameter') ? ['--tail-epochs', '1'] : []),
          ...(args.includes('--fine-tune') ? ['--fine-tune-epochs', '1'] : []),
        ];
        trainRun('onnx', base, [...args, ...quick], dir);
      } catch (e) {
        log(`fine-tune ${what}: skipped (${(e as Error).message})`);
        continue;
      }
      for (const engine of engines) {
        const { raw, ...row } = trainRun(engine, base, args, dir);
        const stages = (raw.parameter?.stages ?? []) as {
          stage: string;
          epochs: number;
          bestEpoch: number;
          valAccuracy?: number;
          seconds: number;
          engine?: string;
        }[];
        const last = stages[stages.length - 1];
        const { baseFallback: fallback, base: used } = raw as { baseFallback?: { reason: string }; base?: string };
        add({
          what,
          base: baseLabel(used ?? base),
          args: args.join(' '),
          engine,
          seconds: row.seconds,
          trainSeconds: raw.seconds?.train ?? 0,
          valAccuracy: row.valAccuracy,
          epochs: last?.epochs ?? 0,
          secondsPerEpoch: last ? last.seconds / Math.max(1, last.epochs) : 0,
          stages: stages
            .map(
              (s) =>
                `${s.stage} ${s.bestEpoch}/${s.epochs} ep ${s.valAccuracy?.toFixed(3) ?? ''} ${s.seconds.toFixed(0)} s ${s.engine ?? ''}`,
            )
            .join('; '),
          note: fallback ? `default base unavailable (${fallback.reason})` : undefined,
          cpuSeconds: row.cpuSeconds,
          load: row.load,
        });
        log(
          `fine-tune ${what} ${engine}: ${row.seconds.toFixed(1)} s, CPU ${row.cpuSeconds?.toFixed(1)} s, val ${row.valAccuracy?.toFixed(3)}, load ${row.load?.map((l) => l.toFixed(1)).join(' / ')}`,
        );
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  if (fineTuneRows && !fineTuneRows.includes('tutorial')) return merged();
  const tutorial: TutorialRow[] = [];
  myTutorial = tutorial;
  if (existsSync('/usr/bin/python3') && existsSync(PEER_TUTORIAL)) {
    const epochs = 3;
    const r = spawnSync('/usr/bin/python3', [PEER_TUTORIAL, HYM, '--mode', 'finetune', '--epochs', String(epochs)], {
      encoding: 'utf8',
      timeout: 3_600_000,
    });
    if (r.status === 0) {
      const o = JSON.parse(r.stdout.trim().split('\n').pop()!);
      tutorial.push({
        mode: o.mode,
        epochs: o.epochs,
        seconds: o.seconds,
        secondsPerEpoch: o.seconds / o.epochs,
        trainImages: o.train_images,
        valImages: o.val_images,
        version: o.version,
      });
      log(`peer tutorial fine-tune: ${(o.seconds / o.epochs).toFixed(1)} s per epoch`);
    } else log(`peer tutorial: not run (${(r.stderr || '').trim().split('\n').pop()})`);
  }
  return merged();
}

function readStore(): Store {
  try {
    return JSON.parse(readFileSync(STORE, 'utf8')) as Store;
  } catch {
    return {};
  }
}

async function main() {
  const date = new Date().toISOString();
  const machine = `${os.cpus()[0]?.model ?? 'unknown CPU'}, ${os.availableParallelism()} cores, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.versions.node}`;
  log(`graft bench on ${machine}: ${[...wanted].join(', ')}`);
  const store = readStore();
  let started = load();
  const put = <K extends keyof Store>(k: K, rows: NonNullable<Store[K]>['rows']) => {
    store[k] = { date, machine, load: `${started} at the start, ${load()} at the end`, rows } as Store[K];
    started = load();
    // Written after every section, so an interrupted run keeps what it measured. The store is read again first and
    // only this section replaced, so that two bench runs of different sections at once do not undo each other.
    const now = { ...readStore(), [k]: store[k] };
    writeFileSync(`${STORE}.tmp`, `${JSON.stringify(now, null, 1)}\n`);
    renameSync(`${STORE}.tmp`, STORE);
    writeFileSync('docs/BENCHMARKS.md', render(now));
  };
  if (wanted.has('trunk')) put('trunk', await trunkBench());
  if (wanted.has('trunk') || wanted.has('train-step')) {
    const peer = peerBench();
    for (const p of peer) log(`peer ${p.name} ${p.arch} ${p.what}: ${p.msPerImage} ms/image`);
    if (peer.length || !store.peer) put('peer', peer);
  }
  if (wanted.has('train-step')) put('train-step', await trainStepBench());
  const haveData = existsSync(HYM);
  if (
    !haveData &&
    ['train', 'accuracy', 'transfer', 'decode', 'bases', 'heads', 'default'].some((x) => wanted.has(x as Section))
  )
    log(`skipping training sections: ${HYM} not found`);
  if (haveData && wanted.has('train')) put('train', await trainSection());
  if (haveData && wanted.has('accuracy')) put('accuracy', await accuracySection(store.accuracy?.rows ?? []));
  if (haveData && wanted.has('transfer')) put('transfer', transferSection());
  if (haveData && wanted.has('decode')) put('decode', await decodeBench());
  if (wanted.has('serve')) put('serve', await serveMemoryBench(log));
  if (haveData && wanted.has('fine-tune'))
    put(
      'fine-tune',
      fineTuneSection(
        () => readStore()['fine-tune']?.rows ?? { rows: [], tutorial: [] },
        (r) => put('fine-tune', r),
      ),
    );
  if (wanted.has('scale')) put('scale', await scaleSection(() => readStore().scale?.rows ?? [], log));
  if (haveData && wanted.has('findings')) {
    const cacheDir = mkdtempSync(path.join(os.tmpdir(), 'graft-bench-find-'));
    const labelIssues = [await labelIssueCheck(HYM, cacheDir)];
    log(
      `label issues: ${labelIssues[0].inTop40} of 20 flipped labels in the top 40 (${labelIssues[0].reported} reported)`,
    );
    const duplicates = [await duplicateCheck(HYM, cacheDir), await duplicateCheck(HYM, cacheDir, 'nsfw-mobilenet-v2')];
    for (const d of duplicates)
      log(
        `duplicates ${d.base}: ${d.plantedFoundAsLeaks} of ${d.planted} planted copies found as leaks, ${d.untouched.length} pairs on the untouched set`,
      );
    rmSync(cacheDir, { recursive: true, force: true });
    // The 50,000-row search is its own section (duplicate-search); older stores kept its row here.
    put('findings', { labelIssues, duplicates, timing: store.findings?.rows.timing ?? [] });
  }
  if (wanted.has('duplicate-search')) {
    const timing = [await duplicateTiming()];
    log(
      `duplicate search on ${timing[0].rows} rows: ${timing[0].seconds.toFixed(1)} s wall, ${timing[0].cpuSeconds?.toFixed(1)} CPU s (load ${timing[0].load?.toFixed(1)})`,
    );
    put('duplicate-search', timing);
  }
  if (haveData && wanted.has('overhead')) {
    const o = overheadSection(HYM, log);
    if (o) {
      log(
        `overhead of the report and finders: ${(o.overhead * 100).toFixed(1)}% CPU (${o.withExtras.toFixed(1)} s against ${o.without.toFixed(1)} s)`,
      );
      put('overhead', o);
    }
  }
  if (haveData && wanted.has('bases')) put('bases', await basesSection(log));
  if (haveData && wanted.has('heads')) put('heads', await headsSection(log));
  if (haveData && wanted.has('default')) put('default', await defaultSection(log));
  if (wanted.size === 0) writeFileSync('docs/BENCHMARKS.md', render(store));
  log('wrote docs/BENCHMARKS.md and docs/benchmarks.json');
  const peer = store.peer?.rows ?? [];
  const result = {
    date,
    machine,
    sections: [...wanted],
    trunk: store.trunk?.rows ?? [],
    peer: peer.filter((p) => p.what === 'forward').map(({ name, arch, msPerImage }) => ({ name, arch, msPerImage })),
    peerTrain: peer.filter((p) => p.what === 'train_step'),
    trainStep: store['train-step']?.rows ?? [],
    train: store.train?.rows ?? [],
    accuracy: store.accuracy?.rows ?? [],
    transfer: store.transfer?.rows ?? [],
    fineTune: store['fine-tune']?.rows ?? { rows: [], tutorial: [] },
  };
  if (json) process.stdout.write(`${JSON.stringify(result)}\n`);
}

function render(s: Store): string {
  const when = (x: Stored<unknown> | undefined) =>
    x
      ? `Measured ${x.date.slice(0, 10)} on ${x.machine}${x.load === undefined ? '' : `; ${typeof x.load === 'number' ? `load average ${x.load}` : x.load.replace(/^(load average )?/, 'load average ').replace(/, load average /g, ', ')}`}.`
      : '';
  const lines = [
    '# graft benchmarks',
    '',
    'Written by `npm run bench` (sections: `--sections=trunk,train-step,train,accuracy,transfer,decode,bases,heads`; `--transfer` for the',
    "transfer table alone) from `docs/benchmarks.json`, which keeps every section's last results. Ratios compare figures",
    'from the same run; absolute times vary with the load on these shared machines.',
    '',
  ];
  const peer = s.peer?.rows ?? [];
  if (s.trunk) {
    lines.push('## Trunk: forward pass of the frozen base (ms per image, lower is better)', '', when(s.trunk), '');
    lines.push('| base | engine | batch | ms/image | vs wasm | vs PyTorch |', '| --- | --- | --- | --- | --- | --- |');
    for (const t of s.trunk.rows) {
      const wasm = s.trunk.rows.find((x) => x.base === t.base && x.engine === 'wasm');
      const p = peer.find((x) => x.arch === t.arch && x.what === 'forward');
      lines.push(
        `| ${t.base} | ${t.engine} | ${t.batch} | ${t.msPerImage.toFixed(1)} | ${wasm ? (t.msPerImage / wasm.msPerImage).toFixed(2) : ''} | ${p ? (t.msPerImage / p.msPerImage).toFixed(2) : 'peer not run'} |`,
      );
    }
    for (const p of peer.filter((x) => x.what === 'forward'))
      lines.push(`| PyTorch ${p.arch} (peer) | torch CPU | ${p.batch} | ${p.msPerImage.toFixed(1)} | | 1.00 |`);
  }
  if (s['train-step']) {
    const p = peer.find((x) => x.arch === 'mobilenet_v2' && x.what === 'train_step');
    const rows = s['train-step'].rows;
    lines.push(
      '',
      '## Train step: forward + backward + Adam update of the bundled MobileNetV2, ONNX Runtime and WASM (ms per image, lower is better)',
      '',
      when(s['train-step']),
      '',
    );
    lines.push(
      "From the split up to `out_relu`, with graft's 2-class head, through the trainer's own runner on each engine",
      "(`npm run bench -- --sections=train-step`). PyTorch's `train_step` (peer_torch.py, same run, 2 threads) trains the whole",
      'torchvision MobileNetV2; the ratio is against it for every row, so below 1.00 a row is faster than PyTorch training the',
      'full network. ONNX Runtime uses every core; WASM is single-threaded, and its full-network step runs at batch 8 (16 exceeds its heap).',
      '',
    );
    lines.push(
      '| what trains | split | engine | batch | ms/image | ONNX Runtime / WASM | vs PyTorch full network |',
      '| --- | --- | --- | --- | --- | --- | --- |',
    );
    for (const r of rows) {
      const engine = r.engine ?? 'wasm';
      const wasm = rows.find((x) => x.from === r.from && (x.engine ?? 'wasm') === 'wasm');
      const ratio = engine === 'onnx' && wasm ? (r.msPerImage / wasm.msPerImage).toFixed(2) : '';
      lines.push(
        `| ${r.trains} | ${r.from} | ${engine} | ${r.batch} | ${r.msPerImage.toFixed(1)} | ${ratio} | ${p ? (r.msPerImage / p.msPerImage).toFixed(2) : 'peer not run'} |`,
      );
    }
    if (p)
      lines.push(
        `| PyTorch ${p.version ?? ''} full network (peer) | image | torch | ${p.batch} | ${p.msPerImage.toFixed(1)} | | 1.00 |`,
      );
  }
  if (s.train) {
    lines.push(
      '',
      '## End to end: `graft train` on hymenoptera (245 train + 153 val images), bundled base, wall seconds including process start',
      '',
      when(s.train),
      '',
    );
    lines.push('| engine | cache | seconds | val accuracy |', '| --- | --- | --- | --- |');
    for (const t of s.train.rows)
      lines.push(`| ${t.engine} | ${t.cache} | ${t.seconds.toFixed(1)} | ${t.valAccuracy?.toFixed(3)} |`);
  }
  if (s.accuracy) {
    lines.push('', '## Accuracy on hymenoptera val (153 images)', '', when(s.accuracy), '');
    lines.push(
      'Val accuracy with its 95% Wilson interval: with 153 images one image is 0.65 points and the interval is about ±5 points,',
      'so rows whose intervals overlap widely are not shown to differ. The selection score is what chose the cut and the',
      'number of epochs (5-fold cross-validation on the 245 training images, the validation images taking no part) and',
      'flatters; "val (chose epochs)" marks runs whose stages stopped early on the validation set, whose val accuracy',
      'is optimistic too.',
      '',
      '| base | mode | cut | val accuracy [95% interval] | selection score ± sd | seconds (cold cache for the first run of each base) |',
      '| --- | --- | --- | --- | --- | --- |',
    );
    for (const a of s.accuracy.rows) {
      const n = a.valImages ?? 153;
      const ci = a.valAccuracy !== null ? wilsonInterval(Math.round(a.valAccuracy * n), n) : undefined;
      const sel = a.selection
        ? a.selection.usedValidation
          ? 'val (chose epochs)'
          : `${a.selection.score.toFixed(3)} ± ${(a.selection.sd ?? 0).toFixed(3)}`
        : 'none: measured before issue 11, val chose';
      lines.push(
        `| ${baseLabel(a.base)} | ${a.mode} | ${a.cut} | ${a.valAccuracy?.toFixed(3)}${ci ? ` [${ci.low.toFixed(3)}, ${ci.high.toFixed(3)}]` : ''} | ${sel} | ${a.seconds.toFixed(1)}${a.date ? ` (measured ${a.date}${a.load ? `, load ${a.load.map((l) => l.toFixed(1)).join(' / ')}` : ''})` : ''} |`,
      );
    }
  }
  if (s.decode) {
    lines.push(
      '',
      '## Decoding: hymenoptera files to 224x224 network input (ms per image, 4 in flight, lower is better)',
      '',
      when(s.decode),
      '',
      'graft decodes with sharp at full resolution and resizes with its own resampler (dataset/resize.ts), the code',
      "`graft/predict` runs in a browser, so served predictions see the pixels training saw. The peer is sharp's own resize",
      '(what graft did before), which shrinks large JPEGs while decoding.',
      '',
      '| resize | what | ms/image | vs sharp |',
      '| --- | --- | --- | --- |',
    );
    for (const r of s.decode.rows) {
      const peer = s.decode.rows.find((x) => x.resize === r.resize && x.what.includes('peer'));
      lines.push(
        `| ${r.resize} | ${r.what} | ${r.msPerImage.toFixed(2)} | ${peer ? (r.msPerImage / peer.msPerImage).toFixed(2) : ''} |`,
      );
    }
  }
  if (s.transfer) {
    lines.push(
      '',
      '## Transfer learning on hymenoptera (245 train, 153 val images): feature transfer, parameter transfer, fine-tuning',
      '',
      when(s.transfer),
      '',
    );
    lines.push(
      'Each row is `graft train ../shared/data/hymenoptera/train --val ../shared/data/hymenoptera/val --base BASE ARGS` (v1 also',
      '`--input-range=-1,1 --crop 0.875`); seconds are wall time including process start, the first row of each base with a cold activation',
      'cache. Stages: best epoch / epochs run, validation accuracy at the best epoch, seconds.',
      '',
    );
    if (s.transfer.date < '2026-12-01')
      lines.push(
        'These rows predate cross-validated selection (issue 11): their feature-transfer runs stopped early, and the',
        '`--mode auto` row chose its cut, on the same validation images they are scored on. Parameter-transfer and',
        'fine-tuning rows still stop on the validation set. Every figure here is ±5 points at 95% (153 images).',
        '',
      );
    lines.push('| base | method | args | val accuracy | seconds | stages |', '| --- | --- | --- | --- | --- | --- |');
    for (const r of s.transfer.rows)
      lines.push(
        `| ${r.base} | ${r.method} | ${r.args ? `\`${r.args}\`` : '(none)'} | ${r.valAccuracy?.toFixed(3) ?? 'failed'} | ${r.seconds.toFixed(1)} | ${r.stages ?? ''} |`,
      );
    lines.push('');
    for (const base of [...new Set(s.transfer.rows.map((r) => r.base))]) {
      const rows = s.transfer.rows.filter((r) => r.base === base && r.valAccuracy !== null);
      const best = rows.reduce((a, b) => ((b.valAccuracy ?? 0) > (a.valAccuracy ?? 0) ? b : a), rows[0]);
      if (best) lines.push(`- ${base}: best ${best.valAccuracy?.toFixed(3)} (${best.method}).`);
      // The fine-tuning acceptance check: the same run with and without --fine-tune.
      for (const ft of rows.filter((r) => r.args.includes('--fine-tune'))) {
        const plain = rows.find((r) => r.args === ft.args.replace(/ ?--fine-tune( --unfreeze-from \S+)?/, '').trim());
        if (plain) {
          lines.push(
            `  - \`${ft.args}\`: ${ft.valAccuracy?.toFixed(3)} against ${plain.valAccuracy?.toFixed(3)} without \`--fine-tune\`, ${ft.seconds.toFixed(0)} s in all (${ft.trainSeconds.toFixed(0)} s training).`,
          );
        }
      }
    }
    lines.push(
      '- Every row trains on each image and its mirror (`--augment flip`, the default) except the "no augmentation" rows.',
      "  Parameter transfer and fine-tuning read the cut's spatial activations (of both views) from the cache, so an epoch",
      '  never reruns the frozen trunk; with only a mirror for augmentation a retrained tail (hundreds of thousands to millions',
      '  of weights) still fits the 245 training images within a few epochs and validation accuracy stops well short of 100%.',
      '  Early stopping on validation loss, with the starting weights competing as "epoch 0", keeps the best state.',
      '- The bundled MobileNetV2 was trained as a content filter: its top blocks are specific to that task, which is why the',
      '  head on `out_relu` is weak and retraining from there starts from a poor place (see the cut search in the README).',
      '  The other bundled network, trained for the same filter, is in the accuracy table (nsfw-inception-v3: default cut,',
      '  cut search, parameter transfer) as a check on how far features learnt for that task carry to everyday photos.',
    );
  }
  if (s.serve?.rows.length) {
    lines.push(
      '',
      '## graft serve: a 2,000-image project collected and trained through the page (memory)',
      '',
      when(s.serve),
      '',
      '| images | base | server + training process peak (MiB) | server alone | training process | server idle | page JS heap peak (MiB) | page DOM nodes | upload s | train s | val accuracy |',
      '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
    );
    for (const r of s.serve.rows)
      lines.push(
        `| ${r.images} | ${r.base} | ${r.serverPeakMiB} | ${r.serverMainPeakMiB} | ${r.trainPeakMiB} | ${r.serverIdleMiB} | ${r.pagePeakHeapMiB} | ${r.pagePeakNodes} | ${r.uploadSeconds} | ${r.trainSeconds} | ${r.valAccuracy?.toFixed(3) ?? ''} |`,
      );
    lines.push(
      '',
      `The documented figure (the section fails above it): server and training process together under ${MEMORY_BUDGET.serverMiB} MiB, the page's JavaScript heap under ${MEMORY_BUDGET.pageHeapMiB} MiB. Resident sets are sampled every 250 ms (and each process's own high-water mark is read); the page's heap and DOM size come from the DevTools protocol.`,
    );
  }
  const ft = s['fine-tune'];
  if (ft) {
    lines.push(
      '',
      '## Parameter transfer and fine-tuning end to end: ONNX Runtime against WASM (hymenoptera, 245 train + 153 val images)',
      '',
      when(ft),
      '',
      'Each row is `graft train ../shared/data/hymenoptera/train --val ../shared/data/hymenoptera/val --base BASE ARGS --engine ENGINE`',
      'on an activation cache warmed by a one-epoch run, so both engines time training, not extraction; same seed on both.',
      '`npm run bench -- --sections=fine-tune`. Seconds are wall time including process start; per epoch: the last stage.',
      'CPU s is the process user + sys time (ONNX Runtime spends it on every core, WASM on one); load is the 1-minute load',
      'average before / after the row: on a loaded shared machine ONNX Runtime gets fewer of the cores it spreads over.',
      '',
      '| what | base | args | engine | seconds | train seconds | ONNX Runtime / WASM | CPU s | load | val accuracy | last stage: epochs, s/epoch | stages |',
      '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
    );
    for (const r of ft.rows.rows) {
      const wasm = ft.rows.rows.find((x) => x.what === r.what && x.engine === 'wasm');
      const ratio = r.engine === 'onnx' && wasm ? (r.seconds / wasm.seconds).toFixed(2) : '';
      lines.push(
        `| ${r.what} | ${r.base} | \`${r.args}\` | ${r.engine} | ${r.seconds.toFixed(1)} | ${r.trainSeconds.toFixed(1)} | ${ratio} | ${r.cpuSeconds?.toFixed(1) ?? ''} | ${r.load?.map((l) => l.toFixed(1)).join(' / ') ?? ''} | ${r.valAccuracy?.toFixed(3) ?? ''} | ${r.epochs}, ${r.secondsPerEpoch.toFixed(1)} | ${r.stages ?? ''}${r.note ? ` (${r.note})` : ''} |`,
      );
    }
    for (const t of ft.rows.tutorial)
      lines.push(
        `| PyTorch tutorial (peer_torch_tutorial.py), ResNet-18 fine-tuned | random init | \`--mode ${t.mode} --epochs ${t.epochs}\` | torch ${t.version ?? ''} | ${t.seconds.toFixed(1)} | ${t.seconds.toFixed(1)} | | | | (not pretrained) | ${t.epochs}, ${t.secondsPerEpoch.toFixed(1)} | batch 4, ${t.trainImages} train + ${t.valImages} val images per epoch |`,
      );
  }
  if (s.scale) lines.push(...renderScale(s.scale.rows));
  if (s.findings || s['duplicate-search']) renderFindings(s, when, lines);
  if (s.overhead) lines.push(...renderOverhead(s.overhead.rows, when(s.overhead)));
  if (s.bases) lines.push(...renderBases(s.bases.rows, when(s.bases)));
  if (s.heads) lines.push(...renderHeads(s.heads.rows, when(s.heads)));
  if (s.default) lines.push(...renderDefault(s.default.rows, when(s.default)));
  return `${lines.join('\n')}\n`;
}

function renderFindings(s: Store, when: (x: Stored<unknown> | undefined) => string, lines: string[]): void {
  lines.push(
    '',
    '## Label problems and near duplicates on hymenoptera (`--sections=findings`, bench/findings.ts)',
    '',
    when(s.findings),
    '',
  );
  const f = s.findings?.rows ?? { labelIssues: [], duplicates: [], timing: [] };
  lines.push(
    'Label issues: 20 of the 245 training images moved to the other class in a copy of the data set, then',
    '`graft train COPY --val val` with the base below. The finder reads out-of-fold probabilities of the 5-fold',
    'cross-validation that also chooses the epochs (confident learning, src/train/label-issues.ts). Precision counts',
    'only the planted errors as right: the other reports include images whose own label is doubtful or that are hard.',
    '',
    '| base | flipped | in the top 40 | reported | precision | recall | seconds |',
    '| --- | --- | --- | --- | --- | --- | --- |',
  );
  for (const r of f.labelIssues)
    lines.push(
      `| ${r.base} | ${r.flipped} | ${r.inTop40} | ${r.reported} | ${r.precision.toFixed(2)} | ${r.recall.toFixed(2)} | ${r.seconds.toFixed(1)} |`,
    );
  lines.push(
    '',
    'Near duplicates: 10 training images copied into a copy of the validation folder, 5 re-encoded as PNG and 5 resized',
    'to 80% (JPEG); then the untouched data set. Similarity: cosine of the mean-centred features at the cut used.',
    '',
    '| base | planted copies found as leaks | their similarity (PNG, then 80%) | pairs on the untouched set | closest two different photos |',
    '| --- | --- | --- | --- | --- |',
  );
  for (const d of f.duplicates)
    lines.push(
      `| ${d.base} | ${d.plantedFoundAsLeaks} of ${d.planted} | ${d.plantedSimilarities.map((x) => (typeof x === 'number' && Number.isFinite(x) ? x.toFixed(3) : 'below')).join(', ')} | ${d.untouched.length}${d.untouched.length ? `: ${d.untouched.map((u) => `${u.a} ~ ${u.b} (${u.similarity.toFixed(3)}${u.leak ? ', leak' : ''}${u.conflict ? ', conflict' : ''})`).join('; ')}` : ''} | ${d.closestDistinct.toFixed(3)} |`,
    );
  const search = s['duplicate-search'];
  const timing = search?.rows ?? f.timing;
  if (timing.length === 0) return;
  lines.push(
    '',
    search
      ? `Near-duplicate search alone (\`--sections=duplicate-search\`, goal: under 30 s). ${when(search)} CPU seconds are user + system of the process during the search.`
      : 'Near-duplicate search alone (wall seconds on a loaded machine; `--sections=duplicate-search` measures CPU seconds too).',
    '',
    '| duplicate search | rows | dim | seconds | CPU seconds | load at start | planted pairs found |',
    '| --- | --- | --- | --- | --- | --- | --- |',
  );
  for (const t of timing)
    lines.push(
      `| random positive rows, 10 planted copies | ${t.rows} | ${t.dim} | ${t.seconds.toFixed(1)} | ${t.cpuSeconds?.toFixed(1) ?? ''} | ${t.load?.toFixed(1) ?? ''} | ${t.found} of ${t.planted} |`,
    );
}

await main();
