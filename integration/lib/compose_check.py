#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Keep docker-compose.yml in step with scripts/demo (scripts/test's compose suite):
the compose file must be valid (`docker-compose config`), run a service for each server the
local demo starts, and its pgcdc config (docker/pgcdc.yml) must use every sink type the demo
configures; every pgcdc config under docker/ must pass `pgcdc validate` (the binary of
$PGCDC_BIN or build/pgcdc); and the cluster profile's pgcdc must stream into the three-node
NATS cluster. Prints what it compared; exits 1 on a difference."""

import os

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# server the local demo starts (harness up flag) -> the compose service doing that job
SERVERS = {"--pg": "postgres", "--nats": "nats", "--redis": "redis", "--searchd": "opensearch"}


def main():
    r = subprocess.run(["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config",
                        "--services"], capture_output=True, text=True)
    if r.returncode != 0:
        print(r.stderr)
        return 1
    services = set(r.stdout.split())
    demo = (ROOT / "scripts" / "demo").read_text()
    up = re.search(r"harness\.py\" up ([^\n]*)--state", demo).group(1).split()
    demo_types = set(re.findall(r"^    type: (\w+)$", demo, re.M))
    compose_types = set(re.findall(r"^    type: (\w+)$", (ROOT / "docker" / "pgcdc.yml").read_text(),
                                   re.M))
    bad = 0
    for flag in up:
        want = SERVERS.get(flag)
        ok = want in services
        bad += not ok
        print(f"demo starts {flag[2:]:<8} -> compose service {want}: {'ok' if ok else 'MISSING'}")
    for extra in ("pgcdc", "writer", "consumer"):
        ok = extra in services
        bad += not ok
        print(f"compose service {extra}: {'ok' if ok else 'MISSING'}")
    binary = Path(os.environ.get("PGCDC_BIN") or ROOT / "build" / "pgcdc")
    for cfg in sorted((ROOT / "docker").glob("pgcdc*.yml")):
        v = subprocess.run([str(binary), "validate", "-c", str(cfg)], capture_output=True,
                           text=True)
        ok = v.returncode == 0
        bad += not ok
        print(f"pgcdc validate docker/{cfg.name}: "
              f"{'ok' if ok else 'FAILED: ' + (v.stderr or v.stdout).strip()}")
    r = subprocess.run(["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "--profile",
                        "cluster", "config", "--services"], capture_output=True, text=True)
    want = {"nats-1", "nats-2", "nats-3", "pgcdc-cluster"}
    ok = r.returncode == 0 and want <= set(r.stdout.split())
    bad += not ok
    print(f"profile cluster runs {sorted(want)}: {'ok' if ok else 'MISSING'}")
    missing = demo_types - compose_types
    bad += bool(missing)
    print(f"sink types: demo {sorted(demo_types)}, compose {sorted(compose_types)}"
          + (f"; MISSING in docker/pgcdc.yml: {sorted(missing)}" if missing else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
