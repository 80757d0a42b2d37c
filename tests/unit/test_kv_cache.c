/* test_kv_cache.c - the FP8 KV cache: row format, per-token quantization, the CPU
 * backend's kv_write and its attention ops over FP8 rows, pools and sessions.
 *
 * Encoding: the layout arithmetic (DeepSeek's 512 + 64 latent is 656 bytes), the encoder
 * against core's reference E4M3 conversion (a row whose amax is 448 has scale 1, so its
 * bytes are plain E4M3 of the values: exact codes, midpoints that must round to even,
 * subnormals, saturation), round trips within half an E4M3 step, all-zero rows, negative
 * extremes, BF16 rope values. Ops: an attention op over an FP8 cache equals the same op
 * over a float32 cache holding the decoded values (so the fused FP8 reads are right), for
 * dense, sparse and the indexer top-k. Sessions: an FP8 session's logits stay near the
 * float32 one's, a deliberately wrong scale does not, and the synthetic context fill
 * advances the position. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "check.h"
#include "core/dtype.h"
#include "model/forward.h"
#include "model/kv_cache.h"
#include "model/synth.h"

static uint64_t rng = 0x243F6A8885A308D3ull;
static float frand(void) { /* uniform in [-1, 1) */
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)(rng >> 40) / 8388608.0f - 1.0f;
}

static void test_layout(void) {
    CHECK(fr_kv_row_bytes(FR_KV_F32, 512, 64) == 2304);
    CHECK(fr_kv_row_bytes(FR_KV_FP8, 512, 64) == 656); /* 512 + 128 + 4, padded to 16 */
    CHECK(fr_kv_row_bytes(FR_KV_FP8, 128, 0) == 144);
    CHECK(fr_kv_fp8_rope_off(24) == 24 && fr_kv_fp8_scale_off(24, 8) == 40);
    CHECK(fr_kv_fp8_rope_off(23) == 24 && fr_kv_fp8_scale_off(23, 3) == 32); /* aligned fields */
    for (int n = 1; n < 70; n++)
        for (int r = 0; r < 9; r++) {
            const int64_t b = fr_kv_row_bytes(FR_KV_FP8, n, r);
            CHECK(b % 16 == 0 && fr_kv_fp8_scale_off(n, r) + 4 <= b && fr_kv_fp8_scale_off(n, r) % 4 == 0);
        }
}

/* Encode [448, v] (scale exactly 1) and return v's byte. */
static uint8_t enc1(float v) {
    _Alignas(16) uint8_t row[32];
    const float x[2] = {448.0f, v};
    fr_kv_fp8_encode(x, 2, 0, row);
    CHECK(fr_kv_fp8_scale(row, 2, 0) == 1.0f && row[0] == 0x7e);
    return row[1];
}

static void test_encode_matches_e4m3(void) {
    int bad = 0;
    for (int c = 0; c < 0x7f; c++) { /* every finite code, both signs, and the midpoints above it */
        const float v = fr_e4m3_to_f32((uint8_t)c);
        bad += enc1(v) != c;
        bad += enc1(-v) != (c ? (0x80 | c) : fr_f32_to_e4m3(-0.0f));
        if (c < 0x7e) {
            const float mid = 0.5f * (v + fr_e4m3_to_f32((uint8_t)(c + 1)));
            bad += enc1(mid) != fr_f32_to_e4m3(mid);
            bad += enc1(nextafterf(mid, 0.0f)) != c;
            bad += enc1(nextafterf(mid, 1000.0f)) != c + 1;
        }
    }
    CHECK_MSG(bad == 0, "%d codes differ from fr_f32_to_e4m3", bad);
    CHECK(enc1(fr_e4m3_to_f32(0x3d)) == 0x3d);
    CHECK(enc1(0.5f * (fr_e4m3_to_f32(0x39) + fr_e4m3_to_f32(0x3a))) == 0x3a); /* tie: to the even code */
    CHECK(enc1(0.5f * (fr_e4m3_to_f32(0x3a) + fr_e4m3_to_f32(0x3b))) == 0x3a);
    CHECK(enc1(1e-30f) == 0 && enc1(0.0009765625f) == 0 && enc1(0.00097657f) == 1); /* 2^-10: tie to 0 */
    bad = 0;
    for (int i = 0; i < 50000; i++) { /* random magnitudes over every exponent E4M3 has */
        const float v = frand() * ldexpf(1.0f, (int)(rng % 20) - 11) * 448.0f / 512.0f;
        bad += enc1(v) != fr_f32_to_e4m3(v);
    }
    CHECK_MSG(bad == 0, "%d random values differ from fr_f32_to_e4m3", bad);
}

static void test_round_trip(void) {
    enum { NL = 64, NR = 16 };
    _Alignas(16) uint8_t row[256];
    float x[NL + NR], y[NL + NR];
    CHECK(fr_kv_row_bytes(FR_KV_FP8, NL, NR) <= (int64_t)sizeof row);
    for (int rep = 0; rep < 200; rep++) {
        const float mag = ldexpf(1.0f, rep % 40 - 20); /* scales far from 1 both ways */
        for (int i = 0; i < NL + NR; i++) x[i] = frand() * mag;
        fr_kv_fp8_encode(x, NL, NR, row);
        fr_kv_fp8_decode(row, NL, NR, y);
        float amax = 0;
        for (int i = 0; i < NL; i++) amax = fmaxf(amax, fabsf(x[i]));
        const float s = fr_kv_fp8_scale(row, NL, NR);
        CHECK(s == amax / 448.0f);
        int bad = 0;
        for (int i = 0; i < NL; i++) /* half a step: 2^-4 relative (normals), 2^-10 * s (subnormals) */
            bad += !(fabsf(y[i] - x[i]) <= fmaxf(fabsf(x[i]) * 0x1p-4f, s * 0x1p-10f) * 1.0001f);
        for (int i = NL; i < NL + NR; i++) bad += y[i] != fr_bf16_to_f32(fr_f32_to_bf16(x[i]));
        CHECK_MSG(bad == 0, "rep %d: %d values off", rep, bad);
    }
    /* amax exactly 448: scale 1, every representable value comes back exactly */
    for (int i = 0; i < NL; i++) x[i] = fr_e4m3_to_f32((uint8_t)((i * 37) % 0x7e)) * (i & 1 ? -1.0f : 1.0f);
    x[5] = 448.0f;
    fr_kv_fp8_encode(x, NL, 0, row);
    fr_kv_fp8_decode(row, NL, 0, y);
    CHECK(fr_kv_fp8_scale(row, NL, 0) == 1.0f);
    for (int i = 0; i < NL; i++) CHECK(y[i] == x[i]);
    /* the largest magnitude negative: it becomes -448 * scale, the rest keep their signs */
    for (int i = 0; i < NL; i++) x[i] = 0.25f * frand();
    x[9] = -3.0f;
    fr_kv_fp8_encode(x, NL, 0, row);
    fr_kv_fp8_decode(row, NL, 0, y);
    CHECK(row[9] == 0xfe && fabsf(y[9] + 3.0f) <= 3.0f * 0x1p-23f);
    for (int i = 0; i < NL; i++) CHECK(x[i] == 0 || (y[i] == 0 || (y[i] < 0) == (x[i] < 0)));
    /* all zero (and negative zero): scale 0, zeros back, nothing non-finite */
    for (int i = 0; i < NL + NR; i++) x[i] = i & 1 ? -0.0f : 0.0f;
    memset(row, 0xAB, sizeof row);
    fr_kv_fp8_encode(x, NL, NR, row);
    fr_kv_fp8_decode(row, NL, NR, y);
    CHECK(fr_kv_fp8_scale(row, NL, NR) == 0.0f);
    for (int i = 0; i < NL + NR; i++) CHECK(y[i] == 0.0f);
    /* padding is zeroed (rows are compared and hashed as bytes later) */
    for (int64_t b = fr_kv_fp8_scale_off(NL, NR) + 4; b < fr_kv_row_bytes(FR_KV_FP8, NL, NR); b++) CHECK(row[b] == 0);
}

/* ---- ops: an FP8 cache against a float32 cache holding the decoded rows */

enum { BS = 4, CTX = 24 };
static const int32_t BLOCKS[CTX / BS] = {3, 0, 5, 1, 4, 2}; /* scattered pages */
static int64_t slot(int64_t s) { return (int64_t)BLOCKS[s / BS] * BS + s % BS; }

/* Write CTX random rows of nl + nr values through kv_write into an FP8 and a float32
 * cache, the latter holding the FP8 rows decoded. */
static void make_caches(fr_backend *be, int nl, int nr, uint8_t **fp8, float **f32) {
    const int w = nl + nr;
    float *x = malloc((size_t)CTX * w * sizeof *x), *dec = malloc((size_t)CTX * w * sizeof *dec);
    int64_t dst[CTX];
    *fp8 = be->ops->alloc(be, (size_t)(CTX * fr_kv_row_bytes(FR_KV_FP8, nl, nr)));
    *f32 = be->ops->alloc(be, (size_t)CTX * w * sizeof(float));
    for (int i = 0; i < CTX * w; i++) x[i] = frand() * (i % 7 == 0 ? 3.0f : 1.0f);
    for (int s = 0; s < CTX; s++) dst[s] = slot(s);
    CHECK(be->ops->kv_write(be, *fp8, FR_KV_FP8, dst, x, CTX, nl, nr) == FR_OK);
    for (int s = 0; s < CTX; s++)
        fr_kv_fp8_decode(*fp8 + slot(s) * fr_kv_row_bytes(FR_KV_FP8, nl, nr), nl, nr, dec + s * w);
    CHECK(be->ops->kv_write(be, *f32, FR_KV_F32, dst, dec, CTX, nl, nr) == FR_OK);
    for (int s = 0; s < CTX; s++) CHECK(!memcmp(*f32 + slot(s) * w, dec + s * w, (size_t)w * sizeof(float)));
    free(x), free(dec);
}

static void test_ops(fr_backend *be) {
    enum { H = 3, DN = 5, DR = 4, DV = 7, R = 10, N = 5, POS0 = CTX - N, HI = 2, DI = 8, K = 6 };
    uint8_t *c8, *k8;
    float *c32, *k32;
    make_caches(be, R, DR, &c8, &c32);
    make_caches(be, DI, 0, &k8, &k32);
    static float kvb[H * (DN + DV) * R], q[N * H * (DN + DR)], a[N * H * DV], b[N * H * DV];
    for (int i = 0; i < H * (DN + DV) * R; i++) kvb[i] = frand() * 0.5f;
    for (int i = 0; i < N * H * (DN + DR); i++) q[i] = frand();
    fr_weight wkvb = {0};
    wkvb.dtype = FR_DTYPE_F32, wkvb.rows = H * (DN + DV), wkvb.cols = R, wkvb.data = kvb;
    fr_mla_layer L8 = {.n_heads = H, .nope = DN, .rope = DR, .v = DV, .kv_lora = R, .scale = 0.3f, .kv_b = &wkvb,
                       .cache = c8, .kv_dtype = FR_KV_FP8, .blocks = BLOCKS, .block_size = BS};
    fr_mla_layer L32 = L8;
    L32.cache = c32, L32.kv_dtype = FR_KV_F32;
    /* the accessor: FP8 rows decode to what the float32 cache holds */
    float tmp[R + DR];
    for (int s = 0; s < CTX; s++) {
        const float *in_place = fr_mla_row(&L32, s, NULL); /* float32: a pointer into the cache */
        CHECK(in_place == c32 + slot(s) * (R + DR));
        CHECK(!memcmp(fr_mla_row(&L8, s, tmp), in_place, sizeof tmp));
    }
    for (int absorbed = 0; absorbed < 2; absorbed++) {
        CHECK(be->ops->mla_attention(be, a, q, N, POS0, &L8, absorbed) == FR_OK);
        CHECK(be->ops->mla_attention(be, b, q, N, POS0, &L32, absorbed) == FR_OK);
        for (int i = 0; i < N * H * DV; i++) CHECK_NEAR(a[i], b[i], 1e-5);
    }
    /* indexer top-k over FP8 keys = over the decoded keys; then sparse MLA over that selection */
    static float iq[N * HI * DI], iw[N * HI];
    for (int i = 0; i < N * HI * DI; i++) iq[i] = frand();
    for (int i = 0; i < N * HI; i++) iw[i] = frand();
    fr_dsa_layer D8 = {.n_heads = HI, .head_dim = DI, .topk = K, .scale = 0.25f, .keys = k8, .kv_dtype = FR_KV_FP8,
                       .blocks = BLOCKS, .block_size = BS};
    fr_dsa_layer D32 = D8;
    D32.keys = k32, D32.kv_dtype = FR_KV_F32;
    int32_t s8[N * K], s32[N * K];
    CHECK(be->ops->dsa_select(be, s8, iq, iw, N, POS0, &D8) == FR_OK);
    CHECK(be->ops->dsa_select(be, s32, iq, iw, N, POS0, &D32) == FR_OK);
    CHECK(!memcmp(s8, s32, sizeof s8));
    for (int absorbed = 0; absorbed < 2; absorbed++) {
        CHECK(be->ops->mla_sparse_attention(be, a, q, N, POS0, &L8, s8, K, absorbed) == FR_OK);
        CHECK(be->ops->mla_sparse_attention(be, b, q, N, POS0, &L32, s8, K, absorbed) == FR_OK);
        for (int i = 0; i < N * H * DV; i++) CHECK_NEAR(a[i], b[i], 1e-5);
    }
    be->ops->free(be, c8), be->ops->free(be, c32), be->ops->free(be, k8), be->ops->free(be, k32);
}

/* ---- pools and sessions */

/* Mean relative L2 error of the logits allowed for the FP8 cache on this model (measured:
 * see the printout; a random-weight model with a 5-key top-k amplifies cache error far
 * more than a trained one: tests/model/test_kv_fp8.py has the figures). */
#define KV_FP8_BOUND 0.25

static double rel_l2(const float *a, const float *b, int64_t n) {
    double d = 0, s = 0;
    for (int64_t i = 0; i < n; i++) d += ((double)a[i] - b[i]) * ((double)a[i] - b[i]), s += (double)b[i] * b[i];
    return sqrt(d / s);
}

static void test_sessions(fr_backend *be) {
    fr_error err = {0};
    char *json = NULL;
    fr_config cfg;
    fr_st_set *set = NULL;
    fr_model *m = NULL;
    fr_kv_pool *pool = NULL;
    fr_session *s32 = NULL, *s8 = NULL;
    float *l32 = NULL, *l8 = NULL;
    if (fr_synth_preset_json("deepseek-v3.2-tiny", &json, &err) || fr_synth_memory(json, NULL, &cfg, &set, &err) ||
        fr_model_from_set(&cfg, set, &m, &err)) {
        CHECK_MSG(0, "setup: %s", err.msg);
        goto out;
    }
    /* dtype names, sizes */
    fr_kv_dtype dt = FR_KV_FP8;
    CHECK(fr_kv_dtype_parse("auto", &dt, &err) == FR_OK && dt == FR_KV_F32);
    CHECK(fr_kv_dtype_parse("fp8", &dt, &err) == FR_OK && dt == FR_KV_FP8);
    CHECK(fr_kv_dtype_parse("fp8_e4m3", &dt, &err) == FR_OK && dt == FR_KV_FP8);
    CHECK(fr_kv_dtype_parse("fp8_e5m2", &dt, &err) == FR_ERR_INVALID && strstr(err.msg, "fp8_e5m2"));
    const int64_t nidx = cfg.n_layers; /* deepseek-v3.2: every layer has its indexer */
    CHECK(fr_kv_bytes_per_token(m, FR_KV_F32) == cfg.n_layers * (24 + 8) * 4 + nidx * 20 * 4);
    CHECK(fr_kv_bytes_per_token(m, FR_KV_FP8) == cfg.n_layers * 48 + nidx * 32); /* 24+16+4 -> 48; 20+4 -> 32 */
    CHECK(fr_kv_pool_create_dtype(m, be, 4, 16, FR_KV_FP8, &pool, &err) == FR_OK);
    CHECK(pool && pool->dtype == FR_KV_FP8 && pool->row_bytes == 48 && pool->index_row_bytes == 32);
    CHECK(fr_kv_pool_create_dtype(m, be, 4, 16, (fr_kv_dtype)7, &(fr_kv_pool *){NULL}, &err) == FR_ERR_INVALID);

    /* FP8 against float32 through the batched forward (prefill 12, then decode past
     * index_topk 5), and FP8 with every cached scale 25% too large after the prefill: the
     * bound that passes the first must fail the second */
    enum { N = 24, P = 12 };
    const int64_t V = cfg.vocab_size;
    int32_t ids[N];
    for (int i = 0; i < N; i++) ids[i] = (int32_t)((i * 131 + 7) % V);
    l32 = malloc((size_t)N * V * sizeof *l32), l8 = malloc((size_t)N * V * sizeof *l8);
    float *lbad = malloc((size_t)N * V * sizeof *lbad);
    double mean[3] = {0};
    for (int run = 0; run < 3 && l32 && l8 && lbad; run++) {
        float *lg = run == 0 ? l32 : run == 1 ? l8 : lbad;
        fr_kv_pool *p = NULL;
        fr_forward *f = NULL;
        fr_kv_seq q = {0};
        if (fr_kv_pool_create_dtype(m, be, 8, 4, run ? FR_KV_FP8 : FR_KV_F32, &p, &err) ||
            fr_forward_create(m, be, p, &f, &err) || fr_kv_seq_reserve(p, &q, N)) {
            CHECK_MSG(0, "forward: %s", err.msg);
        } else {
            fr_seq_step st = {.ids = ids, .n = P, .pos = 0, .blocks = q.blocks, .logits = FR_LOGITS_ALL};
            CHECK(fr_forward_step(f, &st, 1, lg, &err) == FR_OK);
            if (run == 2) /* corrupt the prefill's scales: latent and indexer keys, every layer */
                for (int l = 0; l < p->n_layers; l++)
                    for (int64_t t = 0; t < P; t++) {
                        const int64_t sl = (int64_t)q.blocks[t / 4] * 4 + t % 4;
                        uint8_t *r = (uint8_t *)p->layer[l] + sl * p->row_bytes;
                        float sc = fr_kv_fp8_scale(r, cfg.kv_lora_rank, cfg.qk_rope_head_dim) * 1.25f;
                        memcpy(r + fr_kv_fp8_scale_off(cfg.kv_lora_rank, cfg.qk_rope_head_dim), &sc, sizeof sc);
                        if (!p->index_layer[l]) continue;
                        r = (uint8_t *)p->index_layer[l] + sl * p->index_row_bytes;
                        sc = fr_kv_fp8_scale(r, p->index_row, 0) * 1.25f;
                        memcpy(r + fr_kv_fp8_scale_off(p->index_row, 0), &sc, sizeof sc);
                    }
            for (int t = P; t < N; t++) {
                st = (fr_seq_step){.ids = ids + t, .n = 1, .pos = t, .blocks = q.blocks, .n_absorbed = 1,
                                   .logits = FR_LOGITS_LAST};
                CHECK(fr_forward_step(f, &st, 1, lg + t * V, &err) == FR_OK);
            }
        }
        fr_kv_seq_free(p, &q);
        fr_forward_free(f);
        fr_kv_pool_free(p);
        if (run) /* the decode positions: they read the corrupted rows */
            for (int t = P; t < N; t++) mean[run] += rel_l2(lg + t * V, l32 + t * V, V) / (N - P);
    }
    free(lbad);
    printf("deepseek-v3.2-tiny, decode positions %d-%d: mean relative L2 of the logits vs a float32 cache: "
           "FP8 %.3g, FP8 with the prefill's scales x1.25 %.3g\n", P, N - 1, mean[1], mean[2]);
    CHECK_MSG(mean[1] > 0 && mean[1] < KV_FP8_BOUND, "FP8 %g", mean[1]);
    CHECK_MSG(mean[2] > KV_FP8_BOUND, "FP8 with wrong scales %g", mean[2]);

    const fr_session_opts o8 = {.max_ctx = 64, .kv_dtype = FR_KV_FP8};
    if (fr_session_create(m, be, 64, &s32, &err) || fr_session_create_opts(m, be, &o8, &s8, &err)) {
        CHECK_MSG(0, "sessions: %s", err.msg);
        goto out;
    }
    CHECK(fr_session_kv_dtype(s8) == FR_KV_FP8 && fr_session_kv_dtype(s32) == FR_KV_F32);
    /* synthetic context: the position advances, decode runs after it, the pool bounds it */
    fr_session_reset(s8);
    CHECK(fr_session_fill_synthetic(s8, 40, 1, &err) == FR_OK && fr_session_pos(s8) == 40);
    CHECK(fr_session_eval(s8, ids, 1, FR_ATTN_AUTO, l8, false, &err) == FR_OK);
    for (int64_t i = 0; i < V; i++) CHECK(isfinite(l8[i]));
    CHECK(fr_session_fill_synthetic(s8, 40, 1, &err) == FR_ERR_CAPACITY);
out:
    free(l32), free(l8), free(json);
    fr_session_free(s32), fr_session_free(s8);
    fr_kv_pool_free(pool);
    fr_model_free(m);
}

int main(void) {
    test_layout();
    test_encode_matches_e4m3();
    test_round_trip();
    fr_backend *be = NULL;
    fr_error err = {0};
    if (fr_cpu_backend_create(2, &be, &err)) {
        fprintf(stderr, "cpu backend: %s\n", err.msg);
        return 1;
    }
    test_ops(be);
    test_sessions(be);
    fr_backend_destroy(be);
    return check_report("test_kv_cache");
}
