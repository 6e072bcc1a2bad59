/**
 * Which engine runs the frozen trunk. `auto` prefers ONNX Runtime (native, multi-threaded) and falls back to TF.js on
 * WASM when onnxruntime-node does not load; the choice is reported so users can see it.
 */
import type { Base } from '../base/base.ts';
import { buildTrunkModel } from '../engines/trunk.ts';
import { type RunnerFactory, tfjsRunner } from './extract.ts';

export type EngineChoice = 'auto' | 'onnx' | 'wasm';

export function parseEngine(text: string | undefined): EngineChoice {
  const e = (text ?? 'auto') as EngineChoice;
  if (!['auto', 'onnx', 'wasm'].includes(e)) throw new Error(`--engine must be auto, onnx or wasm (got '${text}')`);
  return e;
}

export async function runnerFor(
  choice: EngineChoice = 'auto',
  base?: Base,
): Promise<{ runner: RunnerFactory; engine: string }> {
  // Graph and ONNX bases each run on the one engine that reads their format.
  if (base?.foreign)
    return {
      runner: (b, cuts) => b.foreign!.runner(cuts, choice),
      engine: base.foreign.format === 'onnx' ? 'onnx' : 'wasm',
    };
  if (choice === 'wasm') return { runner: tfjsRunner, engine: 'wasm' };
  let onnx: typeof import('../engines/onnx.ts') | undefined;
  try {
    onnx = await import('../engines/onnx.ts');
  } catch (e) {
    if (choice === 'onnx')
      throw new Error(`--engine onnx: ONNX Runtime engine unavailable (${(e as Error).message.split('\n')[0]})`);
  }
  if (onnx && (await onnx.onnxAvailable())) {
    const mod = onnx;
    return {
      runner: async (base, cuts, pool) => mod.onnxTrunkRunner(buildTrunkModel(base, cuts, { pool })),
      engine: 'onnx',
    };
  }
  if (choice === 'onnx') throw new Error('--engine onnx: onnxruntime-node does not load on this machine');
  return { runner: tfjsRunner, engine: 'wasm' };
}
