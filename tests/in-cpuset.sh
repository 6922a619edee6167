#!/usr/bin/env bash
# Runs a command inside a cgroup (v1) cpuset holding only the last CPU, the
# way a container smaller than its host would: `tests/in-cpuset.sh CMD...`.
# Where no writable cpuset hierarchy exists it says so and runs nothing.
set -euo pipefail
root=/sys/fs/cgroup/cpuset
if [ ! -w "$root" ]; then
    echo "in-cpuset: no writable cgroup v1 cpuset hierarchy here: skipped"
    exit 0
fi
cg="$root/rseqalloc-test-$$"
mkdir "$cg"
trap 'rmdir "$cg" 2>/dev/null || true' EXIT
last=$(( $(nproc --all) - 1 ))
echo "$last" > "$cg/cpuset.cpus"
cat "$root/cpuset.mems" > "$cg/cpuset.mems"
echo "in-cpuset: cpuset $cg = CPU $last"
# A child joins the cgroup and runs the command; we stay outside to remove it.
bash -c 'echo $$ > "$1/cgroup.procs" && shift && exec "$@"' _ "$cg" "$@"
