#!/usr/bin/python3
"""Derived tokenizers for the oracle tests, written into OUT_DIR:

  kimi-synth/         tiktoken.model + tokenizer_config.json the way Kimi K2 ships them,
                      made from a real byte-level vocabulary (Llama 3's, whose tokenizer.json
                      was itself converted from tiktoken ranks: id = rank), with Kimi's
                      special-token layout after the last rank.
  kimi-synth-oracle/  the same vocabulary as tokenizer.json with Kimi's split pattern (class
                      intersections and all, which transformers.js understands) and the same
                      special tokens: transformers.js's answer for kimi-synth.
  spm-bytefallback/   a Llama-2-style tokenizer: Prepend + Replace normalizers, no
                      pre-tokenizer, BPE with byte_fallback, unk and fuse_unk, merges as
                      "a b" strings, TemplateProcessing BOS, decoders Replace, ByteFallback,
                      Fuse, Strip.
  nfkc-metaspace/     NFKC normalizer, Digits(individual) + Metaspace pre-tokenizers, merges
                      as ["a", "b"] pairs, a Metaspace decoder, add_bos_token in the config.

The two char-level vocabularies come from a small BPE trained here on the English and code
files of the corpus (deterministic), so every run builds the same files.

usage: make_fixtures.py LLAMA3_TOKENIZER_JSON CORPUS_DIR OUT_DIR
"""
import base64
import collections
import json
import os
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference"))
from bpe import bytes_to_unicode  # noqa: E402  (GPT-2 byte alphabet, shared with the reference)

KIMI_PATTERN = "|".join([
    r"""[\p{Han}]+""",
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]*[\p{Ll}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]+[\p{Ll}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""\p{N}{1,3}""",
    r""" ?[^\s\p{L}\p{N}]+[\r\n]*""",
    r"""\s*[\r\n]+""",
    r"""\s+(?!\S)""",
    r"""\s+""",
])

# Kimi K2's named special tokens, as offsets from the first special id (ARCH 8.2)
KIMI_SPECIALS = {0: "[BOS]", 1: "[EOS]", 2: "<|im_end|>", 3: "<|im_user|>", 4: "<|im_assistant|>",
                 6: "<|start_header_id|>", 7: "<|end_header_id|>", 9: "[EOT]", 10: "<|im_system|>",
                 11: "<|tool_calls_section_begin|>", 12: "<|tool_calls_section_end|>", 13: "<|tool_call_begin|>",
                 14: "<|tool_call_argument_begin|>", 15: "<|tool_call_end|>", 17: "<|im_middle|>",
                 18: "<|media_begin|>", 19: "<|media_content|>", 20: "<|media_end|>", 21: "<|media_pad|>",
                 22: "<think>", 23: "</think>", 254: "[UNK]", 255: "[PAD]"}


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False)


def added(id_, content, special=True, normalized=False):
    return {"id": id_, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
            "normalized": normalized, "special": special}


def make_kimi(llama3_json, out):
    with open(llama3_json, encoding="utf-8") as f:
        tj = json.load(f)
    u2b = {c: b for b, c in bytes_to_unicode().items()}
    vocab = tj["model"]["vocab"]
    n_base = len(vocab)
    assert sorted(vocab.values()) == list(range(n_base))
    d = os.path.join(out, "kimi-synth")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "tiktoken.model"), "w") as f:
        for tok, rank in sorted(vocab.items(), key=lambda kv: kv[1]):
            f.write("%s %d\n" % (base64.b64encode(bytes(u2b[c] for c in tok)).decode(), rank))
    specials = [(n_base + i, KIMI_SPECIALS.get(i, "<|reserved_token_%d|>" % (n_base + i))) for i in range(258)]
    atd = {str(n_base + off): {"content": name, "lstrip": False, "normalized": False, "rstrip": False,
                               "single_word": False, "special": True} for off, name in KIMI_SPECIALS.items()}
    cfg = {"bos_token": "[BOS]", "eos_token": "[EOS]", "pad_token": "[PAD]", "unk_token": "[UNK]",
           "added_tokens_decoder": atd, "tokenizer_class": "TikTokenTokenizer", "model_max_length": 1048576}
    write_json(os.path.join(d, "tokenizer_config.json"), cfg)

    d = os.path.join(out, "kimi-synth-oracle")
    os.makedirs(d, exist_ok=True)
    tj["added_tokens"] = [added(i, name) for i, name in specials]
    tj["normalizer"] = None
    tj["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": KIMI_PATTERN}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}]}
    tj["post_processor"] = None
    tj["decoder"] = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    write_json(os.path.join(d, "tokenizer.json"), tj)
    ocfg = {k: v for k, v in cfg.items() if k != "added_tokens_decoder"}
    ocfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    write_json(os.path.join(d, "tokenizer_config.json"), ocfg)


def train_bpe(text, n_chars, n_merges):
    """Tiny SentencePiece-style BPE: words start with U+2581, merges stay inside words."""
    words = collections.Counter()
    for line in text.split(" "):
        if line:
            words["\u2581" + line] += 1
    chars = collections.Counter()
    for w, c in words.items():
        for ch in w:
            chars[ch] += c
    alphabet = [ch for ch, _ in sorted(chars.items(), key=lambda kv: (-kv[1], kv[0]))[:n_chars]]
    keep = set(alphabet)
    seqs = {w: [ch if ch in keep else None for ch in w] for w in words}
    merges = []
    for _ in range(n_merges):
        pairs = collections.Counter()
        for w, seq in seqs.items():
            for a, b in zip(seq, seq[1:]):
                if a is not None and b is not None:
                    pairs[(a, b)] += words[w]
        if not pairs:
            break
        (a, b), _ = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))
        merges.append((a, b))
        for w, seq in seqs.items():
            i, new = 0, []
            while i < len(seq):
                if i + 1 < len(seq) and seq[i] == a and seq[i + 1] == b:
                    new.append(a + b)
                    i += 2
                else:
                    new.append(seq[i])
                    i += 1
            seqs[w] = new
    return alphabet, merges


def make_spm(corpus, out):
    text = "".join(open(os.path.join(corpus, f), encoding="utf-8").read()
                   for f in ("en_prose.txt", "code_c.txt", "code_py.txt", "markup.txt"))
    alphabet, merges = train_bpe(text, 90, 400)
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab["<0x%02X>" % b] = len(vocab)
    for ch in ["\u2581"] + alphabet:
        vocab.setdefault(ch, len(vocab))
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    base = {"version": "1.0", "truncation": None, "padding": None,
            "added_tokens": [added(0, "<unk>"), added(1, "<s>"), added(2, "</s>")]}

    d = os.path.join(out, "spm-bytefallback")
    os.makedirs(d, exist_ok=True)
    tj = dict(base)
    tj["normalizer"] = {"type": "Sequence", "normalizers": [
        {"type": "Prepend", "prepend": "\u2581"},
        {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]}
    tj["pre_tokenizer"] = None
    tj["post_processor"] = {"type": "TemplateProcessing",
                            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                            "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                                     {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
                            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}}
    tj["decoder"] = {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
        {"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}
    tj["model"] = {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                   "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                   "vocab": vocab, "merges": ["%s %s" % m for m in merges]}
    write_json(os.path.join(d, "tokenizer.json"), tj)
    write_json(os.path.join(d, "tokenizer_config.json"),
               {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "tokenizer_class": "PreTrainedTokenizerFast",
                "clean_up_tokenization_spaces": False})

    d = os.path.join(out, "nfkc-metaspace")
    os.makedirs(d, exist_ok=True)
    tj = dict(base)
    tj["normalizer"] = {"type": "NFKC"}
    tj["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True},
        {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": True}]}
    tj["post_processor"] = None
    tj["decoder"] = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": True}
    tj["model"] = {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                   "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": True, "ignore_merges": False,
                   "vocab": vocab, "merges": [list(m) for m in merges]}
    write_json(os.path.join(d, "tokenizer.json"), tj)
    write_json(os.path.join(d, "tokenizer_config.json"),
               {"bos_token": "<s>", "eos_token": "</s>", "add_bos_token": True, "add_eos_token": False,
                "tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False})


if __name__ == "__main__":
    llama3_json, corpus, out = sys.argv[1:4]
    os.makedirs(out, exist_ok=True)
    make_kimi(llama3_json, out)
    make_spm(corpus, out)
