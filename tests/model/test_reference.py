#!/usr/bin/python3
"""Engine logits vs the independent float64 numpy reference on random synth checkpoints.

    test_reference.py --frontier PATH_TO_frontier --workdir DIR [--only NAME[,NAME]] [--keep]

For each variant a checkpoint is written with `frontier synth` (presets, or a CONFIG.json derived
here from the tiny preset's config.json), then `frontier logits` is run with a full prefill, with
--decode-from 1 (every position but the first through the KV cache) and with a middle K, and each
is compared with tests/reference/reference.py: per position ||engine - ref|| / ||ref|| <= 1e-4.
The reference's own self-test (naive vs absorbed MLA, FP8 decode, YaRN numbers, routing) runs
first.

Variants: a tiny preset (q_lora, n_group > 1, YaRN, dense + MoE, sharded); b q_lora_rank null;
c n_group 1 + no rope scaling + tied embeddings; d tiny --fp8-blocks (128x128 over small dims);
e FP8 with weight_block_size [16, 32] and odd dims (hidden 40, kv_lora 24, ...); f kimi-k2.5
--layers 2 --experts 8 with its routed experts compressed-tensors INT4 as released (its config
shrunk when the preset would write more than 256 MiB: at real widths it is ~6 GiB); g the other
rope spelling (rope_parameters); h --single-file; i YaRN without mscale_all_dim; j MXFP4 routed
experts with FP8 blocks elsewhere (a "frontier" quantization_config; expert and dense widths
widened to multiples of 32); DSA (sparse attention, index_topk 5-6 so that most of the 16 positions
attend to a strict subset): k deepseek-v3.2-tiny (half-split indexer RoPE, YaRN); l the same with
FP8 [16, 32] ue8m0 blocks (indexer wq_b/wk FP8 too); m glm-5-tiny (interleaved indexer RoPE,
indexer_types with shared layers, v_head wider than qk_nope); n glm-5-tiny --fp8-blocks with the
schedule from index_topk_freq / index_skip_topk_offset instead of a list. Prints a table; the last
line is "N passed, M failed"; exits 1 on any failure. tests/quant/test_quant.py covers `frontier quantize` and load-time conversion.
"""
import argparse
import copy
import json
import os
import shutil
import subprocess
import sys
import time

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "reference"))
import numpy as np  # noqa: E402
import reference as ref  # noqa: E402

TOL = 1e-4
N_IDS = 16
SIZE_LIMIT = 256 << 20          # bytes of safetensors a CI variant may write
TIMEOUT = 900


class Fail(Exception):
    pass


def run(cmd, timeout=TIMEOUT):
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise Fail(f"timed out after {timeout}s: {' '.join(cmd)}")
    except OSError as e:
        raise Fail(f"cannot run {cmd[0]}: {e}")
    if p.returncode != 0:
        msg = (p.stderr.decode(errors="replace").strip() or p.stdout.decode(errors="replace").strip())
        raise Fail(f"exit {p.returncode}: {' '.join(os.path.basename(c) if i == 0 else c for i, c in enumerate(cmd))}"
                   f": {msg.splitlines()[-1] if msg else '(no output)'}")
    return p.stdout.decode(errors="replace")


def dir_bytes(d):
    return sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d) if f.endswith(".safetensors"))


def text_cfg(c):
    return c["text_config"] if "text_config" in c else c


def estimate_bytes(c, bytes_per=2):
    """Rough size of the weights a config implies (to refuse a multi-GB synth in CI)."""
    t = text_cfg(c)
    D, V, H = t["hidden_size"], t["vocab_size"], t["num_attention_heads"]
    dn, dr, dv, rkv = t["qk_nope_head_dim"], t["qk_rope_head_dim"], t["v_head_dim"], t["kv_lora_rank"]
    rq = t.get("q_lora_rank") or 0
    attn = (rq * D + H * (dn + dr) * rq) if rq else H * (dn + dr) * D
    attn += (rkv + dr) * D + H * (dn + dv) * rkv + D * H * dv
    E = t.get("n_routed_experts") or 0
    total = 2 * V * D
    for L in range(t["num_hidden_layers"]):
        moe = E and L >= (t.get("first_k_dense_replace") or 0) and L % (t.get("moe_layer_freq") or 1) == 0
        ffn = 3 * D * t["moe_intermediate_size"] * (E + (t.get("n_shared_experts") or 0)) if moe \
            else 3 * D * t["intermediate_size"]
        total += attn + ffn
    return total * bytes_per


def preset_config(frontier, preset, workdir, extra):
    """The config.json `frontier synth PRESET` would write, read with --print-config so that a
    real-shaped preset never writes its gigabytes of weights here."""
    r = subprocess.run([frontier, "synth", preset, "--print-config"] + extra, capture_output=True,
                       text=True, timeout=TIMEOUT)
    if r.returncode != 0:
        raise Fail(f"synth {preset} --print-config: {r.stderr.strip() or 'no message'}")
    return json.loads(r.stdout)


# ---------------------------------------------------------------------------------------------
# variants
# ---------------------------------------------------------------------------------------------

def swap_rope_spelling(c):
    """rope_theta + rope_scaling <-> the newer rope_parameters spelling (same meaning). The tiny
    preset is expected to use the old spelling; if it already uses rope_parameters, the variant
    tests the old spelling instead so that both are covered."""
    t = text_cfg(c)
    if isinstance(t.get("rope_parameters"), dict):
        rp = dict(t.pop("rope_parameters"))
        t["rope_theta"] = rp.pop("rope_theta", 10000.0)
        rtype = rp.pop("rope_type", None) or rp.pop("type", "default")
        rp.pop("type", None)
        t["rope_scaling"] = dict(rp, type=rtype) if rtype != "default" else None
        return c, "rope_theta+rope_scaling"
    rs = t.pop("rope_scaling", None)
    theta = t.pop("rope_theta", 10000.0)
    rp = {"rope_theta": theta}
    if rs:
        rs = dict(rs)
        rtype = rs.pop("type", None) or rs.pop("rope_type", "default")
        rs.pop("rope_type", None)
        rp["rope_type"] = rtype
        rp.update(rs)
    else:
        rp["rope_type"] = "default"
    t["rope_parameters"] = rp
    return c, "rope_parameters"


def shrink_k25(c):
    """Keep the K2.5 wrapper layout and its text_config semantics (kimi_k2-style: 1 group, YaRN
    with its own factor/betas, rms eps, first dense layer), at a size CI can afford."""
    c = copy.deepcopy(c)
    t = text_cfg(c)
    t.update({"hidden_size": 128, "intermediate_size": 256, "moe_intermediate_size": 64,
              "num_attention_heads": 4, "num_key_value_heads": 4, "q_lora_rank": 64, "kv_lora_rank": 32,
              "qk_nope_head_dim": 16, "qk_rope_head_dim": 16, "v_head_dim": 16, "num_hidden_layers": 2,
              "n_routed_experts": 8, "num_experts_per_tok": 4})
    if t.get("n_group", 1) > 1:
        t["n_group"], t["topk_group"] = 2, 1
    V = t.get("vocab_size", 0)
    if V > 2048:
        t["vocab_size"] = 2048
        # token ids in the config must stay inside the smaller vocabulary
        for obj in (c, t):
            for k in list(obj):
                if k.endswith("token_id") and isinstance(obj[k], int) and obj[k] >= 2048:
                    obj[k] = 2047 - (obj[k] % 64)
                elif k.endswith("token_id") and isinstance(obj[k], list):
                    obj[k] = [v if not isinstance(v, int) or v < 2048 else 2047 - (v % 64) for v in obj[k]]
    return c


def build_variants(frontier, workdir):
    """[(name, fn)] with fn() -> checkpoint dir, evaluated lazily so that one failing synth does
    not stop the others."""
    base = {}

    def tiny_cfg():
        if "tiny" not in base:
            cp = os.path.join(workdir, "a_tiny", "config.json")
            if os.path.exists(cp):
                with open(cp) as f:
                    base["tiny"] = json.load(f)
            else:
                base["tiny"] = preset_config(frontier, "tiny", workdir, [])
        return copy.deepcopy(base["tiny"])

    def synth(name, src, args):
        d = os.path.join(workdir, name)
        shutil.rmtree(d, ignore_errors=True)
        run([frontier, "synth", src, d] + args)
        return d

    def from_cfg(name, cfg, args):
        cp = os.path.join(workdir, name + ".config.json")
        with open(cp, "w") as f:
            json.dump(cfg, f, indent=1)
        return synth(name, cp, args)

    def v_a():
        return synth("a_tiny", "tiny", ["--seed", "11"])

    def v_b():
        c = tiny_cfg()
        text_cfg(c)["q_lora_rank"] = None
        return from_cfg("b_no_q_lora", c, ["--seed", "12"])

    def v_c():
        c = tiny_cfg()
        t = text_cfg(c)
        t["n_group"], t["topk_group"] = 1, 1
        t.pop("rope_scaling", None)
        if isinstance(t.get("rope_parameters"), dict):
            t["rope_parameters"] = {"rope_type": "default",
                                    "rope_theta": t["rope_parameters"].get("rope_theta", 10000.0)}
        t["tie_word_embeddings"] = True
        return from_cfg("c_group1_norope_tied", c, ["--seed", "13"])

    def v_d():
        return synth("d_tiny_fp8_128", "tiny", ["--seed", "14", "--fp8-blocks"])

    def v_e():
        c = tiny_cfg()
        t = text_cfg(c)
        t.update({"hidden_size": 40, "kv_lora_rank": 24, "q_lora_rank": 20, "intermediate_size": 72,
                  "moe_intermediate_size": 24, "qk_nope_head_dim": 12, "qk_rope_head_dim": 8,
                  "v_head_dim": 10})
        t["quantization_config"] = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                                    "weight_block_size": [16, 32]}
        return from_cfg("e_fp8_16x32_odd", c, ["--seed", "15", "--fp8-blocks"])

    def v_f():
        args = ["--layers", "2", "--experts", "8"]
        c = preset_config(frontier, "kimi-k2.5", workdir, args)
        est = estimate_bytes(c)
        if est <= SIZE_LIMIT:
            return synth("f_kimi_k25", "kimi-k2.5", ["--seed", "16"] + args)
        print(f"  note: kimi-k2.5 --layers 2 --experts 8 would write ~{est / 2**30:.1f} GiB; "
              "using its config shrunk (text_config dims, vocab 2048, 8 experts top-4)")
        return from_cfg("f_kimi_k25", shrink_k25(c), ["--seed", "16"] + args)

    def v_g():
        c, spelling = swap_rope_spelling(tiny_cfg())
        print(f"  note: g uses the {spelling} spelling")
        return from_cfg("g_rope_parameters", c, ["--seed", "17"])

    def v_h():
        return synth("h_single_file", "tiny", ["--seed", "11", "--single-file"])

    def v_i():
        # YaRN without mscale_all_dim: no softmax-scale correction, and cos/sin scaled by the
        # attention factor 0.1 ln(f) + 1 (the transformers/vLLM default), so both paths differ from 1.
        c = tiny_cfg()
        t = text_cfg(c)
        rs = t.get("rope_scaling") or t.get("rope_parameters")
        rs.pop("mscale_all_dim", None)
        return from_cfg("i_yarn_no_mscale_all_dim", c, ["--seed", "18"])

    def v_j():
        c = tiny_cfg()
        t = text_cfg(c)
        t.update({"moe_intermediate_size": 96, "intermediate_size": 224})
        t["quantization_config"] = {"quant_method": "frontier", "fmt": "e4m3", "weight_block_size": [128, 128],
                                    "group_size": 32, "format_by_group": {"attention": "fp8", "dense": "fp8",
                                                                          "shared_experts": "fp8", "experts": "mxfp4"}}
        return from_cfg("j_mxfp4_experts_fp8", c, ["--seed", "19"])

    def v_k():
        return synth("k_dsv32_tiny", "deepseek-v3.2-tiny", ["--seed", "20"])

    def v_l():
        c = preset_config(frontier, "deepseek-v3.2-tiny", workdir, [])
        c["quantization_config"] = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                                    "scale_fmt": "ue8m0", "weight_block_size": [16, 32]}
        return from_cfg("l_dsv32_fp8_16x32", c, ["--seed", "21"])

    def v_m():
        return synth("m_glm5_tiny", "glm-5-tiny", ["--seed", "22"])

    def v_n():
        # GLM-5.1 IndexShare by rule: full iff max(l - offset + 1, 0) % freq == 0 -> 0, 2, 4 full
        c = preset_config(frontier, "glm-5-tiny", workdir, ["--layers", "5"])
        del c["indexer_types"]
        c["index_topk_freq"], c["index_skip_topk_offset"] = 2, 1
        return from_cfg("n_glm5_freq_fp8", c, ["--seed", "23", "--fp8-blocks"])

    return [("a_tiny", v_a), ("b_no_q_lora", v_b), ("c_group1_norope_tied", v_c),
            ("d_tiny_fp8_128", v_d), ("e_fp8_16x32_odd", v_e), ("f_kimi_k25", v_f),
            ("g_rope_parameters", v_g), ("h_single_file", v_h), ("i_yarn_no_mscale_all_dim", v_i),
            ("j_mxfp4_experts_fp8", v_j), ("k_dsv32_tiny", v_k), ("l_dsv32_fp8_16x32", v_l),
            ("m_glm5_tiny", v_m), ("n_glm5_freq_fp8", v_n)]


def describe(m):
    c = m.cfg
    dts = sorted({m.st.dtype(n) for n in m.st.entries})
    rope = "yarn f=%g" % c.yarn["factor"] if c.yarn else "default"
    dsa = ""
    if c.dsa:
        sched = "".join("F" if f else "S" for f in c.index_full)
        dsa = (f" DSA {c.index_n_heads}x{c.index_head_dim} top{c.index_topk} "
               f"{'interleaved' if c.index_rope_interleaved else 'half-split'} {sched}")
    return (f"{c.arch.replace('ForCausalLM', '').replace('ForConditionalGeneration', '')}/{c.model_type} "
            f"L{c.num_hidden_layers} D{c.hidden_size} H{c.num_heads} q_lora={c.q_lora_rank} "
            f"E{c.n_routed_experts}/k{c.num_experts_per_tok}/g{c.n_group}:{c.topk_group} rope={rope} "
            f"tied={c.tie_word_embeddings} block={c.block}{dsa} {','.join(dts)} [{m.st.layout}]")


def check_variant(frontier, workdir, name, make, rows, seed):
    t0 = time.time()
    try:
        d = make()
        m = ref.Model(d)
    except (Fail, ref.ReferenceError, OSError, ValueError) as e:
        rows.append((name, "synth+load", None, f"FAIL: {e}"))
        return
    print(f"  {name}: {describe(m)}  ({dir_bytes(d) / 1e6:.1f} MB)")
    V = m.cfg.vocab_size
    rng = np.random.default_rng(seed)
    ids = [int(v) for v in rng.integers(0, V, size=N_IDS)]
    want = m.logits(ids)                                              # naive prefill, float64
    # the reference's two MLA forms must agree with each other before judging the engine
    e_ref = ref.rel_err_rows(m.logits(ids, form="absorbed", decode_from=1), want).max()
    if not e_ref < 1e-10:
        rows.append((name, "reference naive vs absorbed", e_ref, "FAIL: reference inconsistent"))
        return
    for mode, k in (("prefill", None), ("decode-from 1", 1), (f"decode-from {N_IDS // 2}", N_IDS // 2)):
        out = os.path.join(workdir, f"{name}.{mode.replace(' ', '')}.f32")
        cmd = [frontier, "logits", d, "--ids", ",".join(map(str, ids)), "--out", out]
        if k is not None:
            cmd += ["--decode-from", str(k)]
        try:
            if os.path.exists(out):
                os.remove(out)
            run(cmd)
            size = os.path.getsize(out)
            if size != N_IDS * V * 4:
                raise Fail(f"{out}: {size} bytes, expected {N_IDS} x {V} float32 = {N_IDS * V * 4}")
            got = np.fromfile(out, dtype="<f4").reshape(N_IDS, V)
            err = ref.rel_err_rows(got, want)
            worst = float(np.max(err)) if np.all(np.isfinite(err)) else float("nan")
            if worst <= TOL:
                status = "ok"
            elif not np.isfinite(err).all():
                status = f"FAIL (non-finite logits at position {int(np.argmin(np.isfinite(err)))})"
            else:
                status = f"FAIL (> {TOL:g}; worst position {int(np.argmax(err))})"
            rows.append((name, mode, worst, status))
        except (Fail, OSError, ValueError) as e:
            rows.append((name, mode, None, f"FAIL: {e}"))
    print(f"  {name}: done in {time.time() - t0:.1f}s")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frontier", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--only", default=None, help="comma-separated variant names (prefix match)")
    ap.add_argument("--keep", action="store_true", help="keep the synth checkpoints")
    a = ap.parse_args()
    # The reference computes every product with f32 (here f64) activations; on CPUs with AVX-512
    # VNNI the engine's default 4-bit products round them to int8 per block of 32 (matmul.h),
    # tested on its own in unit_matmul and tests/quant (e). Compare the exact path here.
    os.environ["FR_ISA"] = "avx512"
    frontier = os.path.abspath(a.frontier)
    os.makedirs(a.workdir, exist_ok=True)
    workdir = os.path.abspath(a.workdir)
    t_all = time.time()
    rows = []

    # 1. The reference guards itself.
    print("reference self-test:")
    rc = ref.selftest([])
    rows.append(("reference", "self-test", None, "ok" if rc == 0 else "FAIL"))

    # 2. Engine vs reference on each variant.
    if not os.access(frontier, os.X_OK):
        rows.append(("engine", "binary", None, f"FAIL: {frontier} is not an executable"))
    else:
        variants = build_variants(frontier, workdir)
        if a.only:
            want = a.only.split(",")
            variants = [v for v in variants if any(v[0].startswith(w) for w in want)]
        print("variants:")
        for i, (name, make) in enumerate(variants):
            check_variant(frontier, workdir, name, make, rows, seed=100 + i)
        if not a.keep:
            for name, _ in variants:
                shutil.rmtree(os.path.join(workdir, name), ignore_errors=True)

    print()
    print(f"{'variant':<22} {'mode':<28} {'max rel err':>12}  status")
    print("-" * 80)
    for name, mode, err, status in rows:
        e = "" if err is None else f"{err:.3e}"
        print(f"{name:<22} {mode:<28} {e:>12}  {status}")
    n_fail = sum(1 for r in rows if r[3] != "ok")
    print(f"total time {time.time() - t_all:.1f}s")
    print(f"{len(rows) - n_fail} passed, {n_fail} failed")
    return 1 if n_fail else 0


if __name__ == "__main__":
    sys.exit(main())
