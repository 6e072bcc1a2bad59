/**
 * kill -9 at random moments of `graft train` (extraction, training, export) must never leave a folder at --out that
 * loads but is wrong. Each run is killed at a random moment of one phase (timed from a reference run); afterwards
 * --out is either absent or a complete model that predicts exactly like the reference; every cached activation left
 * behind passes its check; the next write to --out clears the killed run's temporaries. Half of the runs write over
 * an existing model (the swap), half into a new folder. Run by .ci/run:
 *
 *   node --import tsx scripts/kill-test.ts [--runs 20] [--seed 1] [--base nsfw-mobilenet-v2]
 *
 * Exits 1 if any run leaves a loadable-but-wrong (or unloadable) folder, a damaged cache entry, or leftovers that the
 * next write does not clear.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { verifyCache } from '../src/cache/maintenance.ts';
import { removeStaleTemporaries } from '../src/export/model-files.ts';
import { Predictor } from '../src/index.ts';
import { writeColourDataset } from '../test/helpers.ts';

const argv = process.argv.slice(2);
const opt = (name: string, def: string) => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? argv[i + 1] : def;
};
const RUNS = Number(opt('runs', '20'));
let seed = Number(opt('seed', String(Date.now() % 100000)));
const BASE = opt('base', 'nsfw-mobilenet-v2');
const random = () => {
  seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
  return seed / 2 ** 32;
};

const PHASES = ['extract', 'train', 'export'] as const;
type Phase = (typeof PHASES)[number];

interface Started {
  child: ChildProcess;
  t0: number;
  /** ms after spawn at which each phase began (from GRAFT_PROGRESS=lines). */
  phases: Partial<Record<Phase, number>>;
  on: (phase: Phase) => Promise<void>;
  exit: Promise<number | null>;
  stderr: () => string;
}

function start(args: string[], cache: string): Started {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], {
    env: { ...process.env, GRAFT_CACHE_DIR: cache, GRAFT_PROGRESS: 'lines' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const t0 = performance.now();
  const phases: Started['phases'] = {};
  const waiting = new Map<Phase, () => void>();
  let err = '';
  child.stderr!.on('data', (d) => {
    err += d;
    for (const m of err.matchAll(/^progress (\w+) /gm)) {
      const p = m[1] as Phase;
      if (PHASES.includes(p) && phases[p] === undefined) {
        phases[p] = performance.now() - t0;
        waiting.get(p)?.();
      }
    }
  });
  const exit = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  return {
    child,
    t0,
    phases,
    on: (p) =>
      phases[p] !== undefined ? Promise.resolve() : new Promise((resolve) => waiting.set(p, () => resolve())),
    exit,
    stderr: () => err,
  };
}

async function probabilities(dir: string, images: string[]): Promise<number[]> {
  const p = await Predictor.load(dir);
  try {
    const r = await p.predictFiles(images, { topK: 100 });
    return r.predictions.flatMap((x) => x.top.map((t) => t.probability));
  } finally {
    p.dispose();
  }
}

const work = mkdtempSync(path.join(os.tmpdir(), 'graft-kill-'));
const data = await writeColourDataset(path.join(work, 'data'), ['red', 'green'], 20, 64);
const images = ['red', 'green'].flatMap((c) => [0, 1, 2].map((i) => path.join(data, c, `${c}-${i}.png`)));
const trainArgs = (out: string) => ['train', data, '--base', BASE, '--epochs', '25', '--seed', '3', '--out', out];

console.log(`kill -9 test: ${RUNS} runs, base ${BASE}, seed ${seed}, work folder ${work}`);
const refOut = path.join(work, 'reference');
const ref = start(trainArgs(refOut), path.join(work, 'cache-ref'));
const refCode = await ref.exit;
if (refCode !== 0) throw new Error(`reference run failed:\n${ref.stderr()}`);
const end = performance.now() - ref.t0;
const window = (p: Phase) => {
  const i = PHASES.indexOf(p);
  const from = ref.phases[p]!;
  const to = i + 1 < PHASES.length ? ref.phases[PHASES[i + 1]]! : end;
  return Math.max(20, to - from);
};
console.log(
  `reference: ${PHASES.map((p) => `${p} ${(window(p) / 1000).toFixed(2)} s`).join(', ')} (total ${(end / 1000).toFixed(1)} s)`,
);
const want = await probabilities(refOut, images);

let bad = 0;
const rows: string[] = [];
for (let i = 0; i < RUNS; i++) {
  const phase = PHASES[i % 3];
  const over = i % 2 === 1;
  const dir = path.join(work, `run-${i}`);
  mkdirSync(dir);
  const out = path.join(dir, 'model');
  if (over) cpSync(refOut, out, { recursive: true });
  const cache = path.join(dir, 'cache');
  const delay = random() * window(phase);
  const run = start(trainArgs(out), cache);
  let killed = false;
  await Promise.race([
    run.on(phase).then(async () => {
      await new Promise((r) => setTimeout(r, delay));
      killed = run.child.kill('SIGKILL');
    }),
    run.exit,
  ]);
  const code = await run.exit;
  const problems: string[] = [];
  let state: string;
  if (!existsSync(out)) {
    state = 'no folder';
  } else {
    try {
      const got = await probabilities(out, images);
      const same = got.length === want.length && got.every((v, k) => Math.abs(v - want[k]) < 1e-6);
      state = same ? (over ? 'model (old or new), exact' : 'new model, exact') : 'LOADS BUT WRONG';
      if (!same) problems.push('predictions differ from the reference');
    } catch (e) {
      state = 'UNLOADABLE';
      problems.push((e as Error).message.split('\n')[0]);
    }
  }
  const v = verifyCache(path.join(cache, 'activations'));
  if (v.damaged.length) problems.push(`${v.damaged.length} damaged cache entries`);
  const leftovers = readdirSync(dir).filter((n) => n !== 'model' && n !== 'cache');
  removeStaleTemporaries(out);
  const remaining = readdirSync(dir).filter((n) => n !== 'model' && n !== 'cache');
  if (remaining.length) problems.push(`leftovers not cleared: ${remaining.join(', ')}`);
  if (over && !existsSync(out)) problems.push('the previous model was not restored');
  if (problems.length) bad++;
  rows.push(
    `${String(i + 1).padStart(2)}  ${phase.padEnd(7)} +${delay.toFixed(0).padStart(5)} ms  ${over ? 'over old' : 'new     '}  ${killed ? 'killed' : `exit ${code}`}  ${state}; cache ${v.checked} ok${leftovers.length ? `; ${leftovers.length} leftover(s) cleared` : ''}${problems.length ? `  FAIL: ${problems.join('; ')}` : ''}`,
  );
  console.log(rows[rows.length - 1]);
  rmSync(dir, { recursive: true, force: true });
}
console.log(`${RUNS - bad}/${RUNS} runs left no loadable-but-wrong folder, no damaged cache entry and no leftovers`);
rmSync(work, { recursive: true, force: true });
process.exit(bad ? 1 : 0);
