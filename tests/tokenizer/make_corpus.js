// Writes the tokenizer parity corpus, deterministically (2600 lines, then 24
// documents; tests/test_tokenizer.c counts on that split): one JSON string per
// line (JSON keeps \r, tabs and odd characters intact). Lines first, then
// whole multi-line documents. All text is made up here or drawn at random from
// character ranges; nothing is copied from elsewhere.
//
// Left out on purpose: U+0085, U+FEFF and U+180E (JavaScript's \s and HF's
// Oniguruma \s disagree on them, so the reference itself is not HF there) and
// characters newer than Unicode 14 (PCRE2 10.42's tables).
// Usage: node make_corpus.js OUTPUT.jsonl
"use strict";
const fs = require("fs");

let seed = 0x9e3779b97f4a7c15n;
function rand() {
  // xorshift64*, the same generator the C tests use
  seed ^= seed >> 12n; seed ^= (seed << 25n) & 0xffffffffffffffffn; seed ^= seed >> 27n;
  return Number(((seed * 2685821657736338717n) & 0xffffffffffffffffn) >> 11n) / 2 ** 53;
}
const pick = (a) => a[Math.floor(rand() * a.length)];
const int = (lo, hi) => lo + Math.floor(rand() * (hi - lo + 1));
const fromRange = (lo, hi) => String.fromCodePoint(int(lo, hi));
const repeat = (n, f) => Array.from({ length: n }, f).join("");

const englishWords = ("the a an of to in and is it that for on with as was at by this be from are or have had not but " +
  "what all were when we there can been has more if will one would their which about out up them time some could " +
  "model engine memory token tokens prompt context window layer expert experts routing weights bandwidth cache " +
  "compressed attention sparse dense batch kernel thread socket server summary document reader writer question " +
  "answer careful quickly slowly river mountain village library window garden yellow purple Monday January " +
  "don't can't it's we're they've I'll she'd you're isn't O'Neill rock'n'roll e-mail state-of-the-art " +
  "Hello World OpenAI DeepSeek GPU CPU NUMA AVX-512 x86_64 iPhone McDonald naïve café résumé coöperate").split(" ");
const cyrillic = "привет мир как дела сегодня хорошая погода модель память язык программа работа".split(" ");
const arabic = "مرحبا بالعالم كيف حالك اليوم الطقس جميل النموذج الذاكرة اللغة البرنامج".split(" ");
const greek = "γειά σου κόσμε καλημέρα μοντέλο μνήμη γλώσσα".split(" ");
const hindi = "नमस्ते दुनिया आप कैसे हैं आज मौसम अच्छा है भाषा".split(" ");
const thai = "สวัสดีชาวโลก วันนี้อากาศดี ภาษาไทย".split(" ");
const cjkCommon = "的一是不了人我在有他这为之大来以个中上们到说国和地也子时道出而要于就下得可你年生自会那后能对着事其里所去行过家十用发天如然作方成者多日都三小军二无同么经法当起与好看学进种将还分此心前面又定见只主没公从";
const zhPunct = "，。！？；：、（）《》【】“”";
const hiragana = () => fromRange(0x3041, 0x3093);
const katakana = () => fromRange(0x30a1, 0x30f3);
const hangul = () => fromRange(0xac00, 0xd7a3);
const emoji = ["😀", "😂", "🤔", "👍", "👍🏻", "👍🏿", "👋🏽", "👨‍👩‍👧‍👦", "👩‍💻", "👩🏽‍💻", "🏳️‍🌈", "🏴‍☠️",
  "❤️", "❤️‍🔥", "🇯🇵", "🇫🇷", "🇺🇸", "🧑‍🤝‍🧑", "👨🏾‍🦰", "🙇‍♀️", "✌🏼", "🎉", "🚀", "☕", "⭐", "🐍", "1️⃣", "#️⃣", "©️", "™"];
const punct = ["...", "!?", "?!", "---", "--", "…", "«", "»", "“", "”", "‘", "’", "„", "(", ")", "[", "]", "{", "}",
  "<", ">", "/", "\\", "|", "@", "#", "$", "%", "^", "&", "*", "~", "`", "+", "=", "_", ";", ":", ",", ".", "'", "\"",
  "§", "¶", "†", "‡", "•", "※", "→", "⇒", "∀", "∑", "√", "∞", "≠", "≤", "€", "£", "¥", "₹"];
const specials = ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>", "<｜▁pad▁｜>",
  "<｜tool▁calls▁begin｜>", "<｜tool▁call▁begin｜>", "<｜tool▁sep｜>", "<｜tool▁output▁begin｜>", "<｜fim▁hole｜>",
  "<｜fim▁begin｜>", "<｜fim▁end｜>", "<think>", "</think>", "<｜latest_reminder｜>", "｜DSML｜", "<｜User", "<｜User｜",
  "｜>", "<｜", "<｜Assistant｜><｜Assistant｜>"];
const codeLines = [
  "int main(int argc, char **argv) { return argc > 1 ? atoi(argv[1]) : 0; }",
  "for (size_t i = 0; i < n; i++) sum += a[i] * b[i];",
  "def encode(self, text: str) -> list[int]:",
  "    return [self.vocab[t] for t in self.split(text) if t in self.vocab]",
  "const x = await fetch(url).then((r) => r.json());",
  "if (err != nil) { return fmt.Errorf(\"open %s: %w\", path, err) }",
  "SELECT id, name FROM users WHERE age >= 18 ORDER BY name DESC LIMIT 10;",
  "#include <stdio.h>", "#define MAX(a, b) ((a) > (b) ? (a) : (b))",
  "x <<= 3; y >>= 1; z ^= x & ~y | 0xFF;", "std::vector<std::pair<int, float>> v{{1, 2.5f}};",
  "let re = /^[a-z0-9_.+-]+@[a-z0-9-]+\\.[a-z]+$/i;", "    \"key\": [1, 2, 3], \"nested\": {\"a\": null},",
  "fn main() -> Result<(), Box<dyn Error>> { Ok(()) }", "\t\tif x == nil {\r\n\t\t\tcontinue\r\n\t\t}",
  "$ make -j8 && ./build/dsv4 run -m /models/v4 -p \"Hi\" -n 128", "a_b__c___d = snake_case_name_2024",
  "camelCaseIdentifier + PascalCaseType + SCREAMING_CASE", "https://example.com/path?query=1&x=y#frag",
];

function englishSentence() {
  let s = repeat(int(3, 18), () => pick(englishWords) + " ").trim();
  s = s[0].toUpperCase() + s.slice(1);
  return s + pick([".", ".", "!", "?", ",", ";", ":"]);
}
function number() {
  return pick([
    () => repeat(int(1, 24), () => String(int(0, 9))),
    () => String(int(0, 99999)) + "." + String(int(0, 999)),
    () => String(int(1, 999)) + "," + String(int(100, 999)) + "," + String(int(100, 999)),
    () => "-" + String(int(0, 1e6)) + "e" + String(int(-30, 30)),
    () => "0x" + int(0, 0xffffff).toString(16),
    () => repeat(int(1, 8), () => String.fromCodePoint(0xff10 + int(0, 9))),
    () => repeat(int(1, 7), () => String.fromCodePoint(0x0660 + int(0, 9))),
    () => repeat(int(1, 7), () => String.fromCodePoint(0x0966 + int(0, 9))),
    () => pick(["½", "¾", "²", "³", "Ⅻ", "ⅷ", "①", "⑳", "〇", "十二", "٣.١٤"]),
    () => String(int(1900, 2100)) + "-" + String(int(1, 12)).padStart(2, "0") + "-" + String(int(1, 28)).padStart(2, "0"),
  ])();
}
function whitespaceRun() {
  return repeat(int(1, 12), () => pick([" ", " ", "  ", "\t", "\n", "\r\n", "\n\n", "\r", "\u3000", "\u00a0", "\u2003", "\u2028", "\v", "\f"]).repeat(int(1, 6)));
}
function chinese(n) { return repeat(n, () => (rand() < 0.85 ? cjkCommon[int(0, cjkCommon.length - 1)] : pick([...zhPunct]))); }
function japanese(n) {
  return repeat(n, () => pick([hiragana, hiragana, katakana, () => cjkCommon[int(0, cjkCommon.length - 1)], () => pick(["。", "、", "ー", "「", "」"])])());
}
function korean(n) { return repeat(n, () => repeat(int(1, 5), hangul) + pick([" ", " ", ". ", ", "])); }
function words(list, n) { return repeat(n, () => pick(list) + pick([" ", " ", " ", ", ", ". "])); }
function combining() {
  return repeat(int(2, 10), () => fromRange(0x61, 0x7a) + repeat(int(0, 3), () => fromRange(0x300, 0x36f)));
}
function fullWidth() { return repeat(int(2, 16), () => fromRange(0xff01, 0xff5e)); }
function randomBmp() {
  const ranges = [[0x20, 0x7e], [0xa1, 0xff], [0x100, 0x17f], [0x391, 0x3c9], [0x410, 0x44f], [0x4e00, 0x9fa5],
    [0xac00, 0xd7a3], [0x3041, 0x3093], [0x2010, 0x2027], [0x2030, 0x205e], [0x2190, 0x21ff], [0x2200, 0x22ff],
    [0x2500, 0x257f], [0x2700, 0x27bf], [0x5d0, 0x5ea], [0x621, 0x64a], [0xe01, 0xe3a]];
  return repeat(int(1, 30), () => { const r = pick(ranges); return fromRange(r[0], r[1]); });
}

const kinds = [
  () => englishSentence(),
  () => repeat(int(2, 4), englishSentence).replace(/ /g, () => (rand() < 0.05 ? "  " : " ")),
  () => chinese(int(4, 60)),
  () => japanese(int(4, 50)),
  () => korean(int(2, 12)),
  () => words(cyrillic, int(3, 12)),
  () => words(arabic, int(3, 12)),
  () => words(greek, int(2, 8)) + words(hindi, int(2, 8)) + words(thai, int(1, 3)),
  () => pick(codeLines),
  () => repeat(int(1, 8), () => pick(emoji) + pick(["", " ", "", pick(englishWords)])),
  () => whitespaceRun(),
  () => pick(englishWords) + whitespaceRun() + pick(englishWords) + whitespaceRun(),
  () => repeat(int(1, 6), () => number() + pick([" ", "", ", ", "+", "x", "元", "円"])),
  () => repeat(int(1, 10), () => pick(punct)) + pick(englishWords) + repeat(int(1, 6), () => pick(punct)),
  () => combining(),
  () => fullWidth() + " " + chinese(int(1, 8)),
  () => englishSentence() + pick(specials) + chinese(int(1, 6)) + pick(specials) + pick(["", " ", "\n"]),
  () => pick(specials) + pick(specials) + pick(englishWords),
  () => randomBmp(),
  () => englishSentence() + " " + chinese(int(2, 10)) + " " + pick(emoji) + " " + number() + " " + words(cyrillic, 2),
  () => " ".repeat(int(1, 300)) + pick(englishWords) + "\n".repeat(int(1, 40)),
  () => pick(englishWords) + "\t".repeat(int(1, 20)) + "\r\n".repeat(int(1, 20)) + pick(englishWords),
];

const out = [];
const hand = [
  "Hello world", " Hello world", "  Hello  world  ", "hello\nworld", "hello\r\nworld\r\n", "\n\n\n", " ", "",
  "1234567890", "12345678901234567890", "3.14159265358979", "1,000,000", "v1.2.3-rc.4", "１２３４５６７",
  "你好，世界！", "我爱自然语言处理。", "東京タワーは高いです。", "カタカナとひらがな", "안녕하세요, 세계!",
  "Привет, мир!", "مرحبا بالعالم", "Γειά σου Κόσμε", "नमस्ते दुनिया", "สวัสดีชาวโลก",
  "👨‍👩‍👧‍👦👩🏽‍💻🏳️‍🌈", "👍🏻👍🏼👍🏽👍🏾👍🏿", "🇯🇵🇫🇷🇩🇪", "e\u0301 a\u0300 n\u0303 Z\u0351\u0352\u0353\u0354",
  "ＡＢＣ ａｂｃ！？", "...!!!???", "«Bonjour» — dit-il… “quoted” ‘single’",
  "<｜User｜>你好<｜Assistant｜><think>推理</think>答案<｜end▁of▁sentence｜>",
  "<｜begin▁of▁sentence｜>system prompt<｜User｜>hi<｜Assistant｜></think>hello<｜end▁of▁sentence｜>",
  "<｜User｜ not closed", "<<｜User｜>>", "a<｜end▁of▁sentence｜>b", "\t\t\tindented", "trailing spaces   ",
  "don't stop believin'", "I'M SHOUTING", "x=1;y=2;z=x+y", "C++ and C# and F#", "foo@bar.com",
  "\u00a0nbsp\u00a0", "\u3000全角空格\u3000", "line\u2028separator", "mixed中文English混合123",
];
for (const h of hand) out.push(h);
while (out.length < 2600) out.push(pick(kinds)());

// Whole documents: many lines of every kind, joined with newlines.
for (let d = 0; d < 24; d++) {
  const lines = [];
  const n = int(20, 120);
  for (let i = 0; i < n; i++) lines.push(pick(kinds)());
  out.push(lines.join(pick(["\n", "\n", "\n\n", "\r\n"])));
}

fs.writeFileSync(process.argv[2], out.map((s) => JSON.stringify(s)).join("\n") + "\n");
