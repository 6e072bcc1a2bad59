/** Options several commands take in the same words. */
import type { Command } from 'commander';
import type { BaseOptions } from '../base/base.ts';
import { parseRange } from '../base/preprocessing.ts';

export function baseOptions(cmd: Command, o: { withBase: boolean }): Command {
  if (o.withBase) cmd.option('--base <base>', 'pretrained base: zoo or bundled name (`graft models`), model.json path or URL');
  return cmd
    .option('--input-range <min,max>', 'pixel range the base expects, e.g. -1,1 (default 0,1 or the base\'s metadata)')
    .option('--model-mirror <url>', 'download zoo models from this mirror of https://storage.googleapis.com/ (or GRAFT_MODEL_MIRROR)')
    .option('--offline', 'never touch the network: zoo models must already be cached');
}

export function parseBaseOptions(opts: { inputRange?: string; modelMirror?: string; offline?: boolean }): BaseOptions {
  return {
    ...(opts.inputRange ? { inputRange: parseRange(opts.inputRange) } : {}),
    ...(opts.modelMirror ? { mirror: opts.modelMirror } : {}),
    ...(opts.offline ? { offline: true } : {}),
  };
}

/** Skipped files are always shown: never silently dropped. */
export function printSkipped(opts: { json?: boolean }, skipped: { file: string; reason: string }[]): void {
  if (!skipped.length) return;
  const lines = [`skipped ${skipped.length} file(s):`, ...skipped.map((s) => `  ${s.file}: ${s.reason}`)];
  const stream = opts.json ? process.stderr : process.stdout;
  stream.write(`${lines.join('\n')}\n`);
}
