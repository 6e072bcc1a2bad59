/**
 * One place that decides which TF.js backend runs networks. WASM is the default because in Node it is about 30x
 * faster than the pure-JS CPU backend and, unlike tfjs-node, installs without downloading native binaries.
 */
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-wasm';
import * as tfl from '@tensorflow/tfjs-layers';

export { tf, tfl };

export type TfBackend = 'wasm' | 'cpu';

let ready: Promise<void> | undefined;
let current: TfBackend | undefined;

/** Selects and initialises a backend once per process; later calls with the same name are free. */
export async function initTf(backend: TfBackend = 'wasm'): Promise<void> {
  if (current === backend && ready) return ready;
  current = backend;
  ready = (async () => {
    // The WASM module installs process-wide handlers that rethrow any uncaught error after printing its whole minified
    // source; graft reports errors itself, so those handlers are removed again once the backend is up.
    const events = ['uncaughtException', 'unhandledRejection'];
    const emitter = process as NodeJS.EventEmitter;
    const before = new Set(events.flatMap((e) => emitter.listeners(e)));
    // The CPU backend is only a reference for tests and a fallback by request: registered when asked for, which keeps
    // its module off every command's start-up path.
    if (backend === 'cpu') await import('@tensorflow/tfjs-backend-cpu');
    const ok = await tf.setBackend(backend);
    if (!ok) throw new Error(`TF.js backend '${backend}' failed to initialise`);
    await tf.ready();
    if (backend === 'wasm') (await import('./wasm-grad.ts')).registerWasmGradients();
    for (const e of events)
      for (const l of emitter.listeners(e)) if (!before.has(l)) emitter.removeListener(e, l as never);
  })();
  return ready;
}
