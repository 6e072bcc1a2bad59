import { Command } from 'commander';
import { inspect } from '../../index.ts';
import { type GlobalOptions, printJson } from '../output.ts';
import { baseOptions, parseBaseOptions } from '../shared-options.ts';

export function inspectCommand(): Command {
  const cmd = new Command('inspect')
    .description('list a base network\'s layers, parameters and candidate cut points')
    .argument('[base]', 'bundled base name, model.json path or URL')
    .option('--all', 'list every layer, not only the candidate cut points')
    .option('--json', 'print one JSON object on the last line');
  baseOptions(cmd, { withBase: false });
  return cmd.action(async (baseSpec: string | undefined, opts: GlobalOptions & { all?: boolean; inputRange?: string }) => {
    const info = await inspect(baseSpec, parseBaseOptions(opts));
    if (opts.json) return printJson(info);
    const out: string[] = [];
    out.push(`base ${info.name}  id ${info.id}`);
    out.push(`source ${info.source}`);
    out.push(
      `input ${info.inputSize.join('x')} RGB, pixel*${info.preprocessing.scale.toPrecision(4)}${info.preprocessing.offset >= 0 ? '+' : ''}${info.preprocessing.offset}, ${info.params.toLocaleString('en')} parameters, ${info.layers.length} layers`,
    );
    if (opts.all) {
      out.push('', 'layer'.padEnd(34) + 'type'.padEnd(24) + 'output'.padEnd(18) + 'params'.padStart(10) + '  cut');
      for (const l of info.layers) {
        out.push(l.name.padEnd(34) + l.className.padEnd(24) + JSON.stringify(l.shape).padEnd(18) + String(l.params).padStart(10) + (l.cutPoint ? '  yes' : ''));
      }
    }
    out.push('', `candidate cut points (default: ${info.defaultCut}); "blocks" is the --retrain-layers value that splits there`);
    out.push('cut'.padEnd(34) + 'blocks'.padStart(7) + 'output'.padStart(16) + 'features'.padStart(10) + 'params above'.padStart(14));
    for (const c of info.candidates) {
      out.push(c.name.padEnd(34) + String(c.blocksBelowHead).padStart(7) + JSON.stringify(c.shape).padStart(16) + String(c.featureSize).padStart(10) + c.paramsAbove.toLocaleString('en').padStart(14));
    }
    process.stdout.write(`${out.join('\n')}\n`);
  });
}
