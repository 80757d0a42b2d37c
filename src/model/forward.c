/* forward.c - the DeepSeek-V3 forward pass over the backend op table.
 *
 *   x = embed(ids)
 *   per layer:  h = RMSNorm(x);  x += o_proj(MLA(h));  h = RMSNorm(x);  x += FFN(h)
 *   logits = lm_head(RMSNorm(x))
 * with each "x += ...; h = RMSNorm(x)" done by the fused add_rmsnorm op. MLA
 * caches, per token and layer, the normalized latent c_kv and the roped k_pe
 * (shared/docs/ARCH.md 4.5-4.6). */
#include "forward.h"

#include <stdlib.h>
#include <string.h>

#include "../backend/backend.h"

struct fr_session {
    const fr_model *m;
    fr_backend *be;
    int64_t max_ctx, pos;
    float **cache;       /* [n_layers][max_ctx, kv_lora + rope] */
    fr_mla_layer *mla;   /* [n_layers] attention descriptors pointing at the caches */
    int64_t cap;         /* tokens the step buffers below can hold */
    float *x, *h, *q, *qa, *kv, *attn, *delta; /* step buffers, [cap, ...] */
    int32_t *positions;
};

static void free_buffers(fr_session *s) {
    fr_backend *be = s->be;
    be->ops->free(be, s->x), be->ops->free(be, s->h), be->ops->free(be, s->q);
    be->ops->free(be, s->qa), be->ops->free(be, s->kv), be->ops->free(be, s->attn);
    be->ops->free(be, s->delta);
    free(s->positions);
    s->x = s->h = s->q = s->qa = s->kv = s->attn = s->delta = NULL;
    s->positions = NULL;
    s->cap = 0;
}

/* Make the step buffers hold n tokens. */
static fr_status reserve(fr_session *s, int64_t n, fr_error *err) {
    if (n <= s->cap) return FR_OK;
    free_buffers(s);
    const fr_config *c = &s->m->cfg;
    fr_backend *be = s->be;
    const size_t D = (size_t)c->hidden_size, H = (size_t)c->n_heads;
    const size_t qw = H * (size_t)(c->qk_nope_head_dim + c->qk_rope_head_dim);
    const size_t N = (size_t)n, f = sizeof(float);
    s->x = be->ops->alloc(be, N * D * f);
    s->h = be->ops->alloc(be, N * D * f);
    s->delta = be->ops->alloc(be, N * D * f);
    s->q = be->ops->alloc(be, N * qw * f);
    s->qa = be->ops->alloc(be, N * (size_t)(c->q_lora_rank > 0 ? c->q_lora_rank : 1) * f);
    s->kv = be->ops->alloc(be, N * (size_t)(c->kv_lora_rank + c->qk_rope_head_dim) * f);
    s->attn = be->ops->alloc(be, N * H * (size_t)c->v_head_dim * f);
    s->positions = malloc(N * sizeof *s->positions);
    if (!s->x || !s->h || !s->delta || !s->q || !s->qa || !s->kv || !s->attn || !s->positions) {
        free_buffers(s);
        return fr_fail(err, FR_ERR_NOMEM, "out of memory for step buffers of %lld tokens", (long long)n);
    }
    s->cap = n;
    return FR_OK;
}

fr_status fr_session_create(const fr_model *m, fr_backend *be, int64_t max_ctx, fr_session **out, fr_error *err) {
    *out = NULL;
    const fr_config *c = &m->cfg;
    if (max_ctx < 1) return fr_fail(err, FR_ERR_INVALID, "context size must be at least 1");
    fr_session *s = calloc(1, sizeof *s);
    if (!s) return fr_fail(err, FR_ERR_NOMEM, "out of memory");
    s->m = m;
    s->be = be;
    s->max_ctx = max_ctx;
    s->cache = calloc((size_t)c->n_layers, sizeof *s->cache);
    s->mla = calloc((size_t)c->n_layers, sizeof *s->mla);
    if (!s->cache || !s->mla) goto nomem;
    const size_t row = (size_t)(c->kv_lora_rank + c->qk_rope_head_dim);
    for (int l = 0; l < c->n_layers; l++) {
        s->cache[l] = be->ops->alloc(be, (size_t)max_ctx * row * sizeof(float));
        if (!s->cache[l]) goto nomem;
        s->mla[l] = (fr_mla_layer){
            .n_heads = c->n_heads, .nope = c->qk_nope_head_dim, .rope = c->qk_rope_head_dim,
            .v = c->v_head_dim, .kv_lora = c->kv_lora_rank, .scale = m->softmax_scale,
            .kv_b = &m->layers[l].kv_b, .cache = s->cache[l],
        };
    }
    *out = s;
    return FR_OK;
nomem:
    fr_session_free(s);
    return fr_fail(err, FR_ERR_NOMEM, "out of memory for a %lld-token KV cache", (long long)max_ctx);
}

void fr_session_free(fr_session *s) {
    if (!s) return;
    if (s->cache)
        for (int l = 0; l < s->m->cfg.n_layers; l++) s->be->ops->free(s->be, s->cache[l]);
    free(s->cache);
    free(s->mla);
    free_buffers(s);
    free(s);
}

int64_t fr_session_pos(const fr_session *s) { return s->pos; }
void fr_session_reset(fr_session *s) { s->pos = 0; }

#define TRY(x)                                                                                     \
    do {                                                                                           \
        fr_status rc_ = (x);                                                                       \
        if (rc_) return rc_ == FR_ERR_NOMEM ? fr_fail(err, rc_, "out of memory in the forward pass") : rc_; \
    } while (0)

/* One decoder layer on n tokens. On entry s->h = RMSNorm_in(x); on exit s->delta holds
 * the FFN output not yet added to x (the next add_rmsnorm adds it). */
static fr_status layer_forward(fr_session *s, int l, int64_t n, bool absorbed, fr_error *err) {
    const fr_model *m = s->m;
    const fr_config *c = &m->cfg;
    const fr_layer *L = &m->layers[l];
    fr_backend *be = s->be;
    const fr_backend_ops *op = be->ops;
    const int64_t D = c->hidden_size, H = c->n_heads, dn = c->qk_nope_head_dim, dr = c->qk_rope_head_dim;
    const int64_t rkv = c->kv_lora_rank, row = rkv + dr, qw = dn + dr;

    /* queries: [n, H, dn + dr] */
    if (L->has_q_lora) {
        TRY(op->matmul(be, s->qa, s->h, n, &L->q_a));
        TRY(op->rmsnorm(be, s->qa, s->qa, n, c->q_lora_rank, c->q_lora_rank, &L->q_a_norm, c->rms_norm_eps));
        TRY(op->matmul(be, s->q, s->qa, n, &L->q_b));
    } else {
        TRY(op->matmul(be, s->q, s->h, n, &L->q));
    }
    TRY(op->rope(be, s->q + dn, n, (int)H, H * qw, qw, (int)dr, s->positions, m->rope_freqs, m->rope_mscale));

    /* latent: [n, rkv + dr] -> normalize c_kv, rotate k_pe, append to the cache */
    TRY(op->matmul(be, s->kv, s->h, n, &L->kv_a));
    TRY(op->rmsnorm(be, s->kv, s->kv, n, rkv, row, &L->kv_a_norm, c->rms_norm_eps));
    TRY(op->rope(be, s->kv + rkv, n, 1, row, 0, (int)dr, s->positions, m->rope_freqs, m->rope_mscale));
    memcpy(s->cache[l] + s->pos * row, s->kv, (size_t)(n * row) * sizeof(float));

    TRY(op->mla_attention(be, s->attn, s->q, n, s->pos, &s->mla[l], absorbed));
    TRY(op->matmul(be, s->delta, s->attn, n, &L->o));
    TRY(op->add_rmsnorm(be, s->h, s->x, s->delta, n, D, &L->post_norm, c->rms_norm_eps));

    if (L->is_moe) {
        fr_router r = {
            .n_experts = c->n_routed_experts, .top_k = c->n_experts_per_tok, .n_group = c->n_group,
            .topk_group = c->topk_group, .norm_topk_prob = c->norm_topk_prob,
            .routed_scaling_factor = c->routed_scaling_factor, .gate = &L->router, .bias = &L->router_bias,
        };
        fr_mlp shared = {&L->gate, &L->up, &L->down};
        TRY(op->moe(be, s->delta, s->h, n, D, &r, L->experts, L->has_shared ? &shared : NULL));
    } else {
        fr_mlp mlp = {&L->gate, &L->up, &L->down};
        TRY(op->mlp(be, s->delta, s->h, n, &mlp));
    }
    return FR_OK;
}

fr_status fr_session_eval(fr_session *s, const int32_t *ids, int64_t n, fr_attn_mode mode, float *logits,
                          bool all_logits, fr_error *err) {
    const fr_model *m = s->m;
    const fr_config *c = &m->cfg;
    fr_backend *be = s->be;
    const fr_backend_ops *op = be->ops;
    if (n < 1) return fr_fail(err, FR_ERR_INVALID, "no tokens to evaluate");
    for (int64_t t = 0; t < n; t++)
        if (ids[t] < 0 || ids[t] >= c->vocab_size)
            return fr_fail(err, FR_ERR_INVALID, "token id %d at index %lld is outside the vocabulary [0, %lld)", ids[t],
                           (long long)t, (long long)c->vocab_size);
    if (s->pos + n > s->max_ctx)
        return fr_fail(err, FR_ERR_CAPACITY, "context full: %lld tokens cached + %lld new > %lld", (long long)s->pos,
                       (long long)n, (long long)s->max_ctx);
    fr_status rc = reserve(s, n, err);
    if (rc) return rc;
    const bool absorbed = mode == FR_ATTN_ABSORBED || (mode == FR_ATTN_AUTO && n == 1);
    const int64_t D = c->hidden_size, V = c->vocab_size;
    for (int64_t t = 0; t < n; t++) s->positions[t] = (int32_t)(s->pos + t);

    TRY(op->embed(be, s->x, ids, n, &m->embed));
    TRY(op->add_rmsnorm(be, s->h, s->x, NULL, n, D, &m->layers[0].input_norm, c->rms_norm_eps));
    for (int l = 0; l < c->n_layers; l++) {
        rc = layer_forward(s, l, n, absorbed, err);
        if (rc) return rc;
        const fr_weight *next = l + 1 < c->n_layers ? &m->layers[l + 1].input_norm : &m->final_norm;
        TRY(op->add_rmsnorm(be, s->h, s->x, s->delta, n, D, next, c->rms_norm_eps));
    }
    s->pos += n;
    if (!logits) return FR_OK;
    /* Only the rows asked for go through the head: [V, D] is the largest matrix. */
    const int64_t rows = all_logits ? n : 1;
    const float *hin = s->h + (all_logits ? 0 : (n - 1) * D);
    float *dev = be->ops->alloc(be, (size_t)(rows * V) * sizeof(float));
    if (!dev) return fr_fail(err, FR_ERR_NOMEM, "out of memory for logits");
    rc = op->matmul(be, dev, hin, rows, &m->lm_head);
    if (!rc) rc = op->to_host(be, logits, dev, (size_t)(rows * V));
    be->ops->free(be, dev);
    return rc;
}
