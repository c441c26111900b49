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
from harness import wait_until

TIMEOUT = 240

# (failpoint, the hit that fires: far enough in that the workload is running, the hits of
# the full tier; 8000 transactions make about 18000 acked events and 15 checkpoint writes)
POINTS = [
    ("after_sink_publish_before_ack", 4000, (300, 1500, 6000, 9000, 12000)),  # per acked event
    ("after_sink_ack_before_checkpoint", 6, (1, 2, 4, 8, 11)),  # per checkpoint write
    ("after_checkpoint_write_before_status", 6, (1, 2, 4, 8, 11)),
    ("during_status_send", 8, (1, 3, 5, 9, 12)),  # per standby status update
]


def crash_at(h, point, hit, n_txn=8000):
    def fault(p, nats, w):
        t0 = time.monotonic()
        # It fires while the workload runs, or while pgcdc catches up just after it.
        wait_until(lambda: p.popen.poll() is not None or
                   (not w.is_alive() and time.monotonic() - t0 > 5 and
                    time.monotonic() - w.finished_at > 10), 120, 0.1,
                   f"failpoint {point}@{hit} to fire")
        assert p.popen.poll() is not None, f"{point}@{hit} never fired: the workload is too short"
        rc = p.wait(5)
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
    crash_at(h, *POINTS[0][:2])


def test_crash_after_ack_before_checkpoint_write(h):
    crash_at(h, *POINTS[1][:2])


def test_crash_after_checkpoint_write_before_status(h):
    crash_at(h, *POINTS[2][:2])


def test_crash_during_status_send(h):
    crash_at(h, *POINTS[3][:2])


@harness.full_tier
def test_crash_at_every_step_at_many_points(h):
    """Full tier: each failpoint at five different hits, from the first to the last ones."""
    for point, _, hits in POINTS:
        for hit in hits:
            crash_at(h, point, hit)
