/**
 * Loading ONNX Runtime. onnxruntime-node is imported lazily and only here: its native binary may be missing or fail
 * to load on some platforms, and the rest of graft must keep working on TF.js when it does (see onnxAvailable).
 */

import { oneLine, UsageError } from '../util/errors.ts';
import { encodeGraph, floatInfo } from './proto.ts';

export type Ort = typeof import('onnxruntime-node');

let ortPromise: Promise<Ort> | undefined;

/** The onnxruntime-node module; rejects with its own load error when the binary does not load. */
export function loadOrt(): Promise<Ort> {
  ortPromise ??= import('onnxruntime-node');
  return ortPromise;
}

/** The onnxruntime-node module, or a one-line error saying that `what` needs it. */
export async function requireOrt(what: string): Promise<Ort> {
  try {
    return await loadOrt();
  } catch (e) {
    throw new UsageError(
      'engine-unavailable',
      `${what} need onnxruntime-node, which does not load here (${oneLine((e as Error).message)})`,
    );
  }
}

let available: Promise<boolean> | undefined;

/** True when onnxruntime-node loads and runs a one-node model here. Checked once per process. */
export function onnxAvailable(): Promise<boolean> {
  available ??= (async () => {
    try {
      const ort = await loadOrt();
      const session = await ort.InferenceSession.create(tinyModel());
      try {
        const x = new ort.Tensor('float32', Float32Array.of(-1, 2), [2]);
        const y = (await session.run({ x })).y.data as Float32Array;
        return y[0] === 0 && y[1] === 2;
      } finally {
        await session.release();
      }
    } catch {
      return false;
    }
  })();
  return available;
}

/** y = Relu(x) on a float vector: enough to prove the binary loads, parses ONNX and executes a kernel. */
function tinyModel(): Uint8Array {
  return encodeGraph({
    name: 'probe',
    node: [{ op_type: 'Relu', input: ['x'], output: ['y'], name: 'relu', attribute: [] }],
    initializer: [],
    input: [floatInfo('x', ['n'])],
    output: [floatInfo('y', ['n'])],
  });
}
