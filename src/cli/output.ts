/**
 * What every command shares: JSON on the last line of stdout, one-line errors, progress bars only on a terminal.
 */
import { SingleBar } from 'cli-progress';
import pc from 'picocolors';
import { type ErrorJson, GraftError, isUserError, oneLine, renderWords, type Warning } from '../util/errors.ts';
import type { Progress } from '../util/progress.ts';

export interface GlobalOptions {
  json?: boolean;
  verbose?: boolean;
}

/**
 * Flags and arguments that are not simply `--` + the option name in kebab case. Library errors name options as the
 * options objects do (`valSplit`); the CLI shows the flag the user typed (`--val-split`).
 */
const FLAGS: Record<string, string> = {
  data: '<data>',
  model: '<model>',
  images: '<images>',
  topK: '--top',
  mirror: '--model-mirror',
  cacheDir: 'the cache folder (GRAFT_CACHE_DIR)',
};

/** The CLI's name for a library option: `valSplit` → `--val-split`. */
export function flagOf(option: string): string {
  return FLAGS[option] ?? `--${option.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
}

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value)}\n`);
}

/** Human lines go to stderr under --json so the last stdout line stays machine-readable. */
export function say(opts: GlobalOptions, line: string): void {
  if (opts.json) process.stderr.write(`${line}\n`);
  else process.stdout.write(`${line}\n`);
}

/**
 * Whether to colour what goes to `stream`: decided for that stream (stderr's own terminal, not stdout's), so codes
 * never reach a redirected log. NO_COLOR (https://no-color.org) turns colour off, FORCE_COLOR on.
 */
export function useColour(stream: { isTTY?: boolean }, env: NodeJS.ProcessEnv = process.env): boolean {
  if (env.NO_COLOR) return false;
  if (env.FORCE_COLOR && env.FORCE_COLOR !== '0' && env.FORCE_COLOR !== 'false') return true;
  return Boolean(stream.isTTY) && env.TERM !== 'dumb';
}

const errColour = pc.createColors(useColour(process.stderr));

/** Exit status of a run that a bug in graft stopped (sysexits' EX_SOFTWARE); user errors exit with 1. */
export const EXIT_INTERNAL = 70;

/** The one line an error is shown as, with library option names replaced by flags. */
export function errorLine(e: unknown): string {
  if (e instanceof GraftError) return e.render(flagOf);
  return oneLine(e instanceof Error ? e.message : String(e));
}

/** The `--json` error object; every error also ends stdout with one JSON object. */
export function errorJson(e: unknown): ErrorJson {
  const message = errorLine(e);
  if (e instanceof GraftError) {
    const json = { ...e.toJSON(), message };
    if (json.option) json.option = flagOf(json.option);
    return json;
  }
  if (typeof (e as { exitCode?: unknown })?.exitCode === 'number')
    return { kind: 'interrupted', code: 'interrupted', message };
  return { kind: 'internal', code: 'internal', message };
}

/** What an error prints: its stderr text, the `--json` object for stdout, and the exit status. */
export function formatError(
  e: unknown,
  o: { verbose: boolean; json: boolean; colour?: boolean },
): { stderr: string; stdout?: string; status: number } {
  const c = pc.createColors(o.colour ?? false);
  const line = errorLine(e);
  // An interrupt (cli/interrupt.ts) carries its exit status, 128 + the signal number, as shells expect.
  const exitCode = (e as { exitCode?: unknown })?.exitCode;
  const interrupted = typeof exitCode === 'number';
  const user = isUserError(e) || interrupted || (e instanceof Error && e.name === 'AbortError');
  let stderr = user
    ? `${c.red('graft: error:')} ${line}\n`
    : `${c.red('graft: internal error (a bug in graft):')} ${line}${o.verbose ? '' : ' (rerun with --verbose for the stack trace, and please report it)'}\n`;
  if (o.verbose && e instanceof Error && e.stack) stderr += `${e.stack}\n`;
  return {
    stderr,
    ...(o.json ? { stdout: `${JSON.stringify({ error: errorJson(e) })}\n` } : {}),
    status: interrupted ? exitCode : user ? 1 : EXIT_INTERNAL,
  };
}

/**
 * Prints an error and exits. A user mistake (usage, data, base, download) is one line; anything else is a bug in graft
 * and says so, with a hint to rerun with --verbose for the stack trace. Under --json, stdout ends with `{"error": …}`.
 */
export function reportError(e: unknown, o: { verbose: boolean; json: boolean }): never {
  const r = formatError(e, { ...o, colour: useColour(process.stderr) });
  process.stderr.write(r.stderr);
  if (r.stdout) process.stdout.write(r.stdout);
  process.exit(r.status);
}

/** Why the default base was not used, with flags named as the user typed them. */
export function fallbackLine(f: { reason: string; error?: unknown }): string {
  return f.error ? errorLine(f.error) : f.reason;
}

/** Warnings go to stderr as they happen (under --json too), with flags named as the user typed them. */
export function printWarning(w: Warning): void {
  process.stderr.write(`${errColour.yellow('graft: warning:')} ${renderWarning(w)}\n`);
}

/** Warnings as `--json` shows them: flags named as the user typed them. */
export function jsonWarnings(ws: Warning[]): { code: string; message: string; file?: string }[] {
  return ws.map((w) => ({ code: w.code, message: renderWarning(w), ...(w.file ? { file: w.file } : {}) }));
}

export function renderWarning(w: Warning): string {
  return renderWords(w.words, flagOf);
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
