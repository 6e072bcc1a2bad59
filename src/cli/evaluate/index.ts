import path from 'node:path';
import { Command } from 'commander';
import { parseEngine } from '../../engines/engine-choice.ts';
import { evaluateModel, evaluationReportData, Predictor, writeReport } from '../../index.ts';
import { commandLine } from '../../report/data.ts';
import { parseTta } from '../../train/tta.ts';
import { type GlobalOptions, printJson, progressBars, say } from '../output.ts';
import { printSkipped } from '../shared-options.ts';

export function evaluateCommand(): Command {
  return new Command('evaluate')
    .description('accuracy, per-class precision and recall, and confusion matrix of a model on labelled data')
    .argument('<model>', 'model folder written by `graft train --out`')
    .argument('<data>', 'folder with one sub-folder per class, or a CSV of path,label')
    .option('--engine <engine>', 'what runs the network: auto (ONNX Runtime when it loads), onnx or wasm', 'auto')
    .option(
      '--tta <mode>',
      "test-time augmentation: auto (what the model records, see graft.json's tta; default), flip (average each image with its mirror) or none",
      'auto',
    )
    .option('--report <file>', 'also write an HTML report (accuracy with its interval, confusion matrix, mistakes)')
    .option('--json', 'print one JSON object on the last line')
    .action(
      async (model: string, data: string, f: GlobalOptions & { engine?: string; report?: string; tta?: string }) => {
        const t0 = performance.now();
        const tta = parseTta(f.tta, true);
        const predictor = await Predictor.load(model, { engine: parseEngine(f.engine) });
        const { predictions, ...r } = await evaluateModel(predictor, data, {
          tta: tta === 'auto' ? undefined : tta,
          onProgress: progressBars(f),
        });
        printSkipped(f, r.skipped);
        let report: string | undefined;
        if (f.report) {
          const content = evaluationReportData(
            { ...r, predictions, engine: predictor.engine, seconds: (performance.now() - t0) / 1000 },
            { dir: path.resolve(model), metadata: predictor.metadata },
            data,
            commandLine(process.argv.slice(2)),
          );
          report = await writeReport(content, { html: f.report });
          say(f, `report: ${report}`);
        }
        if (f.json) return printJson({ ...r, engine: predictor.engine, report });
        const w = Math.max(8, ...r.labels.map((l) => l.length)) + 2;
        const out = [
          `accuracy ${r.accuracy.toFixed(4)} on ${r.images} images${r.tta === 'flip' ? ' (test-time flip: each image averaged with its mirror)' : ''}`,
          '',
          `${'class'.padEnd(w)}precision  recall     f1  support`,
        ];
        for (const c of r.perClass) {
          out.push(
            `${c.label.padEnd(w)}${c.precision.toFixed(3).padStart(9)}${c.recall.toFixed(3).padStart(8)}${c.f1.toFixed(3).padStart(7)}${String(c.support).padStart(9)}`,
          );
        }
        out.push(
          '',
          `confusion (rows: true class, columns: predicted)`,
          `${''.padEnd(w)}${r.labels.map((l) => l.padStart(w)).join('')}`,
        );
        for (const [i, row] of r.confusion.entries()) {
          out.push(`${r.labels[i].padEnd(w)}${row.map((v) => String(v).padStart(w)).join('')}`);
        }
        process.stdout.write(`${out.join('\n')}\n`);
      },
    );
}
