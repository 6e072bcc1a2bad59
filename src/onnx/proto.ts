/**
 * Reading and writing ONNX ModelProto bytes with protobufjs, from graft's own subset of onnx.proto (onnx-proto.ts).
 * Messages are plain objects with the .proto's snake_case field names.
 */
import protobuf from 'protobufjs';
import { ONNX_PROTO } from './onnx-proto.ts';

export const DataType = { FLOAT: 1, INT64: 7 } as const;
export type DataType = (typeof DataType)[keyof typeof DataType];

export const AttrType = { FLOAT: 1, INT: 2, STRING: 3, FLOATS: 6, INTS: 7 } as const;
export type AttrType = (typeof AttrType)[keyof typeof AttrType];

export interface Attribute {
  name: string;
  type: AttrType;
  f?: number;
  i?: number;
  s?: Uint8Array;
  floats?: number[];
  ints?: number[];
}

export interface NodeMsg {
  input: string[];
  output: string[];
  name: string;
  op_type: string;
  attribute: Attribute[];
}

export interface TensorMsg {
  name: string;
  dims: number[];
  data_type: DataType;
  raw_data: Uint8Array;
  /** Values of files that do not use raw_data (read only: graft writes raw_data). */
  float_data?: number[];
  int32_data?: number[];
  int64_data?: number[];
}

/** ONNX TensorProto.DataType codes of the element types graft reads from files. */
export const ElemType = { FLOAT: 1, UINT8: 2, INT8: 3, INT32: 6, INT64: 7 } as const;

/** The single value of a scalar (or one-element) initializer, or undefined for any other tensor. */
export function scalarValue(t: TensorMsg): number | undefined {
  if ((t.dims ?? []).reduce((a, b) => a * Number(b), 1) !== 1) return undefined;
  const raw = t.raw_data;
  if (raw?.length) {
    const v = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
    switch (t.data_type as number) {
      case ElemType.FLOAT:
        return raw.length >= 4 ? v.getFloat32(0, true) : undefined;
      case ElemType.UINT8:
        return v.getUint8(0);
      case ElemType.INT8:
        return v.getInt8(0);
      case ElemType.INT32:
        return raw.length >= 4 ? v.getInt32(0, true) : undefined;
      default:
        return undefined;
    }
  }
  return t.float_data?.[0] ?? t.int32_data?.[0] ?? t.int64_data?.[0];
}

export interface ValueInfoMsg {
  name: string;
  type: { tensor_type: { elem_type: DataType; shape: { dim: ({ dim_value: number } | { dim_param: string })[] } } };
}

export interface GraphMsg {
  name: string;
  node: NodeMsg[];
  initializer: TensorMsg[];
  input: ValueInfoMsg[];
  output: ValueInfoMsg[];
}

export interface ModelMsg {
  ir_version: number;
  producer_name: string;
  producer_version: string;
  opset_import: { domain: string; version: number }[];
  metadata_props: { key: string; value: string }[];
  graph: GraphMsg;
}

let modelType: protobuf.Type | undefined;

function ModelProto(): protobuf.Type {
  if (!modelType) {
    modelType = protobuf.parse(ONNX_PROTO, { keepCase: true }).root.lookupType('onnx.ModelProto');
  }
  return modelType;
}

/** A float tensor's ValueInfo: a number is a fixed dimension, a string a named free one. */
export function floatInfo(name: string, dims: (number | string)[]): ValueInfoMsg {
  return {
    name,
    type: {
      tensor_type: {
        elem_type: DataType.FLOAT,
        shape: { dim: dims.map((d) => (typeof d === 'number' ? { dim_value: d } : { dim_param: d })) },
      },
    },
  };
}

/** The bytes of a model holding only `graph`, as graft writes the graphs it builds for its own sessions (opset 17). */
export function encodeGraph(graph: GraphMsg): Uint8Array {
  return encodeModel({
    ir_version: 8,
    producer_name: 'graft',
    producer_version: '',
    opset_import: [{ domain: '', version: 17 }],
    metadata_props: [],
    graph,
  });
}

export function encodeModel(model: ModelMsg): Uint8Array {
  const type = ModelProto();
  return type.encode(type.fromObject(model as unknown as Record<string, unknown>)).finish();
}

/** Decodes bytes written by encodeModel (or any ONNX model, keeping only the fields of graft's subset). */
export function decodeModel(bytes: Uint8Array): ModelMsg {
  const type = ModelProto();
  return type.toObject(type.decode(bytes), { longs: Number, defaults: false, arrays: true }) as unknown as ModelMsg;
}
