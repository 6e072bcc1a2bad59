/**
 * @file Checks of a training job. `preflight` runs before any work starts (option values and combinations, the output
 * and cache folders): a mistake found there costs nothing, found after the base is loaded and the images extracted it
 * costs minutes and reads as a crash. The data checks run as soon as their facts are known: the split before
 * extraction, duplicate images after hashing. Warnings are for data that would make the result misleading.
 */
import { realpathSync } from 'node:fs';
import path from 'node:path';
import { checkBaseOptions } from '../base/base.ts';
import type { DatasetListing, Sample } from '../dataset/dataset.ts';
import { checkModelOut } from '../export/model-files.ts';
import { HEAD_KINDS } from '../train/trainer.ts';
import { checkCanCreateDir, MakeDirError } from '../util/dirs.ts';
import { DataError, opt, shown, UsageError, type Warning, warning, words } from '../util/errors.ts';
import { checkInteger, checkOneOf, checkPositive, checkRange } from '../util/options.ts';
import { cacheRoot } from '../util/paths.ts';
import type { TrainOptions } from './train.ts';

/** Throws a UsageError for the first bad option value or combination; returns warnings about the rest. */
export function preflight(o: TrainOptions): Warning[] {
  checkValues(o);
  checkCombinations(o);
  if (o.out !== undefined) checkModelOut(o.out);
  const cacheDir = o.cacheDir ?? cacheRoot();
  try {
    checkCanCreateDir(cacheDir);
  } catch (e) {
    if (!(e instanceof MakeDirError)) throw e;
    throw new UsageError('cache-not-writable', words`${opt('cacheDir')} ${shown(cacheDir)}: ${e.message}`, e);
  }
  const warnings: Warning[] = [];
  if (o.out !== undefined && isInside(path.resolve(o.out), path.resolve(o.data)))
    warnings.push(
      warning(
        'out-inside-data',
        words`${opt('out')} ${shown(o.out)} is inside the data folder ${shown(o.data)}: graft skips model folders when it lists data, but other tools will read it as a class`,
        path.resolve(o.out),
      ),
    );
  return warnings;
}

function checkValues(o: TrainOptions): void {
  if (typeof o.data !== 'string' || o.data === '')
    throw new UsageError('missing', words`${opt('data')} must name a data folder or CSV file (got ${shown(o.data)})`);
  checkOneOf('mode', o.mode, ['feature', 'auto', 'parameter']);
  checkOneOf('head', o.head, HEAD_KINDS);
  checkOneOf('tta', o.tta, ['auto', 'flip', 'none']);
  checkOneOf('augment', o.augment, ['flip', 'none']);
  checkOneOf('engine', o.engine, ['auto', 'onnx', 'wasm']);
  if (o.val === undefined) checkRange('valSplit', o.valSplit, 0, 1);
  checkInteger('epochs', o.epochs);
  checkInteger('batchSize', o.batchSize);
  checkInteger('patience', o.patience);
  checkInteger('seed', o.seed, 0);
  checkPositive('lr', o.lr);
  checkInteger('retrainLayers', o.retrainLayers, 0);
  checkPositive('tailLr', o.tailLr);
  checkInteger('tailEpochs', o.tailEpochs);
  checkPositive('fineTuneLr', o.fineTuneLr);
  checkInteger('fineTuneEpochs', o.fineTuneEpochs);
  checkInteger('threads', o.threads);
  for (const [name, v] of [
    ['val', o.val],
    ['out', o.out],
    ['cut', o.cut],
    ['unfreezeFrom', o.unfreezeFrom],
  ] as const) {
    if (v !== undefined && (typeof v !== 'string' || v === ''))
      throw new UsageError('invalid-value', words`${opt(name)} must be a non-empty string (got ${shown(v)})`);
  }
  if (typeof o.base === 'string' && o.base === '')
    throw new UsageError('invalid-value', words`${opt('base')} must name a base (got '')`);
  checkBaseOptions(o);
}

/** Options that only mean something together with others. */
function checkCombinations(o: TrainOptions): void {
  const mode = o.mode ?? 'feature';
  const given = (v: unknown) => v !== undefined && v !== false;
  if (mode !== 'parameter') {
    for (const name of ['retrainLayers', 'reinit', 'tailLr', 'tailEpochs'] as const)
      if (given(o[name])) throw new UsageError('needs-option', words`${opt(name)} needs ${opt('mode')} parameter`);
  }
  if (!o.fineTune) {
    for (const name of ['unfreezeFrom', 'fineTuneLr', 'fineTuneEpochs', 'trainBn'] as const)
      if (given(o[name])) throw new UsageError('needs-option', words`${opt(name)} needs ${opt('fineTune')}`);
  }
  if (o.fineTune && mode === 'auto')
    throw new UsageError(
      'conflict',
      words`${opt('fineTune')} works with ${opt('mode')} feature or parameter, not auto`,
    );
  if ((mode === 'parameter' || o.fineTune) && o.head !== undefined && o.head !== 'softmax')
    throw new UsageError(
      'conflict',
      words`${opt('mode')} parameter and ${opt('fineTune')} train a softmax head (got ${opt('head')} ${o.head})`,
    );
  if (mode === 'parameter' && o.cut !== undefined && o.retrainLayers !== undefined)
    throw new UsageError('conflict', words`give ${opt('cut')} or ${opt('retrainLayers')}, not both`);
}

/**
 * Warnings from the listings, before extraction: validation images that are training images (the same files, by
 * path; `--val` given as the training folder is the common case).
 */
export function listingWarnings(train: DatasetListing, val: DatasetListing | undefined): Warning[] {
  if (!val) return [];
  const trainFiles = new Set(train.samples.map(realFile(train)));
  const shared = val.samples.map(realFile(val)).filter((f) => trainFiles.has(f)).length;
  if (shared === 0) return [];
  const all = shared === val.samples.length;
  return [
    warning(
      'val-is-train',
      all
        ? words`${opt('val')} is the training data: every validation image is a training image, so validation accuracy measures memory, not generalisation`
        : words`${shared} of the ${val.samples.length} images in ${opt('val')} are also training images: validation accuracy is inflated`,
    ),
  ];
}

/** Sample paths with the listing's root resolved through symbolic links, so a linked copy of a folder compares equal. */
function realFile(l: DatasetListing): (s: { file: string }) => string {
  let real: string;
  try {
    real = realpathSync(l.root);
  } catch {
    real = l.root;
  }
  const prefix = l.root + path.sep;
  return (s) => (s.file.startsWith(prefix) ? path.join(real, s.file.slice(prefix.length)) : s.file);
}

function isInside(child: string, parent: string): boolean {
  const rel = path.relative(parent, child);
  return rel !== '' && !rel.startsWith('..') && !path.isAbsolute(rel);
}

/**
 * Before extraction: every class needs at least one training image. Throws a DataError naming the classes that have
 * no files at all, or whose files all fall in the validation split (one-image classes, a large `valSplit`).
 */
export function checkSplit(
  source: string,
  listing: DatasetListing,
  train: Sample[],
  o: { valSplit?: number; val?: string },
): void {
  const listed = new Map<string, number>(listing.classes.map((c) => [c, 0]));
  for (const s of listing.samples) listed.set(s.label, (listed.get(s.label) ?? 0) + 1);
  const inTrain = new Map<string, number>();
  for (const s of train) inTrain.set(s.label, (inTrain.get(s.label) ?? 0) + 1);
  const empty = listing.classes.filter((c) => listed.get(c) === 0);
  if (empty.length)
    throw new DataError(
      'class-empty',
      source,
      `${classList(empty)} ${empty.length === 1 ? 'has' : 'have'} no files${listing.skipped.length ? ` (${listing.skipped.length} entries skipped)` : ''}; every class needs images`,
    );
  const allHeldOut = listing.classes.filter((c) => !inTrain.get(c));
  if (allHeldOut.length) {
    const one = allHeldOut.length === 1;
    const n = listed.get(allHeldOut[0]);
    throw new DataError(
      'class-only-in-validation',
      source,
      words`${classList(allHeldOut)} ${one ? `${n === 1 ? 'has its only image' : `has all ${n} of its images`}` : 'have all their images'} in the validation split (${opt('valSplit')} ${o.valSplit ?? 0.2} holds out files by a hash of their path); add images, lower ${opt('valSplit')} or give ${opt('val')}`,
    );
  }
}

function classList(classes: string[]): string {
  const shownList = classes
    .slice(0, 5)
    .map((c) => shown(c))
    .join(', ');
  const more = classes.length > 5 ? ` and ${classes.length - 5} more` : '';
  return classes.length === 1 ? `class ${shownList}` : `classes ${shownList}${more}`;
}

/**
 * After hashing: images whose bytes appear under two labels (the same photo in two class folders), and validation
 * images whose bytes are a training image's. `hashes` are parallel to each set's samples.
 */
export function duplicateWarnings(
  train: { samples: Sample[]; hashes: string[] },
  val: { samples: Sample[]; hashes: string[] } | undefined,
  skipValOverlap: boolean,
): Warning[] {
  const warnings: Warning[] = [];
  const first = new Map<string, Sample>();
  const clashes: [Sample, Sample][] = [];
  for (const set of val ? [train, val] : [train]) {
    set.samples.forEach((s, i) => {
      const prev = first.get(set.hashes[i]);
      if (!prev) first.set(set.hashes[i], s);
      else if (prev.label !== s.label && prev.file !== s.file) clashes.push([prev, s]);
    });
  }
  if (clashes.length) {
    const [a, b] = clashes[0];
    warnings.push(
      warning(
        'image-in-two-classes',
        words`${clashes.length === 1 ? 'one image sits' : `${clashes.length} images sit`} in two classes, e.g. ${a.file} (${shown(a.label)}) and ${b.file} (${shown(b.label)}) have the same bytes`,
        b.file,
      ),
    );
  }
  if (val && !skipValOverlap) {
    const trainHashes = new Set(train.hashes);
    const leaked = val.hashes.filter((h) => trainHashes.has(h)).length;
    if (leaked)
      warnings.push(
        warning(
          'val-image-in-train',
          words`${leaked} of the ${val.samples.length} validation images are byte-for-byte training images: validation accuracy is inflated`,
        ),
      );
  }
  return warnings;
}
