#!/usr/bin/env bash
# librseqalloc.so as an LD_PRELOAD malloc, in one mode:
#   tests/preload.sh glibc|own|fallback|valgrind
# - conformance: tests/c/conformance.c run against glibc and preloaded; the
#   outputs must be identical (and the preloaded run in the expected mode);
# - stress, fork, trim: tests/c/{stress,fork,trim}.c preloaded;
# - exit: tests/c/exit.c (a process whose main ends with pthread_exit exits
#   when its last thread returns, as under glibc; no thread of ours in a
#   single-threaded program, whose freed memory still goes back to the OS);
# - limits: tests/c/limits.c, huge requests with and without `ulimit -v`
#   (output identical to glibc's), and blocks filled up to `ulimit -v`
#   (at least 85% of what glibc reaches), and bad pointers judged in a heap
#   spread over several reservations;
# - mallinfo: tests/c/mallinfo.c's checks of glibc's meanings hold under
#   glibc and preloaded, and malloc_info's XML has glibc's shape;
# - rseq sharing (own and glibc registration): tests/c/rseqshare.c with
#   the convention library tests/c/rseqlib.c, linked or opened with dlopen,
#   in both registration orders; tests/c/librseqshare.c with a model of
#   librseq 0.1's registration (tests/c/librseqmodel.c), both orders;
# - options: a bad value and a misspelt name are reported;
# - bad input: tests/c/badfree.c, each mistake checked from the outside
#   (diagnostic line, SIGABRT; RSEQALLOC_CHECK=1; RSEQALLOC_BAD_FREE=leak);
# - real programs (not under valgrind): python3 with threads, sqlite3, git,
#   perl, gcc and sort give the same output with and without the library.
# Under valgrind, --soname-synonyms=somalloc=nouserintercepts stops memcheck
# from replacing our malloc with its own (it intercepts the allocation
# functions of every shared library by default), so our fallback runs and
# memcheck checks it.
# Prints one line per check and "preload (MODE): N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/.."
mode=${1:?usage: tests/preload.sh glibc|own|fallback|valgrind}
lib=$PWD/target/release/librseqalloc.so
bin=$PWD/target/ctest
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
passed=0 failed=0
check() { # check NAME CONDITION-STATUS
    if [ "$2" -eq 0 ]; then passed=$((passed + 1)); echo "  ok    $1"; else failed=$((failed + 1)); echo "  FAIL  $1"; fi
}

vg=()
case $mode in
    glibc) envs=(RSEQALLOC_MODE=auto); want=RseqGlibc ;;
    own) envs=(GLIBC_TUNABLES=glibc.pthread.rseq=0); want=RseqOwn ;;
    fallback) envs=(RSEQALLOC_MODE=fallback); want=Fallback ;;
    valgrind) envs=(RSEQALLOC_MODE=auto); want=Fallback
        vg=(valgrind -q --fair-sched=yes --error-exitcode=99 --soname-synonyms=somalloc=nouserintercepts) ;;
    *) echo "unknown mode $mode"; exit 2 ;;
esac
[ -f "$lib" ] || { echo "no $lib: run make"; exit 1; }

# pre COMMAND...: runs COMMAND with the library preloaded in this mode.
pre() { env "${envs[@]}" LD_PRELOAD="$lib" ${vg[@]+"${vg[@]}"} "$@"; }

mkdir -p "$bin"
for c in conformance stress fork badfree trim exit limits mallinfo; do
    if [ ! "$bin/$c" -nt "tests/c/$c.c" ]; then
        cc -O2 -fno-builtin -pthread -Wall -Wno-alloc-size-larger-than -Wno-deprecated-declarations \
            -Wno-free-nonheap-object -Wno-use-after-free -o "$bin/$c" "tests/c/$c.c" || check "build $c" 1
    fi
done

# Conformance: glibc is the oracle.
"$bin/conformance" >"$work/glibc.out" 2>/dev/null
check "conformance under glibc alone" $?
RSEQALLOC_STATS=1 pre "$bin/conformance" >"$work/ours.out" 2>"$work/ours.err"
check "conformance preloaded" $?
cmp -s "$work/glibc.out" "$work/ours.out"
check "conformance output identical to glibc's ($(wc -l <"$work/ours.out") lines)" $?
grep -q "^mode: *$want," "$work/ours.err"
check "runs in mode $want (RSEQALLOC_STATS=1 printed at exit)" $?
cat "$work/ours.out" | tail -n 1

# mallinfo2/mallinfo/malloc_info: glibc's meanings, checked under glibc and
# preloaded by the same program; malloc_info's XML has glibc's shape.
"$bin/mallinfo" "$work/glibc.xml" >"$work/mi.out"
check "mallinfo: the checks hold under glibc alone" $?
pre "$bin/mallinfo" "$work/ours.xml" >"$work/mi.out"
s=$?; grep FAIL "$work/mi.out"
check "mallinfo: the same checks hold preloaded (uordblks + hblkhd counts each block once)" $s
python3 - "$work/glibc.xml" "$work/ours.xml" <<'PY'
import sys, xml.etree.ElementTree as ET
def shape(path):
    root = ET.parse(path).getroot()
    rows = [el for el in root.iter() if el.tag == "size"]
    assert all(sorted(el.attrib) == ["count", "from", "to", "total"] for el in rows), path
    return [(el.tag, el.get("type"), sorted(el.attrib)) for el in root.iter() if el.tag != "size"], root
(want, _), (got, ours) = shape(sys.argv[1]), shape(sys.argv[2])
assert got == want, f"shape differs:\n glibc {want}\n ours  {got}"
mmap = ours.find("./total[@type='mmap']")
assert mmap.get("count") == "8" and int(mmap.get("size")) >= 8 << 22, mmap.attrib
PY
check "malloc_info: glibc's XML shape, the 8 mmapped blocks in <total type=\"mmap\">" $?

# Sharing rseq: a library registering by the __rseq_abi/__rseq_refcount
# convention, linked with the program or opened with dlopen after our first
# allocation, works whether it registers before or after our first
# allocation on a thread, with our library first in the lookup order (its
# __rseq_abi binds to ours) or its. Where glibc registered an area, such a
# library cannot register either way: it fails as it does alone (EINVAL),
# and allocation goes on.
if [ "$mode" = own ] || [ "$mode" = glibc ]; then
    if [ ! "$bin/rseqshare" -nt tests/c/rseqshare.c ] || [ ! "$bin/librseqlib.so" -nt tests/c/rseqlib.c ] ||
        [ ! "$bin/rseqshare-dlopen" -nt tests/c/rseqshare.c ] || [ ! "$bin/rseqshare" -nt tests/c/rseqtest.h ]; then
        cc -O2 -fPIC -shared -o "$bin/librseqlib.so" tests/c/rseqlib.c &&
            cc -O2 -pthread -o "$bin/rseqshare" tests/c/rseqshare.c -L"$bin" -lrseqlib -Wl,-rpath,"$bin" &&
            cc -O2 -pthread -DRSEQLIB_DLOPEN -o "$bin/rseqshare-dlopen" tests/c/rseqshare.c -ldl ||
            check "build rseqshare" 1
    fi
    env "${envs[@]}" "$bin/rseqshare" solo
    check "rseq sharing: the library alone registers and unregisters" $?
    pre "$bin/rseqshare" shared
    check "rseq sharing: the library registers before and after our first allocation" $?
    env "${envs[@]}" LD_PRELOAD="$bin/librseqlib.so $lib" "$bin/rseqshare" shared
    check "rseq sharing: the same with the library's __rseq_abi first in the lookup order" $?
    env "${envs[@]}" "$bin/rseqshare-dlopen" solo "$bin/librseqlib.so"
    check "rseq sharing: the library opened with dlopen, alone" $?
    pre "$bin/rseqshare-dlopen" shared "$bin/librseqlib.so"
    check "rseq sharing: the library opened with dlopen after our first allocation, both orders" $?

    # librseq 0.1 and later (tests/c/librseqmodel.c models its
    # registration): it registers each thread, before or after the thread's
    # first allocations, and our caches serve the threads it registered
    # (their allocation hits: at least half of the 1,000,005 allocations),
    # also where we came up before its constructor published its area.
    if [ ! "$bin/librseqshare" -nt tests/c/librseqshare.c ] || [ ! "$bin/librseqmodel.so" -nt tests/c/librseqmodel.c ] ||
        [ ! "$bin/librseqshare" -nt tests/c/rseqtest.h ]; then
        cc -O2 -fPIC -shared -o "$bin/librseqmodel.so" tests/c/librseqmodel.c -ldl &&
            cc -O2 -pthread -o "$bin/librseqshare" tests/c/librseqshare.c -L"$bin" -lrseqmodel -Wl,-rpath,"$bin" ||
            check "build librseqshare" 1
    fi
    for order in lib-first alloc-first; do
        env "${envs[@]}" "$bin/librseqshare" "$order" >/dev/null
        check "librseq ($order): alone" $?
        for early in "" 1; do
            pre env RSEQALLOC_STATS=1 ${early:+LIBRSEQMODEL_ALLOC_IN_INIT=1} "$bin/librseqshare" "$order" >"$work/librseq.out" 2>&1 &&
                awk '$1 == "alloc" && $2 == "hits:" { hits = $3 } END { exit !(hits >= 500000) }' "$work/librseq.out"
            check "librseq ($order${early:+, we came up before its constructor}): registers every thread, our caches serve them" $?
        done
    done
fi

# Stress, fork, trim.
if [ "$mode" = valgrind ]; then stress_args=(4 2 3000) forks=2; else stress_args=(8 3 30000) forks=100; fi
pre "$bin/stress" "${stress_args[@]}"
check "stress: 0 corrupted blocks" $?
# Checked mode marks blocks on the slow paths only, and runs every operation
# through them: real use (threads, cross-thread frees, every entry point)
# must give no false report.
RSEQALLOC_CHECK=1 RSEQALLOC_STATS=1 pre "$bin/stress" "${stress_args[@]}" >/dev/null 2>"$work/checked.err" &&
    RSEQALLOC_CHECK=1 pre "$bin/conformance" 2>/dev/null | cmp -s "$work/glibc.out" - &&
    grep -q "^mode: *Fallback," "$work/checked.err" && ! grep -q "invalid pointer" "$work/checked.err"
check "RSEQALLOC_CHECK=1: stress and conformance as without it, no bad-pointer report, caches in mode Fallback" $?
pre "$bin/fork" "$forks"
check "fork under allocating threads" $?
if [ "$mode" != valgrind ]; then # RSS means nothing under valgrind
    RSEQALLOC_DECAY_MS=0 pre "$bin/trim"
    check "malloc_trim returns memory (a 1 GiB burst at once, with the decay off)" $?
fi

# Exit: the allocator never keeps a process alive (glibc exits these in
# 0.3 s, when the worker returns; a process our thread kept alive ignores
# SIGTERM, so only SIGKILL ends it). The bound only has to tell "exits"
# from "kept alive": it scales with what glibc took for `before` under the
# same wrapper just before (the other two wait for our thread, which glibc
# has not), since a loaded machine stretches both: at a load average of 30,
# valgrind took 5 s to run glibc's 0.3 s, and 6-16 s for `during` and
# `pending`, whose extra threads it runs one at a time.
start=$(date +%s%N)
${vg[@]+"${vg[@]}"} "$bin/exit" before
glibc_status=$? glibc_took=$((($(date +%s%N) - start) / 1000000))
if [ "$mode" = valgrind ]; then
    exit_bound=$((4 * glibc_took + 10000))
else
    exit_bound=$((2 * glibc_took + 5000))
fi
for how in before during pending; do
    start=$(date +%s%N)
    timeout -s KILL $((exit_bound / 1000 + 5)) env "${envs[@]}" LD_PRELOAD="$lib" ${vg[@]+"${vg[@]}"} "$bin/exit" "$how"
    status=$? took=$((($(date +%s%N) - start) / 1000000))
    [ "$glibc_status" -eq 0 ] && [ "$status" -eq 0 ] && [ "$took" -lt "$exit_bound" ]
    check "exit after pthread_exit from main ($how): status $status in $took ms (glibc, before: $glibc_status in $glibc_took ms)" $?
done
if [ "$mode" = valgrind ]; then single_args=(single); else single_args=(single rss); fi
RSEQALLOC_DECAY_MS=100 pre "$bin/exit" "${single_args[@]}"
check "single-threaded: no thread of ours, memory back with no call" $?
pre "$bin/exit" fork
check "a fork child of a threaded parent gets no thread of ours while single-threaded" $?
RSEQALLOC_DECAY_MS=100 pre "$bin/exit" idle
check "an idle program has no thread of ours once its memory went back" $?

# Huge requests and the heap's ceiling (not under valgrind, which keeps its
# own address-space map): glibc is the oracle, in this run.
if [ "$mode" != valgrind ]; then
    for limit in unlimited 3000000; do
        (ulimit -v "$limit" && "$bin/limits" huge) >"$work/huge.glibc" 2>&1
        (ulimit -v "$limit" && pre "$bin/limits" huge) >"$work/huge.ours" 2>&1
        grep -q "^posix_memalign" "$work/huge.ours" && cmp -s "$work/huge.glibc" "$work/huge.ours"
        check "huge requests (ulimit -v $limit): the same NULLs and errnos as glibc ($(grep -c NULL "$work/huge.ours") NULL)" $?
        [ -s "$work/huge.ours" ] && ! cmp -s "$work/huge.glibc" "$work/huge.ours" && diff "$work/huge.glibc" "$work/huge.ours" | head -n 8
    done
    # Under ulimit -v, small, medium and mapped blocks must reach at least
    # 85% of what glibc reaches (the rest is size-class rounding), and
    # again after freeing them all.
    for size in 64 20000 300000; do
        glibc=$( (ulimit -v 3000000 && "$bin/limits" fill "$size") 2>&1)
        ours=$( (ulimit -v 3000000 && pre "$bin/limits" fill "$size") 2>&1)
        read -r g_first _ <<<"$(sed -E 's/^reached ([0-9]+) MiB.*again ([0-9]+) MiB$/\1 \2/' <<<"$glibc")"
        read -r o_first o_again <<<"$(sed -E 's/^reached ([0-9]+) MiB.*again ([0-9]+) MiB$/\1 \2/' <<<"$ours")"
        [[ "$o_first" =~ ^[0-9]+$ && "$g_first" =~ ^[0-9]+$ ]] && grep -q "errno ENOMEM" <<<"$ours" &&
            [ $((o_first * 100)) -ge $((g_first * 85)) ] && [ $((o_again * 100)) -ge $((o_first * 95)) ]
        check "ulimit -v 3000000, $size-byte blocks: $o_first MiB (again ${o_again:-?}), glibc $g_first MiB" $?
    done
    # Bad pointers in the newest of several reservations are judged as in
    # the first: one line, SIGABRT.
    for case in "interior:interior pointer" "interior-medium:interior pointer" "double:double free" \
        "foreign:not allocated by rseqalloc"; do
        kind=${case%%:*} reason=${case#*:}
        status=$({ pre "$bin/limits" grown "$kind" >"$work/grown.out" 2>"$work/grown.err"; echo $?; } 2>/dev/null)
        [ "$status" -eq 134 ] && grep -q "^blocks spread over" "$work/grown.out" && ! grep -q survived "$work/grown.out" &&
            grep -qE "^rseqalloc: free\(\): invalid pointer 0x[0-9a-f]+: $reason" "$work/grown.err"
        check "bad input $kind across reservations (ulimit -v 1000000): '$reason', SIGABRT (status $status)" $?
    done
fi

# Bad input: one child per mistake.
expect_abort() { # expect_abort KIND CALL REASON [ENV...]
    local kind=$1 call=$2 reason=$3; shift 3
    local status # (the group keeps bash's "Aborted" notice out of the log)
    status=$({ env "$@" "${envs[@]}" LD_PRELOAD="$lib" ${vg[@]+"${vg[@]}"} "$bin/badfree" "$kind" \
        >"$work/bad.out" 2>"$work/bad.err"; echo $?; } 2>/dev/null)
    [ "$status" -eq 134 ] && grep -qE "^rseqalloc: $call\(\): invalid pointer 0x[0-9a-f]+: $reason" "$work/bad.err" &&
        ! grep -q survived "$work/bad.out"
    check "bad input $kind: '$reason', SIGABRT (status $status)" $?
}
expect_abort foreign free "not allocated by rseqalloc"
expect_abort foreign-mapping free "not allocated by rseqalloc"
expect_abort interior free "interior pointer"
expect_abort interior-medium free "interior pointer"
expect_abort interior-medium-granule free "interior pointer"
expect_abort interior-large free "not allocated by rseqalloc"
expect_abort realloc-interior realloc "interior pointer"
expect_abort realloc-interior-medium realloc "interior pointer"
expect_abort double free "double free"
expect_abort double-medium free "not allocated by rseqalloc \(or already freed\)"
expect_abort double-large free "not allocated by rseqalloc \(or already freed\)"
expect_abort double-after-write free "double free" RSEQALLOC_CHECK=1
RSEQALLOC_BAD_FREE=leak RSEQALLOC_STATS=1 pre "$bin/badfree" leak-all >"$work/bad.out" 2>"$work/bad.err"
[ $? -eq 0 ] && grep -q survived "$work/bad.out" && grep -q "^bad frees: *11 " "$work/bad.err" &&
    [ "$(grep -c 'left alone (RSEQALLOC_BAD_FREE=leak)' "$work/bad.err")" -eq 11 ]
check "RSEQALLOC_BAD_FREE=leak: 11 mistakes reported, counted, survived" $?

# Options: the C library reads the same table, at load.
RSEQALLOC_MMCID=" 0" RSEQALLOC_STAT=1 pre true 2>"$work/opt.err"
[ $? -eq 0 ] &&
    grep -qF 'rseqalloc: RSEQALLOC_MMCID=" 0" is not valid: expected `0`/`off`/`no`/`false` or `1`/`on`/`yes`/`true`; using 1 (the default)' "$work/opt.err" &&
    grep -qF 'rseqalloc: RSEQALLOC_STAT is not a variable rseqalloc reads; ignored (did you mean RSEQALLOC_STATS?)' "$work/opt.err"
check "options: a bad value and an unknown name reported at load" $?

# Real programs: the same output with and without the library.
same() { # same NAME COMMAND...: stdout with and without preload must match
    local name=$1; shift
    (cd "$work" && "$@") >"$work/plain.out" 2>&1
    local s1=$?
    (cd "$work" && RSEQALLOC_STATS=1 pre "$@") >"$work/pre.out" 2>"$work/pre.err"
    local s2=$?
    [ $s1 -eq 0 ] && [ $s2 -eq 0 ] && cmp -s "$work/plain.out" "$work/pre.out" && grep -q "^mode: *$want," "$work/pre.err"
    check "$name: same output preloaded ($(wc -c <"$work/pre.out") bytes)" $?
}
if [ "$mode" != valgrind ]; then
    command -v sqlite3 >/dev/null || (apt-get update -qq && apt-get install -y -qq sqlite3 >/dev/null)
    cat >"$work/threads.py" <<'PY'
import hashlib, json, threading, queue
from concurrent.futures import ThreadPoolExecutor
def job(i):
    rows = [{"id": j, "name": "item%d" % (j * i), "tags": ["t%d" % (k % 7) for k in range(j % 13)]} for j in range(3000)]
    text = json.dumps(rows, sort_keys=True)
    back = json.loads(text)
    words = sorted({w for r in back for w in r["tags"] + [r["name"]]})
    return hashlib.sha256((text + "".join(words)).encode()).hexdigest()
with ThreadPoolExecutor(max_workers=6) as pool:
    digests = list(pool.map(job, range(48)))
q, out = queue.Queue(), []
def producer(n):
    for i in range(20000): q.put(bytes(i % 251 for _ in range(i % 97)))
    q.put(None)
t = threading.Thread(target=producer, args=(1,)); t.start()
while (item := q.get()) is not None: out.append(len(item))
t.join()
print(len(digests), hashlib.sha256("".join(digests).encode()).hexdigest(), sum(out))
PY
    same "python3 (PYTHONMALLOC=malloc, threads)" env PYTHONMALLOC=malloc python3 threads.py
    same "sqlite3" sqlite3 :memory: "
        create table t(id integer primary key, k text, v real);
        with recursive n(i) as (select 1 union all select i + 1 from n where i < 200000)
        insert into t select i, printf('key%d', i * 7919 % 10007), i * 0.5 from n;
        create index tk on t(k);
        select count(*), count(distinct k), sum(v) from t;
        select k, count(*), max(v) from t group by k order by k limit 5;
        select group_concat(id) from (select id from t where k = 'key42' order by id);"
    same "perl" perl -e '
        my %h; for my $i (1 .. 300000) { $h{"k" . ($i * 7919 % 100003)} .= chr(65 + $i % 26) }
        my $s = join ",", map { "$_=" . length($h{$_}) } (sort keys %h)[0 .. 50];
        my @w = ("lorem ipsum dolor sit amet " x 20000) =~ /(\w+)/g;
        print scalar(keys %h), " ", scalar(@w), " $s\n";'
    same "gcc compiling stress.c" sh -c "gcc -O2 -pthread -c -o stress.o '$PWD/tests/c/stress.c' && sha256sum <stress.o"
    same "git" sh -c '
        export GIT_AUTHOR_NAME=t GIT_AUTHOR_EMAIL=t@t GIT_COMMITTER_NAME=t GIT_COMMITTER_EMAIL=t@t \
            GIT_AUTHOR_DATE="2020-01-01T00:00:00Z" GIT_COMMITTER_DATE="2020-01-01T00:00:00Z" HOME=. GIT_CONFIG_NOSYSTEM=1
        rm -rf repo && git init -q -b main repo && cd repo &&
        for i in $(seq 1 40); do seq $i 3 4000 > f$i.txt; done && git add . && git commit -q -m one &&
        for i in $(seq 1 40 ); do seq 1 $i >> f$i.txt; done && git commit -q -am two &&
        git log --stat --format="%H %s" | head -n 60 && git gc -q && git fsck --no-progress && git rev-parse HEAD'
    seq 1 3000000 | awk '{ printf "%08x %d\n", ($1 * 2654435761) % 4294967296, $1 }' >"$work/big.txt"
    same "sort (3 M lines, 2 threads)" sh -c 'LC_ALL=C sort --parallel=2 -S 64M big.txt | sha256sum'
fi

echo "preload ($mode): $passed passed, $failed failed"
[ "$failed" -eq 0 ]
