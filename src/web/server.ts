/**
 * @file `graft serve`'s HTTP server: the page, and a JSON API over one project folder. Routes stay thin: the
 * project (project.ts), training (training.ts), images (images.ts), bases (bases.ts) and exports (exporting.ts) do
 * the work; security.ts decides who may ask.
 */
import { existsSync, readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { serve } from '@hono/node-server';
import { type Context, Hono } from 'hono';
import { streamSSE } from 'hono/streaming';
import { decodeImage } from '../dataset/decode.ts';
import { Predictor } from '../index.ts';
import { baseChoices, checkSettings, MODES, pullBase, storeBase } from './bases.ts';
import { readMetadata, snippets, zipModel } from './exporting.ts';
import { checkImage, ImageRefused, thumbnail } from './images.ts';
import { bundlePage, pageHtml, WASM_FILES, wasmDir } from './page-bundle.ts';
import { checkImagePath, checkName, MODEL_DIR, ONNX_FILE, Project, ProjectError } from './project.ts';
import { guard, LIMITS, limitBody, newToken, TOKEN_HEADER } from './security.ts';
import { type RunEvent, relativise, Trainer } from './training.ts';

export interface ServeOptions {
  /** Project folder (created when missing). */
  dir: string;
  /** Default 127.0.0.1. */
  host?: string;
  /** Default 0: any free port. */
  port?: number;
}

export interface RunningServer {
  url: string;
  port: number;
  host: string;
  project: Project;
  trainer: Trainer;
  /** Stops a running training, closes connections. */
  close(): Promise<void>;
}

/** Server-side prediction: one Predictor per model folder, replaced when a run stores a new model. */
class ServerPredictor {
  private loaded?: Promise<Predictor>;
  constructor(private readonly dir: string) {}
  get(): Promise<Predictor> {
    this.loaded ??= Predictor.load(this.dir).catch((e) => {
      this.loaded = undefined;
      throw e;
    });
    return this.loaded;
  }
  reset(): void {
    const old = this.loaded;
    this.loaded = undefined;
    void old?.then((p) => p.dispose()).catch(() => {});
  }
}

export async function startServer(o: ServeOptions): Promise<RunningServer> {
  const project = Project.open(o.dir);
  const host = o.host ?? '127.0.0.1';
  const token = newToken();
  const trainer = new Trainer(project);
  const predictor = new ServerPredictor(path.join(project.dir, MODEL_DIR));
  trainer.onModel = () => predictor.reset();
  const page = await bundlePage();
  let port = 0;
  const downloads = new Map<string, { done: number; total: number; error?: string; finished: boolean }>();
  const listeners = new Set<(e: unknown) => void>();
  const broadcast = (e: unknown) => {
    for (const l of listeners) l(e);
  };

  const app = new Hono();
  app.use('*', guard({ token, port: () => port, host }));
  app.onError((e, c) => {
    if (e instanceof ProjectError || e instanceof ImageRefused) return c.json({ error: e.message }, e.status);
    return c.json({ error: (e as Error).message.split('\n')[0] }, 500);
  });

  // --- the page ---
  const html = pageHtml(token, project.name);
  const pageHeaders = {
    'Content-Security-Policy':
      "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob: mediastream:; style-src 'self' 'unsafe-inline'; script-src 'self' 'wasm-unsafe-eval'; connect-src 'self'; frame-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'",
    'Cache-Control': 'no-store',
  };
  app.get('/', (c) => c.html(html, 200, pageHeaders));
  app.get('/app.js', (c) => c.body(page.js, 200, { 'Content-Type': 'text/javascript; charset=utf-8' }));
  // TF.js's WebAssembly binaries for the page's in-browser prediction.
  const wasm = wasmDir();
  app.get('/wasm/:file', (c) => {
    const file = c.req.param('file');
    if (!WASM_FILES.includes(file)) return c.json({ error: 'no such file' }, 404);
    return c.body(bytesOf(readFileSync(path.join(wasm, file))), 200, {
      'Content-Type': 'application/wasm',
      'Cache-Control': 'public, max-age=86400',
    });
  });
  app.get('/app.css', (c) => c.body(page.css, 200, { 'Content-Type': 'text/css; charset=utf-8' }));

  // --- the project ---
  app.get('/api/project', async (c) => {
    const listing = await project.list();
    const run = trainer.run;
    return c.json({
      name: project.name,
      dir: project.dir,
      classes: listing.classes,
      problems: listing.problems,
      settings: project.settings,
      lastRun: project.lastRun && {
        ...project.lastRun,
        report: existsSync(path.join(project.dir, MODEL_DIR, 'report.html')),
        reportData: existsSync(path.join(project.dir, MODEL_DIR, 'report.json')),
      },
      run: run ? { id: run.id, state: run.state, startedAt: run.startedAt } : undefined,
      limits: LIMITS,
    });
  });
  app.get('/api/choices', async (c) => c.json({ bases: await baseChoices(project), modes: MODES }));
  app.put('/api/settings', limitBody(LIMITS.jsonBytes, 'the request'), async (c) => {
    const s = await checkSettings(project, await jsonBody(c));
    project.updateSettings(s);
    return c.json({ settings: s });
  });

  app.post('/api/classes', limitBody(LIMITS.jsonBytes, 'the request'), async (c) => {
    const { name } = await jsonBody(c);
    await project.createClass(checkName('class', name));
    return c.json({ created: name }, 201);
  });
  app.post('/api/classes/rename', limitBody(LIMITS.jsonBytes, 'the request'), async (c) => {
    const { from, to } = await jsonBody(c);
    await project.renameClass(checkName('class', from), checkName('class', to));
    return c.json({ renamed: from, to });
  });
  app.post('/api/classes/delete', limitBody(LIMITS.jsonBytes, 'the request'), async (c) => {
    const { name } = await jsonBody(c);
    return c.json({ undo: await project.deleteClass(checkName('class', name)) });
  });

  app.post('/api/images', limitBody(LIMITS.requestBytes, 'the upload'), async (c) => {
    const cls = checkName('class', c.req.query('class'));
    const body = await c.req.parseBody({ all: true });
    const raw = body.files;
    const files = (Array.isArray(raw) ? raw : raw === undefined ? [] : [raw]).filter(
      (f): f is File => typeof f !== 'string',
    );
    if (!files.length) throw new ProjectError(400, 'no files in the upload (form field "files")');
    if (files.length > LIMITS.filesPerRequest)
      return c.json({ error: `${files.length} files in one upload, over the limit of ${LIMITS.filesPerRequest}` }, 413);
    const listing = await project.list();
    const count = listing.classes.reduce((n, k) => n + k.images.length, 0);
    if (count + files.length > LIMITS.projectImages)
      return c.json({ error: `the project would hold more than ${LIMITS.projectImages} images` }, 413);
    const added: string[] = [];
    const refused: { name: string; status: number; reason: string }[] = [];
    for (const f of files) {
      const name = f.name;
      try {
        checkName('file', name);
        const bytes = new Uint8Array(await f.arrayBuffer());
        await checkImage(name, bytes);
        added.push(await project.addImage(cls, name, bytes));
      } catch (e) {
        if (e instanceof ImageRefused || e instanceof ProjectError)
          refused.push({ name, status: e.status, reason: e.message });
        else throw e;
      }
    }
    // All refused for one reason: answer with that reason's status, so a client sees why at a glance.
    if (!added.length) {
      const status = refused[0].status as 400 | 403 | 404 | 413 | 415;
      return c.json({ error: refused[0].reason, added, refused }, status);
    }
    return c.json({ added, refused });
  });
  app.post('/api/images/delete', limitBody(LIMITS.jsonBytes, 'the request'), async (c) => {
    const { items } = await jsonBody(c);
    return c.json({ undo: await project.deleteImages(checkItems(items)) });
  });
  app.post('/api/images/move', limitBody(LIMITS.jsonBytes, 'the request'), async (c) => {
    const { items, to } = await jsonBody(c);
    return c.json({ undo: await project.moveImages(checkItems(items), checkName('class', to)) });
  });
  app.post('/api/undo', limitBody(LIMITS.jsonBytes, 'the request'), async (c) => {
    const { id } = await jsonBody(c);
    if (typeof id !== 'string') throw new ProjectError(400, 'undo needs an id');
    return c.json({ undone: await project.undo(id) });
  });
  app.get('/api/image', async (c) => {
    const file = project.imagePath(c.req.query('class') ?? '', c.req.query('file') ?? '');
    if (!existsSync(file)) throw new ProjectError(404, 'no such image');
    return c.body(bytesOf(readFileSync(file)), 200, {
      'Content-Type': 'application/octet-stream',
      'Cache-Control': 'no-store',
    });
  });
  app.get('/api/thumb', async (c) => {
    const file = project.imagePath(c.req.query('class') ?? '', c.req.query('file') ?? '');
    if (!existsSync(file)) throw new ProjectError(404, 'no such image');
    const jpeg = await thumbnail(file).catch(() => undefined);
    if (!jpeg) throw new ProjectError(415, 'not a decodable image');
    return c.body(bytesOf(jpeg), 200, { 'Content-Type': 'image/jpeg', 'Cache-Control': 'private, max-age=3600' });
  });

  // --- bases ---
  app.post('/api/bases', limitBody(LIMITS.baseBytes, 'the uploaded base'), async (c) => {
    const body = await c.req.parseBody({ all: true });
    const raw = body.files;
    const files = (Array.isArray(raw) ? raw : raw === undefined ? [] : [raw]).filter(
      (f): f is File => typeof f !== 'string',
    );
    const stored = await storeBase(
      project,
      await Promise.all(files.map(async (f) => ({ name: f.name, bytes: new Uint8Array(await f.arrayBuffer()) }))),
    );
    return c.json({ base: stored }, 201);
  });
  app.post('/api/bases/pull', limitBody(LIMITS.jsonBytes, 'the request'), async (c) => {
    const { name } = await jsonBody(c);
    if (typeof name !== 'string') throw new ProjectError(400, 'pull needs a zoo name');
    const state = { done: 0, total: 0, finished: false } as {
      done: number;
      total: number;
      error?: string;
      finished: boolean;
    };
    if (downloads.get(name)?.finished === false) return c.json({ started: false, name }, 202);
    downloads.set(name, state);
    void pullBase(name, (p) => {
      state.done = p.done;
      state.total = p.total;
      broadcast({ type: 'download', name, done: p.done, total: p.total, detail: p.detail });
    })
      .then(() => broadcast({ type: 'download', name, done: state.total, total: state.total, finished: true }))
      .catch((e) => {
        state.error = (e as Error).message.split('\n')[0];
        broadcast({ type: 'download', name, error: state.error, finished: true });
      })
      .finally(() => {
        state.finished = true;
      });
    return c.json({ started: true, name }, 202);
  });

  // --- training ---
  app.post('/api/train', async (c) => {
    const run = await trainer.start();
    return c.json({ id: run.id, state: run.state }, 202);
  });
  app.post('/api/train/cancel', async (c) => {
    const run = await trainer.cancel();
    const end = run.events.at(-1) as Extract<RunEvent, { type: 'end' }>;
    return c.json({ id: run.id, state: run.state, stoppedMs: end?.stoppedMs, stoppedBy: end?.stoppedBy });
  });
  app.get('/api/events', (c) =>
    streamSSE(c, async (stream) => {
      const queue: unknown[] = [];
      let wake: (() => void) | undefined;
      const push = (e: unknown) => {
        queue.push(e);
        wake?.();
      };
      // A page that opens the stream mid-run first gets everything that run has reported so far.
      for (const e of trainer.run?.events ?? []) queue.push(e);
      const offRun = trainer.subscribe(push);
      listeners.add(push);
      let open = true;
      stream.onAbort(() => {
        open = false;
        wake?.();
      });
      try {
        while (open) {
          while (queue.length) await stream.writeSSE({ data: JSON.stringify(queue.shift()) });
          await new Promise<void>((r) => {
            wake = r;
            // A comment line now and then keeps proxies and idle timers from closing the stream.
            setTimeout(r, 15_000);
          });
          if (open && !queue.length) await stream.write(': keep-alive\n\n');
        }
      } finally {
        offRun();
        listeners.delete(push);
      }
    }),
  );

  // --- results, prediction, export ---
  const modelDir = path.join(project.dir, MODEL_DIR);
  const requireModel = () => {
    if (!project.lastRun || !existsSync(path.join(modelDir, 'graft.json')))
      throw new ProjectError(404, 'no trained model yet: train first');
  };
  app.get('/api/report', (c) => {
    requireModel();
    const f = path.join(modelDir, 'report.html');
    if (!existsSync(f)) throw new ProjectError(404, 'this model folder has no report.html');
    // The report is self-contained; a sandbox without scripts keeps it from reaching the API.
    return c.body(bytesOf(readFileSync(f)), 200, {
      'Content-Type': 'text/html; charset=utf-8',
      'Content-Security-Policy': "sandbox; default-src 'none'; img-src data:; style-src 'unsafe-inline'",
    });
  });
  // The report's content as data (report.json, written beside report.html), with paths made project-relative so the
  // page can show thumbnails and act on label issues.
  app.get('/api/report-data', (c) => {
    requireModel();
    const f = path.join(modelDir, 'report.json');
    if (!existsSync(f)) throw new ProjectError(404, 'this model folder has no report.json');
    return c.json(relativise(JSON.parse(readFileSync(f, 'utf8')), project.dir));
  });
  // The trained model's files for the page's in-browser prediction. The token is part of the path so TF.js can
  // fetch weights.bin relative to model.json without extra headers.
  app.get('/m/:token/:file', (c) => {
    if (c.req.param('token') !== token) return c.json({ error: 'refused: missing or wrong token' }, 401);
    requireModel();
    const name = checkName('file', c.req.param('file'));
    const f = project.inside(`${MODEL_DIR}/${name}`);
    if (!existsSync(f)) throw new ProjectError(404, `${name}: not in the model folder`);
    const type = name.endsWith('.json') ? 'application/json' : 'application/octet-stream';
    return c.body(bytesOf(readFileSync(f)), 200, { 'Content-Type': type, 'Cache-Control': 'no-store' });
  });
  app.post('/api/predict', limitBody(LIMITS.fileBytes, 'the image'), async (c) => {
    requireModel();
    const bytes = new Uint8Array(await c.req.arrayBuffer());
    await checkImage('image', bytes);
    const p = await predictor.get();
    const pixels = await decodeImage(bytes, 'image', p.metadata.preprocessing);
    const probs = await p.predictPixels(Float32Array.from(pixels), 1);
    return c.json({ labels: p.labels, probabilities: Array.from(probs), engine: p.engine });
  });
  const zipFolder = () => `${project.name.replace(/[^\w.-]+/g, '-')}-model`;
  app.get('/api/export/zip', (c) => {
    requireModel();
    const zip = zipModel(modelDir, zipFolder());
    return c.body(bytesOf(zip), 200, {
      'Content-Type': 'application/zip',
      'Content-Disposition': `attachment; filename="${zipFolder()}.zip"`,
    });
  });
  app.get('/api/export/onnx', (c) => {
    requireModel();
    const f = path.join(project.dir, ONNX_FILE);
    if (!existsSync(f))
      throw new ProjectError(
        404,
        `no ONNX file for this model${project.lastRun?.onnxError ? `: ${project.lastRun.onnxError}` : ''}`,
      );
    return c.body(bytesOf(readFileSync(f)), 200, {
      'Content-Type': 'application/octet-stream',
      'Content-Disposition': `attachment; filename="${zipFolder()}.onnx"`,
    });
  });
  app.get('/api/export/snippets', (c) => {
    requireModel();
    const m = readMetadata(modelDir);
    if (!m) throw new ProjectError(404, 'no graft.json in the model folder');
    return c.json({
      folder: zipFolder(),
      snippets: snippets(m, zipFolder(), existsSync(path.join(project.dir, ONNX_FILE))),
    });
  });
  app.get('/api/model-token', (c) => c.json({ base: `/m/${token}/` }));

  const server = serve({ fetch: app.fetch, hostname: host, port: o.port ?? 0 });
  await new Promise<void>((resolve, reject) => {
    server.once('listening', resolve);
    server.once('error', reject);
  });
  port = (server.address() as AddressInfo).port;
  const shown = host.includes(':') ? `[${host}]` : host;
  return {
    url: `http://${shown === '0.0.0.0' ? '127.0.0.1' : shown}:${port}/`,
    port,
    host,
    project,
    trainer,
    close: async () => {
      await trainer.close();
      predictor.reset();
      await new Promise<void>((r) => {
        server.close(() => r());
        (server as unknown as { closeAllConnections?: () => void }).closeAllConnections?.();
      });
    },
  };
}

/** A byte view hono's types accept (Buffer's backing store may be shared). */
function bytesOf(b: Uint8Array): Uint8Array<ArrayBuffer> {
  return new Uint8Array(b.buffer as ArrayBuffer, b.byteOffset, b.byteLength);
}

async function jsonBody(c: Context): Promise<Record<string, unknown>> {
  try {
    const v = await c.req.json();
    if (v && typeof v === 'object' && !Array.isArray(v)) return v as Record<string, unknown>;
  } catch {
    // fall through
  }
  throw new ProjectError(400, 'the request body must be a JSON object');
}

function checkItems(items: unknown): { class: string; file: string }[] {
  if (!Array.isArray(items) || !items.length) throw new ProjectError(400, 'items must be a non-empty list');
  if (items.length > 10_000) throw new ProjectError(413, 'more than 10000 items in one request');
  return items.map((i) => {
    const o = i as { class?: unknown; file?: unknown };
    return { class: checkName('class', o.class), file: checkImagePath(o.file) };
  });
}

export { TOKEN_HEADER };
