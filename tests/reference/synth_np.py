#!/usr/bin/python3
"""Test-only writer of small random DeepSeek-V3-layout checkpoints, for reference.py's self-test.

Independent of the engine's `frontier synth`: it exists so the reference's loader paths (sharding,
FP8 E4M3 block scales with partial edge blocks, K2.5 prefixes and text_config, rope_parameters,
q_proj, tied embeddings, DSA indexers with full/shared layers) are exercised even before the engine
exists. The engine-vs-reference
drivers do not use it: they test on the engine's own `frontier synth` output.
"""
import json
import os
import struct

import numpy as np

from reference import E4M3_LUT, bf16_bits_to_f64

# finite non-negative E4M3 codes 0x00..0x7e in increasing value order
_POS_CODES = np.arange(0x7F, dtype=np.uint8)
_POS_VALS = E4M3_LUT[:0x7F]


def encode_e4m3(x):
    """Round-to-nearest (ties to the lower magnitude) float -> E4M3 code, saturating at 448."""
    a = np.minimum(np.abs(x), 448.0)
    j = np.clip(np.searchsorted(_POS_VALS, a), 1, 0x7E)
    lo, hi = _POS_VALS[j - 1], _POS_VALS[j]
    code = np.where(a - lo <= hi - a, _POS_CODES[j - 1], _POS_CODES[j]).astype(np.uint8)
    return np.where(x < 0, code | 0x80, code).astype(np.uint8)


def quantize_blocks(w, block):
    """Block FP8 as DeepSeek stores it: per block scale_inv = amax/448, fp8 = e4m3(w / scale_inv)."""
    br, bc = block
    R, C = w.shape
    nr, nc = -(-R // br), -(-C // bc)
    s = np.zeros((nr, nc), dtype=np.float32)
    q = np.zeros((R, C), dtype=np.uint8)
    deq = np.zeros((R, C))
    for i in range(nr):
        for j in range(nc):
            blk = w[i * br:(i + 1) * br, j * bc:(j + 1) * bc]
            sc = np.float32(max(np.abs(blk).max(), 1e-8) / 448.0)
            s[i, j] = sc
            code = encode_e4m3(blk / float(sc))
            q[i * br:(i + 1) * br, j * bc:(j + 1) * bc] = code
            deq[i * br:(i + 1) * br, j * bc:(j + 1) * bc] = E4M3_LUT[code] * float(sc)
    return q, s, deq


# E2M1 magnitudes by code 0..7, written out here (not taken from reference.py) so the twin
# checkpoints check the reference's bit-level decoder against the format's value list.
_E2M1_GRID = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])


def encode_mxfp4(w):
    """MXFP4 per OCP MX (ARCH §7.4) for w [R, C], C % 32 == 0: per block of 32, shared exponent
    floor(log2(amax)) - 2 (clamped to [-127, 127]), elements nearest E2M1 (ties to the lower
    magnitude; saturating at 6). Returns (blocks U8 [R, C/32, 16], scales U8 [R, C/32],
    dequantized float64 [R, C])."""
    R, C = w.shape
    g = w.reshape(R, C // 32, 32)
    amax = np.abs(g).max(axis=-1)
    _, ex = np.frexp(np.where(amax > 0, amax, 1.0))          # amax = m * 2^ex, m in [0.5, 1)
    se = np.clip(ex - 1 - 2, -127, 127)
    se = np.where(amax > 0, se, -127)
    v = np.abs(g) / np.ldexp(1.0, se)[..., None]
    d = np.abs(v[..., None] - _E2M1_GRID)                    # [R, G, 32, 8]
    code = np.argmin(d, axis=-1).astype(np.uint8)            # first minimum: lower magnitude
    code = np.where(g < 0, code | 8, code).astype(np.uint8)
    deq = np.where(g < 0, -1.0, 1.0) * _E2M1_GRID[code & 7] * np.ldexp(1.0, se)[..., None]
    deq = np.where(code == 8, -0.0, deq)
    blocks = (code[..., 0::2] | (code[..., 1::2] << 4)).astype(np.uint8)
    return blocks, (se + 127).astype(np.uint8), deq.reshape(R, C)


def encode_int4(w):
    """compressed-tensors INT4 (ARCH §7.3): per group of 32, scale = bf16(amax / 7.5), q = clamp(
    round(x / scale), -8, 7). Returns (packed I32 [R, C/8], scale BF16 bits [R, C/32], dequantized)."""
    R, C = w.shape
    g = w.reshape(R, C // 32, 32)
    sb = to_bf16_bits(np.maximum(np.abs(g).max(axis=-1) / 7.5, 1e-8))
    s = bf16_bits_to_f64(sb)
    q = np.clip(np.rint(g / s[..., None]), -8, 7).astype(np.int64)
    deq = (q * s[..., None]).reshape(R, C)
    u = (q + 8).reshape(R, C // 8, 8)
    word = np.zeros((R, C // 8), dtype=np.int64)
    for i in range(8):
        word |= u[..., i] << (4 * i)
    packed = word.astype(np.uint32).view(np.int32)
    return packed, sb, deq


def to_bf16_bits(x):
    f = np.asarray(x, dtype=np.float32)
    u = f.view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16          # round to nearest even
    return u.astype(np.uint16)


def write_safetensors(path, tensors):
    """tensors: name -> (dtype string, numpy array of the raw element type)."""
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        dt, a = tensors[name]
        raw = np.ascontiguousarray(a).tobytes()
        header[name] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def write_checkpoint(out, config, tensors, shards=1):
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    names = sorted(tensors)
    if shards == 1:
        write_safetensors(os.path.join(out, "model.safetensors"), tensors)
        return
    wm = {}
    for k in range(shards):
        fname = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: tensors[n] for n in names[k::shards]}
        write_safetensors(os.path.join(out, fname), part)
        wm.update({n: fname for n in part})
    with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": wm}, f, indent=1)


def random_checkpoint(out, config, seed=0, dtype="BF16", fp8_block=None, shards=1, twin=None, experts=None):
    """Random weights for `config` (a full config.json dict). Linear weights become FP8 + scale_inv
    when fp8_block is given; routed experts MXFP4 or INT4 when experts is "mxfp4" / "int4" (twin:
    also write a checkpoint with the dequantized values in F64)."""
    rng = np.random.default_rng(seed)
    top = config
    c = config.get("text_config", config)
    prefix = "language_model." if "text_config" in config else ""
    D, H = c["hidden_size"], c["num_attention_heads"]
    dn, dr, dv, rkv = c["qk_nope_head_dim"], c["qk_rope_head_dim"], c["v_head_dim"], c["kv_lora_rank"]
    rq = c.get("q_lora_rank")
    V = c["vocab_size"]
    f64 = {}      # name -> float64 values (what the reference should see)
    lin = set()   # names of linear weights (quantized under FP8)

    def w(name, shape, scale=None, linear=True):
        sc = scale if scale is not None else 1.0 / np.sqrt(shape[-1])
        f64[name] = rng.standard_normal(shape) * sc
        if linear:
            lin.add(name)

    def norm(name, n):
        f64[name] = 1.0 + 0.2 * rng.standard_normal(n)

    w("model.embed_tokens.weight", [V, D], 1.0, linear=False)
    norm("model.norm.weight", D)
    if not c.get("tie_word_embeddings", False):
        w("lm_head.weight", [V, D], linear=False)
    E = c.get("n_routed_experts") or 0
    # DSA (ARCH §3.2, §3.4): an indexer on every layer, or on the "full" ones of indexer_types
    dsa = "index_topk" in c
    full = c.get("indexer_types") or ["full"] * c["num_hidden_layers"]
    for L in range(c["num_hidden_layers"]):
        p = f"model.layers.{L}."
        norm(p + "input_layernorm.weight", D)
        norm(p + "post_attention_layernorm.weight", D)
        a = p + "self_attn."
        if rq:
            w(a + "q_a_proj.weight", [rq, D])
            norm(a + "q_a_layernorm.weight", rq)
            w(a + "q_b_proj.weight", [H * (dn + dr), rq])
        else:
            w(a + "q_proj.weight", [H * (dn + dr), D])
        w(a + "kv_a_proj_with_mqa.weight", [rkv + dr, D])
        norm(a + "kv_a_layernorm.weight", rkv)
        w(a + "kv_b_proj.weight", [H * (dn + dv), rkv])
        w(a + "o_proj.weight", [D, H * dv])
        if dsa and full[L] == "full":
            HI, DI = c["index_n_heads"], c["index_head_dim"]
            w(a + "indexer.wq_b.weight", [HI * DI, rq])
            w(a + "indexer.wk.weight", [DI, D])
            norm(a + "indexer.k_norm.weight", DI)
            f64[a + "indexer.k_norm.bias"] = 0.2 * rng.standard_normal(DI)
            w(a + "indexer.weights_proj.weight", [HI, D], linear=False)
        m = p + "mlp."
        moe = E and L >= (c.get("first_k_dense_replace") or 0) and L % (c.get("moe_layer_freq") or 1) == 0
        if moe:
            I = c["moe_intermediate_size"]
            w(m + "gate.weight", [E, D], 2.0 / np.sqrt(D), linear=False)
            f64[m + "gate.e_score_correction_bias"] = 0.3 * rng.standard_normal(E)
            for e in range(E):
                w(f"{m}experts.{e}.gate_proj.weight", [I, D])
                w(f"{m}experts.{e}.up_proj.weight", [I, D])
                w(f"{m}experts.{e}.down_proj.weight", [D, I])
            if c.get("n_shared_experts"):
                Is = I * c["n_shared_experts"]
                w(m + "shared_experts.gate_proj.weight", [Is, D])
                w(m + "shared_experts.up_proj.weight", [Is, D])
                w(m + "shared_experts.down_proj.weight", [D, Is])
        else:
            I = c["intermediate_size"]
            w(m + "gate_proj.weight", [I, D])
            w(m + "up_proj.weight", [I, D])
            w(m + "down_proj.weight", [D, I])
    # an MTP-like extra layer the reference must ignore
    f64[f"model.layers.{c['num_hidden_layers']}.enorm.weight"] = np.full(D, np.nan)

    tensors, twin_t = {}, {}
    for name, val in f64.items():
        full = prefix + name
        if experts and ".mlp.experts." in name:
            if experts == "mxfp4":
                b, sc, deq = encode_mxfp4(val)
                tensors[full + "_blocks"] = ("U8", b)
                tensors[full + "_scales"] = ("U8", sc)
            else:
                pk, sc, deq = encode_int4(val)
                tensors[full + "_packed"] = ("I32", pk)
                tensors[full + "_scale"] = ("BF16", sc)
                tensors[full + "_shape"] = ("I32", np.array(val.shape, dtype="<i4"))
            twin_t[full] = ("F64", deq.astype("<f8"))
            continue
        if name.endswith("e_score_correction_bias"):
            tensors[full] = ("F32", val.astype("<f4"))
            twin_t[full] = ("F64", val.astype("<f4").astype("<f8"))
        elif fp8_block and name in lin:
            q, s, deq = quantize_blocks(val, fp8_block)
            tensors[full] = ("F8_E4M3", q)
            tensors[full + "_scale_inv"] = ("F32", s.astype("<f4"))
            twin_t[full] = ("F64", deq.astype("<f8"))
        elif dtype == "BF16":
            tensors[full] = ("BF16", to_bf16_bits(val))
        elif dtype == "F32":
            tensors[full] = ("F32", val.astype("<f4"))
        else:
            tensors[full] = ("F16", val.astype("<f2"))
        if full not in twin_t:   # the exact values stored above, widened
            dt, raw = tensors[full]
            wide = bf16_bits_to_f64(raw) if dt == "BF16" else raw.astype("<f8")
            twin_t[full] = ("F64", wide)
    qc = None
    if fp8_block:
        qc = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
              "weight_block_size": list(fp8_block)}
    if experts == "mxfp4":
        rest = "fp8" if fp8_block else "bf16"
        qc = dict(qc or {}, quant_method="frontier", group_size=32,
                  format_by_group={"attention": rest, "dense": rest, "shared_experts": rest, "experts": "mxfp4"})
    elif experts == "int4":
        if fp8_block:
            raise ValueError("INT4 experts come with BF16 elsewhere (compressed-tensors)")
        qc = {"quant_method": "compressed-tensors", "format": "pack-quantized", "quantization_status": "compressed",
              "config_groups": {"group_0": {"targets": ["Linear"], "input_activations": None, "weights": {
                  "num_bits": 4, "type": "int", "symmetric": True, "strategy": "group", "group_size": 32,
                  "dynamic": False}}}}
    if qc:
        c["quantization_config"] = qc
        if prefix:
            top["quantization_config"] = qc
    write_checkpoint(out, top, tensors, shards)
    if twin:
        tc = json.loads(json.dumps(top))
        tc.pop("quantization_config", None)
        tc.get("text_config", {}).pop("quantization_config", None)
        write_checkpoint(twin, tc, twin_t, 1)


def base_config(**kw):
    c = {
        "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3",
        "vocab_size": 97, "hidden_size": 48, "intermediate_size": 40, "moe_intermediate_size": 16,
        "num_hidden_layers": 3, "num_attention_heads": 3, "num_key_value_heads": 3,
        "n_shared_experts": 2, "n_routed_experts": 8, "routed_scaling_factor": 2.5,
        "kv_lora_rank": 16, "q_lora_rank": 24, "qk_rope_head_dim": 8, "v_head_dim": 12,
        "qk_nope_head_dim": 8, "n_group": 4, "topk_group": 2, "num_experts_per_tok": 3,
        "first_k_dense_replace": 1, "norm_topk_prob": True, "rms_norm_eps": 1e-6,
        "tie_word_embeddings": False, "rope_theta": 10000.0, "max_position_embeddings": 4096,
        "rope_scaling": {"type": "yarn", "factor": 40.0, "original_max_position_embeddings": 64,
                         "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 0.7},
        "num_nextn_predict_layers": 1,
    }
    c.update(kw)
    return c


def selftest_variants(tmp):
    """(name, dir, twin_dir or None) for reference.py --selftest."""
    out = []
    d = os.path.join(tmp, "yarn_sharded")
    random_checkpoint(d, base_config(), seed=1, shards=3)
    out.append(("yarn(mscale!=mscale_all_dim)+q_lora+groups BF16", d, None))

    d = os.path.join(tmp, "plain")
    cfg = base_config(q_lora_rank=None, n_group=1, topk_group=1, tie_word_embeddings=True,
                      rope_scaling=None, norm_topk_prob=False, moe_layer_freq=2, first_k_dense_replace=0)
    del cfg["rope_theta"]
    cfg["rope_parameters"] = {"rope_type": "default", "rope_theta": 5000.0}
    random_checkpoint(d, cfg, seed=2, dtype="F32")
    out.append(("q_proj+tied+rope_parameters+freq2 F32", d, None))

    d, t = os.path.join(tmp, "fp8"), os.path.join(tmp, "fp8_twin")
    cfg = base_config(hidden_size=40, kv_lora_rank=24, q_lora_rank=20, intermediate_size=72,
                      moe_intermediate_size=24, vocab_size=83, v_head_dim=10)
    del cfg["rope_scaling"]
    del cfg["rope_theta"]
    cfg["rope_parameters"] = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 8.0,
                              "original_max_position_embeddings": 32, "mscale": 1.0, "mscale_all_dim": 1.0}
    random_checkpoint(d, cfg, seed=3, fp8_block=(16, 32), shards=2, twin=t)
    out.append(("FP8 [16,32] odd dims + yarn rope_parameters", d, t))

    d = os.path.join(tmp, "k25")
    text = base_config(model_type="kimi_k2", n_group=1, topk_group=1, num_experts_per_tok=2)
    text.pop("architectures")
    k25 = {"architectures": ["KimiK25ForConditionalGeneration"], "model_type": "kimi_k25", "text_config": text}
    random_checkpoint(d, k25, seed=4, dtype="F16")
    out.append(("K2.5 wrapper (text_config, language_model.) F16", d, None))

    # 4-bit routed experts (dims multiples of 32): MXFP4 with FP8 elsewhere, and K2.5-style INT4
    d, t = os.path.join(tmp, "mxfp4"), os.path.join(tmp, "mxfp4_twin")
    cfg = base_config(hidden_size=64, moe_intermediate_size=32, intermediate_size=96)
    random_checkpoint(d, cfg, seed=5, fp8_block=(16, 32), shards=2, twin=t, experts="mxfp4")
    out.append(("MXFP4 experts + FP8 [16,32] elsewhere (frontier config)", d, t))
    d, t = os.path.join(tmp, "int4"), os.path.join(tmp, "int4_twin")
    text = base_config(model_type="kimi_k2", hidden_size=64, moe_intermediate_size=32, intermediate_size=96,
                       n_group=1, topk_group=1)
    text.pop("architectures")
    k25 = {"architectures": ["KimiK25ForConditionalGeneration"], "model_type": "kimi_k25", "text_config": text}
    random_checkpoint(d, k25, seed=6, twin=t, experts="int4")
    out.append(("K2.5 INT4 experts (compressed-tensors pack-quantized)", d, t))

    # DSA: DeepSeek-V3.2 (half-split indexer RoPE) and GLM-5 (interleaved, v wider than nope,
    # shared layers, FP8 indexer weights); index_topk well below the 13 test tokens
    d = os.path.join(tmp, "v32")
    cfg = base_config(architectures=["DeepseekV32ForCausalLM"], model_type="deepseek_v32",
                      index_n_heads=3, index_head_dim=12, index_topk=4)
    random_checkpoint(d, cfg, seed=8)
    out.append(("DeepSeek-V3.2 DSA (half-split indexer RoPE, topk 4) BF16", d, None))
    d, t = os.path.join(tmp, "glm5"), os.path.join(tmp, "glm5_twin")
    cfg = base_config(architectures=["GlmMoeDsaForCausalLM"], model_type="glm_moe_dsa", num_hidden_layers=4,
                      qk_nope_head_dim=12, v_head_dim=16, n_group=1, topk_group=1, rms_norm_eps=1e-5,
                      index_n_heads=2, index_head_dim=10, index_topk=3,
                      indexer_types=["full", "shared", "full", "shared"])
    del cfg["rope_scaling"], cfg["rope_theta"]
    cfg["rope_parameters"] = {"rope_type": "default", "rope_theta": 1000.0}
    random_checkpoint(d, cfg, seed=9, fp8_block=(16, 32), twin=t)
    out.append(("GLM-5 DSA (interleaved indexer RoPE, shared layers, topk 3) FP8 [16,32]", d, t))
    return out
