#!/usr/bin/python3
"""Small byte-level BPE encoder/decoder for an HF tokenizers `tokenizer.json` (test use only).

Good enough for plain ASCII English: GPT-2 byte-to-unicode map, the ByteLevel pre-tokenizer's
GPT-2 split regex approximated with Python `re` (\\p{L} ~ [^\\W\\d_], \\p{N} ~ \\d), merges applied by
rank. Special (added) tokens are matched verbatim before pre-tokenization. Refuses tokenizer.json
features it does not implement (normalizers, non-ByteLevel pre-tokenizers, byte fallback).
"""
import json
import re


def bytes_to_unicode():
    """GPT-2's reversible byte -> printable unicode character map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) + \
        list(range(ord("\xae"), ord("\xff") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


# GPT-2 pattern: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
_L = r"[^\W\d_]"
_N = r"\d"
GPT2_SPLIT = re.compile(
    r"'s|'t|'re|'ve|'m|'ll|'d| ?" + _L + r"+| ?" + _N + r"+| ?(?:(?!" + _L + r"|" + _N + r")[^\s])+"
    r"|\s+(?!\S)|\s+")


class BPETokenizer:
    def __init__(self, path):
        with open(path, encoding="utf-8") as f:
            t = json.load(f)
        m = t["model"]
        if m.get("type") != "BPE":
            raise ValueError(f"{path}: model type {m.get('type')} (only BPE)")
        if m.get("byte_fallback") or m.get("continuing_subword_prefix") or m.get("end_of_word_suffix"):
            raise ValueError(f"{path}: BPE options not supported by this small encoder")
        if t.get("normalizer") is not None:
            raise ValueError(f"{path}: normalizer not supported")
        pt = t.get("pre_tokenizer") or {}
        if pt.get("type") != "ByteLevel" or not pt.get("use_regex", True):
            raise ValueError(f"{path}: only a ByteLevel pre_tokenizer with its regex is supported")
        self.add_prefix_space = bool(pt.get("add_prefix_space", False))
        self.vocab = dict(m["vocab"])
        self.id_to_token = {i: s for s, i in self.vocab.items()}
        self.ranks = {}
        for r, mg in enumerate(m["merges"]):
            a, b = mg.split(" ") if isinstance(mg, str) else mg
            self.ranks[(a, b)] = r
        self.special = {}
        for at in t.get("added_tokens", []):
            self.special[at["content"]] = at["id"]
            self.id_to_token[at["id"]] = at["content"]
        self.b2u = bytes_to_unicode()
        self.u2b = {c: b for b, c in self.b2u.items()}
        self.cache = {}

    def _bpe(self, word):
        if word in self.cache:
            return self.cache[word]
        parts = list(word)
        while len(parts) > 1:
            best = None
            for i in range(len(parts) - 1):
                r = self.ranks.get((parts[i], parts[i + 1]))
                if r is not None and (best is None or r < best[0]):
                    best = (r, i)
            if best is None:
                break
            a, b = parts[best[1]], parts[best[1] + 1]
            out, i = [], 0
            while i < len(parts):       # merge every occurrence of the best pair, left to right
                if i < len(parts) - 1 and parts[i] == a and parts[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(parts[i])
                    i += 1
            parts = out
        ids = []
        for p in parts:
            if p not in self.vocab:
                raise ValueError(f"no vocabulary entry for {p!r}")
            ids.append(self.vocab[p])
        self.cache[word] = ids
        return ids

    def encode(self, text):
        """Token ids of text (no BOS/EOS added)."""
        ids = []
        if self.special:
            pat = "(" + "|".join(re.escape(s) for s in sorted(self.special, key=len, reverse=True)) + ")"
            pieces = re.split(pat, text)
        else:
            pieces = [text]
        for k, piece in enumerate(pieces):
            if k % 2 == 1:
                ids.append(self.special[piece])
                continue
            if not piece:
                continue
            if self.add_prefix_space and not piece.startswith(" "):
                piece = " " + piece
            for w in GPT2_SPLIT.findall(piece):
                ids.extend(self._bpe("".join(self.b2u[b] for b in w.encode("utf-8"))))
        return ids

    def decode(self, ids, skip_special=True):
        out = bytearray()
        for i in ids:
            s = self.id_to_token[int(i)]
            if s in self.special:
                if not skip_special:
                    out.extend(s.encode("utf-8"))
                continue
            out.extend(self.u2b[c] for c in s)
        return out.decode("utf-8", errors="replace")
