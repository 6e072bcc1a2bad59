import path from 'node:path';
import { Command } from 'commander';
import { train, writeDemoDataset } from '../../index.ts';
import {
  fallbackLine,
  type GlobalOptions,
  jsonWarnings,
  printJson,
  printWarning,
  progressBars,
  say,
} from '../output.ts';
import { number } from '../shared-options.ts';

export function demoCommand(): Command {
  return new Command('demo')
    .description('write a small digits data set (from the mnist package) and train on it: the whole flow, offline')
    .option('--dir <dir>', 'where to write the images and the model', 'graft-demo')
    .option('--per-class <n>', 'images per class', '40')
    .option('--base <base>', "base network (default: graft's default base)")
    .option('--json', 'print one JSON object on the last line')
    .action(async (f: GlobalOptions & { dir: string; perClass: string; base?: string }) => {
      const data = await writeDemoDataset(path.join(f.dir, 'images'), {
        perClass: number('perClass', f.perClass),
      });
      say(f, `wrote digit images to ${data}`);
      const out = path.join(f.dir, 'model');
      const r = await train({ data, base: f.base, out, onProgress: progressBars(f), onWarning: printWarning });
      if (r.baseFallback) say(f, `note: ${fallbackLine(r.baseFallback)}; using ${r.base}`);
      if (f.json) return printJson({ data, ...r, history: undefined, warnings: jsonWarnings(r.warnings) });
      say(
        f,
        `trained on ${r.trainImages} images of ${r.classes.join(', ')} with ${r.base}: validation accuracy ${r.valAccuracy?.toFixed(3)}`,
      );
      say(f, `model written to ${r.out}`);
      say(f, `next: graft predict ${out} ${path.join(data, r.classes[0], '0.png')}`);
    });
}
