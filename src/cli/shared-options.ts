/** Options several commands take in the same words. */
import type { Command } from 'commander';
import type { BaseOptions } from '../base/base.ts';
import { parseSize, parseTriple } from '../base/foreign.ts';
import { parseRange } from '../base/preprocessing.ts';
import { opt, shown, UsageError, words } from '../util/errors.ts';

export function baseOptions(cmd: Command, o: { withBase: boolean }): Command {
  if (o.withBase)
    cmd.option(
      '--base <base>',
      'pretrained base: zoo or bundled name (`graft models`), model.json path or URL (Layers or graph-model), or a .onnx file',
    );
  return cmd
    .option('--input-range <min,max>', "pixel range the base expects, e.g. -1,1 (default 0,1 or the base's metadata)")
    .option(
      '--resize <mode>',
      'fit images to the input size: cover (scale the shorter side, cut the centre; default) or fill (stretch)',
    )
    .option(
      '--crop <fraction>',
      'keep this central fraction of each image: resize to size/fraction, cut out the centre (0.875: the ImageNet evaluation crop; default 1)',
    )
    .option(
      '--mean <r,g,b>',
      'graph/ONNX bases: per-channel mean subtracted from 0..1 pixels, e.g. 0.485,0.456,0.406 (with --std)',
    )
    .option('--std <r,g,b>', 'graph/ONNX bases: per-channel standard deviation, e.g. 0.229,0.224,0.225')
    .option('--input-size <h,w>', 'graph/ONNX bases whose input size is dynamic: HEIGHT,WIDTH (or one SIZE)')
    .option('--input-layout <layout>', 'ONNX bases: nchw or nhwc (default: read from the input shape)')
    .option(
      '--model-mirror <url>',
      'download zoo models from this mirror of https://storage.googleapis.com/ (or GRAFT_MODEL_MIRROR)',
    )
    .option('--offline', 'never touch the network: zoo models must already be cached');
}

export function parseBaseOptions(opts: {
  inputRange?: string;
  crop?: string;
  resize?: string;
  modelMirror?: string;
  offline?: boolean;
  mean?: string;
  std?: string;
  inputSize?: string;
  inputLayout?: string;
}): BaseOptions {
  // Values are parsed here; ranges and combinations are the library's to check (base/base.ts checkBaseOptions).
  return {
    ...(opts.inputRange !== undefined ? { inputRange: parseRange(opts.inputRange) } : {}),
    ...(opts.crop !== undefined ? { crop: number('crop', opts.crop) } : {}),
    ...(opts.resize !== undefined ? { resize: opts.resize as 'cover' | 'fill' } : {}),
    ...(opts.mean !== undefined ? { mean: parseTriple('mean', opts.mean) } : {}),
    ...(opts.std !== undefined ? { std: parseTriple('std', opts.std) } : {}),
    ...(opts.inputSize !== undefined ? { inputSize: parseSize(opts.inputSize) } : {}),
    ...(opts.inputLayout ? { inputLayout: opts.inputLayout as 'nchw' | 'nhwc' } : {}),
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

/**
 * Parses the text of a numeric flag, named by its library option (`valSplit` for `--val-split`). Text that is not a
 * number, the empty string included (`Number('')` is 0), is a usage error; the range is the library's to check.
 */
export function number(option: string, text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const n = text.trim() === '' ? Number.NaN : Number(text);
  if (!Number.isFinite(n))
    throw new UsageError('not-a-number', words`${opt(option)} must be a number (got ${shown(text)})`);
  return n;
}
