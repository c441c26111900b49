#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""The reliability matrix (reference §9.3) and the tests that prove each row.

    integration/faults/matrix.py            the table: row, scenario, tier, tests
    integration/faults/matrix.py --run      run every quick-tier row's tests (run.py -k ...)
    integration/faults/matrix.py --run --full   every row, the full tier too
    integration/faults/matrix.py --check    every test named here exists (a self-test runs this)

Each row ends with a verdict from the ledger checker (lost = 0, duplicates counted or 0,
per-key order, sink state equal to the table) and, for JetStream rows, the flush sampler
(confirmed_flush_lsn never ahead of what the stream stored). Rows that do not apply, or
that this machine cannot run yet, say why instead of naming a test. docs/reliability.md is
the same table for readers, with the guarantee each row proves.
"""

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RUN = HERE.parent / "run.py"

# (row, scenario, tier, [module::test, ...] or "why not")
MATRIX = [
    ("R1", "baseline, 20k ledger transactions", "quick",
     ["test_fault_matrix_extra::test_r1_baseline_20k_transactions"]),
    ("R2", "pgcdc SIGKILLed at random points under load", "quick",
     ["test_crash::test_sigkill_ledger",
      "test_nats::test_pgcdc_killed_five_times_leaves_no_duplicates_in_the_stream"]),
    ("R3", "crash at each step of the commit protocol (failpoints)", "quick",
     ["test_fault_commit_protocol::test_crash_after_sink_publish_before_ack",
      "test_fault_commit_protocol::test_crash_after_ack_before_checkpoint_write",
      "test_fault_commit_protocol::test_crash_after_checkpoint_write_before_status",
      "test_fault_commit_protocol::test_crash_during_status_send"]),
    ("R3+", "every failpoint at five different hits", "full",
     ["test_fault_commit_protocol::test_crash_at_every_step_at_many_points"]),
    ("R4", "graceful drain under load, restart without duplicates", "quick",
     ["test_core::test_drain_and_restart_without_duplicates", "test_crash::test_sigkill_ledger"]),
    ("R5", "Postgres fast restart mid-stream", "quick",
     ["test_fault_postgres::test_r5_postgres_fast_restart_mid_stream"]),
    ("R6", "Postgres crash (immediate stop)", "quick",
     ["test_fault_postgres::test_r6_postgres_crash_mid_stream"]),
    ("R7", "walsender stalled / half-open replication connection", "quick",
     ["test_source_faults::test_stopped_walsender_is_detected_and_the_slot_reclaimed",
      "test_fault_slow_servers::test_r7_half_open_replication_connection",
      "test_core::test_reconnects_after_the_walsender_dies"]),
    ("R8", "NATS killed and restarted", "quick",
     ["test_nats::test_nats_killed_and_restarted_mid_workload",
      "test_nats::test_r3_cluster_survives_a_node_kill",
      "test_nats::test_without_strict_order_a_broker_crash_loses_nothing"]),
    ("R9", "NATS down for three minutes", "full",
     ["test_fault_matrix_extra::test_r9_nats_down_for_three_minutes"]),
    ("R10", "NATS paused 30 s", "quick", ["test_nats::test_nats_paused_for_30_seconds"]),
    ("R11", "stream full (discard new), then raised", "quick",
     ["test_nats::test_full_stream_with_discard_new_then_raised"]),
    ("R12", "oversized / rejected event: on_poison fail or dlq", "quick",
     ["test_nats::test_oversized_event_is_poison_and_holds_the_checkpoint",
      "test_search::test_rejected_document_lands_in_the_dead_letter_store",
      "test_webhook::test_refused_event_is_isolated_and_dead_lettered",
      "test_webhook::test_500s_for_one_event_give_it_up_after_max_attempts_alone"]),
    ("R13", "cache server killed with keys seeded", "quick",
     ["test_redis::test_redis_killed_restarted_from_an_old_snapshot",
      "test_memcached::test_memcached_killed_and_restarted_mid_workload"]),
    ("R14", "Redis paused or answering late", "quick",
     ["test_redis::test_redis_paused_20_seconds",
      "test_fault_slow_servers::test_r14_redis_answering_late"]),
    ("R15", "slow sink: throttled search server, unread pipe", "quick",
     ["test_fault_slow_servers::test_r15_throttled_search_server",
      "test_source_faults::test_full_pipeline_keeps_the_walsender_alive"]),
    ("R16", "bulk partial failures (429s, a 400)", "quick",
     ["test_search::test_item_429s_retry_only_the_failed_items",
      "test_search::test_rejected_document_lands_in_the_dead_letter_store"]),
    ("R17", "replay into the index from an older checkpoint", "quick",
     ["test_search::test_replay_from_a_rewound_checkpoint_changes_nothing",
      "test_redis::test_set_mode_never_regresses_on_replay_and_tombstones_expire"]),
    ("R18", "1M-row transaction in bounded memory", "quick",
     ["test_scale::test_one_million_row_transaction_in_bounded_memory"]),
    ("R18+", "1M-row transaction, pgcdc killed while delivering it", "full",
     ["test_fault_matrix_extra::test_r18_killed_while_delivering_a_million_row_transaction"]),
    ("R19", "idle slot advances (writes only to an unpublished table)", "quick",
     ["test_core::test_idle_slot_advances"]),
    ("R20", "slot invalidated (max_slot_wal_keep_size)", "quick",
     ["test_fault_postgres::test_r20_invalidated_slot_is_refused_not_recreated",
      "test_core::test_missing_slot_with_checkpoint_exits_3"]),
    ("R21", "schema change mid-stream", "quick", ["test_core::test_add_column_bumps_schema_version"]),
    ("R22", "unchanged TOAST column", "quick",
     ["test_core::test_toast_unchanged_column",
      "test_search::test_unchanged_toast_column_stays_in_the_document",
      "test_redis::test_set_mode_with_unchanged_toast"]),
    ("R23", "truncate", "quick",
     ["test_core::test_truncate_two_tables", "test_redis::test_truncate_flush_prefix_and_ignore",
      "test_search::test_truncate_empties_the_index_and_whole_request_503_is_retried",
      "test_memcached::test_truncate_flush_all_empties_every_server"]),
    ("R24", "TLS everywhere (Postgres verify-full, NATS, HTTPS), and the negative cases", "quick",
     ["test_fault_tls::test_r24_tls_everywhere_and_the_negative_cases"]),
    ("R25", "config reload on SIGHUP: a valid file, a structural change, an invalid file",
     "quick",
     ["test_operations::test_sighup_reloads_a_valid_file_and_keeps_the_old_on_an_invalid_one",
      "test_operations::test_systemd_notify"]),
    ("R26", "startup with the broker down", "quick", ["test_nats::test_nats_down_when_pgcdc_starts"]),
    ("R27", "decoder/encoder robustness", "quick",
     "scripts/fuzz (the fuzz suite of scripts/test): libFuzzer on the pgoutput stream, the "
     "config parser, the JSON renderer and the snapshot's COPY row decoder, ASan+UBSan; "
     "test_pgoutput's truncation and byte-flip cases"),
    ("B1", "bulkhead: a stalled sink does not delay the others within its budget", "quick",
     ["test_fault_bulkheads::test_a_stalled_sink_does_not_delay_the_others_within_its_budget"]),
    ("B2", "best_effort sink never holds the checkpoint; dlq replay, purge, NATS mirror",
     "quick", ["test_fault_bulkheads::test_best_effort_sink_never_holds_the_checkpoint"]),
    ("B3", "retries: refused events give up after max_attempts, outages never do", "quick",
     ["test_webhook::test_every_event_arrives_signed_and_500s_are_retried",
      "test_webhook::test_500s_for_one_event_give_it_up_after_max_attempts_alone"]),
    ("B4", "rate limit: a token bucket paces a sink", "quick",
     ["test_fault_slow_servers::test_rate_limit_holds_a_sink_to_its_pace"]),
    ("B5", "timeouts: a stuck sink is stopped by call_timeout", "quick",
     ["test_fault_slow_servers::test_stuck_sink_is_stopped_by_its_call_timeout"]),
]


def listed_tests():
    r = subprocess.run([sys.executable, str(RUN), "--list"], capture_output=True, text=True,
                       check=True)
    return set(r.stdout.split())


def check():
    have = listed_tests()
    missing = [t for _, _, _, tests in MATRIX if isinstance(tests, list) for t in tests
               if t not in have]
    return missing


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", action="store_true", help="run the rows' tests")
    ap.add_argument("--full", action="store_true", help="with --run: the full tier too")
    ap.add_argument("--check", action="store_true", help="every named test exists")
    args = ap.parse_args()
    if args.check:
        missing = check()
        for t in missing:
            print(f"matrix names a test that does not exist: {t}")
        print(f"{len(MATRIX)} rows, {'all tests found' if not missing else 'MISSING TESTS'}")
        return 1 if missing else 0
    if args.run:
        tiers = ("quick", "full") if args.full else ("quick",)
        ks = sorted({t for _, _, tier, tests in MATRIX if tier in tiers and isinstance(tests, list)
                     for t in tests})
        argv = [sys.executable, str(RUN)] + [a for t in ks for a in ("-k", t)]
        if args.full:
            argv.append("--full")
        return subprocess.call(argv)
    for row, scenario, tier, tests in MATRIX:
        print(f"{row:5} {tier:6} {scenario}")
        for t in tests if isinstance(tests, list) else [tests]:
            print(f"{'':13}{t}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
