/**
 * @file Writing and reading a model folder's report: report.json (the ReportData) and report.html (rendered from it).
 * Each file is written under a temporary name and renamed into place, so a crash never leaves half a report.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { DataError } from '../util/errors.ts';
import { writeFileAtomic } from '../util/files.ts';
import { stopCharts } from './charts.ts';
import { REPORT_HTML, REPORT_JSON, REPORT_VERSION, type ReportData } from './data.ts';
import { renderReport } from './render.ts';

/** Renders `data` into `html` (default: report.html in `dir`) and, when `dir` is a model folder, stores report.json. */
export async function writeReport(data: ReportData, o: { dir?: string; html?: string }): Promise<string> {
  const html = path.resolve(o.html ?? path.join(o.dir ?? '.', REPORT_HTML));
  const page = await renderReport(data).finally(stopCharts);
  if (o.dir) writeFileAtomic(path.join(o.dir, REPORT_JSON), `${JSON.stringify(data)}\n`);
  writeFileAtomic(html, page);
  return html;
}

/** The ReportData stored in a model folder. */
export function readReportData(dir: string): ReportData {
  const file = path.join(path.resolve(dir), REPORT_JSON);
  if (!existsSync(path.join(path.resolve(dir), 'graft.json')))
    throw new DataError('not-a-model', dir, 'not a graft model folder (no graft.json)');
  if (!existsSync(file))
    throw new DataError(
      'no-report',
      dir,
      `no ${REPORT_JSON} (trained without a report, or by a graft before reports); train again`,
    );
  let data: ReportData;
  try {
    data = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new DataError('unreadable', file, `unreadable (${(e as Error).message.split('\n')[0]})`, e);
  }
  if (data.version !== REPORT_VERSION)
    throw new DataError('report-version', file, `report version ${data.version}, this graft reads ${REPORT_VERSION}`);
  return data;
}
