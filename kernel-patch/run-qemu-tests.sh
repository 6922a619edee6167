#!/bin/bash
# SPDX-License-Identifier: MIT OR Apache-2.0
#
# Build Debian's linux-source-6.12 with the restart-regions series, boot it
# under QEMU (TCG) with 2 and then 4 vCPUs, and run in the guest:
#   - the kernel selftest tools/testing/selftests/rseq/regions_test (from the series),
#   - rseqalloc's own tests stress_restarts, global_alloc, region_mode and
#     model_remote (cargo, static), each in region mode and in mainline mode
#     (RSEQALLOC_MODE=mainline), the mode asserted with RSEQALLOC_EXPECT_MODE;
#   - the mode benchmark benches/examples/mode_pair, 3 times per mode, interleaved;
#     its MODEBENCH lines are summarised as MODEBENCH-SUMMARY lines.
# Ends with one line "N passed, N failed"; exits non-zero on any failure,
# including a timeout, a kernel panic or a missing result.
#
# Why each choice:
#   tinyconfig + qemu.config: 2-5 min to build instead of 15-20 for defconfig;
#   TCG, not KVM: KVM here is PVM, which cannot run a stock kernel;
#   ACPI in qemu.config: the kernel finds every vCPU in QEMU's MADT (SeaBIOS's
#     MP table, the only other source, is dropped at 64 vCPUs);
#   -smp N,sockets=N: the MP table (acpi=off) lists one CPU per socket;
#   tsc=reliable: otherwise TCG marks the TSC unstable and timers run on jiffies;
#   PVH vmlinux: boots faster than a bzImage;
#   RB_AUTOBOOT + -no-reboot: without ACPI a power-off only halts.
#
# Environment knobs (defaults in brackets):
#   KCACHE [/var/cache/rseqalloc-kernel]  kernel + selftest cache, keyed by inputs
#                     (point it at an empty directory to time a cold run)
#   WORK [/var/tmp/rseqalloc-kernel-work] scratch: source tree, build, initramfs,
#                     cargo target dir
#   SMP_LIST ["2 4"]  vCPU counts to boot with
#   TIMEOUT [300]     seconds per boot, QEMU is killed after that
#   RR_ITERS [1000000] operations per worker thread in the selftest
#   JOBS [nproc+1]    make -j
#   KSRC_PIN [6.12.117-1~deb12u1] the linux-source-6.12 version the series is
#                     made against; another installed version is an error
#   SCALE [0]         1: also run rseqalloc's sizing and release tests, in
#                     both modes, with 4 GiB of guest memory at every vCPU
#                     count (release fills 1 GiB); meant for large boots:
#                     SCALE=1 SMP_LIST="2 4 16 64" TIMEOUT=3600
#   ONLY [all]        names of the guest tests to run, e.g. "model_remote
#                     sizing": rseq_regions (the selftest), mode_pair, or a
#                     rseqalloc test; the others are neither built nor booted
#   PERF [0]          1: also run perf/perfbench in each boot: perf bench sched
#                     pipe and messaging (hackbench) without regions, with
#                     another process holding one, and in a process with one
#                     (the host's /usr/bin/perf and its libraries are copied in);
#                     fork()+wait with no region, one, and a full table
#   STOCK [0]         1: the same perfbench on Debian's unpatched 6.12 (same
#                     source, same qemu.config, its own cache entry) against
#                     the patched kernel: boots alternate stock/patched
#                     PERF_BOOTS times per vCPU count, with perfbench alone in
#                     the initramfs, and PERFCMP-SUMMARY lines give the
#                     ratios of the medians; not part of .ci/run
#   PERF_BOOTS [3]    with STOCK=1: boots per kernel and vCPU count
#   DEBUG [0]         1: build and boot the debug kernel (qemu-debug.config:
#                     lockdep, PROVE_RCU, DEBUG_ATOMIC_SLEEP, KASAN, UBSAN_BOUNDS);
#                     slower, so not part of .ci/run; run it before landing
#                     kernel changes: sudo DEBUG=1 kernel-patch/run-qemu-tests.sh
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
KCACHE=${KCACHE:-/var/cache/rseqalloc-kernel}
DEBUG=${DEBUG:-0}
STOCK=${STOCK:-0}
WORK=${WORK:-/var/tmp/rseqalloc-kernel-work$([ "$DEBUG" = 1 ] && echo -debug)$([ "$STOCK" = 1 ] && echo -stock)}
SMP_LIST=${SMP_LIST:-"2 4"}
PERF=${PERF:-$STOCK}
PERF_BOOTS=${PERF_BOOTS:-3}
SCALE=${SCALE:-0}
ONLY=${ONLY:-}
TIMEOUT=${TIMEOUT:-$([ "$DEBUG" = 1 ] || [ "$STOCK" = 1 ] && echo 900 || echo 300)}
RR_ITERS=${RR_ITERS:-1000000}
JOBS=${JOBS:-$(($(nproc) + 1))}
KSRC_PKG=linux-source-6.12
KSRC_PIN=${KSRC_PIN:-6.12.117-1~deb12u1}
KSRC_TAR=/usr/src/linux-source-6.12.tar.xz
# Reproducible builds: the same inputs give the same vmlinux.
KBUILD_ENV=(KBUILD_BUILD_TIMESTAMP=2000-01-01 KBUILD_BUILD_USER=rseqalloc KBUILD_BUILD_HOST=qemu)

T0=$(date +%s)
log() { echo "[run-qemu-tests +$(($(date +%s) - T0))s] $*"; }
die() { echo "[run-qemu-tests] FATAL: $*" >&2; echo "0 passed, 1 failed"; exit 1; }

installed() { [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]; }

APT_UPDATED=
apt_update() {
	[ -n "$APT_UPDATED" ] && return 0
	apt-get update -q >/dev/null || die "apt-get update failed"
	APT_UPDATED=1
}

# Debian 12 ships qemu 7.2, whose qemu-system-common conflicts with the
# qemu-utils 10.x from bookworm-backports preinstalled on these machines:
# installing it would remove qemu-utils. Take qemu from backports instead,
# with a sources list derived from the machine's own, without touching /etc/apt.
install_qemu() {
	local d codename uri keyring
	d=$(mktemp -d)
	codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
	cp /etc/apt/sources.list.d/*.sources "$d/" 2>/dev/null || true
	[ -f /etc/apt/sources.list ] && cp /etc/apt/sources.list "$d/main.list"
	uri=$(awk -v c="$codename" '/^URIs:/ { u = $2 } /^Suites:/ && $0 ~ (" " c "( |$)") { print u; exit }' \
		/etc/apt/sources.list.d/*.sources 2>/dev/null)
	keyring=$(awk -v c="$codename" '/^Suites:/ && $0 ~ (" " c "( |$)") { f = 1 } f && /^Signed-By:/ { print $2; exit }' \
		/etc/apt/sources.list.d/*.sources 2>/dev/null)
	uri=${uri:-http://deb.debian.org/debian}
	keyring=${keyring:-/usr/share/keyrings/debian-archive-keyring.gpg}
	printf 'Types: deb\nURIs: %s\nSuites: %s-backports\nComponents: main\nSigned-By: %s\n' \
		"$uri" "$codename" "$keyring" > "$d/rseqalloc-backports.sources"
	log "installing qemu-system-x86 from $codename-backports ($uri)"
	if apt-get -o Dir::Etc::SourceParts="$d" -o Dir::Etc::SourceList=/dev/null update -q >/dev/null &&
	   DEBIAN_FRONTEND=noninteractive apt-get -o Dir::Etc::SourceParts="$d" \
		-o Dir::Etc::SourceList=/dev/null install -y -q --no-install-recommends \
		-t "$codename-backports" qemu-system-x86 >/dev/null; then
		rm -rf "$d"
		return 0
	fi
	rm -rf "$d"
	log "WARNING: backports qemu failed, falling back to $codename's qemu-system-x86"
	apt_update
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends qemu-system-x86 >/dev/null
}

install_deps() {
	local need=() p
	for p in bc bison flex cpio libelf-dev libssl-dev xz-utils gcc make libc6-dev python3 rsync; do
		installed "$p" || need+=("$p")
	done
	if [ ${#need[@]} -gt 0 ]; then
		log "installing ${need[*]}"
		apt_update
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null ||
			die "apt-get install ${need[*]} failed"
	fi
	if ! installed "$KSRC_PKG"; then
		apt_update
		log "installing $KSRC_PKG=$KSRC_PIN"
		# Only the pinned version: the series is made against it and
		# applies without fuzz. Once the security archive drops it,
		# snapshot.debian.org still has it.
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
			"$KSRC_PKG=$KSRC_PIN" >/dev/null ||
			die "cannot install $KSRC_PKG=$KSRC_PIN (snapshot.debian.org has it)"
	fi
	[ "$(dpkg-query -W -f='${Version}' "$KSRC_PKG")" = "$KSRC_PIN" ] ||
		die "$KSRC_PKG $(dpkg-query -W -f='${Version}' "$KSRC_PKG") is installed; the series is made against $KSRC_PIN"

	installed qemu-system-x86 || install_qemu || die "cannot install qemu-system-x86"
	command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 not found"
}

# The kernel being keyed or built: "patched" (the series), or "stock"
# (the same source without it: STOCK=1's baseline).
VARIANT=patched

patches() {
	[ "$VARIANT" = stock ] && return 0
	grep -v '^\s*\(#\|$\)' "$HERE/series" | sed "s|^|$HERE/|"
}

# The config fragments: qemu.config, plus qemu-debug.config with DEBUG=1.
fragments() {
	echo "$HERE/qemu.config"
	[ "$DEBUG" = 1 ] && echo "$HERE/qemu-debug.config"
	return 0
}

# Everything the cached kernel and selftest binary depend on: the code that
# builds them (the functions, not the whole script, so that changing how
# the guest tests run does not rebuild the kernel), the patches, the config
# fragment and the toolchain.
cache_key() {
	{
		echo "src $KSRC_VER $VARIANT"
		patches | xargs cat
		cat "$HERE/qemu.config"
		[ "$DEBUG" = 1 ] && cat "$HERE/qemu-debug.config"
		declare -f patches fragments check_config build_kernel
		declare -p KBUILD_ENV
		gcc --version | head -1
		dpkg-query -W -f='${Version}\n' libc6
	} | sha256sum | cut -c1-16
}

# Every CONFIG_ line of the fragment must survive olddefconfig unchanged.
check_config() {
	local cfg=$1 line opt bad=0
	while read -r line; do
		case "$line" in
		CONFIG_*=*)
			grep -qxF "$line" "$cfg" || { echo "config: $line did not survive (have: $(grep "^${line%%=*}=" "$cfg" || echo unset))"; bad=1; } ;;
		"# CONFIG_"*" is not set")
			opt=${line#\# }; opt=${opt%% *}
			grep -q "^$opt=" "$cfg" && { echo "config: $opt should be unset"; bad=1; } ;;
		esac
	done < <(fragments | xargs cat)
	return $bad
}

build_kernel() {
	local out=$1 src=$WORK/src/linux-source-6.12 build=$WORK/build p tmp targets
	log "cache miss: building kernel into $out"
	rm -rf "$WORK/src" "$build" "$WORK/hdr" "$WORK/selftests"
	mkdir -p "$WORK/src" "$build"
	log "unpacking $KSRC_TAR"
	tar -C "$WORK/src" -xf "$KSRC_TAR" || die "unpack failed"
	for p in $(patches); do
		log "applying $(basename "$p")"
		patch -d "$src" -p1 --forward --quiet --fuzz=0 --no-backup-if-mismatch < "$p" ||
			die "patch $(basename "$p") does not apply without fuzz"
	done
	log "configuring: tinyconfig + $(fragments | xargs -n1 basename | tr '\n' ' ')"
	make -C "$src" -s ARCH=x86_64 O="$build" tinyconfig >/dev/null || die "tinyconfig failed"
	"$src/scripts/kconfig/merge_config.sh" -m -O "$build" "$build/.config" $(fragments) >/dev/null ||
		die "merge_config failed"
	make -C "$src" -s ARCH=x86_64 O="$build" olddefconfig >/dev/null || die "olddefconfig failed"
	check_config "$build/.config" || die "config fragment options lost, see above"
	# KASAN's instrumented C code cannot run at the PVH entry (before its
	# shadow exists): the debug kernel boots as a bzImage instead.
	targets=vmlinux
	[ "$DEBUG" = 1 ] && targets="vmlinux bzImage"
	log "make $targets -j$JOBS (log: $build/make.log)"
	env "${KBUILD_ENV[@]}" make -C "$src" ARCH=x86_64 O="$build" -j"$JOBS" $targets > "$build/make.log" 2>&1 ||
		{ tail -30 "$build/make.log"; die "kernel build failed"; }
	tmp=$(mktemp -d "$KCACHE/.tmp.XXXXXX")
	# The stock kernel has no regions_test: it only runs perfbench.
	if [ "$VARIANT" = patched ]; then
		log "headers_install + selftests/rseq/regions_test"
		make -C "$src" -s ARCH=x86_64 O="$build" headers_install INSTALL_HDR_PATH="$WORK/hdr" >/dev/null ||
			die "headers_install failed"
		mkdir -p "$WORK/selftests"
		# Static, for the bare initramfs (glibc warns about dlsym in rseq.c).
		make -C "$src/tools/testing/selftests/rseq" -s OUTPUT="$WORK/selftests" \
			KHDR_INCLUDES="-isystem $WORK/hdr/include" LDFLAGS=-static \
			"$WORK/selftests/regions_test" 2> "$WORK/selftests/build.log" >/dev/null ||
			{ cat "$WORK/selftests/build.log"; die "selftest build failed"; }
		cp "$WORK/selftests/regions_test" "$tmp/regions_test"
	fi
	strip -o "$tmp/vmlinux" "$build/vmlinux"
	[ "$DEBUG" = 1 ] && cp "$build/arch/x86/boot/bzImage" "$tmp/bzImage"
	cp "$build/.config" "$tmp/config"
	echo "$KSRC_VER $VARIANT" > "$tmp/source-version"
	rm -rf "$out" && mv "$tmp" "$out"
	# The 1.7 GB tree is quicker to unpack again than to keep.
	rm -rf "$WORK/src"
}

# rseqalloc's own tests, built static so they run in the bare initramfs.
# Prints one "name path" line per test binary found, then "mode_pair path"
# for the benchmark; SKIP lines go to stderr.
RUST_WANTED="region_mode global_alloc stress_restarts model_remote"
[ "$SCALE" = 1 ] && RUST_WANTED+=" sizing release"

# Whether the guest runs test $1 (ONLY, when set, names the ones it runs).
wanted() {
	[ -z "$ONLY" ] || [[ " $ONLY " == *" $1 "* ]]
}

# ONLY must name tests this run has; a typo would otherwise run nothing.
check_only() {
	local t
	for t in $ONLY; do
		[[ " rseq_regions mode_pair $RUST_WANTED " == *" $t "* ]] ||
			die "ONLY: no guest test '$t' in this run (it has: rseq_regions mode_pair $RUST_WANTED)"
	done
	RUST_WANTED=$(for t in $RUST_WANTED; do wanted "$t" && echo "$t"; done | xargs)
}
build_rust_tests() {
	local meta targets features args=() t json
	if [ ! -f "$REPO/Cargo.toml" ]; then
		for t in $RUST_WANTED; do echo "SKIP rust:$t no Cargo.toml in $REPO yet" >&2; done
		return 0
	fi
	if ! command -v cargo >/dev/null; then
		for t in $RUST_WANTED; do echo "SKIP rust:$t cargo not installed" >&2; done
		return 0
	fi
	meta=$(cd "$REPO" && cargo metadata --no-deps --format-version 1 2>/dev/null) || {
		echo "FAIL rust: cargo metadata failed" >&2; return 1; }
	# Which wanted test targets exist, and the features they require.
	read -r targets features < <(python3 -c '
import json, sys
want = sys.argv[1].split()
meta = json.loads(sys.stdin.read())
have, feats = [], set()
for pkg in meta["packages"]:
    for t in pkg["targets"]:
        if "test" in t["kind"] and t["name"] in want:
            have.append(t["name"]); feats.update(t.get("required-features") or [])
print(",".join(have) or "-", ",".join(sorted(feats)) or "-")
' "$RUST_WANTED" <<< "$meta")
	for t in $RUST_WANTED; do
		[[ ",$targets," == *",$t,"* ]] || echo "SKIP rust:$t no test target '$t' in Cargo.toml yet" >&2
	done
	[ "$targets" = "-" ] && { build_rust_bench; return; }
	for t in ${targets//,/ }; do args+=(--test "$t"); done
	[ "$features" != "-" ] && args+=(--features "$features")
	log "cargo test --no-run ${args[*]} (static, release)" >&2
	# RSEQALLOC_TEST_HOOKS=1: stress_restarts drives the test hooks (build.rs).
	json=$(cd "$REPO" && CARGO_TARGET_DIR="$WORK/cargo-target" RUSTFLAGS='-C target-feature=+crt-static' \
		RSEQALLOC_TEST_HOOKS=1 cargo test --release --target x86_64-unknown-linux-gnu --no-run --message-format=json \
		"${args[@]}" 2> "$WORK/cargo.log") || {
		tail -30 "$WORK/cargo.log" >&2
		echo "FAIL rust: cargo test --no-run failed (log above)" >&2
		return 1
	}
	python3 -c '
import json, sys
want = sys.argv[1].split(",")
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    t = m.get("target") or {}
    if m.get("reason") == "compiler-artifact" and m.get("executable") and "test" in t.get("kind", []) and t.get("name") in want:
        print(t["name"], m["executable"])
' "$targets" <<< "$json"
	build_rust_bench
}

# benches/examples/mode_pair, static like the tests; prints "mode_pair path".
build_rust_bench() {
	local json
	wanted mode_pair || return 0
	[ -f "$REPO/benches/examples/mode_pair.rs" ] || {
		echo "SKIP rust:mode_pair no benches/examples/mode_pair.rs" >&2; return 0; }
	log "cargo build --example mode_pair (static, release)" >&2
	json=$(cd "$REPO" && CARGO_TARGET_DIR="$WORK/cargo-target" RUSTFLAGS='-C target-feature=+crt-static' \
		cargo build --release --target x86_64-unknown-linux-gnu -p rseqalloc-bench --example mode_pair --message-format=json \
		2>> "$WORK/cargo.log") || {
		tail -30 "$WORK/cargo.log" >&2
		echo "FAIL rust: cargo build --example mode_pair failed (log above)" >&2
		return 1
	}
	python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "mode_pair":
        print("mode_pair", m["executable"])
' <<< "$json"
}

# The two allocator modes every rseqalloc test runs in, as init.c's
# "@VAR=value,..." name suffixes: region mode (the default on this kernel)
# and mainline rseq; RSEQALLOC_EXPECT_MODE makes the tests assert it.
MODE_REGION="RSEQALLOC_EXPECT_MODE=region"
MODE_MAINLINE="RSEQALLOC_MODE=mainline,RSEQALLOC_EXPECT_MODE=glibc"
# SCALE=1 also runs the remote-fence stress in region mode with caches by
# CPU id: by default caches follow mm_cid and each fence interrupts every
# CPU that runs the process; by CPU id each fence targets one CPU, so the
# remote operations fence every vCPU by its number.
MODE_CPUID="RSEQALLOC_MMCID=0,RSEQALLOC_EXPECT_MODE=region"
CPUID_TESTS=" stress_restarts "

make_initramfs() {
	local dir=$WORK/initramfs name path
	rm -rf "$dir" && mkdir -p "$dir"/{tests,proc,sys,dev}
	gcc -O2 -Wall -static -o "$dir/init" "$HERE/init.c" || die "init.c build failed"
	local n=20 bench i
	# STOCK=1 compares kernels: perfbench alone, in both kernels' boots.
	if [ "$STOCK" = 1 ]; then
		add_perfbench "$dir"
		(cd "$dir" && find . | cpio -o -H newc --quiet) > "$WORK/initramfs.cpio" || die "cpio failed"
		ls "$dir/tests" > "$WORK/expected-tests.txt"
		return
	fi
	# qemu.config sets CONFIG_DEBUG_RSEQ, which the selftest then checks.
	wanted rseq_regions && cp "$KDIR/regions_test" "$dir/tests/10-rseq_regions@RR_EXPECT_DEBUG_RSEQ=1"
	while read -r name path; do
		case $name in
		"") ;;
		mode_pair)
			# Interleaved, so that a slow spell of the host hits both modes.
			bench=$dir/tests/90-mode_pair@RSEQALLOC_MODE=mainline
			cp "$path" "$bench"
			for i in 1 2 3 4 5; do
				ln "$bench" "$dir/tests/9$i-mode_pair@RSEQALLOC_MODE=$( ((i % 2)) && echo auto || echo mainline)"
			done ;;
		*)
			cp "$path" "$dir/tests/$n-$name@$MODE_REGION"
			ln "$dir/tests/$n-$name@$MODE_REGION" "$dir/tests/$((n + 1))-$name@$MODE_MAINLINE"
			[ "$SCALE" = 1 ] && [[ $CPUID_TESTS == *" $name "* ]] &&
				ln "$dir/tests/$n-$name@$MODE_REGION" "$dir/tests/$((n + 2))-$name@$MODE_CPUID"
			n=$((n + 10)) ;;
		esac
	done < "$WORK/rust-tests.txt"
	[ "$PERF" = 1 ] && add_perfbench "$dir"
	(cd "$dir" && find . | cpio -o -H newc --quiet) > "$WORK/initramfs.cpio" || die "cpio failed"
	ls "$dir/tests" > "$WORK/expected-tests.txt"
}

# A kernel log line that fails the run: panics, BUG (KASAN reports and
# sleeping in atomic context among them), WARNING (lockdep and RCU
# splats among them), UBSAN reports, any stack dump.
SPLAT='Kernel panic|BUG:|WARNING:|Oops|Possible attack attempt|general protection|UBSAN:|KASAN:|Call Trace:|lockdep is turned off|INFO: task .* blocked'

# perf/perfbench, the region helper library it preloads, and the host's
# perf with the shared libraries and loader it needs.
add_perfbench() {
	local dir=$1 lib
	command -v perf >/dev/null || die "PERF=1 needs perf (apt-get install linux-perf)"
	gcc -O2 -Wall -static -o "$dir/tests/99-perfbench" "$HERE/perf/perfbench.c" 2>/dev/null ||
		die "perfbench.c build failed"
	mkdir -p "$dir/lib" "$dir/usr/bin" "$dir/tmp"
	gcc -O2 -Wall -shared -fPIC -o "$dir/lib/regions_preload.so" "$HERE/perf/regions_preload.c" ||
		die "regions_preload.c build failed"
	cp "$(readlink -f "$(command -v perf)")" "$dir/usr/bin/perf"
	for lib in $(ldd "$dir/usr/bin/perf" | grep -o '/[^ ]*'); do
		mkdir -p "$dir$(dirname "$lib")"
		cp -L "$lib" "$dir$lib"
	done
}

# The PERFBENCH-SUMMARY lines of one boot (one per benchmark: pipe,
# messaging, fork); fails when perfbench did not finish.
perfbench() {
	local label=$1 log=$2
	[ "$PERF" = 1 ] || return 0
	if grep -c '^PERFBENCH-SUMMARY' "$log" | grep -qx 3; then
		grep '^PERFBENCH-SUMMARY' "$log" | sed "s/^/$label /" | tee -a "$WORK/modebench.txt"
		result PASS "perfbench@$label"
	else
		result FAIL "perfbench@$label" "not 3 PERFBENCH-SUMMARY lines"
	fi
}

# STOCK=1: the stock kernel against the patched one, from every boot's
# PERFBENCH lines (console-{stock,patched}-smpN-bK.log). Per boot, the
# median of its rounds per benchmark and setting; per kernel, the median of
# those over its boots. Boots differ (TCG, a shared host), so the range of
# the per-boot medians is printed beside each ratio to stock. Within-boot
# ratios (other/none, own/none, one/none, full/none) are medians over the
# patched boots of each boot's ratio. A last line per vCPU count measures
# the noise: how far the rounds of one setting in one boot lie apart
# (max/min). Fails when a boot's numbers are missing.
perf_compare() {
	python3 - "$WORK" "$PERF_BOOTS" $SMP_LIST <<'EOF'
import statistics as st, sys
work, boots, smps = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
med = st.median
bad = 0
for smp in smps:
    runs = {}  # (kernel, bench, setting) -> [per-boot median]
    spread = []  # max/min of the rounds of one setting in one boot
    for kernel in ("stock", "patched"):
        for b in range(1, boots + 1):
            per = {}
            try:
                for line in open(f"{work}/console-{kernel}-smp{smp}-b{b}.log"):
                    f = line.split()
                    if len(f) == 4 and f[0] == "PERFBENCH" and float(f[3]) >= 0:
                        per.setdefault((f[1], f[2]), []).append(float(f[3]))
            except OSError:
                pass
            if not per:
                print(f"PERFCMP-SUMMARY smp{smp}: no PERFBENCH lines from {kernel} boot {b}")
                bad = 1
                continue
            for (bench, setting), v in per.items():
                runs.setdefault((kernel, bench, setting), []).append(med(v))
                spread.append(max(v) / min(v))
    def cell(key):
        v = runs.get(key)
        return (med(v), min(v), max(v)) if v else None
    for bench, settings in (("pipe", ("none", "other", "own")),
                            ("messaging", ("none", "other", "own")),
                            ("fork", ("none", "one", "full"))):
        stock = cell(("stock", bench, "none"))
        if not stock:
            bad = 1
            continue
        parts = [f"stock {stock[0]:.3f} [{stock[1]:.3f}-{stock[2]:.3f}]"]
        for s in settings:
            c = cell(("patched", bench, s))
            if not c:
                bad = 1
                continue
            parts.append(f"patched-{s} {c[0]:.3f} [{c[1]:.3f}-{c[2]:.3f}] x{c[0] / stock[0]:.3f}")
        print(f"PERFCMP-SUMMARY smp{smp} {bench} (median of {boots} boots per kernel, "
              f"[range of boot medians], x ratio to stock): " + ", ".join(parts))
        none = runs.get(("patched", bench, "none"), [])
        within = []
        for s in settings[1:]:
            v = runs.get(("patched", bench, s), [])
            if len(v) == len(none) and none:
                r = [x / n for x, n in zip(v, none)]
                within.append(f"{s}/none {med(r):.3f} [{min(r):.3f}-{max(r):.3f}]")
        print(f"PERFCMP-SUMMARY smp{smp} {bench} within patched boots (median of per-boot ratios): "
              + ", ".join(within))
    if spread:
        print(f"PERFCMP-SUMMARY smp{smp} noise: the rounds of one setting in one boot lie "
              f"{med(spread):.2f}x apart (max/min; median over settings and boots), up to {max(spread):.2f}x")
sys.exit(bad)
EOF
}

PASSED=0 FAILED=0 SKIPPED=0
result() { # status name detail
	echo "RESULT $1 $2${3:+ ($3)}"
	case $1 in
	PASS) PASSED=$((PASSED + 1)) ;;
	SKIP) SKIPPED=$((SKIPPED + 1)) ;;
	*) FAILED=$((FAILED + 1)) ;;
	esac
}

# The guest's TSC under TCG ticks at the host's TSC rate. When the host is
# busy, the guest's calibration against the emulated PIT can fail ("Unable
# to calibrate against PIT"); the guest then runs on jiffies and the tests'
# 50us timers fire at HZ. Measure the rate here and hand it to the guest.
host_tsc_khz() {
	cat > "$WORK/tsc_khz.c" <<'EOF'
#include <stdio.h>
#include <time.h>
#include <x86intrin.h>

static double now_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC_RAW, &t);
	return t.tv_sec * 1e9 + t.tv_nsec;
}

/* Three 100 ms windows; print the median, to shrug off a preemption. */
int main(void)
{
	double r[3], t;
	int i, j;

	for (i = 0; i < 3; i++) {
		double a = now_ns(), b;
		unsigned long long t0 = __rdtsc();

		while ((b = now_ns()) - a < 1e8)
			;
		r[i] = (__rdtsc() - t0) / (b - a) * 1e6;
	}
	for (i = 0; i < 3; i++)
		for (j = i + 1; j < 3; j++)
			if (r[j] < r[i]) { t = r[i]; r[i] = r[j]; r[j] = t; }
	printf("%.0f\n", r[1]);
	return 0;
}
EOF
	gcc -O2 -o "$WORK/tsc_khz" "$WORK/tsc_khz.c" 2>/dev/null && "$WORK/tsc_khz"
}

boot() { # smp label kdir
	local smp=$1 label=$2 kdir=$3 log=$WORK/console-$2.log rc t line status append online
	# init's per-test limit stays below QEMU's, so a hung test is reported
	# by name rather than as a lost boot.
	# no_timer_check: the boot-time test that IRQ0 ticks through the
	# IO-APIC gives the timer a few tens of ms; an emulated timer on a busy
	# host misses that ("IO-APIC + timer doesn't work", a panic), which is
	# why KVM, Hyper-V and VMware guests skip it too.
	append="console=ttyS0 panic=-1 tsc=reliable no_timer_check loglevel=5 RR_ITERS=$RR_ITERS"
	append+=" KTEST_TIMEOUT=$((TIMEOUT > 60 ? TIMEOUT - 30 : TIMEOUT))"
	[ -n "$TSC_KHZ" ] && append+=" tsc_early_khz=$TSC_KHZ"
	# Past 4 vCPUs TCG shares the host's cores among more vCPU threads than
	# it has, and a vCPU starved for RCU's default 21 s prints a stall
	# (with a stack dump, which fails kernel-log) though nothing in the
	# guest is stuck. 300 s, the longest allowed, still reports a real hang.
	[ "$smp" -gt 4 ] && append+=" rcupdate.rcu_cpu_stall_timeout=300"
	# Parallel bring-up starts every AP at once and lets them spin until
	# their turn; under TCG those spinning vCPU threads take the host's
	# cores from the one doing the work (a 64-vCPU boot had not reached
	# init after 12 minutes). One at a time, the others wait halted. lpj=
	# skips each AP's delay-loop calibration (one package per vCPU, so no
	# AP can borrow another's), which fails and retries on a busy host.
	if [ "$smp" -gt 4 ]; then
		append+=" cpuhp.parallel=0"
		[ -n "$TSC_KHZ" ] && append+=" lpj=$((TSC_KHZ * 1000 / $(sed -n 's/^CONFIG_HZ=//p' "$kdir/config")))"
	fi
	log "booting $(basename "$kdir") with $smp vCPUs (TCG, timeout ${TIMEOUT}s)"
	timeout --kill-after=10 "$TIMEOUT" qemu-system-x86_64 \
		-accel tcg,thread=multi -smp "$smp,sockets=$smp,cores=1,threads=1" -m "$((smp > 8 || SCALE == 1 ? 4 : 1))G" \
		-nographic -no-reboot -kernel "$kdir/$KIMAGE" -initrd "$WORK/initramfs.cpio" \
		-append "$append" < /dev/null > "$log.raw" 2>&1
	rc=$?
	tr -d '\r' < "$log.raw" > "$log"
	sed "s/^/[$label] /" "$log"
	log "QEMU exited with $rc after $label run"
	[ $rc -eq 124 ] || [ $rc -eq 137 ] && result FAIL "boot-$label" "timeout after ${TIMEOUT}s"
	while read -r t; do
		line=$(grep -m1 "^KTEST-RESULT $t " "$log")
		status=$(echo "$line" | awk '{ print $3 }')
		case $status in
		PASS) result PASS "$t@$label" ;;
		"") result FAIL "$t@$label" "no result: timeout, panic or crash" ;;
		*) result FAIL "$t@$label" "$status" ;;
		esac
	done < "$WORK/expected-tests.txt"
	# Every vCPU must be online. Without ACPI the kernel finds CPUs only in
	# SeaBIOS's MP table, which SeaBIOS drops when it outgrows 600 bytes: a
	# 64-vCPU guest then runs everything on one CPU.
	online=$(sed -n 's/.*KTEST-INFO kernel .*, \([0-9]*\) cpus online.*/\1/p' "$log")
	if [ "$online" = "$smp" ]; then
		result PASS "cpus@$label"
	else
		result FAIL "cpus@$label" "${online:-no} CPUs online, $smp vCPUs given"
	fi
	# Tests that seed from the OS (proptest) must not wait for entropy:
	# init makes the pool ready first (init.c, random_pool_ready).
	if grep -q '^KTEST-INFO random pool ready' "$log"; then
		result PASS "random-pool@$label"
	else
		result FAIL "random-pool@$label" "$(grep -m1 '^KTEST-INFO random pool' "$log" || echo "init printed no random pool line")"
	fi
	modebench "$smp" "$log"
	perfbench "$label" "$log"
	if grep -qE "$SPLAT" "$log"; then
		result FAIL "kernel-log@$label" "$(grep -m1 -E "$SPLAT" "$log")"
	elif ! grep -q "^KTEST-DONE" "$log"; then
		result FAIL "kernel-log@$label" "init did not finish"
	else
		result PASS "kernel-log@$label"
	fi
}

# The mode comparison from one boot's MODEBENCH lines (benches/examples/mode_pair):
# per mode, the median over its 3 processes of their median ns per pair, the
# same for the contended ns per pair, and the restarts summed; then the
# region/mainline ratios. TCG timing is emulated,
# so only ratios within one boot are reported. Fails when a run is missing
# or ran in the wrong mode, or region mode saw no restart.
modebench() {
	local smp=$1 log=$2 summary
	grep -qs '^mode_pair ' "$WORK/rust-tests.txt" || return 0
	if summary=$(python3 - "$smp" "$log" <<'EOF'
import sys
smp, runs = sys.argv[1], {}
for line in open(sys.argv[2]):
    if line.startswith("MODEBENCH "):
        f = dict(kv.split("=", 1) for kv in line.split()[1:] if "=" in kv)
        runs.setdefault(f["mode"], []).append(f)
want = {"RseqGlibc": "mainline", "Region": "region"}
if sorted(runs) != sorted(want) or any(len(v) != 3 for v in runs.values()):
    print(f"expected 3 mainline (RseqGlibc) and 3 region runs, got { {k: len(v) for k, v in runs.items()} }")
    sys.exit(1)
def median(mode, key):  # of 3
    return sorted(float(r[key]) for r in runs[mode])[1]
def total(mode, key):
    return sum(int(r[key]) for r in runs[mode])
for mode, name in want.items():
    print(f"MODEBENCH-SUMMARY smp{smp} {name}: pair {median(mode, 'pair_ns'):.2f} ns "
          f"(runs {' '.join(r['pair_ns'] for r in runs[mode])}), "
          f"contended pair {median(mode, 'contended_pair_ns'):.2f} ns on {runs[mode][0]['threads']} threads, "
          f"restarts {total(mode, 'restarts')} for {total(mode, 'signals')} signals")
print(f"MODEBENCH-SUMMARY smp{smp} region/mainline: "
      f"pair {median('Region', 'pair_ns') / median('RseqGlibc', 'pair_ns'):.3f}, "
      f"contended pair {median('Region', 'contended_pair_ns') / median('RseqGlibc', 'contended_pair_ns'):.3f}")
if total("Region", "restarts") == 0:
    print("no restart in region mode")
    sys.exit(1)
EOF
	); then
		echo "$summary" | tee -a "$WORK/modebench.txt"
		result PASS "modebench@smp$smp"
	else
		echo "$summary"
		result FAIL "modebench@smp$smp" "$(echo "$summary" | tail -1)"
	fi
}

# The cache entry of the $VARIANT kernel, built on a miss, in $KDIR.
get_kernel() {
	KDIR=$KCACHE/$(cache_key)
	if [ -f "$KDIR/$KIMAGE" ] && { [ "$VARIANT" = stock ] || [ -f "$KDIR/regions_test" ]; }; then
		log "kernel cache hit ($VARIANT): $KDIR"
	else
		build_kernel "$KDIR"
	fi
}

# STOCK=1: stock and patched boots alternate, so that a slow spell of the
# host hits both kernels; then perf_compare sums them up.
main_stock() {
	local smp b kdir_stock kdir_patched
	VARIANT=stock
	get_kernel
	kdir_stock=$KDIR
	VARIANT=patched
	get_kernel
	kdir_patched=$KDIR
	make_initramfs
	TSC_KHZ=$(host_tsc_khz || true)
	log "stock $kdir_stock against patched $kdir_patched, $PERF_BOOTS boots each (host TSC ${TSC_KHZ:-unknown} kHz)"
	rm -f "$WORK/modebench.txt" "$WORK"/console-*.log
	for smp in $SMP_LIST; do
		for b in $(seq "$PERF_BOOTS"); do
			boot "$smp" "stock-smp$smp-b$b" "$kdir_stock"
			boot "$smp" "patched-smp$smp-b$b" "$kdir_patched"
		done
	done
	[ -f "$WORK/modebench.txt" ] && cat "$WORK/modebench.txt"
	if perf_compare; then result PASS perfcmp; else result FAIL perfcmp "see PERFCMP-SUMMARY"; fi
	log "done in $(($(date +%s) - T0))s"
	echo "$PASSED passed, $FAILED failed"
	[ "$FAILED" -eq 0 ]
}

main() {
	local smp
	[ "$(id -u)" = 0 ] || die "run as root (apt-get, /var/cache)"
	check_only
	[ "$STOCK" = 1 ] && [ "$DEBUG" = 1 ] && die "STOCK=1 compares the normal kernels; it does not take DEBUG=1"
	install_deps
	KSRC_VER=$(dpkg-query -W -f='${Version}' "$KSRC_PKG")
	log "kernel source: $KSRC_PKG $KSRC_VER; qemu: $(qemu-system-x86_64 --version | head -1)"
	mkdir -p "$KCACHE" "$WORK"
	KIMAGE=$([ "$DEBUG" = 1 ] && echo bzImage || echo vmlinux)
	if [ "$STOCK" = 1 ]; then
		main_stock
		return
	fi
	get_kernel
	if build_rust_tests > "$WORK/rust-tests.txt" 2> "$WORK/rust-skip.txt"; then :; else
		result FAIL "rust-build" "see cargo output above"
	fi
	grep -v '^SKIP' "$WORK/rust-skip.txt" || true
	while read -r _ name reason; do
		[ -n "${name:-}" ] && result SKIP "$name" "$reason"
	done < <(grep '^SKIP' "$WORK/rust-skip.txt")
	make_initramfs
	TSC_KHZ=$(host_tsc_khz || true)
	log "guest tests: $(tr '\n' ' ' < "$WORK/expected-tests.txt")(host TSC ${TSC_KHZ:-unknown} kHz)"
	rm -f "$WORK/modebench.txt"
	for smp in $SMP_LIST; do
		boot "$smp" "smp$smp" "$KDIR"
	done
	[ -f "$WORK/modebench.txt" ] && cat "$WORK/modebench.txt"
	log "done in $(($(date +%s) - T0))s; $SKIPPED skipped"
	echo "$PASSED passed, $FAILED failed"
	[ "$FAILED" -eq 0 ]
}

main "$@"
