#!/usr/bin/python3
"""Malformed tokenizer files and bad command lines: `frontier tokenize` / `detokenize` must
exit 1 or 2 with exactly one line on stderr that starts with "frontier" and says where the
problem is (JSON path, line, byte offset), and never die from a signal. Also a few inputs
that must work: empty text, NUL bytes, a 1 MiB line of one character.

Fixtures are edited copies of models/kjv-tiny's tokenizer.json and a small tiktoken.model
written here."""
import argparse
import base64
import copy
import json
import os
import shutil
import subprocess
import sys

ap = argparse.ArgumentParser()
ap.add_argument("--frontier", required=True)
ap.add_argument("--workdir", required=True)
args = ap.parse_args()
FR = args.frontier
W = args.workdir
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KJV = os.path.join(ROOT, "models", "kjv-tiny")
shutil.rmtree(W, ignore_errors=True)
os.makedirs(W)

passed = failed = 0
with open(os.path.join(KJV, "tokenizer.json"), encoding="utf-8") as f:
    BASE = json.load(f)


def run(argv, timeout=120):
    return subprocess.run([FR] + argv, capture_output=True, timeout=timeout)


def record(name, problems, detail=""):
    global passed, failed
    if problems:
        failed += 1
        print("FAIL %-44s %s" % (name, "; ".join(problems)))
    else:
        passed += 1
        print("ok   %-44s %s" % (name, detail))


def expect_error(name, argv, must_contain=None):
    r = run(argv)
    err = r.stderr.decode(errors="replace")
    lines = [l for l in err.splitlines() if l.strip()]
    problems = []
    if r.returncode < 0:
        problems.append("killed by signal %d" % -r.returncode)
    elif r.returncode not in (1, 2):
        problems.append("exit status %d (want 1 or 2)" % r.returncode)
    if len(lines) != 1:
        problems.append("%d stderr lines (want 1): %r" % (len(lines), err[-500:]))
    elif not lines[0].startswith("frontier"):
        problems.append("stderr line does not start with 'frontier': %r" % lines[0])
    if must_contain and must_contain not in err:
        problems.append("stderr lacks %r: %r" % (must_contain, err[-300:]))
    record(name, problems, lines[0][:120] if lines else "")


def tok_dir(name, tj=None, raw=None, config=None):
    d = os.path.join(W, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8") as f:
        f.write(raw if raw is not None else json.dumps(tj, ensure_ascii=False))
    with open(os.path.join(d, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        f.write(config if config is not None else json.dumps({"bos_token": "<｜begin▁of▁sentence｜>", "add_bos_token": True}))
    return d


def edited(fn):
    tj = copy.deepcopy(BASE)
    fn(tj)
    return tj


def tiktoken_dir(name, lines, config=None):
    d = os.path.join(W, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "tiktoken.model"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        f.write(config if config is not None else "{}")
    return d


def tok(d):
    return ["tokenize", d, "--text", "hello world", "--ids-only"]


good = json.dumps(BASE, ensure_ascii=False)
expect_error("truncated tokenizer.json", tok(tok_dir("trunc", raw=good[:5000])), "invalid JSON near byte")
expect_error("tokenizer.json is an array", tok(tok_dir("array", raw="[1,2]")), "expected a JSON object")
expect_error("model.type Unigram", tok(tok_dir("unigram", edited(lambda t: t["model"].update(type="Unigram")))),
             "model.type \"Unigram\"")
expect_error("merge with unknown token", tok(tok_dir("merge_unknown", edited(lambda t: t["model"]["merges"].__setitem__(12, ["q#q", "z#z"])))),
             "model.merges[12]: token \"q#q\" is not in the vocabulary")
expect_error("merge string without a space", tok(tok_dir("merge_nospace", edited(lambda t: t["model"]["merges"].__setitem__(3, "abc")))),
             "model.merges[3]: expected \"A B\"")
expect_error("merge string with two spaces", tok(tok_dir("merge_3parts", edited(lambda t: t["model"]["merges"].__setitem__(4, "a b c")))),
             "model.merges[4]")
expect_error("merge not a string or pair", tok(tok_dir("merge_num", edited(lambda t: t["model"]["merges"].__setitem__(5, 7)))),
             "model.merges[5]")
expect_error("merges not an array", tok(tok_dir("merges_obj", edited(lambda t: t["model"].update(merges={})))),
             "model.merges: expected an array")
expect_error("vocab id negative", tok(tok_dir("vocab_neg", edited(lambda t: t["model"]["vocab"].update(abc=-3)))),
             "model.vocab[\"abc\"]")
expect_error("vocab id fractional", tok(tok_dir("vocab_frac", edited(lambda t: t["model"]["vocab"].update(abc=1.5)))),
             "model.vocab[\"abc\"]")
expect_error("vocab id huge", tok(tok_dir("vocab_huge", edited(lambda t: t["model"]["vocab"].update(abc=1 << 40)))),
             "model.vocab[\"abc\"]")
expect_error("vocab token too long", tok(tok_dir("vocab_long", edited(lambda t: t["model"]["vocab"].update({"x" * 5000: 4095})))),
             "bytes (at most 4096 allowed)")
expect_error("added token without content", tok(tok_dir("added_nocontent", edited(lambda t: t["added_tokens"][1].pop("content")))),
             "added_tokens[1].content")
expect_error("added token id string", tok(tok_dir("added_badid", edited(lambda t: t["added_tokens"][0].update(id="0")))),
             "added_tokens[0].id")
expect_error("unknown pre-tokenizer", tok(tok_dir("pretok_unknown", edited(lambda t: t.update(pre_tokenizer={"type": "Whitespace"})))),
             "pre_tokenizer: pre-tokenizer type \"Whitespace\" is not supported")
expect_error("bad Split regex", tok(tok_dir("split_badre", edited(lambda t: t.update(pre_tokenizer={
    "type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": "a(b"}, "behavior": "Isolated"},
                                          {"type": "ByteLevel", "add_prefix_space": False, "use_regex": False}]})))),
             "pre_tokenizer.pretokenizers[0].pattern.Regex: regex error at offset")
expect_error("bad Split behavior", tok(tok_dir("split_badbeh", edited(lambda t: t.update(pre_tokenizer={
    "type": "Split", "pattern": {"String": " "}, "behavior": "Sideways"})))),
             "behavior: unknown behavior \"Sideways\"")
expect_error("Split without pattern", tok(tok_dir("split_nopat", edited(lambda t: t.update(pre_tokenizer={
    "type": "Split", "behavior": "Isolated"})))), "pattern: expected")
expect_error("pre-tokenizer after ByteLevel", tok(tok_dir("after_bl", edited(lambda t: t.update(pre_tokenizer={
    "type": "Sequence", "pretokenizers": [{"type": "ByteLevel"}, {"type": "Digits"}]})))), "after ByteLevel")
expect_error("unknown normalizer", tok(tok_dir("norm_unknown", edited(lambda t: t.update(normalizer={"type": "BertNormalizer"})))),
             "normalizer: normalizer type \"BertNormalizer\"")
expect_error("unknown decoder", tok(tok_dir("dec_unknown", edited(lambda t: t.update(decoder={"type": "WordPiece"})))),
             "decoder: decoder type \"WordPiece\"")
expect_error("template without its token", tok(tok_dir("tmpl_missing", edited(lambda t: t.update(post_processor={
    "type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<bos>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
    "special_tokens": {}})))), "post_processor.single[0]")
expect_error("nesting bomb", tok(tok_dir("nest", raw="[" * 100000 + "]" * 100000)), "invalid JSON")
expect_error("config not JSON", tok(tok_dir("cfg_bad", BASE, config="{\"add_bos_token\": tru")), "tokenizer_config.json: invalid JSON near byte")
expect_error("config add_bos_token string", tok(tok_dir("cfg_str", BASE, config="{\"add_bos_token\": \"yes\"}")),
             "add_bos_token: expected true or false")
expect_error("empty directory", tok(os.path.join(W, "empty_dir_does_not_exist")), "no tokenizer.json or tiktoken.model")

b64 = lambda b: base64.b64encode(b).decode()
all_bytes = ["%s %d" % (b64(bytes([i])), i) for i in range(256)]
expect_error("tiktoken bad base64", tok(tiktoken_dir("tt_b64", all_bytes[:3] + ["@@@@ 3"] + all_bytes[4:])), "line 4: invalid base64")
expect_error("tiktoken missing rank", tok(tiktoken_dir("tt_norank", all_bytes[:5] + [b64(b"\x05")] + all_bytes[6:])), "line 6: expected")
expect_error("tiktoken duplicate rank", tok(tiktoken_dir("tt_duprank", all_bytes + ["%s 7" % b64(b"ab")])), "rank 7 appears twice")
expect_error("tiktoken duplicate bytes", tok(tiktoken_dir("tt_dupbytes", all_bytes + ["%s 256" % b64(b"a")])), "the same bytes already have rank")
expect_error("tiktoken missing byte", tok(tiktoken_dir("tt_nobyte", all_bytes[:200] + ["%s 200" % b64(b"ab")] + all_bytes[201:])),
             "no token for the single byte 0xc8")
expect_error("tiktoken bad special id", tok(tiktoken_dir("tt_badspecial", all_bytes, '{"added_tokens_decoder": {"x1": {"content": "[BOS]"}}}')),
             "added_tokens_decoder[\"x1\"]")
expect_error("tokenize without input", ["tokenize", KJV])
expect_error("tokenize missing file", ["tokenize", KJV, "--file", os.path.join(W, "nope.txt")], "nope.txt")
expect_error("tokenize unknown option", ["tokenize", KJV, "--text", "a", "--frobnicate"], "unknown option")
expect_error("tokenize bench zero", ["tokenize", KJV, "--text", "a", "--bench", "0"], "--bench")
expect_error("detokenize bad ids", ["detokenize", KJV, "--ids", "1,x,3"], "--ids")
expect_error("detokenize without ids", ["detokenize", KJV])

# inputs that must work
d = tiktoken_dir("tt_ok", all_bytes + ["%s 256" % b64(b"ab")], '{"added_tokens_decoder": {"257": {"content": "[BOS]", "special": true}}}')
r = run(["tokenize", d, "--text", "abab[BOS]\xff", "--ids-only"])
record("tiny tiktoken encodes", [] if r.returncode == 0 and r.stdout.decode().strip() == "256,256,257,195,191" else
       ["got %r %r" % (r.stdout, r.stderr)])
big = os.path.join(W, "big.txt")
with open(big, "wb") as f:
    f.write(b"a" * (1 << 20) + b"\x00\xff" + "é".encode() * 1000)
for name, argv in (("empty text", ["tokenize", KJV, "--text", "", "--ids-only"]),
                   ("1 MiB word, NUL, invalid byte", ["tokenize", KJV, "--file", big, "--ids-only", "--no-special"])):
    r = run(argv, timeout=600)
    record(name, [] if r.returncode == 0 else ["exit %d: %r" % (r.returncode, r.stderr[-300:])])
r = run(["detokenize", KJV, "--ids", "0,999999,5"])
record("detokenize skips unknown ids", [] if r.returncode == 0 else ["exit %d: %r" % (r.returncode, r.stderr[-200:])])

print("%d passed, %d failed" % (passed, failed))
sys.exit(1 if failed else 0)
