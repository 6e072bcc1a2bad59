import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { tmpDir, writeNchwReluOnnx } from '../../test/other-bases-fixtures.ts';
import { decodeModel } from './proto.ts';
import { wireFields, withOutputs } from './wire.ts';

test('withOutputs adds graph outputs by appending a graph field, leaving the original bytes untouched', () => {
  const file = writeNchwReluOnnx(path.join(tmpDir(), 'relu.onnx'));
  const bytes = new Uint8Array(readFileSync(file));
  const more = withOutputs(bytes, ['x']);
  assert.equal(Buffer.compare(more.subarray(0, bytes.length), bytes), 0);
  assert.deepEqual(
    decodeModel(more).graph.output.map((o) => o.name),
    ['y', 'x'],
    'protobuf merges the two graph fields',
  );
  assert.deepEqual(
    wireFields(bytes).map((f) => f.field),
    wireFields(more)
      .map((f) => f.field)
      .slice(0, -1),
  );
});
