/**
 * @file The process a `graft serve` training runs in: the library's `train()` with its progress sent to the server,
 * which stays free to answer the page. A process rather than a worker thread, so that native code (ONNX Runtime,
 * sharp, the WASM heap) can never take the server down with it, and its memory is returned whole when it ends.
 * A 'cancel' message aborts through the library's AbortSignal.
 */
import { exportOnnx, type TrainOptions, train } from '../index.ts';

export interface TrainJob {
  train: Omit<TrainOptions, 'onProgress' | 'signal' | 'out'>;
  /** Staging folder the model is written to (the server moves it into place when the run is not cancelled). */
  out: string;
  /** Where to write the ONNX export of the model (skipped with a reason when the model cannot be one graph). */
  onnxOut: string;
}

export type ToServer =
  | { type: 'progress'; phase: string; done: number; total: number; detail?: string; metrics?: Record<string, number> }
  | { type: 'result'; result: unknown; onnx: { bytes: number } | { error: string } }
  | { type: 'error'; message: string; aborted: boolean };

export type ToTrainer = { type: 'job'; job: TrainJob } | { type: 'cancel' };

const controller = new AbortController();
const send = (m: ToServer) => new Promise<void>((resolve) => process.send!(m, () => resolve()));

async function run(job: TrainJob): Promise<void> {
  try {
    const result = await train({
      ...job.train,
      out: job.out,
      signal: controller.signal,
      onProgress: (p) => void send({ type: 'progress', ...p }),
    });
    let onnx: { bytes: number } | { error: string };
    try {
      void send({ type: 'progress', phase: 'onnx', done: 0, total: 1 });
      onnx = { bytes: (await exportOnnx(job.out, job.onnxOut)).bytes };
    } catch (e) {
      onnx = { error: (e as Error).message.split('\n')[0] };
    }
    void send({ type: 'progress', phase: 'onnx', done: 1, total: 1 });
    await send({ type: 'result', result, onnx });
  } catch (e) {
    await send({ type: 'error', message: (e as Error).message.split('\n')[0], aborted: controller.signal.aborted });
  }
  process.exit(0);
}

process.on('message', (m: ToTrainer) => {
  if (m.type === 'job') void run(m.job);
  else if (m.type === 'cancel') controller.abort(new Error('training cancelled'));
});
// The server went away: nobody is left to use the result.
process.on('disconnect', () => process.exit(0));
