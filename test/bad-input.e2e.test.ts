/**
 * The bad-input suite (library): every odd file, folder, CSV, option value and model folder a user can point graft at
 * ends in one of three outcomes, each asserted here: used (and decoded right), skipped and listed with a reason, or
 * one named one-line error before any work, with no model folder written. Runs through the library API, many cases
 * per process; the CLI-only cases (exit codes, --json, colours) are in bad-input-cli.e2e.test.ts.
 *
 * Findings of issue 15 fixed here carry "(issue 15)" in their test names.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import {
  cpSync,
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import path from 'node:path';
import { before, describe, test } from 'node:test';
import { decodeImage, MAX_IMAGE_PIXELS } from '../src/dataset/decode.ts';
import { evaluateModel, listDataset, Predictor, splitByHash, type TrainOptions, train } from '../src/index.ts';
import { BaseError, DataError, type GraftError, hasUnprintable, UsageError, type Warning } from '../src/util/errors.ts';
import { tmpDir, writeColourDataset, writeTinyBase } from './helpers.ts';
import {
  animatedGif,
  bmp,
  gifBomb,
  halves,
  heicHeader,
  jpegBomb,
  noisy,
  pngBomb,
  SVG,
  seededBytes,
  solid,
} from './odd-inputs.ts';

let dir: string;
let base: string;
let cacheDir: string;

/** Fast training settings on the tiny base; each call gets its own out folder under `dir`. */
function opts(data: string, extra: Partial<TrainOptions> = {}): TrainOptions {
  return { data, base, cut: 'top_relu', engine: 'wasm', epochs: 3, augment: 'none', cacheDir, ...extra };
}

/** A run that must fail: one typed error of `type`, on one line, passing `check`; and no model folder written. */
async function failsWith<E extends GraftError>(
  o: TrainOptions,
  type: new (...a: never[]) => E,
  check: (e: E) => void,
): Promise<void> {
  const out = o.out ?? path.join(tmpDir('graft-bad-out-'), 'model');
  await assert.rejects(train({ ...o, out }), (e: unknown) => {
    assert.ok(e instanceof type, `expected ${type.name}, got ${e instanceof Error ? `${e.name}: ${e.message}` : e}`);
    assert.ok(!e.message.includes('\n'), `one line: ${e.message}`);
    check(e);
    return true;
  });
  if (!o.out) assert.equal(existsSync(out), false, 'no model folder for a failed run');
}

/** Same, and nothing was extracted: the error came before any image was read. */
async function failsEarly<E extends GraftError>(
  o: TrainOptions,
  type: new (...a: never[]) => E,
  check: (e: E) => void,
): Promise<void> {
  const phases: string[] = [];
  await failsWith({ ...o, onProgress: (p) => phases.push(p.phase) }, type, check);
  assert.ok(!phases.includes('extract'), 'detected before extraction');
}

before(async () => {
  dir = tmpDir('graft-bad-input-');
  base = await writeTinyBase(path.join(dir, 'base'));
  cacheDir = path.join(dir, 'cache');
});

// ---------------------------------------------------------------------------------------------------------------------
// One data folder holding every odd file at once: one training run, then one case per file.

type Outcome = { used: true } | { skipped: RegExp } | { ignored: true };
interface OddCase {
  /** Path relative to the data folder. */
  file: string;
  what: string;
  outcome: Outcome;
}

const oddCases: OddCase[] = [];
const odd = (file: string, what: string, outcome: Outcome) => oddCases.push({ file, what, outcome });

odd('cats/empty.jpg', 'empty JPEG', { skipped: /^empty file$/ });
odd('cats/random.jpg', 'random bytes named .jpg', { skipped: /^not a decodable image \(unrecognised format\)$/ });
odd('cats/random.png', 'random bytes named .png', { skipped: /^not a decodable image \(unrecognised format\)$/ });
odd('dogs/random.webp', 'random bytes named .webp', { skipped: /^not a decodable image \(unrecognised format\)$/ });
odd('cats/truncated.jpg', 'truncated JPEG', { skipped: /^truncated or corrupt image data$/ });
odd('dogs/truncated.png', 'truncated PNG', { skipped: /^truncated or corrupt image data$/ });
odd('dogs/truncated.webp', 'truncated WebP', { skipped: /^truncated or corrupt image data$/ });
odd('cats/notes.jpg', 'text named .jpg', { skipped: /^not a decodable image \(looks like a text file\)$/ });
odd('dogs/readme.txt', 'a text file', { skipped: /^not a decodable image \(looks like a text file\)$/ });
odd('cats/png-inside.jpg', 'PNG bytes named .jpg', { used: true });
odd('dogs/jpeg-inside.png', 'JPEG bytes named .png', { used: true });
odd('cats/still.gif', 'GIF', { used: true });
odd('dogs/animated.gif', 'animated GIF (first frame)', { used: true });
odd('cats/cmyk.jpg', 'CMYK JPEG', { used: true });
odd('dogs/deep.png', '16-bit PNG', { used: true });
odd('cats/grey.png', 'greyscale PNG', { used: true });
odd('dogs/palette.png', 'palette PNG', { used: true });
odd('cats/rgba.png', 'RGBA PNG', { used: true });
odd('dogs/rotated.jpg', 'EXIF-rotated JPEG', { used: true });
odd('cats/scan.tif', 'TIFF (decoded: sharp has it on every platform)', { used: true });
odd('dogs/photo.avif', 'AVIF (decoded: sharp has it on every platform)', { used: true });
odd('cats/paint.bmp', 'BMP (sharp has no BMP decoder)', { skipped: /^unsupported format \(BMP\)$/ });
odd('dogs/phone.heic', 'HEIC (no HEVC decoder in sharp)', { skipped: /^unsupported format \(HEIC\/HEIF\)$/ });
odd('cats/logo.svg', 'SVG (refused, not rasterised) (issue 15)', { skipped: /^unsupported format \(SVG\)$/ });
odd('dogs/tiny.png', '1x1 image', { used: true });
odd('cats/bomb.png', 'PNG declaring 20000x20000', { skipped: /^image too large \(20000x20000 pixels, above/ });
odd('dogs/bomb.jpg', 'JPEG declaring 20000x20000', { skipped: /^image too large \(20000x20000 pixels, above/ });
odd('cats/bomb.gif', 'GIF declaring 20000x20000', { skipped: /^image too large \(20000x20000 pixels, above/ });
odd('dogs/broken.jpg', 'broken symbolic link with an image name', { skipped: /^broken symbolic link$/ });
odd('cats/loop-a.jpg', 'file symbolic link loop (issue 15)', { skipped: /^symbolic link loop$/ });
odd('cats/loop-b.jpg', 'file symbolic link loop, other end (issue 15)', { skipped: /^symbolic link loop$/ });
odd('dogs/self.png', 'symbolic link to itself (issue 15)', { skipped: /^symbolic link loop$/ });
odd('dogs/pipe.jpg', 'a FIFO with an image name', { skipped: /^not a regular file$/ });
odd('cats/up', 'folder link back up to the data folder (issue 15)', { skipped: /a loop\); not followed$/ });
odd('cats/to-dogs', 'folder link into another class (issue 15)', {
  skipped: /^link to class 'dogs' from class 'cats'/,
});
odd('dogs/sub/back', 'folder link to its own class folder (a loop)', { skipped: /^folder already read/ });
odd('dogs/sub/nested.png', 'image in a nested folder (included)', { used: true });
odd('cats/folder.jpg/inside.png', 'image inside a folder named like an image', { used: true });
odd('cats/a cat with spaces.png', 'name with spaces', { used: true });
odd('dogs/café 犬 ü.png', 'Unicode name', { used: true });
odd(`cats/it's "quoted".png`, 'name with quotes', { used: true });
odd('dogs/-rf.png', 'name with a leading dash', { used: true });
odd('cats/.hidden.png', 'hidden image (a leading dot: ignored) (issue 15)', { ignored: true });
odd('dogs/.hidden-notes', 'hidden non-image (ignored, not listed) (issue 15)', { ignored: true });
odd('dogs/.#lock.png', 'editor lock file (a dangling hidden link: ignored) (issue 15)', { ignored: true });
odd('.gitignore', 'hidden file beside the class folders (ignored) (issue 15)', { ignored: true });
odd('Thumbs.db', 'Windows litter beside the class folders', { ignored: true });
odd('cats/.DS_Store', 'macOS litter', { ignored: true });
odd('dogs/Thumbs.db', 'Windows litter', { ignored: true });
odd('cats/THUMBS.DB', 'Windows litter, upper case', { ignored: true });
odd('cats/._a cat with spaces.png', 'AppleDouble fork', { ignored: true });
odd('dogs/._deep.png', 'AppleDouble fork holding PNG bytes (ignored, not read)', { ignored: true });
odd('dogs/desktop.ini', 'Windows folder settings', { ignored: true });
odd('cats/.ipynb_checkpoints/copy.png', 'hidden folder (tool state)', { ignored: true });
odd('__MACOSX/cats/x.png', 'macOS archive debris', { ignored: true });
odd('dogs/__MACOSX/._x.png', 'macOS archive debris inside a class', { ignored: true });
odd('stray.png', 'an image outside any class folder', { skipped: /^not inside a class folder$/ });
odd('old-model', "an earlier run's model folder inside the data (issue 15)", { skipped: /^a graft model folder/ });
odd('kitties', 'a link to a class folder (not a second class)', { skipped: /^the same folder as class 'cats'/ });

let odds: { data: string; listed: Set<string>; skipped: Map<string, string>; trainImages: number; out: string };

describe('one data folder with every odd file', () => {
  before(async () => {
    const data = await writeColourDataset(path.join(dir, 'odd'), ['cats', 'dogs'], 6, 24);
    const w = async (rel: string, bytes: Buffer | string | Promise<Buffer>) => {
      const p = path.join(data, rel);
      mkdirSync(path.dirname(p), { recursive: true });
      writeFileSync(p, await bytes);
    };
    const jpeg = await noisy().jpeg({ quality: 90 }).toBuffer();
    const png = await noisy().png().toBuffer();
    const webp = await noisy().webp({ quality: 90 }).toBuffer();
    await w('cats/empty.jpg', '');
    await w('cats/random.jpg', seededBytes(3000, 1));
    await w('cats/random.png', seededBytes(3000, 2));
    await w('dogs/random.webp', seededBytes(3000, 3));
    await w('cats/truncated.jpg', jpeg.subarray(0, jpeg.length >> 1));
    await w('dogs/truncated.png', png.subarray(0, png.length >> 1));
    await w('dogs/truncated.webp', webp.subarray(0, webp.length >> 1));
    await w('cats/notes.jpg', 'this is a text file, not a JPEG\n');
    await w('dogs/readme.txt', 'read me\n');
    await w('cats/png-inside.jpg', solid(20, 20, [220, 40, 40]).png().toBuffer());
    await w('dogs/jpeg-inside.png', solid(20, 20, [40, 200, 60]).jpeg().toBuffer());
    await w('cats/still.gif', solid(20, 20, [220, 40, 40]).gif().toBuffer());
    await w('dogs/animated.gif', animatedGif());
    await w('cats/cmyk.jpg', solid(20, 20, [220, 40, 40]).toColourspace('cmyk').jpeg().toBuffer());
    await w('dogs/deep.png', solid(20, 20, [40, 200, 60]).png({ force: true }).toColourspace('rgb16').toBuffer());
    await w('cats/grey.png', solid(20, 20, [200, 200, 200]).toColourspace('b-w').png().toBuffer());
    await w('dogs/palette.png', solid(20, 20, [40, 200, 60]).png({ palette: true }).toBuffer());
    await w('cats/rgba.png', solid(20, 20, [220, 40, 40], 0.5).png().toBuffer());
    await w(
      'dogs/rotated.jpg',
      (await halves(40, 20, [255, 0, 0], [0, 0, 255]))
        .jpeg({ quality: 95 })
        .withMetadata({ orientation: 6 })
        .toBuffer(),
    );
    await w('cats/scan.tif', solid(20, 20, [220, 40, 40]).tiff().toBuffer());
    await w('dogs/photo.avif', solid(20, 20, [40, 200, 60]).avif().toBuffer());
    await w('cats/paint.bmp', bmp());
    await w('dogs/phone.heic', heicHeader());
    await w('cats/logo.svg', SVG);
    await w('dogs/tiny.png', solid(1, 1, [40, 200, 60]).png().toBuffer());
    await w('cats/bomb.png', pngBomb());
    await w('dogs/bomb.jpg', jpegBomb());
    await w('cats/bomb.gif', gifBomb());
    symlinkSync('does-not-exist.jpg', path.join(data, 'dogs/broken.jpg'));
    symlinkSync('loop-b.jpg', path.join(data, 'cats/loop-a.jpg'));
    symlinkSync('loop-a.jpg', path.join(data, 'cats/loop-b.jpg'));
    symlinkSync('self.png', path.join(data, 'dogs/self.png'));
    const fifo = spawnSync('mkfifo', [path.join(data, 'dogs/pipe.jpg')]);
    assert.equal(fifo.status, 0, 'mkfifo');
    symlinkSync('..', path.join(data, 'cats/up'));
    symlinkSync('../dogs', path.join(data, 'cats/to-dogs'));
    await w('dogs/sub/nested.png', solid(20, 20, [40, 200, 60]).png().toBuffer());
    symlinkSync('..', path.join(data, 'dogs/sub/back'));
    await w('cats/folder.jpg/inside.png', solid(20, 20, [220, 40, 40]).png().toBuffer());
    const image = solid(20, 20, [220, 40, 40]).png().toBuffer();
    for (const name of ['cats/a cat with spaces.png', `cats/it's "quoted".png`, 'cats/.hidden.png', 'dogs/._deep.png'])
      await w(name, image);
    for (const name of ['dogs/café 犬 ü.png', 'dogs/-rf.png'])
      await w(name, solid(20, 20, [40, 200, 60]).png().toBuffer());
    await w('dogs/.hidden-notes', 'notes\n');
    await w('cats/.DS_Store', seededBytes(100, 4));
    await w('dogs/Thumbs.db', seededBytes(100, 5));
    await w('cats/THUMBS.DB', seededBytes(100, 8));
    await w('Thumbs.db', seededBytes(100, 9));
    await w('.gitignore', '*.tmp\n');
    await w('dogs/__MACOSX/._x.png', seededBytes(100, 10));
    // Emacs marks a file being edited with a dangling symbolic link '.#name'.
    symlinkSync('user@host.1234:1700000000', path.join(data, 'dogs/.#lock.png'));
    await w('cats/._a cat with spaces.png', seededBytes(100, 6));
    await w('dogs/desktop.ini', '[.ShellClassInfo]\n');
    await w('cats/.ipynb_checkpoints/copy.png', image);
    await w('__MACOSX/cats/x.png', seededBytes(100, 7));
    await w('stray.png', image);
    // An earlier run's --out inside the data folder.
    const old = await train({ ...opts(await writeColourDataset(path.join(dir, 'small'), ['a', 'b'], 3, 24)) });
    assert.ok(old);
    cpSync(path.join(dir, 'small'), path.join(dir, 'small-copy'), { recursive: true });
    await train({ ...opts(path.join(dir, 'small-copy')), out: path.join(data, 'old-model') });
    symlinkSync('cats', path.join(data, 'kitties'));

    const listing = await listDataset(data);
    const out = path.join(dir, 'odd-model');
    const r = await train({ ...opts(data), valSplit: 0, out });
    odds = {
      data,
      listed: new Set(listing.samples.map((s) => s.file)),
      skipped: new Map(r.skipped.map((s) => [s.file, s.reason])),
      trainImages: r.trainImages,
      out,
    };
  });

  for (const c of oddCases) {
    test(`${c.what}: ${'used' in c.outcome ? 'used' : 'skipped' in c.outcome ? 'skipped and listed' : 'ignored'}`, () => {
      const file = path.join(odds.data, c.file);
      if ('used' in c.outcome) {
        assert.ok(odds.listed.has(file), `${c.file} is a sample`);
        assert.equal(odds.skipped.get(file), undefined, `${c.file} was skipped: ${odds.skipped.get(file)}`);
      } else if ('skipped' in c.outcome) {
        const reason = odds.skipped.get(file);
        assert.ok(reason !== undefined, `${c.file} is listed as skipped`);
        assert.match(reason, c.outcome.skipped);
        assert.ok(!reason.includes('\n'));
      } else {
        assert.ok(!odds.listed.has(file) && !odds.skipped.has(file), `${c.file} is neither a sample nor listed`);
      }
    });
  }

  test('the run trained on exactly the usable files and wrote its model', () => {
    const used = [...odds.listed].filter((f) => !odds.skipped.has(f));
    assert.equal(odds.trainImages, used.length);
    assert.ok(existsSync(path.join(odds.out, 'model.json')));
  });

  test('no silent drops: every file on disk is used, listed as skipped, litter, or inside a skipped folder', () => {
    const litter = /^(\..*|Thumbs\.db|desktop\.ini|__MACOSX)$/i;
    const unaccounted: string[] = [];
    const walk = (d: string) => {
      for (const name of readdirSync(d)) {
        const p = path.join(d, name);
        if (odds.skipped.has(p) || litter.test(name)) continue;
        const st = lstatSync(p);
        if (st.isDirectory()) walk(p);
        else if (!odds.listed.has(p)) unaccounted.push(p);
      }
    };
    walk(odds.data);
    assert.deepEqual(unaccounted, []);
  });

  test('a folder link into another class is not read under the wrong label (issue 15)', () => {
    const wrong = [...odds.listed].filter(
      (f) => f.includes(`${path.sep}to-dogs${path.sep}`) || f.includes(`${path.sep}up${path.sep}`),
    );
    assert.deepEqual(wrong, []);
  });

  test('EXIF orientation is respected, checked on pixels', async () => {
    const bytes = readFileSync(path.join(odds.data, 'dogs/rotated.jpg'));
    const px = await decodeImage(bytes, 'rotated.jpg', { size: [40, 20], resize: 'fill' });
    const at = (y: number, x: number) => [...px.subarray((y * 20 + x) * 3, (y * 20 + x) * 3 + 3)];
    const near = (a: number[], b: number[]) => a.every((v, i) => Math.abs(v - b[i]) < 50);
    // Stored red-left/blue-right, 40 wide; orientation 6 turns it 90° clockwise: red on top, blue below, 20 wide.
    assert.ok(near(at(5, 2), [255, 0, 0]) && near(at(5, 17), [255, 0, 0]), `top is red: ${at(5, 2)} ${at(5, 17)}`);
    assert.ok(near(at(34, 10), [0, 0, 255]), `bottom is blue: ${at(34, 10)}`);
  });

  test('an animated GIF gives its first frame', async () => {
    const px = await decodeImage(readFileSync(path.join(odds.data, 'dogs/animated.gif')), 'a.gif', {
      size: [8, 8],
      resize: 'fill',
    });
    assert.deepEqual([...px.subarray(0, 3)], [255, 0, 0]);
  });

  test('a decompression bomb is refused from its header: fast and without memory', async () => {
    const bomb = pngBomb(20000);
    assert.ok(20000 * 20000 > MAX_IMAGE_PIXELS);
    const rss = process.memoryUsage().rss;
    const t = performance.now();
    await assert.rejects(decodeImage(bomb, 'bomb.png', { size: [224, 224], resize: 'cover' }), /image too large/);
    const ms = performance.now() - t;
    // Decoding 400 megapixels would take seconds and over a gigabyte; refusing the header takes milliseconds. The
    // bound is loose so a loaded machine cannot fail it, and still far below what decoding would cost.
    assert.ok(ms < 2000, `refused in ${ms.toFixed(0)} ms`);
    assert.ok(process.memoryUsage().rss - rss < 200e6, 'no large allocation');
  });
});

// ---------------------------------------------------------------------------------------------------------------------
// Data sets that cannot train: one named error, before extraction where the facts are known before it.

describe('data sets that cannot train', () => {
  test('an empty class folder is named before extraction', async () => {
    const data = await writeColourDataset(path.join(dir, 'empty-class'), ['cats', 'dogs'], 3, 16);
    mkdirSync(path.join(data, 'birds'));
    await failsEarly(opts(data), DataError, (e) => {
      assert.equal(e.code, 'class-empty');
      assert.match(e.message, /class 'birds' has no files/);
    });
  });

  test('one class only', async () => {
    const data = await writeColourDataset(path.join(dir, 'one-class'), ['cats'], 3, 16);
    await failsEarly(opts(data), DataError, (e) => {
      assert.equal(e.code, 'too-few-classes');
      assert.ok(e.message.startsWith(data));
    });
  });

  test('an empty data folder', async () => {
    const data = path.join(dir, 'empty-data');
    mkdirSync(data);
    await failsEarly(opts(data), DataError, (e) => assert.equal(e.code, 'too-few-classes'));
  });

  test('a data folder that does not exist', async () => {
    await failsEarly(opts(path.join(dir, 'nope')), DataError, (e) => assert.equal(e.code, 'not-found'));
  });

  test('a data path that is a file, not a folder or CSV', async () => {
    const f = path.join(dir, 'data.txt');
    writeFileSync(f, 'x');
    await failsEarly(opts(f), DataError, (e) => assert.equal(e.code, 'not-a-data-set'));
  });

  test('a class whose only image falls in the validation split is named, before extraction (issue 15)', async () => {
    const data = await writeColourDataset(path.join(dir, 'held-out'), ['cats', 'dogs'], 4, 16);
    // Find a one-image class name whose only file the hash split holds out.
    let name = '';
    for (let k = 0; !name; k++) {
      const cand = `birds${k}`;
      const l = {
        root: data,
        classes: [cand],
        samples: [{ file: path.join(data, cand, 'x.png'), label: cand }],
        skipped: [],
      };
      if (splitByHash(l, 0.2).val.length === 1) name = cand;
    }
    mkdirSync(path.join(data, name));
    writeFileSync(path.join(data, name, 'x.png'), await solid(16, 16, [1, 2, 3]).png().toBuffer());
    await failsEarly(opts(data), DataError, (e) => {
      assert.equal(e.code, 'class-only-in-validation');
      assert.match(e.message, new RegExp(`class '${name}' has its only image in the validation split`));
      assert.match(e.message, /lower valSplit or give val$/);
    });
  });

  test('--val-split 0.999 holds out every image of every class: named, not "no usable images" (issue 15)', async () => {
    const data = await writeColourDataset(path.join(dir, 'split-999'), ['cats', 'dogs'], 2, 16);
    await failsEarly({ ...opts(data), valSplit: 0.999 }, DataError, (e) => {
      assert.equal(e.code, 'class-only-in-validation');
      assert.doesNotMatch(e.message, /usable/);
    });
  });

  test('300 classes of two images: the classes the split empties are named before extraction (issue 15)', async () => {
    const data = path.join(dir, 'classes-300');
    const png = await solid(8, 8, [9, 9, 9]).png().toBuffer();
    for (let c = 0; c < 300; c++) {
      mkdirSync(path.join(data, `c${c}`), { recursive: true });
      for (const i of [0, 1]) writeFileSync(path.join(data, `c${c}`, `${i}.png`), png);
    }
    await failsEarly(opts(data), DataError, (e) => {
      assert.equal(e.code, 'class-only-in-validation');
      assert.match(e.message, /^.*classes 'c\d+', .* and \d+ more have all their images in the validation split/);
    });
  });

  test('300 classes train without a split', async () => {
    const data = path.join(dir, 'classes-300');
    const r = await train({ ...opts(data), valSplit: 0, epochs: 1 });
    assert.equal(r.classes.length, 300);
    assert.equal(r.trainImages, 600);
  });

  test('a class of one image trains when its image is a training image', async () => {
    const data = await writeColourDataset(path.join(dir, 'one-image'), ['cats', 'dogs'], 4, 16);
    mkdirSync(path.join(data, 'owl'));
    writeFileSync(path.join(data, 'owl', 'x.png'), await solid(16, 16, [1, 2, 3]).png().toBuffer());
    const r = await train({ ...opts(data), valSplit: 0 });
    assert.deepEqual(r.classes, ['cats', 'dogs', 'owl']);
  });

  test('a class whose every file is unusable is named with an example reason', async () => {
    const data = await writeColourDataset(path.join(dir, 'unusable'), ['cats', 'dogs'], 3, 16);
    for (const f of readdirSync(path.join(data, 'dogs'))) writeFileSync(path.join(data, 'dogs', f), 'text');
    await failsWith({ ...opts(data), valSplit: 0 }, DataError, (e) => {
      assert.equal(e.code, 'class-unusable');
      assert.match(e.message, /class 'dogs' has no usable images: .*looks like a text file/);
    });
  });
});

// ---------------------------------------------------------------------------------------------------------------------
// CSV data sets.

describe('CSV data sets', () => {
  let imgs: string;
  before(async () => {
    imgs = await writeColourDataset(path.join(dir, 'csv-images'), ['red', 'green'], 3, 16);
  });
  const row = (label: string, i: number) => `${label}/${label}-${i}.png,${label}`;

  const variants: [string, () => string, (l: Awaited<ReturnType<typeof listDataset>>) => void][] = [
    [
      'with a header',
      () => `path,label\n${row('red', 0)}\n${row('green', 0)}\n`,
      (l) => assert.equal(l.samples.length, 2),
    ],
    ['without a header', () => `${row('red', 0)}\n${row('green', 0)}\n`, (l) => assert.equal(l.samples.length, 2)],
    [
      'with a BOM',
      () => `\uFEFFpath,label\n${row('red', 0)}\n${row('green', 0)}\n`,
      (l) => assert.deepEqual(l.classes, ['green', 'red']),
    ],
    [
      'with CRLF line ends',
      () => `path,label\r\n${row('red', 0)}\r\n${row('green', 0)}\r\n`,
      (l) => assert.equal(l.samples.length, 2),
    ],
    [
      'with quoted commas and quotes in paths',
      () => `"red/red-0.png",red\n"green/a, ""b"".png",green\n${row('green', 1)}\n`,
      (l) => assert.ok(l.samples.some((s) => s.file.endsWith('a, "b".png'))),
    ],
    [
      'with missing columns (skipped row)',
      () => `${row('red', 0)}\nred/red-1.png\n${row('green', 0)}\n`,
      (l) => assert.match(l.skipped[0].reason, /malformed row on line 2 \(expected 2 non-empty fields/),
    ],
    [
      'with missing files (skipped)',
      () => `${row('red', 0)}\nred/gone.png,red\n${row('green', 0)}\n`,
      (l) => assert.equal(l.skipped.find((s) => s.file.endsWith('gone.png'))?.reason, 'file does not exist'),
    ],
    [
      'with absolute paths',
      () => `${path.join(imgs, 'red', 'red-0.png')},red\n${path.join(imgs, 'green', 'green-0.png')},green\n`,
      (l) => assert.equal(l.samples.length, 2),
    ],
    [
      'with relative paths that climb',
      () => `../csv-images/red/red-0.png,red\n../csv-images/green/green-0.png,green\n`,
      (l) => assert.equal(l.samples.length, 2),
    ],
    [
      'with labels with spaces',
      () => `${row('red', 0).replace(/,red$/, ',big red')}\n${row('green', 0)}\n`,
      (l) => assert.deepEqual(l.classes, ['big red', 'green']),
    ],
    [
      'with an unterminated quote (skipped row)',
      () => `${row('red', 0)}\n"red/red-1.png,red\n${row('green', 0)}\n`,
      (l) => assert.match(l.skipped[0].reason, /unterminated or misplaced quote/),
    ],
    [
      'with one file under two labels (second row skipped)',
      () => `${row('red', 0)}\nred/red-0.png,green\n${row('green', 0)}\n`,
      (l) => assert.match(l.skipped[0].reason, /already listed on line 1 with label 'red'/),
    ],
  ];
  for (const [name, text, check] of variants) {
    test(`CSV ${name}`, async () => {
      const csvDir = name.includes('climb') ? path.join(dir, 'csv-elsewhere') : imgs;
      mkdirSync(csvDir, { recursive: true });
      const csv = path.join(csvDir, `${name.replace(/\W+/g, '-')}.csv`);
      if (name.includes('quoted'))
        writeFileSync(path.join(imgs, 'green', 'a, "b".png'), readFileSync(path.join(imgs, 'green', 'green-2.png')));
      writeFileSync(csv, text());
      const l = await listDataset(csv);
      check(l);
    });
  }

  test('a CSV data set trains, its skipped rows listed', async () => {
    const csv = path.join(imgs, 'train.csv');
    writeFileSync(
      csv,
      `path,label\n${[0, 1, 2].flatMap((i) => [row('red', i), row('green', i)]).join('\n')}\nred/gone.png,red\n`,
    );
    const r = await train({ ...opts(csv), valSplit: 0 });
    assert.equal(r.trainImages, 6);
    assert.deepEqual(
      r.skipped.map((s) => path.basename(s.file)),
      ['gone.png'],
    );
  });

  test('an empty CSV is a named error', async () => {
    const csv = path.join(imgs, 'empty.csv');
    writeFileSync(csv, '');
    await failsEarly(opts(csv), DataError, (e) => assert.equal(e.code, 'too-few-classes'));
  });

  test('a CSV that does not exist is a named error', async () => {
    await failsEarly(opts(path.join(imgs, 'missing.csv')), DataError, (e) => {
      assert.equal(e.code, 'not-found');
      assert.match(e.message, /CSV file does not exist/);
    });
  });
});

// ---------------------------------------------------------------------------------------------------------------------
// Option values: a UsageError naming the option, before the base is loaded (the base path does not exist, so any
// later check would fail with a BaseError instead).

describe('bad option values are named before any work', () => {
  let data: string;
  before(async () => {
    data = await writeColourDataset(path.join(dir, 'opts'), ['cats', 'dogs'], 3, 16);
  });
  const noBase = () => path.join(dir, 'no-such-base', 'model.json');
  const cases: [string, Partial<TrainOptions>, string, RegExp][] = [
    ['valSplit 1', { valSplit: 1 }, 'valSplit', /valSplit must be a number in \[0, 1\) \(got 1\)/],
    ['valSplit -0.1', { valSplit: -0.1 }, 'valSplit', /\(got -0.1\)/],
    ['valSplit NaN', { valSplit: Number.NaN }, 'valSplit', /\(got NaN\)/],
    ['epochs 0 (issue 15)', { epochs: 0 }, 'epochs', /epochs must be a positive integer \(got 0\)/],
    ['epochs 1.5', { epochs: 1.5 }, 'epochs', /positive integer/],
    ['lr 0', { lr: 0 }, 'lr', /lr must be a positive number/],
    ['lr -1', { lr: -1 }, 'lr', /positive number/],
    ['batchSize 0', { batchSize: 0 }, 'batchSize', /batchSize must be a positive integer/],
    ['patience 0', { patience: 0 }, 'patience', /patience must be a positive integer/],
    ['seed -1', { seed: -1 }, 'seed', /non-negative integer/],
    ['mode bogus', { mode: 'bogus' as never }, 'mode', /mode must be feature, auto or parameter \(got 'bogus'\)/],
    ['head bogus', { head: 'bogus' as never }, 'head', /head must be logistic, softmax, mlp or knn/],
    ['augment bogus', { augment: 'rotate' as never }, 'augment', /augment must be flip or none/],
    ['engine bogus', { engine: 'gpu' as never }, 'engine', /engine must be auto, onnx or wasm/],
    ['crop 0', { crop: 0 }, 'crop', /crop must be a fraction in \(0, 1\]/],
    ['crop 2', { crop: 2 }, 'crop', /\(got 2\)/],
    ['resize bogus', { resize: 'squash' as never }, 'resize', /resize must be cover or fill/],
    ['inputRange reversed', { inputRange: [1, -1] }, 'inputRange', /min < max/],
    [
      'retrainLayers without parameter mode',
      { retrainLayers: 2 },
      'retrainLayers',
      /retrainLayers needs mode parameter/,
    ],
    ['fineTuneLr without fineTune', { fineTuneLr: 1e-5 }, 'fineTuneLr', /fineTuneLr needs fineTune/],
    [
      'cut and retrainLayers together',
      { mode: 'parameter', cut: 'top_relu', retrainLayers: 1 },
      'cut',
      /give cut or retrainLayers, not both/,
    ],
    [
      'fineTune with mode auto',
      { mode: 'auto', fineTune: true },
      'fineTune',
      /fineTune works with mode feature or parameter/,
    ],
  ];
  for (const [name, extra, option, message] of cases) {
    test(`${name}: UsageError naming ${option}`, async () => {
      await failsEarly({ ...opts(data), ...extra, base: noBase() }, UsageError, (e) => {
        assert.equal(e.option, option);
        assert.match(e.message, message);
        assert.doesNotMatch(e.message, /--/, 'the library speaks of options, not flags');
      });
    });
  }
});

describe('the output and cache folders are checked before any work (issue 15)', () => {
  let data: string;
  before(async () => {
    data = await writeColourDataset(path.join(dir, 'outs'), ['cats', 'dogs'], 3, 16);
  });
  const noBase = () => path.join(dir, 'no-such-base', 'model.json');

  test('out is an existing file', async () => {
    const f = path.join(dir, 'a-file');
    writeFileSync(f, 'keep me');
    await failsEarly({ ...opts(data), base: noBase(), out: f }, UsageError, (e) => {
      assert.equal(e.code, 'out-is-file');
      assert.equal(e.option, 'out');
    });
    assert.equal(readFileSync(f, 'utf8'), 'keep me');
  });

  test('out under a file', async () => {
    const f = path.join(dir, 'another-file');
    writeFileSync(f, 'x');
    await failsEarly({ ...opts(data), base: noBase(), out: path.join(f, 'model') }, UsageError, (e) => {
      assert.equal(e.code, 'out-not-writable');
      assert.match(e.message, /another-file is a file, not a folder/);
    });
  });

  test('out under /proc fails at once instead of spinning', async () => {
    await failsEarly({ ...opts(data), base: noBase(), out: '/proc/graft-test/model' }, UsageError, (e) => {
      assert.equal(e.code, 'out-not-writable');
      assert.match(e.message, /cannot create \/proc\/graft-test/);
    });
  });

  test('out is a folder holding something other than a model', async () => {
    const o = path.join(dir, 'precious');
    mkdirSync(o);
    writeFileSync(path.join(o, 'thesis.tex'), 'x');
    await failsEarly({ ...opts(data), base: noBase(), out: o }, UsageError, (e) => {
      assert.equal(e.code, 'out-not-model-folder');
    });
    assert.ok(existsSync(path.join(o, 'thesis.tex')));
  });

  test('the cache folder under /proc fails at once instead of spinning', async () => {
    await failsEarly({ ...opts(data), base: noBase(), cacheDir: '/proc/graft-test/cache' }, UsageError, (e) => {
      assert.equal(e.code, 'cache-not-writable');
      assert.equal(e.option, 'cacheDir');
    });
  });

  test('the cache folder is a file', async () => {
    const f = path.join(dir, 'cache-file');
    writeFileSync(f, 'x');
    await failsEarly({ ...opts(data), base: noBase(), cacheDir: f }, UsageError, (e) => {
      assert.equal(e.code, 'cache-not-writable');
    });
  });
});

// ---------------------------------------------------------------------------------------------------------------------
// Bases that cannot load: a BaseError naming the base, before extraction, never raw bytes in the message.

describe('bad bases', () => {
  let data: string;
  before(async () => {
    data = await writeColourDataset(path.join(dir, 'bases'), ['cats', 'dogs'], 3, 16);
  });
  const printable = (m: string) => assert.equal(hasUnprintable(m), false, `no raw bytes: ${m}`);

  test('an unknown base name', async () => {
    await failsEarly({ ...opts(data), base: 'no-such-base' }, BaseError, (e) => assert.equal(e.code, 'unknown-base'));
  });

  for (const ext of ['json', 'onnx', 'bin']) {
    test(`random bytes as a base (.${ext}) are not echoed (issue 15)`, async () => {
      const f = path.join(dir, `random-base.${ext}`);
      writeFileSync(f, seededBytes(4000, 11));
      await failsEarly({ ...opts(data), base: f }, BaseError, (e) => {
        assert.ok(e.message.startsWith(f));
        printable(e.message);
        assert.ok(e.message.length < f.length + 120, e.message);
      });
    });
  }

  test('an unknown cut is named before extraction', async () => {
    await failsEarly({ ...opts(data), cut: 'no_such_layer' }, UsageError, (e) => {
      assert.equal(e.code, 'unknown-layer');
      assert.equal(e.option, 'cut');
      assert.match(e.message, /no_such_layer/);
    });
  });

  test('a model.json whose weights file is truncated names the file', async () => {
    const b = path.join(dir, 'truncated-base');
    cpSync(path.dirname(base), b, { recursive: true });
    const w = path.join(b, 'weights.bin');
    writeFileSync(w, readFileSync(w).subarray(0, 100));
    await failsEarly({ ...opts(data), base: path.join(b, 'model.json') }, BaseError, (e) => {
      assert.match(e.message, /weights\.bin/);
    });
  });
});

// ---------------------------------------------------------------------------------------------------------------------
// Warnings: the run goes on, and says what makes its result misleading.

describe('warnings (issue 15)', () => {
  let data: string;
  before(async () => {
    data = await writeColourDataset(path.join(dir, 'warn'), ['cats', 'dogs'], 4, 16);
  });
  const codes = (ws: Warning[]) => ws.map((w) => w.code);

  test('val is the training data', async () => {
    const seen: Warning[] = [];
    const r = await train({ ...opts(data), val: data, onWarning: (w) => seen.push(w) });
    assert.deepEqual(codes(r.warnings), ['val-is-train']);
    assert.deepEqual(codes(seen), ['val-is-train']);
    assert.match(r.warnings[0].message, /val is the training data/);
  });

  test('val is the training data through a symbolic link', async () => {
    const link = path.join(dir, 'warn-link');
    symlinkSync(data, link);
    const r = await train({ ...opts(data), val: link });
    assert.deepEqual(codes(r.warnings), ['val-is-train']);
  });

  test('one image in two classes', async () => {
    const d = await writeColourDataset(path.join(dir, 'twice'), ['cats', 'dogs'], 4, 16);
    cpSync(path.join(d, 'cats', 'cats-0.png'), path.join(d, 'dogs', 'also-a-dog.png'));
    const r = await train({ ...opts(d), valSplit: 0 });
    assert.deepEqual(codes(r.warnings), ['image-in-two-classes']);
    assert.match(r.warnings[0].message, /cats-0\.png \('cats'\) and .*also-a-dog\.png \('dogs'\) have the same bytes/);
  });

  test('out inside the data folder; the next run skips the model folder', async () => {
    const d = await writeColourDataset(path.join(dir, 'inside'), ['cats', 'dogs'], 4, 16);
    const out = path.join(d, 'model');
    const r = await train({ ...opts(d), out });
    assert.deepEqual(codes(r.warnings), ['out-inside-data']);
    const again = await train({ ...opts(d), out });
    assert.deepEqual(again.classes, ['cats', 'dogs']);
    assert.ok(again.skipped.some((s) => s.file === out && /graft model folder/.test(s.reason)));
  });

  test('val with a class unknown to training: its files are skipped and listed', async () => {
    const v = await writeColourDataset(path.join(dir, 'val-extra'), ['cats', 'dogs', 'birds'], 2, 16);
    const r = await train({ ...opts(data), val: v });
    const birds = r.skipped.filter((s) => s.file.includes(`${path.sep}birds${path.sep}`));
    assert.equal(birds.length, 2);
    assert.match(birds[0].reason, /class 'birds' is not in the training data/);
  });
});

// ---------------------------------------------------------------------------------------------------------------------
// Model folders given to predict and evaluate.

describe('bad model folders', () => {
  let model: string;
  let data: string;
  before(async () => {
    data = await writeColourDataset(path.join(dir, 'models-data'), ['cats', 'dogs'], 4, 16);
    model = path.join(dir, 'good-model');
    await train({ ...opts(data), out: model });
  });
  const copy = (name: string) => {
    const d = path.join(dir, name);
    cpSync(model, d, { recursive: true });
    return d;
  };
  const loadFails = async (d: string, code: string, mentions: RegExp) => {
    await assert.rejects(Predictor.load(d), (e: unknown) => {
      assert.ok(e instanceof DataError, `DataError, got ${e}`);
      assert.equal(e.code, code);
      assert.match(e.message, mentions);
      assert.ok(!e.message.includes('\n'));
      return true;
    });
  };

  test('a folder that is not a model', async () => {
    await loadFails(data, 'not-a-model', /not a graft model folder/);
  });

  test('a folder that does not exist', async () => {
    await loadFails(path.join(dir, 'no-model'), 'not-found', /model folder does not exist/);
  });

  test('a truncated weights.bin names the file (issue 15)', async () => {
    const d = copy('truncated-model');
    const w = path.join(d, 'weights.bin');
    writeFileSync(w, readFileSync(w).subarray(0, 64));
    await loadFails(d, 'truncated', /weights\.bin: is 64 bytes, graft\.json records \d+/);
  });

  test('a weights.bin replaced by same-size garbage is refused, not a NaN prediction (issue 15)', async () => {
    const d = copy('garbage-model');
    const w = path.join(d, 'weights.bin');
    writeFileSync(w, seededBytes(statSync(w).size, 12));
    await loadFails(d, 'checksum', /weights\.bin: does not match the SHA-256/);
  });

  test('a model without checksums whose weights are garbage fails on its NaN output (issue 15)', async () => {
    const d = copy('old-garbage-model');
    const meta = JSON.parse(readFileSync(path.join(d, 'graft.json'), 'utf8'));
    delete meta.files;
    writeFileSync(path.join(d, 'graft.json'), JSON.stringify(meta));
    const w = path.join(d, 'weights.bin');
    writeFileSync(w, Buffer.alloc(statSync(w).size, 0xff)); // every float NaN
    const p = await Predictor.load(d);
    try {
      await assert.rejects(p.predictFiles([path.join(data, 'cats', 'cats-0.png')]), (e: unknown) => {
        assert.ok(e instanceof DataError && e.code === 'non-finite', String(e));
        return true;
      });
    } finally {
      p.dispose();
    }
  });

  test('a corrupt graft.json', async () => {
    const d = copy('corrupt-meta-model');
    writeFileSync(path.join(d, 'graft.json'), '{"format": "graft-mo');
    await loadFails(d, 'corrupt-model', /graft\.json: model metadata is not valid JSON/);
  });

  test('a corrupt model.json', async () => {
    const d = copy('corrupt-json-model');
    const meta = JSON.parse(readFileSync(path.join(d, 'graft.json'), 'utf8'));
    delete meta.files;
    writeFileSync(path.join(d, 'graft.json'), JSON.stringify(meta));
    writeFileSync(path.join(d, 'model.json'), seededBytes(500, 13));
    await loadFails(d, 'corrupt-model', /model\.json: model\.json is not valid JSON/);
  });

  test('evaluate on labels the model does not know: listed as skipped', async () => {
    const other = await writeColourDataset(path.join(dir, 'eval-other'), ['cats', 'dogs', 'birds'], 2, 16);
    const p = await Predictor.load(model);
    try {
      const r = await evaluateModel(p, other);
      assert.equal(r.images, 4);
      assert.equal(r.skipped.filter((s) => /class 'birds' is not one of the model's labels/.test(s.reason)).length, 2);
    } finally {
      p.dispose();
    }
  });

  test('evaluate on data with no label the model knows is a named error', async () => {
    const other = await writeColourDataset(path.join(dir, 'eval-none'), ['owls', 'bats'], 2, 16);
    const p = await Predictor.load(model);
    try {
      await assert.rejects(evaluateModel(p, other), (e: unknown) => {
        assert.ok(e instanceof DataError && e.code === 'no-known-labels', String(e));
        return true;
      });
    } finally {
      p.dispose();
    }
  });

  test('predict on files that are missing or not images: listed as skipped', async () => {
    const p = await Predictor.load(model);
    try {
      const r = await p.predictFiles([
        path.join(dir, 'missing.png'),
        path.join(data, '..', 'bases', 'cats'),
        path.join(dir, 'a-file'),
      ]);
      assert.deepEqual(
        r.skipped.map((s) => s.reason.replace(/ \(.*/, '')),
        ['file does not exist', 'not a regular file', 'not a decodable image'],
      );
    } finally {
      p.dispose();
    }
  });
});
