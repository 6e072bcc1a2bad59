/**
 * One place that decides which TF.js backend runs networks. WASM is the default because in Node it is about 30x
 * faster than the pure-JS CPU backend and, unlike tfjs-node, installs without downloading native binaries.
 */
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
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
    const ok = await tf.setBackend(backend);
    if (!ok) throw new Error(`TF.js backend '${backend}' failed to initialise`);
    await tf.ready();
  })();
  return ready;
}
