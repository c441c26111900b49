#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""pgcdc integration test runner.

Discovers integration/test_*.py, runs every `test_*` function in it, one module
per child process (tests of a module share one `h` fixture, a harness.Harness),
with a time limit per test, and prints:

    PASS test_module::test_name (1.2s)
    FAIL test_module::test_name: AssertionError: ...     (+ traceback and pgcdc log tail)
    SKIP test_module::test_name: reason
    ...
    N passed, N failed

Exit code 0 when nothing failed, 1 otherwise (also when no test was selected).
See integration/README.md.
"""

import argparse
import importlib.util
import inspect
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

DEFAULT_TIMEOUT = 120.0


def discover(files=None):
    if files:
        return [Path(f).resolve() for f in files]
    # the fault matrix (faults/) after the per-module suites
    return sorted(HERE.glob("test_*.py")) + sorted((HERE / "faults").glob("test_*.py"))


def load_module(path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def module_tests(mod):
    """test_* functions of a module, in source order."""
    fns = [(name, fn) for name, fn in vars(mod).items()
           if name.startswith("test_") and inspect.isfunction(fn) and fn.__module__ == mod.__name__]
    fns.sort(key=lambda t: t[1].__code__.co_firstlineno)
    return fns


def test_timeout(mod, fn, scale):
    t = getattr(fn, "timeout", None) or getattr(mod, "TIMEOUT", None) or DEFAULT_TIMEOUT
    return float(t) * scale


# --------------------------------------------------------------------------
# child: run the selected tests of one module
# --------------------------------------------------------------------------

def _alarm(signum, frame):
    import harness
    raise harness.TestTimeout("test timed out")


def _fmt_exc(e):
    msg = str(e).strip().split("\n")[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


def _indent(text, prefix="    "):
    return "\n".join(prefix + line for line in text.splitlines())


def run_child(args):
    import harness
    harness.install_signal_handlers()
    signal.signal(signal.SIGALRM, _alarm)
    path = Path(args.child)
    results = open(args.results, "a", buffering=1)

    def report(name, status, dur, reason="", detail=""):
        results.write(json.dumps({"name": name, "status": status, "dur": dur}) + "\n")
        if status == "PASS":
            print(f"PASS {name} ({dur:.1f}s)", flush=True)
        else:
            line = f"{status} {name}: {reason}" if reason else f"{status} {name}"
            if status == "FAIL":
                line += f" ({dur:.1f}s)"
            print(line, flush=True)
            if detail:
                print(detail, flush=True)

    try:
        mod = load_module(path)
    except Exception as e:  # noqa: BLE001
        report(f"{path.stem}::<import>", "FAIL", 0.0, _fmt_exc(e),
               _indent(traceback.format_exc()))
        return 1
    selected = set(args.tests.split(",")) if args.tests else None
    tests = [(n, f) for n, f in module_tests(mod) if selected is None or n in selected]
    h = None
    rc = 0
    for name, fn in tests:
        full = f"{path.stem}::{name}"
        if args.quick and getattr(fn, "slow", False):
            report(full, "SKIP", 0.0, "slow test (--quick)")
            continue
        if getattr(fn, "full_tier", False) and not args.full:
            report(full, "SKIP", 0.0, "full tier (run with --full)")
            continue
        wants_h = len(inspect.signature(fn).parameters) > 0
        if wants_h and h is None:
            h = harness.Harness()
        nprocs = len(h.procs) if h else 0
        limit = test_timeout(mod, fn, args.timeout_scale)
        t0 = time.monotonic()
        status, reason, detail = "PASS", "", ""
        signal.setitimer(signal.ITIMER_REAL, limit)
        try:
            fn(h) if wants_h else fn()
        except harness.Skip as e:
            status, reason = "SKIP", str(e)
        except harness.TestTimeout:
            status, reason = "FAIL", f"timed out after {limit:.0f}s"
            detail = _indent(traceback.format_exc())
        except (KeyboardInterrupt, SystemExit):
            raise  # the runner is stopping us: atexit closes the harness
        except BaseException as e:  # noqa: BLE001
            status, reason = "FAIL", _fmt_exc(e)
            detail = _indent(traceback.format_exc())
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        dur = time.monotonic() - t0
        if status == "FAIL":
            rc = 1
            detail += _pgcdc_logs(h, nprocs, harness)
        report(full, status, dur, reason, detail)
        if h is not None:
            try:
                signal.setitimer(signal.ITIMER_REAL, 60)
                h.after_test()
            except Exception as e:  # noqa: BLE001
                print(f"  (cleanup after {full}: {_fmt_exc(e)}; new fixture for the next test)",
                      flush=True)
                h.close()
                h = None
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
    if h is not None:
        h.close()
    return rc


def _pgcdc_logs(h, since, harness):
    """Tail of the logs of the pgcdc processes a failed test started."""
    if h is None:
        return ""
    out = []
    seen = set()
    for p in h.procs[since:]:
        if isinstance(p, harness.Pgcdc) and p.log_path not in seen:
            seen.add(p.log_path)
            out.append(f"\n  --- {p.log_path} (last 25 lines) ---\n" + _indent(p.log_tail(25)))
    return "".join(out)


# --------------------------------------------------------------------------
# parent: one child per module, backstop timeout, summary
# --------------------------------------------------------------------------

def collect(paths, k, exclude=()):
    """[(path, [test names], backstop seconds)] for the tests matching -k and no --exclude."""
    plan = []
    for path in paths:
        try:
            mod = load_module(path)
        except Exception as e:  # noqa: BLE001 - the child reports the import error
            plan.append((path, None, 120.0, _fmt_exc(e)))
            continue
        names = []
        total = 0.0
        for name, fn in module_tests(mod):
            full = f"{path.stem}::{name}"
            if k and not any(s in full for s in k):
                continue
            if any(s in full for s in exclude):
                continue
            names.append(name)
            total += test_timeout(mod, fn, 1.0) + 60.0
        if names:
            plan.append((path, names, total, None))
    return plan


def run_module(path, names, backstop, args, counts):
    with tempfile.TemporaryDirectory(prefix="pgcdc-run-") as td:
        results = Path(td) / "results.jsonl"
        registry = Path(td) / "registry.jsonl"
        env = dict(os.environ, PGCDC_HARNESS_REGISTRY=str(registry))
        if args.quick:
            env["PGCDC_QUICK"] = "1"
        argv = [sys.executable, str(Path(__file__).resolve()), "--child", str(path),
                "--results", str(results), "--timeout-scale", str(args.timeout_scale)]
        if names is not None:
            argv += ["--tests", ",".join(names)]
        if args.quick:
            argv.append("--quick")
        if args.full:
            argv.append("--full")
            env["PGCDC_FULL"] = "1"
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            proc.wait(backstop * args.timeout_scale)
        except subprocess.TimeoutExpired:
            print(f"runner: {path.name} exceeded {backstop * args.timeout_scale:.0f}s, stopping it",
                  flush=True)
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        except KeyboardInterrupt:
            interrupted = True
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        else:
            interrupted = False
        _cleanup(registry)
        done = {}
        if results.exists():
            for line in results.read_text().splitlines():
                r = json.loads(line)
                done[r["name"]] = r["status"]
        for st in done.values():
            counts[st] += 1
        if names is None:
            names = []
            if not done:
                print(f"FAIL {path.stem}::<import>: child exited with {proc.returncode}", flush=True)
                counts["FAIL"] += 1
        for n in names:
            full = f"{path.stem}::{n}"
            if full not in done:
                if interrupted:
                    why = "interrupted"
                elif proc.returncode is None or proc.returncode < 0:
                    why = "module time limit exceeded"
                else:
                    why = f"runner child exited with {proc.returncode} before it"
                print(f"FAIL {full}: not completed ({why})", flush=True)
                counts["FAIL"] += 1
        if interrupted:
            raise KeyboardInterrupt


def _cleanup(registry):
    import harness
    try:
        n = harness.cleanup_registry(registry)
        if n:
            print(f"runner: stopped {n} leftover process(es)", flush=True)
    except Exception as e:  # noqa: BLE001
        print(f"runner: cleanup failed: {e}", flush=True)


def _reexec_with_debian_python():
    """psycopg2/msgpack come from apt: make sure we run under /usr/bin/python3."""
    try:
        import psycopg2  # noqa: F401  (only probing)
    except ImportError:
        if sys.executable != "/usr/bin/python3" and os.path.exists("/usr/bin/python3"):
            os.execv("/usr/bin/python3", ["/usr/bin/python3"] + sys.argv)
        raise


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main():
    _reexec_with_debian_python()
    ap = argparse.ArgumentParser(description="Run pgcdc's integration tests (integration/test_*.py).")
    ap.add_argument("files", nargs="*", help="test files (default: integration/test_*.py)")
    ap.add_argument("-k", action="append", default=[], metavar="SUBSTR",
                    help="only tests whose 'module::name' contains SUBSTR (repeatable: any)")
    ap.add_argument("--exclude", action="append", default=[], metavar="SUBSTR",
                    help="leave out tests whose module::name contains SUBSTR (repeatable)")
    ap.add_argument("--quick", action="store_true",
                    help="skip tests marked @slow; sets PGCDC_QUICK=1 for shorter workloads")
    ap.add_argument("--full", action="store_true", default=os.environ.get("PGCDC_FULL") == "1",
                    help="also run the full tier of the fault matrix (tests marked @full_tier: "
                         "long outages, many crash points, big transactions); PGCDC_FULL=1")
    ap.add_argument("--list", action="store_true", help="list the selected tests and exit")
    ap.add_argument("--timeout-scale", type=float, default=float(os.environ.get(
        "PGCDC_TIMEOUT_SCALE", "1")), help="multiply every time limit (e.g. 3 under valgrind)")
    ap.add_argument("--keep", action="store_true", help="keep temp dirs (PGCDC_KEEP_TMP=1)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--results", help=argparse.SUPPRESS)
    ap.add_argument("--tests", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child:
        return run_child(args)

    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    if args.keep:
        os.environ["PGCDC_KEEP_TMP"] = "1"
    plan = collect(discover(args.files), args.k, args.exclude)
    if args.list:
        for path, names, _, err in plan:
            for n in names or [f"<import error: {err}>"]:
                print(f"{path.stem}::{n}")
        return 0
    bin_ = os.environ.get("PGCDC_BIN") or str(HERE.parent / "build" / "pgcdc")
    print(f"integration: {sum(len(n or [1]) for _, n, _, _ in plan)} test(s) in {len(plan)} "
          f"file(s); pgcdc = {bin_}{'' if Path(bin_).exists() else ' (not built)'}"
          f"{'; --quick' if args.quick else ''}", flush=True)
    counts = {"PASS": 0, "FAIL": 0, "SKIP": 0}
    t0 = time.monotonic()
    try:
        for path, names, backstop, _ in plan:
            run_module(path, names, backstop, args, counts)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        counts["FAIL"] += counts["FAIL"] == 0  # an interrupted run never passes
    total = counts["PASS"] + counts["FAIL"] + counts["SKIP"]
    if total == 0:
        print("no test selected", flush=True)
    if counts["SKIP"]:
        print(f"({counts['SKIP']} skipped)")
    print(f"integration time {time.monotonic() - t0:.1f}s")
    print(f"{counts['PASS']} passed, {counts['FAIL']} failed", flush=True)
    return 1 if counts["FAIL"] or total == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
