#!/usr/bin/env python3
"""Bad 4-bit input never crashes frontier: each case must exit non-zero (1 or 2), print exactly one
line on stderr starting with "frontier" (and naming what is wrong), and not die from a signal. In
the style of tests/bad_input/test_bad_input.py; run under the sanitizer build too.

Fixtures: a tiny-derived checkpoint (expert width 96) as one BF16 file, its `frontier quantize
--experts mxfp4` output, a shrunk K2.5 checkpoint with compressed-tensors INT4 experts, and
corrupted copies of them (safetensors headers rewritten with the byte ranges kept valid, so the
4-bit checks are what fails, not the generic safetensors ones)."""
import argparse
import json
import os
import shutil
import struct
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from cli_check import CliCheck, header_of, with_header  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ap = argparse.ArgumentParser()
ap.add_argument("--frontier", required=True)
ap.add_argument("--workdir", required=True)
args = ap.parse_args()
FR = args.frontier
W = args.workdir
shutil.rmtree(W, ignore_errors=True)
os.makedirs(W)

CHECK = CliCheck(FR, 44)
run, expect_error, must_succeed = CHECK.run, CHECK.expect_error, CHECK.must_succeed


def print_config(preset, extra=()):
    return json.loads(must_succeed(["synth", preset, "--print-config"] + list(extra)).stdout)


# --- fixtures
cfg = print_config("tiny")
cfg.update({"moe_intermediate_size": 96, "intermediate_size": 224})
with open(os.path.join(W, "t32.json"), "w") as f:
    json.dump(cfg, f)
bf16 = os.path.join(W, "bf16")
must_succeed(["synth", os.path.join(W, "t32.json"), bf16, "--single-file"])
mx = os.path.join(W, "mx")
must_succeed(["quantize", bf16, mx, "--experts", "mxfp4", "--quiet"])
tiny = os.path.join(W, "tiny")
must_succeed(["synth", "tiny", tiny, "--single-file"])
sys.path.insert(0, os.path.join(HERE, "..", "model"))
sys.dont_write_bytecode = True
import test_reference as tr  # noqa: E402  (shrink_k25)

k25cfg = tr.shrink_k25(print_config("kimi-k2.5", ["--layers", "2", "--experts", "8"]))
with open(os.path.join(W, "k25.json"), "w") as f:
    json.dump(k25cfg, f)
k25 = os.path.join(W, "k25")
must_succeed(["synth", os.path.join(W, "k25.json"), k25, "--single-file", "--layers", "2", "--experts", "8"])
ids = "1,2,3"
out = os.path.join(W, "x.f32")
must_succeed(["logits", mx, "--ids", ids, "--out", out])


def variant(src, name, mutate_config=None, mutate_st=None):
    d = os.path.join(W, name)
    shutil.copytree(src, d)
    if mutate_config:
        c = json.load(open(os.path.join(d, "config.json")))
        t = c.get("text_config", c)
        mutate_config(t)
        if t is not c and "quantization_config" in c:
            c["quantization_config"] = t.get("quantization_config")
        json.dump(c, open(os.path.join(d, "config.json"), "w"))
    if mutate_st:
        p = os.path.join(d, "model.safetensors")
        data = bytearray(open(p, "rb").read())
        data = mutate_st(data)
        open(p, "wb").write(bytes(data))
    return d


def edit(name_suffix, fn):
    """Header edit of the first tensor whose name ends with name_suffix (sorted order)."""
    def m(data):
        _, h = header_of(data)
        k = sorted(n for n in h if n.endswith(name_suffix))[0]
        fn(h, k)
        return with_header(data, h)
    return m


def reshape(shape_fn):
    def f(h, k):
        h[k]["shape"] = shape_fn(h[k]["shape"])
    return f


def set_qc(qc):
    def f(c):
        c["quantization_config"] = qc
    return f


def frontier_qc(**groups):
    g = {"attention": "bf16", "dense": "bf16", "shared_experts": "bf16", "experts": "mxfp4"}
    g.update(groups)
    return {"quant_method": "frontier", "group_size": 32, "format_by_group": g}


L = ["logits"]
# --- MXFP4 tensors that disagree with the weight
d = variant(mx, "blk_shape", mutate_st=edit("experts.0.down_proj.weight_blocks", reshape(lambda s: [s[0] * s[1], 1, 16])))
expect_error("blocks shape disagrees with the weight", L + [d, "--ids", ids, "--out", out], "weight_blocks")
d = variant(mx, "blk_dtype", mutate_st=edit("experts.0.up_proj.weight_blocks", lambda h, k: h[k].update(dtype="I8")))
expect_error("blocks not U8", L + [d, "--ids", ids, "--out", out], "expected U8")
d = variant(mx, "sc_shape", mutate_st=edit("experts.1.gate_proj.weight_scales", reshape(lambda s: [s[1], s[0]])))
expect_error("scales shape disagrees with the weight", L + [d, "--ids", ids, "--out", out], "weight_scales")
d = variant(mx, "sc_missing", mutate_st=edit("experts.2.down_proj.weight_scales",
                                            lambda h, k: h.__setitem__(k + "_x", h.pop(k))))
expect_error("scales missing", L + [d, "--ids", ids, "--out", out], "has no")


def rebuild(fn):
    """Rewrite the whole file: fn(tensors) edits {name: [dtype, shape, bytes]}."""
    def m(data):
        n, h = header_of(data)
        body = data[8 + n:]
        t = {k: [e["dtype"], e["shape"], bytes(body[e["data_offsets"][0]:e["data_offsets"][1]])]
             for k, e in h.items() if k != "__metadata__"}
        fn(t)
        hdr, blobs, off = {}, [], 0
        for k in sorted(t):
            dt, shape, b = t[k]
            hdr[k] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + len(b)]}
            blobs.append(b)
            off += len(b)
        text = json.dumps(hdr).encode()
        text += b" " * (-len(text) % 8)
        return bytearray(struct.pack("<Q", len(text)) + text + b"".join(blobs))
    return m


def add_plain_twin(t):
    k = sorted(x for x in t if x.endswith("experts.3.gate_proj.weight_blocks"))[0]
    r, g, _ = t[k][1]
    t[k[:-len("_blocks")]] = ["BF16", [r, g * 32], bytes(r * g * 32 * 2)]


d = variant(mx, "twice", mutate_st=rebuild(add_plain_twin))
expect_error("weight stored plain and as MXFP4", L + [d, "--ids", ids, "--out", out], "more than one form")
# --- quantization_config
d = variant(mx, "qc_nf4", set_qc(frontier_qc(experts="nf4")))
expect_error("format_by_group names an unknown format", L + [d, "--ids", ids, "--out", out], "nf4")
d = variant(mx, "qc_group", set_qc(dict(frontier_qc(), format_by_group={"expert": "mxfp4"})))
expect_error("format_by_group names an unknown group", L + [d, "--ids", ids, "--out", out], "expert")
d = variant(mx, "qc_method", set_qc({"quant_method": "gptq", "bits": 4}))
expect_error("unknown quant_method", L + [d, "--ids", ids, "--out", out], "gptq")
d = variant(mx, "qc_attn4", set_qc(frontier_qc(attention="mxfp4")))
expect_error("attention declared mxfp4", L + [d, "--ids", ids, "--out", out], "attention")
d = variant(mx, "qc_bf16", set_qc(None))
expect_error("MXFP4 tensors without a quantization_config", L + [d, "--ids", ids, "--out", out], "quantization_config")
d = variant(mx, "qc_fp8", set_qc(dict(frontier_qc(experts="fp8"), weight_block_size=[128, 128])))
expect_error("MXFP4 tensors where fp8 is declared", L + [d, "--ids", ids, "--out", out], "mxfp4")
d = variant(bf16, "qc_noblocks", set_qc(frontier_qc()))
expect_error("mxfp4 declared, BF16 stored", L + [d, "--ids", ids, "--out", out], "declares the experts group mxfp4")
d = variant(bf16, "qc_noexperts", set_qc(frontier_qc()),
            rebuild(lambda t: [t.pop(k) for k in [x for x in t if ".mlp.experts.0." in x]]))
expect_error("mxfp4 declared, expert missing", L + [d, "--ids", ids, "--out", out], "weight_blocks")
d = variant(mx, "qc_gs", set_qc(dict(frontier_qc(), group_size=64)))
expect_error("4-bit group_size 64", L + [d, "--ids", ids, "--out", out], "group_size")
d = variant(k25, "ct_bits", lambda c: c["quantization_config"]["config_groups"]["group_0"]["weights"].update(num_bits=8))
expect_error("compressed-tensors num_bits 8", L + [d, "--ids", ids, "--out", out], "num_bits 8")
d = variant(k25, "ct_format", lambda c: c["quantization_config"].update(format="float-quantized"))
expect_error("compressed-tensors format float-quantized", L + [d, "--ids", ids, "--out", out], "float-quantized")


# --- INT4 tensors
def shape_values(vals):
    """Overwrite the data of the first *_shape tensor with vals (int32)."""
    def m(data):
        n, h = header_of(data)
        k = sorted(x for x in h if x.endswith("weight_shape"))[0]
        b = 8 + n + h[k]["data_offsets"][0]
        data[b:b + 8] = struct.pack("<2i", *vals)
        return data
    return m


d = variant(k25, "i4_shape", mutate_st=shape_values((64, 100)))
expect_error("INT4 weight_shape disagrees", L + [d, "--ids", ids, "--out", out], "weight_shape")
d = variant(k25, "i4_scale", mutate_st=edit("experts.0.up_proj.weight_scale", reshape(lambda s: [s[1], s[0]])))
expect_error("INT4 scale shape disagrees", L + [d, "--ids", ids, "--out", out], "weight_scale")
d = variant(k25, "i4_dtype", mutate_st=edit("experts.0.gate_proj.weight_packed", lambda h, k: h[k].update(dtype="F32")))
expect_error("INT4 packed not I32", L + [d, "--ids", ids, "--out", out], "expected I32")


# --- in/32 not an integer: a tiny (expert width 48) with its experts rewritten as MXFP4 blocks
def experts_as_mx(t):
    for k in [x for x in t if ".mlp.experts." in x and x.endswith(".weight")]:
        r, c = t.pop(k)[1]
        g = -(-c // 32)
        t[k + "_blocks"] = ["U8", [r, g, 16], bytes(r * g * 16)]
        t[k + "_scales"] = ["U8", [r, g], bytes([127]) * (r * g)]


d = variant(tiny, "in_not_32", set_qc(frontier_qc()), rebuild(experts_as_mx))
expect_error("in/32 not an integer (stored MXFP4)", L + [d, "--ids", ids, "--out", out], "multiple of")
# --- quantize and --quantize-experts
q = ["quantize"]
expect_error("quantize: in/32 not an integer", q + [tiny, os.path.join(W, "q1"), "--experts", "mxfp4"], "multiple of")
expect_error("quantize: missing --experts", q + [bf16, os.path.join(W, "q2")], "--experts")
expect_error("quantize: --experts nf4", q + [bf16, os.path.join(W, "q3"), "--experts", "nf4"], "nf4")
expect_error("quantize: --attention mxfp4", q + [bf16, os.path.join(W, "q4"), "--experts", "mxfp4", "--attention", "mxfp4"],
             "--attention")
expect_error("quantize: OUT_DIR is IN_DIR", q + [bf16, bf16, "--experts", "mxfp4"], "input directory")
expect_error("quantize: missing IN_DIR", q + [os.path.join(W, "nope"), os.path.join(W, "q5"), "--experts", "mxfp4"])
expect_error("quantize: unknown option", q + [bf16, os.path.join(W, "q6"), "--experts", "mxfp4", "--bogus"])
expect_error("quantize: bad input checkpoint", q + [os.path.join(W, "blk_shape"), os.path.join(W, "q7"), "--experts", "mxfp4"],
             "weight_blocks")
expect_error("--quantize-experts on width 48", ["run", tiny, "--ids", ids, "-n", "1", "--quantize-experts", "mxfp4"],
             "multiples of 32")
expect_error("--quantize-experts int8", ["run", bf16, "--ids", ids, "--quantize-experts", "int8"], "int8")
expect_error("bench --quantize-experts int8", ["bench", "--preset", "tiny", "--load-format", "dummy", "--quantize-experts", "int8"])

CHECK.finish()
