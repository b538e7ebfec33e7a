#!/usr/bin/env bash
# End-to-end speed on another machine: synthesize a V4-Flash-shaped checkpoint
# (real dims, random values) and run `dsv4 bench` on it.
#
# The device may lack the engine's build dependencies (jansson/mimalloc
# headers, libmimalloc): pass a prebuilt binary and the folder holding
# libmimalloc.so.2 (and anything else it needs) instead of building here.
#
# Usage (from the repository root):
#   bench/run-device-e2e.sh [--dsv4 PATH] [--libs DIR] [--layers 4] [--experts 256]
#                           [--dir /tmp/dsv4-flash4] [--keep] [-- extra dsv4 bench options]
# Environment: THREADS (default: all cores), REPS (default 3).
# Writes the markdown table to stdout and the JSON lines to $DIR.bench.jsonl.
set -eu
cd "$(dirname "$0")/.."
dsv4=${BUILD:-build}/dsv4
libs=""
layers=4
experts=256
dir=/tmp/dsv4-flash4
keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --dsv4) dsv4=$2; shift 2;;
    --libs) libs=$2; shift 2;;
    --layers) layers=$2; shift 2;;
    --experts) experts=$2; shift 2;;
    --dir) dir=$2; shift 2;;
    --keep) keep=1; shift;;
    --) shift; break;;
    *) echo "run-device-e2e.sh: unknown option $1" >&2; exit 2;;
  esac
done
[ -n "$libs" ] && export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
if [ ! -x "$dsv4" ]; then
  echo "run-device-e2e.sh: no dsv4 binary at $dsv4 (build with make, or pass --dsv4 PATH)" >&2
  exit 1
fi
threads=${THREADS:-$(nproc)}
reps=${REPS:-3}
echo "# $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-), $(nproc) CPUs, threads $threads;" \
     "flags: $(grep -m1 -o -E 'amx_bf16|avx512_bf16|avx512_vnni' /proc/cpuinfo | sort -u | tr '\n' ' ')" >&2

if [ ! -f "$dir/config.json" ]; then
  "$dsv4" synth --shape flash --layers "$layers" --experts "$experts" --seed 1 --out "$dir"
fi
"$dsv4" inspect -m "$dir" >&2

# Decode at batch 1 and 16, prefill of 512: the acceptance tests.
"$dsv4" bench -m "$dir" -t "$threads" -r "$reps" -p 512 -n 64 -b 1,16 --profile --md "$@"
"$dsv4" bench -m "$dir" -t "$threads" -r "$reps" -p 512 -n 64 -b 1,16 --json --no-ceilings "$@" >"$dir.bench.jsonl" || true
[ "$keep" = 1 ] || rm -rf "$dir"
