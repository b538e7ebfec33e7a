#!/usr/bin/env bash
# dsv4 batch as a user of offline batch generation meets it: every output is
# byte for byte what `dsv4 run -p` prints for the same prompt (greedy and
# sampled), whatever the batch size; an interrupted run resumes (outputs
# that exist are skipped, a missing one is regenerated); with --chat each
# output is dsv4 chat's answer; inputs may come as a list (--files-from); a bad file is reported on one line and the others
# are still written; bad options give a one-line usage error.
set -u
cd "$(dirname "$0")/.."
dsv4=${BUILD:-build}/dsv4
model=models/v4-tiny-en
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
pass=0; fail=0
ok() { pass=$((pass+1)); }
no() { fail=$((fail+1)); echo "FAIL: $*"; }

# Three documents of different lengths (so sequences end and places refill
# at different steps), the first lines of the demo's held-out profiles.
mkdir -p "$tmp/in"
for d in benin madagascar nigeria; do head -c $((300 + ${#d} * 40)) "docs/demo/$d.txt" >"$tmp/in/$d.txt"; done
suffix=$'\n\nSummary:'

# run_output DOC FLAGS...: what `dsv4 run` prints for DOC's text + suffix
# (the x keeps the command substitution from eating trailing newlines)
run_output() {
  local doc=$1; shift
  local p; p=$(cat "$doc"; printf '%sx' "$suffix"); p=${p%x}
  "$dsv4" run -m "$model" "$@" -p "$p" 2>/dev/null
}

for b in 1 2 16; do
  "$dsv4" batch -m "$model" -o "$tmp/out$b" -b "$b" -n 12 --suffix "$suffix" "$tmp"/in/*.txt 2>"$tmp/err$b" ||
    no "batch -b $b exited $?: $(cat "$tmp/err$b")"
done
for d in benin madagascar nigeria; do
  run_output "$tmp/in/$d.txt" -n 12 >"$tmp/run_$d.out"
  for b in 1 2 16; do
    cmp -s "$tmp/run_$d.out" "$tmp/out$b/$d.txt.out" && ok || no "batch -b $b: $d differs from dsv4 run"
  done
done
grep -q "3 written, 0 skipped, 0 failed of 3" "$tmp/err2" && ok || no "batch summary line: $(tail -1 "$tmp/err2")"

# sampled: each file its own sampler with the same seed, as run
"$dsv4" batch -m "$model" -o "$tmp/sampled" -b 3 -n 16 --temp 0.9 --seed 5 --suffix "$suffix" "$tmp"/in/*.txt 2>/dev/null
run_output "$tmp/in/madagascar.txt" -n 16 --temp 0.9 --seed 5 | cmp -s - "$tmp/sampled/madagascar.txt.out" &&
  ok || no "sampled batch differs from dsv4 run"

# --chat / --think / --system: the answer `dsv4 chat` gives to the file's text as one
# user turn (chat prints a blank line after it; batch, like run, one newline)
head -n 1 docs/demo/benin.txt | tr -d '\n' >"$tmp/line.txt"
chat_case() { # chat_case BATCH_FLAG [CHAT_FLAGS...]
  local flag=$1; shift
  rm -rf "$tmp/chat"
  "$dsv4" batch -m "$model" -o "$tmp/chat" -n 12 "$flag" "$@" "$tmp/line.txt" 2>/dev/null
  "$dsv4" chat -m "$model" -n 12 "$@" <"$tmp/line.txt" 2>/dev/null | head -c -1 |
    cmp -s - "$tmp/chat/line.txt.out" && ok || no "batch $flag $* differs from dsv4 chat"
}
chat_case --chat
chat_case --think --think
chat_case --chat --system "Be brief."

# resume: existing outputs are skipped, a missing one regenerated
rm "$tmp/out2/madagascar.txt.out"
echo "keep me" >"$tmp/out2/benin.txt.out"
"$dsv4" batch -m "$model" -o "$tmp/out2" -b 2 -n 12 --suffix "$suffix" "$tmp"/in/*.txt 2>"$tmp/err"
grep -q "1 written, 2 skipped, 0 failed of 3" "$tmp/err" && ok || no "resume summary: $(tail -1 "$tmp/err")"
cmp -s "$tmp/run_madagascar.out" "$tmp/out2/madagascar.txt.out" && ok || no "resumed output differs"
[ "$(cat "$tmp/out2/benin.txt.out")" = "keep me" ] && ok || no "an existing output was overwritten without --force"
"$dsv4" batch -m "$model" -o "$tmp/out2" -b 2 -n 12 --force --suffix "$suffix" "$tmp"/in/*.txt 2>/dev/null
cmp -s "$tmp/run_benin.out" "$tmp/out2/benin.txt.out" && ok || no "--force did not regenerate"

# --files-from: a list on stdin (blank lines and CRLF ends ignored), besides an operand
printf '%s\n\n%s\r\n' "$tmp/in/benin.txt" "$tmp/in/nigeria.txt" |
  "$dsv4" batch -m "$model" -o "$tmp/listed" -b 2 -n 12 --suffix "$suffix" --files-from - "$tmp/in/madagascar.txt" \
  2>"$tmp/err"
grep -q "3 written, 0 skipped, 0 failed of 3" "$tmp/err" && diff -r -q "$tmp/out1" "$tmp/listed" >/dev/null &&
  ok || no "--files-from -: $(tail -1 "$tmp/err")"

# a prompt longer than a feed piece (8192 tokens): on a terminal (script gives one) it is fed in
# pieces with a progress line; the output is the same as without a terminal
for i in 1 2 3; do cat docs/demo/*.txt; done >"$tmp/long.txt"
"$dsv4" batch -m "$model" -o "$tmp/long_plain" -n 6 "$tmp/long.txt" 2>/dev/null
if command -v script >/dev/null; then
  script -q -c "'$dsv4' batch -m '$model' -o '$tmp/long_tty' -n 6 '$tmp/long.txt'" /dev/null >"$tmp/tty.txt" 2>&1
  grep -q "long.txt: prefill 8192/" "$tmp/tty.txt" && cmp -s "$tmp/long_plain/long.txt.out" "$tmp/long_tty/long.txt.out" &&
    ok || no "long prompt on a terminal: $(tr '\r' '\n' <"$tmp/tty.txt" | head -3)"
else
  echo "script(1) missing: the terminal progress path is not tested"
fi

# a file that cannot be read, one that is not UTF-8: reported, the rest written, exit 1
printf 'bad \xff byte\n' >"$tmp/in/bad.txt"
"$dsv4" batch -m "$model" -o "$tmp/mixed" -n 4 "$tmp/in/nowhere.txt" "$tmp/in/bad.txt" "$tmp/in/nigeria.txt" \
  >"$tmp/out" 2>"$tmp/err"
status=$?
[ $status -eq 1 ] && grep -q "nowhere.txt: cannot open" "$tmp/err" && grep -q "bad.txt: invalid UTF-8" "$tmp/err" &&
  [ -s "$tmp/mixed/nigeria.txt.out" ] && [ ! -e "$tmp/mixed/bad.txt.out" ] && ok ||
  no "bad files: exit $status, stderr: $(cat "$tmp/err")"
"$dsv4" batch -m "$model" -o "$tmp/mixed" -n 4 --lossy "$tmp/in/bad.txt" 2>/dev/null && [ -e "$tmp/mixed/bad.txt.out" ] &&
  ok || no "--lossy"

# usage errors: one line, exit 2; a file where the directory should be: exit 1
expect() {
  local want=$1 pattern=$2; shift 2
  "$@" >/dev/null 2>"$tmp/err"; local got=$?
  [ "$got" -eq "$want" ] && grep -qE -- "$pattern" "$tmp/err" && [ "$(wc -l <"$tmp/err")" -eq 1 ] && ok ||
    no "$* -> exit $got (want $want): $(cat "$tmp/err")"
}
expect 2 "-o OUTDIR is required" "$dsv4" batch -m "$model" "$tmp/in/benin.txt"
expect 2 "no input files" "$dsv4" batch -m "$model" -o "$tmp/x"
expect 1 "nolist.txt: cannot open" "$dsv4" batch -m "$model" -o "$tmp/x" --files-from "$tmp/nolist.txt"
expect 2 "-b needs a batch size from 1 to 64, got '0'" "$dsv4" batch -m "$model" -o "$tmp/x" -b 0 "$tmp/in/benin.txt"
expect 2 "would write the same output" "$dsv4" batch -m "$model" -o "$tmp/x" "$tmp/in/benin.txt" docs/demo/benin.txt
expect 1 "is not a directory" "$dsv4" batch -m "$model" -o "$tmp/in/benin.txt" "$tmp/in/nigeria.txt"
"$dsv4" batch --help | grep -q -- "--out-dir" && ok || no "batch --help"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
