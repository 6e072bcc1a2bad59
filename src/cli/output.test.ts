import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BaseError, DataError, InternalError, opt, UsageError, words } from '../util/errors.ts';
import { errorJson, flagOf, formatError, useColour } from './output.ts';

test('library option names become the flags the user typed', () => {
  assert.equal(flagOf('valSplit'), '--val-split');
  assert.equal(flagOf('fineTuneEpochs'), '--fine-tune-epochs');
  assert.equal(flagOf('topK'), '--top');
  assert.equal(flagOf('mirror'), '--model-mirror');
  const e = new UsageError('invalid-value', words`${opt('valSplit')} must be in [0, 1) (got 1); or give ${opt('val')}`);
  assert.equal(e.message, 'valSplit must be in [0, 1) (got 1); or give val');
  const r = formatError(e, { verbose: false, json: true });
  assert.equal(r.stderr, 'graft: error: --val-split must be in [0, 1) (got 1); or give --val\n');
  assert.deepEqual(JSON.parse(r.stdout!), {
    error: {
      kind: 'usage',
      code: 'invalid-value',
      message: '--val-split must be in [0, 1) (got 1); or give --val',
      option: '--val-split',
    },
  });
  assert.equal(r.status, 1);
});

test('a path that looks like an option stays literal text', () => {
  const e = new DataError('not-found', '/data/{valSplit}/x', 'data folder does not exist');
  assert.equal(
    formatError(e, { verbose: false, json: false }).stderr,
    'graft: error: /data/{valSplit}/x: data folder does not exist\n',
  );
});

test('user errors are one line with status 1; bugs say so, hint at --verbose and exit 70', () => {
  for (const e of [new DataError('x', '/f', 'bad'), new BaseError('x', 'b', 'bad'), new UsageError('x', 'bad')]) {
    const r = formatError(e, { verbose: false, json: false });
    assert.equal(r.status, 1);
    assert.equal(r.stderr.split('\n').length, 2);
    assert.doesNotMatch(r.stderr, /internal|--verbose/);
  }
  for (const e of [
    new InternalError('views and samples differ'),
    new TypeError("Cannot read properties of undefined (reading 'x')"),
  ]) {
    const r = formatError(e, { verbose: false, json: true });
    assert.equal(r.status, 70);
    assert.match(
      r.stderr,
      /^graft: internal error \(a bug in graft\): .* \(rerun with --verbose for the stack trace, and please report it\)\n$/,
    );
    assert.equal(JSON.parse(r.stdout!).error.kind, 'internal');
    const v = formatError(e, { verbose: true, json: false });
    assert.match(v.stderr, /\n\s+at /, 'the stack with --verbose');
  }
});

test('a multi-line third-party message is cut to its first line', () => {
  const r = formatError(new Error('first line\n    at somewhere (x.js:1:1)'), { verbose: false, json: false });
  assert.equal(r.stderr.trimEnd().split('\n').length, 1);
  assert.equal(errorJson(new Error('a\nb')).message, 'a …');
});

test('colour follows the stream it is written to, NO_COLOR and FORCE_COLOR (issue 15)', () => {
  assert.equal(useColour({ isTTY: false }, {}), false);
  assert.equal(useColour({ isTTY: false }, { CI: 'true' }), false, 'CI alone does not colour a redirected stream');
  assert.equal(useColour({ isTTY: true }, {}), true);
  assert.equal(useColour({ isTTY: true }, { TERM: 'dumb' }), false);
  assert.equal(useColour({ isTTY: true }, { NO_COLOR: '1' }), false);
  assert.equal(useColour({ isTTY: false }, { FORCE_COLOR: '1' }), true);
  assert.equal(useColour({ isTTY: false }, { FORCE_COLOR: '0' }), false);
  assert.match(
    formatError(new UsageError('x', 'bad'), { verbose: false, json: false, colour: true }).stderr,
    new RegExp(`${String.fromCharCode(27)}\\[31m`),
  );
});
