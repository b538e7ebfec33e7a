#!/usr/bin/env bash
# Builds and runs the kernel benchmarks on a machine that has gcc and libgomp
# but none of the engine's other libraries (no jansson/mimalloc/numa/cmocka
# headers): the kernels, src/linear.c and the bench are compiled directly.
# Usage (from the repository root): bench/run-device.sh [--json] [--quick]
set -eu
cd "$(dirname "$0")/.."
out=${BUILD:-build}/bench-device
mkdir -p "$out"
CC=${CC:-gcc}
base="-std=c11 -D_GNU_SOURCE -O2 -g -fopenmp -Iinclude"
avx512="-mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni -mfma -mf16c"
objs=()
for f in simd/*.c src/linear.c bench/roofline.c bench/bench_kernels.c; do
  o="$out/$(echo "$f" | tr / _).o"
  flags="$base"
  case "$f" in simd/avx512*) flags="$flags $avx512";; esac
  $CC $flags -c "$f" -o "$o"
  objs+=("$o")
done
$CC -fopenmp -o "$out/bench-kernels" "${objs[@]}" -lm
echo "# $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-), $(nproc) CPUs, OMP_NUM_THREADS=${OMP_NUM_THREADS:-all}" >&2
exec "$out/bench-kernels" "$@"
