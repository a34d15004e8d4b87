// The text format grammar, driven by a hand-built test schema covering every field kind (all
// scalar types, enums open and closed, maps, oneofs, proto3 optional, proto2 groups, Any, wrappers).
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import {
  create,
  createFileRegistry,
  createRegistry,
  type DescMessage,
  equals,
  type Message,
} from "@bufbuild/protobuf";
import { type ReflectMessage, reflect } from "@bufbuild/protobuf/reflect";
import {
  type Any,
  AnySchema,
  DurationSchema,
  FieldDescriptorProto_Label as Label,
  FieldDescriptorProto_Type as Type,
  FieldSchema,
  type FieldDescriptorProtoJson,
  FileDescriptorProtoSchema,
  type FileDescriptorProtoJson,
  file_google_protobuf_any,
  file_google_protobuf_duration,
  file_google_protobuf_struct,
  file_google_protobuf_timestamp,
  file_google_protobuf_wrappers,
  StructSchema,
  TimestampSchema,
  TypeSchema,
  anyPack,
} from "@bufbuild/protobuf/wkt";
import { fromJson } from "@bufbuild/protobuf";
import { mergeText, parseText, parseTextFile, printText, TextFormatError } from "../../src/common/textproto/index.js";

// ---- test schema -------------------------------------------------------------------------------

function f(name: string, number: number, type: Type, extra: Partial<FieldDescriptorProtoJson> = {}): FieldDescriptorProtoJson {
  return { name, number, type: `TYPE_${Type[type]}` as FieldDescriptorProtoJson["type"], label: "LABEL_OPTIONAL", ...extra };
}
const rep = { label: `LABEL_${Label[Label.REPEATED]}` as FieldDescriptorProtoJson["label"] };
function mapEntry(name: string, key: Type, value: Type, valueTypeName?: string) {
  return {
    name,
    field: [f("key", 1, key), f("value", 2, value, valueTypeName ? { typeName: valueTypeName } : {})],
    options: { mapEntry: true },
  };
}

const proto3File: FileDescriptorProtoJson = {
  name: "textproto_test.proto",
  package: "tt",
  syntax: "proto3",
  dependency: [
    "google/protobuf/any.proto",
    "google/protobuf/duration.proto",
    "google/protobuf/timestamp.proto",
    "google/protobuf/wrappers.proto",
    "google/protobuf/struct.proto",
  ],
  enumType: [
    {
      name: "Color",
      value: [
        { name: "COLOR_UNSPECIFIED", number: 0 },
        { name: "RED", number: 1 },
        { name: "GREEN", number: 2 },
        { name: "DARK", number: -3 },
      ],
    },
  ],
  messageType: [
    {
      name: "AllTypes",
      field: [
        f("i32", 1, Type.INT32),
        f("i64", 2, Type.INT64),
        f("u32", 3, Type.UINT32),
        f("u64", 4, Type.UINT64),
        f("s32", 5, Type.SINT32),
        f("s64", 6, Type.SINT64),
        f("f32", 7, Type.FIXED32),
        f("f64", 8, Type.FIXED64),
        f("sf32", 9, Type.SFIXED32),
        f("sf64", 10, Type.SFIXED64),
        f("fl", 11, Type.FLOAT),
        f("db", 12, Type.DOUBLE),
        f("b", 13, Type.BOOL),
        f("s", 14, Type.STRING),
        f("by", 15, Type.BYTES),
        f("color", 16, Type.ENUM, { typeName: ".tt.Color" }),
        f("nested", 17, Type.MESSAGE, { typeName: ".tt.AllTypes.Nested" }),
        f("ri32", 20, Type.INT32, rep),
        f("rs", 21, Type.STRING, rep),
        f("rnested", 22, Type.MESSAGE, { ...rep, typeName: ".tt.AllTypes.Nested" }),
        f("rcolor", 23, Type.ENUM, { ...rep, typeName: ".tt.Color" }),
        f("rby", 24, Type.BYTES, rep),
        f("ri64", 25, Type.INT64, rep),
        f("rdb", 26, Type.DOUBLE, rep),
        f("rfl", 27, Type.FLOAT, rep),
        f("rb", 28, Type.BOOL, rep),
        f("msi", 30, Type.MESSAGE, { ...rep, typeName: ".tt.AllTypes.MsiEntry" }),
        f("mis", 31, Type.MESSAGE, { ...rep, typeName: ".tt.AllTypes.MisEntry" }),
        f("mbn", 32, Type.MESSAGE, { ...rep, typeName: ".tt.AllTypes.MbnEntry" }),
        f("muc", 33, Type.MESSAGE, { ...rep, typeName: ".tt.AllTypes.MucEntry" }),
        f("msn", 34, Type.MESSAGE, { ...rep, typeName: ".tt.AllTypes.MsnEntry" }),
        f("o_str", 40, Type.STRING, { oneofIndex: 0 }),
        f("o_nested", 41, Type.MESSAGE, { oneofIndex: 0, typeName: ".tt.AllTypes.Nested" }),
        f("o_int", 42, Type.INT32, { oneofIndex: 0 }),
        f("opt_i32", 43, Type.INT32, { oneofIndex: 1, proto3Optional: true }),
        f("any", 50, Type.MESSAGE, { typeName: ".google.protobuf.Any" }),
        f("rany", 51, Type.MESSAGE, { ...rep, typeName: ".google.protobuf.Any" }),
        f("dur", 52, Type.MESSAGE, { typeName: ".google.protobuf.Duration" }),
        f("ts", 53, Type.MESSAGE, { typeName: ".google.protobuf.Timestamp" }),
        f("wstr", 54, Type.MESSAGE, { typeName: ".google.protobuf.StringValue" }),
        f("wi64", 55, Type.MESSAGE, { typeName: ".google.protobuf.Int64Value" }),
        f("st", 56, Type.MESSAGE, { typeName: ".google.protobuf.Struct" }),
        f("recursive", 57, Type.MESSAGE, { typeName: ".tt.AllTypes" }),
        f("CamelName", 58, Type.STRING),
      ],
      nestedType: [
        {
          name: "Nested",
          field: [
            f("a", 1, Type.INT32),
            f("b", 2, Type.STRING),
            f("children", 3, Type.MESSAGE, { ...rep, typeName: ".tt.AllTypes.Nested" }),
          ],
        },
        mapEntry("MsiEntry", Type.STRING, Type.INT32),
        mapEntry("MisEntry", Type.INT64, Type.STRING),
        mapEntry("MbnEntry", Type.BOOL, Type.MESSAGE, ".tt.AllTypes.Nested"),
        mapEntry("MucEntry", Type.UINT32, Type.ENUM, ".tt.Color"),
        mapEntry("MsnEntry", Type.STRING, Type.MESSAGE, ".tt.AllTypes.Nested"),
      ],
      oneofDecl: [{ name: "choice" }, { name: "_opt_i32" }],
    },
  ],
};

const proto2File: FileDescriptorProtoJson = {
  name: "textproto_test2.proto",
  package: "tt2",
  syntax: "proto2",
  enumType: [{ name: "Shade", value: [{ name: "LIGHT", number: 1 }, { name: "DEEP", number: 2 }] }],
  messageType: [
    {
      name: "P2",
      field: [
        f("x", 1, Type.INT32),
        f("mygroup", 2, Type.GROUP, { typeName: ".tt2.P2.MyGroup" }),
        f("shade", 4, Type.ENUM, { typeName: ".tt2.Shade" }),
        f("item", 5, Type.GROUP, { ...rep, typeName: ".tt2.P2.Item" }),
        f("s", 7, Type.STRING),
      ],
      nestedType: [
        { name: "MyGroup", field: [f("y", 3, Type.INT32)] },
        { name: "Item", field: [f("z", 6, Type.STRING)] },
      ],
    },
  ],
};

const wkt = [
  file_google_protobuf_any,
  file_google_protobuf_duration,
  file_google_protobuf_timestamp,
  file_google_protobuf_wrappers,
  file_google_protobuf_struct,
];
const files = createFileRegistry(
  fromJson(FileDescriptorProtoSchema, proto3File as never),
  (name) => wkt.find((w) => w.proto.name === name),
);
const files2 = createFileRegistry(fromJson(FileDescriptorProtoSchema, proto2File as never), () => undefined);
const AllTypes = files.getMessage("tt.AllTypes")!;
const Nested = files.getMessage("tt.AllTypes.Nested")!;
const P2 = files2.getMessage("tt2.P2")!;
const registry = createRegistry(files, files2, ...wkt);

// ---- helpers ----------------------------------------------------------------------------------

function parse(text: string, opts: { discardUnknown?: boolean } = {}): ReflectMessage {
  return reflect(AllTypes, parseText(AllTypes, text, { registry, ...opts }));
}

function get(m: ReflectMessage, name: string): unknown {
  return m.get(m.desc.fields.find((x) => x.name === name)!);
}

function list(m: ReflectMessage, name: string): unknown[] {
  return [...(get(m, name) as Iterable<unknown>)];
}

/** Asserts a TextFormatError at line:column whose reason matches `gist`. */
function throwsAt(fn: () => unknown, line: number, column: number, gist: RegExp | string): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof TextFormatError, `expected TextFormatError, got ${String(e)}`);
    assert.equal(`${e.line}:${e.column}`, `${line}:${column}`, e.message);
    if (typeof gist === "string") assert.ok(e.reason.includes(gist), `${e.message}\n  does not include: ${gist}`);
    else assert.match(e.reason, gist);
    assert.equal(e.message, `${e.fileName}:${e.line}:${e.column}: ${e.reason}`);
    return true;
  });
}

function roundTrip<D extends DescMessage>(schema: D, message: Message, opts: { registry?: typeof registry } = { registry }): string {
  const text = printText(schema, message as never, opts);
  const back = parseText(schema, text, opts);
  assert.ok(equals(schema, back, message as never), `round trip changed the message:\n${text}`);
  assert.equal(printText(schema, back, opts), text);
  return text;
}

// ---- tests ------------------------------------------------------------------------------------

describe("textproto scalars", () => {
  it("reads every scalar type", () => {
    const m = parse(`
      i32: -42 i64: -9000000000 u32: 4000000000 u64: 18446744073709551615
      s32: -1 s64: -2 f32: 3 f64: 4 sf32: -5 sf64: -6
      fl: 1.5 db: -2.25e-3 b: true s: "hi" by: "\\000\\001" color: GREEN
    `);
    assert.equal(get(m, "i32"), -42);
    assert.equal(get(m, "i64"), -9000000000n);
    assert.equal(get(m, "u32"), 4000000000);
    assert.equal(get(m, "u64"), 18446744073709551615n);
    assert.equal(get(m, "s32"), -1);
    assert.equal(get(m, "s64"), -2n);
    assert.equal(get(m, "f32"), 3);
    assert.equal(get(m, "f64"), 4n);
    assert.equal(get(m, "sf32"), -5);
    assert.equal(get(m, "sf64"), -6n);
    assert.equal(get(m, "fl"), 1.5);
    assert.equal(get(m, "db"), -0.00225);
    assert.equal(get(m, "b"), true);
    assert.equal(get(m, "s"), "hi");
    assert.deepEqual(get(m, "by"), new Uint8Array([0, 1]));
    assert.equal(get(m, "color"), 2);
  });

  it("reads integers in decimal, hex and octal, with signs and at the type limits", () => {
    const m = parse(`
      i32: 0x7fffffff ri32: -0x80000000 ri32: 017 ri32: -017 ri32: 0 ri32: 0X1F
      i64: -9223372036854775808 ri64: 9223372036854775807 ri64: 0x7FFFFFFFFFFFFFFF
      u32: 0xffffffff u64: 0xFFFFFFFFFFFFFFFF
    `);
    assert.equal(get(m, "i32"), 2147483647);
    assert.deepEqual(list(m, "ri32"), [-2147483648, 15, -15, 0, 31]);
    assert.equal(get(m, "i64"), -9223372036854775808n);
    assert.deepEqual(list(m, "ri64"), [9223372036854775807n, 9223372036854775807n]);
    assert.equal(get(m, "u32"), 4294967295);
    assert.equal(get(m, "u64"), 18446744073709551615n);
  });

  it("rejects integers out of range, naming type and limits", () => {
    throwsAt(() => parse("i32: 2147483648"), 1, 6, 'out of range for int32 field "i32"; expected -2147483648 to 2147483647');
    throwsAt(() => parse("\n  i32: -2147483649"), 2, 8, "out of range for int32");
    throwsAt(() => parse("u32: -1"), 1, 6, "-1 is out of range for uint32");
    throwsAt(() => parse("u32: 4294967296"), 1, 6, "out of range for uint32");
    throwsAt(() => parse("u64: 18446744073709551616"), 1, 6, "out of range for uint64");
    throwsAt(() => parse("i64: 9223372036854775808"), 1, 6, "out of range for int64");
    throwsAt(() => parse("i64: -9223372036854775809"), 1, 6, "out of range for int64");
    throwsAt(() => parse("sf32: 0x80000000"), 1, 7, "out of range for sfixed32");
    throwsAt(() => parse("ri32: [1, 99999999999]"), 1, 11, "out of range for int32");
  });

  it("rejects non-integers for integer fields", () => {
    throwsAt(() => parse("i32: 1.5"), 1, 6, 'expected an integer (int32) after "i32:", got a floating-point number "1.5"');
    throwsAt(() => parse("i32: 12abc"), 1, 6, 'got an invalid number "12abc"');
    throwsAt(() => parse("i32: 09"), 1, 6, "expected an integer");
    throwsAt(() => parse('u64: "5"'), 1, 6, 'expected an integer (uint64) after "u64:", got the string "5"');
    throwsAt(() => parse("i32: RED"), 1, 6, 'got "RED"');
    throwsAt(() => parse("i32:"), 1, 5, "got end of input");
  });

  it("reads floats: exponents, inf, nan, trailing f, leading dot, negative zero", () => {
    const m = parse(`
      rdb: 1.5e3 rdb: inf rdb: -inf rdb: -Infinity rdb: 1.5f rdb: .5 rdb: 1. rdb: 7 rdb: 2E-2 rdb: 0x10
      rdb: 1e+21 rdb: -0 db: nan
      rfl: 0.1 rfl: 3.4028234e38 rfl: -1F
    `);
    assert.deepEqual(list(m, "rdb"), [1500, Infinity, -Infinity, -Infinity, 1.5, 0.5, 1, 7, 0.02, 16, 1e21, -0]);
    assert.ok(Object.is(list(m, "rdb")[11], -0));
    assert.ok(Number.isNaN(get(m, "db") as number));
    assert.deepEqual(list(m, "rfl"), [Math.fround(0.1), Math.fround(3.4028234e38), -1]);
  });

  it("rejects floats out of range and non-numbers", () => {
    throwsAt(() => parse("fl: 1e39"), 1, 5, 'out of range for float field "fl"');
    throwsAt(() => parse("db: -1e999"), 1, 5, "out of range for double");
    throwsAt(() => parse("db: infinite"), 1, 5, 'expected a number (double) after "db:", got "infinite"');
    throwsAt(() => parse("db: 1.2.3"), 1, 5, "expected a number (double)");
  });

  it("reads bools in every spelling and rejects others", () => {
    const m = parse("rb: true rb: True rb: t rb: 1 rb: false rb: False rb: f rb: 0 rb: [true, 0]");
    assert.deepEqual(list(m, "rb"), [true, true, true, true, false, false, false, false, true, false]);
    throwsAt(() => parse("b: yes"), 1, 4, 'expected true or false after "b:", got "yes"');
    throwsAt(() => parse("b: 2"), 1, 4, "expected true or false");
    throwsAt(() => parse('b: "true"'), 1, 4, "expected true or false");
  });
});

describe("textproto strings and bytes", () => {
  it("decodes every C escape", () => {
    const m = parse(String.raw`s: "\n\t\r\\\'\"\?\a\b\f\v|\101\60\0|\x41\x4|\u00e9\U0001F600\uD83D\uDE00"`);
    assert.equal(get(m, "s"), "\n\t\r\\'\"?\x07\b\f\v|A0\0|A\x04|é😀😀");
  });

  it("accepts single quotes, raw UTF-8 and adjacent-string concatenation across lines and comments", () => {
    const m = parse(`s: 'it''s "x"' rs: "a" "b"
        # a comment between parts
        'c'
      rs: "héllo ✓"`);
    assert.equal(get(m, "s"), 'its "x"');
    assert.deepEqual(list(m, "rs"), ["abc", "héllo ✓"]);
  });

  it("makes raw bytes from escapes in bytes fields", () => {
    const m = parse(String.raw`by: "\377\000\xfe" "A" rby: "é" rby: '\u00e9' rby: ""`);
    assert.deepEqual(get(m, "by"), new Uint8Array([0xff, 0, 0xfe, 0x41]));
    assert.deepEqual(list(m, "rby"), [new Uint8Array([0xc3, 0xa9]), new Uint8Array([0xc3, 0xa9]), new Uint8Array()]);
  });

  it("rejects bad escapes at the backslash", () => {
    throwsAt(() => parse(String.raw`s: "ab\qc"`), 1, 7, String.raw`unknown escape sequence \q in string; valid escapes are \n`);
    throwsAt(() => parse(String.raw`s: "\xg"`), 1, 5, String.raw`\x must be followed by one or two hex digits`);
    throwsAt(() => parse(String.raw`s: "\u12"`), 1, 5, String.raw`\u must be followed by exactly 4 hex digits`);
    throwsAt(() => parse(String.raw`s: "\U00110000"`), 1, 5, "above U+10FFFF");
    throwsAt(() => parse(String.raw`s: "x\uD800"`), 1, 6, "lone UTF-16 surrogate");
    throwsAt(() => parse(String.raw`s: "\400"`), 1, 5, String.raw`octal escape \400 is above \377`);
  });

  it("rejects unterminated strings at the opening quote", () => {
    throwsAt(() => parse('i32: 1\ns: "abc'), 2, 4, "unterminated string; expected a closing \" on the same line");
    throwsAt(() => parse("s: 'abc\n'"), 1, 4, "unterminated string; expected a closing '");
    throwsAt(() => parse('s: "abc\\'), 1, 4, "unterminated string");
  });

  it("rejects invalid UTF-8 in string fields, not in bytes fields", () => {
    throwsAt(() => parse(String.raw`s: "ok" "\377"`), 1, 4, 'the string for "s" is not valid UTF-8');
    assert.deepEqual(get(parse(String.raw`by: "\377"`), "by"), new Uint8Array([0xff]));
  });

  it("rejects a non-string for a string field", () => {
    throwsAt(() => parse("s: 12"), 1, 4, 'expected a string after "s:", got "12"');
    throwsAt(() => parse("by: x"), 1, 5, 'expected a string (bytes) after "by:", got "x"');
  });
});

describe("textproto messages, lists and maps", () => {
  it("accepts every message syntax and separator", () => {
    const m = parse(`
      rnested { a: 1 }
      rnested: { a: 2; b: "x", }
      rnested < a: 3 >;
      rnested: < a: 4 >,
      rnested {}
      rnested: <>
      nested{children{a:5}children:<a:6>}
    `);
    assert.deepEqual(
      list(m, "rnested").map((n) => get(n as ReflectMessage, "a")),
      [1, 2, 3, 4, 0, 0],
    );
    const nested = get(m, "nested") as ReflectMessage;
    assert.deepEqual(list(nested, "children").map((n) => get(n as ReflectMessage, "a")), [5, 6]);
  });

  it("accepts repeated fields as repeats and as lists, also without colon for messages", () => {
    const m = parse(`
      ri32: 1 ri32: [2, 3] ri32: [] ri32: [-4]
      rs: ["a", "b" "c"]
      rcolor: [RED, 2, DARK] rcolor: -3
      rnested: [{a: 1}, <a: 2>] rnested [{a: 3}] rnested []
    `);
    assert.deepEqual(list(m, "ri32"), [1, 2, 3, -4]);
    assert.deepEqual(list(m, "rs"), ["a", "bc"]);
    assert.deepEqual(list(m, "rcolor"), [1, 2, -3, -3]);
    assert.deepEqual(
      list(m, "rnested").map((n) => get(n as ReflectMessage, "a")),
      [1, 2, 3],
    );
  });

  it("rejects malformed lists", () => {
    throwsAt(() => parse("ri32: [1 2]"), 1, 10, 'expected "," or "]" in the list of "ri32" (opened at 1:7), got "2"');
    throwsAt(() => parse("ri32: [1,]"), 1, 10, 'expected an integer (int32) after "ri32:", got "]"');
    throwsAt(() => parse("ri32: [1"), 1, 9, 'expected "," or "]"');
    throwsAt(() => parse("i32: [1]"), 1, 6, 'field "i32" of tt.AllTypes is not repeated; a list [...] is only allowed for repeated fields');
    throwsAt(() => parse("ri32 [1]"), 1, 6, 'expected ":" after field name "ri32", got "["');
  });

  it("reads maps as entries and lists of entries, with defaults for missing key or value", () => {
    const m = parse(`
      msi { key: "b" value: 2 }
      msi: { value: 1 key: "a" }
      msi: [{ key: "c" value: 3 }, < key: "b" value: 20 >]
      msi {}
      mis { key: -5 value: "neg" } mis { key: 0x10 }
      mbn { key: true value { a: 7 } } mbn { key: false value: < b: "x" > }
      muc { key: 4294967295 value: GREEN } muc { key: 1 value: 2 } muc { key: 2 }
    `);
    const msi = get(m, "msi") as Map<string, number>;
    assert.deepEqual([...msi.entries()], [["b", 20], ["a", 1], ["c", 3], ["", 0]]);
    assert.deepEqual(new Map(get(m, "mis") as Map<bigint, string>), new Map([[-5n, "neg"], [16n, ""]]));
    const mbn = get(m, "mbn") as Map<boolean, ReflectMessage>;
    assert.equal(get(mbn.get(true)!, "a"), 7);
    assert.equal(get(mbn.get(false)!, "b"), "x");
    assert.deepEqual(new Map(get(m, "muc") as Map<number, number>), new Map([[4294967295, 2], [1, 2], [2, 0]]));
  });

  it("rejects malformed map entries", () => {
    throwsAt(() => parse('msi { key: "a" key: "b" }'), 1, 16, 'map entry "msi" has two keys (first at 1:7)');
    throwsAt(() => parse("msi { value: 1 value: 2 }"), 1, 16, "has two values");
    throwsAt(() => parse("msi { k: 1 }"), 1, 7, 'expected "key", "value" or "}" in map entry "msi" (opened at 1:5), got "k"');
    throwsAt(() => parse('msi { key "a" }'), 1, 11, 'expected ":" after "key"');
    throwsAt(() => parse('msi { key: 1 }'), 1, 12, 'expected a string after "key:"');
    throwsAt(() => parse('muc { value: BLUE }'), 1, 14, 'unknown value "BLUE" for enum tt.Color');
    throwsAt(() => parse('msi { key: "a"'), 1, 15, 'reached end of input inside map entry "msi" opened at 1:5; expected "}"');
  });

  it("requires a colon before scalars and a block for messages", () => {
    throwsAt(() => parse("i32 5"), 1, 5, 'expected ":" after field name "i32", got "5"');
    throwsAt(() => parse('nested: "x"'), 1, 9, 'expected "{" or "<" to start tt.AllTypes.Nested after "nested:", got the string "x"');
    throwsAt(() => parse("nested 5"), 1, 8, 'expected "{" or "<" to start tt.AllTypes.Nested after "nested", got "5"');
    throwsAt(() => parse("i32: {"), 1, 6, 'expected an integer (int32) after "i32:", got "{"');
  });

  it("bounds nesting depth, also while skipping", () => {
    assert.throws(() => parse("recursive { ".repeat(120)), /nested more than 100 deep/);
    assert.throws(() => parse("unknown { ".repeat(120), { discardUnknown: true }), /nested more than 100 deep/);
    const ok = parse("recursive { ".repeat(50) + "i32: 1" + " }".repeat(50));
    assert.ok(printText(AllTypes, ok.message).includes("i32: 1"));
  });

  it("reports unclosed and mismatched blocks", () => {
    throwsAt(() => parse("nested {\n  a: 1\n"), 3, 1, 'reached end of input inside "nested" opened at 1:8; expected "}" to close it');
    throwsAt(() => parse("nested {\n  children <\n    a: 1\n  }\n}"), 4, 3, 'expected a field name or ">" to close "children" (opened at 2:12), got "}"');
    throwsAt(() => parse("a: 1"), 1, 1, 'unknown field "a" in tt.AllTypes');
    throwsAt(() => parse("i32: 1 }"), 1, 8, 'expected a field name, got "}"');
    throwsAt(() => parse("i32: 1 @"), 1, 8, 'unexpected character "@"');
    throwsAt(() => parse("nested { 5 }"), 1, 10, 'expected a field name or "}" to close "nested" (opened at 1:8), got "5"');
  });
});

describe("textproto enums, oneofs and presence", () => {
  it("reads enums by name and number; open enums keep unknown numbers", () => {
    const m = parse("color: DARK rcolor: 0 rcolor: 99 rcolor: -3 rcolor: GREEN");
    assert.equal(get(m, "color"), -3);
    assert.deepEqual(list(m, "rcolor"), [0, 99, -3, 2]);
  });

  it("rejects unknown enum names, listing the values", () => {
    throwsAt(() => parse("\ncolor: BLUE"), 2, 8, 'unknown value "BLUE" for enum tt.Color in field "color"; expected one of: COLOR_UNSPECIFIED, RED, GREEN, DARK');
    throwsAt(() => parse('color: "RED"'), 1, 8, "expected a value of enum tt.Color (COLOR_UNSPECIFIED, RED, GREEN, DARK)");
    throwsAt(() => parse("color: -RED"), 1, 9, "expected a value of enum tt.Color");
    throwsAt(() => parse("color: 2147483648"), 1, 8, "out of range for enum field");
  });

  it("rejects unknown numbers for closed (proto2) enums", () => {
    assert.equal(get(reflect(P2, parseText(P2, "shade: 2")), "shade"), 2);
    throwsAt(() => parseText(P2, "shade: 3"), 1, 8, "3 is not a value of the closed enum tt2.Shade");
  });

  it("rejects a oneof set twice, naming both fields", () => {
    throwsAt(
      () => parse('o_str: "x"\no_int: 1'),
      2,
      1,
      'field "o_int" and field "o_str" (at 1:1) are both in oneof "choice" of tt.AllTypes; set only one of them',
    );
    throwsAt(() => parse('o_nested {} o_nested {}'), 1, 13, 'field "o_nested" of tt.AllTypes is set twice (first at 1:1)');
  });

  it("rejects a non-repeated field set twice, scalars and messages alike", () => {
    throwsAt(() => parse("i32: 1\n  i32: 1"), 2, 3, 'field "i32" of tt.AllTypes is set twice (first at 1:1); it is not repeated, so write it once');
    throwsAt(() => parse("nested { a: 1 } nested { b: \"x\" }"), 1, 17, 'field "nested" of tt.AllTypes is set twice');
    throwsAt(() => parse("nested { a: 1 a: 2 }"), 1, 15, 'field "a" of tt.AllTypes.Nested is set twice (first at 1:10)');
  });

  it("keeps explicit presence: proto3 optional zero and oneof zero are printed and read back", () => {
    const m = parse("opt_i32: 0 o_int: 0 i32: 0");
    const f = (n: string) => AllTypes.fields.find((x) => x.name === n)!;
    assert.ok(m.isSet(f("opt_i32")));
    assert.ok(m.isSet(f("o_int")));
    assert.ok(!m.isSet(f("i32")));
    assert.equal(roundTrip(AllTypes, m.message), "o_int: 0\nopt_i32: 0\n");
  });
});

describe("textproto unknown fields", () => {
  it("rejects unknown fields with the list of known ones and a suggestion", () => {
    throwsAt(
      () => parseText(Nested, "a: 1\n  chldren { }", { fileName: "x.txt" }),
      2,
      3,
      'unknown field "chldren" in tt.AllTypes.Nested; expected one of: a, b, children (did you mean "children"?)',
    );
    assert.throws(() => parseText(Nested, "zz: 1", { fileName: "x.txt" }), /^TextFormatError: x\.txt:1:1: unknown field "zz" in tt\.AllTypes\.Nested; expected one of: a, b, children$/);
    throwsAt(() => parse("camel_name: 'x'"), 1, 1, "(did you mean \"CamelName\"?)");
    throwsAt(() => parseText(DurationSchema, "seconds: 1 nano: 2"), 1, 12, 'did you mean "nanos"');
  });

  it("skips every shape of unknown value in discardUnknown mode", () => {
    const text = `
      u1: 5 u2: -3 u3: -inf u4: ENUM_NAME u5: "str" 'cat'
        "enated" u6 { a: 1 deeper < x: [1, 2] y { } > [ext.name] { q: 1 } } u7: { } u8: < z: "}" >
      i32: 7
      u9: [1, -2, "s" "t", X] u10: [{ a: 1 }, < b: 2 >] u11 [{c: 3}] u12: [] u13 []
      [some.extension]: 5 [type.googleapis.com/x.Y] { f: 1 }
      nested { a: 1 unknown_inner: "x" children { zz { } } b: "kept" } ;
      msi { key: "k" extra: 1 value: 3 }
      s: "last"
    `;
    const m = parse(text, { discardUnknown: true });
    assert.equal(get(m, "i32"), 7);
    const nested = get(m, "nested") as ReflectMessage;
    assert.equal(get(nested, "a"), 1);
    assert.equal(get(nested, "b"), "kept");
    assert.equal(list(nested, "children").length, 1);
    assert.deepEqual([...(get(m, "msi") as Map<string, number>).entries()], [["k", 3]]);
    assert.equal(get(m, "s"), "last");
  });

  it("still checks syntax while skipping, and unknown enum names of known fields stay errors", () => {
    const d = { discardUnknown: true };
    throwsAt(() => parse("u1 { a: 1", d), 1, 10, 'reached end of input inside "u1" opened at 1:4; expected "}"');
    throwsAt(() => parse("u1 5", d), 1, 4, 'expected ":" or "{" after field name "u1", got "5"');
    throwsAt(() => parse("u1: [1 2]", d), 1, 8, 'expected "," or "]" in the list of "u1"');
    throwsAt(() => parse("u1: }", d), 1, 5, 'expected a value for "u1", got "}"');
    throwsAt(() => parse("u1 { 5 }", d), 1, 6, 'expected a field name or "}" to close "u1"');
    throwsAt(() => parse("color: BLUE", d), 1, 8, 'unknown value "BLUE" for enum tt.Color');
    throwsAt(() => parse('u1: "abc', d), 1, 5, "unterminated string");
  });

  it("rejects extension syntax outside Any unless discarding", () => {
    throwsAt(() => parse("[foo.bar]: 1"), 1, 1, '"[foo.bar]" in tt.AllTypes: extensions are not supported');
    throwsAt(() => parse("[foo.bar: 1"), 1, 9, 'unexpected ":" in "[...]"');
    throwsAt(() => parse("[foo.bar"), 1, 1, '"[" is never closed');
    throwsAt(() => parse("[ ]"), 1, 1, 'empty "[]"');
  });
});

describe("textproto google.protobuf.Any", () => {
  const nestedAny = (a: number): Any => anyPack(Nested, create(Nested, { a } as never));

  it("reads the expanded form with {} or <>, with or without colon, and the plain form", () => {
    const m = parse(`
      any { [type.googleapis.com/tt.AllTypes.Nested] { a: 1 } }
      rany: { [type.googleapis.com/tt.AllTypes.Nested]: { a: 2 } }
      rany < [ type.googleapis.com / tt.AllTypes.Nested ] < a: 3 > >
      rany: < [example.com/x/tt.AllTypes.Nested]: < a: 4 > >
      rany { type_url: "type.googleapis.com/tt.AllTypes.Nested" value: "\\010\\005" }
      rany {}
    `);
    const any = (get(m, "any") as ReflectMessage).message as Any;
    assert.deepEqual(any, nestedAny(1));
    const rany = list(m, "rany").map((r) => (r as ReflectMessage).message as Any);
    assert.deepEqual(rany.slice(0, 2), [nestedAny(2), nestedAny(3)]);
    assert.equal(rany[2]!.typeUrl, "example.com/x/tt.AllTypes.Nested");
    assert.deepEqual(rany[2]!.value, nestedAny(4).value);
    assert.deepEqual(rany[3], nestedAny(5));
    assert.deepEqual(rany[4], create(AnySchema));
  });

  it("resolves nested Any values", () => {
    const m = parseText(
      AnySchema,
      "[type.googleapis.com/tt.AllTypes] { any { [type.googleapis.com/google.protobuf.Duration] { seconds: 3 } } }",
      { registry },
    );
    const text = roundTrip(AnySchema, m);
    assert.equal(
      text,
      "[type.googleapis.com/tt.AllTypes] {\n  any {\n    [type.googleapis.com/google.protobuf.Duration] {\n      seconds: 3\n    }\n  }\n}\n",
    );
  });

  it("names the type URL and the fix when the type is unknown", () => {
    throwsAt(
      () => parse("any {\n  [type.googleapis.com/fleetspeak.Nope] { a: 1 }\n}"),
      2,
      3,
      'cannot resolve the Any type URL "type.googleapis.com/fleetspeak.Nope": the registry does not know fleetspeak.Nope; add its schema or file to the registry (createRegistry(...))',
    );
    throwsAt(
      () => parseText(AllTypes, "any { [type.googleapis.com/tt.AllTypes.Nested] {} }"),
      1,
      7,
      "no registry was given; pass { registry: createRegistry(...) } including tt.AllTypes.Nested",
    );
    throwsAt(() => parse("any { [tt.AllTypes.Nested] {} }"), 1, 7, "is not a type URL; inside google.protobuf.Any write [type.googleapis.com/tt.AllTypes.Nested]");
    throwsAt(() => parse("any { [type.googleapis.com/tt.AllTypes.Nested] { zz: 1 } }"), 1, 50, 'unknown field "zz" in tt.AllTypes.Nested');
    throwsAt(() => parse("any { [type.googleapis.com/tt.AllTypes.Nested] 5 }"), 1, 48, 'expected "{" or "<" to start tt.AllTypes.Nested after "[type.googleapis.com/tt.AllTypes.Nested]"');
  });

  it("rejects mixing the expanded form with a second value or type_url", () => {
    const u = "[type.googleapis.com/tt.AllTypes.Nested] {}";
    throwsAt(() => parse(`any { ${u} ${u} }`), 1, 51, "google.protobuf.Any already has a value (set at 1:7)");
    throwsAt(() => parse(`any { ${u} type_url: "x" }`), 1, 51, "already has a value (set at 1:7)");
    throwsAt(() => parse(`any { value: "" ${u} }`), 1, 17, "already has a value (set at 1:7)");
  });

  it("prints the expanded form when the registry knows the type, the plain form otherwise", () => {
    const m = create(AllTypes);
    const r = reflect(AllTypes, m);
    r.set(AllTypes.fields.find((x) => x.name === "any")!, reflect(AnySchema, nestedAny(9)));
    assert.equal(roundTrip(AllTypes, m), "any {\n  [type.googleapis.com/tt.AllTypes.Nested] {\n    a: 9\n  }\n}\n");
    assert.equal(
      roundTrip(AllTypes, m, {}),
      'any {\n  type_url: "type.googleapis.com/tt.AllTypes.Nested"\n  value: "\\010\\t"\n}\n',
    );
  });

  it("prints the plain form when the expanded form would not read back to the same bytes", () => {
    const withUnknown = create(AnySchema, { typeUrl: "type.googleapis.com/tt.AllTypes.Nested", value: new Uint8Array([0x08, 0x01, 0xf8, 0x01, 0x02]) });
    assert.match(roundTrip(AnySchema, withUnknown), /^type_url: .*\nvalue: "\\010\\001\\370\\001\\002"\n$/);
    const garbage = create(AnySchema, { typeUrl: "type.googleapis.com/tt.AllTypes.Nested", value: new Uint8Array([0xff]) });
    assert.match(roundTrip(AnySchema, garbage), /^type_url: /);
    const nonCanonical = create(AnySchema, { typeUrl: "type.googleapis.com/tt.AllTypes.Nested", value: new Uint8Array([0x08, 0x01, 0x08, 0x02]) });
    assert.match(roundTrip(AnySchema, nonCanonical), /^type_url: /);
    const unknownType = create(AnySchema, { typeUrl: "type.googleapis.com/x.Unknown", value: new Uint8Array([1]) });
    assert.match(roundTrip(AnySchema, unknownType), /^type_url: /);
  });
});

describe("textproto well-known types and groups", () => {
  it("treats Duration, Timestamp, wrappers and Struct as ordinary messages", () => {
    const m = parse(`
      dur { seconds: 90 nanos: 500 }
      ts { seconds: 1700000000 nanos: 1 }
      wstr { value: "wrapped" }
      wi64 { value: -1 }
      st { fields { key: "k" value { list_value { values { string_value: "v" } values { null_value: NULL_VALUE } } } } }
    `);
    const msg = m.message as Record<string, unknown>;
    assert.deepEqual(msg["dur"], create(DurationSchema, { seconds: 90n, nanos: 500 }));
    assert.deepEqual(msg["ts"], create(TimestampSchema, { seconds: 1700000000n, nanos: 1 }));
    assert.equal(msg["wstr"], "wrapped");
    assert.equal(msg["wi64"], -1n);
    roundTrip(AllTypes, m.message);
    assert.equal(printText(DurationSchema, create(DurationSchema, { seconds: -5n, nanos: -10 })), "seconds: -5\nnanos: -10\n");
  });

  it("reads WKT descriptor messages (enums, repeated messages, oneofs)", () => {
    const t = parseText(
      TypeSchema,
      `name: "T" fields { kind: TYPE_STRING cardinality: CARDINALITY_REPEATED number: 1 name: "f" }
       fields: [{ kind: 5 name: "g" options { name: "o" value { [type.googleapis.com/google.protobuf.StringValue] { value: "v" } } } }]
       oneofs: ["a", "b"] syntax: SYNTAX_EDITIONS source_context { file_name: "x.proto" }`,
      { registry },
    );
    assert.equal(t.fields.length, 2);
    assert.equal(t.fields[1]!.options[0]!.value!.typeUrl, "type.googleapis.com/google.protobuf.StringValue");
    roundTrip(TypeSchema, t);
    const s = parseText(StructSchema, 'fields { key: "b" value { bool_value: true } } fields { key: "a" value { number_value: 1.5 } }');
    assert.equal(
      printText(StructSchema, s),
      'fields {\n  key: "a"\n  value {\n    number_value: 1.5\n  }\n}\nfields {\n  key: "b"\n  value {\n    bool_value: true\n  }\n}\n',
    );
    throwsAt(() => parseText(FieldSchema, "kind: TYPE_STRNG"), 1, 7, 'unknown value "TYPE_STRNG" for enum google.protobuf.Field.Kind');
  });

  it("reads and prints proto2 groups by their type name", () => {
    const m = parseText(P2, 'x: 0 MyGroup { y: 1 } Item { z: "a" } Item: < z: "b" > item { z: "c" }');
    assert.equal(get(reflect(P2, m), "x"), 0);
    assert.deepEqual(
      list(reflect(P2, m), "item").map((i) => get(i as ReflectMessage, "z")),
      ["a", "b", "c"],
    );
    assert.equal(roundTrip(P2, m), 'x: 0\nMyGroup {\n  y: 1\n}\nItem {\n  z: "a"\n}\nItem {\n  z: "b"\n}\nItem {\n  z: "c"\n}\n');
  });
});

describe("textproto printer", () => {
  const sample = () =>
    parse(`
      s: "line\\nbreak \\"q\\" tab\\t back\\\\ bell\\a del\\177 é ✓ \\u0085"
      by: "\\000\\377AZ\\"\\\\\\n"
      i64: -1 fl: 0.1 db: 1e-7 color: DARK rcolor: 7 b: true
      nested {}
      rnested { a: 1 children { b: "x" } }
      rnested { }
      ri32: [3, 1, 2]
      msi { key: "b" value: 2 } msi { key: "a" value: 1 } msi { key: "" value: 0 }
      mis { key: 10 value: "ten" } mis { key: -2 value: "neg" } mis { key: 3 value: "three" }
      mbn { key: true value {} } mbn { key: false value { a: 1 } }
    `);

  it("writes txtpbfmt-style text in field number order with sorted map entries", () => {
    const text = printText(AllTypes, sample().message);
    assert.equal(
      text,
      [
        "i64: -1",
        "fl: 0.1",
        "db: 1e-7",
        "b: true",
        's: "line\\nbreak \\"q\\" tab\\t back\\\\ bell\\007 del\\177 é ✓ \\u0085"',
        'by: "\\000\\377AZ\\"\\\\\\n"',
        "color: DARK",
        "nested {}",
        "ri32: 3",
        "ri32: 1",
        "ri32: 2",
        "rnested {",
        "  a: 1",
        "  children {",
        '    b: "x"',
        "  }",
        "}",
        "rnested {}",
        "rcolor: 7",
        "msi {",
        '  key: ""',
        "  value: 0",
        "}",
        "msi {",
        '  key: "a"',
        "  value: 1",
        "}",
        "msi {",
        '  key: "b"',
        "  value: 2",
        "}",
        "mis {",
        "  key: -2",
        '  value: "neg"',
        "}",
        "mis {",
        "  key: 3",
        '  value: "three"',
        "}",
        "mis {",
        "  key: 10",
        '  value: "ten"',
        "}",
        "mbn {",
        "  key: false",
        "  value {",
        "    a: 1",
        "  }",
        "}",
        "mbn {",
        "  key: true",
        "  value {}",
        "}",
        "",
      ].join("\n"),
    );
    roundTrip(AllTypes, sample().message);
  });

  it("honours the indent option, including one-line output", () => {
    const m = parse('nested { a: 1 children { b: "x" } } i32: 2');
    assert.equal(printText(AllTypes, m.message, { indent: "\t" }), 'i32: 2\nnested {\n\ta: 1\n\tchildren {\n\t\tb: "x"\n\t}\n}\n');
    const line = printText(AllTypes, m.message, { indent: "" });
    assert.equal(line, 'i32: 2 nested { a: 1 children { b: "x" } }');
    assert.ok(equals(AllTypes, parseText(AllTypes, line), m.message as never));
    assert.equal(printText(AllTypes, create(AllTypes)), "");
  });

  it("prints floats so they read back exactly", () => {
    const values = [0.1, 1 / 3, -1e-300, 5e-324, 1.7976931348623157e308, 1e21, 123456789.125, -0, Infinity, -Infinity];
    const m = create(AllTypes);
    const r = reflect(AllTypes, m);
    const rdb = r.get(AllTypes.fields.find((x) => x.name === "rdb")!) as unknown as { add(v: number): void };
    const rfl = r.get(AllTypes.fields.find((x) => x.name === "rfl")!) as unknown as { add(v: number): void };
    for (const v of values) {
      rdb.add(v);
      rfl.add(Math.fround(v));
    }
    const text = roundTrip(AllTypes, m);
    assert.ok(text.includes("rfl: 0.1\n"));
    assert.ok(text.includes("rdb: 0.3333333333333333\n"));
    assert.ok(text.includes("rdb: -0\n") && text.includes("rfl: inf\n") && text.includes("rdb: -inf\n"));
    const nan = parse("db: nan fl: -nan");
    assert.equal(printText(AllTypes, nan.message), "fl: nan\ndb: nan\n");
  });

  it("round-trips random messages exactly", () => {
    let seed = 12345;
    const rand = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    const strings = ["", "a", "é✓😀", 'q"\\\'', "\n\t\r\0\x7f\x85", "#not a comment", "]}>"];
    const scalar = (t: number): unknown => {
      switch (t) {
        case 9:
          return strings[rand(strings.length)];
        case 12:
          return Uint8Array.from({ length: rand(6) }, () => rand(256));
        case 8:
          return rand(2) === 1;
        case 1:
          return [0.5, -1e10, 1.2345e-3, -0, 1e-310][rand(5)];
        case 2:
          return Math.fround([0.5, -1e10, 1.2345e-3, 16777217][rand(4)]!);
        case 3:
        case 16:
        case 18:
          return [0n, -1n, 9223372036854775807n, -9223372036854775808n][rand(4)];
        case 4:
        case 6:
          return [0n, 1n, 18446744073709551615n][rand(3)];
        case 13:
        case 7:
          return [0, 1, 4294967295][rand(3)];
        default:
          return [0, -1, 2147483647, -2147483648][rand(4)];
      }
    };
    const fill = (r: ReflectMessage, depth: number) => {
      for (const field of r.desc.fields) {
        if (rand(3) === 0) continue;
        if (field.oneof && r.desc.oneofs.some((o) => o === field.oneof && o.fields.some((x) => r.isSet(x)))) continue;
        switch (field.fieldKind) {
          case "scalar":
            r.set(field, scalar(field.scalar));
            break;
          case "enum":
            r.set(field, [0, 1, 2, -3, 42][rand(5)]);
            break;
          case "message": {
            if (depth > 2 || field.message.typeName.startsWith("google.protobuf.")) break;
            const sub = reflect(field.message);
            fill(sub, depth + 1);
            r.set(field, sub);
            break;
          }
          case "list": {
            const l = r.get(field);
            for (let i = rand(4); i > 0; i--) {
              if (field.listKind === "scalar") l.add(scalar(field.scalar));
              else if (field.listKind === "enum") l.add(rand(3));
              else if (depth <= 2 && !field.message.typeName.startsWith("google.protobuf.")) {
                const sub = reflect(field.message);
                fill(sub, depth + 1);
                l.add(sub);
              }
            }
            break;
          }
          case "map": {
            const mp = r.get(field);
            for (let i = rand(4); i > 0; i--) {
              const v = field.mapKind === "message" ? reflect(field.message) : field.mapKind === "enum" ? rand(3) : scalar(field.scalar);
              mp.set(scalar(field.mapKey), v);
            }
            break;
          }
        }
      }
    };
    for (let i = 0; i < 200; i++) {
      const r = reflect(AllTypes);
      fill(r, 0);
      roundTrip(AllTypes, r.message);
    }
  });
});

describe("textproto merge and files", () => {
  it("mergeText appends repeated fields, merges messages and replaces scalars", () => {
    const m = parseText(AllTypes, 'i32: 1 ri32: 1 nested { a: 1 } msi { key: "a" value: 1 }');
    mergeText(AllTypes, m, 'i32: 2 ri32: 2 nested { b: "x" } msi { key: "b" value: 2 }');
    assert.equal(
      printText(AllTypes, m),
      'i32: 2\nnested {\n  a: 1\n  b: "x"\n}\nri32: 1\nri32: 2\nmsi {\n  key: "a"\n  value: 1\n}\nmsi {\n  key: "b"\n  value: 2\n}\n',
    );
  });

  it("parseTextFile names the file in errors", () => {
    const dir = mkdtempSync(join(tmpdir(), "textproto-"));
    try {
      const path = join(dir, "x.config");
      writeFileSync(path, "a: 1\nb: 'x'\n");
      assert.equal(get(reflect(Nested, parseTextFile(Nested, path)), "b"), "x");
      writeFileSync(path, "a: 1\n\n   bogus: 2\n");
      assert.throws(() => parseTextFile(Nested, path), (e: unknown) => e instanceof TextFormatError && e.message.startsWith(`${path}:3:4: unknown field "bogus"`));
      assert.equal(get(reflect(Nested, parseTextFile(Nested, path, { discardUnknown: true })), "a"), 1);
    } finally {
      rmSync(dir, { recursive: true });
    }
  });

  it('defaults the file name to "<text>" and tracks lines across comments and CRLF', () => {
    assert.throws(() => parseText(Nested, "# comment\r\na: 1 # trailing\r\n\r\n  b: 5\r\n"), /^TextFormatError: <text>:4:6: expected a string after "b:", got "5"$/);
  });
});
