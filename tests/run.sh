#!/usr/bin/env bash
# Runs every test program under $BUILD/tests from the repository root and
# closes with one line "N passed, N failed" (counted per program).
set -u
cd "$(dirname "$0")/.."
build=${BUILD:-build}
pass=0; fail=0; failed=()
for t in "$build"/tests/test_* tests/test_*.sh; do
  [ -x "$t" ] || continue
  case "$t" in *.log) continue;; esac
  name=$(basename "$t" .sh)
  start=$(date +%s)
  if "$t" >"$build/tests/$name.log" 2>&1; then
    pass=$((pass+1)); status=ok
  else
    fail=$((fail+1)); status=FAIL; failed+=("$name")
  fi
  printf '%-28s %-4s %3ss\n' "$name" "$status" "$(( $(date +%s) - start ))"
  grep -h '^figure:' "$build/tests/$name.log" | sed 's/^figure: /    /'
  [ "$status" = FAIL ] && sed 's/^/    /' "$build/tests/$name.log" | tail -n 40
done
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
