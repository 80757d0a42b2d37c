/* model.c - bind checkpoint tensors to weight views and validate them (see model.h). */
#include "model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NAME_MAX_LEN 256

typedef struct {
    const fr_config *cfg;
    const fr_st_set *st;
    fr_error *err;
} binder;

static const fr_st_tensor *find(const binder *b, const char *name) { return fr_st_find(b->st, name); }

static int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

/* Bind tensor `name` expecting shape [rows, cols] (cols == 0: a 1-D vector of rows
 * elements, bound as a 1 x rows view). */
static fr_status bind(const binder *b, const char *name, int64_t rows, int64_t cols, fr_weight *w) {
    const fr_st_tensor *t = find(b, name);
    if (!t) return fr_fail(b->err, FR_ERR_FORMAT, "checkpoint has no tensor \"%s\"", name);
    bool vec = cols == 0;
    if (vec ? (t->ndim != 1 || t->shape[0] != rows) : (t->ndim != 2 || t->shape[0] != rows || t->shape[1] != cols)) {
        char found[96] = "";
        size_t o = 0;
        for (int i = 0; i < t->ndim && o < sizeof found - 24; i++)
            o += (size_t)snprintf(found + o, sizeof found - o, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
        if (vec)
            return fr_fail(b->err, FR_ERR_FORMAT, "tensor \"%s\" in %s has shape [%s], config.json implies [%lld]", name,
                           t->file, found, (long long)rows);
        return fr_fail(b->err, FR_ERR_FORMAT, "tensor \"%s\" in %s has shape [%s], config.json implies [%lld, %lld]",
                       name, t->file, found, (long long)rows, (long long)cols);
    }
    memset(w, 0, sizeof *w);
    w->dtype = t->dtype;
    w->rows = vec ? 1 : rows;
    w->cols = vec ? rows : cols;
    w->data = t->data;
    switch (t->dtype) {
    case FR_DTYPE_F32: case FR_DTYPE_F16: case FR_DTYPE_BF16: return FR_OK;
    case FR_DTYPE_F8_E4M3: break;
    default:
        return fr_fail(b->err, FR_ERR_UNSUPPORTED, "tensor \"%s\" in %s has dtype %s (supported: F32, F16, BF16, F8_E4M3)",
                       name, t->file, fr_dtype_name(t->dtype));
    }
    if (vec) return fr_fail(b->err, FR_ERR_UNSUPPORTED, "tensor \"%s\" in %s: F8_E4M3 vectors are not supported", name, t->file);
    if (!b->cfg->quant.fp8)
        return fr_fail(b->err, FR_ERR_FORMAT, "tensor \"%s\" in %s is F8_E4M3 but config.json has no fp8 quantization_config",
                       name, t->file);
    char sname[NAME_MAX_LEN + 16];
    snprintf(sname, sizeof sname, "%s_scale_inv", name);
    const fr_st_tensor *s = find(b, sname);
    int64_t br = b->cfg->quant.block_rows, bc = b->cfg->quant.block_cols;
    int64_t sr = ceil_div(rows, br), sc = ceil_div(cols, bc);
    if (!s) return fr_fail(b->err, FR_ERR_FORMAT, "F8_E4M3 tensor \"%s\" has no \"%s\"", name, sname);
    if (s->dtype != FR_DTYPE_F32 || s->ndim != 2 || s->shape[0] != sr || s->shape[1] != sc)
        return fr_fail(b->err, FR_ERR_FORMAT, "tensor \"%s\" in %s must be F32 [%lld, %lld] for %lldx%lld blocks of a [%lld, %lld] weight",
                       sname, s->file, (long long)sr, (long long)sc, (long long)br, (long long)bc, (long long)rows,
                       (long long)cols);
    w->scale_inv = (const float *)s->data;
    w->block_rows = (int32_t)br;
    w->block_cols = (int32_t)bc;
    w->scale_cols = sc;
    return FR_OK;
}

#define TRY(x)                                                                                     \
    do {                                                                                           \
        fr_status rc_ = (x);                                                                       \
        if (rc_) return rc_;                                                                       \
    } while (0)

static fr_status bind_layer(const binder *b, int l, fr_layer *L) {
    const fr_config *c = b->cfg;
    const char *pre = c->weight_prefix;
    const int64_t D = c->hidden_size, H = c->n_heads, dn = c->qk_nope_head_dim, dr = c->qk_rope_head_dim,
                  dv = c->v_head_dim, rkv = c->kv_lora_rank, rq = c->q_lora_rank;
    char n[NAME_MAX_LEN];
#define NM(fmt, ...) (snprintf(n, sizeof n, "%smodel.layers.%d." fmt, pre, l, ##__VA_ARGS__), n)
    TRY(bind(b, NM("input_layernorm.weight"), D, 0, &L->input_norm));
    TRY(bind(b, NM("post_attention_layernorm.weight"), D, 0, &L->post_norm));
    L->has_q_lora = rq > 0;
    if (rq > 0) {
        TRY(bind(b, NM("self_attn.q_a_proj.weight"), rq, D, &L->q_a));
        TRY(bind(b, NM("self_attn.q_a_layernorm.weight"), rq, 0, &L->q_a_norm));
        TRY(bind(b, NM("self_attn.q_b_proj.weight"), H * (dn + dr), rq, &L->q_b));
    } else {
        TRY(bind(b, NM("self_attn.q_proj.weight"), H * (dn + dr), D, &L->q));
    }
    TRY(bind(b, NM("self_attn.kv_a_proj_with_mqa.weight"), rkv + dr, D, &L->kv_a));
    TRY(bind(b, NM("self_attn.kv_a_layernorm.weight"), rkv, 0, &L->kv_a_norm));
    TRY(bind(b, NM("self_attn.kv_b_proj.weight"), H * (dn + dv), rkv, &L->kv_b));
    TRY(bind(b, NM("self_attn.o_proj.weight"), D, H * dv, &L->o));
    L->is_moe = fr_config_layer_is_moe(c, l);
    if (!L->is_moe) {
        const int64_t I = c->intermediate_size;
        TRY(bind(b, NM("mlp.gate_proj.weight"), I, D, &L->gate));
        TRY(bind(b, NM("mlp.up_proj.weight"), I, D, &L->up));
        TRY(bind(b, NM("mlp.down_proj.weight"), D, I, &L->down));
        return FR_OK;
    }
    const int E = c->n_routed_experts;
    const int64_t I = c->moe_intermediate_size, Is = I * c->n_shared_experts;
    TRY(bind(b, NM("mlp.gate.weight"), E, D, &L->router));
    TRY(bind(b, NM("mlp.gate.e_score_correction_bias"), E, 0, &L->router_bias));
    L->has_shared = Is > 0;
    if (Is > 0) {
        TRY(bind(b, NM("mlp.shared_experts.gate_proj.weight"), Is, D, &L->gate));
        TRY(bind(b, NM("mlp.shared_experts.up_proj.weight"), Is, D, &L->up));
        TRY(bind(b, NM("mlp.shared_experts.down_proj.weight"), D, Is, &L->down));
    }
    L->exp_gate = calloc((size_t)E, sizeof(fr_weight));
    L->exp_up = calloc((size_t)E, sizeof(fr_weight));
    L->exp_down = calloc((size_t)E, sizeof(fr_weight));
    L->experts = calloc((size_t)E, sizeof(fr_mlp));
    if (!L->exp_gate || !L->exp_up || !L->exp_down || !L->experts)
        return fr_fail(b->err, FR_ERR_NOMEM, "out of memory binding %d experts", E);
    for (int e = 0; e < E; e++) {
        TRY(bind(b, NM("mlp.experts.%d.gate_proj.weight", e), I, D, &L->exp_gate[e]));
        TRY(bind(b, NM("mlp.experts.%d.up_proj.weight", e), I, D, &L->exp_up[e]));
        TRY(bind(b, NM("mlp.experts.%d.down_proj.weight", e), D, I, &L->exp_down[e]));
        L->experts[e] = (fr_mlp){&L->exp_gate[e], &L->exp_up[e], &L->exp_down[e]};
    }
#undef NM
    return FR_OK;
}

fr_status fr_model_from_set(const fr_config *cfg, fr_st_set *st, fr_model **out, fr_error *err) {
    *out = NULL;
    fr_model *m = calloc(1, sizeof *m);
    if (!m) {
        fr_st_close(st);
        return fr_fail(err, FR_ERR_NOMEM, "out of memory");
    }
    m->cfg = *cfg;
    m->st = st;
    fr_status rc = FR_ERR_NOMEM;
    m->layers = calloc((size_t)cfg->n_layers, sizeof *m->layers);
    m->rope_freqs = calloc((size_t)cfg->qk_rope_head_dim / 2 + 1, sizeof *m->rope_freqs);
    if (!m->layers || !m->rope_freqs) {
        fr_fail(err, rc, "out of memory");
        goto fail;
    }
    binder b = {&m->cfg, st, err};
    const char *pre = cfg->weight_prefix;
    char n[NAME_MAX_LEN];
    const int64_t V = cfg->vocab_size, D = cfg->hidden_size;
    snprintf(n, sizeof n, "%smodel.embed_tokens.weight", pre);
    if ((rc = bind(&b, n, V, D, &m->embed))) goto fail;
    snprintf(n, sizeof n, "%smodel.norm.weight", pre);
    if ((rc = bind(&b, n, D, 0, &m->final_norm))) goto fail;
    snprintf(n, sizeof n, "%slm_head.weight", pre);
    if (cfg->tie_word_embeddings && !fr_st_find(st, n)) m->lm_head = m->embed;
    else if ((rc = bind(&b, n, V, D, &m->lm_head))) goto fail;
    for (int l = 0; l < cfg->n_layers; l++)
        if ((rc = bind_layer(&b, l, &m->layers[l]))) goto fail;
    fr_config_rope_freqs(cfg, m->rope_freqs);
    m->softmax_scale = (float)fr_config_softmax_scale(cfg);
    m->rope_mscale = (float)fr_config_rope_mscale(cfg);
    *out = m;
    return FR_OK;
fail:
    fr_model_free(m);
    return rc;
}

fr_status fr_model_load(const char *dir, fr_model **out, fr_error *err) {
    fr_config cfg;
    fr_st_set *st = NULL;
    TRY(fr_config_load(dir, &cfg, err));
    TRY(fr_st_open_dir(dir, &st, err));
    return fr_model_from_set(&cfg, st, out, err);
}

void fr_model_free(fr_model *m) {
    if (!m) return;
    if (m->layers) {
        for (int l = 0; l < m->cfg.n_layers; l++) {
            free(m->layers[l].exp_gate);
            free(m->layers[l].exp_up);
            free(m->layers[l].exp_down);
            free(m->layers[l].experts);
        }
    }
    free(m->layers);
    free(m->rope_freqs);
    fr_st_close(m->st);
    free(m);
}

/* Layer index of a tensor name "...model.layers.N....", or -1. */
static int layer_of(const char *name) {
    const char *p = strstr(name, "model.layers.");
    if (!p) return -1;
    return atoi(p + strlen("model.layers."));
}

static int64_t weight_elems(const fr_weight *w) { return w->rows * w->cols; }

void fr_model_stats_compute(const fr_model *m, fr_model_stats *s) {
    const fr_config *c = &m->cfg;
    memset(s, 0, sizeof *s);
    for (size_t i = 0; i < fr_st_count(m->st); i++) {
        const fr_st_tensor *t = fr_st_at(m->st, i);
        s->bytes_by_dtype[t->dtype] += (int64_t)t->nbytes;
        size_t len = strlen(t->name);
        if (len > 10 && strcmp(t->name + len - 10, "_scale_inv") == 0) continue;
        int64_t el = 1;
        for (int d = 0; d < t->ndim; d++) el *= t->shape[d];
        if (layer_of(t->name) >= c->n_layers) s->params_mtp += el;
        else s->params_total += el;
    }
    /* Active = total minus the routed experts a token does not use. */
    int64_t unused = 0;
    for (int l = 0; l < c->n_layers; l++) {
        const fr_layer *L = &m->layers[l];
        if (!L->is_moe) continue;
        int64_t per = weight_elems(&L->exp_gate[0]) + weight_elems(&L->exp_up[0]) + weight_elems(&L->exp_down[0]);
        unused += per * (c->n_routed_experts - c->n_experts_per_tok);
    }
    s->params_active = s->params_total - unused;
    s->kv_bytes_per_token_bf16 = (int64_t)c->n_layers * (c->kv_lora_rank + c->qk_rope_head_dim) * 2;
    s->kv_bytes_per_token = s->kv_bytes_per_token_bf16 * 2;
}
