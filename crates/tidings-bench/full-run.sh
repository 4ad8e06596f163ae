#!/bin/sh
# One full dated run of every scenario, as BENCHMARKS.md reports it.
#
# Contract: runs the release harness (build it first:
# `cargo build --release -p tidings-bench -p tidings-server`) once per
# scenario line below, appends each scenario's last stdout line (its JSON
# result) to crates/tidings-bench/results/<UTC date>-<commit>.jsonl and its
# stderr to the same name with .log; a scenario that fails leaves a
# {"scenario":..,"error":..} line instead, and the script goes on.
#
# Usage: crates/tidings-bench/full-run.sh [RUNS]   (default 3)
set -u
runs=${1:-3}
root=$(git rev-parse --show-toplevel)
bin=${CARGO_TARGET_DIR:-$root/target}/release/tidings-bench
commit=$(git -C "$root" rev-parse --short HEAD)
day=$(date -u +%Y-%m-%d)
out=$root/crates/tidings-bench/results/$day-$commit.jsonl
log=$root/crates/tidings-bench/results/$day-$commit.log
mkdir -p "$(dirname "$out")"
[ -x "$bin" ] || { echo "no $bin: cargo build --release -p tidings-bench -p tidings-server" >&2; exit 2; }

run() {
    name=$1
    shift
    echo "== $(date -u +%H:%M:%S) $name: $* (load $(cut -d' ' -f1-3 /proc/loadavg))" | tee -a "$log" >&2
    line=$("$bin" --runs "$runs" "$@" 2>>"$log" | tail -n 1)
    case $line in
    '{'*) echo "$line" >>"$out" ;;
    *) echo "{\"scenario\":\"$name\",\"args\":\"$*\",\"error\":\"no result line; see $(basename "$log")\"}" >>"$out" ;;
    esac
}

run inproc inproc
run patterns patterns
run durable durable
run fanout fanout
run replay replay
run latency latency
run latency latency --batch 1
run latency latency --batch 1 --store sqlite
run memory memory
run publish publish --tidings-bin "${CARGO_TARGET_DIR:-$root/target}/release/tidings"
echo "== $(date -u +%H:%M:%S) done: $out" | tee -a "$log" >&2
