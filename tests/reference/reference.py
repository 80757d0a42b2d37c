#!/usr/bin/python3
"""Independent float64 numpy reference for DeepSeek-V3-family checkpoints (frontier's test oracle).

Written from the model specification (/work/shared/docs/ARCH.md, cited as "ARCH §x"), not from
the C engine. Everything is computed in float64 from the checkpoint's stored values (BF16/F16/F32
exactly widened, FP8 E4M3 decoded and multiplied by its block scale). Activations are never
quantized: this is the exact math the engine approximates.

Supported: DeepseekV3ForCausalLM (model_type deepseek_v3 / kimi_k2), the text model of
KimiK25ForConditionalGeneration (fields in "text_config", tensors under "language_model."), and
the DSA (DeepSeek Sparse Attention, ARCH §5) families DeepseekV32ForCausalLM (deepseek_v32) and
GlmMoeDsaForCausalLM (glm_moe_dsa, GLM-5, with its per-layer full/shared indexer schedule).
MLA with or without q_lora, dense + noaux_tc sigmoid MoE with groups and shared experts, default
or YaRN RoPE (interleaved pairs), FP8 E4M3 block scaling (ARCH §7.2), and 4-bit linear weights:
OCP MXFP4 (`X.weight_blocks` + `X.weight_scales`, ARCH §7.4) under frontier's
quantization_config {"quant_method": "frontier", "format_by_group": {...}}, and compressed-tensors
pack-quantized INT4 (`X.weight_packed` + `_scale` + `_shape`, ARCH §7.3) for routed experts.
Anything else fails loudly (ReferenceError): DSA fields on a dense-attention architecture,
GLM-4.x GQA, other quantization methods, softmax routing, ... MTP layers (index >=
num_hidden_layers) are ignored.

Module use:
    m = Model("path/to/checkpoint")
    logits = m.logits(ids)                       # [n, vocab] float64, naive (prefill) form
    logits = m.logits(ids, form="absorbed", decode_from=1)
    gen = m.greedy(ids, 16)

CLI:
    reference.py DIR --ids 1,2,3 --out FILE [--dtype f32|f64] [--form naive|absorbed]
                     [--decode-from K] [--greedy N]
    reference.py --selftest [DIR ...]
"""
import argparse
import json
import math
import os
import re
import struct
import sys

import numpy as np


class ReferenceError(Exception):
    """Unsupported or malformed checkpoint/config: the reference refuses rather than guesses."""


# ---------------------------------------------------------------------------------------------
# Number formats (ARCH §7.1, §7.2)
# ---------------------------------------------------------------------------------------------

def _e4m3fn_value(b):
    """Decode one OCP E4M3 ("e4m3fn") byte: 1 sign, 4 exponent (bias 7), 3 mantissa.
    No infinities; S.1111.111 (0x7f, 0xff) is NaN; exponent 0 is subnormal (m/8 * 2^-6)."""
    sign = -1.0 if b & 0x80 else 1.0
    e = (b >> 3) & 0xF
    m = b & 0x7
    if e == 0xF and m == 0x7:
        return float("nan")
    if e == 0:
        return sign * (m / 8.0) * 2.0 ** (1 - 7)
    return sign * (1.0 + m / 8.0) * 2.0 ** (e - 7)


E4M3_LUT = np.array([_e4m3fn_value(b) for b in range(256)], dtype=np.float64)


def _e2m1_value(code):
    """Decode one OCP E2M1 nibble (ARCH §7.4): 1 sign, 2 exponent bits (bias 1), 1 mantissa bit.
    Exponent 0 is subnormal (m * 0.5); no infinities or NaN."""
    sign = -1.0 if code & 0x8 else 1.0
    e = (code >> 1) & 0x3
    m = code & 0x1
    if e == 0:
        return sign * m * 0.5
    return sign * (1.0 + m / 2.0) * 2.0 ** (e - 1)


E2M1_LUT = np.array([_e2m1_value(c) for c in range(16)], dtype=np.float64)


def e8m0_f64(e):
    """E8M0 scale bytes -> 2^(e - 127); 0xFF (NaN) is refused by the caller."""
    return np.ldexp(1.0, e.astype(np.int64) - 127)


def mxfp4_dequant(blocks, scales):
    """MXFP4 [out, in/32, 16] U8 blocks + [out, in/32] E8M0 scales -> float64 [out, in].
    Byte j of a block holds element 2j in its low nibble and 2j+1 in its high nibble."""
    R, G, _ = blocks.shape
    el = np.empty((R, G, 32), dtype=np.float64)
    el[:, :, 0::2] = E2M1_LUT[blocks & 0x0F]
    el[:, :, 1::2] = E2M1_LUT[blocks >> 4]
    return (el * e8m0_f64(scales)[:, :, None]).reshape(R, G * 32)


def int4_dequant(packed, scale_bf16, group=32):
    """compressed-tensors pack-quantized INT4 (ARCH §7.3): packed int32 [out, in/8], element k of a
    row in word k//8 at bits 4*(k%8), value u - 8; scale BF16 [out, in/group]."""
    R, W = packed.shape
    u = packed.astype(np.int64) & 0xFFFFFFFF
    nib = np.stack([(u >> (4 * i)) & 0xF for i in range(8)], axis=-1).reshape(R, W * 8)
    s = bf16_bits_to_f64(scale_bf16)
    return (nib - 8).astype(np.float64) * np.repeat(s, group, axis=1)


def bf16_bits_to_f64(u16):
    """BF16 is the top half of an IEEE binary32: widen exactly."""
    return (u16.astype(np.uint32) << 16).view(np.float32).astype(np.float64)


# safetensors dtype name -> (numpy raw dtype, bytes per element)
_ST_DTYPES = {
    "F64": ("<f8", 8), "F32": ("<f4", 4), "F16": ("<f2", 2), "BF16": ("<u2", 2),
    "F8_E4M3": ("u1", 1), "I64": ("<i8", 8), "I32": ("<i4", 4), "I16": ("<i2", 2),
    "I8": ("i1", 1), "U8": ("u1", 1), "U16": ("<u2", 2), "U32": ("<u4", 4), "U64": ("<u8", 8),
    "BOOL": ("u1", 1),
}


# ---------------------------------------------------------------------------------------------
# Safetensors reader (single file or sharded through model.safetensors.index.json)
# ---------------------------------------------------------------------------------------------

class SafeTensors:
    """Minimal reader: 8-byte little-endian header length, JSON header, raw data.
    Every tensor's byte range is checked against its dtype/shape and the file size."""

    def __init__(self, directory):
        self.dir = directory
        self.entries = {}  # name -> (path, dtype, shape, begin, end) absolute byte offsets
        index = os.path.join(directory, "model.safetensors.index.json")
        single = os.path.join(directory, "model.safetensors")
        if os.path.exists(index):
            with open(index) as f:
                wm = json.load(f).get("weight_map")
            if not isinstance(wm, dict) or not wm:
                raise ReferenceError(f"{index}: missing or empty weight_map")
            headers = {}
            for name, fname in wm.items():
                if fname not in headers:
                    headers[fname] = self._read_header(os.path.join(directory, fname))
                if name not in headers[fname]:
                    raise ReferenceError(f"{index}: {name} mapped to {fname} but not stored there")
                self.entries[name] = headers[fname][name]
            self.layout = f"sharded ({len(headers)} files)"
        elif os.path.exists(single):
            self.entries = self._read_header(single)
            self.layout = "single file"
        else:
            raise ReferenceError(f"{directory}: neither model.safetensors.index.json nor model.safetensors")

    @staticmethod
    def _read_header(path):
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) != 8:
                raise ReferenceError(f"{path}: shorter than the 8-byte header length")
            (n,) = struct.unpack("<Q", raw)
            if n > size - 8 or n > 100 * 1024 * 1024:
                raise ReferenceError(f"{path}: header length {n} does not fit the file ({size} bytes)")
            hdr = json.loads(f.read(n).decode("utf-8"))
        base = 8 + n
        out = {}
        for name, e in hdr.items():
            if name == "__metadata__":
                continue
            dt = e["dtype"]
            if dt not in _ST_DTYPES:
                raise ReferenceError(f"{path}: {name}: unsupported dtype {dt}")
            shape = [int(s) for s in e["shape"]]
            b, en = (int(v) for v in e["data_offsets"])
            want = int(np.prod(shape, dtype=np.int64)) * _ST_DTYPES[dt][1]
            if en - b != want or b < 0 or base + en > size:
                raise ReferenceError(f"{path}: {name}: byte range [{b},{en}) does not match "
                                     f"{dt}{shape} or the file size")
            out[name] = (path, dt, shape, base + b, base + en)
        return out

    def has(self, name):
        return name in self.entries

    def dtype(self, name):
        return self.entries[name][1]

    def shape(self, name):
        return list(self.entries[name][2])

    def raw(self, name):
        """The stored elements with their own numpy dtype (BF16 as uint16 bits, FP8 as uint8)."""
        if name not in self.entries:
            raise ReferenceError(f"tensor {name} missing from the checkpoint")
        path, dt, shape, b, e = self.entries[name]
        with open(path, "rb") as f:
            f.seek(b)
            buf = f.read(e - b)
        return np.frombuffer(buf, dtype=_ST_DTYPES[dt][0]).reshape(shape)

    def linear_f64(self, name, block=None):
        """A linear weight `name` ("X.weight") in whichever form it is stored, with that form:
        ("plain"|"fp8", values) from `X.weight`, ("mxfp4", values) from `X.weight_blocks` +
        `X.weight_scales`, ("int4", values) from `X.weight_packed` + `X.weight_scale` +
        `X.weight_shape`. Companion shapes and dtypes are checked against the weight."""
        forms = [f for f, n in (("plain", name), ("mxfp4", name + "_blocks"), ("int4", name + "_packed"))
                 if self.has(n)]
        if len(forms) != 1:
            raise ReferenceError(f"{name}: stored in {len(forms)} forms {forms} (want exactly one)")
        form = forms[0]
        if form == "plain":
            return ("fp8" if self.dtype(name) == "F8_E4M3" else "plain"), self.f64(name, block)
        if form == "mxfp4":
            bn, sn = name + "_blocks", name + "_scales"
            b = self.raw(bn)
            if self.dtype(bn) != "U8" or b.ndim != 3 or b.shape[2] != 16:
                raise ReferenceError(f"{bn}: {self.dtype(bn)}{list(b.shape)}, want U8 [out, in/32, 16]")
            if not self.has(sn):
                raise ReferenceError(f"{bn} without {sn}")
            sc = self.raw(sn)
            if self.dtype(sn) != "U8" or list(sc.shape) != list(b.shape[:2]):
                raise ReferenceError(f"{sn}: {self.dtype(sn)}{list(sc.shape)}, want U8 {list(b.shape[:2])}")
            if (sc == 0xFF).any():
                raise ReferenceError(f"{sn}: E8M0 NaN scale (0xff)")
            return "mxfp4", mxfp4_dequant(b, sc)
        pn, gn, hn = name + "_packed", name + "_scale", name + "_shape"
        pk = self.raw(pn)
        if self.dtype(pn) != "I32" or pk.ndim != 2:
            raise ReferenceError(f"{pn}: {self.dtype(pn)}{list(pk.shape)}, want I32 [out, in/8]")
        if not (self.has(gn) and self.has(hn)):
            raise ReferenceError(f"{pn} without {gn} / {hn}")
        R, K = pk.shape[0], pk.shape[1] * 8
        shp = [int(v) for v in self.raw(hn)]
        if self.dtype(hn) != "I32" or shp != [R, K]:
            raise ReferenceError(f"{hn}: {shp}, want [{R}, {K}] from {pn}")
        if K % 32:
            raise ReferenceError(f"{pn}: in = {K} not a multiple of the group 32")
        sc = self.raw(gn)
        if self.dtype(gn) != "BF16" or list(sc.shape) != [R, K // 32]:
            raise ReferenceError(f"{gn}: {self.dtype(gn)}{list(sc.shape)}, want BF16 [{R}, {K // 32}]")
        return "int4", int4_dequant(pk, sc)

    def f64(self, name, block=None):
        """Tensor widened to float64. FP8 E4M3 tensors are dequantized with the sibling
        `<name>_scale_inv` (F32 multipliers, one per block of `block` = (rows, cols)); ARCH §7.2:
        W[r, c] = fp8[r, c] * scale_inv[r // br, c // bc], partial edge blocks cropped."""
        dt = self.dtype(name)
        a = self.raw(name)
        if dt == "BF16":
            return bf16_bits_to_f64(a)
        if dt == "F8_E4M3":
            w = E4M3_LUT[a]
            if np.isnan(w).any():
                raise ReferenceError(f"{name}: FP8 NaN code (0x7f/0xff) in the weights")
            sname = name + "_scale_inv"
            if not self.has(sname):
                raise ReferenceError(f"{name} is F8_E4M3 but {sname} is missing")
            if block is None:
                raise ReferenceError(f"{name} is F8_E4M3 but config has no "
                                     "quantization_config.weight_block_size")
            if w.ndim != 2:
                raise ReferenceError(f"{name}: block-scaled FP8 must be 2-D, got {list(w.shape)}")
            br, bc = block
            rows, cols = w.shape
            want = [-(-rows // br), -(-cols // bc)]
            s = self.f64(sname)
            if list(s.shape) != want:
                raise ReferenceError(f"{sname}: shape {list(s.shape)}, expected {want} for "
                                     f"{[rows, cols]} with block {[br, bc]}")
            full = np.repeat(np.repeat(s, br, axis=0), bc, axis=1)[:rows, :cols]
            return w * full
        if dt in ("F64", "F32", "F16"):
            return a.astype(np.float64)
        raise ReferenceError(f"{name}: dtype {dt} is not a floating tensor")


# ---------------------------------------------------------------------------------------------
# Config (ARCH §2.1, §2.3, §4.7, §4.8, §9)
# ---------------------------------------------------------------------------------------------

def yarn_get_mscale(scale, mscale=1.0):
    """0.1 * mscale * ln(scale) + 1 for scale > 1, else 1 (ARCH §0, §4.7)."""
    if scale <= 1.0:
        return 1.0
    return 0.1 * mscale * math.log(scale) + 1.0


class Config:
    def __init__(self, directory):
        path = os.path.join(directory, "config.json")
        with open(path) as f:
            top = json.load(f)
        archs = top.get("architectures") or []
        arch = archs[0] if archs else None
        if arch == "KimiK25ForConditionalGeneration":
            # ARCH §2.3, §3.3, §9.9: text model fields in text_config, tensors under language_model.
            c = top.get("text_config")
            if not isinstance(c, dict):
                raise ReferenceError(f"{path}: KimiK25ForConditionalGeneration without text_config")
            self.prefix = "language_model."
            quant = c.get("quantization_config") or top.get("quantization_config")
        elif arch in ("DeepseekV3ForCausalLM", "DeepseekV32ForCausalLM", "GlmMoeDsaForCausalLM"):
            c = top
            self.prefix = ""
            quant = c.get("quantization_config")
        else:
            raise ReferenceError(f"{path}: unsupported architectures {archs}")
        self.arch = arch
        mt = c.get("model_type")
        want_mt = {"DeepseekV32ForCausalLM": ("deepseek_v32",), "GlmMoeDsaForCausalLM": ("glm_moe_dsa",)}
        if mt not in want_mt.get(arch, ("deepseek_v3", "kimi_k2")):
            raise ReferenceError(f"{path}: unsupported text model_type {mt!r} for {arch}")
        self.model_type = mt
        # ARCH §2.2 / §5: the architecture (with its model_type) marks DSA.
        self.dsa = arch in want_mt
        self.raw = c

        def req(k):
            if c.get(k) is None:
                raise ReferenceError(f"{path}: required field {k} missing")
            return c[k]

        # Things this reference does not implement: refuse loudly. DSA fields belong to the
        # DSA architectures only.
        if not self.dsa:
            for k in ("index_topk", "index_n_heads", "index_head_dim", "indexer_types"):
                if k in c:
                    raise ReferenceError(f"{path}: DSA indexer field {k} on {arch} (not a DSA architecture)")
        if c.get("scoring_func", "sigmoid") != "sigmoid":
            raise ReferenceError(f"{path}: scoring_func {c.get('scoring_func')} (only sigmoid)")
        if c.get("topk_method", "noaux_tc") != "noaux_tc":
            raise ReferenceError(f"{path}: topk_method {c.get('topk_method')} (only noaux_tc)")
        if c.get("hidden_act", "silu") != "silu":
            raise ReferenceError(f"{path}: hidden_act {c.get('hidden_act')} (only silu)")
        if c.get("attention_bias", False):
            raise ReferenceError(f"{path}: attention_bias true is not part of DeepSeek-V3 MLA")
        if c.get("rope_interleave", True) is False:
            raise ReferenceError(f"{path}: rope_interleave false (DeepSeek MLA is interleaved, ARCH §4.9)")

        self.vocab_size = int(req("vocab_size"))
        self.hidden_size = int(req("hidden_size"))
        self.num_hidden_layers = int(req("num_hidden_layers"))
        self.num_heads = int(req("num_attention_heads"))
        self.q_lora_rank = c.get("q_lora_rank")          # None/0 -> q_proj
        if self.q_lora_rank == 0:
            self.q_lora_rank = None
        self.kv_lora_rank = int(req("kv_lora_rank"))
        self.qk_nope = int(req("qk_nope_head_dim"))
        self.qk_rope = int(req("qk_rope_head_dim"))
        self.v_head = int(req("v_head_dim"))
        if self.qk_rope % 2:
            raise ReferenceError(f"{path}: qk_rope_head_dim {self.qk_rope} is odd")
        self.intermediate_size = c.get("intermediate_size")
        self.moe_intermediate_size = c.get("moe_intermediate_size")
        self.n_routed_experts = c.get("n_routed_experts") or 0
        self.n_shared_experts = c.get("n_shared_experts") or 0
        self.num_experts_per_tok = c.get("num_experts_per_tok")
        self.n_group = c.get("n_group") or 1
        self.topk_group = c.get("topk_group") or self.n_group
        self.first_k_dense_replace = c.get("first_k_dense_replace") or 0
        self.moe_layer_freq = c.get("moe_layer_freq") or 1
        self.norm_topk_prob = bool(c.get("norm_topk_prob", False))
        self.routed_scaling_factor = float(c.get("routed_scaling_factor", 1.0))
        self.rms_norm_eps = float(req("rms_norm_eps"))
        self.tie_word_embeddings = bool(c.get("tie_word_embeddings", top.get("tie_word_embeddings", False)))
        if self.n_routed_experts:
            if not self.num_experts_per_tok or not self.moe_intermediate_size:
                raise ReferenceError(f"{path}: MoE without num_experts_per_tok/moe_intermediate_size")
            if self.n_routed_experts % self.n_group:
                raise ReferenceError(f"{path}: n_routed_experts {self.n_routed_experts} not divisible "
                                     f"by n_group {self.n_group}")
            if self.n_group > 1 and self.n_routed_experts // self.n_group < 2:
                raise ReferenceError(f"{path}: group score needs >= 2 experts per group")
            if not 1 <= self.topk_group <= self.n_group:
                raise ReferenceError(f"{path}: topk_group {self.topk_group} out of [1, n_group]")
            if self.num_experts_per_tok > (self.n_routed_experts // self.n_group) * self.topk_group:
                raise ReferenceError(f"{path}: num_experts_per_tok exceeds the experts in kept groups")

        # quantization: the stored form each module group's linear weights may have.
        # fp8 (ARCH §7.2): any linear weight plain or block FP8. compressed-tensors (ARCH §7.3):
        # routed experts INT4, the rest plain. frontier: format_by_group names each group.
        self.block = None
        groups = ("attention", "dense", "shared_experts", "experts")
        self.group_forms = {g: {"plain"} for g in groups}
        if quant:
            qm = quant.get("quant_method")
            if qm == "fp8":
                self.group_forms = {g: {"plain", "fp8"} for g in groups}
                self._fp8_block(quant, path)
            elif qm == "compressed-tensors":
                if quant.get("format") != "pack-quantized":
                    raise ReferenceError(f"{path}: compressed-tensors format {quant.get('format')!r}")
                cg = quant.get("config_groups") or {}
                if len(cg) != 1:
                    raise ReferenceError(f"{path}: compressed-tensors with {len(cg)} config groups (want 1)")
                wq = list(cg.values())[0].get("weights") or {}
                want = {"num_bits": 4, "type": "int", "symmetric": True, "strategy": "group", "group_size": 32}
                if any(wq.get(k) != v for k, v in want.items()) or wq.get("dynamic"):
                    raise ReferenceError(f"{path}: compressed-tensors weights {wq} (only 4-bit symmetric int, group 32)")
                if list(cg.values())[0].get("input_activations"):
                    raise ReferenceError(f"{path}: compressed-tensors activation quantization")
                self.group_forms["experts"] = {"int4"}
            elif qm == "frontier":
                fg = quant.get("format_by_group")
                if not isinstance(fg, dict):
                    raise ReferenceError(f"{path}: frontier quantization_config without format_by_group")
                form_of = {"bf16": "plain", "fp8": "fp8", "mxfp4": "mxfp4", "int4": "int4"}
                for g, f in fg.items():
                    if g not in groups or f not in form_of:
                        raise ReferenceError(f"{path}: format_by_group {g!r}: {f!r} not understood")
                    self.group_forms[g] = {form_of[f]}
                if any("fp8" in v for v in self.group_forms.values()):
                    self._fp8_block(quant, path)
                if quant.get("group_size", 32) != 32:
                    raise ReferenceError(f"{path}: 4-bit group_size {quant.get('group_size')} (only 32)")
            else:
                raise ReferenceError(f"{path}: quant_method {qm!r} not supported "
                                     "(fp8, compressed-tensors, frontier)")

        self._parse_rope(c, path)
        self._parse_dsa(c, path)

    def _parse_dsa(self, c, path):
        """ARCH §2.2, §2.4, §5: indexer sizes, its RoPE layout and which layers run their own
        indexer ("full") or reuse the nearest earlier full layer's selection ("shared")."""
        n = self.num_hidden_layers
        self.index_full = [False] * n
        if not self.dsa:
            return
        for k in ("index_n_heads", "index_head_dim", "index_topk"):
            if not isinstance(c.get(k), int) or c[k] < 1:
                raise ReferenceError(f"{path}: DSA needs a positive integer {k}")
        self.index_n_heads = c["index_n_heads"]
        self.index_head_dim = c["index_head_dim"]
        self.index_topk = c["index_topk"]
        if self.index_head_dim < self.qk_rope:
            raise ReferenceError(f"{path}: index_head_dim {self.index_head_dim} < qk_rope_head_dim {self.qk_rope}")
        if not self.q_lora_rank:
            raise ReferenceError(f"{path}: DSA indexer queries come from the q latent: q_lora_rank needed")
        # ARCH §4.9: DeepSeek-V3.2's indexer RoPE is half-split, GLM-5's is interleaved.
        self.index_rope_interleaved = bool(c.get("indexer_rope_interleave", self.model_type == "glm_moe_dsa"))
        types = c.get("indexer_types")
        pattern = c.get("index_topk_pattern")
        if types is not None:
            if not isinstance(types, list) or any(t not in ("full", "shared") for t in types):
                raise ReferenceError(f"{path}: indexer_types must list 'full' / 'shared'")
            kinds = [t == "full" for t in types]
        elif pattern is not None:
            if not isinstance(pattern, str) or any(ch not in "FS" for ch in pattern):
                raise ReferenceError(f"{path}: index_topk_pattern must be a string of F / S")
            kinds = [ch == "F" for ch in pattern]
        else:
            # ARCH §2.4: full iff max(i - offset + 1, 0) mod freq == 0 (freq 1: every layer)
            freq = int(c.get("index_topk_freq") or 1)
            off = int(c.get("index_skip_topk_offset") or 0)
            kinds = [max(i - off + 1, 0) % freq == 0 for i in range(n)]
        n_mtp = int(c.get("num_nextn_predict_layers") or 0)
        if len(kinds) not in (n, n + n_mtp):
            raise ReferenceError(f"{path}: indexer schedule has {len(kinds)} entries for {n} layers")
        if not all(kinds[n:]):
            raise ReferenceError(f"{path}: shared MTP indexer layers are not supported")
        if not kinds[0]:
            raise ReferenceError(f"{path}: layer 0 is 'shared' but no earlier layer has an indexer")
        self.index_full = kinds[:n]

    def _fp8_block(self, quant, path):
        if quant.get("fmt", "e4m3") != "e4m3":
            raise ReferenceError(f"{path}: fp8 fmt {quant.get('fmt')!r} (only e4m3)")
        wb = quant.get("weight_block_size")
        if not (isinstance(wb, list) and len(wb) == 2 and all(int(v) > 0 for v in wb)):
            raise ReferenceError(f"{path}: fp8 without a 2-element weight_block_size")
        self.block = (int(wb[0]), int(wb[1]))

    def _parse_rope(self, c, path):
        """rope_theta + rope_scaling (type/rope_type yarn) or the newer rope_parameters spelling."""
        rp = c.get("rope_parameters")
        rs = c.get("rope_scaling")
        if rp:
            if rs and (rs.get("type") or rs.get("rope_type")) != (rp.get("rope_type") or rp.get("type")):
                raise ReferenceError(f"{path}: rope_parameters and rope_scaling disagree")
            p = dict(rp)
            theta = p.get("rope_theta", c.get("rope_theta"))
        else:
            p = dict(rs) if rs else {}
            theta = c.get("rope_theta")
        if theta is None:
            theta = 10000.0  # transformers' DeepseekV3Config default
        self.rope_theta = float(theta)
        rtype = p.get("rope_type") or p.get("type") or "default"
        self.rope_type = rtype
        if rtype == "default":
            self.yarn = None
        elif rtype == "yarn":
            if "factor" not in p or "original_max_position_embeddings" not in p:
                raise ReferenceError(f"{path}: yarn needs factor and original_max_position_embeddings")
            self.yarn = {
                "factor": float(p["factor"]),
                "original_max_position_embeddings": float(p["original_max_position_embeddings"]),
                "beta_fast": float(p.get("beta_fast", 32.0)),
                "beta_slow": float(p.get("beta_slow", 1.0)),
                "mscale": float(p.get("mscale", 1.0)),
                "mscale_all_dim": float(p.get("mscale_all_dim", 0.0)),
            }
            if "attention_factor" in p:
                raise ReferenceError(f"{path}: explicit yarn attention_factor not supported")
        else:
            raise ReferenceError(f"{path}: rope type {rtype!r} not supported (default or yarn)")

    def is_moe_layer(self, layer):
        # ARCH §9.1
        return (self.n_routed_experts > 0 and layer >= self.first_k_dense_replace
                and layer % self.moe_layer_freq == 0)

    def softmax_scale(self):
        # ARCH §4.7: 1/sqrt(d_n + d_r), times m^2 with m = 0.1*mscale_all_dim*ln(f) + 1 under YaRN.
        s = 1.0 / math.sqrt(self.qk_nope + self.qk_rope)
        if self.yarn and self.yarn["mscale_all_dim"]:
            m = yarn_get_mscale(self.yarn["factor"], self.yarn["mscale_all_dim"])
            s *= m * m
        return s

    def rope_inv_freq(self):
        # ARCH §4.8 (pair index i = 0..d/2-1)
        d = self.qk_rope
        i = np.arange(d // 2, dtype=np.float64)
        freq = self.rope_theta ** (-2.0 * i / d)
        if self.yarn:
            y = self.yarn
            f, L0 = y["factor"], y["original_max_position_embeddings"]

            def corr(n_rot):
                return d * math.log(L0 / (2 * math.pi * n_rot)) / (2 * math.log(self.rope_theta))

            low = max(math.floor(corr(y["beta_fast"])), 0)
            high = min(math.ceil(corr(y["beta_slow"])), d - 1)
            if low == high:
                high += 0.001
            ramp = np.clip((i - low) / (high - low), 0.0, 1.0)
            keep = 1.0 - ramp
            freq = (freq / f) * (1.0 - keep) + freq * keep
        return freq

    def rope_attention_factor(self):
        """Multiplier on cos/sin (hence on both q_pe and k_pe). ARCH §4.7: the YaRN
        attention_factor = mscale(f, mscale) / mscale(f, mscale_all_dim), which is 1 for the real
        models (both 1.0). Defaults mscale 1, mscale_all_dim 0 as in vLLM's DeepSeek YaRN."""
        if not self.yarn:
            return 1.0
        y = self.yarn
        return yarn_get_mscale(y["factor"], y["mscale"]) / yarn_get_mscale(y["factor"], y["mscale_all_dim"])


# ---------------------------------------------------------------------------------------------
# Math helpers
# ---------------------------------------------------------------------------------------------

def rms_norm(x, w, eps):
    # ARCH §4.2: w * x / sqrt(mean(x^2) + eps), over the last axis
    return w * (x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps))


def silu(z):
    return z / (1.0 + np.exp(-z))


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def swiglu(x, wg, wu, wd):
    # ARCH §4.3: down(silu(gate x) * up x); weights are [out, in]
    return (silu(x @ wg.T) * (x @ wu.T)) @ wd.T


def rope_interleaved(x, pos, inv_freq, att_factor):
    """ARCH §4.9: rotate pairs (x[2i], x[2i+1]) by angle pos*inv_freq[i].
    x: [n, ..., d]; pos: [n]. cos/sin carry the YaRN attention factor (ARCH §4.7)."""
    ang = pos.astype(np.float64)[:, None] * inv_freq[None, :]          # [n, d/2]
    shape = (x.shape[0],) + (1,) * (x.ndim - 2) + (ang.shape[1],)
    cos = (np.cos(ang) * att_factor).reshape(shape)
    sin = (np.sin(ang) * att_factor).reshape(shape)
    x0 = x[..., 0::2]
    x1 = x[..., 1::2]
    y = np.empty_like(x)
    y[..., 0::2] = x0 * cos - x1 * sin
    y[..., 1::2] = x0 * sin + x1 * cos
    return y


def rope_half_split(x, pos, inv_freq, att_factor):
    """ARCH §4.9 (non-interleaved, "NeoX"): with half = d/2, rotate pairs (x[i], x[i+half]) by
    angle pos*inv_freq[i]. x: [n, ..., d]; pos: [n]."""
    half = x.shape[-1] // 2
    ang = pos.astype(np.float64)[:, None] * inv_freq[None, :]
    shape = (x.shape[0],) + (1,) * (x.ndim - 2) + (ang.shape[1],)
    cos = (np.cos(ang) * att_factor).reshape(shape)
    sin = (np.sin(ang) * att_factor).reshape(shape)
    a, b = x[..., :half], x[..., half:]
    return np.concatenate([a * cos - b * sin, a * sin + b * cos], axis=-1)


def layer_norm(x, w, b, eps):
    # ARCH §4.2: the indexer's k_norm is a LayerNorm with weight and bias
    mu = np.mean(x, axis=-1, keepdims=True)
    var = np.mean((x - mu) ** 2, axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def softmax_last(s):
    m = np.max(s, axis=-1, keepdims=True)
    e = np.exp(s - m)
    return e / np.sum(e, axis=-1, keepdims=True)


def route_noaux_tc(x, wg, bias, cfg):
    """ARCH §0 / §4.4 sigmoid noaux_tc routing for rows x [n, D].
    Returns (idx [n, k] int, weights [n, k] float64). Selection uses biased scores, group score =
    sum of top-2 biased scores in the group, non-kept groups get -inf; ties go to the lower index
    (stable sorts). Weights are the unbiased scores, renormalized (+1e-20) when norm_topk_prob,
    times routed_scaling_factor."""
    n = x.shape[0]
    E = cfg.n_routed_experts
    k = cfg.num_experts_per_tok
    s = sigmoid(x @ wg.T)                                   # [n, E] unbiased scores
    b = s + bias[None, :]                                   # biased, selection only
    if cfg.n_group > 1:
        G = cfg.n_group
        per = E // G
        bg = b.reshape(n, G, per)
        gscore = np.sort(bg, axis=-1)[..., -2:].sum(axis=-1)            # [n, G]
        keep_g = np.argsort(-gscore, axis=-1, kind="stable")[:, :cfg.topk_group]
        keep = np.zeros((n, G), dtype=bool)
        keep[np.arange(n)[:, None], keep_g] = True
        b = np.where(np.repeat(keep, per, axis=1), b, -np.inf)
    idx = np.argsort(-b, axis=-1, kind="stable")[:, :k]
    w = np.take_along_axis(s, idx, axis=-1)
    if cfg.norm_topk_prob:
        w = w / (w.sum(axis=-1, keepdims=True) + 1e-20)
    w = w * cfg.routed_scaling_factor
    return idx, w


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------

class Cache:
    """Per-layer MLA latent cache (ARCH §4.6): normalized c_kv [t, r_kv] and RoPE'd k_pe [t, d_r];
    for DSA also the indexer keys [t, D_I] (LayerNorm'd, RoPE'd) of the layers with an indexer."""

    def __init__(self, n_layers, r_kv, d_r, start=0, d_index=0):
        self.ckv = [np.zeros((0, r_kv)) for _ in range(n_layers)]
        self.kpe = [np.zeros((0, d_r)) for _ in range(n_layers)]
        self.kidx = [np.zeros((0, d_index)) for _ in range(n_layers)]
        self.start = start          # position of the first cached row (0 except in self-tests)
        self.length = start         # position of the next token


class Model:
    def __init__(self, directory):
        self.dir = directory
        self.cfg = cfg = Config(directory)
        self.st = st = SafeTensors(directory)
        p = cfg.prefix
        D = cfg.hidden_size
        H = cfg.num_heads
        dn, dr, dv, rkv = cfg.qk_nope, cfg.qk_rope, cfg.v_head, cfg.kv_lora_rank

        used = set()

        def get(name, shape, group=None):
            """Tensor p+name of the given shape. group: the module group of a linear weight,
            which may be stored in a quantized form the config declares for that group."""
            full = p + name
            used.add(full)
            used.add(full + "_scale_inv")
            if group is None:
                if not st.has(full):
                    raise ReferenceError(f"tensor {full} missing from the checkpoint")
                a = st.f64(full, cfg.block)
            else:
                for suf in ("_blocks", "_scales", "_packed", "_scale", "_shape"):
                    used.add(full + suf)
                if not any(st.has(full + s) for s in ("", "_blocks", "_packed")):
                    raise ReferenceError(f"tensor {full} missing from the checkpoint")
                form, a = st.linear_f64(full, cfg.block)
                if form not in cfg.group_forms[group]:
                    raise ReferenceError(f"{full}: stored as {form}, but quantization_config allows "
                                         f"{sorted(cfg.group_forms[group])} for {group}")
            if list(a.shape) != list(shape):
                raise ReferenceError(f"{full}: shape {list(a.shape)}, expected {list(shape)}")
            return a

        self.embed = get("model.embed_tokens.weight", [cfg.vocab_size, D])
        self.norm = get("model.norm.weight", [D])
        if cfg.tie_word_embeddings:
            self.lm_head = self.embed
            if st.has(p + "lm_head.weight"):   # tolerated only as an exact copy
                if not np.array_equal(get("lm_head.weight", [cfg.vocab_size, D]), self.embed):
                    raise ReferenceError("tie_word_embeddings is true but lm_head.weight differs "
                                         "from embed_tokens")
        else:
            self.lm_head = get("lm_head.weight", [cfg.vocab_size, D])
        self.layers = []
        for L in range(cfg.num_hidden_layers):   # MTP layers (>= num_hidden_layers) ignored
            q = f"model.layers.{L}."
            lw = {"in_norm": get(q + "input_layernorm.weight", [D]),
                  "post_norm": get(q + "post_attention_layernorm.weight", [D])}
            a = q + "self_attn."
            if cfg.q_lora_rank:
                rq = cfg.q_lora_rank
                lw["wqa"] = get(a + "q_a_proj.weight", [rq, D], "attention")
                lw["qa_norm"] = get(a + "q_a_layernorm.weight", [rq])
                lw["wqb"] = get(a + "q_b_proj.weight", [H * (dn + dr), rq], "attention")
            else:
                lw["wq"] = get(a + "q_proj.weight", [H * (dn + dr), D], "attention")
            lw["wkva"] = get(a + "kv_a_proj_with_mqa.weight", [rkv + dr, D], "attention")
            lw["kva_norm"] = get(a + "kv_a_layernorm.weight", [rkv])
            wkvb = get(a + "kv_b_proj.weight", [H * (dn + dv), rkv], "attention")
            lw["wkvb"] = wkvb
            # ARCH §3.1 / §4.6: view kv_b as [H, dn+dv, r_kv]; rows 0..dn-1 W_UK, then W_UV
            w3 = wkvb.reshape(H, dn + dv, rkv)
            lw["w_uk"] = w3[:, :dn, :]
            lw["w_uv"] = w3[:, dn:, :]
            lw["wo"] = get(a + "o_proj.weight", [D, H * dv], "attention")
            lw["indexer"] = cfg.dsa and cfg.index_full[L]
            if lw["indexer"]:
                # ARCH §3.2 / §3.4 (shapes), §7.2 (weights_proj never quantized)
                HI, DI, i = cfg.index_n_heads, cfg.index_head_dim, a + "indexer."
                lw["idx_wq"] = get(i + "wq_b.weight", [HI * DI, cfg.q_lora_rank], "attention")
                lw["idx_wk"] = get(i + "wk.weight", [DI, D], "attention")
                lw["idx_norm_w"] = get(i + "k_norm.weight", [DI])
                lw["idx_norm_b"] = get(i + "k_norm.bias", [DI])
                lw["idx_ww"] = get(i + "weights_proj.weight", [HI, D])
            m = q + "mlp."
            if cfg.is_moe_layer(L):
                E, I = cfg.n_routed_experts, cfg.moe_intermediate_size
                lw["moe"] = True
                lw["router"] = get(m + "gate.weight", [E, D])
                lw["bias"] = get(m + "gate.e_score_correction_bias", [E])
                lw["experts"] = [(get(f"{m}experts.{e}.gate_proj.weight", [I, D], "experts"),
                                  get(f"{m}experts.{e}.up_proj.weight", [I, D], "experts"),
                                  get(f"{m}experts.{e}.down_proj.weight", [D, I], "experts"))
                                 for e in range(E)]
                if cfg.n_shared_experts:
                    Is = I * cfg.n_shared_experts
                    lw["shared"] = (get(m + "shared_experts.gate_proj.weight", [Is, D], "shared_experts"),
                                    get(m + "shared_experts.up_proj.weight", [Is, D], "shared_experts"),
                                    get(m + "shared_experts.down_proj.weight", [D, Is], "shared_experts"))
                else:
                    lw["shared"] = None
            else:
                I = cfg.intermediate_size
                if not I:
                    raise ReferenceError("dense layer but intermediate_size missing")
                lw["moe"] = False
                lw["mlp"] = (get(m + "gate_proj.weight", [I, D], "dense"), get(m + "up_proj.weight", [I, D], "dense"),
                             get(m + "down_proj.weight", [D, I], "dense"))
            self.layers.append(lw)
        # Every main-model tensor must have been used: a leftover (say q_a_proj next to q_proj, or
        # an expert beyond n_routed_experts) means config and checkpoint disagree.
        main = [p + "model.embed_tokens.", p + "model.norm.", p + "lm_head."] + \
               [f"{p}model.layers.{L}." for L in range(cfg.num_hidden_layers)]
        extra = sorted(n for n in st.entries if n not in used and any(n.startswith(q) for q in main))
        n_mtp = int(cfg.raw.get("num_nextn_predict_layers") or 0)
        for n in st.entries:
            mm = re.match(re.escape(p) + r"model\.layers\.(\d+)\.", n)
            if mm and int(mm.group(1)) >= cfg.num_hidden_layers + n_mtp:
                extra.append(n)
        if extra:
            raise ReferenceError(f"{len(extra)} checkpoint tensor(s) the config does not account for, "
                                 f"e.g. {extra[0]}")
        self.inv_freq = cfg.rope_inv_freq()
        self.att_factor = cfg.rope_attention_factor()
        self.scale = cfg.softmax_scale()

    # -- blocks ---------------------------------------------------------------------------------

    def _indexer(self, lw, x, cq, pos, cache, layer):
        """DSA lightning indexer (ARCH §5) for new rows x [n, D] (attention-normed hidden) with q
        latents cq [n, r_q]: appends their keys to the layer's indexer cache and returns the
        selection [n, t] (bool) over all cached rows: for each query the top min(K, visible)
        visible keys by I(t, s) = sum_h w_h(t) * D_I^-1/2 * ReLU(q_h(t) . k(s)); ties go to the
        earlier key."""
        cfg = self.cfg
        n = x.shape[0]
        HI, DI, dr, K = cfg.index_n_heads, cfg.index_head_dim, cfg.qk_rope, cfg.index_topk
        rope = rope_interleaved if cfg.index_rope_interleaved else rope_half_split
        q = (cq @ lw["idx_wq"].T).reshape(n, HI, DI)                     # heads are [rope | nope]
        q = np.concatenate([rope(q[:, :, :dr], pos, self.inv_freq, self.att_factor), q[:, :, dr:]], axis=-1)
        k = layer_norm(x @ lw["idx_wk"].T, lw["idx_norm_w"], lw["idx_norm_b"], 1e-6)   # one key per token
        k = np.concatenate([rope(k[:, :dr], pos, self.inv_freq, self.att_factor), k[:, dr:]], axis=-1)
        keys = np.concatenate([cache.kidx[layer], k], axis=0)
        cache.kidx[layer] = keys
        w = (x @ lw["idx_ww"].T) * HI ** -0.5                           # [n, H_I]
        relu = np.maximum(np.einsum("nhd,td->nht", q, keys) * DI ** -0.5, 0.0)
        score = np.einsum("nh,nht->nt", w, relu)
        t = keys.shape[0]
        visible = (cache.start + np.arange(t))[None, :] <= pos[:, None]  # causal
        score = np.where(visible, score, -np.inf)
        order = np.argsort(-score, axis=-1, kind="stable")               # stable: earlier key first
        sel = np.zeros((n, t), dtype=bool)
        for i in range(n):
            take = min(K, int(visible[i].sum()))
            sel[i, order[i, :take]] = True
        return sel

    def _attention(self, lw, x, pos, cache, layer, form, sel=None):
        """MLA for new rows x [n, D] at absolute positions pos [n]; appends to the latent cache and
        attends causally over cache + new rows. form 'naive' = ARCH §4.5, 'absorbed' = ARCH §4.6.
        DSA: a layer with an indexer computes its own selection; a shared layer attends with
        `sel`, the selection of the nearest earlier full layer (ARCH §0). Returns (out, sel)."""
        cfg = self.cfg
        n = x.shape[0]
        H, dn, dr, dv, rkv = cfg.num_heads, cfg.qk_nope, cfg.qk_rope, cfg.v_head, cfg.kv_lora_rank
        eps = cfg.rms_norm_eps
        if cfg.q_lora_rank:
            cq = rms_norm(x @ lw["wqa"].T, lw["qa_norm"], eps)          # q_a_layernorm after q_a_proj
            q = cq @ lw["wqb"].T
        else:
            q = x @ lw["wq"].T
        if lw["indexer"]:
            sel = self._indexer(lw, x, cq, pos, cache, layer)
        q = q.reshape(n, H, dn + dr)                                     # per head [nope | rope]
        q_nope = q[:, :, :dn]
        q_pe = rope_interleaved(q[:, :, dn:], pos, self.inv_freq, self.att_factor)
        kv = x @ lw["wkva"].T                                            # [n, r_kv + d_r]
        ckv_new = rms_norm(kv[:, :rkv], lw["kva_norm"], eps)             # norm on latent only
        kpe_new = rope_interleaved(kv[:, rkv:], pos, self.inv_freq, self.att_factor)  # un-normed
        ckv = np.concatenate([cache.ckv[layer], ckv_new], axis=0)        # [t, r_kv]
        kpe = np.concatenate([cache.kpe[layer], kpe_new], axis=0)        # [t, d_r]
        cache.ckv[layer], cache.kpe[layer] = ckv, kpe
        t = ckv.shape[0]
        key_pos = cache.start + np.arange(t)
        # causal: row i (position pos[i]) sees keys s <= pos[i]
        mask = key_pos[None, :] > pos[:, None]                           # [n, t]
        if self.cfg.dsa:
            # ARCH §5: MLA restricted to the selected keys, every other key gets -inf
            if sel is None or sel.shape != mask.shape:
                raise ReferenceError(f"layer {layer}: shared DSA layer without a selection")
            mask = ~sel
        rope_scores = np.einsum("nhd,td->hnt", q_pe, kpe)
        if form == "naive":
            kvb = (ckv @ lw["wkvb"].T).reshape(t, H, dn + dv)
            k_nope, v = kvb[:, :, :dn], kvb[:, :, dn:]
            scores = np.einsum("nhd,thd->hnt", q_nope, k_nope) + rope_scores
            scores = np.where(mask[None], -np.inf, scores * self.scale)
            p = softmax_last(scores)                                     # [H, n, t]
            o = np.einsum("hnt,thd->nhd", p, v)                          # [n, H, dv]
        elif form == "absorbed":
            q_lat = np.einsum("nhd,hdr->nhr", q_nope, lw["w_uk"])        # W_UK^T q_nope
            scores = np.einsum("nhr,tr->hnt", q_lat, ckv) + rope_scores
            scores = np.where(mask[None], -np.inf, scores * self.scale)
            p = softmax_last(scores)
            o_lat = np.einsum("hnt,tr->nhr", p, ckv)                     # latent acts as V
            o = np.einsum("nhr,hdr->nhd", o_lat, lw["w_uv"])             # W_UV o_lat
        else:
            raise ValueError(form)
        return o.reshape(n, H * dv) @ lw["wo"].T, sel

    def _moe(self, lw, x):
        cfg = self.cfg
        idx, w = route_noaux_tc(x, lw["router"], lw["bias"], cfg)
        y = np.zeros_like(x)
        for e in np.unique(idx):
            rows, slot = np.nonzero(idx == e)
            g, u, d = lw["experts"][e]
            y[rows] += w[rows, slot][:, None] * swiglu(x[rows], g, u, d)
        if lw["shared"] is not None:
            y += swiglu(x, *lw["shared"])                                # added unweighted
        return y

    def forward(self, ids, cache, form="naive"):
        """Run new tokens `ids` at positions cache.length.. ; returns logits [n, vocab]."""
        cfg = self.cfg
        ids = np.asarray(ids, dtype=np.int64)
        if ids.ndim != 1 or ids.size == 0:
            raise ReferenceError("ids must be a non-empty 1-D list")
        if ids.min() < 0 or ids.max() >= cfg.vocab_size:
            raise ReferenceError(f"token id out of range [0, {cfg.vocab_size})")
        pos = np.arange(cache.length, cache.length + ids.size)
        x = self.embed[ids]
        sel = None                                                       # DSA selection of the last full layer
        for L, lw in enumerate(self.layers):                             # ARCH §4.1 pre-norm blocks
            h = rms_norm(x, lw["in_norm"], cfg.rms_norm_eps)
            a, sel = self._attention(lw, h, pos, cache, L, form, sel)
            x = x + a
            h = rms_norm(x, lw["post_norm"], cfg.rms_norm_eps)
            x = x + (self._moe(lw, h) if lw["moe"] else swiglu(h, *lw["mlp"]))
        cache.length += ids.size
        x = rms_norm(x, self.norm, cfg.rms_norm_eps)
        return x @ self.lm_head.T

    def new_cache(self, start=0):
        return Cache(len(self.layers), self.cfg.kv_lora_rank, self.cfg.qk_rope, start,
                     getattr(self.cfg, "index_head_dim", 0))

    def logits(self, ids, form="naive", decode_from=None):
        """Logits [n, vocab] for ids at positions 0..n-1. Positions < decode_from in one forward,
        the rest one token at a time through the cache (decode_from None = all at once)."""
        ids = list(ids)
        k = len(ids) if decode_from is None else int(decode_from)
        if not 1 <= k <= len(ids):
            raise ReferenceError(f"decode_from {k} out of [1, {len(ids)}]")
        cache = self.new_cache()
        out = [self.forward(ids[:k], cache, form)]
        for t in ids[k:]:
            out.append(self.forward([t], cache, form))
        return np.concatenate(out, axis=0)

    def greedy(self, ids, n, form="absorbed"):
        """n greedily generated ids after the prompt (argmax; lowest id wins ties)."""
        cache = self.new_cache()
        lg = self.forward(list(ids), cache, "naive")[-1]
        gen = []
        for _ in range(n):
            t = int(np.argmax(lg))
            gen.append(t)
            if len(gen) == n:
                break
            lg = self.forward([t], cache, form)[-1]
        return gen


def rel_err_rows(a, b):
    """Per-position relative L2 error ||a - b|| / ||b||."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return np.linalg.norm(a - b, axis=-1) / np.maximum(np.linalg.norm(b, axis=-1), 1e-300)


# ---------------------------------------------------------------------------------------------
# Self-test (guards the reference itself)
# ---------------------------------------------------------------------------------------------

def _check(cond, what, failures):
    print(("ok    " if cond else "FAIL  ") + what)
    if not cond:
        failures.append(what)


def selftest(dirs):
    import tempfile
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, here)
    import synth_np  # test-only writer of random checkpoints (this directory)

    failures = []
    # FP8 E4M3 decode: known codes (ARCH §7.1)
    known = {0x00: 0.0, 0x80: -0.0, 0x01: 2.0 ** -9, 0x07: 7 * 2.0 ** -9, 0x08: 2.0 ** -6,
             0x38: 1.0, 0xB8: -1.0, 0x7E: 448.0, 0xFE: -448.0, 0x3C: 1.5, 0x40: 2.0, 0x77: 240.0}
    _check(all(E4M3_LUT[k] == v for k, v in known.items()) and np.isnan(E4M3_LUT[0x7F])
           and np.isnan(E4M3_LUT[0xFF]) and np.isfinite(np.delete(E4M3_LUT, [0x7F, 0xFF])).all(),
           "FP8 E4M3 decode table (subnormals, 448 max, 0x7f/0xff NaN)", failures)
    # BF16 widening
    bits = np.array([0x3F80, 0xC000, 0x0001, 0x7F7F], dtype=np.uint16)
    _check(np.array_equal(bf16_bits_to_f64(bits), np.array([1.0, -2.0, 2.0 ** -133, 3.3895313892515355e38])),
           "BF16 widening", failures)
    # MXFP4 (ARCH §7.4): E2M1 codes, E8M0 scales, element 2j in the low nibble of byte j
    mag = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]
    _check(list(E2M1_LUT[:8]) == mag and list(-E2M1_LUT[8:]) == mag and math.copysign(1.0, E2M1_LUT[8]) < 0,
           "E2M1 decode table (0, 0.5 .. 6; code 8 is -0)", failures)
    _check(list(e8m0_f64(np.array([127, 0, 254, 130]))) == [1.0, 2.0 ** -127, 2.0 ** 127, 8.0],
           "E8M0 scales 2^(e-127)", failures)
    blk = np.zeros((1, 1, 16), dtype=np.uint8)
    blk[0, 0, 0], blk[0, 0, 15] = 0x21, 0xF7                 # e0 = 0.5, e1 = 1.0, e30 = 6, e31 = -6
    dq = mxfp4_dequant(blk, np.array([[128]], dtype=np.uint8))
    _check(list(dq[0, [0, 1, 2, 30, 31]]) == [1.0, 2.0, 0.0, 12.0, -12.0], "MXFP4 nibble order and scale", failures)
    # INT4 (ARCH §7.3): element k in word k//8 at bits 4*(k%8), value u - 8, BF16 scale per 32
    pk = np.array([[0x76543210, 0xFEDCBA98, 0x88888888, 0x88888888]], dtype=np.uint32).view(np.int32)
    dq = int4_dequant(pk, np.array([[0x4000]], dtype=np.uint16))   # scale 2.0
    _check(list(dq[0, :16]) == [2.0 * (k - 8) for k in range(16)] and not dq[0, 16:].any(),
           "INT4 nibble order, offset 8 and group scale", failures)

    # YaRN numbers quoted in ARCH §4.7 / §4.8 (d = 64, L0 = 4096)
    class _C(Config):
        def __init__(self, theta, f, bf, bs, msad):
            self.qk_nope, self.qk_rope, self.rope_theta = 128, 64, theta
            self.yarn = {"factor": f, "original_max_position_embeddings": 4096.0, "beta_fast": bf,
                         "beta_slow": bs, "mscale": 1.0, "mscale_all_dim": msad}

    def lowhigh(c):
        # read low/high back from the implementation: pairs i <= low keep theta^(-2i/d) exactly,
        # pairs i >= high are exactly divided by the factor (ARCH §4.8 ramp)
        f = c.rope_inv_freq()
        d = c.qk_rope
        base = c.rope_theta ** (-2.0 * np.arange(d // 2) / d)
        kept = [i for i in range(d // 2) if f[i] == base[i]]
        interp = [i for i in range(d // 2) if f[i] == base[i] / c.yarn["factor"]]
        low, high = kept[-1], interp[0]
        if kept != list(range(low + 1)) or interp != list(range(high, d // 2)):
            return None
        return low, high

    ds, k2, k25 = _C(1e4, 40.0, 32.0, 1.0, 1.0), _C(5e4, 32.0, 1.0, 1.0, 1.0), _C(5e4, 64.0, 32.0, 1.0, 1.0)
    _check(lowhigh(ds) == (10, 23) and lowhigh(k2) == (19, 20) and lowhigh(k25) == (8, 20),
           "YaRN inv_freq ramp: low/high 10/23, 19/20, 8/20 (ARCH §4.8)", failures)
    _check(abs(ds.softmax_scale() - 0.135234) < 5e-7 and abs(k2.softmax_scale() - 0.130861) < 5e-7
           and abs(k25.softmax_scale() - 0.144680) < 5e-7, "YaRN softmax scale with mscale^2 (ARCH §4.7)",
           failures)
    _check(ds.rope_attention_factor() == 1.0 and k25.rope_attention_factor() == 1.0,
           "YaRN cos/sin attention factor is 1 when mscale == mscale_all_dim", failures)

    # Routing on hand-made scores: group selection by top-2 sum, bias for selection only, ties.
    class _R:
        n_routed_experts, num_experts_per_tok, n_group, topk_group = 8, 2, 4, 2
        norm_topk_prob, routed_scaling_factor = True, 2.0
    # router weight = identity-ish so logits = x
    wg = np.eye(8)
    x = np.array([[0.0, 0.0, 3.0, -9.0, 1.0, 1.0, -1.0, 2.5]])
    bias = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 5.0, 0.0])   # pushes expert 6 (group 3) in
    idx, w = route_noaux_tc(x, wg, bias, _R)
    s = sigmoid(x[0])
    # biased: [.5,.5,.95,~0,.73,.73,5.27,.92]; group sums: g0 1.0, g1 .95, g2 1.46, g3 6.19 -> keep g3, g2
    _check(list(idx[0]) == [6, 7] and np.allclose(w[0], 2.0 * s[[6, 7]] / s[[6, 7]].sum()),
           "noaux_tc routing: group top-2 sums, biased selection, unbiased weights", failures)
    x2 = np.zeros((1, 8))
    idx2, _ = route_noaux_tc(x2, wg, np.zeros(8), _R)
    _check(list(idx2[0]) == [0, 1], "noaux_tc routing: ties go to the lower index", failures)
    # negative biased scores in the kept groups: masked groups must be -inf, not 0 (ARCH §4.4)
    _R.num_experts_per_tok = 4
    idx3, _ = route_noaux_tc(x2, wg, np.array([-1, -1, -3, -3, -1.2, -1.2, -3, -3.0]), _R)
    _check(sorted(idx3[0]) == [0, 1, 4, 5], "noaux_tc routing: non-kept groups are -inf", failures)

    # Random checkpoints through the loader: naive vs absorbed vs cached decode; FP8 vs F64 twin.
    with tempfile.TemporaryDirectory() as tmp:
        variants = synth_np.selftest_variants(tmp)
        for name, d, twin in variants:
            m = Model(d)
            rng = np.random.default_rng(7)
            ids = list(rng.integers(0, m.cfg.vocab_size, size=13))
            ref = m.logits(ids)
            e1 = rel_err_rows(m.logits(ids, form="absorbed"), ref).max()
            e2 = rel_err_rows(m.logits(ids, form="absorbed", decode_from=1), ref).max()
            e3 = rel_err_rows(m.logits(ids, form="naive", decode_from=6), ref).max()
            _check(max(e1, e2, e3) < 1e-10,
                   f"{name}: absorbed prefill {e1:.1e}, absorbed decode {e2:.1e}, naive decode {e3:.1e} "
                   f"(< 1e-10) [{m.st.layout}]", failures)
            # RoPE is relative: starting the same ids at position 37 (no earlier keys) must give
            # the same logits. Catches q/k rotated with different conventions or angles.
            c = m.new_cache(start=37)
            sh = rel_err_rows(m.forward(ids, c), ref).max()
            _check(sh < 1e-10, f"{name}: logits invariant under a position shift ({sh:.1e})", failures)
            if twin:
                mt = Model(twin)
                et = rel_err_rows(mt.logits(ids), ref).max()
                _check(et < 1e-12, f"{name}: dequant equals the F64 twin checkpoint ({et:.1e})", failures)

        # DSA (ARCH §5). With index_topk >= the sequence every query keeps every visible key, so
        # the logits must equal plain causal MLA; with the small index_topk they must not (the
        # selection matters in these variants). The selection itself is checked against a
        # per-element evaluation of I(t, s).
        for name, d, _ in variants:
            m = Model(d)
            if not m.cfg.dsa:
                continue
            rng = np.random.default_rng(11)
            ids = list(rng.integers(0, m.cfg.vocab_size, size=13))
            sparse = m.logits(ids)
            K = m.cfg.index_topk
            m.cfg.index_topk = 10 ** 6
            wide = m.logits(ids)
            m.cfg.index_topk, m.cfg.dsa = K, False
            dense = m.logits(ids)
            m.cfg.dsa = True
            e_wide = rel_err_rows(wide, dense).max()
            e_sparse = rel_err_rows(sparse, dense)
            _check(e_wide < 1e-12 and e_sparse[:K].max() < 1e-12 and e_sparse[K:].min() > 1e-3,
                   f"{name}: index_topk >= length is dense ({e_wide:.1e}); topk {K} is dense for the first {K} "
                   f"positions only ({e_sparse[:K].max():.1e} / {e_sparse[K:].min():.1e})", failures)
            L = next(i for i, lw in enumerate(m.layers) if lw["indexer"])
            lw, c = m.layers[L], m.cfg
            x = rng.standard_normal((9, c.hidden_size))
            cq = rng.standard_normal((9, c.q_lora_rank))
            pos = np.arange(9)
            sel = m._indexer(lw, x, cq, pos, m.new_cache(), L)
            rope = rope_interleaved if c.index_rope_interleaved else rope_half_split
            ok = True
            keys = []
            for t in range(9):
                k = x[t] @ lw["idx_wk"].T
                k = (k - k.mean()) / math.sqrt(((k - k.mean()) ** 2).mean() + 1e-6) * lw["idx_norm_w"] + lw["idx_norm_b"]
                k[:c.qk_rope] = rope(k[None, :c.qk_rope], pos[t:t + 1], m.inv_freq, m.att_factor)[0]
                keys.append(k)
            for t in range(9):
                score = []
                for s_ in range(t + 1):
                    tot = 0.0
                    for h in range(c.index_n_heads):
                        q = lw["idx_wq"][h * c.index_head_dim:(h + 1) * c.index_head_dim] @ cq[t]
                        q[:c.qk_rope] = rope(q[None, :c.qk_rope], pos[t:t + 1], m.inv_freq, m.att_factor)[0]
                        wgt = (lw["idx_ww"][h] @ x[t]) / math.sqrt(c.index_n_heads)
                        tot += wgt * max(float(q @ keys[s_]) / math.sqrt(c.index_head_dim), 0.0)
                    score.append((-tot, s_))
                want = {s_ for _, s_ in sorted(score)[:min(c.index_topk, t + 1)]}
                ok &= want == set(np.nonzero(sel[t])[0].tolist())
            _check(ok, f"{name}: indexer selection equals a per-element evaluation of I(t, s)", failures)

        # The two RoPE layouts are the same rotation on different lane orders (ARCH §4.9): the
        # half-split rotation of the de-interleaved vector is the de-interleaved interleaved one.
        xr = np.random.default_rng(5).standard_normal((4, 3, 8))
        fr = 10000.0 ** (-np.arange(4) / 4.0)
        pr = np.array([0, 3, 17, 250])
        deint = lambda v: np.concatenate([v[..., 0::2], v[..., 1::2]], axis=-1)  # noqa: E731
        _check(np.abs(rope_half_split(deint(xr), pr, fr, 1.0) - deint(rope_interleaved(xr, pr, fr, 1.0))).max() < 1e-14
               and np.abs(rope_half_split(xr, pr, fr, 1.0) - xr).max() > 1e-3,
               "half-split RoPE = interleaved RoPE on de-interleaved lanes", failures)

        # Unsupported or inconsistent inputs must be refused, not guessed at.
        fp8_dir = variants[2][1]
        dsa_dir = [d for n, d, _ in variants if n.startswith("GLM-5 DSA")][0]

        def refused(edit, what, src=fp8_dir):
            with open(os.path.join(src, "config.json")) as fh:
                bad = json.load(fh)
            edit(bad)
            d = os.path.join(tmp, "refuse_" + os.path.basename(src))
            os.makedirs(d, exist_ok=True)
            for fn in os.listdir(src):
                if fn != "config.json" and not os.path.exists(os.path.join(d, fn)):
                    os.symlink(os.path.join(src, fn), os.path.join(d, fn))
            with open(os.path.join(d, "config.json"), "w") as fh:
                json.dump(bad, fh)
            try:
                Model(d)
                _check(False, f"refuses {what}", failures)
            except ReferenceError as e:
                _check(True, f"refuses {what}: {e}", failures)

        refused(lambda c: c.update(index_topk=2048), "a DSA indexer config")
        refused(lambda c: c.update(model_type="glm4_moe"), "model_type glm4_moe")
        refused(lambda c: c.update(architectures=["Glm4MoeForCausalLM"]), "architecture Glm4MoeForCausalLM")
        refused(lambda c: c.update(scoring_func="softmax"), "softmax routing")
        refused(lambda c: c["quantization_config"].update(quant_method="gptq"), "quant_method gptq")
        refused(lambda c: c["quantization_config"].update(quant_method="compressed-tensors"),
                "compressed-tensors without pack-quantized INT4")
        refused(lambda c: c["quantization_config"].update(quant_method="frontier", format_by_group={"experts": "nf4"}),
                "an unknown format_by_group format")
        refused(lambda c: c["quantization_config"].update(quant_method="frontier", format_by_group={"experts": "mxfp4"}),
                "FP8 tensors in a group the config declares bf16")
        refused(lambda c: c["quantization_config"].update(weight_block_size=[32, 32]), "scale_inv of the wrong shape")
        refused(lambda c: c.pop("quantization_config"), "FP8 weights without a block size")
        refused(lambda c: c.update(n_routed_experts=16), "an expert count the tensors do not have")
        refused(lambda c: c.update(q_lora_rank=None), "q_lora_rank null with q_a_proj tensors")
        refused(lambda c: c.update(num_hidden_layers=1),
                "layers beyond num_hidden_layers + num_nextn_predict_layers")
        refused(lambda c: c.update(hidden_size=48), "a tensor of the wrong shape")
        refused(lambda c: c["rope_parameters"].update(rope_type="longrope"), "rope type longrope")
        refused(lambda c: c.update(indexer_types=["shared", "full", "full", "shared"]),
                "a DSA schedule whose layer 0 is shared", dsa_dir)
        refused(lambda c: c.update(indexer_types=["full", "shared", "shared", "shared"]),
                "indexer tensors on a layer the schedule makes shared", dsa_dir)
        refused(lambda c: c.update(indexer_types=["full", "full", "full", "shared"]),
                "a full layer without indexer tensors", dsa_dir)
        refused(lambda c: c.pop("index_topk"), "a DSA architecture without index_topk", dsa_dir)
        refused(lambda c: c.update(model_type="deepseek_v3"), "GlmMoeDsaForCausalLM with model_type deepseek_v3",
                dsa_dir)

    for d in dirs:
        m = Model(d)
        rng = np.random.default_rng(3)
        ids = list(rng.integers(0, m.cfg.vocab_size, size=16))
        ref = m.logits(ids)
        e = rel_err_rows(m.logits(ids, form="absorbed", decode_from=1), ref).max()
        _check(e < 1e-10, f"{d}: naive prefill vs absorbed decode {e:.1e}", failures)

    print(f"selftest: {'FAILED ' + str(len(failures)) if failures else 'all passed'}")
    return 1 if failures else 0


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(description="float64 numpy reference for DeepSeek-V3-family checkpoints")
    ap.add_argument("dir", nargs="*", help="checkpoint directory (with --selftest: extra dirs to check)")
    ap.add_argument("--ids", help="comma-separated token ids")
    ap.add_argument("--out", help="write logits [n x vocab] row-major little-endian to FILE")
    ap.add_argument("--dtype", choices=["f32", "f64"], default="f32")
    ap.add_argument("--form", choices=["naive", "absorbed"], default="naive")
    ap.add_argument("--decode-from", type=int, default=None)
    ap.add_argument("--greedy", type=int, default=None, help="print N greedily generated ids")
    ap.add_argument("--selftest", action="store_true")
    a = ap.parse_args(argv)
    try:
        if a.selftest:
            return selftest(a.dir)
        if len(a.dir) != 1 or not a.ids:
            ap.error("need DIR and --ids")
        ids = [int(t) for t in a.ids.split(",") if t.strip() != ""]
        m = Model(a.dir[0])
        if a.out:
            lg = m.logits(ids, form=a.form, decode_from=a.decode_from)
            lg.astype("<f4" if a.dtype == "f32" else "<f8").tofile(a.out)
            print(f"wrote {a.out}: {lg.shape[0]} x {lg.shape[1]} {a.dtype}", file=sys.stderr)
        if a.greedy is not None:
            print(" ".join(str(t) for t in m.greedy(ids, a.greedy)))
        if not a.out and a.greedy is None:
            ap.error("nothing to do: give --out and/or --greedy")
    except ReferenceError as e:
        print(f"reference: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
