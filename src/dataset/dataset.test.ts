import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import sharp from 'sharp';
import { UsageError } from '../util/errors.ts';
import { checkClasses, type DatasetListing, listDataset, type Sample, splitByHash } from './dataset.ts';

let tmp: string;
let png: Buffer;

before(async () => {
  tmp = mkdtempSync(path.join(os.tmpdir(), 'graft-dataset-'));
  png = await sharp({ create: { width: 4, height: 4, channels: 3, background: { r: 9, g: 99, b: 199 } } })
    .png()
    .toBuffer();
});
after(() => rmSync(tmp, { recursive: true, force: true }));

/** Writes files (path relative to dir -> contents; '/' in names makes folders) and returns dir. */
function tree(dir: string, files: Record<string, Buffer | string>): string {
  for (const [rel, body] of Object.entries(files)) {
    const p = path.join(dir, rel);
    mkdirSync(path.dirname(p), { recursive: true });
    writeFileSync(p, body);
  }
  return dir;
}

function errorLine(re: RegExp, source: string) {
  return (e: unknown) => {
    assert.ok(e instanceof Error);
    assert.ok(!e.message.includes('\n'), `message must be one line: ${JSON.stringify(e.message)}`);
    assert.ok(e.message.includes(source), `message must name ${source}: ${e.message}`);
    assert.match(e.message, re);
    return true;
  };
}

describe('listDataset: folders', () => {
  test('classes, nested files, hidden files and system files ignored, stray root file skipped', async () => {
    const root = tree(path.join(tmp, 'folder'), {
      'cats/a.png': png,
      'cats/sub/b.png': png,
      'cats/.DS_Store': 'x',
      'cats/sub/.DS_Store': 'x',
      'cats/Thumbs.db': 'x',
      'cats/.hidden.png': png,
      'dogs/not-an-image.jpg': 'this is text',
      'stray.jpg': png,
      '.DS_Store': 'x',
      '.gitignore': 'x',
      '.ipynb_checkpoints/c.png': png,
    });
    mkdirSync(path.join(root, 'empty'));
    const l = await listDataset(root);
    assert.equal(l.root, root);
    assert.deepEqual(l.classes, ['cats', 'dogs', 'empty']);
    assert.deepEqual(l.samples, [
      { file: path.join(root, 'cats/a.png'), label: 'cats' },
      { file: path.join(root, 'cats/sub/b.png'), label: 'cats' },
      { file: path.join(root, 'dogs/not-an-image.jpg'), label: 'dogs' },
    ]);
    assert.deepEqual(l.skipped, [{ file: path.join(root, 'stray.jpg'), reason: 'not inside a class folder' }]);
  });

  test('relative source path gives absolute sample paths', async () => {
    const root = tree(path.join(tmp, 'rel'), { 'a/1.png': png, 'b/2.png': png });
    const l = await listDataset(path.relative(process.cwd(), root));
    assert.equal(l.root, root);
    assert.ok(l.samples.every((s) => path.isAbsolute(s.file)));
  });

  test('classes sort by code unit, not locale', async () => {
    const root = tree(path.join(tmp, 'sort'), { 'b/1.png': png, 'B/1.png': png, 'a/1.png': png, 'Z/1.png': png });
    const l = await listDataset(root);
    assert.deepEqual(l.classes, ['B', 'Z', 'a', 'b']);
  });

  test('missing folder: one-line error naming it', async () => {
    const missing = path.join(tmp, 'nope');
    await assert.rejects(listDataset(missing), errorLine(/: data folder does not exist$/, missing));
  });

  test('one class folder: one-line error naming the folder and the class', async () => {
    const root = tree(path.join(tmp, 'one'), { 'only/a.png': png, 'loose.png': png });
    await assert.rejects(listDataset(root), errorLine(/found 1 class folder\(s\) \(only\); need at least 2$/, root));
  });
});

describe('listDataset: CSV', () => {
  test('header, quoted fields, relative and absolute paths, missing files and malformed rows', async () => {
    const dir = tree(path.join(tmp, 'csv1'), {
      'img/a.png': png,
      'img/b, c.png': png,
      'img/q"uote.png': png,
      'img/d.png': png,
      'other/e.png': png,
    });
    const abs = path.join(dir, 'other/e.png');
    const csv = path.join(dir, 'labels.csv');
    writeFileSync(
      csv,
      `${[
        'path,label',
        'img/a.png,cat',
        '"img/b, c.png","dog"',
        '"img/q""uote.png", cat',
        `${abs},dog`,
        '',
        'img/missing.png,cat',
        'img/d.png,cat,extra',
        'img/d.png',
        '"img/d.png,cat',
        'img/d.png,dog',
      ].join('\r\n')}\r\n`,
    );
    const l = await listDataset(csv);
    assert.equal(l.root, dir);
    assert.deepEqual(l.classes, ['cat', 'dog']);
    assert.deepEqual(l.samples, [
      { file: path.join(dir, 'img/a.png'), label: 'cat' },
      { file: path.join(dir, 'img/b, c.png'), label: 'dog' },
      { file: path.join(dir, 'img/d.png'), label: 'dog' },
      { file: path.join(dir, 'img/q"uote.png'), label: 'cat' },
      { file: abs, label: 'dog' },
    ]);
    const reasons = new Map(l.skipped.map((s) => [s.file, s.reason]));
    assert.equal(reasons.get(path.join(dir, 'img/missing.png')), 'file does not exist');
    assert.match(reasons.get(`${csv}:8`) ?? '', /^malformed row on line 8\b/);
    assert.match(reasons.get(`${csv}:9`) ?? '', /^malformed row on line 9\b/);
    assert.match(reasons.get(`${csv}:10`) ?? '', /^malformed row on line 10\b/);
    assert.equal(l.skipped.length, 4);
  });

  test('no header; the first row is data', async () => {
    const dir = tree(path.join(tmp, 'csv2'), { 'x.png': png, 'y.png': png });
    const csv = path.join(dir, 'list.csv');
    writeFileSync(csv, 'x.png,red\ny.png,blue\n');
    const l = await listDataset(csv);
    assert.deepEqual(l.classes, ['blue', 'red']);
    assert.deepEqual(
      l.samples.map((s) => [path.basename(s.file), s.label]),
      [
        ['x.png', 'red'],
        ['y.png', 'blue'],
      ],
    );
    assert.deepEqual(l.skipped, []);
  });

  test('labels of missing files still count as classes', async () => {
    const dir = tree(path.join(tmp, 'csv3'), { 'x.png': png });
    const csv = path.join(dir, 'list.csv');
    writeFileSync(csv, 'x.png,red\ngone.png,blue\n');
    const l = await listDataset(csv);
    assert.deepEqual(l.classes, ['blue', 'red']);
    assert.throws(
      () => checkClasses(csv, l.classes, new Map([['red', 1]])),
      errorLine(/class 'blue' has no usable images/, csv),
    );
  });

  test('missing CSV and single-label CSV: one-line errors naming the file', async () => {
    const missing = path.join(tmp, 'absent.csv');
    await assert.rejects(listDataset(missing), errorLine(/: CSV file does not exist$/, missing));
    const dir = tree(path.join(tmp, 'csv4'), { 'x.png': png, 'one.csv': 'x.png,red\n' });
    const csv = path.join(dir, 'one.csv');
    await assert.rejects(listDataset(csv), errorLine(/found 1 .*\(red\); need at least 2$/, csv));
  });
});

function fakeListing(root: string, n: number, prefix = 'img'): DatasetListing {
  const samples: Sample[] = [];
  for (let i = 0; i < n; i++)
    samples.push({ file: path.join(root, i % 2 ? 'a' : 'b', `${prefix}${i}.jpg`), label: 'x' });
  return { root, classes: ['a', 'b'], samples, skipped: [] };
}

describe('splitByHash', () => {
  test('roughly honours the fraction on 1000 samples', () => {
    const { train, val } = splitByHash(fakeListing('/data', 1000), 0.2);
    assert.equal(train.length + val.length, 1000);
    assert.ok(Math.abs(val.length / 1000 - 0.2) <= 0.05, `val fraction ${val.length / 1000}`);
  });

  test('adding files never moves an existing file', () => {
    const before = fakeListing('/data', 300);
    const s1 = splitByHash(before, 0.3);
    const grown: DatasetListing = {
      ...before,
      samples: [...before.samples, ...fakeListing('/data', 300, 'new').samples].sort((a, b) =>
        a.file < b.file ? -1 : 1,
      ),
    };
    const s2 = splitByHash(grown, 0.3);
    const val2 = new Set(s2.val.map((s) => s.file));
    for (const s of s1.val) assert.ok(val2.has(s.file), `${s.file} left val`);
    for (const s of s1.train) assert.ok(!val2.has(s.file), `${s.file} left train`);
    assert.ok(s2.val.length > s1.val.length, 'some new files should land in val');
  });

  test('depends on the path relative to root, not on where the data set lives', () => {
    const a = splitByHash(fakeListing('/data', 200), 0.5);
    const b = splitByHash(fakeListing('/elsewhere/deeper', 200), 0.5);
    assert.deepEqual(
      a.val.map((s) => path.basename(s.file)),
      b.val.map((s) => path.basename(s.file)),
    );
    assert.ok(a.val.length > 0 && a.train.length > 0);
  });

  test('fractions 0 and 1 are all-train and all-val; out of range is rejected', () => {
    const l = fakeListing('/data', 50);
    assert.equal(splitByHash(l, 0).val.length, 0);
    assert.equal(splitByHash(l, 1).train.length, 0);
    const usage = (e: unknown) => e instanceof UsageError && e.option === 'valFraction';
    assert.throws(() => splitByHash(l, 1.5), usage);
    assert.throws(() => splitByHash(l, Number.NaN), usage);
  });
});

describe('checkClasses', () => {
  test('a class without usable images is named', () => {
    assert.throws(
      () =>
        checkClasses(
          '/d',
          ['cats', 'dogs', 'empty'],
          new Map([
            ['cats', 3],
            ['dogs', 2],
          ]),
        ),
      errorLine(/class 'empty' has no usable images: every training file was skipped$/, '/d'),
    );
  });

  test('fewer than 2 classes is an error', () => {
    assert.throws(() => checkClasses('/d', ['cats'], new Map([['cats', 3]])), errorLine(/need at least 2$/, '/d'));
  });

  test('passes when every class has images', () => {
    checkClasses(
      '/d',
      ['cats', 'dogs'],
      new Map([
        ['cats', 1],
        ['dogs', 1],
      ]),
    );
  });
});
