import { existsSync } from 'node:fs';
import path from 'node:path';
import { Command } from 'commander';
import { METADATA_FILE, readModelFolder } from '../../export/model-files.ts';
import { inspect } from '../../index.ts';
import { type GlobalOptions, printJson } from '../output.ts';
import { baseOptions, parseBaseOptions } from '../shared-options.ts';

export function inspectCommand(): Command {
  const cmd = new Command('inspect')
    .description("list a base network's layers, parameters and candidate cut points")
    .argument(
      '[base]',
      'base name, model.json path or URL; or a trained model folder (shows its metadata and cut search)',
    )
    .option('--all', 'list every layer, not only the candidate cut points')
    .option('--json', 'print one JSON object on the last line');
  baseOptions(cmd, { withBase: false });
  return cmd.action(
    async (baseSpec: string | undefined, opts: GlobalOptions & { all?: boolean; inputRange?: string }) => {
      if (baseSpec && existsSync(path.join(baseSpec, METADATA_FILE))) return inspectModel(baseSpec, opts);
      const info = await inspect(baseSpec, parseBaseOptions(opts));
      if (opts.json) return printJson(info);
      const out: string[] = [];
      out.push(
        `base ${info.name}  id ${info.id}${info.format ? `  (${info.format === 'onnx' ? 'ONNX' : 'TF.js graph model'}: feature transfer only)` : ''}`,
      );
      out.push(`source ${info.source}`);
      out.push(
        `input ${info.inputSize.join('x')} RGB${info.preprocessing.layout ? ` ${info.preprocessing.layout.toUpperCase()}` : ''}, pixel*${info.preprocessing.scale.toPrecision(4)}${info.preprocessing.offset >= 0 ? '+' : ''}${info.preprocessing.offset}${info.preprocessing.mean ? `, then (x - [${info.preprocessing.mean.join(', ')}]) / [${(info.preprocessing.std ?? [1, 1, 1]).join(', ')}]` : ''}, resize ${info.preprocessing.resize}${info.preprocessing.crop && info.preprocessing.crop !== 1 ? ` + central crop ${info.preprocessing.crop}` : ''}, ${info.params.toLocaleString('en')} parameters, ${info.layers.length} ${info.format ? 'nodes' : 'layers'}`,
      );
      if (opts.all) {
        out.push('', `${'layer'.padEnd(34) + 'type'.padEnd(24) + 'output'.padEnd(18) + 'params'.padStart(10)}  cut`);
        for (const l of info.layers) {
          out.push(
            l.name.padEnd(34) +
              l.className.padEnd(24) +
              JSON.stringify(l.shape).padEnd(18) +
              String(l.params).padStart(10) +
              (l.cutPoint ? '  yes' : ''),
          );
        }
      }
      out.push(
        '',
        `candidate cut points (default: ${info.defaultCut}); "blocks" ${info.format ? 'counts the candidates between it and the default cut' : 'is the --retrain-layers value that splits there'}`,
      );
      out.push(
        'cut'.padEnd(34) +
          'blocks'.padStart(7) +
          'output'.padStart(16) +
          'features'.padStart(10) +
          'params above'.padStart(14),
      );
      for (const c of info.candidates) {
        out.push(
          c.name.padEnd(34) +
            String(c.blocksBelowHead).padStart(7) +
            JSON.stringify(c.shape).padStart(16) +
            String(c.featureSize).padStart(10) +
            c.paramsAbove.toLocaleString('en').padStart(14),
        );
      }
      process.stdout.write(`${out.join('\n')}\n`);
    },
  );
}

/** A trained model: what it was trained from, how well it did, and the cut search that chose its cut. */
function inspectModel(dir: string, opts: GlobalOptions): void {
  const { metadata: m } = readModelFolder(dir);
  if (opts.json) {
    printJson(m);
    return;
  }
  const out = [
    `model ${path.resolve(dir)}`,
    `labels ${m.labels.join(', ')}`,
    `base ${m.base.name} (${m.base.id}), cut ${m.cut}, mode ${m.mode}, head ${m.head.kind}`,
    `input ${m.preprocessing.size.join('x')} RGB pixels 0..255 (${m.preprocessing.resize}${m.preprocessing.crop && m.preprocessing.crop !== 1 ? `, central crop ${m.preprocessing.crop}` : ''})`,
    `validation accuracy ${m.metrics.valAccuracy ?? 'n/a'}`,
  ];
  const fit = m.head.fit as { lambda: number; search?: { folds: number } } | undefined;
  if (fit)
    out.push(
      `logistic head: L2 strength ${fit.lambda.toPrecision(2)}${fit.search ? ` chosen by ${fit.search.folds}-fold cross-validation on the training images` : ''}`,
    );
  out.push(`test-time flip: ${m.tta === 'flip' ? 'applied by graft predict and evaluate' : 'none'}`);
  const sweep = m.sweep as
    | {
        method: string;
        rows: {
          cut: string;
          depth: number;
          featureSize: number;
          score: number;
          sd: number;
          seconds: number;
          chosen?: boolean;
        }[];
      }
    | undefined;
  if (sweep) {
    out.push(
      '',
      `cut search (${sweep.method}):`,
      `  ${'cut'.padEnd(28)}${'depth'.padStart(6)}${'features'.padStart(10)}${'score'.padStart(16)}${'seconds'.padStart(9)}`,
    );
    for (const r of sweep.rows) {
      out.push(
        `${r.chosen ? '* ' : '  '}${r.cut.padEnd(28)}${String(r.depth).padStart(6)}${String(r.featureSize).padStart(10)}${`${r.score.toFixed(3)} ± ${r.sd.toFixed(3)}`.padStart(16)}${r.seconds.toFixed(1).padStart(9)}`,
      );
    }
  }
  process.stdout.write(`${out.join('\n')}\n`);
}
