#!/usr/bin/env bash
# Builds and runs the kernel benchmarks on a machine that has gcc and libgomp
# but none of the engine's other libraries (no jansson/mimalloc/numa/cmocka
# headers): the kernels, src/linear.c and the bench are compiled directly.
# Usage (from the repository root): bench/run-device.sh [--tests] [--json] [--quick] [--only ...]
#   --tests   first build and run the kernel tests (tests/test_kernels.c, test_formats.c,
#             test_index_fp4.c, test_amx.c) against the header-only cmocka of
#             tests/neon/; stops if one fails
# EXTRA_CFLAGS adds compiler flags (e.g. -DDSV4_NO_AMX, or a kernel's tuning macro).
set -eu
cd "$(dirname "$0")/.."
run_tests=0
if [ "${1:-}" = --tests ]; then run_tests=1; shift; fi
out=${BUILD:-build}/bench-device
mkdir -p "$out"
CC=${CC:-gcc}
base="-std=c11 -D_GNU_SOURCE -O2 -g -fopenmp -Iinclude ${EXTRA_CFLAGS:-}"
avx512="-mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni -mfma -mf16c"
avx2="-mavx2 -mfma -mf16c"
flags_for() {
  case "$1" in simd/avx512*) echo "$base $avx512";; simd/avx2*) echo "$base $avx2";; *) echo "$base";; esac
}
objs=()
simd_objs=()
for f in simd/*.c src/linear.c src/indexer.c bench/roofline.c bench/bench_kernels.c; do
  o="$out/$(echo "$f" | tr / _).o"
  $CC $(flags_for "$f") -c "$f" -o "$o"
  objs+=("$o")
  case "$f" in simd/*) simd_objs+=("$o");; esac
done
$CC -fopenmp -o "$out/bench-kernels" "${objs[@]}" -lm
echo "# $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-), $(nproc) CPUs, OMP_NUM_THREADS=${OMP_NUM_THREADS:-all}" >&2
if [ $run_tests = 1 ]; then
  for t in test_kernels test_formats test_index_fp4 test_amx; do
    $CC $base -Isrc -Itests/neon -o "$out/$t" "tests/$t.c" "${simd_objs[@]}" "$out/src_linear.c.o" -lm
    echo "# tests/$t.c" >&2
    "$out/$t" >&2
  done
fi
exec "$out/bench-kernels" "$@"
