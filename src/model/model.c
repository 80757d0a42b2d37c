/* model.c - bind checkpoint tensors to weight views and validate them (see model.h).
 *
 * A linear weight `NAME.weight` of a module group may be stored in one of three forms:
 * the plain tensor (F32/F16/BF16, or F8_E4M3 with `NAME.weight_scale_inv`), MXFP4
 * (`NAME.weight_blocks` U8 [out, in/32, 16] + `NAME.weight_scales` U8 [out, in/32]) or
 * compressed-tensors INT4 (`NAME.weight_packed` I32 [out, in/8] + `NAME.weight_scale`
 * BF16 [out, in/32] + `NAME.weight_shape` I32 [2]). The stored form decides the view;
 * it must agree with the format config.json's quantization_config declares for the
 * group, and every companion tensor's shape and dtype with the weight's [out, in]. */
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
    if (!t) {
        char alt[NAME_MAX_LEN + 16];
        snprintf(alt, sizeof alt, "%s_blocks", name);
        if (!find(b, alt)) snprintf(alt, sizeof alt, "%s_packed", name);
        if (find(b, alt))
            return fr_fail(b->err, FR_ERR_UNSUPPORTED,
                           "tensor \"%s\" is stored 4-bit (\"%s\"): only the linear weights of"
                           " attention, MLPs and experts may be",
                           name, alt);
        return fr_fail(b->err, FR_ERR_FORMAT, "checkpoint has no tensor \"%s\"", name);
    }
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

/* "[a, b, c]" of a tensor's shape, for messages. */
typedef struct {
    char s[96];
} shape_text;

static shape_text shape_of(const fr_st_tensor *t) {
    shape_text r = {""};
    size_t o = 0;
    for (int i = 0; i < t->ndim && o < sizeof r.s - 24; i++)
        o += (size_t)snprintf(r.s + o, sizeof r.s - o, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
    return r;
}

static bool shape_is(const fr_st_tensor *t, int ndim, int64_t d0, int64_t d1, int64_t d2) {
    const int64_t d[3] = {d0, d1, d2};
    if (t->ndim != ndim) return false;
    for (int i = 0; i < ndim; i++)
        if (t->shape[i] != d[i]) return false;
    return true;
}

/* A companion tensor (scales, shape) of a 4-bit weight: present, of dtype dt and shape
 * [d0, d1(, d2)] (ndim 1..3). */
static fr_status companion(const binder *b, const char *wname, const char *name, fr_dtype dt, int ndim,
                           int64_t d0, int64_t d1, int64_t d2, const fr_st_tensor **out) {
    const fr_st_tensor *t = find(b, name);
    if (!t) return fr_fail(b->err, FR_ERR_FORMAT, "4-bit weight \"%s\" has no \"%s\"", wname, name);
    if (t->dtype != dt || !shape_is(t, ndim, d0, d1, d2)) {
        char want[96];
        if (ndim == 1)
            snprintf(want, sizeof want, "%lld", (long long)d0);
        else if (ndim == 2)
            snprintf(want, sizeof want, "%lld, %lld", (long long)d0, (long long)d1);
        else
            snprintf(want, sizeof want, "%lld, %lld, %lld", (long long)d0, (long long)d1, (long long)d2);
        return fr_fail(b->err, FR_ERR_FORMAT, "tensor \"%s\" in %s is %s [%s], expected %s [%s] for \"%s\"",
                       name, t->file, fr_dtype_name(t->dtype), shape_of(t).s, fr_dtype_name(dt), want, wname);
    }
    *out = t;
    return FR_OK;
}

/* What config.json says about a group, for messages. */
static const char *declared(const fr_config *c, fr_qgroup g, char *buf, size_t n) {
    if (!c->quant.method[0])
        snprintf(buf, n, "config.json has no quantization_config (every %s weight unquantized)",
                 fr_qgroup_name(g));
    else
        snprintf(buf, n, "config.json's quantization_config (%s) declares the %s group %s", c->quant.method,
                 fr_qgroup_name(g), fr_qformat_name(c->quant.group[g]));
    return buf;
}

/* Bind the linear weight `name` ("....weight") of module group g as an [rows, cols] view
 * in whichever form it is stored (see the top of this file). */
static fr_status bind_linear(const binder *b, const char *name, int64_t rows, int64_t cols, fr_qgroup g,
                             fr_weight *w) {
    const fr_config *c = b->cfg;
    char bn[NAME_MAX_LEN + 16], sn[NAME_MAX_LEN + 16], pn[NAME_MAX_LEN + 16], gn[NAME_MAX_LEN + 16],
        hn[NAME_MAX_LEN + 16], msg[160];
    snprintf(bn, sizeof bn, "%s_blocks", name);
    snprintf(sn, sizeof sn, "%s_scales", name);
    snprintf(pn, sizeof pn, "%s_packed", name);
    snprintf(gn, sizeof gn, "%s_scale", name);
    snprintf(hn, sizeof hn, "%s_shape", name);
    const fr_st_tensor *plain = find(b, name), *blocks = find(b, bn), *packed = find(b, pn);
    const fr_qformat want = c->quant.group[g];
    if (!!plain + !!blocks + !!packed > 1)
        return fr_fail(b->err, FR_ERR_FORMAT, "weight \"%s\" is stored in more than one form (%s%s%s)", name,
                       plain ? "plain" : "", blocks ? (plain ? ", MXFP4 _blocks" : "MXFP4 _blocks") : "",
                       packed ? ", INT4 _packed" : "");
    if (!plain && !blocks && !packed)
        return fr_fail(b->err, FR_ERR_FORMAT, "checkpoint has no tensor \"%s\"",
                       want == FR_QFMT_MXFP4  ? bn
                       : want == FR_QFMT_INT4 ? pn
                                              : name);
    if (plain) {
        fr_qformat have = plain->dtype == FR_DTYPE_F8_E4M3 ? FR_QFMT_FP8 : FR_QFMT_BF16;
        /* F8 without any fp8 config keeps its long-standing message (bind() below). */
        if (have != want && c->quant.fp8 && !(c->quant.fp8_lenient && have == FR_QFMT_BF16))
            return fr_fail(b->err, FR_ERR_FORMAT, "tensor \"%s\" in %s is %s but %s", name, plain->file,
                           fr_dtype_name(plain->dtype), declared(c, g, msg, sizeof msg));
        if (have == FR_QFMT_BF16 && want != FR_QFMT_BF16 && !c->quant.fp8_lenient)
            return fr_fail(b->err, FR_ERR_FORMAT, "tensor \"%s\" in %s is %s but %s", name, plain->file,
                           fr_dtype_name(plain->dtype), declared(c, g, msg, sizeof msg));
        return bind(b, name, rows, cols, w);
    }
    const fr_st_tensor *t = blocks ? blocks : packed;
    const fr_qformat have = blocks ? FR_QFMT_MXFP4 : FR_QFMT_INT4;
    if (have != want)
        return fr_fail(b->err, FR_ERR_FORMAT, "tensor \"%s\" in %s is %s but %s", t->name, t->file,
                       fr_qformat_name(have), declared(c, g, msg, sizeof msg));
    if (cols % 32)
        return fr_fail(b->err, FR_ERR_FORMAT,
                       "weight \"%s\" has %lld input features, not a multiple of the %s group of 32", name,
                       (long long)cols, fr_qformat_name(have));
    const int64_t ng = cols / 32;
    memset(w, 0, sizeof *w);
    w->rows = rows;
    w->cols = cols;
    w->group = 32;
    const fr_st_tensor *sc;
    if (blocks) {
        if (t->dtype != FR_DTYPE_U8 || !shape_is(t, 3, rows, ng, 16))
            return fr_fail(
                b->err, FR_ERR_FORMAT,
                "tensor \"%s\" in %s is %s [%s], expected U8 [%lld, %lld, 16] for a [%lld, %lld] weight", bn,
                t->file, fr_dtype_name(t->dtype), shape_of(t).s, (long long)rows, (long long)ng,
                (long long)rows, (long long)cols);
        TRY(companion(b, name, sn, FR_DTYPE_U8, 2, rows, ng, 0, &sc));
        w->dtype = FR_DTYPE_MXFP4;
    } else {
        if (t->dtype != FR_DTYPE_I32 || !shape_is(t, 2, rows, cols / 8, 0))
            return fr_fail(
                b->err, FR_ERR_FORMAT,
                "tensor \"%s\" in %s is %s [%s], expected I32 [%lld, %lld] for a [%lld, %lld] weight", pn,
                t->file, fr_dtype_name(t->dtype), shape_of(t).s, (long long)rows, (long long)(cols / 8),
                (long long)rows, (long long)cols);
        const fr_st_tensor *sh;
        TRY(companion(b, name, gn, FR_DTYPE_BF16, 2, rows, ng, 0, &sc));
        TRY(companion(b, name, hn, FR_DTYPE_I32, 1, 2, 0, 0, &sh));
        int32_t dims[2];
        memcpy(dims, sh->data, sizeof dims); /* little-endian like every safetensors host */
        if (dims[0] != rows || dims[1] != cols)
            return fr_fail(b->err, FR_ERR_FORMAT,
                           "tensor \"%s\" in %s says [%d, %d], config.json implies [%lld, %lld]", hn,
                           sh->file, dims[0], dims[1], (long long)rows, (long long)cols);
        /* Kernels load int32 words and BF16 scales in place. */
        if ((uintptr_t)t->data % 4 || (uintptr_t)sc->data % 2)
            return fr_fail(b->err, FR_ERR_UNSUPPORTED,
                           "tensor \"%s\" in %s is not aligned to its element size", pn, t->file);
        w->dtype = FR_DTYPE_INT4;
    }
    w->data = t->data;
    w->scales = sc->data;
    return FR_OK;
}

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
        TRY(bind_linear(b, NM("self_attn.q_a_proj.weight"), rq, D, FR_QGROUP_ATTENTION, &L->q_a));
        TRY(bind(b, NM("self_attn.q_a_layernorm.weight"), rq, 0, &L->q_a_norm));
        TRY(bind_linear(b, NM("self_attn.q_b_proj.weight"), H * (dn + dr), rq, FR_QGROUP_ATTENTION, &L->q_b));
    } else {
        TRY(bind_linear(b, NM("self_attn.q_proj.weight"), H * (dn + dr), D, FR_QGROUP_ATTENTION, &L->q));
    }
    TRY(bind_linear(b, NM("self_attn.kv_a_proj_with_mqa.weight"), rkv + dr, D, FR_QGROUP_ATTENTION,
                    &L->kv_a));
    TRY(bind(b, NM("self_attn.kv_a_layernorm.weight"), rkv, 0, &L->kv_a_norm));
    TRY(bind_linear(b, NM("self_attn.kv_b_proj.weight"), H * (dn + dv), rkv, FR_QGROUP_ATTENTION, &L->kv_b));
    TRY(bind_linear(b, NM("self_attn.o_proj.weight"), D, H * dv, FR_QGROUP_ATTENTION, &L->o));
    L->has_indexer = fr_config_layer_has_indexer(c, l);
    L->index_source = l;
    if (L->has_indexer) {
        /* ARCH 3.2 / 3.4: wq_b and wk are linear weights of the attention group (FP8 in
         * the releases); the LayerNorm and weights_proj stay unquantized. */
        const int64_t HI = c->dsa.n_heads, DI = c->dsa.head_dim;
        TRY(bind_linear(b, NM("self_attn.indexer.wq_b.weight"), HI * DI, rq, FR_QGROUP_ATTENTION, &L->idx_wq_b));
        TRY(bind_linear(b, NM("self_attn.indexer.wk.weight"), DI, D, FR_QGROUP_ATTENTION, &L->idx_wk));
        TRY(bind(b, NM("self_attn.indexer.k_norm.weight"), DI, 0, &L->idx_k_norm));
        TRY(bind(b, NM("self_attn.indexer.k_norm.bias"), DI, 0, &L->idx_k_bias));
        TRY(bind(b, NM("self_attn.indexer.weights_proj.weight"), HI, D, &L->idx_weights));
    } else if (c->dsa.enabled && find(b, NM("self_attn.indexer.wk.weight"))) {
        /* indexer_types says shared, the checkpoint says otherwise: refuse to guess */
        return fr_fail(b->err, FR_ERR_FORMAT,
                       "checkpoint has \"%s\" but config.json's indexer schedule makes layer %d shared", n, l);
    }
    L->is_moe = fr_config_layer_is_moe(c, l);
    if (!L->is_moe) {
        const int64_t I = c->intermediate_size;
        TRY(bind_linear(b, NM("mlp.gate_proj.weight"), I, D, FR_QGROUP_DENSE, &L->gate));
        TRY(bind_linear(b, NM("mlp.up_proj.weight"), I, D, FR_QGROUP_DENSE, &L->up));
        TRY(bind_linear(b, NM("mlp.down_proj.weight"), D, I, FR_QGROUP_DENSE, &L->down));
        return FR_OK;
    }
    const int E = c->n_routed_experts;
    const int64_t I = c->moe_intermediate_size, Is = I * c->n_shared_experts;
    TRY(bind(b, NM("mlp.gate.weight"), E, D, &L->router));
    TRY(bind(b, NM("mlp.gate.e_score_correction_bias"), E, 0, &L->router_bias));
    L->has_shared = Is > 0;
    if (Is > 0) {
        TRY(bind_linear(b, NM("mlp.shared_experts.gate_proj.weight"), Is, D, FR_QGROUP_SHARED, &L->gate));
        TRY(bind_linear(b, NM("mlp.shared_experts.up_proj.weight"), Is, D, FR_QGROUP_SHARED, &L->up));
        TRY(bind_linear(b, NM("mlp.shared_experts.down_proj.weight"), D, Is, FR_QGROUP_SHARED, &L->down));
    }
    L->exp_gate = calloc((size_t)E, sizeof(fr_weight));
    L->exp_up = calloc((size_t)E, sizeof(fr_weight));
    L->exp_down = calloc((size_t)E, sizeof(fr_weight));
    L->experts = calloc((size_t)E, sizeof(fr_mlp));
    if (!L->exp_gate || !L->exp_up || !L->exp_down || !L->experts)
        return fr_fail(b->err, FR_ERR_NOMEM, "out of memory binding %d experts", E);
    for (int e = 0; e < E; e++) {
        TRY(bind_linear(b, NM("mlp.experts.%d.gate_proj.weight", e), I, D, FR_QGROUP_EXPERTS,
                        &L->exp_gate[e]));
        TRY(bind_linear(b, NM("mlp.experts.%d.up_proj.weight", e), I, D, FR_QGROUP_EXPERTS, &L->exp_up[e]));
        TRY(bind_linear(b, NM("mlp.experts.%d.down_proj.weight", e), D, I, FR_QGROUP_EXPERTS,
                        &L->exp_down[e]));
        L->experts[e] = (fr_mlp){&L->exp_gate[e], &L->exp_up[e], &L->exp_down[e]};
    }
#undef NM
    return FR_OK;
}

/* MTP layer l (>= n_layers), ARCH 3.1 / 6. The duplicated head and embedding are
 * optional (GLM-5 may not store them, ARCH 3.4): the main model's views stand in. */
static fr_status bind_mtp(const binder *b, const fr_model *m, int l, fr_mtp_layer *M) {
    const fr_config *c = b->cfg;
    const char *pre = c->weight_prefix;
    const int64_t D = c->hidden_size, V = c->vocab_size;
    char n[NAME_MAX_LEN];
#define NM(fmt) (snprintf(n, sizeof n, "%smodel.layers.%d." fmt, pre, l), n)
    TRY(bind(b, NM("enorm.weight"), D, 0, &M->enorm));
    TRY(bind(b, NM("hnorm.weight"), D, 0, &M->hnorm));
    TRY(bind(b, NM("eh_proj.weight"), D, 2 * D, &M->eh_proj));
    TRY(bind(b, NM("shared_head.norm.weight"), D, 0, &M->head_norm));
    M->head = m->lm_head;
    if (find(b, NM("shared_head.head.weight"))) TRY(bind(b, n, V, D, &M->head));
    M->embed = m->embed;
    if (find(b, NM("embed_tokens.weight"))) TRY(bind(b, n, V, D, &M->embed));
#undef NM
    return bind_layer(b, l, &M->block);
}

/* Does the checkpoint hold MTP layer l at all? (Its decoder block or its extras.) */
static bool has_mtp_layer(const binder *b, int l) {
    char n[NAME_MAX_LEN];
    snprintf(n, sizeof n, "%smodel.layers.%d.eh_proj.weight", b->cfg->weight_prefix, l);
    if (find(b, n)) return true;
    snprintf(n, sizeof n, "%smodel.layers.%d.input_layernorm.weight", b->cfg->weight_prefix, l);
    return find(b, n) != NULL;
}

static void free_layer(fr_layer *L) {
    free(L->exp_gate);
    free(L->exp_up);
    free(L->exp_down);
    free(L->experts);
    free(L->expert_mem);
}

fr_status fr_model_bind_linear(const fr_config *cfg, const fr_st_set *st, const char *name, int64_t rows,
                               int64_t cols, fr_qgroup group, fr_weight *w, fr_error *err) {
    binder b = {cfg, st, err};
    if (strlen(name) >= NAME_MAX_LEN)
        return fr_fail(err, FR_ERR_FORMAT, "tensor name too long: \"%.64s...\"", name);
    return bind_linear(&b, name, rows, cols, group, w);
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
    for (int l = 0; l < cfg->n_layers; l++) {
        if ((rc = bind_layer(&b, l, &m->layers[l]))) goto fail;
        /* a shared layer attends with the selection of the nearest earlier full layer */
        if (cfg->dsa.enabled && !m->layers[l].has_indexer) m->layers[l].index_source = m->layers[l - 1].index_source;
    }
    /* MTP layers: all of them or none (a converter may drop them). */
    int n_mtp = 0;
    for (int k = 0; k < cfg->num_nextn_predict_layers; k++) n_mtp += has_mtp_layer(&b, cfg->n_layers + k);
    if (n_mtp) {
        m->mtp = calloc((size_t)cfg->num_nextn_predict_layers, sizeof *m->mtp);
        if (!m->mtp) {
            rc = fr_fail(err, FR_ERR_NOMEM, "out of memory");
            goto fail;
        }
        m->n_mtp = cfg->num_nextn_predict_layers;
        for (int k = 0; k < m->n_mtp; k++)
            if ((rc = bind_mtp(&b, m, cfg->n_layers + k, &m->mtp[k]))) goto fail;
    }
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
    return fr_model_load_how(dir, FR_ST_MAP, out, err);
}

fr_status fr_model_load_how(const char *dir, fr_st_load how, fr_model **out, fr_error *err) {
    fr_config cfg;
    fr_st_set *st = NULL;
    TRY(fr_config_load(dir, &cfg, err));
    TRY(fr_st_open_dir_how(dir, how, &st, err));
    return fr_model_from_set(&cfg, st, out, err);
}

void fr_model_free(fr_model *m) {
    if (!m) return;
    if (m->layers)
        for (int l = 0; l < m->cfg.n_layers; l++) free_layer(&m->layers[l]);
    if (m->mtp)
        for (int k = 0; k < m->n_mtp; k++) free_layer(&m->mtp[k].block);
    free(m->layers);
    free(m->mtp);
    free(m->rope_freqs);
    fr_st_close(m->st);
    free(m);
}

static int64_t stored_bytes(const fr_weight *w);

/* Every weight the forward pass reads (the main layers; MTP layers are not run yet). */
static fr_status each_layer_weight(const fr_config *c, const fr_layer *L, fr_status (*fn)(void *, const fr_weight *),
                                   void *ctx) {
    const fr_weight *ws[] = {&L->input_norm, &L->post_norm, &L->q_a, &L->q_a_norm, &L->q_b, &L->q, &L->kv_a,
                             &L->kv_a_norm, &L->kv_b, &L->o, &L->idx_wq_b, &L->idx_wk, &L->idx_k_norm,
                             &L->idx_k_bias, &L->idx_weights, &L->gate, &L->up, &L->down, &L->router,
                             &L->router_bias};
    fr_status rc = FR_OK;
    for (size_t i = 0; i < sizeof ws / sizeof *ws && !rc; i++)
        if (ws[i]->data) rc = fn(ctx, ws[i]);
    if (L->is_moe && L->exp_gate)
        for (int e = 0; e < c->n_routed_experts && !rc; e++) {
            if (!(rc = fn(ctx, &L->exp_gate[e]))) rc = fn(ctx, &L->exp_up[e]);
            if (!rc) rc = fn(ctx, &L->exp_down[e]);
        }
    return rc;
}

static fr_status each_weight(const fr_model *m, fr_status (*fn)(void *, const fr_weight *), void *ctx) {
    const fr_weight *top[] = {&m->embed, &m->final_norm, &m->lm_head};
    fr_status rc = FR_OK;
    for (size_t i = 0; i < 3 && !rc; i++)
        if (top[i]->data) rc = fn(ctx, top[i]);
    for (int l = 0; l < m->cfg.n_layers && !rc; l++) rc = each_layer_weight(&m->cfg, &m->layers[l], fn, ctx);
    return rc;
}

typedef struct {
    fr_backend *be;
    int64_t total, done, next_report;
} register_ctx;

static fr_status add_bytes(void *ctx, const fr_weight *w) {
    ((register_ctx *)ctx)->total += stored_bytes(w);
    return FR_OK;
}

static fr_status register_one(void *ctx, const fr_weight *w) {
    register_ctx *r = ctx;
    fr_status rc = r->be->ops->register_weight(r->be, w);
    r->done += stored_bytes(w);
    if (!rc && r->done >= r->next_report) { /* progress for models worth waiting for */
        fprintf(stderr, "uploading weights to %s: %.1f / %.1f GB\n", r->be->ops->name, (double)r->done / 1e9,
                (double)r->total / 1e9);
        r->next_report += r->total / 10;
    }
    return rc;
}

fr_status fr_model_register_weights(const fr_model *m, fr_backend *be, fr_error *err) {
    if (!be->ops->register_weight) return FR_OK;
    register_ctx r = {.be = be};
    each_weight(m, add_bytes, &r);
    r.next_report = r.total >= ((int64_t)1 << 30) ? r.total / 10 : INT64_MAX;
    fr_status rc = each_weight(m, register_one, &r);
    if (rc) return fr_fail(err, rc, "%s backend: uploading the weights failed (%s)", be->ops->name, fr_status_name(rc));
    return FR_OK;
}

/* Layer index of a tensor name "...model.layers.N....", or -1. */
static int layer_of(const char *name) {
    const char *p = strstr(name, "model.layers.");
    if (!p) return -1;
    return atoi(p + strlen("model.layers."));
}

static int64_t weight_elems(const fr_weight *w) { return w->rows * w->cols; }

/* Exact stored bytes of a whole bound tensor (data, group scales, FP8 scale_inv). */
static int64_t stored_bytes(const fr_weight *w) {
    int64_t b = w->rows * (fr_weight_row_bytes(w) + fr_weight_row_scale_bytes(w));
    if (w->scale_inv) b += ceil_div(w->rows, w->block_rows) * w->scale_cols * 4;
    return b;
}

static fr_qformat format_of(const fr_weight *w) {
    switch (w->dtype) {
    case FR_DTYPE_F8_E4M3: return FR_QFMT_FP8;
    case FR_DTYPE_MXFP4: return FR_QFMT_MXFP4;
    case FR_DTYPE_INT4: return FR_QFMT_INT4;
    default: return FR_QFMT_BF16;
    }
}

/* Bytes of w into its group, split by the format it is stored in. */
static void count_group(int64_t gf[FR_QGROUP_COUNT][FR_QFMT_COUNT], fr_qgroup g, const fr_weight *w) {
    gf[g][format_of(w)] += stored_bytes(w);
}

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

void fr_model_stats_compute(const fr_model *m, fr_model_stats *s) {
    const fr_config *c = &m->cfg;
    memset(s, 0, sizeof *s);
    for (size_t i = 0; i < fr_st_count(m->st); i++) {
        const fr_st_tensor *t = fr_st_at(m->st, i);
        s->bytes_by_dtype[t->dtype] += (int64_t)t->nbytes;
        /* scales and shapes are not parameters; 4-bit tensors hold 2 (U8) or 8 (I32) each */
        if (ends_with(t->name, "_scale_inv") || ends_with(t->name, ".weight_scales") ||
            ends_with(t->name, ".weight_scale") || ends_with(t->name, ".weight_shape"))
            continue;
        int64_t el = 1;
        for (int d = 0; d < t->ndim; d++) el *= t->shape[d];
        if (ends_with(t->name, ".weight_blocks")) el *= 2;
        if (ends_with(t->name, ".weight_packed")) el *= 8;
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
    int64_t gf[FR_QGROUP_COUNT][FR_QFMT_COUNT] = {{0}};
    s->bytes_other = stored_bytes(&m->embed) + stored_bytes(&m->final_norm) +
                     (m->lm_head.data != m->embed.data ? stored_bytes(&m->lm_head) : 0);
    for (int l = 0; l < c->n_layers; l++) {
        const fr_layer *L = &m->layers[l];
        s->bytes_other += stored_bytes(&L->input_norm) + stored_bytes(&L->post_norm);
        if (L->has_q_lora) s->bytes_other += stored_bytes(&L->q_a_norm);
        s->bytes_other += stored_bytes(&L->kv_a_norm);
        const fr_weight *attn[] = {&L->q_a, &L->q_b, &L->q, &L->kv_a, &L->kv_b, &L->o, &L->idx_wq_b, &L->idx_wk};
        for (int i = 0; i < 8; i++)
            if (attn[i]->data) count_group(gf, FR_QGROUP_ATTENTION, attn[i]);
        if (L->has_indexer)
            s->bytes_other += stored_bytes(&L->idx_k_norm) + stored_bytes(&L->idx_k_bias) + stored_bytes(&L->idx_weights);
        fr_qgroup ffn = L->is_moe ? FR_QGROUP_SHARED : FR_QGROUP_DENSE;
        if (!L->is_moe || L->has_shared) {
            count_group(gf, ffn, &L->gate);
            count_group(gf, ffn, &L->up);
            count_group(gf, ffn, &L->down);
        }
        if (!L->is_moe) continue;
        s->bytes_other += stored_bytes(&L->router) + stored_bytes(&L->router_bias);
        for (int e = 0; e < c->n_routed_experts; e++) {
            count_group(gf, FR_QGROUP_EXPERTS, &L->exp_gate[e]);
            count_group(gf, FR_QGROUP_EXPERTS, &L->exp_up[e]);
            count_group(gf, FR_QGROUP_EXPERTS, &L->exp_down[e]);
        }
    }
    /* A group shows the format holding most of its bytes (legacy fp8 keeps a few BF16). */
    for (int g = 0; g < FR_QGROUP_COUNT; g++) {
        s->format_by_group[g] = -1;
        for (int f = 0; f < FR_QFMT_COUNT; f++) {
            s->bytes_by_group[g] += gf[g][f];
            if (gf[g][f] && (s->format_by_group[g] < 0 || gf[g][f] > gf[g][s->format_by_group[g]]))
                s->format_by_group[g] = f;
        }
    }
    s->kv_bytes_per_token_bf16 = (int64_t)c->n_layers * (c->kv_lora_rank + c->qk_rope_head_dim) * 2;
    for (int l = 0; l < c->n_layers; l++) /* DSA: one indexer key per token and full layer */
        if (m->layers[l].has_indexer) s->kv_bytes_per_token_bf16 += (int64_t)c->dsa.head_dim * 2;
    s->kv_bytes_per_token = s->kv_bytes_per_token_bf16 * 2;
}
