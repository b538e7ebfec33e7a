#!/usr/bin/env bash
# The NEON kernel tests (tests/test_kernels.c cross-compiled for aarch64, see
# the Makefile's NEON_TEST) under qemu-user, on two emulated CPUs: Cortex-A76
# (dotprod: the sdot indexer) and Cortex-A72 (without: the widening-multiply
# indexer; shapes shrunk by DSV4_TEST_SMALL to keep the run short).
set -eu
cd "$(dirname "$0")/.."
if [ "$(uname -m)" = aarch64 ]; then
  echo "native aarch64: build/tests/test_kernels tests the NEON table itself"
  exit 0
fi
bin=${BUILD:-build}/tests/neon/test_kernels
qemu=$(command -v qemu-aarch64 || command -v qemu-aarch64-static || true)
[ -x "$bin" ] || { echo "missing $bin: run make tests"; exit 1; }
[ -n "$qemu" ] || { echo "qemu-aarch64 not found: make deps installs qemu-user"; exit 1; }
echo "== cortex-a76 (NEON + dotprod)"
"$qemu" -cpu cortex-a76 "$bin"
echo "== cortex-a72 (NEON, no dotprod)"
DSV4_TEST_SMALL=1 "$qemu" -cpu cortex-a72 "$bin"
