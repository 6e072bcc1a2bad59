/**
 * One place that decides which TF.js backend runs networks. WASM is the default because in Node it is about 30x
 * faster than the pure-JS CPU backend and, unlike tfjs-node, installs without downloading native binaries.
 *
 * What graft changes in TF.js's process-wide state, and when (a host application may share the same tfjs-core):
 * - the backend: only through `initTf` (the CLI, benchmarks and tests call it), or through `ensureTf` when nothing has
 *   chosen a backend yet; a backend the host has set is used as it is;
 * - kernels: graft's WASM gradient kernels (tfjs/wasm-grad.ts) and its FusedBatchNorm and AvgPool gradients are
 *   registered when a tail is first trained (parameter transfer, fine-tuning), not before;
 * - process handlers: the WASM module's uncaughtException/unhandledRejection handlers are removed when graft itself
 *   initialises the WASM backend.
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
    for (const e of events)
      for (const l of emitter.listeners(e)) if (!before.has(l)) emitter.removeListener(e, l as never);
  })();
  return ready;
}

/**
 * The library's entry points (loadBase, Predictor.load, exportOnnx) call this: a backend the host application (or an
 * earlier initTf) has chosen stays; only when none has been chosen does graft start its default, WASM.
 */
export async function ensureTf(): Promise<void> {
  if (ready) return ready;
  // backendName is set once a backend has been chosen (setBackend, or first use); reading it chooses nothing.
  if ((tf.engine() as unknown as { backendName?: string }).backendName) return tf.ready();
  return initTf('wasm');
}
