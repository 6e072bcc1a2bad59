import os from 'node:os';
import path from 'node:path';

/** graft's cache root: GRAFT_CACHE_DIR, else $XDG_CACHE_HOME/graft, else ~/.cache/graft (the user's cache directory). */
export function cacheRoot(): string {
  if (process.env.GRAFT_CACHE_DIR) return path.resolve(process.env.GRAFT_CACHE_DIR);
  const xdg = process.env.XDG_CACHE_HOME;
  if (process.platform === 'darwin') return path.join(os.homedir(), 'Library', 'Caches', 'graft');
  if (process.platform === 'win32') return path.join(process.env.LOCALAPPDATA ?? os.homedir(), 'graft', 'Cache');
  return path.join(xdg || path.join(os.homedir(), '.cache'), 'graft');
}
