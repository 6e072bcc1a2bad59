/** Options several commands take in the same words. */
import type { Command } from 'commander';
import type { BaseOptions } from '../base/base.ts';
import { parseRange } from '../base/preprocessing.ts';

export function baseOptions(cmd: Command, o: { withBase: boolean }): Command {
  if (o.withBase) cmd.option('--base <base>', 'pretrained base: bundled name, model.json path or URL');
  return cmd.option('--input-range <min,max>', 'pixel range the base expects, e.g. -1,1 (default 0,1 or the base\'s metadata)');
}

export function parseBaseOptions(opts: { inputRange?: string }): BaseOptions {
  return opts.inputRange ? { inputRange: parseRange(opts.inputRange) } : {};
}
