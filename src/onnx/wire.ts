/**
 * The protobuf wire format, just enough to add outputs and nodes to an ONNX graph without decoding the rest: a file is
 * never re-encoded through graft's onnx.proto subset, which would drop every field the subset leaves out (external
 * data, sparse initializers, subgraphs…). Protobuf parsers merge repeated occurrences of a message field, so appending
 * a second `graph` field that holds only extra outputs gives ONNX Runtime the original graph with more outputs.
 */
function varint(n: number): number[] {
  const out: number[] = [];
  while (n >= 0x80) {
    out.push((n % 0x80) | 0x80);
    n = Math.floor(n / 0x80);
  }
  out.push(n);
  return out;
}

/** A length-delimited field: tag, length, bytes. */
export function lenField(field: number, data: Uint8Array): Uint8Array {
  return Buffer.concat([Uint8Array.from([...varint(field * 8 + 2), ...varint(data.length)]), data]);
}

const str = (field: number, s: string) => lenField(field, Buffer.from(s, 'utf8'));

interface WireField {
  field: number;
  /** The whole field, tag included. */
  bytes: Uint8Array;
  /** Length-delimited fields: the payload. */
  payload?: Uint8Array;
}

/** Splits a message into its top-level fields, in order. */
export function wireFields(msg: Uint8Array): WireField[] {
  const out: WireField[] = [];
  let p = 0;
  const readVarint = () => {
    let n = 0;
    let mul = 1;
    for (;;) {
      if (p >= msg.length) throw new Error('truncated protobuf');
      const b = msg[p++];
      n += (b & 0x7f) * mul;
      if (b < 0x80) return n;
      mul *= 0x80;
    }
  };
  while (p < msg.length) {
    const start = p;
    const tag = readVarint();
    const wire = tag % 8;
    let payload: Uint8Array | undefined;
    if (wire === 0) readVarint();
    else if (wire === 1) p += 8;
    else if (wire === 5) p += 4;
    else if (wire === 2) {
      const len = readVarint();
      payload = msg.subarray(p, p + len);
      p += len;
    } else throw new Error(`unsupported protobuf wire type ${wire}`);
    if (p > msg.length) throw new Error('truncated protobuf');
    out.push({ field: Math.floor(tag / 8), bytes: msg.subarray(start, p), payload });
  }
  return out;
}

/** ModelProto bytes with `names` added as graph outputs (type left for ONNX Runtime to infer). */
export function withOutputs(model: Uint8Array, names: string[]): Uint8Array {
  if (names.length === 0) return model;
  const outputs = names.map((n) => lenField(12, str(1, n)));
  return Buffer.concat([model, lenField(7, Buffer.concat(outputs))]);
}
