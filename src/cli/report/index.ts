import path from 'node:path';
import { Command } from 'commander';
import { REPORT_HTML, readReportData, writeReport } from '../../index.ts';
import { type GlobalOptions, printJson, say } from '../output.ts';

export function reportCommand(): Command {
  return new Command('report')
    .description("render a model folder's report.html again from its report.json (e.g. after upgrading graft)")
    .argument('<model>', 'model folder written by `graft train --out`')
    .option('--out <file>', `where to write the page (default: ${REPORT_HTML} in the model folder)`)
    .option('--json', 'print one JSON object on the last line')
    .action(async (model: string, f: GlobalOptions & { out?: string }) => {
      const data = readReportData(model);
      const html = await writeReport(data, { html: f.out ?? path.join(model, REPORT_HTML) });
      if (f.json) return printJson({ report: html });
      say(f, `report: ${html}`);
    });
}
