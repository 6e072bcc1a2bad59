import { Command } from 'commander';
import { cacheStatus } from '../../base/download.ts';
import { findZooEntry, loadZooFiles, ZOO, type ZooEntry } from '../../base/zoo.ts';
import { BaseError } from '../../util/errors.ts';
import { interruptSignal } from '../interrupt.ts';
import { type GlobalOptions, printJson, progressBars, say } from '../output.ts';

interface PullOptions extends GlobalOptions {
  modelMirror?: string;
  offline?: boolean;
}

function mb(bytes: number): string {
  return `${(bytes / 1e6).toFixed(1)} MB`;
}

function rangeText(z: ZooEntry): string {
  if (z.preprocessing) {
    const { scale, offset } = z.preprocessing;
    return `x/${+(1 / scale).toFixed(3)}${offset < 0 ? '-' : '+'}${Math.abs(offset)}`;
  }
  return `[${z.inputRange.join(',')}]`;
}

async function listModels(opts: GlobalOptions): Promise<void> {
  const rows = [];
  for (const z of ZOO) {
    const st = await cacheStatus(z.url);
    rows.push({ ...z, cached: st.cached, cachedFiles: st.cachedFiles, sizeBytes: st.cached ? st.bytes : undefined });
  }
  if (opts.json) return printJson({ models: rows });
  const head = [
    'name',
    'architecture',
    'width',
    'input',
    'default cut',
    'input range',
    'crop',
    'resize',
    'pinned',
    'size',
    'licence',
    'cached',
    'URL',
  ];
  const table = rows.map((r) => [
    r.name,
    r.architecture,
    r.width !== undefined ? r.width.toFixed(2) : '',
    `${r.inputSize}x${r.inputSize}`,
    r.defaultCut,
    rangeText(r),
    String(r.crop ?? 1),
    r.resize ?? 'cover',
    r.weightsSha256 ? 'yes' : 'no',
    r.sizeBytes !== undefined ? mb(r.sizeBytes) : '',
    r.licence,
    r.cached ? 'yes' : 'no',
    r.url,
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...table.map((row) => row[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]))).join('  ');
  const out = [line(head), ...table.map(line)];
  out.push(
    '',
    'use a name with --base; `graft models pull NAME` downloads ahead of time (GRAFT_MODEL_MIRROR or --model-mirror to use a mirror)',
    'crop and resize: what each base uses unless --crop or --resize say otherwise (measured per base: docs/BENCHMARKS.md)',
    'pinned: the SHA-256 of the weights is known; files whose weights differ are refused',
  );
  process.stdout.write(`${out.join('\n')}\n`);
}

export function modelsCommand(): Command {
  const cmd = new Command('models')
    .description('list the model zoo (bases downloaded by name and cached), or download one ahead of time')
    .option('--json', 'print one JSON object on the last line')
    .action(async (opts: GlobalOptions) => listModels(opts));

  const pull = cmd
    .command('pull')
    .description('download zoo bases into the cache (resumes, verifies size and SHA-256)')
    .argument('<names...>', 'zoo names, as listed by `graft models`')
    .option(
      '--model-mirror <url>',
      'base URL standing in for https://storage.googleapis.com/ (default GRAFT_MODEL_MIRROR)',
    )
    .option('--offline', 'never touch the network: only check what is cached')
    .option('--json', 'print one JSON object on the last line')
    .action(async (names: string[]) => {
      // `--json` after `pull` is claimed by `models` itself (commander reads parent options anywhere): merge both.
      const opts = pull.optsWithGlobals<PullOptions>();
      const entries = names.map((n) => {
        const z = findZooEntry(n);
        if (!z) throw new BaseError('unknown-base', n, 'not a zoo name (see graft models)');
        return z;
      });
      const results = [];
      for (const z of entries) {
        const { artifacts: _weights, ...r } = await loadZooFiles(z, {
          mirror: opts.modelMirror,
          offline: opts.offline,
          onProgress: progressBars(opts),
          signal: interruptSignal(),
        });
        const st = await cacheStatus(z.url);
        results.push({ name: z.name, ...r, bytes: st.bytes });
        const what = r.fromCache
          ? 'already cached and intact'
          : `downloaded ${r.downloaded.join(', ')}${r.repaired.length ? ` (repaired ${r.repaired.join(', ')})` : ''}`;
        say(
          opts,
          `${z.name}: ${what}${z.weightsSha256 ? ', weights match the pin' : ''}, ${mb(st.bytes)} in ${r.modelJsonPath}`,
        );
      }
      if (opts.json) printJson({ pulled: results });
    });
  return cmd;
}
