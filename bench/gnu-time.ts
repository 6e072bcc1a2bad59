/**
 * @file Process CPU time and peak memory of a child process, from GNU time: the benchmarks run on shared machines,
 * where a process's CPU seconds say more than its wall time. One format and one parser for every section.
 */
import { existsSync } from 'node:fs';

export const GNU_TIME = '/usr/bin/time';
export const haveGnuTime = () => existsSync(GNU_TIME);
const FORMAT = 'graft-bench-time rss-kb %M cpu-s %U %S';
const LINE = /graft-bench-time rss-kb (\d+) cpu-s ([\d.]+) ([\d.]+)\s*$/;

/** The command and arguments that run `node ...args` under GNU time (or plain node where it is missing). */
export function timedNode(args: string[]): [string, string[]] {
  return haveGnuTime() ? [GNU_TIME, ['-f', FORMAT, process.execPath, ...args]] : [process.execPath, args];
}

export interface Timing {
  /** User + system seconds of the process. */
  cpuSeconds: number;
  /** Maximum resident set size, MB (10^6 bytes). */
  peakRssMB: number;
}

/** The timing GNU time appended to `stderr`, and the process's own stderr without it. */
export function parseTiming(stderr: string): { timing?: Timing; stderr: string } {
  const m = LINE.exec(stderr);
  if (!m) return { stderr };
  return {
    timing: { cpuSeconds: Number(m[2]) + Number(m[3]), peakRssMB: (Number(m[1]) * 1024) / 1e6 },
    stderr: stderr.slice(0, m.index),
  };
}
