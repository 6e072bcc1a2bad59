/**
 * @file The thread a `graft serve` training runs in: the library's `train()` with progress posted to the server
 * thread, which stays free to answer the page (heavy TF.js and sharp work would otherwise stall every request).
 * A 'cancel' message aborts through the library's AbortSignal.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { exportOnnx, type TrainOptions, train } from '../index.ts';

export interface WorkerJob {
  train: Omit<TrainOptions, 'onProgress' | 'signal' | 'out'>;
  /** Staging folder the model is written to (the server moves it into place when the run is not cancelled). */
  out: string;
  /** Where to write the ONNX export of the model (skipped with a reason when the model cannot be one graph). */
  onnxOut: string;
}

export type WorkerMessage =
  | { type: 'progress'; phase: string; done: number; total: number; detail?: string; metrics?: Record<string, number> }
  | { type: 'result'; result: unknown; onnx: { bytes: number } | { error: string } }
  | { type: 'error'; message: string; aborted: boolean };

const port = parentPort!;
const job = workerData as WorkerJob;
const controller = new AbortController();
port.on('message', (m: { type: string }) => {
  if (m.type === 'cancel') controller.abort(new Error('training cancelled'));
});

const post = (m: WorkerMessage) => port.postMessage(m);
try {
  const result = await train({
    ...job.train,
    out: job.out,
    signal: controller.signal,
    onProgress: (p) => post({ type: 'progress', ...p }),
  });
  let onnx: { bytes: number } | { error: string };
  try {
    post({ type: 'progress', phase: 'onnx', done: 0, total: 1 });
    onnx = { bytes: (await exportOnnx(job.out, job.onnxOut)).bytes };
  } catch (e) {
    onnx = { error: (e as Error).message.split('\n')[0] };
  }
  post({ type: 'progress', phase: 'onnx', done: 1, total: 1 });
  post({ type: 'result', result, onnx });
} catch (e) {
  post({ type: 'error', message: (e as Error).message.split('\n')[0], aborted: controller.signal.aborted });
}
