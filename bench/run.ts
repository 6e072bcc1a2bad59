/**
 * `npm run bench`: speed and accuracy, with the PyTorch peer measured in the same run where it is installed, so that
 * figures are quoted as ratios (these machines are shared and noisy). Writes docs/BENCHMARKS.md; with --json the last
 * line of stdout is one JSON object.
 *
 *   npm run bench                 # everything
 *   npm run bench -- --quick      # trunk timings only (no end-to-end training runs)
 *   npm run bench -- --json
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadBase } from '../src/base/base.ts';
import { onnxAvailable, onnxTrunkRunner } from '../src/engines/onnx.ts';
import { buildTrunkModel, tfjsTrunkRunner, type TrunkRunner } from '../src/engines/trunk.ts';

const args = new Set(process.argv.slice(2));
const json = args.has('--json');
const quick = args.has('--quick');
const log = (s: string) => (json ? process.stderr : process.stdout).write(`${s}\n`);
const HYM = path.resolve('../shared/data/hymenoptera');
const PEER = path.resolve('../shared/bench/peer_torch.py');

interface TrunkRow { engine: string; base: string; arch: string; batch: number; msPerImage: number }
interface PeerRow { name: string; arch: string; what: string; msPerImage: number; threads: number; batch: number; version?: string }
interface TrainRow { engine: string; base: string; cache: 'cold' | 'warm'; seconds: number; valAccuracy: number | null; cut: string }

async function timeRunner(runner: TrunkRunner, size: number, batch: number, reps: number): Promise<number> {
  const px = new Float32Array(batch * size * size * 3);
  let s = 1;
  for (let i = 0; i < px.length; i++) px[i] = ((s = (s * 16807) % 2147483647) / 2147483647) * 255;
  await runner.run(px, batch); // warm-up: first calls compile kernels / plan memory
  const times: number[] = [];
  for (let r = 0; r < reps; r++) {
    const t = performance.now();
    await runner.run(px, batch);
    times.push(performance.now() - t);
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)] / batch;
}

async function trunkBench(): Promise<TrunkRow[]> {
  const rows: TrunkRow[] = [];
  const haveOnnx = await onnxAvailable();
  for (const [name, arch, size, wasmBatch, wasmReps] of [
    ['nsfw-mobilenet-v2', 'mobilenet_v2', 224, 16, 3],
    ['nsfw-inception-v3', 'inception_v3', 299, 4, 2],
  ] as const) {
    const base = await loadBase(name);
    const model = buildTrunkModel(base, [base.defaultCut]);
    if (haveOnnx) {
      const r = await onnxTrunkRunner(model);
      rows.push({ engine: 'onnx', base: name, arch, batch: 16, msPerImage: await timeRunner(r, size, 16, 5) });
      await r.dispose();
      log(`trunk onnx ${name}: ${rows[rows.length - 1].msPerImage.toFixed(1)} ms/image`);
    }
    const w = tfjsTrunkRunner(model, wasmBatch);
    rows.push({ engine: 'wasm', base: name, arch, batch: wasmBatch, msPerImage: await timeRunner(w, size, wasmBatch, wasmReps) });
    log(`trunk wasm ${name}: ${rows[rows.length - 1].msPerImage.toFixed(1)} ms/image`);
    base.model.dispose();
  }
  return rows;
}

function peerBench(): PeerRow[] {
  if (!existsSync('/usr/bin/python3') || !existsSync(PEER)) return [];
  const r = spawnSync('/usr/bin/python3', [PEER, '--json', '--train', '--arch', 'mobilenet_v2,inception_v3'], { encoding: 'utf8', timeout: 900_000 });
  if (r.status !== 0) {
    log(`peer: PyTorch not available (${(r.stderr || '').trim().split('\n').pop()})`);
    return [];
  }
  return r.stdout
    .trim()
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l))
    .map((o) => ({ name: o.peer, arch: o.arch, what: o.what, msPerImage: o.ms_per_image, threads: o.threads, batch: o.batch, version: o.version }));
}

function trainRun(engine: string, base: string, extra: string[], cacheDir: string): TrainRow & { raw: Record<string, unknown> } {
  const t = performance.now();
  const r = spawnSync(
    process.execPath,
    ['--import', 'tsx', 'src/cli/main.ts', 'train', path.join(HYM, 'train'), '--val', path.join(HYM, 'val'), '--base', base, '--engine', engine, '--json', ...extra],
    { encoding: 'utf8', env: { ...process.env, GRAFT_CACHE_DIR: cacheDir }, maxBuffer: 1 << 26 },
  );
  const seconds = (performance.now() - t) / 1000;
  if (r.status !== 0) throw new Error(`train failed: ${r.stderr.trim().split('\n').pop()}`);
  const out = JSON.parse(r.stdout.trim().split('\n').pop()!);
  const cache = out.cache.misses === 0 ? 'warm' : 'cold';
  return { engine: out.engine, base, cache, seconds, valAccuracy: out.valAccuracy, cut: out.cut, raw: out };
}

async function main() {
  const started = new Date();
  const machine = `${os.cpus()[0]?.model ?? 'unknown CPU'}, ${os.availableParallelism()} cores, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.versions.node}`;
  log(`graft bench on ${machine}`);
  const trunk = await trunkBench();
  const peer = peerBench();
  for (const p of peer) log(`peer ${p.name} ${p.arch} ${p.what}: ${p.msPerImage} ms/image`);
  const train: TrainRow[] = [];
  const accuracy: (TrainRow & { mode: string })[] = [];
  if (!quick && existsSync(HYM)) {
    for (const engine of ['onnx', 'wasm']) {
      const dir = mkdtempSync(path.join(os.tmpdir(), 'graft-bench-'));
      for (let k = 0; k < 2; k++) {
        const row = trainRun(engine, 'nsfw-mobilenet-v2', [], dir);
        const { raw, ...rest } = row;
        train.push(rest);
        log(`train ${engine} ${row.cache}: ${row.seconds.toFixed(1)} s, val ${row.valAccuracy?.toFixed(3)}`);
      }
      rmSync(dir, { recursive: true, force: true });
    }
    const dir = mkdtempSync(path.join(os.tmpdir(), 'graft-bench-acc-'));
    const v1 = path.resolve('../shared/models/mobilenet_v1_1.0_224_imagenet_trunc/model.json');
    const runs: [string, string, string[]][] = [
      ['feature (default cut)', 'nsfw-mobilenet-v2', []],
      ['feature, block_13_expand_relu', 'nsfw-mobilenet-v2', ['--cut', 'block_13_expand_relu']],
      ['auto cut search', 'nsfw-mobilenet-v2', ['--mode', 'auto']],
      ['feature (default cut)', v1, ['--input-range=-1,1']],
      ['auto cut search', v1, ['--input-range=-1,1', '--mode', 'auto']],
    ];
    for (const [mode, base, extra] of runs) {
      if (!existsSync(base) && base.includes('/')) continue;
      const row = trainRun('auto', base, extra, dir);
      const { raw, ...rest } = row;
      accuracy.push({ ...rest, mode });
      log(`accuracy ${mode} ${path.basename(path.dirname(base)) || base}: ${row.valAccuracy?.toFixed(3)} at ${row.cut} (${row.seconds.toFixed(1)} s)`);
    }
    rmSync(dir, { recursive: true, force: true });
  }
  const result = {
    date: started.toISOString(),
    machine,
    trunk,
    peer: peer.filter((p) => p.what === 'forward').map(({ name, arch, msPerImage }) => ({ name, arch, msPerImage })),
    peerTrain: peer.filter((p) => p.what === 'train_step'),
    train,
    accuracy,
  };
  writeFileSync('docs/BENCHMARKS.md', render(result));
  log('wrote docs/BENCHMARKS.md');
  if (json) process.stdout.write(`${JSON.stringify(result)}\n`);
}

function render(r: {
  date: string;
  machine: string;
  trunk: TrunkRow[];
  peer: { name: string; arch: string; msPerImage: number }[];
  train: TrainRow[];
  accuracy: (TrainRow & { mode: string })[];
}): string {
  const lines = ['# graft benchmarks', '', `Measured ${r.date.slice(0, 10)} by \`npm run bench\` on ${r.machine}.`, 'Ratios compare figures from the same run; absolute times vary with the load on these shared machines.', ''];
  lines.push('## Trunk: forward pass of the frozen base (ms per image, lower is better)', '');
  lines.push('| base | engine | batch | ms/image | vs wasm | vs PyTorch |', '| --- | --- | --- | --- | --- | --- |');
  for (const t of r.trunk) {
    const wasm = r.trunk.find((x) => x.base === t.base && x.engine === 'wasm');
    const p = r.peer.find((x) => x.arch === t.arch);
    lines.push(`| ${t.base} | ${t.engine} | ${t.batch} | ${t.msPerImage.toFixed(1)} | ${wasm ? (t.msPerImage / wasm.msPerImage).toFixed(2) : ''} | ${p ? (t.msPerImage / p.msPerImage).toFixed(2) : 'peer not run'} |`);
  }
  for (const p of r.peer) lines.push(`| PyTorch ${p.arch} (peer) | torch CPU | 16 | ${p.msPerImage.toFixed(1)} | | 1.00 |`);
  if (r.train.length) {
    lines.push('', '## End to end: `graft train` on hymenoptera (245 train + 153 val images), bundled base, wall seconds including process start', '');
    lines.push('| engine | cache | seconds | val accuracy |', '| --- | --- | --- | --- |');
    for (const t of r.train) lines.push(`| ${t.engine} | ${t.cache} | ${t.seconds.toFixed(1)} | ${t.valAccuracy?.toFixed(3)} |`);
  }
  if (r.accuracy.length) {
    lines.push('', '## Accuracy on hymenoptera val (153 images)', '');
    lines.push('| base | mode | cut | val accuracy | seconds (cold cache for the first run of each base) |', '| --- | --- | --- | --- | --- |');
    for (const a of r.accuracy) lines.push(`| ${a.base.includes('/') ? path.basename(path.dirname(a.base)) : a.base} | ${a.mode} | ${a.cut} | ${a.valAccuracy?.toFixed(3)} | ${a.seconds.toFixed(1)} |`);
  }
  return `${lines.join('\n')}\n`;
}

await main();
