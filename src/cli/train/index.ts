import { Command } from 'commander';
import { HEAD_DEFAULTS, type HeadKind, train } from '../../index.ts';
import { commandLine } from '../../report/data.ts';
import { DUPLICATE_MAX_PAIRS } from '../../train/duplicates.ts';
import { wilsonInterval } from '../../train/metrics.ts';
import { interruptSignal } from '../interrupt.ts';
import {
  fallbackLine,
  type GlobalOptions,
  jsonWarnings,
  printJson,
  printWarning,
  progressBars,
  renderWarning,
  say,
} from '../output.ts';
import { baseOptions, number, parseBaseOptions, printSkipped } from '../shared-options.ts';

interface TrainFlags extends GlobalOptions {
  base?: string;
  inputRange?: string;
  cut?: string;
  val?: string;
  valSplit?: string;
  head?: string;
  epochs?: string;
  lr?: string;
  batchSize?: string;
  seed?: string;
  patience?: string;
  out?: string;
  engine?: string;
  threads?: string;
  mode?: string;
  retrainLayers?: string;
  reinit?: boolean;
  tailLr?: string;
  tailEpochs?: string;
  fineTune?: boolean;
  unfreezeFrom?: string;
  fineTuneLr?: string;
  fineTuneEpochs?: string;
  trainBn?: boolean;
  augment?: string;
  report?: boolean;
  findLabelIssues?: boolean;
  findDuplicates?: boolean;
  duplicateThreshold?: string;
  tta?: string;
}

export function trainCommand(): Command {
  const cmd = new Command('train')
    .description('train a classifier on a folder of class folders (or a CSV of path,label) and export it')
    .argument('<data>', 'training data: folder with one sub-folder per class, or a CSV file')
    .option('--val <dir>', 'separate validation data (same layout)')
    .option('--val-split <fraction>', 'hold out this fraction of <data> for validation when --val is not given', '0.2')
    .option(
      '--mode <mode>',
      'feature (one cut, default), auto (measure candidate cuts, keep the best) or parameter (retrain the top layers with the head)',
      'feature',
    )
    .option(
      '--cut <layer>',
      "layer to cut the base at (see `graft inspect`); default: below the base's classifier. With --mode parameter: where the retrained layers start",
    )
    .option(
      '--retrain-layers <n>',
      '--mode parameter: retrain the base layers above the n-th candidate cut point below the head input (default 1; `graft inspect` lists each candidate with its n)',
    )
    .option(
      '--reinit',
      '--mode parameter: re-initialise the retrained layers instead of starting from their pretrained weights',
    )
    .option(
      '--tail-lr <rate>',
      '--mode parameter: learning rate for the retrained layers (default 1e-4, 1e-3 with --reinit)',
    )
    .option('--tail-epochs <n>', '--mode parameter: maximum epochs for the retrained layers (default 30)')
    .option('--fine-tune', 'then unfreeze more of the base and train again at a very low learning rate')
    .option(
      '--unfreeze-from <layer>',
      '--fine-tune: cut point to unfreeze from, or all (default: the top third of the candidate cuts)',
    )
    .option('--fine-tune-lr <rate>', '--fine-tune: learning rate (default 1e-5, Adam)')
    .option('--fine-tune-epochs <n>', '--fine-tune: maximum epochs (default 10)')
    .option(
      '--train-bn',
      'let BatchNorm layers that train use batch statistics and update their moving statistics (default: inference mode)',
    )
    .option(
      '--augment <views>',
      'extra views of each training image, cached and trained on: flip (default: horizontal mirror) or none',
    )
    .option(
      '--head <kind>',
      `logistic (L2 strength chosen by cross-validation on the training images), softmax (Adam, early stopping on the validation loss), mlp or knn; default ${HEAD_DEFAULTS.head} (--mode parameter and --fine-tune: softmax)`,
    )
    .option(
      '--tta <mode>',
      'test-time flip recorded for predict and evaluate: auto (measure on the training images whether averaging each image with its mirror helps; default), flip or none',
    )
    .option('--epochs <n>', 'maximum epochs (early stopping on validation loss)')
    .option('--lr <rate>', 'learning rate')
    .option('--batch-size <n>', 'mini-batch size')
    .option('--seed <n>', 'random seed (same seed, same data, same result)')
    .option('--patience <n>', 'epochs without validation-loss improvement before stopping')
    .option(
      '--engine <engine>',
      'what runs the trunk and trains tails: auto (ONNX Runtime, else TF.js WASM with the reason), onnx or wasm',
      'auto',
    )
    .option('--threads <n>', 'ONNX Runtime threads for extraction and training (default: every core)')
    .option('-o, --out <dir>', 'write the trained model folder here (with report.html)')
    .option('--no-report', 'do not write report.html and report.json into the model folder')
    .option(
      '--find-label-issues',
      'rank likely label errors of the training images (default: on up to 20,000 training images)',
    )
    .option('--no-find-label-issues', 'do not look for label errors')
    .option('--no-find-duplicates', 'do not look for near-duplicate images and leaks')
    .option(
      '--duplicate-threshold <cosine>',
      'similarity from which two images count as near duplicates (default 0.95)',
    )
    .option('--json', 'print one JSON object on the last line');
  baseOptions(cmd, { withBase: true });
  return cmd.action(async (data: string, f: TrainFlags) => {
    const result = await train({
      data,
      val: f.val,
      valSplit: number('valSplit', f.valSplit),
      base: f.base,
      ...parseBaseOptions(f),
      cut: f.cut,
      mode: f.mode as 'feature' | 'auto' | 'parameter',
      retrainLayers: number('retrainLayers', f.retrainLayers),
      reinit: f.reinit,
      tailLr: number('tailLr', f.tailLr),
      tailEpochs: number('tailEpochs', f.tailEpochs),
      fineTune: f.fineTune,
      unfreezeFrom: f.unfreezeFrom,
      fineTuneLr: number('fineTuneLr', f.fineTuneLr),
      fineTuneEpochs: number('fineTuneEpochs', f.fineTuneEpochs),
      trainBn: f.trainBn,
      augment: f.augment as 'flip' | 'none' | undefined,
      head: f.head as HeadKind | undefined,
      tta: f.tta as 'auto' | 'flip' | 'none' | undefined,
      epochs: number('epochs', f.epochs),
      lr: number('lr', f.lr),
      batchSize: number('batchSize', f.batchSize),
      seed: number('seed', f.seed),
      patience: number('patience', f.patience),
      engine: f.engine as 'auto' | 'onnx' | 'wasm',
      threads: number('threads', f.threads),
      out: f.out,
      report: f.report,
      findLabelIssues: f.findLabelIssues,
      findDuplicates: f.findDuplicates,
      duplicateThreshold: number('--duplicate-threshold', f.duplicateThreshold),
      command: commandLine(process.argv.slice(2)),
      onProgress: progressBars(f),
      signal: interruptSignal(),
      onWarning: printWarning,
    });
    if (result.baseFallback) say(f, `note: ${fallbackLine(result.baseFallback)}; using ${result.base}`);
    for (const note of result.parameter?.notes ?? []) say(f, `note: ${renderWarning(note)}`);
    if (result.baseRepaired)
      say(
        f,
        `note: ${result.base}: cached ${result.baseRepaired.join(', ')} failed the SHA-256 check; downloaded again`,
      );
    printSkipped(f, result.skipped);
    if (f.json) {
      // Per-image validation probabilities are in the report (mistakes); the line stays readable without them.
      const { valPredictions, warnings, ...rest } = result;
      return printJson({
        ...rest,
        ...(rest.parameter ? { parameter: { ...rest.parameter, notes: jsonWarnings(rest.parameter.notes) } } : {}),
        warnings: jsonWarnings(warnings),
        epochsRun: result.history.length,
      });
    }
    if (result.sweep) {
      say(f, `cut search (${result.sweepMethod}; score = held-out accuracy ± sd):`);
      say(
        f,
        `  ${'cut'.padEnd(28)}${'depth'.padStart(6)}${'features'.padStart(10)}${'score'.padStart(16)}${'seconds'.padStart(9)}`,
      );
      for (const r of result.sweep) {
        const score = `${r.score.toFixed(3)} ± ${r.sd.toFixed(3)}`;
        say(
          f,
          `${r.chosen ? '* ' : '  '}${r.cut.padEnd(28)}${String(r.depth).padStart(6)}${String(r.featureSize).padStart(10)}${score.padStart(16)}${r.seconds.toFixed(1).padStart(9)}`,
        );
      }
    }
    say(f, `base ${result.base} cut ${result.cut} head ${result.head} engine ${result.engine}`);
    const fit = result.headFit;
    if (fit?.search) {
      const row = fit.search.rows.find((r) => r.lambda === fit.lambda);
      say(
        f,
        `logistic head: L2 strength ${fit.lambda.toPrecision(2)} chosen by ${fit.search.folds}-fold cross-validation on the training images (held-out accuracy ${row?.accuracy.toFixed(3)}, log loss ${row?.logLoss.toFixed(3)})${fit.converged ? '' : '; the final fit stopped at its iteration limit'}`,
      );
    }
    const t = result.ttaCheck;
    if (t) {
      const arm = (a: { accuracy: number; logLoss: number }) =>
        `accuracy ${a.accuracy.toFixed(3)}, log loss ${a.logLoss.toFixed(3)}`;
      say(
        f,
        `test-time flip on the training images (${t.method}): ${arm(t.single)} alone, ${arm(t.flip)} averaged with the mirror: ${t.helps ? 'recorded for predict and evaluate' : 'not recorded'}`,
      );
    } else if (result.tta === 'flip') say(f, 'test-time flip recorded for predict and evaluate (--tta flip)');
    if (result.parameter) {
      const p = result.parameter;
      say(
        f,
        `head input ${p.top}${p.unfreezeFrom ? `, fine-tuned from ${p.unfreezeFrom}` : ''}${p.reinit ? ', tail re-initialised' : ''}${p.trainBn ? ', BatchNorm trained' : ''}`,
      );
      for (const s of p.stages) {
        const v = s.valAccuracy !== undefined ? ` val_acc ${s.valAccuracy.toFixed(3)}` : '';
        say(
          f,
          `  stage ${s.stage.padEnd(9)} lr ${s.lr} best epoch ${s.bestEpoch} of ${s.epochs}${v} (${s.seconds.toFixed(1)} s, ${s.engine})`,
        );
      }
    }
    const views = result.augment === 'flip' ? ' (each also mirrored: --augment flip)' : '';
    say(
      f,
      `classes ${result.classes.join(', ')}; ${result.trainImages} training${views} and ${result.valImages} validation images`,
    );
    say(f, `activation cache: ${result.cache.hits} hits, ${result.cache.misses} misses (one per image and view)`);
    const damaged = result.cache.damaged;
    if (damaged.length)
      say(
        f,
        `activation cache: ${damaged.length} damaged entr${damaged.length === 1 ? 'y' : 'ies'} deleted and recomputed (${damaged[0].file}: ${damaged[0].reason}${damaged.length > 1 ? ', …' : ''})`,
      );
    say(f, `train accuracy ${result.trainAccuracy.toFixed(3)} (kept epoch ${result.bestEpoch} of ${result.epochs})`);
    if (result.valAccuracy !== null) {
      const correct = Math.round(result.valAccuracy * result.valImages);
      const ci = wilsonInterval(correct, result.valImages);
      const used = result.selection?.usedValidation
        ? ' (also chose the stopping epoch: optimistic)'
        : ' (chose nothing)';
      say(
        f,
        `validation accuracy ${result.valAccuracy.toFixed(3)} (${correct}/${result.valImages}, 95% interval ${ci.low.toFixed(3)}-${ci.high.toFixed(3)})${used}`,
      );
    }
    const sel = result.selection;
    if (sel && !sel.usedValidation)
      say(
        f,
        `selection score ${sel.score.toFixed(3)} ± ${(sel.sd ?? 0).toFixed(3)} (${sel.method}; chose ${sel.chose.join(', ')})`,
      );
    if (result.labelIssues)
      say(
        f,
        `label issues: ${result.labelIssues.length} likely label error${result.labelIssues.length === 1 ? '' : 's'} among the training images`,
      );
    if (result.duplicates) {
      const leaks = result.duplicates.filter((d) => d.leak).length;
      say(
        f,
        `near duplicates: ${result.duplicates.length} pair${result.duplicates.length === 1 ? '' : 's'}${result.duplicates.length >= DUPLICATE_MAX_PAIRS ? ' (the most similar; there are more)' : ''}, ${leaks} between training and validation`,
      );
    }
    const s = result.seconds;
    say(
      f,
      `time ${s.total.toFixed(1)} s (extract ${s.extract.toFixed(1)}, train ${s.train.toFixed(1)} of which selection ${s.select.toFixed(1)}, find ${s.find.toFixed(1)}, export ${s.export.toFixed(1)}${s.report !== undefined ? `, report ${s.report.toFixed(1)}` : ''})`,
    );
    if (result.out) say(f, `model written to ${result.out}`);
    if (result.report) say(f, `report: ${result.report}`);
  });
}
