#!/bin/sh
# One full dated run of every scenario, as BENCHMARKS.md reports it.
#
# Contract: runs the release harness (build it and the engine programs
# first, with two commands, since `--example` limits a build to the
# examples named: `cargo build --release -p tidings-bench -p
# tidings-server`, then `cargo build --release -p tidings-nats --example
# nats_figures -p tidings-redis --example redis_figures`) once per
# scenario line below, appends each scenario's last
# stdout line (its JSON result) to
# crates/tidings-bench/results/<UTC date>-<commit>.jsonl and its stderr to
# the same name with .log; a scenario that fails leaves a
# {"scenario":..,"error":..} line instead, and the script goes on. Then the
# engine programs (NatsLog and RedisLog appends against the raw engine, in
# the same run) write their text tables to <UTC date>-<commit>-engines.log.
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
engines=$root/crates/tidings-bench/results/$day-$commit-engines.log
examples=${CARGO_TARGET_DIR:-$root/target}/release/examples
for prog in nats_figures redis_figures; do
    echo "== $(date -u +%H:%M:%S) $prog $((runs * 2 + 1)) (load $(cut -d' ' -f1-3 /proc/loadavg))" | tee -a "$engines" >&2
    if [ -x "$examples/$prog" ]; then
        "$examples/$prog" $((runs * 2 + 1)) >>"$engines" 2>&1 || echo "$prog failed (exit $?)" >>"$engines"
    else
        echo "no $examples/$prog: build it (see the top of this script)" | tee -a "$engines" >&2
    fi
done
echo "== $(date -u +%H:%M:%S) done: $out, $engines" | tee -a "$log" >&2
