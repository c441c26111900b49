# SPDX-License-Identifier: Apache-2.0
"""The plugin SDK end to end: `cmake --install` into a temporary prefix, the example sink
built out of tree from there (find_package and pkg-config), pgcdc running it against a real
Postgres (by `load:` and from the plugin directory), and the conformance kit
(`pgcdc sink-check`) passing for the example and every built-in sink with its server, and
failing, naming the scenario, for deliberately broken plugins."""

import os
import shutil
import subprocess

from harness import REPO, make_config, wait_until, lsn_to_int, pgcdc_bin, redis_cmd
from searchd import start_searchd
from test_webhook import Receiver

TIMEOUT = 300


def build_dir():
    return pgcdc_bin().parent


def kit(h, plugin, sinks, sink=None, timeout=180):
    """Run the kit on plugin (a .so path or a built-in type) for the first/named sink."""
    cfg = make_config("host=127.0.0.1 port=1 dbname=nowhere", "kit", "kit", sinks=sinks)
    args = ["sink-check", str(plugin)] + ([sink] if sink else [])
    r = h.pgcdc_cmd(args, cfg, timeout=timeout)
    assert r.returncode is not None, "the kit did not finish"
    return r


def lines(r):
    return {ln.split()[1]: ln for ln in r.stdout.splitlines() if ln[:4] in ("PASS", "FAIL")}


def assert_passes(r):
    assert r.returncode == 0, r.stdout + r.stderr
    got = lines(r)
    assert set(got) == {"descriptor", "lifecycle", "ack-contract", "threads", "redelivery",
                        "flush", "stop", "no-start"}, r.stdout
    assert "8 passed, 0 failed" in r.stdout, r.stdout


# ---- broken plugins: the kit names the broken rule ----

def test_the_kit_fails_broken_plugins_on_the_right_scenario(h):
    so = build_dir() / "tests"
    sink = [{"name": "v", "type": "variant"}]
    good = kit(h, so / "libpgcdc_test_sink_good.so", sink)
    assert_passes(good)
    cases = {
        "double_ack": ("ack-contract", "acked twice"),
        "missing_ack": ("ack-contract", "got no ack"),
        "ack_after_destroy": ("stop", "after destroy()"),
    }
    for variant, (scenario, words) in cases.items():
        r = kit(h, so / f"libpgcdc_test_sink_{variant}.so", sink)
        assert r.returncode == 1, (variant, r.stdout)
        got = lines(r)
        assert got[scenario].startswith("FAIL") and words in got[scenario], (variant, r.stdout)
        assert got["descriptor"].startswith("PASS"), r.stdout
    # Not a sink at all: the loader's one-line refusal, as the descriptor scenario.
    r = kit(h, so / "libpgcdc_test_sink_no_entry.so", sink)
    assert r.returncode == 78 and "FAIL descriptor" in r.stdout, r.stdout


# ---- every built-in sink passes, against its real server ----

def test_builtin_sinks_pass_the_kit(h):
    out = h.tmpdir("kit-stdout") / "out.jsonl"
    assert_passes(kit(h, "stdout", [{"name": "o", "type": "stdout", "path": str(out)}]))
    nats = h.start_nats(name="nats_kit")
    assert_passes(kit(h, "nats", [{"name": "n", "type": "nats", "url": nats.url,
                                   "create_stream": True, "ack_timeout": "2s"}]))
    assert_passes(kit(h, "nats", [{"name": "n", "type": "nats", "url": nats.url,
                                   "jetstream": False}]))
    r = h.start_redis(name="redis_kit")
    tables = {"public.sinkcheck": {"keys": ["k:{id}"]}}
    for mode in ("unlink", "set"):
        assert_passes(kit(h, "redis", [{"name": "c", "type": "redis", "url": r.url,
                                        "tables": tables, "mode": mode}]))
    assert redis_cmd(r.port, "PING") in (b"PONG", "PONG")
    mc = h.start_memcached(name="mc_kit")
    assert_passes(kit(h, "memcached", [{"name": "m", "type": "memcached",
                                        "servers": [mc.server], "tables": tables}]))
    srv = start_searchd(h, name="searchd_kit")
    assert_passes(kit(h, "search", [{"name": "s", "type": "search", "url": srv.url}]))
    assert len(srv.dump("public_sinkcheck")) > 0
    rcv = Receiver(secret=None, source="sinkcheck")
    try:
        assert_passes(kit(h, "webhook", [{"name": "w", "type": "webhook", "url": rcv.url}]))
        assert rcv.events
    finally:
        rcv.stop()


# ---- the SDK: install, build the example out of tree, run it ----

def test_example_plugin_built_out_of_tree_against_the_installed_sdk(h):
    prefix = h.tmpdir("sdk-prefix")
    r = subprocess.run(["cmake", "--install", str(build_dir()), "--prefix", str(prefix)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    inc = prefix / "include" / "pgcdc"
    assert (inc / "sink.h").exists() and (inc / "version.h").exists()
    libdir = next(p for p in (prefix / "lib", prefix / "lib64") if p.exists())
    pc = subprocess.run(["pkg-config", "--cflags", "--variable=plugindir", "pgcdc-sink"],
                        capture_output=True, text=True,
                        env=dict(os.environ, PKG_CONFIG_PATH=str(libdir / "pkgconfig")))
    assert pc.returncode == 0 and "/pgcdc/plugins" in pc.stdout, pc.stdout + pc.stderr
    assert (libdir / "cmake" / "pgcdc" / "pgcdcConfig.cmake").exists()
    # The example's own CMakeLists, from a copy: nothing of the source tree but its folder.
    src = h.tmpdir("example-src")
    for f in ("CMakeLists.txt", "example.c"):
        shutil.copy(REPO / "plugins" / "example" / f, src / f)
    bld = h.tmpdir("example-build")
    for cmd in (["cmake", "-S", str(src), "-B", str(bld), f"-DCMAKE_PREFIX_PATH={prefix}",
                 f"-DCMAKE_INSTALL_PREFIX={prefix}"],
                ["cmake", "--build", str(bld)], ["cmake", "--install", str(bld)]):
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, " ".join(cmd) + "\n" + r.stdout + r.stderr
    so = bld / "libpgcdc_sink_example.so"
    plugin_dir = libdir / "pgcdc" / "plugins"
    assert so.exists() and (plugin_dir / "libpgcdc_sink_example.so").exists()

    # The kit passes for it.
    out = h.tmpdir("example-kit") / "archive.jsonl"
    assert_passes(kit(h, so, [{"name": "archive", "type": "example", "path": str(out)}]))

    # pgcdc runs it against Postgres: once by `load:`, once found in the plugin directory.
    db = h.new_db("example")
    h.pg.execute("CREATE TABLE t (id int PRIMARY KEY, v text)", dbname=db)
    for how in ("load", "dir"):
        slot = h.unique("ex")
        archive = h.tmpdir(f"example-{how}") / "archive.jsonl"
        sink = {"name": "archive", "type": "example", "path": str(archive)}
        env = None
        if how == "load":
            sink["load"] = str(so)
        else:
            env = {"PGCDC_PLUGIN_DIR": str(plugin_dir)}
        cfg = make_config(h.pg.dsn(db), slot, slot, tables=["public.t"], sinks=[sink])
        p = h.pgcdc(cfg, name=f"pgcdc-{how}", env=env)
        p.wait_log("streaming from slot")
        h.pg.execute("INSERT INTO t SELECT g, 'x' || g FROM generate_series(1, 500) g; "
                     "UPDATE t SET v = 'y' WHERE id <= 10; DELETE FROM t WHERE id > 495",
                     dbname=db)
        end = lsn_to_int(h.pg.query_one("SELECT pg_current_wal_lsn()::text"))
        wait_until(lambda: lsn_to_int(h.pg.slot_info(slot)["confirmed_flush_lsn"]) >= end, 60,
                   0.2, "the example sink's acks to move the slot")
        p.terminate()
        assert p.wait(30) == 0, p.log_tail(20)
        import json
        evs = [json.loads(x) for x in archive.read_text().splitlines()]
        rows = [e for e in evs if e["op"] != "s"]
        assert len(rows) == 515 and len({e["id"] for e in rows}) == 515, len(rows)
        h.pg.execute(f"SELECT pg_drop_replication_slot('{slot}')", dbname=db)
        h.pg.execute("TRUNCATE t", dbname=db)
