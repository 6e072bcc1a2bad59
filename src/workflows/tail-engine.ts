/**
 * @file Which engine trains a tail. `auto` compiles the tail for ONNX Runtime (engines/ort-train.ts) and falls back to
 * TF.js on WASM, with the reason, when onnxruntime-node does not load, when BatchNorm must use batch statistics
 * (trainBn: the compiled graphs hold BatchNorm in inference mode), or when a layer or operator has no ONNX conversion
 * or backward rule. `onnx` turns those fallbacks into errors; `wasm` is TF.js throughout.
 */
import type { EngineChoice } from '../engines/engine-choice.ts';
import { onnxAvailable } from '../onnx/runtime.ts';
import { type Tail, type TailEngine, tfjsTailEngine } from '../train/tail-trainer.ts';
import { opt, UsageError, type Warning, type Words, warning, words } from '../util/errors.ts';

export interface TailEngineChoice {
  engine: TailEngine;
  /** Why the tail trains on TF.js although ONNX Runtime was preferred (code 'trained-on-wasm'). */
  fallback?: Warning;
}

export async function chooseTailEngine(
  tail: Tail,
  choice: EngineChoice,
  o: { trainBn?: boolean; threads?: number } = {},
): Promise<TailEngineChoice> {
  if (choice === 'wasm' || tail.layers.length === 0) return { engine: tfjsTailEngine(tail) };
  const onWasm = (why: Words): TailEngineChoice => {
    if (choice === 'onnx') throw new UsageError('engine-unavailable', words`${opt('engine')} onnx: ${why}`);
    return { engine: tfjsTailEngine(tail), fallback: warning('trained-on-wasm', words`trained on WASM: ${why}`) };
  };
  if (o.trainBn && tail.layers.some((l) => l.getClassName() === 'BatchNormalization'))
    return onWasm(
      words`${opt('trainBn')} (BatchNorm with batch statistics) is not supported by the ONNX Runtime trainer`,
    );
  if (!tail.toModel) return onWasm(words`this tail has no Layers model to compile`);
  if (!(await onnxAvailable())) return onWasm(words`onnxruntime-node does not load on this machine`);
  const [{ compileTail }, { ortTailEngine }] = await Promise.all([
    import('../engines/ort-train.ts'),
    import('../train/ort-tail.ts'),
  ]);
  try {
    return { engine: ortTailEngine(await compileTail(tail.toModel(), { threads: o.threads })) };
  } catch (e) {
    return onWasm(words`ONNX Runtime cannot train this tail (${(e as Error).message.split('\n')[0]})`);
  }
}
