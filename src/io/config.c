/* config.c - config.json -> fr_config (see config.h).
 *
 * Strict by design: an architecture we do not implement, a required field that
 * is missing, or a value outside what the forward pass supports is an error that
 * names the file and the field. Optional fields get the defaults that
 * transformers and shared/docs/ARCH.md document, never values guessed from
 * tensor shapes. Every number is range-checked so later size arithmetic cannot
 * overflow. */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json_util.h"

#define MAX_DIM (1 << 20)      /* any hidden/intermediate/rank size */
#define MAX_VOCAB (1 << 23)
#define MAX_HEADS 1024
#define MAX_CONFIG_BYTES (4u << 20)

typedef struct {
    const char *file;
    fr_error *err;
} ctx_t;

static const cJSON *field(const cJSON *obj, const char *name) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    return (v && !cJSON_IsNull(v)) ? v : NULL;
}

/* Integer field in [lo, hi]. required: missing is an error; else *out = dflt. */
static fr_status get_int(ctx_t *c, const cJSON *obj, const char *name, bool required, int64_t dflt,
                         int64_t lo, int64_t hi, int64_t *out) {
    const cJSON *v = field(obj, name);
    if (!v) {
        if (required) return fr_fail(c->err, FR_ERR_FORMAT, "%s: missing required field \"%s\"", c->file, name);
        *out = dflt;
        return FR_OK;
    }
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble))
        return fr_fail(c->err, FR_ERR_FORMAT, "%s: field \"%s\" must be an integer", c->file, name);
    double d = v->valuedouble;
    if (d < (double)lo || d > (double)hi)
        return fr_fail(c->err, FR_ERR_FORMAT, "%s: field \"%s\" = %.0f is outside [%lld, %lld]", c->file,
                       name, d, (long long)lo, (long long)hi);
    *out = (int64_t)d;
    return FR_OK;
}

static fr_status get_num(ctx_t *c, const cJSON *obj, const char *name, bool required, double dflt,
                         double lo, double hi, double *out) {
    const cJSON *v = field(obj, name);
    if (!v) {
        if (required) return fr_fail(c->err, FR_ERR_FORMAT, "%s: missing required field \"%s\"", c->file, name);
        *out = dflt;
        return FR_OK;
    }
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
        return fr_fail(c->err, FR_ERR_FORMAT, "%s: field \"%s\" must be a number", c->file, name);
    if (v->valuedouble < lo || v->valuedouble > hi)
        return fr_fail(c->err, FR_ERR_FORMAT, "%s: field \"%s\" = %g is outside [%g, %g]", c->file, name,
                       v->valuedouble, lo, hi);
    *out = v->valuedouble;
    return FR_OK;
}

static fr_status get_bool(ctx_t *c, const cJSON *obj, const char *name, bool dflt, bool *out) {
    const cJSON *v = field(obj, name);
    if (!v) {
        *out = dflt;
        return FR_OK;
    }
    if (!cJSON_IsBool(v)) return fr_fail(c->err, FR_ERR_FORMAT, "%s: field \"%s\" must be true or false", c->file, name);
    *out = cJSON_IsTrue(v);
    return FR_OK;
}

static const char *get_str(const cJSON *obj, const char *name) {
    const cJSON *v = field(obj, name);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* Token id or list of ids (eos_token_id may be either). */
static fr_status get_ids(ctx_t *c, const cJSON *obj, const char *name, int32_t *ids, int max, int *n) {
    const cJSON *v = field(obj, name);
    *n = 0;
    if (!v) return FR_OK;
    if (cJSON_IsNumber(v)) {
        int64_t x;
        fr_status rc = get_int(c, obj, name, true, 0, 0, INT32_MAX, &x);
        if (rc) return rc;
        ids[(*n)++] = (int32_t)x;
        return FR_OK;
    }
    if (!cJSON_IsArray(v)) return fr_fail(c->err, FR_ERR_FORMAT, "%s: field \"%s\" must be an id or a list of ids", c->file, name);
    const cJSON *e;
    cJSON_ArrayForEach(e, v) {
        if (!cJSON_IsNumber(e) || e->valuedouble != floor(e->valuedouble) || e->valuedouble < 0 ||
            e->valuedouble > INT32_MAX)
            return fr_fail(c->err, FR_ERR_FORMAT, "%s: field \"%s\" holds a value that is not a token id", c->file, name);
        if (*n >= max) return fr_fail(c->err, FR_ERR_FORMAT, "%s: field \"%s\" lists more than %d ids", c->file, name, max);
        ids[(*n)++] = (int32_t)e->valuedouble;
    }
    return FR_OK;
}

#define TRY(x)                                                                                     \
    do {                                                                                           \
        fr_status rc_ = (x);                                                                       \
        if (rc_) return rc_;                                                                       \
    } while (0)

/* rope_scaling (or rope_parameters): none/default, or yarn. */
static fr_status parse_rope(ctx_t *c, const cJSON *text, fr_config *cfg) {
    const cJSON *rs = field(text, "rope_scaling");
    const cJSON *rp = field(text, "rope_parameters");
    if (rp && !cJSON_IsObject(rp)) return fr_fail(c->err, FR_ERR_FORMAT, "%s: \"rope_parameters\" must be an object", c->file);
    if (rs && !cJSON_IsObject(rs)) return fr_fail(c->err, FR_ERR_FORMAT, "%s: \"rope_scaling\" must be an object or null", c->file);
    /* The newer transformers spelling carries rope_theta inside rope_parameters. */
    double theta_default = 10000.0;
    if (rp && field(rp, "rope_theta")) TRY(get_num(c, rp, "rope_theta", true, 0, 1.0, 1e12, &theta_default));
    TRY(get_num(c, text, "rope_theta", false, theta_default, 1.0, 1e12, &cfg->rope_theta));
    const cJSON *r = rs ? rs : rp;
    cfg->rope_scaling.yarn = false;
    if (!r) return FR_OK;
    const char *type = get_str(r, "type");
    if (!type) type = get_str(r, "rope_type");
    if (!type || strcmp(type, "default") == 0) return FR_OK;
    if (strcmp(type, "yarn") != 0)
        return fr_fail(c->err, FR_ERR_UNSUPPORTED, "%s: rope scaling type \"%s\" is not supported (supported: yarn)", c->file, type);
    cfg->rope_scaling.yarn = true;
    TRY(get_num(c, r, "factor", true, 1.0, 1.0, 1e6, &cfg->rope_scaling.factor));
    TRY(get_num(c, r, "original_max_position_embeddings", true, 0, 1.0, 1e9,
                &cfg->rope_scaling.original_max_position_embeddings));
    TRY(get_num(c, r, "beta_fast", false, 32.0, 1e-6, 1e6, &cfg->rope_scaling.beta_fast));
    TRY(get_num(c, r, "beta_slow", false, 1.0, 1e-6, 1e6, &cfg->rope_scaling.beta_slow));
    TRY(get_num(c, r, "mscale", false, 1.0, 0.0, 1e3, &cfg->rope_scaling.mscale));
    TRY(get_num(c, r, "mscale_all_dim", false, 0.0, 0.0, 1e3, &cfg->rope_scaling.mscale_all_dim));
    if (field(r, "attention_factor"))
        return fr_fail(c->err, FR_ERR_UNSUPPORTED, "%s: an explicit yarn \"attention_factor\" is not supported", c->file);
    return FR_OK;
}

static const char *const qformat_names[FR_QFMT_COUNT] = {"bf16", "fp8", "mxfp4", "int4"};
static const char *const qgroup_names[FR_QGROUP_COUNT] = {"attention", "dense", "shared_experts", "experts"};

const char *fr_qformat_name(fr_qformat f) { return (unsigned)f < FR_QFMT_COUNT ? qformat_names[f] : "?"; }
const char *fr_qgroup_name(fr_qgroup g) { return (unsigned)g < FR_QGROUP_COUNT ? qgroup_names[g] : "?"; }

int fr_qformat_parse(const char *s, fr_qformat *out) {
    for (int i = 0; i < FR_QFMT_COUNT; i++)
        if (strcmp(s, qformat_names[i]) == 0) {
            *out = (fr_qformat)i;
            return 0;
        }
    return -1;
}

/* "weight_block_size": [rows, cols] of FP8 block scaling. */
static fr_status parse_block_size(ctx_t *c, const cJSON *q, fr_config *cfg) {
    const cJSON *bs = field(q, "weight_block_size");
    if (!cJSON_IsArray(bs) || cJSON_GetArraySize(bs) != 2)
        return fr_fail(c->err, FR_ERR_FORMAT, "%s: fp8 quantization_config needs \"weight_block_size\": [rows, cols]", c->file);
    int b[2];
    for (int i = 0; i < 2; i++) {
        const cJSON *e = cJSON_GetArrayItem(bs, i);
        if (!cJSON_IsNumber(e) || e->valuedouble != floor(e->valuedouble) || e->valuedouble < 1 || e->valuedouble > 65536)
            return fr_fail(c->err, FR_ERR_FORMAT, "%s: weight_block_size must hold two integers in [1, 65536]", c->file);
        b[i] = (int)e->valuedouble;
    }
    const char *fmt = get_str(q, "fmt");
    if (fmt && strcmp(fmt, "e4m3") != 0)
        return fr_fail(c->err, FR_ERR_UNSUPPORTED, "%s: fp8 fmt \"%s\" is not supported (supported: e4m3)",
                       c->file, fmt);
    const char *sf = get_str(q, "scale_fmt");
    cfg->quant.fp8 = true;
    cfg->quant.block_rows = b[0];
    cfg->quant.block_cols = b[1];
    cfg->quant.ue8m0 = sf && strcmp(sf, "ue8m0") == 0;
    return FR_OK;
}

/* compressed-tensors "pack-quantized" INT4 as Kimi K2-Thinking / K2.5 ship it (ARCH 7.3):
 * one config group of symmetric 4-bit integer weights in groups of 32, no activation
 * quantization. Its `ignore` list is not interpreted: the loader expects routed experts
 * in INT4 and everything else unquantized, and checks every tensor against that. */
static fr_status parse_compressed_tensors(ctx_t *c, const cJSON *q, fr_config *cfg) {
    const char *fmt = get_str(q, "format");
    if (!fmt || strcmp(fmt, "pack-quantized") != 0)
        return fr_fail(c->err, FR_ERR_UNSUPPORTED,
                       "%s: compressed-tensors format \"%s\" is not supported (supported: pack-quantized)",
                       c->file, fmt ? fmt : "(missing)");
    const char *status = get_str(q, "quantization_status");
    if (status && strcmp(status, "compressed") != 0)
        return fr_fail(
            c->err, FR_ERR_UNSUPPORTED,
            "%s: compressed-tensors quantization_status \"%s\" is not supported (supported: compressed)",
            c->file, status);
    if (field(q, "kv_cache_scheme"))
        return fr_fail(c->err, FR_ERR_UNSUPPORTED, "%s: compressed-tensors kv_cache_scheme is not supported",
                       c->file);
    const cJSON *groups = field(q, "config_groups");
    if (!cJSON_IsObject(groups) || cJSON_GetArraySize(groups) != 1)
        return fr_fail(c->err, FR_ERR_UNSUPPORTED,
                       "%s: compressed-tensors needs \"config_groups\" with exactly one group", c->file);
    const cJSON *g = groups->child;
    const cJSON *w = cJSON_IsObject(g) ? field(g, "weights") : NULL;
    if (!cJSON_IsObject(w))
        return fr_fail(c->err, FR_ERR_FORMAT,
                       "%s: compressed-tensors config group \"%s\" has no \"weights\" object", c->file,
                       g->string);
    if (field(g, "input_activations") || field(g, "output_activations"))
        return fr_fail(c->err, FR_ERR_UNSUPPORTED,
                       "%s: compressed-tensors activation quantization is not supported", c->file);
    int64_t bits, gs;
    TRY(get_int(c, w, "num_bits", true, 0, 1, 64, &bits));
    const char *type = get_str(w, "type"), *strategy = get_str(w, "strategy");
    bool sym, dyn;
    TRY(get_bool(c, w, "symmetric", false, &sym));
    TRY(get_bool(c, w, "dynamic", false, &dyn));
    TRY(get_int(c, w, "group_size", strategy && !strcmp(strategy, "group"), 0, 1, 1 << 20, &gs));
    if (bits != 4 || !type || strcmp(type, "int") != 0 || !sym || dyn || !strategy ||
        strcmp(strategy, "group") != 0 || gs != 32)
        return fr_fail(
            c->err, FR_ERR_UNSUPPORTED,
            "%s: compressed-tensors weights {num_bits %lld, type %s, symmetric %s, strategy %s, group_size %lld%s}"
            " are not supported (supported: 4-bit symmetric int, strategy group, group_size 32)",
            c->file, (long long)bits, type ? type : "?", sym ? "true" : "false", strategy ? strategy : "?",
            (long long)gs, dyn ? ", dynamic" : "");
    cfg->quant.group[FR_QGROUP_EXPERTS] = FR_QFMT_INT4;
    cfg->quant.group_size = 32;
    return FR_OK;
}

/* quant_method "frontier": what `frontier quantize` writes. format_by_group names each
 * module group's format; a group left out is bf16 (unquantized). */
static fr_status parse_frontier(ctx_t *c, const cJSON *q, fr_config *cfg) {
    const cJSON *fg = field(q, "format_by_group");
    if (!cJSON_IsObject(fg))
        return fr_fail(c->err, FR_ERR_FORMAT, "%s: quant_method frontier needs a \"format_by_group\" object",
                       c->file);
    bool any_fp8 = false, any4 = false;
    for (const cJSON *e = fg->child; e; e = e->next) {
        int g = 0;
        while (g < FR_QGROUP_COUNT && strcmp(e->string, qgroup_names[g]) != 0) g++;
        if (g == FR_QGROUP_COUNT)
            return fr_fail(
                c->err, FR_ERR_FORMAT,
                "%s: format_by_group has an unknown module group \"%.64s\" (groups: attention, dense, shared_experts, experts)",
                c->file, e->string);
        fr_qformat f;
        if (!cJSON_IsString(e) || fr_qformat_parse(e->valuestring, &f) != 0)
            return fr_fail(
                c->err, FR_ERR_UNSUPPORTED,
                "%s: format_by_group.%s names an unknown format \"%.64s\" (supported: bf16, fp8, mxfp4, int4)",
                c->file, e->string, cJSON_IsString(e) ? e->valuestring : "(not a string)");
        /* Attention reads kv_b per head and transposed: 4-bit kernels do not cover that. */
        if (g == FR_QGROUP_ATTENTION && (f == FR_QFMT_MXFP4 || f == FR_QFMT_INT4))
            return fr_fail(c->err, FR_ERR_UNSUPPORTED,
                           "%s: attention weights in %s are not supported (supported: bf16, fp8)", c->file,
                           qformat_names[f]);
        cfg->quant.group[g] = f;
        any_fp8 |= f == FR_QFMT_FP8;
        any4 |= f == FR_QFMT_MXFP4 || f == FR_QFMT_INT4;
    }
    if (any_fp8) TRY(parse_block_size(c, q, cfg));
    if (any4) {
        int64_t gs;
        TRY(get_int(c, q, "group_size", false, 32, 1, 1 << 20, &gs));
        if (gs != 32)
            return fr_fail(c->err, FR_ERR_UNSUPPORTED,
                           "%s: 4-bit group_size %lld is not supported (supported: 32)", c->file,
                           (long long)gs);
        cfg->quant.group_size = 32;
    }
    return FR_OK;
}

static fr_status parse_quant(ctx_t *c, const cJSON *q, fr_config *cfg) {
    memset(&cfg->quant, 0, sizeof cfg->quant);
    if (!q) return FR_OK;
    if (!cJSON_IsObject(q))
        return fr_fail(c->err, FR_ERR_FORMAT, "%s: \"quantization_config\" must be an object", c->file);
    const char *method = get_str(q, "quant_method");
    if (!method)
        return fr_fail(c->err, FR_ERR_FORMAT, "%s: quantization_config has no \"quant_method\"", c->file);
    if (strcmp(method, "fp8") == 0) {
        /* DeepSeek block FP8: every linear weight may be FP8; the release keeps a few BF16. */
        for (int g = 0; g < FR_QGROUP_COUNT; g++) cfg->quant.group[g] = FR_QFMT_FP8;
        cfg->quant.fp8_lenient = true;
        TRY(parse_block_size(c, q, cfg));
    } else if (strcmp(method, "compressed-tensors") == 0) {
        TRY(parse_compressed_tensors(c, q, cfg));
    } else if (strcmp(method, "frontier") == 0) {
        TRY(parse_frontier(c, q, cfg));
    } else {
        return fr_fail(
            c->err, FR_ERR_UNSUPPORTED,
            "%s: quant_method \"%.64s\" is not supported (supported: fp8, compressed-tensors, frontier)",
            c->file, method);
    }
    snprintf(cfg->quant.method, sizeof cfg->quant.method, "%s", method);
    return FR_OK;
}

static fr_status parse_text(ctx_t *c, const cJSON *t, fr_config *cfg) {
    int64_t v;
    TRY(get_int(c, t, "vocab_size", true, 0, 1, MAX_VOCAB, &cfg->vocab_size));
    TRY(get_int(c, t, "hidden_size", true, 0, 1, MAX_DIM, &cfg->hidden_size));
    TRY(get_int(c, t, "num_hidden_layers", true, 0, 1, FR_MAX_LAYERS, &v)); cfg->n_layers = (int)v;
    TRY(get_int(c, t, "num_attention_heads", true, 0, 1, MAX_HEADS, &v)); cfg->n_heads = (int)v;
    TRY(get_int(c, t, "q_lora_rank", false, 0, 0, MAX_DIM, &v)); cfg->q_lora_rank = (int)v;
    TRY(get_int(c, t, "kv_lora_rank", true, 0, 1, MAX_DIM, &v)); cfg->kv_lora_rank = (int)v;
    TRY(get_int(c, t, "qk_nope_head_dim", true, 0, 1, MAX_DIM, &v)); cfg->qk_nope_head_dim = (int)v;
    TRY(get_int(c, t, "qk_rope_head_dim", true, 0, 2, MAX_DIM, &v)); cfg->qk_rope_head_dim = (int)v;
    TRY(get_int(c, t, "v_head_dim", true, 0, 1, MAX_DIM, &v)); cfg->v_head_dim = (int)v;
    if (cfg->qk_rope_head_dim % 2)
        return fr_fail(c->err, FR_ERR_FORMAT, "%s: qk_rope_head_dim = %d must be even (rotary pairs)", c->file, cfg->qk_rope_head_dim);

    TRY(get_int(c, t, "n_routed_experts", false, 0, 0, FR_MAX_EXPERTS, &v)); cfg->n_routed_experts = (int)v;
    TRY(get_int(c, t, "first_k_dense_replace", false, 0, 0, FR_MAX_LAYERS, &v)); cfg->first_k_dense_replace = (int)v;
    TRY(get_int(c, t, "moe_layer_freq", false, 1, 1, FR_MAX_LAYERS, &v)); cfg->moe_layer_freq = (int)v;
    TRY(get_int(c, t, "num_nextn_predict_layers", false, 0, 0, FR_MAX_NEXTN, &v)); cfg->num_nextn_predict_layers = (int)v;
    /* MTP layers are full decoder layers too: their FFN kind decides which fields are needed. */
    bool any_dense = false, any_moe = false;
    for (int l = 0; l < cfg->n_layers + cfg->num_nextn_predict_layers; l++) {
        if (fr_config_layer_is_moe(cfg, l)) any_moe = true;
        else any_dense = true;
    }
    TRY(get_int(c, t, "intermediate_size", any_dense, 0, 1, MAX_DIM, &cfg->intermediate_size));
    if (any_moe) {
        const char *m = get_str(t, "topk_method");
        if (m && strcmp(m, "noaux_tc") != 0)
            return fr_fail(c->err, FR_ERR_UNSUPPORTED, "%s: topk_method \"%s\" is not supported (supported: noaux_tc)", c->file, m);
        m = get_str(t, "scoring_func");
        if (m && strcmp(m, "sigmoid") != 0)
            return fr_fail(c->err, FR_ERR_UNSUPPORTED, "%s: scoring_func \"%s\" is not supported (supported: sigmoid)", c->file, m);
        TRY(get_int(c, t, "moe_intermediate_size", true, 0, 1, MAX_DIM, &cfg->moe_intermediate_size));
        TRY(get_int(c, t, "num_experts_per_tok", true, 0, 1, cfg->n_routed_experts, &v)); cfg->n_experts_per_tok = (int)v;
        TRY(get_int(c, t, "n_shared_experts", true, 0, 0, 64, &v)); cfg->n_shared_experts = (int)v;
        TRY(get_int(c, t, "n_group", false, 1, 1, cfg->n_routed_experts, &v)); cfg->n_group = (int)v;
        TRY(get_int(c, t, "topk_group", false, cfg->n_group, 1, cfg->n_group, &v)); cfg->topk_group = (int)v;
        if (cfg->n_routed_experts % cfg->n_group)
            return fr_fail(c->err, FR_ERR_FORMAT, "%s: n_routed_experts = %d is not divisible by n_group = %d", c->file,
                           cfg->n_routed_experts, cfg->n_group);
        if ((int64_t)cfg->topk_group * (cfg->n_routed_experts / cfg->n_group) < cfg->n_experts_per_tok)
            return fr_fail(c->err, FR_ERR_FORMAT, "%s: topk_group = %d groups of %d experts cannot hold num_experts_per_tok = %d",
                           c->file, cfg->topk_group, cfg->n_routed_experts / cfg->n_group, cfg->n_experts_per_tok);
        TRY(get_bool(c, t, "norm_topk_prob", true, &cfg->norm_topk_prob));
        double rsf;
        TRY(get_num(c, t, "routed_scaling_factor", true, 1.0, 0.0, 1e6, &rsf));
        cfg->routed_scaling_factor = (float)rsf;
    }
    double eps;
    TRY(get_num(c, t, "rms_norm_eps", false, 1e-6, 0.0, 1.0, &eps));
    cfg->rms_norm_eps = (float)eps;
    TRY(get_int(c, t, "max_position_embeddings", false, 4096, 1, INT32_MAX, &cfg->max_position_embeddings));
    TRY(get_bool(c, t, "tie_word_embeddings", false, &cfg->tie_word_embeddings));
    TRY(parse_rope(c, t, cfg));
    TRY(get_int(c, t, "bos_token_id", false, -1, -1, INT32_MAX, &v)); cfg->bos_token_id = (int32_t)v;
    TRY(get_ids(c, t, "eos_token_id", cfg->eos_token_ids, FR_MAX_EOS, &cfg->n_eos));
    return FR_OK;
}

/* Fill cfg->dsa.shared from an explicit per-layer list: `indexer_types` ("full" /
 * "shared") or `index_topk_pattern` ("F" / "S" characters). n_main entries, or one more
 * per MTP layer (which must then be full). */
static fr_status parse_indexer_list(ctx_t *c, const char *name, const cJSON *list, const char *pattern,
                                    fr_config *cfg) {
    const int n_main = cfg->n_layers, n_all = n_main + cfg->num_nextn_predict_layers;
    const int n = list ? cJSON_GetArraySize(list) : (int)strnlen(pattern, (size_t)n_all + 1);
    if (n != n_main && n != n_all)
        return fr_fail(c->err, FR_ERR_FORMAT, "%s: \"%s\" has %d entries, num_hidden_layers is %d", c->file, name, n,
                       n_main);
    for (int l = 0; l < n; l++) {
        bool full, shared;
        if (list) {
            const cJSON *e = cJSON_GetArrayItem(list, l);
            const char *v = cJSON_IsString(e) ? e->valuestring : "";
            full = strcmp(v, "full") == 0;
            shared = strcmp(v, "shared") == 0;
        } else {
            full = pattern[l] == 'F';
            shared = pattern[l] == 'S';
        }
        if (!full && !shared)
            return fr_fail(c->err, FR_ERR_FORMAT, "%s: \"%s\" entry %d is not %s", c->file, name, l,
                           list ? "\"full\" or \"shared\"" : "'F' or 'S'");
        if (shared && l == 0)
            return fr_fail(c->err, FR_ERR_FORMAT, "%s: \"%s\" makes layer 0 shared: it has no earlier full layer",
                           c->file, name);
        if (shared && l >= n_main)
            return fr_fail(c->err, FR_ERR_UNSUPPORTED, "%s: \"%s\" makes MTP layer %d shared (supported: full)",
                           c->file, name, l);
        cfg->dsa.shared[l] = shared;
    }
    return FR_OK;
}

/* DSA indexer fields (ARCH 2.2, 2.4, 5). Required for the DSA architectures, refused
 * elsewhere: an indexer config on a dense-attention architecture is a contradiction. */
static fr_status parse_dsa(ctx_t *c, const cJSON *t, fr_config *cfg) {
    static const char *const keys[] = {"index_topk", "index_n_heads", "index_head_dim", "indexer_types"};
    memset(cfg->dsa.shared, 0, sizeof cfg->dsa.shared);
    if (!cfg->dsa.enabled) {
        for (size_t i = 0; i < sizeof keys / sizeof *keys; i++)
            if (field(t, keys[i]))
                return fr_fail(c->err, FR_ERR_UNSUPPORTED,
                               "%s: DSA field \"%s\" with architecture %s (DSA needs DeepseekV32ForCausalLM or "
                               "GlmMoeDsaForCausalLM)",
                               c->file, keys[i], cfg->architecture);
        return FR_OK;
    }
    int64_t v;
    TRY(get_int(c, t, "index_n_heads", true, 0, 1, MAX_HEADS, &v)); cfg->dsa.n_heads = (int)v;
    TRY(get_int(c, t, "index_head_dim", true, 0, 1, MAX_DIM, &v)); cfg->dsa.head_dim = (int)v;
    /* Bounded so [tokens, index_topk] index buffers stay within int32 and memory. */
    TRY(get_int(c, t, "index_topk", true, 0, 1, 1 << 24, &v)); cfg->dsa.topk = (int)v;
    TRY(get_bool(c, t, "indexer_rope_interleave", cfg->dsa.rope_interleaved, &cfg->dsa.rope_interleaved));
    if (cfg->dsa.head_dim < cfg->qk_rope_head_dim)
        return fr_fail(c->err, FR_ERR_FORMAT, "%s: index_head_dim = %d is smaller than qk_rope_head_dim = %d (its rotated part)",
                       c->file, cfg->dsa.head_dim, cfg->qk_rope_head_dim);
    if (cfg->q_lora_rank <= 0)
        return fr_fail(c->err, FR_ERR_UNSUPPORTED, "%s: DSA needs q_lora_rank (the indexer query reads the q latent)",
                       c->file);
    /* Which layers run their own indexer: an explicit list, a pattern string, or the
     * GLM-5.1 rule "full iff max(l - offset + 1, 0) mod freq == 0" (ARCH 2.4). */
    const cJSON *types = field(t, "indexer_types");
    const char *pattern = get_str(t, "index_topk_pattern");
    if (types && !cJSON_IsArray(types))
        return fr_fail(c->err, FR_ERR_FORMAT, "%s: \"indexer_types\" must be a list of \"full\" / \"shared\"", c->file);
    if (field(t, "index_topk_pattern") && !pattern)
        return fr_fail(c->err, FR_ERR_FORMAT, "%s: \"index_topk_pattern\" must be a string of 'F' / 'S'", c->file);
    if (types) return parse_indexer_list(c, "indexer_types", types, NULL, cfg);
    if (pattern) return parse_indexer_list(c, "index_topk_pattern", NULL, pattern, cfg);
    int64_t freq, offset;
    TRY(get_int(c, t, "index_topk_freq", false, 1, 1, FR_MAX_LAYERS, &freq));
    TRY(get_int(c, t, "index_skip_topk_offset", false, 0, 0, FR_MAX_LAYERS, &offset));
    for (int l = 0; l < cfg->n_layers; l++) {
        int64_t k = l - offset + 1;
        cfg->dsa.shared[l] = (k > 0 ? k : 0) % freq != 0;
    }
    if (cfg->dsa.shared[0])
        return fr_fail(c->err, FR_ERR_FORMAT,
                       "%s: index_topk_freq %lld with index_skip_topk_offset %lld makes layer 0 shared: it has no "
                       "earlier full layer",
                       c->file, (long long)freq, (long long)offset);
    return FR_OK;
}

static fr_status parse_all(ctx_t *c, const cJSON *root, const cJSON *gen, fr_config *cfg) {
    if (!cJSON_IsObject(root)) return fr_fail(c->err, FR_ERR_FORMAT, "%s: top level is not a JSON object", c->file);
    const cJSON *archs = field(root, "architectures");
    const cJSON *a0 = cJSON_IsArray(archs) ? cJSON_GetArrayItem(archs, 0) : NULL;
    if (!cJSON_IsString(a0)) return fr_fail(c->err, FR_ERR_FORMAT, "%s: missing required field \"architectures\"", c->file);
    snprintf(cfg->architecture, sizeof cfg->architecture, "%s", a0->valuestring);

    const cJSON *text = root;
    const cJSON *quant = field(root, "quantization_config");
    if (strcmp(a0->valuestring, "KimiK25ForConditionalGeneration") == 0) {
        text = field(root, "text_config");
        if (!cJSON_IsObject(text)) return fr_fail(c->err, FR_ERR_FORMAT, "%s: KimiK25ForConditionalGeneration needs a \"text_config\" object", c->file);
        snprintf(cfg->weight_prefix, sizeof cfg->weight_prefix, "language_model.");
        const cJSON *tq = field(text, "quantization_config");
        if (tq) quant = tq;
        const char *mt = get_str(text, "model_type");
        if (mt && strcmp(mt, "deepseek_v3") != 0 && strcmp(mt, "kimi_k2") != 0)
            return fr_fail(c->err, FR_ERR_UNSUPPORTED, "%s: text_config model_type \"%s\" is not supported (supported: deepseek_v3, kimi_k2)", c->file, mt);
        snprintf(cfg->model_type, sizeof cfg->model_type, "%s", mt ? mt : "deepseek_v3");
    } else if (strcmp(a0->valuestring, "DeepseekV3ForCausalLM") == 0) {
        const char *mt = get_str(root, "model_type");
        if (!mt) return fr_fail(c->err, FR_ERR_FORMAT, "%s: missing required field \"model_type\"", c->file);
        if (strcmp(mt, "deepseek_v3") != 0 && strcmp(mt, "kimi_k2") != 0)
            return fr_fail(c->err, FR_ERR_UNSUPPORTED, "%s: model_type \"%s\" is not supported for DeepseekV3ForCausalLM (supported: deepseek_v3, kimi_k2)", c->file, mt);
        snprintf(cfg->model_type, sizeof cfg->model_type, "%s", mt);
    } else if (strcmp(a0->valuestring, "DeepseekV32ForCausalLM") == 0 ||
               strcmp(a0->valuestring, "GlmMoeDsaForCausalLM") == 0) {
        const bool glm = a0->valuestring[0] == 'G';
        const char *want = glm ? "glm_moe_dsa" : "deepseek_v32";
        const char *mt = get_str(root, "model_type");
        if (!mt) return fr_fail(c->err, FR_ERR_FORMAT, "%s: missing required field \"model_type\"", c->file);
        if (strcmp(mt, want) != 0)
            return fr_fail(c->err, FR_ERR_UNSUPPORTED, "%s: model_type \"%s\" is not supported for %s (supported: %s)",
                           c->file, mt, a0->valuestring, want);
        snprintf(cfg->model_type, sizeof cfg->model_type, "%s", mt);
        cfg->dsa.enabled = true;
        /* ARCH 4.9: the V3.2 indexer rotates half-split pairs, GLM-5's interleaved ones. */
        cfg->dsa.rope_interleaved = glm;
    } else {
        return fr_fail(c->err, FR_ERR_UNSUPPORTED,
                       "%s: architecture \"%s\" is not supported (supported: DeepseekV3ForCausalLM, "
                       "KimiK25ForConditionalGeneration, DeepseekV32ForCausalLM, GlmMoeDsaForCausalLM)",
                       c->file, a0->valuestring);
    }
    TRY(parse_text(c, text, cfg));
    TRY(parse_dsa(c, text, cfg));
    TRY(parse_quant(c, quant, cfg));

    /* generation_config.json, when present, decides the stop ids (as transformers does). */
    if (gen) {
        ctx_t g = {"generation_config.json", c->err};
        if (!cJSON_IsObject(gen)) return fr_fail(c->err, FR_ERR_FORMAT, "generation_config.json: top level is not a JSON object");
        int32_t ids[FR_MAX_EOS];
        int n;
        TRY(get_ids(&g, gen, "eos_token_id", ids, FR_MAX_EOS, &n));
        if (n) {
            memcpy(cfg->eos_token_ids, ids, sizeof ids);
            cfg->n_eos = n;
        }
        int64_t bos;
        TRY(get_int(&g, gen, "bos_token_id", false, cfg->bos_token_id, -1, INT32_MAX, &bos));
        cfg->bos_token_id = (int32_t)bos;
    }
    for (int i = 0; i < cfg->n_eos; i++)
        if (cfg->eos_token_ids[i] >= cfg->vocab_size)
            return fr_fail(c->err, FR_ERR_FORMAT, "%s: eos_token_id %d is outside the vocabulary (%lld)", c->file,
                           cfg->eos_token_ids[i], (long long)cfg->vocab_size);
    return FR_OK;
}

fr_status fr_config_parse(const char *json, const char *generation_json, const char *name, fr_config *cfg,
                          fr_error *err) {
    memset(cfg, 0, sizeof *cfg);
    ctx_t c = {name, err};
    cJSON *root = NULL, *gen = NULL;
    fr_status rc = fr_json_parse(json, strlen(json), name, &root, err);
    if (rc) return rc;
    if (generation_json) {
        rc = fr_json_parse(generation_json, strlen(generation_json), "generation_config.json", &gen, err);
        if (rc) goto out;
    }
    rc = parse_all(&c, root, gen, cfg);
out:
    cJSON_Delete(root);
    cJSON_Delete(gen);
    return rc;
}

fr_status fr_config_load(const char *dir, fr_config *cfg, fr_error *err) {
    char path[4096], gpath[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    snprintf(gpath, sizeof gpath, "%s/generation_config.json", dir);
    char *json = NULL, *gen = NULL;
    fr_status rc = fr_read_file(path, MAX_CONFIG_BYTES, &json, NULL, err);
    if (rc) return rc;
    FILE *f = fopen(gpath, "rb");
    if (f) {
        fclose(f);
        rc = fr_read_file(gpath, MAX_CONFIG_BYTES, &gen, NULL, err);
        if (rc) goto out;
    }
    rc = fr_config_parse(json, gen, path, cfg, err);
out:
    free(json);
    free(gen);
    return rc;
}

bool fr_config_layer_is_moe(const fr_config *cfg, int l) {
    return cfg->n_routed_experts > 0 && l >= cfg->first_k_dense_replace && l % cfg->moe_layer_freq == 0;
}

double fr_config_softmax_scale(const fr_config *cfg) {
    double s = 1.0 / sqrt((double)fr_config_qk_head_dim(cfg));
    if (cfg->rope_scaling.yarn && cfg->rope_scaling.factor > 1.0 && cfg->rope_scaling.mscale_all_dim > 0.0) {
        double m = 0.1 * cfg->rope_scaling.mscale_all_dim * log(cfg->rope_scaling.factor) + 1.0;
        s *= m * m;
    }
    return s;
}

static double yarn_mscale(double factor, double m) { return factor <= 1.0 ? 1.0 : 0.1 * m * log(factor) + 1.0; }

double fr_config_rope_mscale(const fr_config *cfg) {
    if (!cfg->rope_scaling.yarn) return 1.0;
    double f = cfg->rope_scaling.factor;
    return yarn_mscale(f, cfg->rope_scaling.mscale) / yarn_mscale(f, cfg->rope_scaling.mscale_all_dim);
}

void fr_config_rope_freqs(const fr_config *cfg, double *out) {
    int d = cfg->qk_rope_head_dim, half = d / 2;
    double theta = cfg->rope_theta;
    for (int i = 0; i < half; i++) out[i] = pow(theta, -2.0 * i / d);
    if (!cfg->rope_scaling.yarn) return;
    const double pi = 3.14159265358979323846;
    double f = cfg->rope_scaling.factor, L0 = cfg->rope_scaling.original_max_position_embeddings;
    double corr_fast = d * log(L0 / (2 * pi * cfg->rope_scaling.beta_fast)) / (2 * log(theta));
    double corr_slow = d * log(L0 / (2 * pi * cfg->rope_scaling.beta_slow)) / (2 * log(theta));
    double low = fmax(floor(corr_fast), 0.0), high = fmin(ceil(corr_slow), (double)(d - 1));
    if (low == high) high += 0.001;
    for (int i = 0; i < half; i++) {
        double ramp = fmin(fmax((i - low) / (high - low), 0.0), 1.0);
        double keep = 1.0 - ramp;
        out[i] = out[i] / f * (1.0 - keep) + out[i] * keep;
    }
}
