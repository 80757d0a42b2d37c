/* cpu_backend.c - the CPU implementation of the backend op table.
 *
 * The reference backend and a fast fallback: float32 activations, weights read
 * in their stored format through the matmul kernels (matmul.c), OpenMP threads.
 * Attention runs per (token, head) in parallel; MoE groups the tokens routed to
 * each expert so every expert's weights are read once per call. Scratch memory
 * is malloc'd per call: these buffers are small next to the weights each op
 * streams, and the allocator keeps them hot. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "../../core/argmax.h"
#include "../backend.h"
#include "cpu_dsa.h"
#include "cpu_kv.h"
#include "matmul.h"


static void *cpu_alloc(fr_backend *be, size_t bytes) {
    (void)be;
    return calloc(1, bytes ? bytes : 1);
}

static void cpu_free(fr_backend *be, void *p) {
    (void)be;
    free(p);
}

static void cpu_destroy(fr_backend *be) { free(be); }

/* Row r of w as float32 into out[w->cols]. */
static void row_to_f32(const fr_weight *w, int64_t r, float *out) {
    const size_t off = (size_t)r * (size_t)w->cols;
    switch (w->dtype) {
    case FR_DTYPE_F32: memcpy(out, (const float *)w->data + off, (size_t)w->cols * 4); break;
    case FR_DTYPE_BF16: {
        const uint16_t *p = (const uint16_t *)w->data + off;
        for (int64_t c = 0; c < w->cols; c++) out[c] = fr_bf16_to_f32(p[c]);
        break;
    }
    default:
        for (int64_t c = 0; c < w->cols; c++) out[c] = fr_weight_get(w, r, c);
    }
}

static fr_status cpu_embed(fr_backend *be, float *out, const int32_t *ids, int64_t n, const fr_weight *table) {
    be->weight_bytes_read += (uint64_t)(n * table->cols * (int64_t)fr_dtype_size(table->dtype));
    for (int64_t t = 0; t < n; t++) row_to_f32(table, ids[t], out + t * table->cols);
    return FR_OK;
}

static fr_status cpu_matmul(fr_backend *be, float *y, const float *x, int64_t n, const fr_weight *w) {
    be->weight_bytes_read += (uint64_t)fr_weight_bytes(w);
    fr_cpu_matmul(y, x, n, w);
    return FR_OK;
}

static fr_status cpu_rmsnorm(fr_backend *be, float *out, const float *x, int64_t n, int64_t dim, int64_t stride,
                             const fr_weight *w, float eps) {
    (void)be;
    float *wf = malloc((size_t)dim * sizeof *wf);
    if (!wf) return FR_ERR_NOMEM;
    row_to_f32(w, 0, wf);
    for (int64_t t = 0; t < n; t++) {
        const float *xr = x + t * stride;
        float *o = out + t * stride;
        double ss = 0.0;
        for (int64_t i = 0; i < dim; i++) ss += (double)xr[i] * xr[i];
        float inv = (float)(1.0 / sqrt(ss / (double)dim + (double)eps));
        for (int64_t i = 0; i < dim; i++) o[i] = wf[i] * (xr[i] * inv);
    }
    free(wf);
    return FR_OK;
}

static fr_status cpu_add_rmsnorm(fr_backend *be, float *out, float *resid, const float *delta, int64_t n,
                                 int64_t dim, const fr_weight *w, float eps) {
    if (delta)
        for (int64_t i = 0; i < n * dim; i++) resid[i] += delta[i];
    return cpu_rmsnorm(be, out, resid, n, dim, dim, w, eps);
}

static fr_status cpu_rope(fr_backend *be, float *x, int64_t n, int heads, int64_t stride, int64_t head_stride,
                          int rope, const int32_t *pos, const double *freqs, float mscale) {
    (void)be;
    for (int64_t t = 0; t < n; t++) {
        for (int i = 0; i < rope / 2; i++) {
            double a = (double)pos[t] * freqs[i];
            float c = (float)(cos(a) * mscale), s = (float)(sin(a) * mscale);
            for (int h = 0; h < heads; h++) {
                float *v = x + t * stride + h * head_stride + 2 * i;
                float x0 = v[0], x1 = v[1];
                v[0] = x0 * c - x1 * s;
                v[1] = x0 * s + x1 * c;
            }
        }
    }
    return FR_OK;
}

/* In-place softmax of p[0..m), returning nothing; m >= 1. */
static void softmax(float *p, int64_t m) {
    float mx = p[0];
    for (int64_t i = 1; i < m; i++) mx = p[i] > mx ? p[i] : mx;
    double sum = 0.0;
    for (int64_t i = 0; i < m; i++) {
        p[i] = expf(p[i] - mx);
        sum += p[i];
    }
    float inv = (float)(1.0 / sum);
    for (int64_t i = 0; i < m; i++) p[i] *= inv;
}

/* Prefill form: up-project every cached latent to per-head keys and values. */
static fr_status mla_naive(fr_backend *be, float *out, const float *q, int64_t n, int64_t pos0,
                           const fr_mla_layer *L) {
    const int H = L->n_heads, dn = L->nope, dr = L->rope, dv = L->v, r = L->kv_lora;
    const int64_t T = pos0 + n, row = r + dr, kvw = (int64_t)H * (dn + dv), qw = dn + dr;
    float *lat = malloc((size_t)T * r * sizeof *lat);
    float *kv = malloc((size_t)T * kvw * sizeof *kv);
    float *p = malloc((size_t)omp_get_max_threads() * T * sizeof *p);
    float *pe = malloc((size_t)T * dr * sizeof *pe), *tmp = malloc((size_t)row * sizeof *tmp);
    if (!lat || !pe || !kv || !p || !tmp) {
        free(lat), free(pe), free(kv), free(p), free(tmp);
        return FR_ERR_NOMEM;
    }
    fr_cpu_mla_gather(L, NULL, T, lat, pe, tmp);
    cpu_matmul(be, kv, lat, T, L->kv_b); /* [T, H * (dn + dv)]: per head k_nope then v */
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t t = 0; t < n; t++) {
        for (int h = 0; h < H; h++) {
            float *pt = p + (int64_t)omp_get_thread_num() * T;
            const float *qh = q + (t * H + h) * qw;
            const int64_t m = pos0 + t + 1; /* causal: keys 0..pos0+t */
            for (int64_t s = 0; s < m; s++) {
                const float *k = kv + s * kvw + (int64_t)h * (dn + dv);
                pt[s] = L->scale * (fr_cpu_dot(qh, k, dn) + fr_cpu_dot(qh + dn, pe + s * dr, dr));
            }
            softmax(pt, m);
            float *o = out + t * (int64_t)H * dv + (int64_t)h * dv;
            for (int j = 0; j < dv; j++) o[j] = 0.0f;
            for (int64_t s = 0; s < m; s++) {
                const float *vv = kv + s * kvw + (int64_t)h * (dn + dv) + dn;
                for (int j = 0; j < dv; j++) o[j] += pt[s] * vv[j];
            }
        }
    }
    free(lat), free(pe), free(kv), free(p), free(tmp);
    return FR_OK;
}

/* Decode form: absorb W_UK into the query and W_UV into the output; attend over the
 * latent directly (an MQA with one shared (r + dr)-wide key and r-wide value).
 *
 * Every head reads the same cached rows, so each thread takes a share of the heads and
 * walks the keys in blocks, all of its heads over one block before the next: a row comes
 * from memory once per thread and pass instead of once per head (at 32k tokens a layer's
 * float32 latent is 75 MB, far past the caches). Per head the arithmetic and its order are
 * the per-head loop's. */
#define ABSORBED_KEY_BLOCK 64
static fr_status mla_absorbed(fr_backend *be, float *out, const float *q, int64_t n, int64_t pos0,
                              const fr_mla_layer *L) {
    const int H = L->n_heads, dn = L->nope, dr = L->rope, dv = L->v, r = L->kv_lora;
    const int64_t T = pos0 + n, qw = dn + dr;
    /* scores [H, T], q_lat and o_lat [H, r] of the token in hand */
    float *p = malloc((size_t)H * (size_t)(T + 2 * (int64_t)r) * sizeof *p);
    if (!p) return FR_ERR_NOMEM;
    float *qlat = p + (int64_t)H * T, *olat = qlat + (int64_t)H * r;
    be->weight_bytes_read += (uint64_t)fr_weight_bytes(L->kv_b);
    for (int64_t t = 0; t < n; t++) {
        const int64_t m = pos0 + t + 1; /* causal: keys 0 .. pos0+t */
#pragma omp parallel
        {
            const int nth = omp_get_num_threads(), th = omp_get_thread_num();
            const int h0 = (int)((int64_t)H * th / nth), h1 = (int)((int64_t)H * (th + 1) / nth);
            for (int h = h0; h < h1; h++) {
                fr_weight uk = fr_weight_rows(L->kv_b, (int64_t)h * (dn + dv), dn);
                fr_cpu_matmul_t(qlat + (int64_t)h * r, q + (t * H + h) * qw, 1, &uk); /* q_lat = W_UK[h]ᵀ q_nope */
            }
            for (int64_t s0 = 0; s0 < m; s0 += ABSORBED_KEY_BLOCK) {
                const int64_t s1 = s0 + ABSORBED_KEY_BLOCK < m ? s0 + ABSORBED_KEY_BLOCK : m;
                for (int h = h0; h < h1; h++) {
                    const float *qh = q + (t * H + h) * qw, *ql = qlat + (int64_t)h * r;
                    float *ph = p + (int64_t)h * T;
                    for (int64_t s = s0; s < s1; s++) ph[s] = L->scale * fr_cpu_mla_score(L, s, ql, qh + dn);
                }
            }
            for (int h = h0; h < h1; h++) {
                softmax(p + (int64_t)h * T, m);
                for (int j = 0; j < r; j++) olat[(int64_t)h * r + j] = 0.0f;
            }
            for (int64_t s0 = 0; s0 < m; s0 += ABSORBED_KEY_BLOCK) {
                const int64_t s1 = s0 + ABSORBED_KEY_BLOCK < m ? s0 + ABSORBED_KEY_BLOCK : m;
                for (int h = h0; h < h1; h++)
                    for (int64_t s = s0; s < s1; s++)
                        fr_cpu_mla_accum(L, s, p[(int64_t)h * T + s], olat + (int64_t)h * r);
            }
            for (int h = h0; h < h1; h++) {
                fr_weight uv = fr_weight_rows(L->kv_b, (int64_t)h * (dn + dv) + dn, dv);
                fr_cpu_matmul(out + t * (int64_t)H * dv + (int64_t)h * dv, olat + (int64_t)h * r, 1,
                              &uv); /* o = W_UV[h] o_lat */
            }
        }
    }
    free(p);
    return FR_OK;
}

/* The attention and indexer ops add their wall time to the backend's counters (what
 * `frontier bench --context` splits a decode step by). */
static fr_status cpu_mla_attention(fr_backend *be, float *out, const float *q, int64_t n, int64_t pos0,
                                   const fr_mla_layer *L, bool absorbed) {
    const double t0 = omp_get_wtime();
    fr_status rc = absorbed ? mla_absorbed(be, out, q, n, pos0, L) : mla_naive(be, out, q, n, pos0, L);
    be->attention_s += omp_get_wtime() - t0;
    return rc;
}

static fr_status cpu_mla_sparse_attention(fr_backend *be, float *out, const float *q, int64_t n, int64_t pos0,
                                          const fr_mla_layer *L, const int32_t *sel, int sel_width, bool absorbed) {
    const double t0 = omp_get_wtime();
    fr_status rc = fr_cpu_mla_sparse_attention(be, out, q, n, pos0, L, sel, sel_width, absorbed);
    be->attention_s += omp_get_wtime() - t0;
    return rc;
}

static fr_status cpu_dsa_select(fr_backend *be, int32_t *sel, const float *q, const float *w, int64_t n, int64_t pos0,
                                const fr_dsa_layer *L) {
    const double t0 = omp_get_wtime();
    fr_status rc = fr_cpu_dsa_select(be, sel, q, w, n, pos0, L);
    be->indexer_s += omp_get_wtime() - t0;
    return rc;
}

static inline float silu(float x) { return x / (1.0f + expf(-x)); }

static void silu_mul(float *g, const float *u, int64_t n) {
    for (int64_t i = 0; i < n; i++) g[i] = silu(g[i]) * u[i];
}

/* Adds the weight bytes of a group's products to the backend's counter and runs them. */
static void matmul_group(fr_backend *be, const fr_matmul_item *items, int count) {
    for (int i = 0; i < count; i++) be->weight_bytes_read += (uint64_t)fr_weight_bytes(items[i].w);
    fr_cpu_matmul_group(items, count);
}

static fr_status cpu_mlp(fr_backend *be, float *out, const float *x, int64_t n, const fr_mlp *m) {
    const int64_t I = m->gate->rows;
    float *g = malloc((size_t)n * I * sizeof *g), *u = malloc((size_t)n * I * sizeof *u);
    if (!g || !u) {
        free(g), free(u);
        return FR_ERR_NOMEM;
    }
    const fr_matmul_item gate_up[2] = {{g, x, n, m->gate}, {u, x, n, m->up}};
    matmul_group(be, gate_up, 2);
    silu_mul(g, u, n * I);
    cpu_matmul(be, out, g, n, m->down);
    free(g), free(u);
    return FR_OK;
}

/* Slots (token, expert pairs) per wave of cpu_moe: bounds its buffers (about 20 MB at
 * DeepSeek-V3's widths) while a decode batch of up to 32 tokens is one wave. */
#define MOE_WAVE_SLOTS 256

/* The end of the wave that starts at expert e0: as many experts as fit MOE_WAVE_SLOTS
 * slots (count[] is the slot offset of each expert), at least one. */
static int moe_wave_end(const int64_t *count, int e0, int E) {
    int e1 = e0 + 1;
    while (e1 < E && count[e1 + 1] - count[e0] <= MOE_WAVE_SLOTS) e1++;
    return e1;
}

/* Routed experts run in waves of consecutive experts, each as two groups of products
 * (fr_cpu_matmul_group): gate and up of every expert of the wave (and of the shared
 * expert in the first), then their down projections. At decode a layer then costs two
 * fork/joins rather than three per expert. Every product and sum is the one a loop
 * over experts would do, in the same order, so the bits do not depend on the waves. */
static fr_status cpu_moe(fr_backend *be, float *out, const float *x, int64_t n, int64_t dim, const fr_router *r,
                         const fr_mlp *experts, const fr_mlp *shared) {
    const int E = r->n_experts, K = r->top_k;
    const bool has_shared = shared && shared->gate;
    const int64_t Is = has_shared ? shared->gate->rows : 0;
    fr_status rc = FR_ERR_NOMEM;
    float *scores = malloc((size_t)n * E * sizeof *scores);
    float *bias = malloc((size_t)E * sizeof *bias);
    int32_t *idx = malloc((size_t)n * K * sizeof *idx);
    float *wts = malloc((size_t)n * K * sizeof *wts);
    int64_t *count = calloc((size_t)E + 1, sizeof *count);
    int64_t *slot_tok = malloc((size_t)n * K * sizeof *slot_tok);
    float *slot_w = malloc((size_t)n * K * sizeof *slot_w);
    fr_matmul_item *items = malloc((size_t)(2 * E + 2) * sizeof *items);
    float *xs = NULL, *ys = NULL, *hid = NULL, *hid_shared = NULL;
    if (!scores || !bias || !idx || !wts || !count || !slot_tok || !slot_w || !items) goto out;

    /* Router in float32: sigmoid scores; the correction bias only steers selection. */
    cpu_matmul(be, scores, x, n, r->gate);
    for (int64_t i = 0; i < n * E; i++) scores[i] = 1.0f / (1.0f + expf(-scores[i]));
    for (int e = 0; e < E; e++) bias[e] = r->bias && r->bias->data ? fr_weight_get(r->bias, 0, e) : 0.0f;
    for (int64_t t = 0; t < n; t++) fr_route_select(r, scores + t * E, bias, idx + t * K, wts + t * K);

    /* Bucket (token, weight) pairs by expert: counting sort, so each chosen expert runs
     * once over all of its tokens. */
    for (int64_t i = 0; i < n * K; i++) count[idx[i] + 1]++;
    for (int e = 0; e < E; e++) count[e + 1] += count[e];
    {
        int64_t *fill = calloc((size_t)E, sizeof *fill);
        if (!fill) goto out;
        for (int64_t i = 0; i < n * K; i++) {
            int e = idx[i];
            int64_t s = count[e] + fill[e]++;
            slot_tok[s] = i / K;
            slot_w[s] = wts[i];
        }
        free(fill);
    }

    /* Buffers for the largest wave: slots' rows of x and of the expert outputs, and
     * [gate | up] rows of each expert of the wave. */
    int64_t wave_slots = 0, wave_hidden = 0;
    for (int e0 = 0, e1; e0 < E; e0 = e1) {
        e1 = moe_wave_end(count, e0, E);
        int64_t hsum = 0;
        for (int e = e0; e < e1; e++) hsum += 2 * (count[e + 1] - count[e]) * experts[e].gate->rows;
        if (count[e1] - count[e0] > wave_slots) wave_slots = count[e1] - count[e0];
        if (hsum > wave_hidden) wave_hidden = hsum;
    }
    xs = malloc((size_t)(wave_slots * dim + 1) * sizeof *xs);
    ys = malloc((size_t)(wave_slots * dim + 1) * sizeof *ys);
    hid = malloc((size_t)(wave_hidden + 1) * sizeof *hid);
    hid_shared = malloc((size_t)(2 * n * Is + 1) * sizeof *hid_shared);
    if (!xs || !ys || !hid || !hid_shared) goto out;

    for (int e0 = 0, e1; e0 < E; e0 = e1) {
        e1 = moe_wave_end(count, e0, E);
        const int64_t s0 = count[e0];
        for (int64_t s = s0; s < count[e1]; s++)
            memcpy(xs + (s - s0) * dim, x + slot_tok[s] * dim, (size_t)dim * sizeof *xs);
        int m = 0;
        if (has_shared && e0 == 0) {
            items[m++] = (fr_matmul_item){hid_shared, x, n, shared->gate};
            items[m++] = (fr_matmul_item){hid_shared + n * Is, x, n, shared->up};
        }
        int64_t h = 0; /* expert e's [gate | up] rows start at hid + h */
        for (int e = e0; e < e1; e++) {
            const int64_t c = count[e + 1] - count[e], I = experts[e].gate->rows;
            if (!c) continue;
            items[m++] = (fr_matmul_item){hid + h, xs + (count[e] - s0) * dim, c, experts[e].gate};
            items[m++] = (fr_matmul_item){hid + h + c * I, xs + (count[e] - s0) * dim, c, experts[e].up};
            h += 2 * c * I;
        }
        matmul_group(be, items, m);

        m = 0;
        if (e0 == 0) {
            if (has_shared) {
                silu_mul(hid_shared, hid_shared + n * Is, n * Is);
                items[m++] = (fr_matmul_item){out, hid_shared, n, shared->down};
            } else {
                memset(out, 0, (size_t)n * dim * sizeof *out);
            }
        }
        h = 0;
        for (int e = e0; e < e1; e++) {
            const int64_t c = count[e + 1] - count[e], I = experts[e].gate->rows;
            if (!c) continue;
            silu_mul(hid + h, hid + h + c * I, c * I);
            items[m++] = (fr_matmul_item){ys + (count[e] - s0) * dim, hid + h, c, experts[e].down};
            h += 2 * c * I;
        }
        matmul_group(be, items, m);

        /* Weighted sum onto the shared expert's output, expert by expert in index order. */
        for (int64_t s = s0; s < count[e1]; s++) {
            float *o = out + slot_tok[s] * dim;
            const float ws = slot_w[s], *yv = ys + (s - s0) * dim;
            for (int64_t i = 0; i < dim; i++) o[i] += ws * yv[i];
        }
    }
    rc = FR_OK;
out:
    free(scores), free(bias), free(idx), free(wts), free(count), free(slot_tok), free(slot_w), free(items);
    free(xs), free(ys), free(hid), free(hid_shared);
    return rc;
}

static fr_status cpu_copy_rows(fr_backend *be, float *dst, const int64_t *dst_rows, const float *src,
                               const int64_t *src_rows, int64_t n, int64_t dim) {
    (void)be;
    for (int64_t i = 0; i < n; i++)
        memcpy(dst + (dst_rows ? dst_rows[i] : i) * dim, src + (src_rows ? src_rows[i] : i) * dim,
               (size_t)dim * sizeof *dst);
    return FR_OK;
}

static fr_status cpu_kv_write(fr_backend *be, void *cache, fr_kv_dtype dt, const int64_t *dst_rows, const float *src,
                              int64_t n, int64_t n_lat, int64_t n_rope) {
    (void)be;
    const int64_t w = n_lat + n_rope, rb = fr_kv_row_bytes(dt, n_lat, n_rope);
    uint8_t *base = cache;
    if (dt == FR_KV_F32) {
        for (int64_t i = 0; i < n; i++) memcpy(base + dst_rows[i] * rb, src + i * w, (size_t)rb);
        return FR_OK;
    }
    if (dt != FR_KV_FP8) return FR_ERR_INVALID;
    for (int64_t i = 0; i < n; i++) fr_kv_fp8_encode(src + i * w, n_lat, n_rope, base + dst_rows[i] * rb);
    return FR_OK;
}

static fr_status cpu_argmax(fr_backend *be, int32_t *ids, const float *x, int64_t rows, int64_t cols) {
    (void)be;
    for (int64_t r = 0; r < rows; r++) ids[r] = fr_argmax_f32(x + r * cols, cols);
    return FR_OK;
}

static fr_status cpu_to_host(fr_backend *be, float *host, const float *src, size_t n) {
    (void)be;
    if (host != src) memcpy(host, src, n * sizeof *host);
    return FR_OK;
}

static fr_status cpu_from_host(fr_backend *be, float *dst, const float *host, size_t n) {
    (void)be;
    if (dst != host) memcpy(dst, host, n * sizeof *dst);
    return FR_OK;
}

static const fr_backend_ops cpu_ops = {
    .api_version = FR_BACKEND_API_VERSION,
    .name = "cpu",
    .destroy = cpu_destroy,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .synchronize = NULL,
    .embed = cpu_embed,
    .matmul = cpu_matmul,
    .rmsnorm = cpu_rmsnorm,
    .add_rmsnorm = cpu_add_rmsnorm,
    .rope = cpu_rope,
    .mla_attention = cpu_mla_attention,
    .moe = cpu_moe,
    .mlp = cpu_mlp,
    .copy_rows = cpu_copy_rows,
    .kv_write = cpu_kv_write,
    .to_host = cpu_to_host,
    .from_host = cpu_from_host,
    .all_reduce = NULL,
    .layernorm = fr_cpu_layernorm,
    .rope_half = fr_cpu_rope_half,
    .dsa_select = cpu_dsa_select,
    .mla_sparse_attention = cpu_mla_sparse_attention,
    .argmax = cpu_argmax,
};

fr_status fr_cpu_backend_create(int n_threads, fr_backend **out, fr_error *err) {
    fr_backend *be = calloc(1, sizeof *be);
    if (!be) return fr_fail(err, FR_ERR_NOMEM, "cpu backend: out of memory");
    if (n_threads > 0) omp_set_num_threads(n_threads);
    be->ops = &cpu_ops;
    be->n_threads = omp_get_max_threads();
    *out = be;
    return FR_OK;
}
