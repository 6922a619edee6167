#!/usr/bin/env python3
"""Ablation runs: what each part of rseqalloc's C-API hot path costs.

Builds librseqalloc.so once per ablation from a scratch copy of this tree,
with one named piece of the hot path taken out (a textual patch that must
apply exactly, or the run stops), or for a trial one idea put in, then runs one shoot-out workload under
every build, and optionally under peer allocators, interleaved, and prints
the median throughput of each and its ratio to the unmodified build.

The ablated builds are measurement tools, not products: taking out the
double-free stamp or the interior-pointer check removes a defence the C API
documents (src/front/check.rs), and taking out the hit counters makes the stats
wrong. They answer "how much of the gap to a peer is this piece?".

    python3 benches/ablate.py larson 1                 # every ablation, 7 runs
    python3 benches/ablate.py alloc_test 1 --runs 9 --peers gperf-tc,mimalloc
    python3 benches/ablate.py rptest 4 --only base,no-stamp
    python3 benches/ablate.py alloc_test 4 --only base,prefetch-next   # a trial
    python3 benches/ablate.py larson 1 --lock /tmp/rseqalloc-bench.lock   # timed part under a lock

--lock takes flock(2) on the file for the timed runs only (compatible with
flock(1)), so that other users of a shared machine can measure while the
builds run.

Standard library only. The workloads come from benches/workloads (built
with make if needed).
"""
import argparse
import contextlib
import fcntl
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKLOADS = os.path.join(ROOT, "benches", "workloads")

# name -> list of (file, exact old text, new text)
ABLATIONS = {
    "base": [],
    # C malloc clears (in the small pop, or on its miss), and C free checks
    # and writes, the freed stamp in the block's second word.
    "no-stamp": [
        ("asm/percpu_x86_64.S", "#define STAMP_CLEAR movq $0, OBJ_OFF_STAMP(%rax)\n", "#define STAMP_CLEAR\n"),
        ("src/front/check.rs", "    unsafe { stamp(p).write(0) };\n", ""),
        ("src/front/check.rs",
         "        if stamp(p).read() == mark {\n            return Err(Bad::DoubleFree);\n        }\n"
         "        stamp(p).write(mark);\n",
         "        let _ = mark;\n"),
    ],
    # C free's test that the pointer is where an object starts (what is
    # left is the test that the class-map byte names a class).
    "no-interior-check": [
        ("src/platform/size_class.rs",
         "        OBJECT_STARTS.holds(map_byte, p).then_some(SizeClass(map_byte))\n",
         "        let _ = p;\n        SizeClass::from_index(map_byte as usize)\n"),
    ],
    # The per-CPU hit counters, one read-modify-write in every fast path.
    "no-hit-counters": [
        ("asm/percpu_x86_64.S", "\tincq META_OFF_ALLOC_HITS(%rdx)\n", ""),
        ("asm/percpu_x86_64.S", "\tincq META_OFF_FREE_HITS(%rdx)\n", ""),
    ],
}
ABLATIONS["no-checks"] = ABLATIONS["no-stamp"] + ABLATIONS["no-interior-check"]
ABLATIONS["no-checks-no-counters"] = ABLATIONS["no-checks"] + ABLATIONS["no-hit-counters"]

# Ideas tried and not kept, so that their measurement can be repeated
# (BENCHMARKS.md); run only when named with --only.
TRIALS = {
    # After a pop commits, prefetch the object the next pop of the class
    # returns (slot current - 2 of the `current` the pop loaded).
    "prefetch-next": [
        ("asm/percpu_x86_64.S", "\tSTAMP_CLEAR\n\tret\n",
         "\tSTAMP_CLEAR\n\tmovq -16(%rdx, %rcx, 8), %rcx\n\tprefetcht0 (%rcx)\n\tret\n"),
    ],
}
BUILDS = {**ABLATIONS, **TRIALS}

# The peers exactly as the shoot-out preloads them, run by its runner.
sys.path.insert(0, WORKLOADS)
import shootout  # noqa: E402

class NoOptions(argparse.Namespace):
    """The shoot-out's options, all unset: every one it reads (and any it
    adds later) is None, so its table has the default paths."""

    def __getattr__(self, name):
        return None


PEERS = {
    name: (path, env)
    for name, path, env, _ in shootout.allocator_table(NoOptions())
    if name not in ("rseqalloc", "rseq-before")
}


def build(name, patches, scratch, out_dir):
    """Builds the ablated library; returns its path."""
    tree = os.path.join(scratch, name)
    shutil.copytree(ROOT, tree, ignore=shutil.ignore_patterns("target", ".git", "bin", "results"))
    for rel, old, new in patches:
        path = os.path.join(tree, rel)
        text = open(path).read()
        if text.count(old) != 1:
            sys.exit(f"ablation {name}: the text to replace in {rel} is not there exactly once:\n{old}")
        open(path, "w").write(text.replace(old, new))
    # Each tree builds into its own target directory: with a shared one,
    # cargo takes the copies for the same package and keeps the first build.
    env = {k: v for k, v in os.environ.items() if k != "CARGO_TARGET_DIR"}
    # An ablated build leaves variables unused; its warnings say nothing.
    env["RUSTFLAGS"] = (env.get("RUSTFLAGS", "") + " -A warnings").strip()
    # At the lowest priority: the builds share the machine with measurements.
    subprocess.run(["nice", "-n", "19", "cargo", "build", "--release", "-q", "-p", "rseqalloc-preload"],
                   cwd=tree, check=True, env=env)
    lib = os.path.join(out_dir, f"librseqalloc-{name}.so")
    shutil.copy(os.path.join(tree, "target", "release", "librseqalloc.so"), lib)
    return lib


def run_once(program, threads, scale, lib, env):
    """One run of `program` under `lib` (None: glibc), through the
    shoot-out's runner; its throughput."""
    rec = shootout.run_once(program, threads, float(scale), 42, lib, env, timeout=600)
    if rec["problem"]:
        sys.exit(f"{os.path.basename(program)} under {lib or 'glibc'}: {rec['problem']}")
    return rec["ops_per_sec"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workload", help="a program of benches/workloads/bin, e.g. larson, alloc_test")
    ap.add_argument("threads", type=int)
    ap.add_argument("--scale", default="1")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--only", default=",".join(ABLATIONS),
                    help="comma-separated builds (default: every ablation); trials: " + ",".join(TRIALS))
    ap.add_argument("--peers", default="", help="comma-separated peers: " + ",".join(PEERS))
    ap.add_argument("--baseline", help="another build of librseqalloc.so (e.g. main's) run beside, as rseq-before")
    ap.add_argument("--lock", help="a file to flock while the timed runs go on (not while building)")
    args = ap.parse_args()

    names = [n for n in args.only.split(",") if n]
    for n in names:
        if n not in BUILDS:
            ap.error(f"unknown build {n!r}; known: {', '.join(BUILDS)}")
    peers = [p for p in args.peers.split(",") if p]
    for p in peers:
        if p not in PEERS:
            ap.error(f"unknown peer {p!r}; known: {', '.join(PEERS)}")
    subprocess.run(["make", "-s", "-C", WORKLOADS], check=True)
    program = os.path.join(WORKLOADS, "bin", args.workload)
    if not os.path.exists(program):
        ap.error(f"no workload {program}")

    with tempfile.TemporaryDirectory(prefix="rseqalloc-ablate-") as scratch:
        libs, seen = {}, {}
        for n in names:
            print(f"building {n} ...", file=sys.stderr)
            lib = build(n, BUILDS[n], scratch, scratch)
            digest = hashlib.sha256(open(lib, "rb").read()).hexdigest()
            if digest in seen:
                sys.exit(f"ablation {n} built the same library as {seen[digest]}: the patch changed nothing")
            seen[digest] = n
            libs[n] = (lib, {})
        for p in peers:
            libs[p] = PEERS[p]
        if args.baseline:
            libs["rseq-before"] = (args.baseline, {})
        samples = {k: [] for k in libs}
        with open(args.lock, "a") if args.lock else contextlib.nullcontext() as lock:
            if lock:
                print(f"waiting for {args.lock} ...", file=sys.stderr)
                fcntl.flock(lock, fcntl.LOCK_EX)
            for i in range(args.runs):
                for k, (lib, env) in libs.items():  # interleaved: noise hits all alike
                    samples[k].append(run_once(program, args.threads, args.scale, lib, env))
                print(f"run {i + 1}/{args.runs} done", file=sys.stderr)

    base = statistics.median(samples[names[0]]) if names else None
    print(f"{args.workload} {args.threads} thread(s), scale {args.scale}, median of {args.runs} interleaved runs")
    print("| build | ops/s (median) | ÷ " + (names[0] if names else "-") + " | runs |")
    print("|---|---:|---:|---|")
    for k, xs in samples.items():
        med = statistics.median(xs)
        ratio = f"{med / base:.3f}" if base else "-"
        print(f"| {k} | {med:.4g} | {ratio} | {' '.join(f'{x:.3g}' for x in sorted(xs))} |")


if __name__ == "__main__":
    main()
