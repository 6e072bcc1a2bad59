/**
 * Temporary names that say who wrote them, and the rule for when such a leftover may be removed. Every writer in
 * graft writes under a temporary name and renames into place; a process killed with -9 leaves its temporary behind.
 * A later run removes it only when its writer is certainly gone: same host and the pid no longer runs, or, for a
 * file written from another host (a shared network cache), untouched for a day. Never another live process's.
 */
import { randomBytes } from 'node:crypto';
import { renameSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';

/** Host names may hold dashes and dots; only letters, digits, dots and dashes are kept. */
const HOST = os.hostname().replace(/[^A-Za-z0-9.-]/g, '_') || 'host';
/** This machine's name as temporaries and locks record it. */
export function hostName(): string {
  return HOST;
}

/** A writer on another host is presumed gone after this long without touching its temporary. */
export const FOREIGN_STALE_MS = 24 * 3600 * 1000;

/** `~<host>~<pid>~<random>`: unique per writer and call, and parseable back (see tempOwner). */
export function tempTag(): string {
  return `~${HOST}~${process.pid}~${randomBytes(4).toString('hex')}`;
}

/** The writer named by a temporary name that ends in tempTag() (or tempTag() + '.tmp'); undefined for any other name. */
export function tempOwner(name: string): { host: string; pid: number } | undefined {
  const m = /~([A-Za-z0-9._-]+)~(\d+)~[0-9a-f]{8}(?:\.tmp)?$/.exec(name);
  return m ? { host: m[1], pid: Number(m[2]) } : undefined;
}

/** True when a process with this pid runs on this machine (EPERM: it runs, under another user). */
export function processAlive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Whether a temporary left by the writer named in `name` may be removed (see the file comment). */
export function isStaleTemp(name: string, mtimeMs: number, now = Date.now()): boolean {
  const owner = tempOwner(name);
  if (!owner) return false;
  if (owner.host === HOST) return !processAlive(owner.pid);
  return now - mtimeMs > FOREIGN_STALE_MS;
}

/** Writes a file under a temporary name in the same folder, then renames it into place. */
export function writeFileAtomic(file: string, content: string | Uint8Array): void {
  const tmp = `${file}${tempTag()}.tmp`;
  try {
    writeFileSync(tmp, content);
    renameSync(tmp, file);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw e;
  }
}
