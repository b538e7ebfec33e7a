// V3's tokenizer.json (the pinned reference package) lacks V4's new special
// tokens. This writes a test tokenizer: V3's, plus the V4 special tokens of
// spec §6 at their V4 ids, and a V4-style tokenizer_config.json
// (add_bos_token false). It is a stand-in for tests only, not V4's real file.
// Usage: node make_v4_test_tokenizer.js V3_MODELS_DIR OUTPUT_DIR
"use strict";
const fs = require("fs");
const path = require("path");

const [v3Dir, outDir] = process.argv.slice(2);
const tok = JSON.parse(fs.readFileSync(path.join(v3Dir, "tokenizer.json"), "utf8"));
const v4Specials = {
  "<think>": 128821, "</think>": 128822, "｜DSML｜": 128825, "<｜latest_reminder｜>": 128828,
  "<｜action｜>": 128829, "<｜query｜>": 128830, "<｜authority｜>": 128831, "<｜domain｜>": 128832,
  "<｜title｜>": 128836, "<｜extracted_url｜>": 128844, "<｜read_url｜>": 128845,
};
for (const [content, id] of Object.entries(v4Specials)) {
  if (tok.added_tokens.some((a) => a.id === id || a.content === content)) throw new Error(`clash at ${id}`);
  tok.added_tokens.push({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
}
fs.mkdirSync(outDir, { recursive: true });
fs.writeFileSync(path.join(outDir, "tokenizer.json"), JSON.stringify(tok));
fs.writeFileSync(path.join(outDir, "tokenizer_config.json"), JSON.stringify({
  add_bos_token: false, add_eos_token: false,
  bos_token: { __type: "AddedToken", content: "<｜begin▁of▁sentence｜>" },
  eos_token: { __type: "AddedToken", content: "<｜end▁of▁sentence｜>" },
  model_max_length: 1048576,
}, null, 1));
