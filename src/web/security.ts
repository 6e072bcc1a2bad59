/**
 * @file What keeps `graft serve` a local tool: the page it serves is the only client that can change anything.
 *
 * - **Host check** (every request): the Host header must be `localhost`, an IP literal, or the address given with
 *   `--host`, on the server's port. A DNS-rebinding page reaches the server under its own domain name, so its
 *   requests (including the one for the page that carries the token) are refused.
 * - **Origin check** (every request that sends one): it must be the server's own origin, `http://<Host>`. A browser
 *   sends Origin on every cross-origin request and on every POST, so a foreign site's fetch or form is refused, and
 *   `Sec-Fetch-Site: cross-site` is refused too.
 * - **Token** (every `/api/` request): a random per-server value, written into the page when it is served. Requests
 *   that change something must send it in the `X-Graft-Token` header, which a cross-site form cannot set; reads may
 *   pass it as `?t=` because `<img>` and `EventSource` cannot send headers.
 * - **Limits** (LIMITS): request and file sizes, files per request, image pixels, images per project.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { isIP } from 'node:net';
import type { MiddlewareHandler } from 'hono';
import { bodyLimit } from 'hono/body-limit';

/** Upload limits, documented in the README's `graft serve` section. */
export const LIMITS = {
  /** One image file. */
  fileBytes: 16 * 1024 * 1024,
  /** Files in one upload request (the page sends larger selections in several requests). */
  filesPerRequest: 100,
  /** One upload request, all files together. */
  requestBytes: 64 * 1024 * 1024,
  /** Pixels of one image (width × height), checked before decoding so a small file cannot expand into gigabytes. */
  imagePixels: 40_000_000,
  /** Images in one project. */
  projectImages: 50_000,
  /** An uploaded base network (model.json + weights, or one .onnx file). */
  baseBytes: 256 * 1024 * 1024,
  /** Any other JSON request body. */
  jsonBytes: 1024 * 1024,
} as const;

export const TOKEN_HEADER = 'x-graft-token';

export function newToken(): string {
  return randomBytes(24).toString('base64url');
}

function sameToken(given: string | undefined | null, token: string): boolean {
  if (!given) return false;
  const a = Buffer.from(given);
  const b = Buffer.from(token);
  return a.length === b.length && timingSafeEqual(a, b);
}

const LOOPBACK_NAMES = new Set(['localhost']);

/** `host:port` → [host, port] (IPv6 literals in brackets). */
function splitHost(hostHeader: string): [string, string] | undefined {
  const m = /^(\[[0-9a-fA-F:.]+\]|[^:[\]]+)(?::(\d+))?$/.exec(hostHeader);
  if (!m) return undefined;
  return [m[1].toLowerCase(), m[2] ?? '80'];
}

/** Whether a Host header names this server: localhost or an IP literal (or the --host name), on our port. */
export function hostAllowed(hostHeader: string | undefined, port: number, boundHost: string): boolean {
  if (!hostHeader) return false;
  const parts = splitHost(hostHeader);
  if (!parts) return false;
  const [host, p] = parts;
  if (p !== String(port)) return false;
  const bare = host.startsWith('[') ? host.slice(1, -1) : host;
  return LOOPBACK_NAMES.has(bare) || isIP(bare) !== 0 || bare === boundHost.toLowerCase();
}

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

/**
 * The checks above as one hono middleware. `port()` is read per request because the port is known only once the
 * server listens (port 0 picks a free one).
 */
export function guard(o: { token: string; port: () => number; host: string }): MiddlewareHandler {
  return async (c, next) => {
    const host = c.req.header('host');
    if (!hostAllowed(host, o.port(), o.host))
      return c.json(
        { error: `refused: Host '${host ?? ''}' is not this server (use http://127.0.0.1:${o.port()}/)` },
        403,
      );
    const origin = c.req.header('origin');
    if (origin !== undefined && origin !== `http://${host}`)
      return c.json({ error: `refused: foreign Origin '${origin}'` }, 403);
    const site = c.req.header('sec-fetch-site');
    if (site === 'cross-site') return c.json({ error: 'refused: cross-site request' }, 403);
    const url = new URL(c.req.url);
    if (url.pathname.startsWith('/api/')) {
      const header = c.req.header(TOKEN_HEADER);
      const query = SAFE_METHODS.has(c.req.method) ? url.searchParams.get('t') : null;
      if (!sameToken(header ?? query, o.token))
        return c.json({ error: 'refused: missing or wrong token (reload the page)' }, 401);
    }
    await next();
    c.header('X-Content-Type-Options', 'nosniff');
    c.header('X-Frame-Options', 'SAMEORIGIN');
    c.header('Referrer-Policy', 'no-referrer');
  };
}

/** Refuses request bodies over `max` bytes (413 with a one-line reason), by Content-Length or while reading. */
export function limitBody(max: number, what: string): MiddlewareHandler {
  return bodyLimit({
    maxSize: max,
    onError: (c) => c.json({ error: `${what} is larger than the limit of ${formatBytes(max)}` }, 413),
  });
}

export function formatBytes(n: number): string {
  return n >= 1024 * 1024 ? `${+(n / 1024 / 1024).toFixed(1)} MiB` : `${+(n / 1024).toFixed(1)} KiB`;
}
