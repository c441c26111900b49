// SPDX-License-Identifier: Apache-2.0
// Decode pgcdc's interop fixtures with @msgpack/msgpack and check them.
//
// Usage: node decode_js.mjs DIR   (DIR written by the interop writer, see run.sh;
//        install the decoder first: npm ci --prefix tests/interop)
//
// For every event in DIR/events.bin two checks run:
//   1. decode(bytes, {useBigInt64: true}) equals the hand-written expectation in
//      expected.jsonl (str vs bin kept apart; JS has one number type, so int vs float is
//      not checked here, Python does that);
//   2. pgcdc's JSON rendering (rendered.jsonl) equals this decoding rendered by the rules of
//      docs/event-format.md (bin -> base64, NaN/Infinity -> strings), key order included.
// Prints "N passed, N failed"; exit status 1 if anything failed.
import { readFileSync } from "node:fs";
import { decode } from "@msgpack/msgpack";

const dir = process.argv[2];

function* readEvents(path) {
  const data = readFileSync(path);
  let off = 0;
  while (off < data.length) {
    const n = data.readUInt32BE(off);
    yield data.subarray(off + 4, off + 4 + n);
    off += 4 + n;
  }
}

const isTagged = (w) =>
  w !== null && typeof w === "object" && !Array.isArray(w) &&
  Object.keys(w).length === 1 && Object.keys(w)[0].startsWith("$");

const isInt = (v) => typeof v === "bigint" || (typeof v === "number" && Number.isInteger(v));

// With useBigInt64, values sent in the 64-bit msgpack formats arrive as BigInt and smaller
// ones as Number; compare integers exactly as BigInt either way.
function sameInt(got, want) {
  return isInt(got) && BigInt(got) === BigInt(want);
}

function match(got, want, path, errors) {
  if (isTagged(want)) {
    const [tag, spec] = Object.entries(want)[0];
    let ok;
    if (tag === "$bin") {
      ok = got instanceof Uint8Array &&
        Buffer.from(got).equals(Buffer.from(spec, "base64"));
    } else if (tag === "$f64") {
      const w = Number(spec); // Number() accepts "NaN", "Infinity", "-Infinity"
      ok = typeof got === "number" && (Object.is(got, w) || got === w);
    } else if (tag === "$int") {
      ok = sameInt(got, spec);
    } else {
      ok = false;
    }
    if (!ok) errors.push(`${path}: got ${String(got)}, want ${tag} ${spec}`);
  } else if (Array.isArray(want)) {
    if (!Array.isArray(got) || got.length !== want.length) {
      errors.push(`${path}: got ${String(got)}, want an array of ${want.length}`);
      return;
    }
    want.forEach((w, i) => match(got[i], w, `${path}[${i}]`, errors));
  } else if (want !== null && typeof want === "object") {
    if (got === null || typeof got !== "object" || Array.isArray(got) ||
        got instanceof Uint8Array) {
      errors.push(`${path}: got ${String(got)}, want a map`);
      return;
    }
    const gk = Object.keys(got).join(","), wk = Object.keys(want).join(",");
    if (gk !== wk) errors.push(`${path}: keys ${gk}, want ${wk}`);
    for (const k of Object.keys(want)) {
      if (k in got) match(got[k], want[k], `${path}.${k}`, errors);
    }
  } else if (typeof want === "number") {
    if (!sameInt(got, want)) errors.push(`${path}: got ${String(got)}, want ${want}`);
  } else if (got !== want) {
    errors.push(`${path}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
  }
}

// Render a decoded value by the JSON rules of docs/event-format.md. JSON.parse turns
// integers beyond 2^53 into the nearest double, so BigInts become that double too.
function toJsonValue(v) {
  if (v instanceof Uint8Array) return Buffer.from(v).toString("base64");
  if (typeof v === "bigint") return Number(v);
  if (typeof v === "number" && !Number.isFinite(v)) {
    return Number.isNaN(v) ? "NaN" : v > 0 ? "Infinity" : "-Infinity";
  }
  if (Array.isArray(v)) return v.map(toJsonValue);
  if (v !== null && typeof v === "object") {
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, toJsonValue(x)]));
  }
  return v;
}

function sameJson(a, b) {
  if (Array.isArray(a)) {
    return Array.isArray(b) && a.length === b.length && a.every((x, i) => sameJson(x, b[i]));
  }
  if (a !== null && typeof a === "object") {
    if (b === null || typeof b !== "object" || Array.isArray(b)) return false;
    const ka = Object.keys(a), kb = Object.keys(b);
    return ka.join("\0") === kb.join("\0") && ka.every((k) => sameJson(a[k], b[k]));
  }
  return Object.is(a, b) || a === b;
}

const events = [...readEvents(`${dir}/events.bin`)];
const lines = (f) => readFileSync(`${dir}/${f}`, "utf8").split("\n").filter((l) => l !== "");
const expected = lines("expected.jsonl").map((l) => JSON.parse(l));
const rendered = lines("rendered.jsonl");

let passed = 0, failed = 0;
if (events.length === 0 || events.length !== expected.length ||
    events.length !== rendered.length) {
  console.log(`fixture files disagree: ${events.length} events, ${expected.length} expected, ` +
    `${rendered.length} rendered`);
  failed++;
}
events.forEach((raw, i) => {
  const exp = expected[i], name = exp.name;
  const got = decode(raw, { useBigInt64: true });

  const errors = [];
  match(got, exp.event, name, errors);
  if (errors.length) {
    failed++;
    console.log(`FAIL ${name} (decode):\n  ${errors.join("\n  ")}`);
  } else {
    passed++;
  }

  const mine = toJsonValue(got);
  if (sameJson(JSON.parse(rendered[i]), mine)) {
    passed++;
  } else {
    failed++;
    console.log(`FAIL ${name} (json): pgcdc rendered\n  ${rendered[i]}\n` +
      `but the decoded event renders as\n  ${JSON.stringify(mine)}`);
  }
});
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
