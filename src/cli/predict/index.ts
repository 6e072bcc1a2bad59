import { Command } from 'commander';
import { parseEngine } from '../../engines/engine-choice.ts';
import { Predictor } from '../../index.ts';
import { parseTta } from '../../train/tta.ts';
import { DataError } from '../../util/errors.ts';
import { type GlobalOptions, printJson, progressBars } from '../output.ts';
import { number, printSkipped } from '../shared-options.ts';

export function predictCommand(): Command {
  return new Command('predict')
    .description('classify images with a trained model')
    .argument('<model>', 'model folder written by `graft train --out`')
    .argument('<images...>', 'image files')
    .option('-k, --top <k>', 'how many classes to show per image', '3')
    .option('--engine <engine>', 'what runs the network: auto (ONNX Runtime when it loads), onnx or wasm', 'auto')
    .option(
      '--tta <mode>',
      "test-time augmentation: auto (what the model records, see graft.json's tta; default), flip (average each image with its mirror) or none",
      'auto',
    )
    .option('--json', 'print one JSON object on the last line')
    .action(
      async (model: string, images: string[], f: GlobalOptions & { top: string; engine?: string; tta?: string }) => {
        const tta = parseTta(f.tta, true);
        const predictor = await Predictor.load(model, { engine: parseEngine(f.engine) });
        const r = await predictor.predictFiles(images, {
          topK: number('topK', f.top),
          tta: tta === 'auto' ? undefined : tta,
          onProgress: progressBars(f),
        });
        printSkipped(f, r.skipped);
        if (r.predictions.length === 0) {
          const first = r.skipped[0];
          throw new DataError(
            'no-usable-images',
            first.file,
            images.length === 1 ? first.reason : `${first.reason}; none of the ${images.length} images could be read`,
          );
        }
        if (f.json)
          return printJson({
            model,
            engine: predictor.engine,
            tta: tta === 'auto' ? predictor.tta : tta,
            predictions: r.predictions,
            skipped: r.skipped,
          });
        for (const p of r.predictions) {
          process.stdout.write(
            `${p.file}\n${p.top.map((t) => `  ${t.label.padEnd(20)} ${t.probability.toFixed(4)}`).join('\n')}\n`,
          );
        }
      },
    );
}
