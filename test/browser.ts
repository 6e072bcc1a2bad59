/**
 * @file Headless Chromium for the browser tests: Debian's `chromium` driven by `playwright-core` (no browser download).
 * `.ci/run` installs the package; elsewhere a browser test skips with a message when it is missing, except under
 * `CI=true`, where a missing browser fails the run instead of hiding the tests.
 */
import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { type Browser, chromium, type Page } from 'playwright-core';

export const CHROMIUM = process.env.GRAFT_CHROMIUM ?? '/usr/bin/chromium';

/** Why browser tests cannot run here, or undefined when they can (throws under CI instead of skipping). */
export function browserSkipReason(): string | undefined {
  if (existsSync(CHROMIUM)) return undefined;
  const why = `no Chromium at ${CHROMIUM} (apt-get install chromium, or set GRAFT_CHROMIUM)`;
  if (process.env.CI) throw new Error(`browser tests must run in CI: ${why}`);
  return why;
}

/**
 * Flags for a sandboxed CI container with no network: without the background-networking ones Chromium keeps trying
 * to reach Google's hosts, which this machine refuses.
 */
const FLAGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-dev-shm-usage',
];

/** `extraArgs`, e.g. Chromium's fake camera: `--use-fake-ui-for-media-stream --use-fake-device-for-media-stream`. */
export function launchBrowser(extraArgs: string[] = []): Promise<Browser> {
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: [...FLAGS, ...extraArgs] });
}

/** Where screenshots and other browser artifacts go: test-artifacts/ in the checkout (kept by CI, ignored by git). */
export function artifactPath(name: string): string {
  const dir = path.resolve(process.env.GRAFT_ARTIFACTS ?? 'test-artifacts');
  mkdirSync(dir, { recursive: true });
  return path.join(dir, name);
}

/**
 * Records what a page does that a self-contained or local page must not: console errors, uncaught exceptions, and
 * every request that leaves the allowed origins (none by default).
 */
export function watchPage(page: Page, allowedOrigins: string[] = []): { errors: string[]; requests: string[] } {
  const errors: string[] = [];
  const requests: string[] = [];
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(m.text());
  });
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('request', (r) => {
    const url = r.url();
    if (url.startsWith('data:') || url.startsWith('blob:') || url === 'about:blank') return;
    if (allowedOrigins.some((o) => url.startsWith(o))) return;
    requests.push(url);
  });
  return { errors, requests };
}
