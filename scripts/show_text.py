#!/usr/bin/env python3
"""Demo helper: turn the ids `frontier run` prints into text with a checkpoint's byte-level
BPE vocabulary (tokenizer.json). Only for the demo until the engine's own tokenizer lands."""
import json
import sys


def byte_decoder():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


tok = json.load(open(sys.argv[1]))
inv = {i: w for w, i in tok["model"]["vocab"].items()}
for t in tok.get("added_tokens", []):
    inv[t["id"]] = None
dec = byte_decoder()
ids = [int(x) for x in sys.stdin.read().split()]
out = bytearray()
for i in ids:
    w = inv.get(i)
    if w:
        out += bytes(dec[ch] for ch in w)
print(out.decode("utf-8", errors="replace"))
