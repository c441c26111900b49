#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Print what a pgcdc JetStream stream holds (used by scripts/demo): message count by op,
duplicate ids and order violations, and the last few messages."""

import collections
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import natslib  # noqa: E402


def main(url, stream):
    msgs = natslib.dump(url, stream)
    ops = collections.Counter(natslib.header(m, "Cdc-Op") for m in msgs)
    rep = natslib.check_stream(msgs)
    summary = ", ".join(f"{n} {op}" for op, n in ops.most_common())
    print(f"NATS stream {stream}: {len(msgs)} messages ({summary}); "
          f"{len(rep['duplicate_ids'])} duplicate ids, {len(rep['order_violations'])} "
          f"order violations")
    for m in msgs[-3:]:
        e = m["event"] or {}
        print(f"  {m['subject']:<40} {natslib.header(m, 'Nats-Msg-Id')}  key {e.get('key')}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
