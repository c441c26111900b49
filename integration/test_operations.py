# SPDX-License-Identifier: Apache-2.0
"""Operations against a real PostgreSQL 15: /metrics moves with a workload, /healthz and
/readyz tell the truth (readyz false while Postgres restarts, true after), heartbeats are
written and read back without reaching the sinks, SIGHUP reloads a valid file and keeps the
running config on an invalid one, systemd's notify protocol is spoken, and `pgcdc slot
status|drop` report and refuse what they should."""

import re
import signal
import socket
import time

import harness
from harness import make_config, wait_until, lsn_to_int

TIMEOUT = 150


def setup(h, ddl="CREATE TABLE t (id int PRIMARY KEY, v text)", tables=("public.t",), **kw):
    db = h.new_db("ops")
    h.pg.execute(ddl, dbname=db)
    slot = h.unique("slot")
    cfg = make_config(h.pg.dsn(db), slot, slot, tables=list(tables), http="127.0.0.1:0", **kw)
    return db, slot, cfg


http_base = harness.metrics_base
scrape = harness.scrape_metrics
val = harness.metric


def test_metrics_move_with_a_workload(h):
    db, slot, cfg = setup(h)
    cfg["source"]["slot_poll_interval"] = "1s"
    p = h.pgcdc(cfg)
    base = http_base(p)
    p.wait_log("streaming from slot")
    m0 = scrape(base)
    (info,) = [dict(k[1]) for k in m0 if k[0] == "pgcdc_build_info"]
    assert set(info) == {"version", "libpq", "natsc", "msgpackc"} and info["libpq"].startswith("15.")
    assert val(m0, "pgcdc_source_connected") == 1
    assert val(m0, "pgcdc_sink_up", sink="out") == 1
    assert val(m0, "pgcdc_events_total", table="public.t", op="c") is None
    h.pg.execute("INSERT INTO t SELECT g, 'x' FROM generate_series(1, 300) g", dbname=db)
    h.pg.execute("UPDATE t SET v = 'y' WHERE id <= 40", dbname=db)
    h.pg.execute("DELETE FROM t WHERE id <= 5", dbname=db)
    p.wait_events(1 + 300 + 40 + 5)
    target = lsn_to_int(h.pg.query_one("SELECT pg_current_wal_lsn()::text"))

    def settled():
        m = scrape(base)
        return (val(m, "pgcdc_sink_events_total", sink="out", result="ok") == 346
                and val(m, "pgcdc_source_flushed_lsn") >= target - 1024 and m)
    m1 = wait_until(settled, 30, 0.2, "the counters to catch up")
    assert val(m1, "pgcdc_events_total", table="public.t", op="c") == 300
    assert val(m1, "pgcdc_events_total", table="public.t", op="u") == 40
    assert val(m1, "pgcdc_events_total", table="public.t", op="d") == 5
    assert val(m1, "pgcdc_events_total", table="public.t", op="s") == 1
    assert val(m1, "pgcdc_transactions_total") >= 3
    assert val(m1, "pgcdc_source_received_lsn") >= val(m1, "pgcdc_source_flushed_lsn") > \
        val(m0, "pgcdc_source_flushed_lsn")
    assert val(m1, "pgcdc_sink_inflight_events", sink="out") == 0
    assert val(m1, "pgcdc_sink_batch_duration_seconds_count", sink="out") >= 1
    assert val(m1, "pgcdc_sink_batch_duration_seconds_bucket", sink="out", le="+Inf") == \
        val(m1, "pgcdc_sink_batch_duration_seconds_count", sink="out")
    assert val(m1, "pgcdc_sink_errors_total", sink="out", kind="refused") == 0
    assert val(m1, "pgcdc_buffer_limit_bytes") == 8 * 1024 * 1024
    assert val(m1, "pgcdc_last_checkpoint_timestamp_seconds") > time.time() - 60
    # The slot is polled on a side connection (slot_poll_interval, 10 s by default; 1 s here).
    m2 = wait_until(lambda: (lambda m: val(m, "pgcdc_slot_active") == 1 and m)(scrape(base)),
                    30, 0.5, "the slot poll")
    assert val(m2, "pgcdc_slot_wal_status", status="reserved") == 1
    assert val(m2, "pgcdc_slot_retained_wal_bytes") >= 0
    assert harness.http_get(base + "/healthz") == (200, b"ok\n")
    assert harness.http_get(base + "/nope")[0] == 404
    p.terminate()
    assert p.wait(30) == 0


def test_readyz_false_while_postgres_restarts(h):
    db, slot, cfg = setup(h)
    cfg["source"]["reconnect_max"] = "1s"
    p = h.pgcdc(cfg)
    base = http_base(p)
    wait_until(lambda: harness.http_get(base + "/readyz")[0] == 200, 30, 0.1, "ready")
    assert harness.http_get(base + "/readyz")[1] == b"ready\n"
    h.pg.stop(mode="fast")
    try:
        wait_until(lambda: harness.http_get(base + "/readyz")[0] == 503, 30, 0.1, "not ready")
        status, body = harness.http_get(base + "/readyz")
        assert b"not streaming" in body, body
        # Alive all along: the process is waiting to reconnect, not hung.
        assert harness.http_get(base + "/healthz")[0] == 200
        m = scrape(base)
        assert val(m, "pgcdc_source_connected") == 0
    finally:
        h.pg.start()
    wait_until(lambda: harness.http_get(base + "/readyz")[0] == 200, 60, 0.2, "ready again")
    h.pg.execute("INSERT INTO t VALUES (1, 'after')", dbname=db)
    wait_until(lambda: any(e.get("after", {}).get("id") == 1 for e in p.events()), 30, 0.1)
    assert val(scrape(base), "pgcdc_reconnects_total", target="postgres") >= 1
    p.terminate()
    assert p.wait(30) == 0


def test_readyz_false_while_a_sink_is_down(h):
    """A sink that cannot deliver (its broker is gone) makes /readyz false with its name, and
    true again once it delivers."""
    redis = h.start_redis("redis-ops")
    db, slot, cfg = setup(h)
    cfg["sinks"] = [{"name": "cache", "type": "redis", "url": f"redis://127.0.0.1:{redis.port}",
                     "retry_max": "500ms", "tables": {"public.t": {"keys": ["t:{id}"]}}}]
    p = h.pgcdc(cfg)
    base = http_base(p)
    wait_until(lambda: harness.http_get(base + "/readyz")[0] == 200, 30, 0.1, "ready")
    redis.stop()
    try:
        h.pg.execute("INSERT INTO t VALUES (1, 'x')", dbname=db)
        wait_until(lambda: b"sink cache" in harness.http_get(base + "/readyz")[1], 30, 0.1,
                   "readyz to name the sink")
        m = scrape(base)
        assert val(m, "pgcdc_sink_up", sink="cache") == 0
        assert val(m, "pgcdc_sink_errors_total", sink="cache", kind="unavailable") >= 1
        assert val(m, "pgcdc_sink_outages_total", sink="cache") >= 1
    finally:
        redis.start()
    wait_until(lambda: harness.http_get(base + "/readyz")[0] == 200, 30, 0.2, "ready again")
    p.terminate()
    assert p.wait(30) == 0


def test_heartbeats_are_written_read_back_and_not_delivered(h):
    db, slot, cfg = setup(h)
    cfg["source"]["heartbeat_interval"] = "300ms"
    p = h.pgcdc(cfg)
    base = http_base(p)
    p.wait_log("streaming from slot")
    m = wait_until(lambda: (lambda m: (val(m, "pgcdc_heartbeats_received_total") or 0) >= 3
                            and m)(scrape(base)), 30, 0.2, "heartbeats read back")
    assert val(m, "pgcdc_heartbeats_total") >= val(m, "pgcdc_heartbeats_received_total")
    assert val(m, "pgcdc_heartbeat_latency_seconds") is not None
    assert val(m, "pgcdc_monitor_errors_total") == 0
    # The slot moves with the heartbeats alone.
    start = lsn_to_int(h.pg.slot_info(slot)["confirmed_flush_lsn"])
    wait_until(lambda: lsn_to_int(h.pg.slot_info(slot)["confirmed_flush_lsn"]) > start, 30, 0.2,
               "the slot to advance on heartbeats")
    h.pg.execute("INSERT INTO t VALUES (1, 'x')", dbname=db)
    wait_until(lambda: any(e["op"] == "c" for e in p.events()), 30, 0.1)
    assert not [e for e in p.events() if e["op"] == "m"], "heartbeats must not reach the sinks"
    p.terminate()
    assert p.wait(30) == 0


def test_heartbeat_without_execute_is_reported(h):
    """A role without EXECUTE on pg_logical_emit_message: check fails naming the grant, and
    run keeps streaming, counting the failures."""
    db, slot, cfg = setup(h)
    role = h.unique("norole")
    h.pg.create_role(role, replication=True)
    h.pg.execute(f"CREATE PUBLICATION {slot} FOR TABLE t", dbname=db)
    h.pg.execute("REVOKE EXECUTE ON FUNCTION pg_logical_emit_message(boolean, text, text) "
                 "FROM PUBLIC", dbname=db)
    cfg["source"]["dsn"] = h.pg.dsn(db, user=role)
    cfg["source"]["heartbeat_interval"] = "200ms"
    r = h.pgcdc_cmd(["check"], cfg)
    assert r.returncode == 78, r.stdout
    assert "lacks EXECUTE on pg_logical_emit_message" in r.stdout, r.stdout
    p = h.pgcdc(cfg)
    base = http_base(p)
    p.wait_log("streaming from slot")
    wait_until(lambda: (val(scrape(base), "pgcdc_monitor_errors_total") or 0) >= 2, 30, 0.2)
    h.pg.execute("INSERT INTO t VALUES (1, 'x')", dbname=db)
    wait_until(lambda: any(e["op"] == "c" for e in p.events()), 30, 0.1)
    p.terminate()
    assert p.wait(30) == 0


def test_sighup_reloads_a_valid_file_and_keeps_the_old_on_an_invalid_one(h):
    db, slot, cfg = setup(h)
    cfg["log"] = {"level": "info", "format": "json"}
    cfg["source"]["status_interval"] = "1s"  # a debug line (a status update) comes soon
    p = h.pgcdc(cfg)
    p.wait_log("streaming from slot")
    # Valid: debug logging and a rate limit, applied without a restart.
    cfg["log"]["level"] = "debug"
    cfg["sinks"][0]["rate_events"] = 20
    p.write_config(cfg)
    pid = p.pid
    p.signal(signal.SIGHUP)
    p.wait_log(r'"reload".*reloaded .*log level debug.*1 sink\(s\) reconfigured')
    p.wait_log(r'"level":"debug"')  # status updates are logged at debug
    t0 = time.monotonic()
    h.pg.execute("INSERT INTO t SELECT g, 'x' FROM generate_series(1, 60) g", dbname=db)
    p.wait_events(61, timeout=30)
    took = time.monotonic() - t0
    assert took >= 1.5, f"60 events at 20/s took {took:.2f}s: the new rate limit was not applied"
    # A structural change is named, not applied.
    cfg["checkpoint"]["path"] = "@DIR@/elsewhere"
    p.write_config(cfg)
    p.signal(signal.SIGHUP)
    p.wait_log(r"checkpoint: changed; restart pgcdc to apply it")
    # Invalid: the running config stays, and the process keeps streaming.
    p.write_config(harness.to_yaml(cfg) + "\nsinks: [\n")
    p.signal(signal.SIGHUP)
    p.wait_log(r'"level":"error".*"reload".*keeping the running configuration')
    assert p.popen.poll() is None and p.pid == pid
    h.pg.execute("INSERT INTO t VALUES (1000, 'after')", dbname=db)
    wait_until(lambda: any(e.get("after", {}).get("id") == 1000 for e in p.events()), 30, 0.1)
    assert not (p.dir / "elsewhere").exists()
    p.terminate()
    assert p.wait(30) == 0


def test_systemd_notify(h):
    """READY=1 once streaming, RELOADING=1 with MONOTONIC_USEC on SIGHUP then READY=1,
    STOPPING=1 on SIGTERM, WATCHDOG=1 when $WATCHDOG_USEC asks for it."""
    db, slot, cfg = setup(h)
    path = str(h.tmpdir("notify") / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.2)
    got = []

    def drain():
        try:
            while True:
                got.append(sock.recv(4096).decode())
        except socket.timeout:
            pass
        return got

    try:
        p = h.pgcdc(cfg, start=False)
        p.env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000"}
        p.start()
        wait_until(lambda: any("READY=1" in m for m in drain()), 30, 0.1, "READY=1")
        wait_until(lambda: any("STATUS=streaming from slot" in m for m in drain()), 30, 0.1,
                   "STATUS=streaming")
        wait_until(lambda: any("WATCHDOG=1" in m for m in drain()), 10, 0.1, "WATCHDOG=1")
        n = len(got)
        p.signal(signal.SIGHUP)
        wait_until(lambda: any("READY=1" in m for m in drain()[n:]), 10, 0.1, "READY after reload")
        reloading = [m for m in got[n:] if "RELOADING=1" in m]
        assert reloading and re.search(r"MONOTONIC_USEC=\d+", reloading[0]), got[n:]
        p.terminate()
        assert p.wait(30) == 0
        assert any("STOPPING=1" in m for m in drain()), got
        # Postgres unreachable: started all the same (waiting for it is the job), saying so,
        # and the watchdog is fed while it waits.
        got.clear()
        cfg["source"]["dsn"] = f"host=127.0.0.1 port={harness.free_port()} dbname=x user=x"
        q = h.pgcdc(cfg, name="pgcdc-nopg", start=False)
        q.env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000"}
        q.start()
        wait_until(lambda: any("READY=1" in m for m in drain()), 30, 0.1, "READY=1 without PG")
        wait_until(lambda: any("STATUS=reconnecting to Postgres" in m for m in drain()), 30, 0.1)
        n = sum("WATCHDOG=1" in m for m in got)
        wait_until(lambda: sum("WATCHDOG=1" in m for m in drain()) >= n + 3, 10, 0.1,
                   "watchdog pings while reconnecting")
        q.terminate()
        assert q.wait(30) == 0
    finally:
        sock.close()


def test_slot_status_and_drop(h):
    db, slot, cfg = setup(h)
    p = h.pgcdc(cfg)
    p.wait_log("streaming from slot")
    h.pg.execute("INSERT INTO t VALUES (1, 'x')", dbname=db)
    p.wait_events(2)
    cfg_on_disk = p.config_path.read_text()
    r = h.pgcdc_cmd(["slot", "status"], cfg_on_disk)
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"active\s+yes", r.stdout) and re.search(r"wal_status\s+reserved", r.stdout)
    assert re.search(r"checkpoint\s+[0-9A-F]+/[0-9A-F]+", r.stdout), r.stdout
    r = h.pgcdc_cmd(["slot", "drop", slot], cfg_on_disk)
    assert r.returncode == 1 and "stop pgcdc first" in r.stderr, r.stderr
    p.terminate()
    assert p.wait(30) == 0
    r = h.pgcdc_cmd(["slot", "drop"], cfg_on_disk)
    assert r.returncode == 2 and "to confirm, name it" in r.stderr, r.stderr
    r = h.pgcdc_cmd(["slot", "drop", slot], cfg_on_disk)
    assert r.returncode == 0 and f"dropped slot {slot}" in r.stdout, r.stdout + r.stderr
    assert "refuse to start (exit 3)" in r.stdout
    assert h.pg.slot_info(slot) is None
    r = h.pgcdc_cmd(["slot", "status"], cfg_on_disk)
    assert r.returncode == 3 and "pgcdc run exits 3" in r.stdout, r.stdout
    p.start()
    assert p.wait(30) == 3


def test_http_listen_errors(h):
    db, slot, cfg = setup(h)
    cfg["http"]["listen"] = "127.0.0.1:99999"
    r = h.pgcdc_cmd(["run"], cfg)
    assert r.returncode == 78 and "http.listen" in r.stderr, r.stderr
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        cfg["http"]["listen"] = f"127.0.0.1:{busy.getsockname()[1]}"
        r = h.pgcdc_cmd(["run"], cfg, timeout=30)
        assert r.returncode == 1 and "cannot listen" in r.stderr, r.stderr
    finally:
        busy.close()
    # A bare port means loopback, never every interface.
    port = harness.free_port()
    cfg["http"]["listen"] = str(port)
    p = h.pgcdc(cfg)
    assert http_base(p) == f"http://127.0.0.1:{port}"
    p.terminate()
    assert p.wait(30) == 0


def test_systemd_unit_verifies(h):
    """contrib/pgcdc.service is a valid unit (systemd-analyze verify, with ExecStart on the
    binary under test) and keeps its promises: Type=notify, a drain budget under systemd's
    stop timeout, no restart on the exit codes that need an operator, and hardening."""
    import shutil
    import subprocess
    tool = shutil.which("systemd-analyze")
    assert tool, "systemd-analyze is missing (scripts/install-deps installs systemd)"
    unit = (harness.REPO / "contrib" / "pgcdc.service").read_text()
    d = h.tmpdir("unit")
    (d / "pgcdc.service").write_text(unit.replace("/usr/bin/pgcdc", str(harness.pgcdc_bin())))
    r = subprocess.run([tool, "verify", str(d / "pgcdc.service")], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and "pgcdc.service" not in r.stderr, r.stdout + r.stderr
    settings = dict(l.split("=", 1) for l in unit.splitlines() if "=" in l and not
                    l.startswith("#"))
    assert settings["Type"] == "notify" and settings["ExecReload"].endswith("-HUP $MAINPID")
    assert int(settings["TimeoutStopSec"]) > 30, "the 30 s drain must end before SIGKILL"
    assert set(settings["RestartPreventExitStatus"].split()) >= {"3", "65", "78"}
    for k in ("NoNewPrivileges", "ProtectSystem", "StateDirectory", "PrivateTmp"):
        assert k in settings, k


def test_secrets_stay_out_of_logs_metrics_and_reports(h):
    """Passwords in the DSN and in sink URLs never show: not in the log (while sinks fail and
    log their errors), not on /metrics, not in check's report, not on the command line."""
    db, slot, cfg = setup(h)
    secrets = ["SeCrEtPg1", "SeCrEtRedis2", "SeCrEtNats3", "SeCrEtHook4"]
    dead = harness.free_port()
    cfg["source"]["dsn"] = h.pg.dsn(db) + f" password={secrets[0]}"
    cfg["sinks"] = [
        {"name": "cache", "type": "redis", "url": f"redis://127.0.0.1:{dead}",
         "password": secrets[1], "retry_max": "200ms",
         "tables": {"public.t": {"keys": ["t:{id}"]}}},
        {"name": "events", "type": "nats", "url": f"nats://u:{secrets[2]}@127.0.0.1:{dead}",
         "retry_max": "200ms"},
        {"name": "hook", "type": "webhook", "url": f"http://127.0.0.1:{dead}/in",
         "secret": secrets[3], "retry_max": "200ms"},
    ]
    cfg["log"] = {"level": "debug"}
    cfg["pipeline"] = {"shutdown_timeout": "2s"}
    p = h.pgcdc(cfg)
    base = http_base(p)
    p.wait_log("streaming from slot")
    h.pg.execute("INSERT INTO t VALUES (1, 'x')", dbname=db)
    p.wait_log(r"sink:cache.*(retry|failed)")
    p.wait_log(r"sink:events.*(retry|failed)")
    with open(f"/proc/{p.pid}/cmdline", "rb") as f:
        cmdline = f.read().decode(errors="replace")
    metrics = harness.http_get(base + "/metrics")[1].decode()
    p.terminate()
    p.wait(60)
    check = h.pgcdc_cmd(["check"], p.config_text, timeout=90)
    texts = {"log": p.log_path.read_text(errors="replace"), "metrics": metrics,
             "cmdline": cmdline, "check": check.stdout + check.stderr}
    assert "password=***" in texts["check"] or "***" in texts["check"], texts["check"]
    for where, text in texts.items():
        for s in secrets:
            assert s not in text, f"{s} appears in the {where}"
