/**
 * What every command shares: JSON on the last line of stdout, one-line errors, progress bars only on a terminal.
 */
import { SingleBar } from 'cli-progress';
import pc from 'picocolors';
import type { Progress } from '../util/progress.ts';

export interface GlobalOptions {
  json?: boolean;
  verbose?: boolean;
}

/** Thrown for user errors: the message is the whole story, so no stack trace is printed. */
export class UsageError extends Error {}

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value)}\n`);
}

/** Human lines go to stderr under --json so the last stdout line stays machine-readable. */
export function say(opts: GlobalOptions, line: string): void {
  if (opts.json) process.stderr.write(`${line}\n`);
  else process.stdout.write(`${line}\n`);
}

export function reportError(e: unknown, verbose: boolean): never {
  const err = e instanceof Error ? e : new Error(String(e));
  const line = err.message.split('\n')[0];
  process.stderr.write(`${pc.red('graft: error:')} ${line}\n`);
  if (verbose && err.stack) process.stderr.write(`${err.stack}\n`);
  // An interrupt exits 128 + the signal number, as shells expect.
  process.exit((err as { exitCode?: number }).exitCode ?? 1);
}

/**
 * A progress callback that draws one bar per phase on a terminal, and nothing otherwise (CI logs, pipes, --json).
 */
export function progressBars(opts: GlobalOptions): (p: Progress) => void {
  if (process.env.GRAFT_PROGRESS === 'lines') return progressLines();
  if (opts.json || !process.stderr.isTTY) return () => {};
  let bar: SingleBar | undefined;
  let phase = '';
  return (p) => {
    if (p.phase !== phase) {
      bar?.stop();
      phase = p.phase;
      bar = new SingleBar({
        format: `${p.phase.padEnd(10)} {bar} {value}/{total} | ETA {eta_formatted} {detail}`,
        stream: process.stderr,
        hideCursor: true,
      });
      bar.start(p.total, 0, { detail: '' });
    }
    bar?.setTotal(p.total);
    bar?.update(p.done, { detail: p.detail ?? '' });
    if (p.done >= p.total) {
      bar?.stop();
      bar = undefined;
      phase = '';
    }
  };
}

/** GRAFT_PROGRESS=lines: one stderr line as each phase starts, for logs and for tools that watch a run. */
function progressLines(): (p: Progress) => void {
  let phase = '';
  return (p) => {
    if (p.phase === phase) return;
    phase = p.phase;
    process.stderr.write(`progress ${p.phase} ${p.done}/${p.total}\n`);
  };
}
