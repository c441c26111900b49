// SPDX-License-Identifier: Apache-2.0
// The Node peer of bench/nats.py: the same job as pgcdc's NATS sink, written the way a
// competent Node developer would for throughput.
//
//   pgoutput slot (pg-logical-replication: LogicalReplicationService + PgoutputPlugin,
//   protoVersion 1) -> one event object per insert/update/delete (id, op, source{...},
//   key/before/after, roughly pgcdc's event) -> @msgpack/msgpack -> NATS.
//
// JetStream (default): js.publish(subject, data, {msgID}) with up to --window publishes in
// flight (not one await per event); a transaction's commit LSN is acknowledged to Postgres
// (service.acknowledge) only after every publish of it and of every earlier transaction has
// been acked by the stream. Core NATS (--core): nc.publish() without acks; a commit LSN is
// acknowledged after a flush (PING/PONG) issued after its last publish has returned.
//
// With --end-lsn L it exits 0 once a position >= L has been acknowledged (on the last
// commit at or past L, or on a keepalive at or past L while nothing is pending) and prints
// one JSON summary line on stdout. Errors exit 1.
//
//   node peer.mjs --dsn postgresql://postgres@127.0.0.1:5432/bench --slot s --publication p
//        --nats nats://127.0.0.1:4222 [--stream S] --subject-prefix bench.peer
//        [--end-lsn 0/1234ABCD] [--core] [--window 4096] [--source peer] [--timeout 600]
import { readFileSync } from 'node:fs';
import { LogicalReplicationService, PgoutputPlugin } from 'pg-logical-replication';
import { connect } from 'nats';
import { Encoder } from '@msgpack/msgpack';

function parseArgs(argv) {
  const o = {
    dsn: null, slot: null, publication: null, nats: 'nats://127.0.0.1:4222', stream: null,
    subjectPrefix: 'cdc.peer', endLsn: null, core: false, window: 4096, source: 'peer',
    timeout: 0, ackInterval: 100,
  };
  const names = {
    '--dsn': 'dsn', '--slot': 'slot', '--publication': 'publication', '--nats': 'nats',
    '--stream': 'stream', '--subject-prefix': 'subjectPrefix', '--end-lsn': 'endLsn',
    '--window': 'window', '--source': 'source', '--timeout': 'timeout',
    '--ack-interval': 'ackInterval',
  };
  for (let i = 2; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--core') { o.core = true; continue; }
    if (a === '-h' || a === '--help') {
      console.error('usage: node peer.mjs --dsn URL --slot S --publication P [--nats URL] ' +
        '[--stream S] [--subject-prefix P] [--end-lsn L] [--core] [--window N] ' +
        '[--source NAME] [--timeout S] [--ack-interval MS]');
      process.exit(2);
    }
    const k = names[a];
    if (!k || i + 1 >= argv.length) throw new Error(`bad argument ${a}`);
    o[k] = argv[++i];
  }
  for (const k of ['window', 'timeout', 'ackInterval']) o[k] = Number(o[k]);
  if (!o.dsn || !o.slot || !o.publication) throw new Error('--dsn, --slot and --publication are required');
  if (!(o.window >= 1)) throw new Error('--window must be >= 1');
  return o;
}

const TWO32 = 4294967296;
const lsnNum = (s) => {
  const i = s.indexOf('/');
  return parseInt(s.slice(0, i), 16) * TWO32 + parseInt(s.slice(i + 1), 16);
};
const lsnStr = (n) => `${Math.floor(n / TWO32).toString(16).toUpperCase()}/${(n % TWO32).toString(16).toUpperCase()}`;
const hex16 = (n) => (Math.floor(n / TWO32).toString(16).padStart(8, '0') +
  (n % TWO32).toString(16).padStart(8, '0')).toUpperCase();
const OPS = { insert: ['c', 'insert'], update: ['u', 'update'], delete: ['d', 'delete'] };

function vmhwmKb() {
  const m = /VmHWM:\s+(\d+)/.exec(readFileSync('/proc/self/status', 'utf8'));
  return m ? Number(m[1]) : null;
}

async function main() {
  const opt = parseArgs(process.argv);
  const endLsn = opt.endLsn ? lsnNum(opt.endLsn) : null;
  const t0 = process.hrtime.bigint();
  const encoder = new Encoder();
  const db = new URL(opt.dsn).pathname.replace(/^\//, '') || 'postgres';

  const nc = await connect({ servers: opt.nats, name: 'bench-node-peer', maxReconnectAttempts: -1 });
  const js = opt.core ? null : nc.jetstream();

  const service = new LogicalReplicationService(
    { connectionString: opt.dsn },
    // auto: false -> nothing is acknowledged unless we say so; timeoutSeconds: 0 disables the
    // library's periodic re-acknowledge of the last *received* LSN (that would confirm
    // events not yet stored).
    { acknowledge: { auto: false, timeoutSeconds: 0 }, flowControl: { enabled: false } });
  const plugin = new PgoutputPlugin({ protoVersion: 1, publicationNames: [opt.publication] });

  // ---- state ------------------------------------------------------------------------
  const queue = [];       // received, not yet published (window full)
  let qhead = 0;
  let paused = false;
  let inflight = 0;
  const txs = [];         // {end, pending, closed}, in commit order; head = oldest unconfirmed
  let txhead = 0;
  let cur = null;         // the open transaction {commitLsn, commitHex, xid, tsUs, seq, tx}
  let ackable = 0;        // everything up to here is stored (JS) / flushed (core)
  let sentAck = 0;
  let published = 0, acked = 0, events = 0;
  let finished = false;
  let flushing = false;   // core: one PING/PONG in flight at a time
  let flushWanted = 0;    // core: highest commit end published, not yet flushed

  const fail = (e) => {
    console.error(`peer: ${e && e.stack ? e.stack : e}`);
    process.exit(1);
  };

  const sendAck = (force) => {
    if (ackable > sentAck || force) {
      sentAck = Math.max(sentAck, ackable);
      service.acknowledge(lsnStr(sentAck)).catch(fail);
    }
    if (endLsn !== null && sentAck >= endLsn && !finished) finish();
  };

  const advance = () => {
    while (txhead < txs.length) {
      const t = txs[txhead];
      if (!t.closed || t.pending > 0) break;
      ackable = Math.max(ackable, t.end);
      txs[txhead++] = undefined;
    }
    if (txhead > 4096 && txhead * 2 > txs.length) { txs.splice(0, txhead); txhead = 0; }
    if (endLsn !== null && ackable >= endLsn) sendAck(false);
  };

  const onAck = (tx) => () => {
    inflight--; acked++;
    tx.pending--;
    if (tx.closed && tx.pending === 0) advance();
    if (qhead < queue.length) pump();
  };

  const coreFlush = () => {
    if (flushing || flushWanted <= ackable) return;
    flushing = true;
    const upto = flushWanted;
    nc.flush().then(() => {
      flushing = false;
      ackable = Math.max(ackable, upto);
      if (endLsn !== null && ackable >= endLsn) sendAck(false);
      coreFlush();
    }, fail);
  };

  const handle = (lsn, m) => {
    switch (m.tag) {
      case 'begin': {
        const c = lsnNum(m.commitLsn);
        cur = { commitLsn: c, commitHex: hex16(c), xid: m.xid, tsUs: Number(m.commitTime), seq: 0,
                tx: { end: 0, pending: 0, closed: false } };
        if (!opt.core) txs.push(cur.tx);
        return;
      }
      case 'commit': {
        const t = cur.tx;
        t.end = lsnNum(m.commitEndLsn);
        t.closed = true;
        cur = null;
        if (opt.core) {
          flushWanted = t.end;
          t.pending = 0;
          coreFlush();
        } else if (t.pending === 0) {
          advance();
        }
        return;
      }
      case 'insert': case 'update': case 'delete': break;
      default: return; // relation, type, origin, truncate (not published here)
    }
    const rel = m.relation;
    const [op, word] = OPS[m.tag];
    const seq = cur.seq++;
    const id = `${opt.source}/${cur.commitHex}/${seq.toString(16).toUpperCase().padStart(8, '0')}`;
    const row = m.tag === 'delete' ? (m.old || m.key) : m.new;
    const key = {};
    for (const k of rel.keyColumns) key[k] = row[k];
    const ev = {
      v: 1, id, op,
      source: {
        connector: 'node-peer', name: opt.source, db, schema: rel.schema, table: rel.name,
        lsn: lsnNum(lsn), commit_lsn: cur.commitLsn, seq, xid: cur.xid, ts_us: cur.tsUs,
        snapshot: false,
      },
      key,
      before: m.tag === 'update' ? (m.old || m.key) : (m.tag === 'delete' ? (m.old || m.key) : null),
      after: m.tag === 'delete' ? null : m.new,
      ts_ms: Date.now(),
    };
    const data = encoder.encode(ev);
    const subject = `${opt.subjectPrefix}.${rel.schema}.${rel.name}.${word}`;
    events++;
    if (opt.core) {
      nc.publish(subject, data);
      published++;
      return;
    }
    const tx = cur.tx;
    tx.pending++;
    inflight++;
    published++;
    js.publish(subject, data, { msgID: id }).then(onAck(tx), fail);
  };

  // Publish what is queued while the window allows; stop reading from Postgres while the
  // queue is long (the socket's backpressure then reaches the walsender).
  const pump = () => {
    while (qhead < queue.length && (opt.core || inflight < opt.window)) {
      const q = queue[qhead];
      queue[qhead++] = undefined;
      handle(q[0], q[1]);
    }
    if (qhead === queue.length) { queue.length = 0; qhead = 0; }
    const waiting = queue.length - qhead;
    if (!paused && waiting > 20000) {
      paused = true;
      service._connection?.stream?.pause?.();
    } else if (paused && waiting < 5000) {
      paused = false;
      service._connection?.stream?.resume?.();
    }
  };

  service.on('data', (lsn, m) => {
    if (qhead === queue.length && (opt.core || inflight < opt.window)) handle(lsn, m);
    else { queue.push([lsn, m]); pump(); }
  });
  service.on('heartbeat', (lsn, _ts, shouldRespond) => {
    // Idle (nothing received is unhandled or unacked): the server's position is confirmed,
    // as pg_recvlogical does. Otherwise only what is stored.
    const idle = qhead === queue.length && cur === null &&
      (opt.core ? !flushing && flushWanted <= ackable : txhead === txs.length);
    if (idle) ackable = Math.max(ackable, lsnNum(lsn));
    if (shouldRespond || (endLsn !== null && ackable >= endLsn)) sendAck(true);
  });
  service.on('error', fail);

  const timer = setInterval(() => sendAck(false), opt.ackInterval);
  let killer = null;
  if (opt.timeout > 0) {
    killer = setTimeout(() => fail(new Error(`timed out after ${opt.timeout}s ` +
      `(published ${published}, acked ${acked}, confirmed ${lsnStr(sentAck)})`)), opt.timeout * 1000);
  }

  async function finish() {
    finished = true;
    clearInterval(timer);
    if (killer) clearTimeout(killer);
    const elapsed = Number(process.hrtime.bigint() - t0) / 1e9;
    const ru = process.resourceUsage();
    const summary = {
      events, published, acked: opt.core ? null : acked, confirmed: lsnStr(sentAck), elapsed_s: elapsed,
      cpu_user_s: ru.userCPUTime / 1e6, cpu_sys_s: ru.systemCPUTime / 1e6, vmhwm_kb: vmhwmKb(),
      mode: opt.core ? 'core' : 'jetstream', window: opt.window,
    };
    // Let the status update reach the walsender before the connection goes away.
    await new Promise((r) => setTimeout(r, 50));
    try { await service.stop(); } catch (e) { /* connection terminated */ }
    try { await nc.close(); } catch (e) { /* closed */ }
    process.stdout.write(JSON.stringify(summary) + '\n', () => process.exit(0));
  }

  process.on('SIGTERM', () => fail(new Error('SIGTERM')));
  await service.subscribe(plugin, opt.slot);
}

main().catch((e) => {
  console.error(`peer: ${e && e.stack ? e.stack : e}`);
  process.exit(1);
});
