import path from 'node:path';
import { Command } from 'commander';
import {
  cacheUsage,
  clearCache,
  listDownloads,
  parseDuration,
  parseSize,
  pruneCache,
  removeDownload,
  verifyCache,
} from '../../index.ts';
import { pruneThumbnails, thumbnailUsage } from '../../report/thumbnails.ts';
import { opt, UsageError, words } from '../../util/errors.ts';
import { cacheRoot } from '../../util/paths.ts';
import { type GlobalOptions, printJson, say } from '../output.ts';

interface PruneFlags extends GlobalOptions {
  olderThan?: string;
  maxSize?: string;
}

interface ClearFlags extends GlobalOptions {
  models?: boolean;
}

function human(bytes: number): string {
  if (bytes >= 1e9) return `${(bytes / 1e9).toFixed(2)} GB`;
  if (bytes >= 1e6) return `${(bytes / 1e6).toFixed(1)} MB`;
  if (bytes >= 1e3) return `${(bytes / 1e3).toFixed(1)} kB`;
  return `${bytes} B`;
}

function daysAgo(ms: number): string {
  const d = (Date.now() - ms) / 86400e3;
  return d < 1 ? 'today' : `${Math.floor(d)} d ago`;
}

const activationsDir = () => path.join(cacheRoot(), 'activations');
const modelsDir = () => path.join(cacheRoot(), 'models');

function parseOr(what: string, parse: (t: string) => number, text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  try {
    return parse(text);
  } catch (e) {
    throw new UsageError('invalid-value', words`${opt(what)}: ${(e as Error).message}`);
  }
}

export function cacheCommand(): Command {
  const cmd = new Command('cache')
    .description(
      'show what the cache holds (activations per base and cut, downloaded bases); prune or clear it (GRAFT_CACHE_DIR)',
    )
    .option('--json', 'print one JSON object on the last line')
    .action((opts: GlobalOptions) => {
      const usage = cacheUsage(activationsDir());
      const downloads = listDownloads(modelsDir());
      const thumbs = thumbnailUsage();
      if (opts.json) return printJson({ root: cacheRoot(), activations: usage, models: downloads, thumbnails: thumbs });
      say(opts, `cache ${cacheRoot()}`);
      say(opts, `activations: ${usage.entries} entries, ${human(usage.bytes)}`);
      for (const b of usage.bases) {
        say(opts, `  base ${b.name ?? '(unnamed)'} [${b.id}]: ${b.entries} entries, ${human(b.bytes)}`);
        for (const c of b.cuts)
          say(
            opts,
            `    ${c.cut.padEnd(32)} ${String(c.entries).padStart(8)} entries ${human(c.bytes).padStart(10)}   last used ${daysAgo(c.newest)}, oldest ${daysAgo(c.oldest)}`,
          );
      }
      if (usage.legacy.files)
        say(
          opts,
          `  ${usage.legacy.files} files of an older format (${human(usage.legacy.bytes)}), never read: \`graft cache prune\` removes them`,
        );
      const t = usage.temporaries;
      if (t.live + t.stale)
        say(opts, `  temporaries: ${t.live} of running writers, ${t.stale} left by killed ones (removed by prune)`);
      say(opts, `report thumbnails: ${thumbs.files}, ${human(thumbs.bytes)}`);
      say(opts, `downloaded bases: ${downloads.length}, ${human(downloads.reduce((a, d) => a + d.bytes, 0))}`);
      for (const d of downloads) say(opts, `  ${d.url}  ${human(d.bytes)}`);
    });

  const prune = cmd
    .command('prune')
    .description(
      'remove activations (and report thumbnails) unused for a while and/or the least recently used activations beyond a size; always removes leftovers of killed runs',
    )
    .option('--older-than <age>', 'remove activations and report thumbnails not used for this long: 30d, 12h, 2w')
    .option('--max-size <size>', 'then keep at most this much of activations: 5GB, 500MB')
    .option('--json', 'print one JSON object on the last line')
    .action(() => {
      const f = prune.optsWithGlobals<PruneFlags>();
      const olderThanMs = parseOr('olderThan', parseDuration, f.olderThan);
      const r = pruneCache(activationsDir(), { olderThanMs, maxBytes: parseOr('maxSize', parseSize, f.maxSize) });
      // Thumbnails are a few kB each: only age removes them (--max-size is about the activations).
      const thumbs = olderThanMs === undefined ? { files: 0, bytes: 0 } : pruneThumbnails(undefined, olderThanMs);
      if (f.json) return printJson({ ...r, thumbnails: thumbs });
      say(
        f,
        `removed ${r.removed} entries (${human(r.freedBytes)}), ${r.temporaries} leftover temporaries, ${r.legacy} old-format files, ${thumbs.files} report thumbnails; ${r.remaining.entries} entries (${human(r.remaining.bytes)}) remain`,
      );
    });

  const verify = cmd
    .command('verify')
    .description('read and check every cached activation; damaged ones are removed (and recomputed when needed)')
    .option('--json', 'print one JSON object on the last line')
    .action(() => {
      const f = verify.optsWithGlobals<GlobalOptions>();
      const r = verifyCache(activationsDir());
      if (f.json) return printJson(r);
      say(f, `checked ${r.checked} entries: ${r.damaged.length} damaged (removed)`);
      for (const d of r.damaged) say(f, `  ${d.file}: ${d.reason}`);
    });

  const clear = cmd
    .command('clear')
    .description(
      'remove every cached activation and report thumbnail (made again when needed); --models also removes downloaded bases',
    )
    .option('--models', 'also remove downloaded zoo bases (downloaded again when needed)')
    .option('--json', 'print one JSON object on the last line')
    .action(async () => {
      const f = clear.optsWithGlobals<ClearFlags>();
      const r = clearCache(activationsDir());
      const thumbs = pruneThumbnails();
      const models = f.models ? listDownloads(modelsDir()) : [];
      for (const m of models) await removeDownload(m.dir);
      if (f.json) return printJson({ ...r, thumbnails: thumbs, modelsRemoved: models.length });
      say(
        f,
        `removed ${r.removed} activation entries (${human(r.freedBytes)}), ${thumbs.files} report thumbnails${f.models ? ` and ${models.length} downloaded bases` : ''}`,
      );
    });
  return cmd;
}
