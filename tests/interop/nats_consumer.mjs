// SPDX-License-Identifier: Apache-2.0
// Read pgcdc events back from NATS JetStream with the npm `nats` client and @msgpack/msgpack.
//
// Usage: node nats_consumer.mjs --url URL --stream NAME [--subject FILTER] [--count N]
//                               [--timeout-ms T]
//   URL      nats://host:port (several separated by commas); default nats://127.0.0.1:4222
//   FILTER   subject filter of the consumer; default: the whole stream
//   N        stop after N messages; default: read until the timeout
//   T        give up waiting after T ms in all (default 10000)
// (install the clients first: npm ci --prefix tests/interop)
//
// An ordered (ephemeral, push-free) consumer reads the stream from its first message. Each
// message is printed as one JSON line
//   {"subject":"...","seq":N,"headers":{"Name":"value",...},"event":{...}}
// where event is the payload decoded with @msgpack/msgpack (useBigInt64) unless a Content-Type
// header other than application/vnd.msgpack says it is something else, rendered as in
// docs/event-format.md §8: bin (Uint8Array) as base64, integers beyond 2^53 as decimal
// strings, NaN/Infinity as strings; event is null and "data" (base64) is given instead when
// the payload is not msgpack. A header with several values is rendered as an array.
// Exit status: 0 when N messages were read (or, without --count, at the timeout), 1 when
// fewer than N arrived in time or on any error (one line on stderr).
import { connect } from "nats";
import { decode } from "@msgpack/msgpack";

function parseArgs(argv) {
  const a = { url: "nats://127.0.0.1:4222", stream: null, subject: null, count: null,
              timeoutMs: 10000 };
  for (let i = 0; i < argv.length; i++) {
    const o = argv[i];
    const v = argv[i + 1];
    if (v === undefined) throw new Error(`option ${o} needs a value`);
    switch (o) {
      case "--url": a.url = v; break;
      case "--stream": a.stream = v; break;
      case "--subject": a.subject = v; break;
      case "--count": a.count = Number.parseInt(v, 10); break;
      case "--timeout-ms": a.timeoutMs = Number.parseInt(v, 10); break;
      default: throw new Error(`unknown option ${o}`);
    }
    i++;
  }
  if (!a.stream) throw new Error("missing --stream");
  if (a.count !== null && !(a.count >= 0)) throw new Error("bad --count");
  if (!(a.timeoutMs > 0)) throw new Error("bad --timeout-ms");
  return a;
}

const MSGPACK = "application/vnd.msgpack";
const b64 = (u8) => Buffer.from(u8.buffer, u8.byteOffset, u8.byteLength).toString("base64");

function render(v) {
  if (v instanceof Uint8Array) return b64(v);
  if (typeof v === "bigint") {
    const big = BigInt(Number.MAX_SAFE_INTEGER);
    return v <= big && v >= -big ? Number(v) : v.toString();
  }
  if (typeof v === "number" && !Number.isFinite(v)) return String(v);
  if (Array.isArray(v)) return v.map(render);
  if (v instanceof Map) {
    const o = {};
    for (const [k, x] of v) o[String(k)] = render(x);
    return o;
  }
  if (v !== null && typeof v === "object") {
    const o = {};
    for (const [k, x] of Object.entries(v)) o[k] = render(x);
    return o;
  }
  return v;
}

function headersOf(m) {
  const out = {};
  if (!m.headers) return out;
  for (const k of m.headers.keys()) {
    const vals = m.headers.values(k);
    out[k] = vals.length === 1 ? vals[0] : vals;
  }
  return out;
}

function withTimeout(promise, ms, what) {
  let t;
  const timer = new Promise((_, reject) => {
    t = setTimeout(() => reject(new Error(`${what}: timed out after ${ms} ms`)), ms);
  });
  return Promise.race([promise, timer]).finally(() => clearTimeout(t));
}

async function main() {
  const a = parseArgs(process.argv.slice(2));
  const deadline = Date.now() + a.timeoutMs;
  const left = () => Math.max(1, deadline - Date.now());
  const nc = await connect({ servers: a.url.split(","), timeout: Math.min(5000, a.timeoutMs),
                             reconnect: false, name: "pgcdc-nats-consumer" });
  let n = 0;
  try {
    const js = nc.jetstream();
    const opts = a.subject ? { filterSubjects: a.subject } : {};
    const consumer = await withTimeout(js.consumers.get(a.stream, opts), left(), "consumer");
    while (a.count === null || n < a.count) {
      const want = a.count === null ? 256 : Math.min(256, a.count - n);
      const expires = Math.max(1000, Math.min(left(), 5000));
      if (Date.now() >= deadline) break;
      const batch = await consumer.fetch({ max_messages: want, expires });
      for await (const m of batch) {
        const headers = headersOf(m);
        const ct = Object.entries(headers).find(([k]) => k.toLowerCase() === "content-type");
        const ctv = ct ? String(Array.isArray(ct[1]) ? ct[1][0] : ct[1]).toLowerCase() : null;
        let event = null;
        let data;
        try {
          if (ctv !== null && !ctv.startsWith(MSGPACK)) throw new Error("not msgpack");
          event = render(decode(m.data, { useBigInt64: true }));
        } catch {
          data = b64(m.data);
        }
        const rec = { subject: m.subject, seq: m.seq, headers, event };
        if (data !== undefined) rec.data = data;
        process.stdout.write(JSON.stringify(rec) + "\n");
        n++;
      }
    }
  } finally {
    await nc.close();
  }
  if (a.count !== null && n < a.count) {
    process.stderr.write(`nats_consumer: got ${n} of ${a.count} messages in ${a.timeoutMs} ms\n`);
    return 1;
  }
  return 0;
}

main().then((rc) => { process.exitCode = rc; }, (e) => {
  process.stderr.write(`nats_consumer: ${e && e.message ? e.message : e}\n`.replace(/\n(?!$)/g, " "));
  process.exitCode = 1;
});
