#!/usr/bin/env bash
# The NEON kernel tests (tests/test_kernels.c and tests/test_index_fp4.c cross-compiled for aarch64, see
# the Makefile's NEON_TEST) under qemu-user, on two emulated CPUs: Cortex-A76
# (dotprod: the sdot indexer) and Cortex-A72 (without: the widening-multiply
# indexer; shapes shrunk by DSV4_TEST_SMALL to keep the run short).
set -eu
cd "$(dirname "$0")/.."
if [ "$(uname -m)" = aarch64 ]; then
  echo "native aarch64: build/tests/test_kernels tests the NEON table itself"
  exit 0
fi
qemu=$(command -v qemu-aarch64 || command -v qemu-aarch64-static || true)
[ -n "$qemu" ] || { echo "qemu-aarch64 not found: make deps installs qemu-user"; exit 1; }
for name in test_kernels test_index_fp4; do
  bin=${BUILD:-build}/tests/neon/$name
  [ -x "$bin" ] || { echo "missing $bin: run make tests"; exit 1; }
  echo "== $name, cortex-a76 (NEON + dotprod)"
  "$qemu" -cpu cortex-a76 "$bin"
  echo "== $name, cortex-a72 (NEON, no dotprod)"
  DSV4_TEST_SMALL=1 "$qemu" -cpu cortex-a72 "$bin"
done
