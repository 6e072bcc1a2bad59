import { Command } from 'commander';
import { exportOnnx } from '../../index.ts';
import { opt, shown, UsageError, words } from '../../util/errors.ts';
import { type GlobalOptions, printJson, say } from '../output.ts';
import { number } from '../shared-options.ts';

export function exportCommand(): Command {
  return new Command('export')
    .description('convert a trained model folder to another format (ONNX: runs in onnxruntime on any platform)')
    .argument('<model>', 'model folder written by `graft train --out`')
    .requiredOption('--out <file>', 'output file, e.g. model.onnx')
    .option('--format <format>', 'onnx', 'onnx')
    .option('--opset <n>', 'ONNX opset (13-22)', '17')
    .option('--json', 'print one JSON object on the last line')
    .action(async (model: string, f: GlobalOptions & { out: string; format: string; opset: string }) => {
      if (f.format !== 'onnx')
        throw new UsageError(
          'invalid-value',
          words`${opt('format')} must be onnx (got ${shown(f.format)}); the model folder itself is the TF.js format`,
        );
      const r = await exportOnnx(model, f.out, { opset: number('opset', f.opset) });
      if (f.json) return printJson(r);
      say(
        f,
        `wrote ${r.out} (${(r.bytes / 1e6).toFixed(1)} MB, ONNX opset ${r.opset}); input '${r.input}' [N,${r.size.join(',')},3] raw RGB 0..255, output '${r.output}' probabilities of ${r.labels.join(', ')}`,
      );
    });
}
