# SPDX-License-Identifier: Apache-2.0
"""Matrix R24: TLS on every hop, and the negative cases.

A test CA signs a certificate for 127.0.0.1 (subjectAltName IP). Postgres requires TLS and
pgcdc connects with sslmode=verify-full; nats-server speaks TLS only and the NATS sink
verifies it (tls_ca_file); the webhook receiver is HTTPS. Changes flow end to end.
Then each hop with a CA that did not sign the server's certificate, and Postgres with a
host name the certificate does not carry: `pgcdc check` fails fast (exit 78) naming the
hop and the TLS error, and `pgcdc run` never reports anything delivered.
(Redis: Debian 12's hiredis 0.14 has no TLS, so the Redis sink reaches a TLS Redis only
through a local tunnel such as stunnel, outside pgcdc; not tested here.)"""

import json
import os
import ssl
import subprocess
import threading
import http.server

import harness
from faultlib import FlushSampler, verify_ids
from harness import make_config, wait_until, lsn_to_int

TIMEOUT = 180


def make_ca(d, name):
    key, crt = d / f"{name}-ca.key", d / f"{name}-ca.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", f"/CN=pgcdc test CA {name}", "-keyout", key, "-out", crt],
                   check=True, capture_output=True)
    return key, crt


def make_cert(d, ca_key, ca_crt, name, san="IP:127.0.0.1"):
    key, csr, crt = d / f"{name}.key", d / f"{name}.csr", d / f"{name}.pem"
    ext = d / f"{name}.ext"
    ext.write_text(f"subjectAltName={san}\n")
    subprocess.run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
                    "-keyout", key, "-out", csr], check=True, capture_output=True)
    subprocess.run(["openssl", "x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key,
                    "-CAcreateserial", "-days", "2", "-extfile", ext, "-out", crt],
                   check=True, capture_output=True)
    os.chmod(key, 0o600)
    return key, crt


class HttpsReceiver:
    def __init__(self, cert, key):
        self.events = []
        rcv = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                rcv.events.extend(json.loads(body)["events"])
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        self.srv.socket = ctx.wrap_socket(self.srv.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.srv.server_address[1]}/hook"
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def stop(self):
        self.srv.shutdown()
        self.srv.server_close()


def stream_messages(nats, stream="CDC_APP"):
    st, body = harness.http_get(f"{nats.monitor_url}/jsz?streams=true", 2)
    for acc in json.loads(body).get("account_details", []):
        for s in acc.get("stream_detail", []):
            if s["name"] == stream:
                return s["state"]["messages"]
    return 0


def test_r24_tls_everywhere_and_the_negative_cases(h):
    d = h.tmpdir("tls")
    ca_key, ca = make_ca(d, "good")
    _, other_ca = make_ca(d, "other")
    srv_key, srv_crt = make_cert(d, ca_key, ca, "server")
    # Postgres reads its key as the postgres user, and wants it private.
    pgdir = h.tmpdir("tls-pg")
    for f in (srv_key, srv_crt):
        (pgdir / f.name).write_bytes(f.read_bytes())
    harness._chown_pg(pgdir)
    for f in pgdir.iterdir():
        harness._chown_pg(f)
        os.chmod(f, 0o600)
    pg = h.start_postgres(name="pg_tls", extra_conf={
        "ssl": "on", "ssl_cert_file": str(pgdir / srv_crt.name),
        "ssl_key_file": str(pgdir / srv_key.name)})
    db = pg.create_database("tls")
    pg.execute("CREATE TABLE t (id int PRIMARY KEY, v text)", dbname=db)
    nats = h.start_nats(name="nats_tls", extra_args=["--tls", "--tlscert", str(srv_crt),
                                                     "--tlskey", str(srv_key)])
    rcv = HttpsReceiver(srv_crt, srv_key)
    try:
        def config(pg_ca=ca, nats_ca=ca, hook_ca=ca, host="127.0.0.1"):
            dsn = pg.dsn(db, host=host, sslmode="verify-full", sslrootcert=str(pg_ca))
            return make_config(dsn, "tls", "tls", tables=["public.t"], sinks=[
                {"name": "events", "type": "nats", "url": f"tls://127.0.0.1:{nats.port}",
                 "tls_ca_file": str(nats_ca), "create_stream": True},
                {"name": "hook", "type": "webhook", "url": rcv.url,
                 "tls_ca_file": str(hook_ca)}])

        good = h.pgcdc_cmd(["check"], config())
        assert good.returncode == 0, good.stdout + good.stderr
        p = h.pgcdc(config())
        p.wait_log("streaming from slot")
        # The flush never passes what the HTTPS receiver has (nor the stream: acked publishes).
        with FlushSampler(pg, "tls", lambda: [e["id"] for e in list(rcv.events)]) as sampler:
            for i in range(0, 100, 10):
                pg.execute(f"INSERT INTO t SELECT g, 'v' FROM generate_series({i + 1}, "
                           f"{i + 10}) g", dbname=db)
            end = lsn_to_int(pg.query_one("SELECT pg_current_wal_lsn()::text"))
            wait_until(lambda: lsn_to_int(pg.slot_info("tls")["confirmed_flush_lsn"]) >= end,
                       60, 0.2, "delivery over TLS")
        sampler.check(verify_ids(list(rcv.events)))
        assert stream_messages(nats) >= 101  # the schema event and the 100 rows
        assert len([e for e in rcv.events if e["op"] == "c"]) == 100
        ssl_in_use = pg.query_one("SELECT bool_and(ssl) FROM pg_stat_ssl JOIN "
                                  "pg_stat_replication USING (pid)")
        assert ssl_in_use in (True, "t"), ssl_in_use
        p.terminate()
        assert p.wait(30) == 0

        # Each hop, with a CA that did not sign its server: a clear, fast refusal.
        cases = [("postgres", config(pg_ca=other_ca), "certificate verify failed"),
                 ("postgres (host name)", config(host="localhost"), "localhost"),
                 ("nats", config(nats_ca=other_ca), "SSL handshake error"),
                 ("webhook", config(hook_ca=other_ca), "SSL certificate problem")]
        for what, cfg, want in cases:
            r = h.pgcdc_cmd(["check"], cfg, timeout=60)
            out = r.stdout + r.stderr
            assert r.returncode == 78, f"{what}: exit {r.returncode}\n{out}"
            assert want in out, f"{what}: '{want}' not in\n{out}"
            print(f"{what}: refused ({[l for l in out.splitlines() if 'FAIL' in l][:1]})")
    finally:
        rcv.stop()
