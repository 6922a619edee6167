#!/usr/bin/env python3
"""Workload shoot-out: rseqalloc vs glibc, jemalloc, mimalloc, gperftools TCMalloc
and (optionally) Google TCMalloc in per-CPU mode, on our own multi-threaded C
workloads (benches/workloads/*.c), each allocator in a separate process via
LD_PRELOAD.  Python 3 standard library only.  See README.md in this directory.

    python3 benches/workloads/shootout.py                 # full run (~10 min)
    python3 benches/workloads/shootout.py --quick         # smoke test (<2 min)
    python3 benches/workloads/shootout.py --only larson,xmalloc --runs 5 --json out.json

Exit status: 0 if every run of every available allocator passed (exit code 0,
a RESULT line, checksum equal to the other allocators'), 1 otherwise, 2 on
usage/setup errors.  Missing allocators are reported, not counted as failures.
"""
import argparse
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.dirname(HERE))
import charts  # noqa: E402  (benches/charts.py: the SVG charts, and si())
from charts import si  # noqa: E402
BIN = os.path.join(HERE, "bin")
LIBDIR = "/usr/lib/x86_64-linux-gnu"

# name, source file, unit of "ops" (the programs print it too)
WORKLOADS = [
    ("larson", "larson.c"),
    ("xmalloc", "xmalloc.c"),
    ("cache-scratch", "cache_scratch.c"),
    ("cache-thrash", "cache_thrash.c"),
    ("mstress", "mstress.c"),
    ("rptest", "rptest.c"),
    ("alloc-test", "alloc_test.c"),
    ("thread-churn", "thread_churn.c"),
    ("calloc-held", "big_blocks.c"),
    ("zeroed-fill", "big_blocks.c"),
    ("zeroed-2m", "big_blocks.c"),
    ("big-random", "big_blocks.c"),
    ("big-loop", "big_blocks.c"),
    ("big-held", "big_blocks.c"),
    ("many-threads", "many_threads.c"),
]
# Workloads that share a program pass it their shape in the environment.
WORKLOAD_ENV = {w: {"WL_SHAPE": w} for w, src in WORKLOADS if src == "big_blocks.c"}
# Workloads whose rows are their own thread counts, not 1 and 2 × CPUs
# (unless --threads is given): many-threads shows what a pool far larger
# than the machine costs.
WORKLOAD_THREADS = {"many-threads": [64, 256, 1024]}
DEFAULT_SCALE = 1.0
QUICK_SCALE = 0.25

# Debian packages that provide the peers (checked with apt-cache on bookworm).
PEER_PACKAGES = ["libjemalloc2", "libmimalloc2.0", "libtcmalloc-minimal4"]
DEFAULT_TCG = "/var/tmp/tcg/shim/libtcmalloc_google.so"
DEFAULT_SNM = "/var/tmp/snm/shim/libsnmallocshim.so"


def allocator_table(args):
    """(name, preload path or None, extra env, note).  Order = table column order."""
    rseq = args.rseqalloc or os.path.join(REPO, "target", "release", "librseqalloc.so")
    # snmalloc is a column only when asked for (--snmalloc), so that the
    # everyday tables keep their shape and length
    snm = args.snmalloc
    return [
        ("glibc", None, {}, "system ptmalloc2 + tcache (no preload)"),
        ("jemalloc", os.path.join(LIBDIR, "libjemalloc.so.2"), {}, "Debian libjemalloc2"),
        ("mimalloc", os.path.join(LIBDIR, "libmimalloc.so.2"), {}, "Debian libmimalloc2.0"),
        ("gperf-tc", os.path.join(LIBDIR, "libtcmalloc_minimal.so.4"), {},
         "gperftools tcmalloc_minimal (per-thread caches)"),
        ("google-tc", args.tcmalloc_google or DEFAULT_TCG,
         {"GLIBC_TUNABLES": "glibc.pthread.rseq=0"},
         "google/tcmalloc per-CPU (build_tcmalloc_google.sh; glibc rseq off)"),
    ] + ([("snmalloc", snm, {}, "snmalloc 0.3.8 shim (build_snmalloc.sh)")] if snm else []) + [
        ("rseqalloc", rseq, {}, "this project (target/release/librseqalloc.so)"),
    ] + ([("rseq-before", args.baseline, {}, "another build of this project (--baseline), not a peer")]
         if args.baseline else [])


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- setup
def ensure_peers(no_install):
    want = {
        "libjemalloc2": os.path.join(LIBDIR, "libjemalloc.so.2"),
        "libmimalloc2.0": os.path.join(LIBDIR, "libmimalloc.so.2"),
        "libtcmalloc-minimal4": os.path.join(LIBDIR, "libtcmalloc_minimal.so.4"),
    }
    missing = [pkg for pkg, path in want.items() if not os.path.exists(path)]
    if not missing:
        return
    if no_install:
        log(f"peer libraries missing (not installing): {' '.join(missing)}")
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        log(f"peer libraries missing and cannot apt-get install: {' '.join(missing)}")
        return
    log(f"installing {' '.join(missing)} ...")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    r = subprocess.run(["apt-get", "install", "-y", "--no-install-recommends"] + missing,
                       env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        # the package lists may be stale: update once and retry
        subprocess.run(["apt-get", "update"], env=env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        r = subprocess.run(["apt-get", "install", "-y", "--no-install-recommends"] + missing,
                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        log(f"apt-get install failed:\n{r.stderr[-2000:]}")


def build(workloads):
    """gcc -O2 -pthread each workload into bin/ (only if the source or header is newer)."""
    os.makedirs(BIN, exist_ok=True)
    hdr = os.path.join(HERE, "wl_common.h")
    # larson is also the pre-flight probe, so it is built even when --only leaves it out.
    for name, src in {**dict(workloads), "larson": "larson.c", "wl_spawn": "wl_spawn.c"}.items():
        srcp = os.path.join(HERE, src)
        out = os.path.join(BIN, os.path.splitext(src)[0])
        if os.path.exists(out) and os.path.getmtime(out) >= max(os.path.getmtime(srcp),
                                                                os.path.getmtime(hdr)):
            continue
        cmd = ["gcc", "-O2", "-g", "-Wall", "-Wextra", "-pthread", "-o", out, srcp]
        log("build: " + " ".join(cmd))
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if r.returncode != 0:
            log(r.stdout)
            sys.exit(2)


# ---------------------------------------------------------------- running
def parse_result(text):
    for line in text.splitlines():
        if line.startswith("RESULT "):
            kv = {}
            for tok in line.split()[1:]:
                k, _, v = tok.partition("=")
                kv[k] = v
            return kv
    return None


def run_once(exe, threads, scale, seed, preload, extra_env, timeout):
    """Run one workload process through bin/wl_spawn (see wl_spawn.c for why) and
    return a record with its RESULT fields and its wait4() rusage."""
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    env.pop("GLIBC_TUNABLES", None)
    env["WL_PRELOAD"] = preload or ""
    env.update(extra_env)
    argv = [os.path.join(BIN, "wl_spawn"), exe, str(threads), repr(scale), str(seed)]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.monotonic()
        p = subprocess.Popen(argv, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                             start_new_session=True)
        timed_out = False
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        wall = time.monotonic() - t0
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    ru = {}
    steady_kib = None
    mem = None
    for line in stdout.splitlines():
        if line.startswith("WLRUSAGE "):
            ru = dict(tok.partition("=")[::2] for tok in line.split()[1:])
        elif line.startswith("STEADY rss_kib="):
            steady_kib = int(line.split("=")[1])
        elif line.startswith("POOL "):  # many_threads.c's own readings (RSS with the threads alive, CPU time)
            mem = {k: int(v) for k, v in (tok.partition("=")[::2] for tok in line.split()[1:])}
    code = int(ru["status"]) if "status" in ru else p.returncode
    rec = {
        "exit": code,
        "wall_s": round(wall, 4),
        "maxrss_kib": int(ru.get("maxrss_kib", 0)),
        "steady_kib": steady_kib,
        "mem": mem,
        "user_s": float(ru.get("utime", 0)),
        "sys_s": float(ru.get("stime", 0)),
        "stderr": stderr[-1500:],
    }
    res = parse_result(stdout)
    problem = None
    if timed_out:
        problem = f"timeout after {timeout}s"
    elif not ru:
        problem = f"wl_spawn failed (exit {p.returncode})"
    elif code != 0:
        problem = (f"signal {-code}" if code < 0 else f"exit {code}")
    elif res is None:
        problem = "no RESULT line"
    elif "cannot be preloaded" in stderr or "ERROR: ld.so" in stderr:
        problem = "LD_PRELOAD failed"
    elif preload and os.path.realpath(res.get("malloc_from", "?")) != os.path.realpath(preload):
        # e.g. a library that exports no malloc: the run silently measured glibc
        problem = f"malloc not interposed (malloc_from={res.get('malloc_from')})"
    if res:
        rec["ops"] = int(res["ops"])
        rec["unit"] = res["unit"]
        rec["elapsed_s"] = float(res["elapsed"])
        rec["ops_per_sec"] = float(res["ops_per_sec"])
        rec["checksum"] = res["checksum"]
        rec["malloc_from"] = res.get("malloc_from")
    rec["problem"] = problem
    return rec


# ---------------------------------------------------------------- formatting
def mib(kib):
    return f"{kib / 1024:.1f}M" if kib < 1024 * 1000 else f"{kib / 1048576:.2f}G"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help=f"smoke test: scale {QUICK_SCALE} and 1 run unless --runs is given")
    ap.add_argument("--runs", type=int, default=None, help="runs per cell (default 3; median reported)")
    ap.add_argument("--scale", type=float, default=None, help="override the workload scale (default 1.0)")
    ap.add_argument("--only", default=None, help="comma-separated workloads (default: all)")
    ap.add_argument("--allocators", default=None,
                    help="comma-separated allocators: glibc,jemalloc,mimalloc,gperf-tc,google-tc,rseqalloc")
    ap.add_argument("--threads", default=None,
                    help="comma-separated thread counts (default: 1 and 2*os.cpu_count())")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--steady-ms", type=int, default=0, metavar="MS",
                    help="after its work each process idles MS ms and reports its RSS then (steady-state RSS)")
    ap.add_argument("--rseqalloc", default=None, help="path of librseqalloc.so (default target/release/)")
    ap.add_argument("--baseline", default=None, metavar="PATH",
                    help="another librseqalloc.so (say, before a change), run interleaved as column "
                         "rseq-before; not a peer")
    ap.add_argument("--snmalloc", default=None, metavar="PATH",
                    help=f"add a snmalloc column: its preloadable build ({DEFAULT_SNM} from build_snmalloc.sh)")
    ap.add_argument("--tcmalloc-google", default=None, help=f"path of the Google TCMalloc preload shim (default {DEFAULT_TCG})")
    ap.add_argument("--env", action="append", default=[], metavar="ALLOC:KEY=VAL",
                    help="extra environment for one allocator, e.g. rseqalloc:RSEQALLOC_VERBOSE=1 (repeatable)")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds before a run is killed")
    ap.add_argument("--no-install", action="store_true", help="do not apt-get install missing peers")
    ap.add_argument("--json", default=None, metavar="OUT.json",
                    help="write all runs and medians as JSON, and OUT-throughput.svg and OUT-rss.svg beside it")
    args = ap.parse_args()

    runs = args.runs if args.runs is not None else (1 if args.quick else 3)
    scale = args.scale if args.scale is not None else (QUICK_SCALE if args.quick else DEFAULT_SCALE)
    ncpu = os.cpu_count() or 1
    threads = [int(x) for x in args.threads.split(",")] if args.threads else sorted({1, 2 * ncpu})

    def threads_of(wname):
        return threads if args.threads else WORKLOAD_THREADS.get(wname, threads)
    workloads = WORKLOADS
    if args.only:
        want = [w.strip() for w in args.only.split(",") if w.strip()]
        known = {w for w, _ in WORKLOADS}
        bad = [w for w in want if w not in known]
        if bad:
            ap.error(f"unknown workload(s) {bad}; known: {sorted(known)}")
        workloads = [w for w in WORKLOADS if w[0] in want]
    allocs = allocator_table(args)
    if args.allocators:
        want = [a.strip() for a in args.allocators.split(",") if a.strip()]
        known = {a[0] for a in allocs}
        bad = [a for a in want if a not in known]
        if bad:
            ap.error(f"unknown allocator(s) {bad}; known: {[a[0] for a in allocs]}")
        allocs = [a for a in allocs if a[0] in want or a[0] in ("rseq-before", "snmalloc")]
    extra = {}
    for e in args.env:
        name, _, kv = e.partition(":")
        k, _, v = kv.partition("=")
        if not k or name not in {a[0] for a in allocator_table(args)}:
            ap.error(f"bad --env {e!r} (want ALLOC:KEY=VAL with a known allocator name)")
        extra.setdefault(name, {})[k] = v

    for flag, path in (("--rseqalloc", args.rseqalloc), ("--baseline", args.baseline),
                       ("--tcmalloc-google", args.tcmalloc_google), ("--snmalloc", args.snmalloc)):
        if path and not os.path.exists(path):
            ap.error(f"{flag} {path}: no such file")

    ensure_peers(args.no_install)
    build(workloads)

    present = {}
    for name, path, env, note in allocs:
        ok = path is None or os.path.exists(path)
        present[name] = ok
        log(f"allocator {name:10s} {'ok     ' if ok else 'MISSING'} {path or '-'}  ({note})")
    # pre-flight: a library that loads but does not define malloc/free would silently
    # measure glibc; such an allocator is reported as a failure and not benchmarked.
    preflight_fail = {}
    probe = os.path.join(BIN, "larson")
    for name, path, env, _ in allocs:
        if path and present[name]:
            rec = run_once(probe, 1, 0.001, args.seed, path, {**env, **extra.get(name, {})}, 60)
            if rec["problem"]:
                preflight_fail[name] = rec["problem"]
                log(f"allocator {name:10s} PRE-FLIGHT FAILED: {rec['problem']} {rec['stderr'].strip()[-300:]}")
    active = [a for a in allocs if present[a[0]] and a[0] not in preflight_fail]

    load_before = os.getloadavg()
    t_start = time.monotonic()
    results = {}  # (workload, threads, alloc) -> list of records
    total = sum(len(threads_of(w)) for w, _ in workloads) * runs * len(active)
    done = 0
    for wname, src in workloads:
        exe = os.path.join(BIN, os.path.splitext(src)[0])
        for t in threads_of(wname):
            for r in range(runs):
                # rotate the allocator order between runs so drift hits everyone alike
                order = active[r % len(active):] + active[:r % len(active)] if active else []
                for name, path, env, _ in order:
                    steady = {"WL_STEADY_MS": str(args.steady_ms)} if args.steady_ms else {}
                    run_env = {**env, **extra.get(name, {}), **steady, **WORKLOAD_ENV.get(wname, {})}
                    rec = run_once(exe, t, scale, args.seed, path, run_env,
                                   args.timeout + args.steady_ms / 1000)
                    results.setdefault((wname, t, name), []).append(rec)
                    done += 1
                    status = rec["problem"] or "ok"
                    log(f"[{done}/{total} {time.monotonic() - t_start:6.0f}s] {wname:13s} t={t:<3d} "
                        f"run {r + 1}/{runs} {name:10s} "
                        f"{si(rec.get('ops_per_sec', 0)):>7s} ops/s  rss {mib(rec['maxrss_kib']):>7s}  {status}")

    # checksum agreement: per (workload, threads) all runs of all allocators must agree
    failures = [("pre-flight", 0, n, p, "") for n, p in preflight_fail.items()]
    for wname, _ in workloads:
        for t in threads_of(wname):
            sums = {}
            for name, *_ in active:
                for rec in results.get((wname, t, name), []):
                    if rec.get("checksum") and not rec["problem"]:
                        sums[rec["checksum"]] = sums.get(rec["checksum"], 0) + 1
            if len(sums) > 1:
                ref = max(sums, key=lambda c: (sums[c], c))
                for name, *_ in active:
                    for rec in results.get((wname, t, name), []):
                        if rec.get("checksum") and rec["checksum"] != ref and not rec["problem"]:
                            rec["problem"] = f"checksum {rec['checksum']} != {ref}"
            for name, *_ in active:
                for rec in results.get((wname, t, name), []):
                    if rec["problem"]:
                        failures.append((wname, t, name, rec["problem"], rec["stderr"].strip()[-300:]))

    # medians
    summary = {}
    for (wname, t, name), recs in results.items():
        good = [x for x in recs if not x["problem"]]
        summary[(wname, t, name)] = {
            "ok": len(good) == len(recs),
            "runs": len(recs),
            "ops_per_sec": statistics.median([x["ops_per_sec"] for x in good]) if good else None,
            "maxrss_kib": statistics.median([x["maxrss_kib"] for x in recs]) if recs else None,
            "steady_kib": statistics.median([x["steady_kib"] for x in good if x["steady_kib"] is not None] or [0]),
            "wall_s": statistics.median([x["wall_s"] for x in recs]) if recs else None,
            "unit": good[0]["unit"] if good else None,
        }
        mems = [dict(x["mem"], cpu_ns=x["mem"]["cpu_ms"] * 1e6 / x["ops"]) for x in good if x["mem"]]
        if mems:
            summary[(wname, t, name)]["mem"] = {k: statistics.median([m[k] for m in mems]) for k in mems[0]}

    # ---- the table
    names = [a[0] for a in allocs]
    peers = [n for n in names if n not in ("rseqalloc", "rseq-before") and present[n]]
    has_rseq = "rseqalloc" in names
    print()
    load_after = os.getloadavg()
    print(f"## Workload shoot-out — scale {scale:g}, {runs} run(s)/cell, median; "
          f"{ncpu} CPUs, {platform.node()}, {time.strftime('%Y-%m-%d %H:%M')}; "
          f"load avg {load_before[0]:.1f} before / {load_after[0]:.1f} after")
    print()
    steady_on = args.steady_ms > 0
    print("Cells: throughput (ops/s, median) / peak RSS (median ru_maxrss)"
          + (f" / steady RSS (after {args.steady_ms} ms idle)" if steady_on else "")
          + ". Best peer = highest-throughput / lowest-RSS non-rseqalloc allocator in the row.")
    print()
    hdr = ["workload", "thr"] + names
    if has_rseq:
        hdr += ["rseq thr ÷ best peer", "rseq RSS ÷ best peer"] + (["rseq steady ÷ best peer"] if steady_on else [])
    print("| " + " | ".join(hdr) + " |")
    print("|" + "|".join(["---"] * 2 + ["---:"] * (len(hdr) - 2)) + "|")
    ratio_logs = {n: [] for n in names}
    for wname, _ in workloads:
        for t in threads_of(wname):
            row = [wname, str(t)]
            best_thr, best_rss, best_steady = None, None, None
            for n in peers:
                s = summary.get((wname, t, n))
                if s and s["ok"] and s["ops_per_sec"]:
                    if best_thr is None or s["ops_per_sec"] > best_thr[1]:
                        best_thr = (n, s["ops_per_sec"])
                    if best_rss is None or s["maxrss_kib"] < best_rss[1]:
                        best_rss = (n, s["maxrss_kib"])
                    if steady_on and (best_steady is None or s["steady_kib"] < best_steady[1]):
                        best_steady = (n, s["steady_kib"])
            for n in names:
                s = summary.get((wname, t, n))
                if not present[n]:
                    row.append("missing")
                elif n in preflight_fail:
                    row.append("**FAIL** (pre-flight)")
                elif not s or not s["ok"] or not s["ops_per_sec"]:
                    row.append("**FAIL**")
                else:
                    row.append(f"{si(s['ops_per_sec'])} / {mib(s['maxrss_kib'])}"
                               + (f" / {mib(s['steady_kib'])}" if steady_on else ""))
                    if best_thr:
                        ratio_logs[n].append(math.log(s["ops_per_sec"] / best_thr[1]))
            if has_rseq:
                s = summary.get((wname, t, "rseqalloc"))
                if present["rseqalloc"] and s and s["ok"] and best_thr:
                    row.append(f"{s['ops_per_sec'] / best_thr[1]:.2f}× ({best_thr[0]})")
                    row.append(f"{s['maxrss_kib'] / best_rss[1]:.2f}× ({best_rss[0]})")
                    if steady_on:
                        row.append(f"{s['steady_kib'] / max(best_steady[1], 1):.2f}× ({best_steady[0]})")
                else:
                    row += ["–", "–"] + (["–"] if steady_on else [])
            print("| " + " | ".join(row) + " |")
    geo = ["**geomean thr ÷ best peer**", ""]
    nrows = sum(len(threads_of(w)) for w, _ in workloads)
    for n in names:
        if not ratio_logs[n]:
            geo.append("–")
            continue
        g = f"{math.exp(statistics.fmean(ratio_logs[n])):.2f}×"
        if len(ratio_logs[n]) < nrows:
            g += f" ({len(ratio_logs[n])}/{nrows} rows)"
        geo.append(g)
    if has_rseq:
        geo += ["", ""] + ([""] if steady_on else [])
    print("| " + " | ".join(geo) + " |")
    mem_rows = [(w, t) for w, _ in workloads for t in threads_of(w)
                if any("mem" in summary.get((w, t, n), {}) for n in names)]
    if mem_rows:
        print()
        print("With every thread still alive (the workload's POOL line, medians): RSS holding the working sets "
              "/ RSS after every thread freed its working set / CPU time of the process per operation in the "
              "timed phase; `live` = the working sets' bytes.")
        print()
        print("| workload | thr | live | " + " | ".join(names) + " |")
        print("|---|---|---:|" + "---:|" * len(names))
        for w, t in mem_rows:
            cells = [summary.get((w, t, n), {}).get("mem") for n in names]
            live = next(m["live_kib"] for m in cells if m)
            print(f"| {w} | {t} | {mib(live)} | " + " | ".join(
                f"{mib(m['held_rss_kib'])} / {mib(m['empty_rss_kib'])} / {m['cpu_ns']:.0f} ns" if m else "–"
                for m in cells) + " |")
    units = sorted({(w, s["unit"]) for (w, _, _), s in summary.items() if s["unit"]})
    print()
    print("Units: " + "; ".join(f"{w} = {u}/s" for w, u in units))
    elapsed = time.monotonic() - t_start
    print(f"\nTotal benchmark time {elapsed:.0f} s.")

    if failures:
        print("\nFAILURES:")
        for wname, t, name, prob, err in failures:
            where = wname if wname == "pre-flight" else f"{wname} t={t}"
            print(f"- {where} {name}: {prob}" + (f" — stderr: {err!r}" if err else ""))

    if args.json:
        out = {
            "config": {"scale": scale, "runs": runs, "seed": args.seed,
                       "threads": sorted({t for w, _ in workloads for t in threads_of(w)}),
                       "cpus": ncpu, "host": platform.node(),
                       "loadavg_before": load_before, "loadavg_after": load_after, "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
                       "allocators": [{"name": n, "preload": p, "env": e, "note": note,
                                       "present": present[n]} for n, p, e, note in allocs]},
            "runs": [{"workload": w, "threads": t, "allocator": n, **rec}
                     for (w, t, n), recs in results.items() for rec in recs],
            "medians": [{"workload": w, "threads": t, "allocator": n, **s}
                        for (w, t, n), s in summary.items()],
            "failures": [{"workload": w, "threads": t, "allocator": n, "problem": p}
                         for w, t, n, p, _ in failures],
            "elapsed_s": round(elapsed, 1),
        }
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
        log(f"wrote {args.json}")
        # The charts, next to the JSON they are drawn from.
        for path in charts.shootout(out, os.path.splitext(args.json)[0]):
            log(f"wrote {path}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
