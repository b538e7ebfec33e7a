#!/usr/bin/env bash
# dsv4 perplexity on the built-in model: the text and its token ids score the
# same, the forward batch size does not change the result, -m defaults to the
# built-in model (or $DSV4_MODEL), and bad input gives one-line errors.
set -u
cd "$(dirname "$0")/.."
dsv4=${BUILD:-build}/dsv4
dir=models/v4-tiny-en
pass=0; fail=0
check() { if [ "$2" = "$3" ]; then pass=$((pass+1)); else fail=$((fail+1)); echo "FAIL: $1: '$2' != '$3'"; fi; }
final() { "$@" 2>&1 | grep '^final:' | sed 's/, [0-9.]* tokens\/s$//'; }

opts="--numerics plain --ctx 512 --chunks 2"
a=$(final "$dsv4" perplexity -m $dir $opts --tokens $dir/eval/heldout_tokens.txt)
b=$(final "$dsv4" perplexity -m $dir $opts --file $dir/eval/heldout.txt)
c=$(final "$dsv4" perplexity -m $dir $opts --batch 7 --tokens $dir/eval/heldout_tokens.txt)
d=$(env -u DSV4_MODEL "$dsv4" perplexity $opts --tokens $dir/eval/heldout_tokens.txt 2>&1 | grep '^final:' | sed 's/, [0-9.]* tokens\/s$//')
echo "figure: perplexity ctx 512, 2 chunks, plain: $a"
case "$a" in "final: PPL "*" over 1022 tokens"*) pass=$((pass+1));; *) fail=$((fail+1)); echo "FAIL: output '$a'";; esac
check "--file vs --tokens" "$b" "$a"
check "--batch 7 vs 256" "$c" "$a"
check "built-in model without -m" "$d" "$a"
err=$(DSV4_MODEL=/nonexistent "$dsv4" perplexity --tokens $dir/eval/heldout_tokens.txt 2>&1 >/dev/null); st=$?
check "DSV4_MODEL missing: status" "$st" 1
case "$err" in *"/nonexistent/config.json"*) pass=$((pass+1));; *) fail=$((fail+1)); echo "FAIL: message '$err'";; esac
err=$("$dsv4" perplexity -m $dir --tokens $dir/eval/logits_tokens.txt 2>&1 >/dev/null); st=$?
check "too few tokens: status" "$st" 1
check "too few tokens: one line" "$(echo "$err" | wc -l)" 1
"$dsv4" perplexity -m $dir >/dev/null 2>&1; check "no input: usage status" "$?" 2
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
