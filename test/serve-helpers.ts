/** Fixtures for the `graft serve` tests: the CLI started as users start it, and an API client with the page's token. */
import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';

export interface ServeProcess {
  /** The project folder (absolute). */
  project: string;
  url: string;
  token: string;
  child: ChildProcess;
  /** stderr so far (warnings, errors). */
  stderr: () => string;
  stop(): Promise<void>;
}

/**
 * Starts `graft serve DIR --port 0` as a child process and waits for the URL it prints. `graft` is the checkout's
 * sources through tsx unless `bin` names another entry (an installed package's bin/graft.js); `cwd` defaults to the
 * current folder.
 */
export async function startServe(
  dir: string,
  env: Record<string, string> = {},
  args: string[] = [],
  o: { bin?: string; cwd?: string } = {},
): Promise<ServeProcess> {
  const entry = o.bin ? [o.bin] : ['--import', 'tsx', 'src/cli/main.ts'];
  const child = spawn(process.execPath, [...entry, 'serve', dir, '--port', '0', ...args], {
    cwd: o.cwd,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stderr!.on('data', (d) => {
    err += d;
  });
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`graft serve did not print a URL in 60 s: ${err}`)), 60_000);
    child.stdout!.on('data', (d) => {
      out += d;
      const m = /^(http:\/\/\S+\/)$/m.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`graft serve exited with ${code}: ${err}`));
    });
  });
  const html = await (await fetch(url)).text();
  const token = /name="graft-token" content="([^"]+)"/.exec(html)?.[1];
  if (!token) throw new Error('the page carries no token');
  return {
    project: path.resolve(dir),
    url,
    token,
    child,
    stderr: () => err,
    stop: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null) return resolve();
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
      }),
  };
}

/** JSON API calls as the page makes them (token header, same Origin). */
export function client(url: string, token: string) {
  const origin = url.replace(/\/$/, '');
  return async (
    method: string,
    p: string,
    body?: unknown,
  ): Promise<{ status: number; json: Record<string, unknown> }> => {
    // A fresh connection per request: a test that blocks its event loop (TF.js in this process) for longer than the
    // server's keep-alive would otherwise send its next request, a POST that is not retried, on a socket the server
    // has just closed ('fetch failed').
    const headers: Record<string, string> = { 'X-Graft-Token': token, Origin: origin, Connection: 'close' };
    let payload: BodyInit | undefined;
    if (body instanceof FormData || body instanceof Blob) payload = body;
    else if (body !== undefined) {
      payload = JSON.stringify(body);
      headers['Content-Type'] = 'application/json';
    }
    const r = await fetch(new URL(p, url), { method, headers, body: payload });
    const text = await r.text();
    let json: Record<string, unknown> = {};
    try {
      json = JSON.parse(text);
    } catch {
      json = { text };
    }
    return { status: r.status, json };
  };
}

/** Uploads files from disk to a class, as the page's file picker does. */
export async function uploadFromDisk(
  api: ReturnType<typeof client>,
  cls: string,
  files: string[],
): Promise<{ status: number; json: Record<string, unknown> }> {
  const fd = new FormData();
  for (const f of files) fd.append('files', new Blob([readFileSync(f)]), path.basename(f));
  return api('POST', `/api/images?class=${encodeURIComponent(cls)}`, fd);
}

/** Serves ../shared/models/mirror on 127.0.0.1 (a free port), standing in for https://storage.googleapis.com/. */
export async function serveMirror(root: string): Promise<{ url: string; server: Server }> {
  const server = createServer((req, res) => {
    const rel = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
    const file = path.join(root, path.normalize(rel).replace(/^([/\\])+/, ''));
    if (!file.startsWith(root)) {
      res.writeHead(403).end();
      return;
    }
    try {
      const bytes = readFileSync(file);
      res.writeHead(200, { 'Content-Length': bytes.length }).end(bytes);
    } catch {
      res.writeHead(404).end();
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/`, server };
}

/** Waits until `check` returns a value (not undefined), polling. */
export async function waitFor<T>(check: () => Promise<T | undefined>, ms: number, what: string): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
