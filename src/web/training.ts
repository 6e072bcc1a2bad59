/**
 * @file One training run at a time for a project: started in a child process (train-process.ts), its progress kept
 * and fanned out to every open event stream, cancelled through the library's AbortSignal. The model is written to a
 * staging folder and moved into `.graft/model` only when the run finishes and was not cancelled, so a cancelled or
 * failed run leaves the project exactly as it was.
 */

import { type ChildProcess, fork } from 'node:child_process';
import { existsSync, promises as fs, rmSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TrainOptions } from '../index.ts';
import { MODEL_DIR, ONNX_FILE, type Project, ProjectError, type ProjectSettings, STATE_DIR } from './project.ts';
import type { ToServer, ToTrainer, TrainJob } from './train-process.ts';

/** How long a cancelled run may take to stop through its AbortSignal before its process is killed. */
export const CANCEL_GRACE_MS = 1000;

export type RunState = 'running' | 'done' | 'failed' | 'cancelled';

/** What the page receives over Server-Sent Events. */
export type RunEvent =
  | { type: 'start'; id: string; startedAt: string; settings: ProjectSettings }
  | { type: 'progress'; phase: string; done: number; total: number; detail?: string; metrics?: Record<string, number> }
  | {
      type: 'end';
      state: Exclude<RunState, 'running'>;
      error?: string;
      /** Cancelled runs: milliseconds from the request to the run having stopped, and how it stopped. */
      stoppedMs?: number;
      stoppedBy?: 'signal' | 'terminate';
    };

export interface Run {
  id: string;
  state: RunState;
  startedAt: string;
  events: RunEvent[];
  /** Resolves when the run has ended and the project is consistent again. */
  finished: Promise<void>;
}

/** Turns project settings into the library's training options (validated in settings.ts). */
export function trainOptions(project: Project, s: ProjectSettings): Omit<TrainOptions, 'out'> {
  const base = s.base?.startsWith(`${STATE_DIR}/`) ? project.inside(s.base) : s.base;
  return {
    data: project.dir,
    base,
    mode: s.mode === 'fine-tune' ? 'feature' : s.mode,
    fineTune: s.mode === 'fine-tune' ? true : undefined,
    valSplit: s.valSplit,
    epochs: s.epochs,
    head: s.head,
    augment: s.augment,
  };
}

/** Starts the training process; in a checkout (TypeScript sources) through tsx, as bin/graft.js does. */
function startProcess(): ChildProcess {
  const ext = path.extname(new URL(import.meta.url).pathname);
  const file = fileURLToPath(new URL(`./train-process${ext}`, import.meta.url));
  return fork(file, [], {
    execArgv: ext === '.ts' ? ['--import', import.meta.resolve('tsx')] : [],
    stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
    serialization: 'advanced',
  });
}

/** File paths inside the project become project-relative ('class/file'), so the page can refer to them. */
export function relativise<T>(value: T, root: string): T {
  const prefix = root.endsWith(path.sep) ? root : root + path.sep;
  const walk = (v: unknown): unknown => {
    if (typeof v === 'string') return v.startsWith(prefix) ? v.slice(prefix.length).split(path.sep).join('/') : v;
    if (Array.isArray(v)) return v.map(walk);
    if (v && typeof v === 'object' && !ArrayBuffer.isView(v))
      return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, walk(x)]));
    return v;
  };
  return walk(value) as T;
}

/** Lists longer than this in a stored result are cut (the model folder keeps the whole story). */
const KEEP = 500;

function summarise(result: Record<string, unknown>, root: string): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(result)) {
    if (k === 'valPredictions') continue;
    out[k] = Array.isArray(v) && v.length > KEEP ? v.slice(0, KEEP) : v;
  }
  return relativise(out, root);
}

/** A run as the trainer tracks it: its thread, and when (and how) it was asked to stop. */
interface LiveRun extends Run {
  child?: ChildProcess;
  cancelAt?: number;
  terminated: boolean;
}

export class Trainer {
  private current?: LiveRun;
  private listeners = new Set<(e: RunEvent) => void>();
  private readonly project: Project;
  /** Called after a run's model has been moved into place (e.g. to drop a cached predictor). */
  onModel?: () => void;

  constructor(project: Project) {
    this.project = project;
  }

  get run(): Run | undefined {
    return this.current;
  }

  subscribe(fn: (e: RunEvent) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  private emit(e: RunEvent): void {
    this.current?.events.push(e);
    for (const fn of this.listeners) fn(e);
  }

  async start(): Promise<Run> {
    if (this.current?.state === 'running')
      throw new ProjectError(
        409,
        `a training run is already in progress (started ${this.current.startedAt}); wait for it or cancel it`,
      );
    const listing = await this.project.list();
    const links = listing.problems.filter((p) => /link/.test(p.reason));
    if (links.length)
      throw new ProjectError(
        409,
        `cannot train: ${links[0].path} is ${links[0].reason}${links.length > 1 ? ` (and ${links.length - 1} more)` : ''}`,
      );
    const usable = listing.classes.filter((c) => c.images.length > 0);
    if (usable.length < 2)
      throw new ProjectError(409, 'cannot train: add at least two classes with images (each needs a few)');

    const id = `${Date.now().toString(36)}`;
    const staging = this.project.stateDir(`staging-${id}`);
    const settings = { ...this.project.settings };
    const job: TrainJob = {
      train: trainOptions(this.project, settings),
      out: path.join(staging, 'model'),
      onnxOut: path.join(staging, 'model.onnx'),
    };
    let resolveFinished!: () => void;
    const run: LiveRun = {
      id,
      terminated: false,
      state: 'running',
      startedAt: new Date().toISOString(),
      events: [],
      finished: new Promise((r) => {
        resolveFinished = r;
      }),
    };
    this.current = run;
    this.emit({ type: 'start', id, startedAt: run.startedAt, settings });
    const child = startProcess();
    run.child = child;
    // The last lines the process wrote, for the message when it dies.
    let stderr = '';
    child.stderr?.on('data', (d) => {
      stderr = (stderr + d).slice(-2000);
    });
    child.send({ type: 'job', job } satisfies ToTrainer);
    let ended = false;
    const end = async (state: Exclude<RunState, 'running'>, error?: string, outcome?: ToServer) => {
      if (ended) return;
      ended = true;
      let final = state;
      let message = error;
      if (state === 'done' && run.cancelAt !== undefined) final = 'cancelled';
      if (final === 'done' && outcome?.type === 'result') {
        try {
          await this.commit(staging, outcome);
        } catch (e) {
          final = 'failed';
          message = `could not store the model: ${(e as Error).message}`;
        }
      }
      rmSync(staging, { recursive: true, force: true });
      run.state = final;
      const stopped =
        final === 'cancelled' && run.cancelAt !== undefined
          ? {
              stoppedMs: Math.round(performance.now() - run.cancelAt),
              stoppedBy: (run.terminated ? 'terminate' : 'signal') as 'signal' | 'terminate',
            }
          : {};
      this.emit({ type: 'end', state: final, ...(final === 'failed' ? { error: message } : {}), ...stopped });
      resolveFinished();
    };
    child.on('message', (m: ToServer) => {
      if (m.type === 'progress') this.emit(m);
      else if (m.type === 'result') void end('done', undefined, m);
      else void end(run.cancelAt !== undefined || m.aborted ? 'cancelled' : 'failed', m.message);
    });
    child.on('error', (e) => void end(run.cancelAt !== undefined ? 'cancelled' : 'failed', e.message));
    child.on('exit', (code, signal) => {
      run.child = undefined;
      if (run.cancelAt !== undefined) {
        void end('cancelled');
        return;
      }
      const last = stderr.trim().split('\n').pop();
      void end(
        'failed',
        `the training process stopped unexpectedly (${signal ?? `exit code ${code}`})${last ? `: ${last}` : ''}`,
      );
    });
    return run;
  }

  /** Asks the run to stop through its AbortSignal; terminates its thread if it has not stopped after the grace time. */
  async cancel(): Promise<Run> {
    const run = this.current;
    if (run?.state !== 'running') throw new ProjectError(409, 'no training run is in progress');
    if (run.cancelAt === undefined) {
      run.cancelAt = performance.now();
      run.child?.send({ type: 'cancel' } satisfies ToTrainer);
      const timer = setTimeout(() => {
        if (run.state === 'running' && run.child) {
          run.terminated = true;
          run.child.kill('SIGKILL');
        }
      }, CANCEL_GRACE_MS);
      void run.finished.then(() => clearTimeout(timer));
    }
    await run.finished;
    return run;
  }

  /** Moves a finished run's files into place: the previous model is replaced only once the new one is complete. */
  private async commit(staging: string, m: Extract<ToServer, { type: 'result' }>): Promise<void> {
    const dir = this.project.dir;
    const model = path.join(dir, MODEL_DIR);
    const onnx = path.join(dir, ONNX_FILE);
    const old = path.join(staging, 'previous');
    await fs.mkdir(old, { recursive: true });
    if (existsSync(model)) await fs.rename(model, path.join(old, 'model'));
    if (existsSync(onnx)) await fs.rename(onnx, path.join(old, 'model.onnx'));
    await fs.rename(path.join(staging, 'model'), model);
    const hasOnnx = 'bytes' in m.onnx;
    if (hasOnnx) await fs.rename(path.join(staging, 'model.onnx'), onnx);
    this.project.setLastRun({
      finishedAt: new Date().toISOString(),
      model: MODEL_DIR,
      ...(hasOnnx ? { onnx: ONNX_FILE } : { onnxError: (m.onnx as { error: string }).error }),
      result: summarise(m.result as Record<string, unknown>, dir),
    });
    this.onModel?.();
  }

  /** Stops a running training for good (server shutdown). */
  async close(): Promise<void> {
    if (this.current?.state === 'running') await this.cancel().catch(() => {});
  }
}
