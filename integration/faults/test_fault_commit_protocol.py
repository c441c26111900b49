# SPDX-License-Identifier: Apache-2.0
"""Matrix R3: pgcdc crashes (SIGKILL from inside, at the exact step) at each step of the
commit protocol, under the ledger workload into JetStream, then restarts without the fault.

At no step may a change be lost, the JetStream stream may hold no message twice (the
stable Nats-Msg-Id makes the replay of unconfirmed transactions harmless), per-table order
holds, and the slot's confirmed_flush_lsn is never ahead of what the stream stored.
Needs a build with failpoints (-DPGCDC_FAILPOINTS=ON, the default when tests are built)."""

import time

import harness
from faultlib import run_scenario

TIMEOUT = 240

# (failpoint, the hit that fires: far enough in that the workload is running)
POINTS = [
    ("after_sink_publish_before_ack", 4000),     # per acked event
    ("after_sink_ack_before_checkpoint", 6),     # per checkpoint write
    ("after_checkpoint_write_before_status", 6),
    ("during_status_send", 8),                   # per standby status update
]


def crash_at(h, point, hit, n_txn=8000):
    def fault(p, nats, w):
        t0 = time.monotonic()
        rc = p.wait(90)
        assert rc == -9, f"pgcdc exited with {rc}, not by the failpoint\n{p.log_tail(20)}"
        assert f"failpoint {point} fired" in p.log_tail(50), p.log_tail(20)
        during = w.is_alive()
        p.env = None  # the restart runs clean
        p.start()
        print(f"{point}@{hit}: crashed {time.monotonic() - t0:.1f}s in, "
              f"{'while writing' if during else 'after the writer finished'}")
    env = {"PGCDC_FAILPOINTS": f"{point}=crash@{hit}"}
    p, msgs = run_scenario(h, fault, n_txn=n_txn, sink_kw={"duplicate_window": "2m"},
                           name=point[:12].rstrip("_"), env=env)
    assert p.starts == 2


def test_crash_after_sink_publish_before_ack(h):
    crash_at(h, *POINTS[0])


def test_crash_after_ack_before_checkpoint_write(h):
    crash_at(h, *POINTS[1])


def test_crash_after_checkpoint_write_before_status(h):
    crash_at(h, *POINTS[2])


def test_crash_during_status_send(h):
    crash_at(h, *POINTS[3])


@harness.full_tier
def test_crash_at_every_step_at_many_points(h):
    """Full tier: each failpoint at five different hits."""
    for point, hit in POINTS:
        for k in (1, 2, 3, 5, 8):
            crash_at(h, point, max(1, hit * k // 3), n_txn=4000)
