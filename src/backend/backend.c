/* backend.c - backend-independent pieces: destruction, MoE expert selection and the
 * FP8 KV-cache row encoder.
 *
 * Selection is a few dozen comparisons per token; every backend (the CUDA one
 * included, for its host-side checks) must pick exactly the same experts, so the
 * rule lives here once: noaux_tc of shared/docs/ARCH.md section 4.4, ties going
 * to the lower index. The FP8 row encoder is likewise the one definition of the
 * cache's bytes that every backend's kv_write reproduces. */
#include "backend.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* float32 -> E4M3 (e4m3fn), round to nearest even, saturating to +-448, NaN -> 0x7f: the
 * same bytes as fr_f32_to_e4m3 (unit_kv_cache checks every class of input), computed from
 * the bits instead of by search, because the cache encodes every token of every layer. */
static inline uint8_t e4m3_rne(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    const uint8_t sign = (uint8_t)((u >> 24) & 0x80);
    u &= 0x7fffffffu;
    if (u > 0x7f800000u) return sign | 0x7f; /* NaN */
    if (u >= 0x43e00000u) return sign | 0x7e; /* >= 448 (and inf): saturate */
    if (u < 0x3c800000u) {                    /* below 2^-6: subnormal steps of 2^-9 */
        float a;
        memcpy(&a, &u, sizeof a);
        return sign | (uint8_t)lrintf(a * 512.0f); /* exact scaling; rint ties to even; 8 is 2^-6 */
    }
    /* normal: round the 23-bit mantissa to 3 bits (ties to even), then rebias 127 -> 7;
     * a carry out of the mantissa bumps the exponent, as it should */
    u += 0x7ffffu + ((u >> 20) & 1);
    const uint32_t code = (u >> 20) - (120u << 3);
    return sign | (uint8_t)(code > 0x7e ? 0x7e : code);
}

void fr_kv_fp8_encode(const float *x, int64_t n_lat, int64_t n_rope, uint8_t *row) {
    float amax = 0.0f;
    for (int64_t i = 0; i < n_lat; i++) amax = fmaxf(amax, fabsf(x[i]));
    /* scale = amax / 448 puts the largest value on E4M3's largest finite one. Dividing by
     * the stored scale (not multiplying by 448 / amax) keeps encode the inverse of decode's
     * e4m3 * scale; the encoder saturates the rare 448 * (1 + ulp) to 448. */
    const float scale = amax / 448.0f;
    memset(row, 0, (size_t)fr_kv_row_bytes(FR_KV_FP8, n_lat, n_rope));
    if (scale > 0.0f)
        for (int64_t i = 0; i < n_lat; i++) row[i] = e4m3_rne(x[i] / scale);
    uint8_t *pe = row + fr_kv_fp8_rope_off(n_lat);
    for (int64_t i = 0; i < n_rope; i++) {
        const uint16_t b = fr_f32_to_bf16(x[n_lat + i]);
        memcpy(pe + 2 * i, &b, sizeof b);
    }
    memcpy(row + fr_kv_fp8_scale_off(n_lat, n_rope), &scale, sizeof scale);
}

void fr_backend_destroy(fr_backend *be) {
    if (!be) return;
    if (be->ops && be->ops->destroy) be->ops->destroy(be);
    else free(be);
}

/* Index of the largest v[i] over i < n with allowed[i] (or all when allowed is NULL)
 * not yet taken; lower index wins ties. -1 when none is left. */
static int argmax_free(const float *v, int n, const unsigned char *taken) {
    int best = -1;
    for (int i = 0; i < n; i++) {
        if (taken[i]) continue;
        if (best < 0 || v[i] > v[best]) best = i;
    }
    return best;
}

void fr_route_select(const fr_router *r, const float *scores, const float *bias, int32_t *idx, float *w) {
    enum { MAXE = 4096 };
    int E = r->n_experts;
    float choice[MAXE];
    unsigned char taken[MAXE] = {0};
    for (int e = 0; e < E; e++) choice[e] = scores[e] + (bias ? bias[e] : 0.0f);

    if (r->n_group > 1) {
        int gs = E / r->n_group;
        float gscore[MAXE];
        unsigned char gtaken[MAXE] = {0};
        for (int g = 0; g < r->n_group; g++) {
            /* group score = sum of the two largest choices in the group (one if the group has one) */
            float a = -INFINITY, b = -INFINITY;
            for (int e = g * gs; e < (g + 1) * gs; e++) {
                if (choice[e] > a) { b = a; a = choice[e]; }
                else if (choice[e] > b) b = choice[e];
            }
            gscore[g] = gs > 1 ? a + b : a;
        }
        unsigned char keep[MAXE] = {0};
        for (int k = 0; k < r->topk_group; k++) {
            int g = argmax_free(gscore, r->n_group, gtaken);
            gtaken[g] = 1;
            keep[g] = 1;
        }
        for (int e = 0; e < E; e++)
            if (!keep[e / gs]) taken[e] = 1; /* excluded groups can never be chosen */
    }
    double sum = 0.0;
    for (int k = 0; k < r->top_k; k++) {
        int e = argmax_free(choice, E, taken);
        taken[e] = 1;
        idx[k] = e;
        w[k] = scores[e];
        sum += scores[e];
    }
    for (int k = 0; k < r->top_k; k++) {
        double v = w[k];
        if (r->norm_topk_prob) v /= (sum + 1e-20);
        w[k] = (float)(v * r->routed_scaling_factor);
    }
}
