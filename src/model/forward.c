/* forward.c - the DeepSeek-V3 forward pass over the backend op table.
 *
 *   x = embed(ids)
 *   per layer:  h = RMSNorm(x);  x += o_proj(MLA(h));  h = RMSNorm(x);  x += FFN(h)
 *   logits = lm_head(RMSNorm(x))
 * with each "x += ...; h = RMSNorm(x)" done by the fused add_rmsnorm op. MLA
 * caches, per token and layer, the normalized latent c_kv and the roped k_pe
 * (shared/docs/ARCH.md 4.5-4.6) in the paged cache, in the pool's dtype: the
 * backend's kv_write op converts (FP8: quantizes) as it writes, and its attention
 * ops read either dtype.
 *
 * A step carries the new tokens of several sequences, concatenated: everything
 * but attention is per token, so it runs once over all of them (the MoE then
 * reads each chosen expert once per step, not once per sequence).
 *
 * DSA models (DeepSeek-V3.2, GLM-5; ARCH.md 5): a layer with an indexer also caches
 * each token's indexer key (paged like the latent) and, for a sequence whose context
 * is longer than index_topk, picks the index_topk keys each new token attends to;
 * a "shared" layer attends with the selection of the nearest earlier full layer,
 * which is still in f->sel because layers run in order. A sequence whose context
 * fits in index_topk attends densely: the selection would keep every key. */
#include "forward.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../backend/backend.h"
#include "../core/argmax.h"

struct fr_forward {
    const fr_model *m;
    fr_backend *be;
    fr_kv_pool *pool;
    int64_t cap;                                 /* tokens the step buffers hold */
    float *x, *h, *q, *qa, *kv, *attn, *delta;   /* backend step buffers, [cap, ...] */
    /* DSA step buffers (NULL otherwise): indexer queries [cap, H_I * D_I], keys [cap, D_I],
     * head weights [cap, H_I], and the selection [cap, sel_width] (positions, -1 padded) */
    float *iq, *ik, *iw;
    int32_t *sel;
    int sel_width;                               /* min(index_topk, tokens the pool holds) */
    int32_t *ids;                                /* host, [cap]: the step's token ids */
    int32_t *positions;                          /* host, [cap] */
    int64_t *slots;                              /* host, [cap]: cache row of each token */
    int64_t *head_rows;                          /* host, [cap]: rows that go through the head */
    float *logits_dev;                           /* backend, [logits_cap]: the head's output */
    int64_t logits_cap;
    int32_t *picks_dev;                          /* backend, [picks_cap]: greedy ids of the head rows */
    int64_t picks_cap;
};

static void free_buffers(fr_forward *f) {
    fr_backend *be = f->be;
    float **bufs[] = {&f->x, &f->h, &f->q, &f->qa, &f->kv, &f->attn, &f->delta, &f->iq, &f->ik, &f->iw};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) {
        be->ops->free(be, *bufs[i]);
        *bufs[i] = NULL;
    }
    be->ops->free(be, f->sel);
    f->sel = NULL;
    free(f->ids), free(f->positions), free(f->slots), free(f->head_rows);
    f->ids = NULL, f->positions = NULL, f->slots = NULL, f->head_rows = NULL;
    f->cap = 0;
}

/* Make the step buffers hold n tokens. */
static fr_status reserve(fr_forward *f, int64_t n, fr_error *err) {
    if (n <= f->cap) return FR_OK;
    free_buffers(f);
    const fr_config *c = &f->m->cfg;
    fr_backend *be = f->be;
    const size_t D = (size_t)c->hidden_size, H = (size_t)c->n_heads;
    const size_t qw = H * (size_t)(c->qk_nope_head_dim + c->qk_rope_head_dim);
    const size_t N = (size_t)n, fl = sizeof(float);
    f->x = be->ops->alloc(be, N * D * fl);
    f->h = be->ops->alloc(be, N * D * fl);
    f->delta = be->ops->alloc(be, N * D * fl);
    f->q = be->ops->alloc(be, N * qw * fl);
    f->qa = be->ops->alloc(be, N * (size_t)(c->q_lora_rank > 0 ? c->q_lora_rank : 1) * fl);
    f->kv = be->ops->alloc(be, N * (size_t)(c->kv_lora_rank + c->qk_rope_head_dim) * fl);
    f->attn = be->ops->alloc(be, N * H * (size_t)c->v_head_dim * fl);
    f->ids = malloc(N * sizeof *f->ids);
    f->positions = malloc(N * sizeof *f->positions);
    f->slots = malloc(N * sizeof *f->slots);
    f->head_rows = malloc(N * sizeof *f->head_rows);
    bool dsa_ok = true;
    if (c->dsa.enabled) {
        const size_t HI = (size_t)c->dsa.n_heads, DI = (size_t)c->dsa.head_dim;
        f->iq = be->ops->alloc(be, N * HI * DI * fl);
        f->ik = be->ops->alloc(be, N * DI * fl);
        f->iw = be->ops->alloc(be, N * HI * fl);
        f->sel = be->ops->alloc(be, N * (size_t)f->sel_width * sizeof(int32_t));
        dsa_ok = f->iq && f->ik && f->iw && f->sel;
    }
    if (!f->x || !f->h || !f->delta || !f->q || !f->qa || !f->kv || !f->attn || !f->ids || !f->positions || !f->slots ||
        !f->head_rows || !dsa_ok) {
        free_buffers(f);
        return fr_fail(err, FR_ERR_NOMEM, "out of memory for step buffers of %lld tokens", (long long)n);
    }
    f->cap = n;
    return FR_OK;
}

fr_status fr_forward_create(const fr_model *m, fr_backend *be, fr_kv_pool *pool, fr_forward **out, fr_error *err) {
    *out = NULL;
    if (!be->ops->copy_rows) return fr_fail(err, FR_ERR_UNSUPPORTED, "backend %s has no copy_rows op", be->ops->name);
    if (!be->ops->kv_write) return fr_fail(err, FR_ERR_UNSUPPORTED, "backend %s has no kv_write op", be->ops->name);
    const fr_config *c = &m->cfg;
    if (c->dsa.enabled) {
        const char *missing = !be->ops->layernorm            ? "layernorm"
                              : !be->ops->dsa_select           ? "dsa_select"
                              : !be->ops->mla_sparse_attention ? "mla_sparse_attention"
                              : !c->dsa.rope_interleaved && !be->ops->rope_half ? "rope_half"
                                                                                : NULL;
        if (missing)
            return fr_fail(err, FR_ERR_UNSUPPORTED, "backend %s has no %s op (needed by %s's sparse attention)",
                           be->ops->name, missing, c->model_type);
        if (!pool->index_layer)
            return fr_fail(err, FR_ERR_INVALID, "forward: the KV pool has no indexer-key cache for a DSA model");
    }
    fr_status rc = fr_model_register_weights(m, be, err);
    if (rc) return rc;
    fr_forward *f = calloc(1, sizeof *f);
    if (!f) return fr_fail(err, FR_ERR_NOMEM, "out of memory");
    f->m = m, f->be = be, f->pool = pool;
    if (c->dsa.enabled) {
        const int64_t held = pool->n_blocks * pool->block_size; /* no context is longer */
        f->sel_width = (int)(c->dsa.topk < held ? c->dsa.topk : held);
    }
    *out = f;
    return FR_OK;
}

void fr_forward_free(fr_forward *f) {
    if (!f) return;
    free_buffers(f);
    f->be->ops->free(f->be, f->logits_dev);
    f->be->ops->free(f->be, f->picks_dev);
    free(f);
}

/* A failed op names itself: backends report through their status alone. */
#define TRY(x)                                                                                     \
    do {                                                                                           \
        fr_status rc_ = (x);                                                                       \
        if (rc_) return op_failed(f->be, rc_, #x, err);                                            \
    } while (0)

static fr_status op_failed(const fr_backend *be, fr_status rc, const char *call, fr_error *err) {
    if (rc == FR_ERR_NOMEM) return fr_fail(err, rc, "out of memory in the forward pass");
    const char *end = strchr(call, '(');
    return fr_fail(err, rc, "%s backend: %.*s failed in the forward pass (%s)", be->ops->name,
                   end ? (int)(end - call) : 40, call, fr_status_name(rc));
}

/* What a sequence's recorded launches are sized by (fr_mla_layer.max_ctx). */
static int64_t seq_max_ctx(const fr_seq_step *s) { return s->max_ctx > s->pos + s->n ? s->max_ctx : s->pos + s->n; }

/* Does sequence s attend sparsely? Only when its context is longer than index_topk:
 * up to that every key is selected and dense attention is the same. */
static bool seq_is_sparse(const fr_config *c, const fr_seq_step *s) {
    return c->dsa.enabled && s->pos + s->n > c->dsa.topk;
}

/* The DSA indexer of layer l (ARCH.md 5) on the step's T tokens: cache each token's key,
 * and for every sparse sequence write its tokens' selections into f->sel. Needs f->h
 * (attention-normed hidden) and f->qa (q latent after q_a_layernorm). */
static fr_status indexer_forward(fr_forward *f, int l, const fr_seq_step *seqs, int n_seqs, int64_t T,
                                 fr_error *err) {
    const fr_model *m = f->m;
    const fr_config *c = &m->cfg;
    const fr_layer *L = &m->layers[l];
    fr_backend *be = f->be;
    const fr_backend_ops *op = be->ops;
    const int64_t HI = c->dsa.n_heads, DI = c->dsa.head_dim;
    const int dr = c->qk_rope_head_dim;
    /* RoPE on the first qk_rope dims of each index head: [rope | nope] (ARCH 4.9) */
    fr_status (*rope)(fr_backend *, float *, int64_t, int, int64_t, int64_t, int, const int32_t *, const double *,
                      float) = c->dsa.rope_interleaved ? op->rope : op->rope_half;

    /* keys: LayerNorm(wk h), roped, into the layer's key pages (one key per token) */
    TRY(op->matmul(be, f->ik, f->h, T, &L->idx_wk));
    TRY(op->layernorm(be, f->ik, f->ik, T, DI, DI, &L->idx_k_norm, &L->idx_k_bias, 1e-6f));
    TRY(rope(be, f->ik, T, 1, DI, 0, dr, f->positions, m->rope_freqs, m->rope_mscale));
    TRY(op->kv_write(be, f->pool->index_layer[l], f->pool->dtype, f->slots, f->ik, T, DI, 0));

    bool any = false;
    for (int i = 0; i < n_seqs; i++) any |= seq_is_sparse(c, &seqs[i]);
    if (!any) return FR_OK;
    /* queries from the q latent, per-head weights from the hidden state */
    TRY(op->matmul(be, f->iq, f->qa, T, &L->idx_wq_b));
    TRY(rope(be, f->iq, T, (int)HI, HI * DI, DI, dr, f->positions, m->rope_freqs, m->rope_mscale));
    TRY(op->matmul(be, f->iw, f->h, T, &L->idx_weights));
    int64_t off = 0;
    for (int i = 0; i < n_seqs; i++) {
        const fr_seq_step *s = &seqs[i];
        if (seq_is_sparse(c, s)) {
            fr_dsa_layer dsa = {
                .n_heads = (int)HI, .head_dim = (int)DI, .topk = f->sel_width,
                .scale = (float)(1.0 / sqrt((double)HI * (double)DI)), .keys = f->pool->index_layer[l],
                .kv_dtype = f->pool->dtype, .blocks = s->blocks, .block_size = f->pool->block_size,
                .max_ctx = seq_max_ctx(s),
            };
            TRY(op->dsa_select(be, f->sel + off * f->sel_width, f->iq + off * HI * DI, f->iw + off * HI, s->n,
                               s->pos, &dsa));
        }
        off += s->n;
    }
    return FR_OK;
}

/* One decoder layer on the step's T tokens. On entry f->h = RMSNorm_in(x); on exit
 * f->delta holds the FFN output not yet added to x (the next add_rmsnorm adds it). */
static fr_status layer_forward(fr_forward *f, int l, const fr_seq_step *seqs, int n_seqs, int64_t T, fr_error *err) {
    const fr_model *m = f->m;
    const fr_config *c = &m->cfg;
    const fr_layer *L = &m->layers[l];
    fr_backend *be = f->be;
    const fr_backend_ops *op = be->ops;
    const int64_t D = c->hidden_size, H = c->n_heads, dn = c->qk_nope_head_dim, dr = c->qk_rope_head_dim;
    const int64_t rkv = c->kv_lora_rank, row = rkv + dr, qw = dn + dr, dv = c->v_head_dim;

    /* queries: [T, H, dn + dr] */
    if (L->has_q_lora) {
        TRY(op->matmul(be, f->qa, f->h, T, &L->q_a));
        TRY(op->rmsnorm(be, f->qa, f->qa, T, c->q_lora_rank, c->q_lora_rank, &L->q_a_norm, c->rms_norm_eps));
        TRY(op->matmul(be, f->q, f->qa, T, &L->q_b));
    } else {
        TRY(op->matmul(be, f->q, f->h, T, &L->q));
    }
    TRY(op->rope(be, f->q + dn, T, (int)H, H * qw, qw, (int)dr, f->positions, m->rope_freqs, m->rope_mscale));

    /* latent: [T, rkv + dr] -> normalize c_kv, rotate k_pe, write into each sequence's pages */
    TRY(op->matmul(be, f->kv, f->h, T, &L->kv_a));
    TRY(op->rmsnorm(be, f->kv, f->kv, T, rkv, row, &L->kv_a_norm, c->rms_norm_eps));
    TRY(op->rope(be, f->kv + rkv, T, 1, row, 0, (int)dr, f->positions, m->rope_freqs, m->rope_mscale));
    TRY(op->kv_write(be, f->pool->layer[l], f->pool->dtype, f->slots, f->kv, T, rkv, dr));
    if (L->has_indexer) {
        fr_status rc = indexer_forward(f, l, seqs, n_seqs, T, err);
        if (rc) return rc;
    }

    /* attention, per sequence over its own pages; a sequence's tokens split at the
     * boundary between the prefill and the absorbed form */
    int64_t off = 0;
    for (int i = 0; i < n_seqs; i++) {
        const fr_seq_step *s = &seqs[i];
        fr_mla_layer mla = {
            .n_heads = (int)H, .nope = (int)dn, .rope = (int)dr, .v = (int)dv, .kv_lora = (int)rkv,
            .scale = m->softmax_scale, .kv_b = &L->kv_b, .cache = f->pool->layer[l], .kv_dtype = f->pool->dtype,
            .blocks = s->blocks, .block_size = f->pool->block_size, .max_ctx = seq_max_ctx(s),
        };
        const int64_t n_naive = s->n - s->n_absorbed;
        if (seq_is_sparse(c, s)) {
            /* over the selection of this layer's indexer, or of the full layer it shares */
            const int K = f->sel_width;
            if (n_naive > 0)
                TRY(op->mla_sparse_attention(be, f->attn + off * H * dv, f->q + off * H * qw, n_naive, s->pos, &mla,
                                             f->sel + off * K, K, false));
            if (s->n_absorbed > 0)
                TRY(op->mla_sparse_attention(be, f->attn + (off + n_naive) * H * dv, f->q + (off + n_naive) * H * qw,
                                             s->n_absorbed, s->pos + n_naive, &mla, f->sel + (off + n_naive) * K, K,
                                             true));
        } else {
            if (n_naive > 0)
                TRY(op->mla_attention(be, f->attn + off * H * dv, f->q + off * H * qw, n_naive, s->pos, &mla, false));
            if (s->n_absorbed > 0)
                TRY(op->mla_attention(be, f->attn + (off + n_naive) * H * dv, f->q + (off + n_naive) * H * qw,
                                      s->n_absorbed, s->pos + n_naive, &mla, true));
        }
        off += s->n;
    }
    TRY(op->matmul(be, f->delta, f->attn, T, &L->o));
    TRY(op->add_rmsnorm(be, f->h, f->x, f->delta, T, D, &L->post_norm, c->rms_norm_eps));

    if (L->is_moe) {
        fr_router r = {
            .n_experts = c->n_routed_experts, .top_k = c->n_experts_per_tok, .n_group = c->n_group,
            .topk_group = c->topk_group, .norm_topk_prob = c->norm_topk_prob,
            .routed_scaling_factor = c->routed_scaling_factor, .gate = &L->router, .bias = &L->router_bias,
        };
        fr_mlp shared = {&L->gate, &L->up, &L->down};
        TRY(op->moe(be, f->delta, f->h, T, D, &r, L->experts, L->has_shared ? &shared : NULL));
    } else {
        fr_mlp mlp = {&L->gate, &L->up, &L->down};
        TRY(op->mlp(be, f->delta, f->h, T, &mlp));
    }
    return FR_OK;
}

/* The ops of one step, from the embedding to the head (rows > 0: its logits into
 * f->logits_dev). Host arrays (ids, positions, slots, head rows) are filled. */
static fr_status run_step(fr_forward *f, const fr_seq_step *seqs, int n_seqs, int64_t T, int64_t rows,
                          bool pick, fr_error *err) {
    const fr_model *m = f->m;
    const fr_config *c = &m->cfg;
    fr_backend *be = f->be;
    const fr_backend_ops *op = be->ops;
    const int64_t D = c->hidden_size;
    fr_status rc;
    TRY(op->embed(be, f->x, f->ids, T, &m->embed));
    TRY(op->add_rmsnorm(be, f->h, f->x, NULL, T, D, &m->layers[0].input_norm, c->rms_norm_eps));
    for (int l = 0; l < c->n_layers; l++) {
        if ((rc = layer_forward(f, l, seqs, n_seqs, T, err))) return rc;
        const fr_weight *next = l + 1 < c->n_layers ? &m->layers[l + 1].input_norm : &m->final_norm;
        TRY(op->add_rmsnorm(be, f->h, f->x, f->delta, T, D, next, c->rms_norm_eps));
    }
    if (!rows) return FR_OK;
    /* Only the rows asked for go through the head: [V, D] is the largest matrix. Gathered
     * into f->delta, free now. */
    TRY(op->copy_rows(be, f->delta, NULL, f->h, f->head_rows, rows, D));
    TRY(op->matmul(be, f->logits_dev, f->delta, rows, &m->lm_head));
    if (pick) TRY(op->argmax(be, f->picks_dev, f->logits_dev, rows, c->vocab_size));
    return FR_OK;
}

/* A step that returns the wanted rows' logits, or (ids) their greedy picks. */
static fr_status step(fr_forward *f, const fr_seq_step *seqs, int n_seqs, float *logits, int32_t *ids,
                      fr_error *err) {
    const fr_model *m = f->m;
    const fr_config *c = &m->cfg;
    fr_backend *be = f->be;
    const fr_backend_ops *op = be->ops;
    const int64_t V = c->vocab_size, bs = f->pool->block_size;
    int64_t T = 0, rows = 0;
    for (int i = 0; i < n_seqs; i++) {
        const fr_seq_step *s = &seqs[i];
        if (s->n < 1 || s->pos < 0 || s->n_absorbed < 0 || s->n_absorbed > s->n)
            return fr_fail(err, FR_ERR_INVALID, "forward: sequence %d has %lld tokens at %lld (%lld absorbed)", i,
                           (long long)s->n, (long long)s->pos, (long long)s->n_absorbed);
        for (int64_t t = 0; t < s->n; t++)
            if (s->ids[t] < 0 || s->ids[t] >= V)
                return fr_fail(err, FR_ERR_INVALID, "token id %d at index %lld is outside the vocabulary [0, %lld)",
                               s->ids[t], (long long)t, (long long)V);
        T += s->n;
        rows += s->logits == FR_LOGITS_ALL ? s->n : s->logits == FR_LOGITS_LAST ? 1 : 0;
    }
    if (T < 1) return fr_fail(err, FR_ERR_INVALID, "no tokens to evaluate");
    fr_status rc = reserve(f, T, err);
    if (rc) return rc;

    /* per token: position, cache row; and which rows go through the head */
    int64_t t = 0, r = 0;
    bool decode_only = true; /* every sequence decodes one token: a shape that repeats */
    uint64_t sparse_mix = 0;
    for (int i = 0; i < n_seqs; i++) {
        const fr_seq_step *s = &seqs[i];
        decode_only &= s->n == 1 && s->n_absorbed == 1 && s->logits == FR_LOGITS_LAST && s->max_ctx > 0;
        sparse_mix = sparse_mix * 31 + (seq_is_sparse(c, s) ? 2 : 1);
        for (int64_t j = 0; j < s->n; j++, t++) {
            const int64_t p = s->pos + j;
            f->ids[t] = s->ids[j];
            f->positions[t] = (int32_t)p;
            f->slots[t] = (int64_t)s->blocks[p / bs] * bs + p % bs;
            if (s->logits == FR_LOGITS_ALL || (s->logits == FR_LOGITS_LAST && j == s->n - 1)) f->head_rows[r++] = t;
        }
    }
    const bool head = rows && (logits || ids), pick = head && ids && op->argmax && V < (1 << 24);
    if (head && rows * V > f->logits_cap) {
        be->ops->free(be, f->logits_dev);
        f->logits_cap = 0;
        if (!(f->logits_dev = op->alloc(be, (size_t)(rows * V) * sizeof(float))))
            return fr_fail(err, FR_ERR_NOMEM, "out of memory for logits");
        f->logits_cap = rows * V;
    }
    if (pick && rows > f->picks_cap) {
        be->ops->free(be, f->picks_dev);
        f->picks_cap = 0;
        if (!(f->picks_dev = op->alloc(be, (size_t)rows * sizeof(int32_t))))
            return fr_fail(err, FR_ERR_NOMEM, "out of memory for greedy ids");
        f->picks_cap = rows;
    }
    if (!op->step_begin) {
        TRY(run_step(f, seqs, n_seqs, T, head ? rows : 0, pick, err));
    } else {
        /* A decode step of T sequences repeats with new positions and ids: a backend may
         * record it once and replay it (backend.h). Which sequences attend sparsely changes
         * the ops, so it is part of the shape. */
        const uint64_t key =
            decode_only ? (((uint64_t)T << 40 | 1) ^ (sparse_mix << 1) ^ ((uint64_t)pick << 39) ^
                           ((uint64_t)(uintptr_t)f * 0x9E3779B97F4A7C15ull)) | 1
                        : 0; /* this forward's buffers are in the recording: its address is part of the shape */
        for (int attempt = 0;; attempt++) {
            TRY(op->step_begin(be, attempt ? 0 : key));
            rc = run_step(f, seqs, n_seqs, T, head ? rows : 0, pick, err);
            fr_status end = op->step_end(be);
            if (end == FR_ERR_RETRY && attempt == 0) continue; /* nothing ran: again, eagerly */
            if (rc) return rc;
            TRY(end);
            break;
        }
    }
    if (!head) return FR_OK;
    if (pick) {
        TRY(op->to_host(be, (float *)(void *)ids, (const float *)(void *)f->picks_dev, (size_t)rows));
    } else if (logits) {
        TRY(op->to_host(be, logits, f->logits_dev, (size_t)(rows * V)));
    } else { /* greedy on a backend without argmax: the rows come over and are picked here */
        float *host = malloc((size_t)(rows * V) * sizeof *host);
        if (!host) return fr_fail(err, FR_ERR_NOMEM, "out of memory for logits");
        rc = op->to_host(be, host, f->logits_dev, (size_t)(rows * V));
        for (int64_t i = 0; !rc && i < rows; i++) ids[i] = fr_argmax_f32(host + i * V, V);
        free(host);
        if (rc) return op_failed(be, rc, "to_host", err);
    }
    return FR_OK;
}

fr_status fr_forward_step(fr_forward *f, const fr_seq_step *seqs, int n_seqs, float *logits, fr_error *err) {
    return step(f, seqs, n_seqs, logits, NULL, err);
}

fr_status fr_forward_step_ids(fr_forward *f, const fr_seq_step *seqs, int n_seqs, int32_t *ids, fr_error *err) {
    return step(f, seqs, n_seqs, NULL, ids, err);
}

/* ---- one sequence */

struct fr_session {
    fr_kv_pool *pool;
    fr_forward *fwd;
    fr_kv_seq seq;
    int64_t max_ctx, pos;
};

/* Tokens per block of a session's own pool: small enough that a short context wastes
 * little, large enough that the block table stays short. */
#define SESSION_BLOCK 64

fr_status fr_session_create(const fr_model *m, fr_backend *be, int64_t max_ctx, fr_session **out, fr_error *err) {
    const fr_session_opts o = {.max_ctx = max_ctx, .kv_dtype = FR_KV_F32};
    return fr_session_create_opts(m, be, &o, out, err);
}

fr_status fr_session_create_opts(const fr_model *m, fr_backend *be, const fr_session_opts *o, fr_session **out,
                                 fr_error *err) {
    *out = NULL;
    const int64_t max_ctx = o->max_ctx;
    if (max_ctx < 1) return fr_fail(err, FR_ERR_INVALID, "context size must be at least 1");
    if (max_ctx > INT32_MAX) return fr_fail(err, FR_ERR_INVALID, "context size %lld is too large", (long long)max_ctx);
    fr_session *s = calloc(1, sizeof *s);
    if (!s) return fr_fail(err, FR_ERR_NOMEM, "out of memory");
    s->max_ctx = max_ctx;
    fr_status rc = fr_kv_pool_create_dtype(m, be, (max_ctx + SESSION_BLOCK - 1) / SESSION_BLOCK, SESSION_BLOCK,
                                           o->kv_dtype, &s->pool, err);
    if (!rc) rc = fr_forward_create(m, be, s->pool, &s->fwd, err);
    if (!rc && fr_kv_seq_reserve(s->pool, &s->seq, max_ctx))
        rc = fr_fail(err, FR_ERR_NOMEM, "out of memory for a %lld-token KV cache", (long long)max_ctx);
    if (rc) {
        fr_session_free(s);
        return rc;
    }
    *out = s;
    return FR_OK;
}

void fr_session_free(fr_session *s) {
    if (!s) return;
    if (s->pool) fr_kv_seq_free(s->pool, &s->seq);
    fr_forward_free(s->fwd);
    fr_kv_pool_free(s->pool);
    free(s);
}

int64_t fr_session_pos(const fr_session *s) { return s->pos; }
fr_kv_dtype fr_session_kv_dtype(const fr_session *s) { return s->pool->dtype; }

/* Roughly unit-normal values (a sum of four uniforms): the scale of RMSNorm'd latents
 * and LayerNorm'd indexer keys. */
static void fill_random(float *x, int64_t n, uint64_t *st) {
    for (int64_t i = 0; i < n; i++) {
        float u = 0.0f;
        for (int k = 0; k < 4; k++) {
            *st ^= *st << 13, *st ^= *st >> 7, *st ^= *st << 17;
            u += (float)(*st >> 40) * (1.0f / 16777216.0f);
        }
        x[i] = (u - 2.0f) * 1.7320508f;
    }
}

fr_status fr_session_fill_synthetic(fr_session *s, int64_t n, uint64_t seed, fr_error *err) {
    enum { CHUNK = 256 };
    fr_kv_pool *p = s->pool;
    fr_backend *be = p->be;
    const fr_config *c = &s->fwd->m->cfg;
    if (n < 0 || s->pos + n > s->max_ctx)
        return fr_fail(err, FR_ERR_CAPACITY, "context full: %lld tokens cached + %lld synthetic > %lld",
                       (long long)s->pos, (long long)n, (long long)s->max_ctx);
    if (!be->ops->from_host)
        return fr_fail(err, FR_ERR_UNSUPPORTED, "backend %s has no from_host op", be->ops->name);
    const int64_t width = p->row > p->index_row ? p->row : p->index_row, bs = p->block_size;
    float *host = malloc((size_t)(CHUNK * width) * sizeof *host);
    int64_t *slots = malloc(CHUNK * sizeof *slots);
    float *dev = be->ops->alloc(be, (size_t)(CHUNK * width) * sizeof *dev);
    fr_status rc = host && slots && dev ? FR_OK : fr_fail(err, FR_ERR_NOMEM, "out of memory");
    uint64_t st = seed * 0x9E3779B97F4A7C15ull + 1;
    for (int l = 0; l < p->n_layers && !rc; l++) {
        for (int64_t t0 = s->pos; t0 < s->pos + n && !rc; t0 += CHUNK) {
            const int64_t k = s->pos + n - t0 < CHUNK ? s->pos + n - t0 : CHUNK;
            for (int64_t i = 0; i < k; i++) slots[i] = (int64_t)s->seq.blocks[(t0 + i) / bs] * bs + (t0 + i) % bs;
            fill_random(host, k * p->row, &st);
            rc = be->ops->from_host(be, dev, host, (size_t)(k * p->row));
            if (!rc) rc = be->ops->kv_write(be, p->layer[l], p->dtype, slots, dev, k, c->kv_lora_rank,
                                            c->qk_rope_head_dim);
            if (!rc && p->index_layer && p->index_layer[l]) {
                fill_random(host, k * p->index_row, &st);
                rc = be->ops->from_host(be, dev, host, (size_t)(k * p->index_row));
                if (!rc) rc = be->ops->kv_write(be, p->index_layer[l], p->dtype, slots, dev, k, p->index_row, 0);
            }
            if (rc) rc = fr_fail(err, rc, "synthetic context: backend %s failed to write layer %d", be->ops->name, l);
        }
    }
    free(host), free(slots);
    be->ops->free(be, dev);
    if (!rc) s->pos += n;
    return rc;
}
void fr_session_reset(fr_session *s) { s->pos = 0; }

/* One session step: logits as fr_session_eval asks, or (next) the greedy pick. */
static fr_status session_step(fr_session *s, const int32_t *ids, int64_t n, fr_attn_mode mode, float *logits,
                              bool all_logits, int32_t *next, fr_error *err) {
    if (n < 1) return fr_fail(err, FR_ERR_INVALID, "no tokens to evaluate");
    if (s->pos + n > s->max_ctx)
        return fr_fail(err, FR_ERR_CAPACITY, "context full: %lld tokens cached + %lld new > %lld", (long long)s->pos,
                       (long long)n, (long long)s->max_ctx);
    const bool absorbed = mode == FR_ATTN_ABSORBED || (mode == FR_ATTN_AUTO && n == 1);
    fr_seq_step st = {
        .ids = ids, .n = n, .pos = s->pos, .blocks = s->seq.blocks, .n_absorbed = absorbed ? n : 0,
        .logits = next ? FR_LOGITS_LAST : !logits ? FR_LOGITS_NONE : all_logits ? FR_LOGITS_ALL : FR_LOGITS_LAST,
        .max_ctx = s->max_ctx,
    };
    fr_status rc = next ? fr_forward_step_ids(s->fwd, &st, 1, next, err) : fr_forward_step(s->fwd, &st, 1, logits, err);
    if (!rc) s->pos += n;
    return rc;
}

fr_status fr_session_eval(fr_session *s, const int32_t *ids, int64_t n, fr_attn_mode mode, float *logits,
                          bool all_logits, fr_error *err) {
    return session_step(s, ids, n, mode, logits, all_logits, NULL, err);
}

fr_status fr_session_eval_greedy(fr_session *s, const int32_t *ids, int64_t n, fr_attn_mode mode, int32_t *next,
                                 fr_error *err) {
    return session_step(s, ids, n, mode, NULL, false, next, err);
}
