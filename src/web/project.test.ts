import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { checkImagePath, checkName, Project, ProjectError } from './project.ts';

const tmp = () => mkdtempSync(path.join(os.tmpdir(), 'graft-project-'));

test('checkName refuses what could leave the folder or hide in it', () => {
  for (const bad of ['', '.', '..', '../a', 'a/b', 'a\\b', '/abs', 'C:x', '.hidden', 'a\0b', ' pad', 'x'.repeat(201)])
    assert.throws(() => checkName('class', bad), ProjectError, JSON.stringify(bad));
  for (const good of ['ants', 'Class 1', 'état', 'a.b', 'x'.repeat(200)]) assert.equal(checkName('class', good), good);
  assert.equal(checkImagePath('sub/a.jpg'), 'sub/a.jpg');
  assert.throws(() => checkImagePath('sub/../../a.jpg'), ProjectError);
});

test('a project opens empty, lists classes newest image first, and undoes deletions and moves', async () => {
  const dir = path.join(tmp(), 'p');
  const p = Project.open(dir);
  assert.ok(existsSync(path.join(dir, 'graft-project.json')));
  await p.createClass('a');
  await p.createClass('b');
  await assert.rejects(p.createClass('a'), /already exists/);
  writeFileSync(path.join(dir, 'a', 'x.jpg'), 'x');
  writeFileSync(path.join(dir, 'a', 'y.jpg'), 'y');
  const moved = await p.moveImages([{ class: 'a', file: 'x.jpg' }], 'b');
  assert.deepEqual(readdirSync(path.join(dir, 'b')), ['x.jpg']);
  const deleted = await p.deleteImages([{ class: 'a', file: 'y.jpg' }]);
  assert.deepEqual(readdirSync(path.join(dir, 'a')), []);
  await p.undo(deleted);
  await p.undo(moved);
  assert.deepEqual(readdirSync(path.join(dir, 'a')).sort(), ['x.jpg', 'y.jpg']);
  assert.deepEqual(readdirSync(path.join(dir, 'b')), []);
  await assert.rejects(p.undo(moved), /nothing to undo/);
  const gone = await p.deleteClass('a');
  assert.ok(!existsSync(path.join(dir, 'a')));
  await p.undo(gone);
  assert.deepEqual(readdirSync(path.join(dir, 'a')).sort(), ['x.jpg', 'y.jpg']);
  // Reopening keeps settings; hidden folders are not classes.
  const again = Project.open(dir);
  assert.deepEqual(
    (await again.list()).classes.map((c) => c.name),
    ['a', 'b'],
  );
});

test('inside() refuses links that lead out of the project, and listing reports them', async () => {
  const root = tmp();
  const outside = path.join(root, 'outside');
  mkdirSync(outside);
  writeFileSync(path.join(outside, 's.jpg'), 's');
  const dir = path.join(root, 'p');
  const p = Project.open(dir);
  await p.createClass('a');
  symlinkSync(path.join(outside, 's.jpg'), path.join(dir, 'a', 'link.jpg'));
  symlinkSync(outside, path.join(dir, 'out'));
  mkdirSync(path.join(dir, 'a', 'inner'));
  symlinkSync(path.join(dir, 'a', 'inner'), path.join(dir, 'a', 'ok-link'));
  assert.throws(() => p.imagePath('a', 'link.jpg'), /outside the project/);
  assert.throws(() => p.imagePath('out', 's.jpg'), /outside the project/);
  assert.throws(() => p.imagePath('out', 'new.jpg'), /outside the project/);
  assert.ok(p.imagePath('a', 'ok-link'));
  const l = await p.list();
  assert.deepEqual(l.problems.map((x) => x.path).sort(), ['a/link.jpg', 'out']);
  assert.deepEqual(
    l.classes.map((c) => c.name),
    ['a'],
  );
});
