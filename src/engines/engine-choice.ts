/**
 * Which engine runs the frozen trunk. `auto` prefers ONNX Runtime (native, multi-threaded) and falls back to TF.js on
 * WASM when onnxruntime-node does not load; the choice is reported so users can see it. Graph-model bases run on
 * TF.js and ONNX bases on ONNX Runtime, whatever is asked, and say so when asked otherwise.
 */
import type { Base, ForeignBase } from '../base/base.ts';
import { oneLine, opt, shown, UsageError, words } from '../util/errors.ts';
import { buildTrunkModel, type TrunkRunner, tfjsTrunkRunner } from './trunk.ts';

export type EngineChoice = 'auto' | 'onnx' | 'wasm';

/**
 * Creates the runner for a base's trunk at `cuts`: pixels (n × h × w × 3, 0..255) → activations. `pool` (default
 * true) as in buildTrunkModel; only Layers bases give unpooled (spatial) activations.
 */
export type RunnerFactory = (base: Base, cuts: string[], pool?: boolean) => Promise<TrunkRunner>;

export function parseEngine(text: string | undefined): EngineChoice {
  const e = (text ?? 'auto') as EngineChoice;
  if (!['auto', 'onnx', 'wasm'].includes(e))
    throw new UsageError('invalid-value', words`${opt('engine')} must be auto, onnx or wasm (got ${shown(text)})`);
  return e;
}

/**
 * The trunk of a graph or ONNX base on the one engine that reads its format; `choice` may only confirm it. Their
 * engines are imported when first needed, which keeps tfjs-converter and protobufjs off the start-up path.
 */
async function foreignRunner(base: ForeignBase, cuts: string[], choice: EngineChoice): Promise<TrunkRunner> {
  cuts.forEach(base.trunk.requireCut);
  const sizes = base.trunk.featureSizes(cuts);
  if (base.format === 'graph') {
    if (choice === 'onnx')
      throw new UsageError(
        'conflict',
        words`${base.source}: a TF.js graph-model base runs on TF.js only (${opt('engine')} auto or wasm, not onnx)`,
      );
    const { graphRunner } = await import('./graph-model.ts');
    return graphRunner(base.graph.model, base.graph.inputName, base.preprocessing, cuts, sizes);
  }
  if (choice === 'wasm')
    throw new UsageError(
      'conflict',
      words`${base.source}: an ONNX base runs on ONNX Runtime only (${opt('engine')} auto or onnx, not wasm)`,
    );
  const { onnxBaseRunner } = await import('./onnx-base.ts');
  return onnxBaseRunner(base.onnx, cuts, sizes);
}

/** The trunk on the current TF.js backend (graph and ONNX bases: on their own engine). */
export const tfjsRunner: RunnerFactory = async (base, cuts, pool) => {
  if (base.format !== 'layers') return foreignRunner(base, cuts, 'wasm');
  return tfjsTrunkRunner(buildTrunkModel(base, cuts, { pool }));
};

export async function runnerFor(
  choice: EngineChoice = 'auto',
  base?: Base,
  opts: { threads?: number } = {},
): Promise<{ runner: RunnerFactory; engine: string }> {
  // Graph and ONNX bases each run on the one engine that reads their format.
  if (base && base.format !== 'layers')
    return {
      runner: (b, cuts) => (b.format === 'layers' ? tfjsRunner(b, cuts) : foreignRunner(b, cuts, choice)),
      engine: base.format === 'onnx' ? 'onnx' : 'wasm',
    };
  if (choice === 'wasm') return { runner: tfjsRunner, engine: 'wasm' };
  let onnx: typeof import('./onnx.ts') | undefined;
  try {
    onnx = await import('./onnx.ts');
  } catch (e) {
    if (choice === 'onnx')
      throw new UsageError(
        'engine-unavailable',
        words`${opt('engine')} onnx: ONNX Runtime engine unavailable (${oneLine((e as Error).message)})`,
      );
  }
  if (onnx && (await onnx.onnxAvailable())) {
    const mod = onnx;
    return {
      runner: async (b, cuts, pool) =>
        b.format === 'layers'
          ? mod.onnxTrunkRunner(buildTrunkModel(b, cuts, { pool }), { threads: opts.threads })
          : foreignRunner(b, cuts, choice),
      engine: 'onnx',
    };
  }
  if (choice === 'onnx')
    throw new UsageError(
      'engine-unavailable',
      words`${opt('engine')} onnx: onnxruntime-node does not load on this machine`,
    );
  return { runner: tfjsRunner, engine: 'wasm' };
}
