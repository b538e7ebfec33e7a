#!/usr/bin/env bash
# dsv4 synth: a tiny-dims checkpoint (every structural feature of the real
# shapes: FP8 + e8m0 linears, packed FP4 experts, hash and biased routing,
# window / CSA / HCA layers, several shards) loads, runs past the HCA ratio
# with finite logits, and is a pure function of the seed.
set -u
cd "$(dirname "$0")/.."
dsv4=${BUILD:-build}/dsv4
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
pass=0; fail=0
ok() { pass=$((pass+1)); }
bad() { fail=$((fail+1)); echo "FAIL: $*"; }

synth() { "$dsv4" synth --shape tiny "$@" 2>"$tmp/synth.err"; }

synth --layers 4 --seed 7 --shard-gb 0.002 --out "$tmp/a" && ok || { bad "synth tiny"; cat "$tmp/synth.err"; }
nshards=$(ls "$tmp/a"/model-*.safetensors 2>/dev/null | wc -l)
[ "$nshards" -ge 2 ] && [ -f "$tmp/a/model.safetensors.index.json" ] && ok || bad "expected several shards + index, got $nshards"
desc=$("$dsv4" inspect -m "$tmp/a" 2>&1)
echo "$desc" | grep -q "4 layers (W W C H).*16 experts top-4, linear FP8, experts FP4" && ok || bad "inspect: $desc"

# Finite, non-degenerate logits over 300 positions (past the 128-token HCA window).
seq 2 301 >"$tmp/t.txt"
if "$dsv4" logits -m "$tmp/a" --tokens "$tmp/t.txt" --out "$tmp/l.npy" 2>"$tmp/err"; then
  python3 - "$tmp/l.npy" <<'PY' && ok || bad "logits not finite or degenerate"
import array, math, sys
raw = open(sys.argv[1], 'rb').read()
hlen = int.from_bytes(raw[8:10], 'little')
a = array.array('f'); a.frombytes(raw[10 + hlen:])
assert len(a) == 300 * 512, len(a)
assert all(math.isfinite(x) for x in a)
rows = [a[i * 512:(i + 1) * 512] for i in (0, 150, 299)]
for r in rows:
    m = sum(r) / 512
    sd = math.sqrt(sum((x - m) ** 2 for x in r) / 512)
    assert 0.05 < sd < 50, sd
assert rows[0] != rows[2]
PY
else bad "logits failed: $(cat "$tmp/err")"; fi

# Same seed, same bytes (with another shard size too: shards differ, tensors do not);
# another seed, other bytes.
synth --layers 4 --seed 7 --shard-gb 0.002 --out "$tmp/b" && ok || bad "synth b"
same=1
for f in "$tmp/a"/*; do cmp -s "$f" "$tmp/b/$(basename "$f")" || same=0; done
[ "$same" = 1 ] && ok || bad "same seed gave different files"
synth --layers 4 --seed 8 --shard-gb 0.002 --out "$tmp/c" && ok || bad "synth c"
cmp -s "$tmp/a/model-00002-of-0000$nshards.safetensors" "$tmp/c/model-00002-of-0000$nshards.safetensors" && bad "seed ignored" || ok

# --kinds and --experts shape the checkpoint.
synth --layers 3 --kinds hca,csa,window --experts 6 --seed 1 --out "$tmp/d" && ok || bad "synth d"
"$dsv4" inspect -m "$tmp/d" 2>&1 | grep -q "3 layers (H C W).*6 experts top-4" && ok || bad "kinds/experts not honoured"

# Bad options: one-line usage errors.
for args in "--layers 2 --out $tmp/e" "--shape huge --layers 2 --out $tmp/e" "--shape flash --layers 2 --kinds window,mla --out $tmp/e" \
            "--shape flash --layers 3 --kinds window,csa --out $tmp/e" "--shape flash --layers 2 --experts 3 --out $tmp/e"; do
  "$dsv4" synth $args >/dev/null 2>"$tmp/err"; rc=$?
  { [ "$rc" -eq 2 ] || [ "$rc" -eq 1 ]; } && [ "$(wc -l <"$tmp/err")" -eq 1 ] && ok || bad "synth $args -> $rc: $(cat "$tmp/err")"
done

# dsv4 bench: every test at every depth, one JSON object each, in order;
# malformed lists are one-line usage errors.
if "$dsv4" bench -m "$tmp/a" -p 8 -n 3 -b 1,2 -r 1 --depth 0,140 --json --no-ceilings >"$tmp/bench.json" 2>"$tmp/err"; then
  python3 - "$tmp/bench.json" <<'PY' && ok || bad "bench --json: $(cat "$tmp/bench.json")"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
got = [(r["test"], r["prompt"], r["gen"], r["batch"], r["depth"]) for r in rows]
want = [(t, p, g, b, d) for d in (0, 140) for (t, p, g, b) in (("pp8", 8, 0, 1), ("tg3", 0, 3, 1), ("tg3", 0, 3, 2))]
assert got == want, got
assert all(r["tok_s"] > 0 and r["weight_bytes_per_token"] > 0 for r in rows), rows
assert all(r["prefill_chunk"] == 2048 for r in rows), rows  # the commands' default pass
PY
else bad "bench failed: $(cat "$tmp/err")"; fi
"$dsv4" bench -m "$tmp/a" -p 8 -n 0 -r 1 --prefill-chunk 5 --csv --no-ceilings >"$tmp/bench.csv" 2>"$tmp/err" &&
  python3 - "$tmp/bench.csv" <<'PY' && ok || bad "bench --csv --prefill-chunk 5: $(cat "$tmp/bench.csv" "$tmp/err")"
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
assert len(rows) == 1 and rows[0]["test"] == "pp8" and rows[0]["prefill_chunk"] == "5", rows
PY
for args in "--depth 0,x" "--depth -1" "--depth 1,2,3,4,5,6,7,8,9" "-b 1,,2" "-b 65"; do
  "$dsv4" bench -m "$tmp/a" $args --no-ceilings >/dev/null 2>"$tmp/err"; rc=$?
  [ "$rc" -eq 2 ] && [ "$(wc -l <"$tmp/err")" -eq 1 ] && ok || bad "bench $args -> $rc: $(cat "$tmp/err")"
done

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
