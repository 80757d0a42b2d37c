#!/usr/bin/env python3
"""Bad input never crashes frontier: each case must exit non-zero (1 or 2), print exactly
one line on stderr starting with "frontier", and not die from a signal. Run against the
sanitizer build too, so a memory error anywhere on these paths fails the test.

Fixtures are a `frontier synth tiny` checkpoint and corrupted copies of it."""
import argparse
import json
import os
import shutil
import struct
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from cli_check import CliCheck, header_of, with_header  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--frontier", required=True)
ap.add_argument("--workdir", required=True)
args = ap.parse_args()
FR = args.frontier
W = args.workdir
shutil.rmtree(W, ignore_errors=True)
os.makedirs(W)

CHECK = CliCheck(FR, 40)
run, expect_error, must_succeed = CHECK.run, CHECK.expect_error, CHECK.must_succeed


good = os.path.join(W, "good")
must_succeed(["synth", "tiny", good, "--single-file"])
cfg = json.load(open(os.path.join(good, "config.json")))
V = cfg["vocab_size"]
must_succeed(["logits", good, "--ids", "1,2,3", "--out", os.path.join(W, "ok.bin")])


def variant(name, mutate_config=None, mutate_st=None):
    d = os.path.join(W, name)
    shutil.copytree(good, d)
    if mutate_config:
        c = json.load(open(os.path.join(d, "config.json")))
        mutate_config(c)
        json.dump(c, open(os.path.join(d, "config.json"), "w"))
    if mutate_st:
        p = os.path.join(d, "model.safetensors")
        data = bytearray(open(p, "rb").read())
        data = mutate_st(data)
        open(p, "wb").write(bytes(data))
    return d


def first_tensor(hdr):
    return sorted(k for k in hdr if k != "__metadata__")[0]


ids = "1,2,3"
# --- files and directories
expect_error("missing directory", ["logits", os.path.join(W, "nope"), "--ids", ids, "--out", os.path.join(W, "x")])
empty = os.path.join(W, "empty")
os.makedirs(empty)
expect_error("directory without config.json", ["run", empty, "--ids", ids], "config.json")
d = variant("nost")
os.remove(os.path.join(d, "model.safetensors"))
expect_error("no safetensors", ["run", d, "--ids", ids])
# --- config.json
d = variant("badjson")
open(os.path.join(d, "config.json"), "w").write('{"architectures": ["DeepseekV3ForCausalLM"],')
expect_error("config.json not JSON", ["run", d, "--ids", ids], "config.json")
d = variant("arch", lambda c: c.update(architectures=["MixtralForCausalLM"]))
expect_error("unknown architecture", ["run", d, "--ids", ids], "MixtralForCausalLM")
d = variant("nohidden", lambda c: c.pop("hidden_size"))
expect_error("missing hidden_size", ["info", d], "hidden_size")
d = variant("contradict", lambda c: c.update(hidden_size=c["hidden_size"] + 8))
expect_error("config contradicts tensor shapes", ["run", d, "--ids", ids], "shape")
d = variant("moreexperts", lambda c: c.update(n_routed_experts=c["n_routed_experts"] * 2))
expect_error("config names more experts than exist", ["run", d, "--ids", ids])
expect_error("negative layer count", ["run", variant("neglayers", lambda c: c.update(num_hidden_layers=-3)), "--ids", ids])
# --- safetensors
d = variant("trunc", mutate_st=lambda b: b[:len(b) // 2])
expect_error("truncated safetensors", ["run", d, "--ids", ids], "model.safetensors")
d = variant("tiny8", mutate_st=lambda b: b[:5])
expect_error("safetensors shorter than 8 bytes", ["run", d, "--ids", ids])
d = variant("hugehdr", mutate_st=lambda b: bytearray(struct.pack("<Q", 1 << 60)) + b[8:])
expect_error("header length beyond file", ["run", d, "--ids", ids])
d = variant("garbagehdr", mutate_st=lambda b: b[:8] + bytearray(b"{\"a\":[" + b"x" * 10) + b[8 + 16:])
expect_error("malformed header JSON", ["run", d, "--ids", ids])


def off_range(b):
    n, h = header_of(b)
    k = first_tensor(h)
    h[k]["data_offsets"] = [0, 1 << 40]
    return with_header(b, h)


d = variant("offrange", mutate_st=off_range)
expect_error("offsets outside the data area", ["run", d, "--ids", ids])


def bad_dtype(b):
    n, h = header_of(b)
    h[first_tensor(h)]["dtype"] = "Q9_X"
    return with_header(b, h)


d = variant("baddtype", mutate_st=bad_dtype)
expect_error("unknown dtype", ["run", d, "--ids", ids])


def overlap(b):
    n, h = header_of(b)
    ks = sorted((k for k in h if k != "__metadata__"), key=lambda k: h[k]["data_offsets"][0])
    a, c = h[ks[0]], h[ks[1]]
    if a["dtype"] == c["dtype"] and a["shape"] == c["shape"]:
        c["data_offsets"] = list(a["data_offsets"])
    else:  # shift the second tensor down by one byte: overlap (and a size mismatch at worst)
        c["data_offsets"] = [c["data_offsets"][0] - 1, c["data_offsets"][1] - 1]
    return with_header(b, h)


d = variant("overlap", mutate_st=overlap)
expect_error("overlapping tensors", ["run", d, "--ids", ids])


def wrong_shape(b):
    n, h = header_of(b)
    k = first_tensor(h)
    h[k]["shape"] = [x + 1 for x in h[k]["shape"]] or [2]
    return with_header(b, h)


d = variant("wrongshape", mutate_st=wrong_shape)
expect_error("byte range != shape x dtype", ["run", d, "--ids", ids])
# sharded: index names a shard that is not there
sh = os.path.join(W, "sharded")
must_succeed(["synth", "tiny", sh])
idx = json.load(open(os.path.join(sh, "model.safetensors.index.json")))
files = sorted(set(idx["weight_map"].values()))
os.remove(os.path.join(sh, files[-1]))
expect_error("index names a missing shard", ["run", sh, "--ids", ids])
# --- arguments
for name, extra in [("id outside vocabulary", str(V)), ("negative id", "-1"), ("empty ids", ""),
                    ("garbage ids", "1,a,3"), ("double comma", "1,,3"), ("huge id", "99999999999")]:
    expect_error(name, ["run", good, "--ids", extra])
expect_error("id outside vocabulary (logits)", ["logits", good, "--ids", "1,%d" % (V + 5), "--out", os.path.join(W, "x")],
             "vocabulary")
expect_error("--decode-from 0", ["logits", good, "--ids", ids, "--decode-from", "0", "--out", os.path.join(W, "x")])
expect_error("--decode-from past the end", ["logits", good, "--ids", ids, "--decode-from", "4", "--out", os.path.join(W, "x")])
expect_error("--decode-from not a number", ["logits", good, "--ids", ids, "--decode-from", "2x", "--out", os.path.join(W, "x")])
expect_error("logits without --out", ["logits", good, "--ids", ids])
expect_error("unwritable --out", ["logits", good, "--ids", ids, "--out", os.path.join(W, "no/such/dir/x")])
expect_error("unknown option", ["run", good, "--ids", ids, "--bogus"])
expect_error("option without value", ["run", good, "--ids"])
expect_error("bad temperature", ["run", good, "--ids", ids, "--temp", "-1"])
expect_error("bad top-p", ["run", good, "--ids", ids, "--temp", "1", "--top-p", "1.5"])
expect_error("unknown command", ["frobnicate"])
expect_error("synth unknown preset", ["synth", "nonexistent-preset", os.path.join(W, "s1")])
expect_error("synth bad layers", ["synth", "tiny", os.path.join(W, "s2"), "--layers", "zero"])
expect_error("bench preset without dummy", ["bench", "--preset", "tiny"])
expect_error("bench --batch 0", ["bench", "--preset", "tiny", "--load-format", "dummy", "--batch", "0"])
expect_error("bench --batch list too long", ["bench", "--preset", "tiny", "--load-format", "dummy", "--batch", ",".join(["1"] * 17)])
expect_error("bench --batch with --context", ["bench", "--preset", "tiny", "--load-format", "dummy", "--batch", "1", "--context", "8"])

# bench --batch: one JSON line per batch size; a batch of 3 reads at least the weights of a
# batch of 1 (attention, head, shared experts once, routed experts chosen by any token) and
# never three times as much.
r = CHECK.must_succeed(["bench", "--preset", "tiny", "--load-format", "dummy", "--batch", "1,3", "-p", "4", "-n", "2", "--json"])
rows = [json.loads(l) for l in r.stdout.splitlines() if l.startswith("{")]
ok = len(rows) == 2 and [x["batch"] for x in rows] == [1, 3] and \
    rows[0]["weight_bytes_per_step"] <= rows[1]["weight_bytes_per_step"] < 3 * rows[0]["weight_bytes_per_step"] and \
    all(x["decode_tok_s"] > 0 and x["achieved_gb_s"] > 0 for x in rows)
CHECK.passed += ok
CHECK.failed += not ok
print("%s %-44s %s" % ("ok  " if ok else "FAIL", "bench --batch 1,3 JSON", [(x["batch"], x["weight_bytes_per_step"]) for x in rows]))

CHECK.finish()
