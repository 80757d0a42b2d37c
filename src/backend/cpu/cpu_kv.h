/* cpu_kv.h - how the CPU attention kernels read KV cache rows of either dtype.
 *
 * The absorbed (decode) kernels touch every cached row twice per head, for the score
 * and for the weighted sum of latents, so for an FP8 cache they work on the stored
 * bytes directly (E4M3 through the 256-entry table, the row's scale applied once per
 * row) instead of decoding rows into floats first. For a float32 cache they read the
 * floats; the dtype test is per row and always goes the same way. Row layout: backend.h. */
#ifndef FR_CPU_KV_H
#define FR_CPU_KV_H

#include "../backend.h"

/* Dot products in 16 running sums, lane k taking every i = k (mod 16), added up by a fixed
 * tree at the end: independent chains the compiler vectorizes, where one running sum was
 * a chain of dependent adds (a 576-wide MLA score took ~2,300 cycles of add latency, and
 * attention was 6% of a moonlight decode step). The order is fixed, so every build and
 * batch gives the same bits. */
#define FR_DOT_LANES 16

static inline float fr_cpu_dot_sum(float *acc) {
    for (int w = FR_DOT_LANES / 2; w >= 1; w /= 2)
        for (int k = 0; k < w; k++) acc[k] += acc[k + w];
    return acc[0];
}

/* acc[i mod 16] += TERM(i) for i in [0, n). */
#define FR_DOT_RUN(acc, n, TERM)                                                             \
    do {                                                                                     \
        int64_t i_ = 0;                                                                      \
        for (; i_ + FR_DOT_LANES <= (n); i_ += FR_DOT_LANES)                                 \
            for (int k_ = 0; k_ < FR_DOT_LANES; k_++) acc[k_] += TERM(i_ + k_);              \
        for (int k_ = 0; i_ < (n); i_++, k_++) acc[k_] += TERM(i_);                          \
    } while (0)

static inline float fr_cpu_dot(const float *a, const float *b, int64_t n) {
    float acc[FR_DOT_LANES] = {0};
#define DOT_F32(i) (a[i] * b[i])
    FR_DOT_RUN(acc, n, DOT_F32);
#undef DOT_F32
    return fr_cpu_dot_sum(acc);
}

/* Σ q[i] * e4m3(b[i]) (the row's scale not applied). */
static inline float fr_cpu_dot_e4m3(const float *q, const uint8_t *b, int64_t n) {
    float acc[FR_DOT_LANES] = {0};
#define DOT_E4M3(i) (q[i] * fr_e4m3_to_f32(b[i]))
    FR_DOT_RUN(acc, n, DOT_E4M3);
#undef DOT_E4M3
    return fr_cpu_dot_sum(acc);
}

static inline float fr_cpu_dot_bf16(const float *q, const uint16_t *b, int64_t n) {
    float acc[FR_DOT_LANES] = {0};
#define DOT_BF16(i) (q[i] * fr_bf16_to_f32(b[i]))
    FR_DOT_RUN(acc, n, DOT_BF16);
#undef DOT_BF16
    return fr_cpu_dot_sum(acc);
}

/* Absorbed-form score of token s's cached row, before the softmax scale:
 * q_lat · c_kv + q_pe · k_pe. */
static inline float fr_cpu_mla_score(const fr_mla_layer *L, int64_t s, const float *qlat, const float *qpe) {
    const int r = L->kv_lora, dr = L->rope;
    if (L->kv_dtype == FR_KV_F32) {
        const float *c = (const float *)L->cache + fr_mla_slot(L, s) * (r + dr);
        return fr_cpu_dot(qlat, c, r) + fr_cpu_dot(qpe, c + r, dr);
    }
    const uint8_t *c = fr_mla_row_fp8(L, s);
    return fr_kv_fp8_scale(c, r, dr) * fr_cpu_dot_e4m3(qlat, c, r) + fr_cpu_dot_bf16(qpe, fr_kv_fp8_rope(c, r), dr);
}

/* olat += p * c_kv of token s's cached row. */
static inline void fr_cpu_mla_accum(const fr_mla_layer *L, int64_t s, float p, float *olat) {
    const int r = L->kv_lora;
    if (L->kv_dtype == FR_KV_F32) {
        const float *c = (const float *)L->cache + fr_mla_slot(L, s) * (r + L->rope);
        for (int j = 0; j < r; j++) olat[j] += p * c[j];
        return;
    }
    const uint8_t *c = fr_mla_row_fp8(L, s);
    const float ps = p * fr_kv_fp8_scale(c, r, L->rope);
    for (int j = 0; j < r; j++) olat[j] += ps * fr_e4m3_to_f32(c[j]);
}

/* Gather tokens pos[0..n) (NULL: 0, 1, ..., n-1) into lat[n, kv_lora] and pe[n, rope] as
 * floats: the prefill forms up-project the latents with one matmul. */
static inline void fr_cpu_mla_gather(const fr_mla_layer *L, const int64_t *pos, int64_t n, float *lat, float *pe,
                                     float *tmp) {
    const int r = L->kv_lora, dr = L->rope;
    for (int64_t u = 0; u < n; u++) {
        const float *row = fr_mla_row(L, pos ? pos[u] : u, tmp);
        memcpy(lat + u * r, row, (size_t)r * sizeof *lat);
        memcpy(pe + u * dr, row + r, (size_t)dr * sizeof *pe);
    }
}

#endif
