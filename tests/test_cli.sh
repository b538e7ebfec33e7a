#!/usr/bin/env bash
# The command line as a user meets it: help, bad options, bad files and bad
# tokens each give a one-line error and a nonzero exit, never a crash
# (exit status >= 128 means a signal); logits writes a well-formed .npy.
set -u
cd "$(dirname "$0")/.."
dsv4=${BUILD:-build}/dsv4
model=tests/fixtures/real_ratios
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
pass=0; fail=0

# expect STATUS PATTERN -- command...: exit status and a stderr line matching PATTERN
expect() {
  local want=$1 pattern=$2; shift 3
  "$@" >"$tmp/out" 2>"$tmp/err"; local got=$?
  local lines; lines=$(wc -l <"$tmp/err")
  if [ "$got" -eq "$want" ] && { [ -z "$pattern" ] || grep -qE -- "$pattern" "$tmp/err"; } && { [ "$want" -eq 0 ] || [ "$lines" -eq 1 ]; }; then
    pass=$((pass+1))
  else
    fail=$((fail+1)); echo "FAIL: $* -> exit $got (want $want), stderr:"; sed 's/^/    /' "$tmp/err"
  fi
}

for cmd in run logits inspect; do
  "$dsv4" $cmd --help | grep -q -- "--model" && pass=$((pass+1)) || { fail=$((fail+1)); echo "FAIL: $cmd --help"; }
done
expect 2 "unknown command"            -- "$dsv4" frobnicate
expect 2 "unknown option '--bogus'"   -- "$dsv4" run --bogus
expect 2 "-m DIR is required"         -- "$dsv4" inspect
expect 2 "-t needs a thread count"    -- "$dsv4" run -m "$model" -t zero --tokens x
expect 2 "--numerics must be"         -- "$dsv4" logits -m "$model" --numerics fast --tokens x --out y
expect 2 "--prefill-chunk needs a token count from 1 to 65536, got '0'" -- "$dsv4" run -m "$model" --prefill-chunk 0 --tokens x
expect 2 "--prefill-chunk needs a token count" -- "$dsv4" bench -m "$model" --prefill-chunk 1e3
expect 1 "cannot open model directory" -- "$dsv4" inspect -m "$tmp/nowhere"
expect 1 "tokenizer.json"             -- "$dsv4" run -m "$model" -p "hello"

printf '1\n2\nthree\n' >"$tmp/bad.txt"
expect 1 "bad.txt:3: 'three' is not a token id" -- "$dsv4" run -m "$model" --tokens "$tmp/bad.txt"
vocab=$(grep -oE '"vocab_size": *[0-9]+' "$model/config.json" | grep -oE '[0-9]+$')
printf '1\n%s\n' "$vocab" >"$tmp/oov.txt"
expect 1 "outside the vocabulary"     -- "$dsv4" run -m "$model" --tokens "$tmp/oov.txt"

# A copy of the model whose second shard is cut short.
cp -r "$model" "$tmp/cut"
shard=$(ls "$tmp/cut"/*.safetensors | tail -n 1)
truncate -s $(( $(stat -c %s "$shard") / 2 )) "$shard"
expect 1 "$(basename "$shard")"       -- "$dsv4" inspect -m "$tmp/cut"
rm "$shard"
expect 1 "$(basename "$shard")"       -- "$dsv4" inspect -m "$tmp/cut"

# logits: shape [T, vocab] float32, identical for 1 and 2 threads and for
# prefill passes of 7 tokens.
head -n 40 "$model/tokens.txt" >"$tmp/t.txt"
expect 0 "" -- "$dsv4" logits -m "$model" --tokens "$tmp/t.txt" --out "$tmp/a.npy" -t 1
expect 0 "" -- "$dsv4" logits -m "$model" --tokens "$tmp/t.txt" --out "$tmp/b.npy" -t 2
expect 0 "" -- "$dsv4" logits -m "$model" --tokens "$tmp/t.txt" --out "$tmp/c.npy" --prefill-chunk 7
if head -c 128 "$tmp/a.npy" | grep -qa "'shape': (40, $vocab)" && cmp -s "$tmp/a.npy" "$tmp/b.npy" &&
   cmp -s "$tmp/a.npy" "$tmp/c.npy" && [ "$(stat -c %s "$tmp/a.npy")" -eq $(( 128 + 40 * vocab * 4 )) ]; then
  pass=$((pass+1))
else
  fail=$((fail+1)); echo "FAIL: logits .npy shape/size, thread or prefill-chunk invariance"
fi
expect 0 "prefill: 40 tokens" -- "$dsv4" run -m "$model" --tokens "$tmp/t.txt" -n 4 --temp 0.8 --top-p 0.9 --seed 1

# tokenize: a directory holding only tokenizer files (make ref-tokenizer builds it).
tok=build/ref-tokenizer/v4-test
printf 'Hello world, 12345 tokens!\n你好\n' >"$tmp/text.txt"
if "$dsv4" tokenize -m "$tok" <"$tmp/text.txt" >"$tmp/ids.txt" 2>"$tmp/err" &&
   "$dsv4" tokenize -m "$tok" --decode <"$tmp/ids.txt" >"$tmp/back.txt" 2>>"$tmp/err" &&
   cmp -s "$tmp/text.txt" "$tmp/back.txt" && [ "$(wc -w <"$tmp/ids.txt")" -gt 5 ]; then
  pass=$((pass+1))
else
  fail=$((fail+1)); echo "FAIL: tokenize round trip on $tok"; sed 's/^/    /' "$tmp/err"
fi
"$dsv4" tokenize -m "$tok" --lines <"$tmp/text.txt" >"$tmp/lines.txt" 2>/dev/null
[ "$(wc -l <"$tmp/lines.txt")" -eq 2 ] && pass=$((pass+1)) || { fail=$((fail+1)); echo "FAIL: tokenize --lines"; }
printf 'bad \xff byte\n' >"$tmp/bad_utf8.txt"
expect 1 "UTF-8"                      -- sh -c "\"$dsv4\" tokenize -m $tok <$tmp/bad_utf8.txt"
expect 0 ""                           -- sh -c "\"$dsv4\" tokenize -m $tok --lossy <$tmp/bad_utf8.txt"
expect 1 "tokenizer.json"             -- "$dsv4" tokenize -m "$tmp"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
