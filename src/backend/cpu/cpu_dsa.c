/* cpu_dsa.c - DeepSeek Sparse Attention on the CPU (shared/docs/ARCH.md 5).
 *
 * The indexer's own pieces (LayerNorm with bias, half-split RoPE), its scoring and
 * top-k over the paged key cache, and MLA over the chosen tokens in both the prefill
 * (up-projecting) and the absorbed (decode) form. Float32 like the rest of the CPU
 * backend, over cache rows of either dtype (read through cpu_kv.h); work is split over (token, head) or tokens with OpenMP, scratch memory is
 * per thread. Selections hold sequence positions, so a "shared" layer can attend
 * with another layer's selection through its own pages. */
#include "cpu_dsa.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_kv.h"
#include "matmul.h"

/* Vector weight w (a 1 x dim view) as float32. */
static void vec_to_f32(const fr_weight *w, int64_t dim, float *out) {
    for (int64_t i = 0; i < dim; i++) out[i] = fr_weight_get(w, 0, i);
}

fr_status fr_cpu_layernorm(fr_backend *be, float *out, const float *x, int64_t n, int64_t dim, int64_t stride,
                           const fr_weight *w, const fr_weight *b, float eps) {
    (void)be;
    float *wb = malloc(2 * (size_t)dim * sizeof *wb);
    if (!wb) return FR_ERR_NOMEM;
    vec_to_f32(w, dim, wb);
    vec_to_f32(b, dim, wb + dim);
    for (int64_t t = 0; t < n; t++) {
        const float *xr = x + t * stride;
        float *o = out + t * stride;
        double mean = 0.0, var = 0.0;
        for (int64_t i = 0; i < dim; i++) mean += xr[i];
        mean /= (double)dim;
        for (int64_t i = 0; i < dim; i++) var += ((double)xr[i] - mean) * ((double)xr[i] - mean);
        const double inv = 1.0 / sqrt(var / (double)dim + (double)eps);
        for (int64_t i = 0; i < dim; i++) o[i] = (float)(((double)xr[i] - mean) * inv) * wb[i] + wb[dim + i];
    }
    free(wb);
    return FR_OK;
}

fr_status fr_cpu_rope_half(fr_backend *be, float *x, int64_t n, int heads, int64_t stride, int64_t head_stride,
                           int rope, const int32_t *pos, const double *freqs, float mscale) {
    (void)be;
    const int half = rope / 2;
    for (int64_t t = 0; t < n; t++) {
        for (int i = 0; i < half; i++) {
            const double a = (double)pos[t] * freqs[i];
            const float c = (float)(cos(a) * mscale), s = (float)(sin(a) * mscale);
            for (int h = 0; h < heads; h++) {
                float *v = x + t * stride + h * head_stride;
                const float x0 = v[i], x1 = v[i + half];
                v[i] = x0 * c - x1 * s;
                v[i + half] = x0 * s + x1 * c;
            }
        }
    }
    return FR_OK;
}

/* ---- top-k: a binary heap of key positions whose root is the weakest kept key */

/* Is key a ranked below key b? Lower score, or an equal score at a later position
 * (so equal scores keep the earlier key, as the op promises). */
static inline bool weaker(const float *score, int32_t a, int32_t b) {
    return score[a] < score[b] || (score[a] == score[b] && a > b);
}

static void sift_down(int32_t *heap, int k, const float *score, int i) {
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        if (l < k && weaker(score, heap[l], heap[m])) m = l;
        if (r < k && weaker(score, heap[r], heap[m])) m = r;
        if (m == i) return;
        int32_t tmp = heap[i];
        heap[i] = heap[m];
        heap[m] = tmp;
        i = m;
    }
}

static int cmp_i32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* The k best of score[0..m) (k < m) into out, in increasing position order. */
static void top_k(const float *score, int64_t m, int k, int32_t *out) {
    for (int i = 0; i < k; i++) out[i] = i;
    for (int i = k / 2 - 1; i >= 0; i--) sift_down(out, k, score, i);
    for (int64_t s = k; s < m; s++) {
        /* a later key replaces the weakest kept one only with a strictly higher score */
        if (score[s] > score[out[0]]) {
            out[0] = (int32_t)s;
            sift_down(out, k, score, 0);
        }
    }
    qsort(out, (size_t)k, sizeof *out, cmp_i32);
}

/* Index scores of keys [s0, s1) for one query token (q: [H_I, D_I], w: [H_I]). */
static void score_keys(const fr_dsa_layer *L, const float *qt, const float *wt, int64_t s0, int64_t s1, float *score,
                       float *ktmp) {
    const int HI = L->n_heads, DI = L->head_dim;
    for (int64_t s = s0; s < s1; s++) {
        const float *k = fr_dsa_key(L, s, ktmp);
        float acc = 0.0f;
        for (int h = 0; h < HI; h++) {
            const float d = fr_cpu_dot(qt + (int64_t)h * DI, k, DI);
            if (d > 0.0f) acc += wt[h] * d; /* ReLU before the per-head weight */
        }
        score[s] = acc * L->scale;
    }
}

fr_status fr_cpu_dsa_select(fr_backend *be, int32_t *sel, const float *q, const float *w, int64_t n, int64_t pos0,
                            const fr_dsa_layer *L) {
    (void)be;
    const int HI = L->n_heads, DI = L->head_dim, K = L->topk, nt = omp_get_max_threads();
    const int64_t T = pos0 + n;
    int failed = 0;
    if (n < nt) {
        /* Few query tokens (decode): split each token's keys over the threads instead, or
         * one thread would score a long context alone. The same scores either way. */
        float *score = malloc((size_t)T * sizeof *score);
        float *ktmp = malloc((size_t)nt * DI * sizeof *ktmp);
        for (int64_t t = 0; t < n && score && ktmp; t++) {
            int32_t *row = sel + t * K;
            const int64_t m = pos0 + t + 1;
            if (m <= K) {
                for (int64_t s = 0; s < K; s++) row[s] = s < m ? (int32_t)s : -1;
                continue;
            }
            const float *qt = q + t * (int64_t)HI * DI, *wt = w + t * (int64_t)HI;
#pragma omp parallel
            {
                const int64_t th = omp_get_thread_num(), nth = omp_get_num_threads();
                score_keys(L, qt, wt, m * th / nth, m * (th + 1) / nth, score, ktmp + th * DI);
            }
            top_k(score, m, K, row);
        }
        failed = !score || !ktmp;
        free(score), free(ktmp);
        return failed ? FR_ERR_NOMEM : FR_OK;
    }
#pragma omp parallel
    {
        float *score = malloc((size_t)T * sizeof *score);
        float *ktmp = malloc((size_t)DI * sizeof *ktmp); /* an FP8 key, decoded */
        if (!score || !ktmp) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t t = 0; t < n; t++) {
            int32_t *row = sel + t * K;
            const int64_t m = pos0 + t + 1; /* causal: keys 0 .. pos0+t */
            if (m <= K) {                   /* every visible key is kept: no scores needed */
                for (int64_t s = 0; s < K; s++) row[s] = s < m ? (int32_t)s : -1;
                continue;
            }
            if (!score || !ktmp) continue;
            score_keys(L, q + t * (int64_t)HI * DI, w + t * (int64_t)HI, 0, m, score, ktmp);
            top_k(score, m, K, row);
        }
        free(score), free(ktmp);
    }
    return failed ? FR_ERR_NOMEM : FR_OK;
}

/* ---- MLA over the selected keys */

/* Valid entries of a selection row (it ends at the first -1). */
static int row_len(const int32_t *row, int width) {
    int c = 0;
    while (c < width && row[c] >= 0) c++;
    return c;
}

static void softmax(float *p, int m) {
    float mx = p[0];
    for (int i = 1; i < m; i++) mx = p[i] > mx ? p[i] : mx;
    double sum = 0.0;
    for (int i = 0; i < m; i++) {
        p[i] = expf(p[i] - mx);
        sum += p[i];
    }
    const float inv = (float)(1.0 / sum);
    for (int i = 0; i < m; i++) p[i] *= inv;
}

/* Prefill form: up-project the latents of the union of selected tokens once, then
 * attend per (token, head) over that token's selection. */
static fr_status sparse_naive(fr_backend *be, float *out, const float *q, int64_t n, int64_t pos0,
                              const fr_mla_layer *L, const int32_t *sel, int width) {
    const int H = L->n_heads, dn = L->nope, dr = L->rope, dv = L->v, r = L->kv_lora;
    const int64_t T = pos0 + n, kvw = (int64_t)H * (dn + dv), qw = dn + dr;
    fr_status rc = FR_ERR_NOMEM;
    int64_t *uidx = malloc((size_t)T * sizeof *uidx); /* position -> row of the up-projection, or -1 */
    int64_t *upos = malloc((size_t)T * sizeof *upos); /* row of the up-projection -> position */
    float *lat = NULL, *pe = NULL, *kv = NULL, *p = NULL, *tmp = NULL;
    if (!uidx || !upos) goto out;
    for (int64_t s = 0; s < T; s++) uidx[s] = -1;
    for (int64_t t = 0; t < n; t++) {
        const int32_t *rw = sel + t * width;
        for (int j = 0, c = row_len(rw, width); j < c; j++) uidx[rw[j]] = 0;
    }
    int64_t U = 0;
    for (int64_t s = 0; s < T; s++)
        if (uidx[s] == 0) upos[U] = s, uidx[s] = U++;
    lat = malloc((size_t)(U ? U : 1) * r * sizeof *lat);
    pe = malloc((size_t)(U ? U : 1) * dr * sizeof *pe);
    kv = malloc((size_t)(U ? U : 1) * kvw * sizeof *kv);
    p = malloc((size_t)omp_get_max_threads() * (width ? width : 1) * sizeof *p);
    tmp = malloc((size_t)(r + dr) * sizeof *tmp);
    if (!lat || !pe || !kv || !p || !tmp) goto out;
    fr_cpu_mla_gather(L, upos, U, lat, pe, tmp);
    be->weight_bytes_read += (uint64_t)fr_weight_bytes(L->kv_b);
    if (U) fr_cpu_matmul(kv, lat, U, L->kv_b); /* [U, H * (dn + dv)]: per head k_nope then v */
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t t = 0; t < n; t++) {
        for (int h = 0; h < H; h++) {
            float *pt = p + (int64_t)omp_get_thread_num() * width;
            const int32_t *rw = sel + t * width;
            const int c = row_len(rw, width);
            const float *qh = q + (t * H + h) * qw;
            float *o = out + t * (int64_t)H * dv + (int64_t)h * dv;
            for (int j = 0; j < dv; j++) o[j] = 0.0f;
            if (!c) continue;
            for (int j = 0; j < c; j++) {
                const float *k = kv + uidx[rw[j]] * kvw + (int64_t)h * (dn + dv);
                pt[j] = L->scale * (fr_cpu_dot(qh, k, dn) + fr_cpu_dot(qh + dn, pe + uidx[rw[j]] * dr, dr));
            }
            softmax(pt, c);
            for (int j = 0; j < c; j++) {
                const float *vv = kv + uidx[rw[j]] * kvw + (int64_t)h * (dn + dv) + dn;
                for (int i = 0; i < dv; i++) o[i] += pt[j] * vv[i];
            }
        }
    }
    rc = FR_OK;
out:
    free(uidx), free(upos), free(lat), free(pe), free(kv), free(p), free(tmp);
    return rc;
}

/* Absorbed form: W_UK folded into the query, W_UV into the output; attention over the
 * selected latent rows (an MQA with one (r + dr)-wide key and r-wide value). */
static fr_status sparse_absorbed(fr_backend *be, float *out, const float *q, int64_t n, const fr_mla_layer *L,
                                 const int32_t *sel, int width) {
    const int H = L->n_heads, dn = L->nope, dr = L->rope, dv = L->v, r = L->kv_lora;
    const int64_t qw = dn + dr, per = (int64_t)width + 2 * r;
    float *scratch = malloc((size_t)omp_get_max_threads() * per * sizeof *scratch);
    if (!scratch) return FR_ERR_NOMEM;
    be->weight_bytes_read += (uint64_t)fr_weight_bytes(L->kv_b);
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t t = 0; t < n; t++) {
        for (int h = 0; h < H; h++) {
            float *pt = scratch + (int64_t)omp_get_thread_num() * per;
            float *qlat = pt + width, *olat = qlat + r;
            const int32_t *rw = sel + t * width;
            const int c = row_len(rw, width);
            float *o = out + t * (int64_t)H * dv + (int64_t)h * dv;
            if (!c) {
                for (int j = 0; j < dv; j++) o[j] = 0.0f;
                continue;
            }
            const float *qh = q + (t * H + h) * qw;
            fr_weight uk = fr_weight_rows(L->kv_b, (int64_t)h * (dn + dv), dn);
            fr_weight uv = fr_weight_rows(L->kv_b, (int64_t)h * (dn + dv) + dn, dv);
            fr_cpu_matmul_t(qlat, qh, 1, &uk); /* q_lat = W_UK[h]ᵀ q_nope */
            for (int j = 0; j < c; j++) pt[j] = L->scale * fr_cpu_mla_score(L, rw[j], qlat, qh + dn);
            softmax(pt, c);
            for (int i = 0; i < r; i++) olat[i] = 0.0f;
            for (int j = 0; j < c; j++) fr_cpu_mla_accum(L, rw[j], pt[j], olat);
            fr_cpu_matmul(o, olat, 1, &uv); /* o = W_UV[h] o_lat */
        }
    }
    free(scratch);
    return FR_OK;
}

fr_status fr_cpu_mla_sparse_attention(fr_backend *be, float *out, const float *q, int64_t n, int64_t pos0,
                                      const fr_mla_layer *L, const int32_t *sel, int sel_width, bool absorbed) {
    if (sel_width < 1) return FR_ERR_INVALID;
    return absorbed ? sparse_absorbed(be, out, q, n, L, sel, sel_width)
                    : sparse_naive(be, out, q, n, pos0, L, sel, sel_width);
}
