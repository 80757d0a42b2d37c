/* test_cuda_basic.c - the CUDA backend's small ops against the CPU backend: embedding,
 * RMSNorm and the fused add+RMSNorm, LayerNorm, both RoPE layouts, row copies, KV-cache
 * writes (FP8 rows byte for byte), the greedy argmax, and weight registration /
 * translation. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "gpu_check.h"

static void test_embed(gc_ctx *g, fr_dtype dt, int64_t V, int64_t D) {
    fr_weight table = gc_weight(g, dt, V, D, 11 + (uint64_t)dt);
    const int32_t ids[] = {0, (int32_t)V - 1, 3 % (int32_t)V, 1 % (int32_t)V, (int32_t)V / 2};
    const int64_t n = 5;
    float *want = gc_host(g, (size_t)(n * D) * 4);
    g->cpu->ops->embed(g->cpu, want, ids, n, &table);
    float *d = gc_dev_poison(g, (size_t)((n + 1) * D));
    gc_ok(g, "embed", g->gpu->ops->embed(g->gpu, d, ids, n, &table));
    float *got = gc_from_dev(g, d, (size_t)((n + 1) * D));
    char name[64];
    snprintf(name, sizeof name, "embed %s V=%lld D=%lld", fr_dtype_name(dt), (long long)V, (long long)D);
    gc_close(g, name, got, want, (size_t)(n * D), 0.0);
    gc_check(g, "embed leaves the row after n alone", isnan(got[n * D]) && isnan(got[(n + 1) * D - 1]));
}

static void test_rmsnorm(gc_ctx *g, int64_t n, int64_t dim, int64_t stride, fr_dtype wdt) {
    fr_weight w = gc_weight(g, wdt, 1, dim, 21);
    float *x = gc_randn(g, (size_t)(n * stride), 22 + (uint64_t)dim, 3.0f);
    float *want = gc_host(g, (size_t)(n * stride) * 4);
    memcpy(want, x, (size_t)(n * stride) * 4);
    g->cpu->ops->rmsnorm(g->cpu, want, x, n, dim, stride, &w, 1e-6f);
    /* in place on the device: out aliases x, columns past dim untouched */
    float *d = gc_to_dev(g, x, (size_t)(n * stride));
    gc_ok(g, "rmsnorm", g->gpu->ops->rmsnorm(g->gpu, d, d, n, dim, stride, &w, 1e-6f));
    float *got = gc_from_dev(g, d, (size_t)(n * stride));
    char name[80];
    snprintf(name, sizeof name, "rmsnorm n=%lld dim=%lld stride=%lld %s", (long long)n, (long long)dim,
             (long long)stride, fr_dtype_name(wdt));
    gc_close(g, name, got, want, (size_t)(n * stride), 2e-6);
}

static void test_add_rmsnorm(gc_ctx *g, int64_t n, int64_t dim, bool with_delta) {
    fr_weight w = gc_weight(g, FR_DTYPE_BF16, 1, dim, 31);
    float *x = gc_randn(g, (size_t)(n * dim), 32, 1.0f), *delta = gc_randn(g, (size_t)(n * dim), 33, 1.0f);
    float *want_r = gc_host(g, (size_t)(n * dim) * 4), *want = gc_host(g, (size_t)(n * dim) * 4);
    memcpy(want_r, x, (size_t)(n * dim) * 4);
    g->cpu->ops->add_rmsnorm(g->cpu, want, want_r, with_delta ? delta : NULL, n, dim, &w, 1e-6f);
    float *dr = gc_to_dev(g, x, (size_t)(n * dim)), *dd = gc_to_dev(g, delta, (size_t)(n * dim));
    float *dout = gc_dev_poison(g, (size_t)(n * dim));
    gc_ok(g, "add_rmsnorm", g->gpu->ops->add_rmsnorm(g->gpu, dout, dr, with_delta ? dd : NULL, n, dim, &w, 1e-6f));
    char name[80];
    snprintf(name, sizeof name, "add_rmsnorm n=%lld dim=%lld%s resid", (long long)n, (long long)dim,
             with_delta ? "" : " (no delta)");
    gc_close(g, name, gc_from_dev(g, dr, (size_t)(n * dim)), want_r, (size_t)(n * dim), 0.0);
    snprintf(name, sizeof name, "add_rmsnorm n=%lld dim=%lld%s out", (long long)n, (long long)dim,
             with_delta ? "" : " (no delta)");
    gc_close(g, name, gc_from_dev(g, dout, (size_t)(n * dim)), want, (size_t)(n * dim), 2e-6);
}

static void test_layernorm(gc_ctx *g, int64_t n, int64_t dim) {
    fr_weight w = gc_weight(g, FR_DTYPE_F32, 1, dim, 41), b = gc_weight(g, FR_DTYPE_BF16, 1, dim, 42);
    float *x = gc_randn(g, (size_t)(n * dim), 43, 2.0f);
    for (int64_t i = 0; i < n * dim; i++) x[i] += 5.0f; /* a mean far from 0 */
    float *want = gc_host(g, (size_t)(n * dim) * 4);
    g->cpu->ops->layernorm(g->cpu, want, x, n, dim, dim, &w, &b, 1e-6f);
    float *d = gc_to_dev(g, x, (size_t)(n * dim));
    gc_ok(g, "layernorm", g->gpu->ops->layernorm(g->gpu, d, d, n, dim, dim, &w, &b, 1e-6f));
    char name[64];
    snprintf(name, sizeof name, "layernorm n=%lld dim=%lld", (long long)n, (long long)dim);
    gc_close(g, name, gc_from_dev(g, d, (size_t)(n * dim)), want, (size_t)(n * dim), 1e-5);
}

static void test_rope(gc_ctx *g, bool half, int64_t n, int heads, int rope, int64_t head_stride, int64_t stride) {
    int32_t pos[64];
    for (int64_t t = 0; t < n; t++) pos[t] = (int32_t)(t * 977 % 131072);
    double freqs[64];
    for (int i = 0; i < rope / 2; i++) freqs[i] = pow(10000.0, -2.0 * i / rope);
    const size_t len = (size_t)(n * stride);
    float *x = gc_randn(g, len, 51 + (uint64_t)rope, 1.0f);
    float *want = gc_host(g, len * 4);
    memcpy(want, x, len * 4);
    (half ? g->cpu->ops->rope_half : g->cpu->ops->rope)(g->cpu, want, n, heads, stride, head_stride, rope, pos, freqs,
                                                         0.9f);
    float *d = gc_to_dev(g, x, len);
    gc_ok(g, "rope", (half ? g->gpu->ops->rope_half : g->gpu->ops->rope)(g->gpu, d, n, heads, stride, head_stride,
                                                                          rope, pos, freqs, 0.9f));
    char name[80];
    snprintf(name, sizeof name, "%s n=%lld heads=%d rope=%d", half ? "rope_half" : "rope", (long long)n, heads, rope);
    gc_close(g, name, gc_from_dev(g, d, len), want, len, 1e-6);
}

static void test_copy_rows(gc_ctx *g) {
    const int64_t dim = 37, n = 4;
    float *src = gc_randn(g, (size_t)(10 * dim), 61, 1.0f);
    const int64_t sr[] = {9, 0, 4, 4}, dr[] = {1, 3, 0, 2};
    float *want = gc_host(g, (size_t)(4 * dim) * 4);
    g->cpu->ops->copy_rows(g->cpu, want, dr, src, sr, n, dim);
    float *dsrc = gc_to_dev(g, src, (size_t)(10 * dim)), *dst = gc_dev_poison(g, (size_t)(4 * dim));
    gc_ok(g, "copy_rows", g->gpu->ops->copy_rows(g->gpu, dst, dr, dsrc, sr, n, dim));
    gc_close(g, "copy_rows gather+scatter", gc_from_dev(g, dst, (size_t)(4 * dim)), want, (size_t)(4 * dim), 0.0);
    float *dst2 = gc_dev_poison(g, (size_t)(4 * dim));
    gc_ok(g, "copy_rows", g->gpu->ops->copy_rows(g->gpu, dst2, NULL, dsrc, sr, n, dim));
    g->cpu->ops->copy_rows(g->cpu, want, NULL, src, sr, n, dim);
    gc_close(g, "copy_rows gather", gc_from_dev(g, dst2, (size_t)(4 * dim)), want, (size_t)(4 * dim), 0.0);
}

/* Greedy picks of `rows` rows of `cols` logits, against the CPU backend's (the sampler's
 * left-to-right scan). Row kinds: random; the maximum repeated at several columns (the
 * first must win); a NaN in column 0 (it wins); NaNs elsewhere (never win); all -inf
 * (column 0); the maximum in the last column; one row of all equal values. */
static void test_argmax(gc_ctx *g, int64_t rows, int64_t cols) {
    float *x = gc_randn(g, (size_t)(rows * cols), 97 + (uint64_t)cols, 3.0f);
    for (int64_t r = 0; r < rows; r++) {
        float *v = x + r * cols;
        switch (r % 8) {
        case 1: /* ties */
            for (int64_t c = cols / 3; c < cols; c += cols / 4 + 1) v[c] = 100.0f;
            break;
        case 2: v[0] = NAN; break;
        case 3:
            for (int64_t c = 1; c < cols; c += 5) v[c] = NAN;
            break;
        case 4:
            for (int64_t c = 0; c < cols; c++) v[c] = -INFINITY;
            break;
        case 5: v[cols - 1] = 1e30f; break;
        case 6:
            for (int64_t c = 0; c < cols; c++) v[c] = 0.5f;
            break;
        default: break;
        }
    }
    int32_t *want = gc_host(g, (size_t)rows * sizeof *want);
    gc_ok(g, "argmax (cpu)", g->cpu->ops->argmax(g->cpu, want, x, rows, cols));
    int32_t *dids = (int32_t *)(void *)gc_dev_poison(g, (size_t)rows);
    gc_ok(g, "argmax", g->gpu->ops->argmax(g->gpu, dids, gc_to_dev(g, x, (size_t)(rows * cols)), rows, cols));
    const int32_t *got = gc_from_dev_bytes(g, dids, (size_t)rows * sizeof *got);
    int bad = 0;
    for (int64_t r = 0; r < rows; r++) bad += got[r] != want[r];
    char name[64];
    snprintf(name, sizeof name, "argmax %lld x %lld", (long long)rows, (long long)cols);
    if (bad) fprintf(stderr, "%s: %d of %lld rows pick another id\n", name, bad, (long long)rows);
    gc_check(g, name, bad == 0);
}

static void test_kv_write(gc_ctx *g, fr_kv_dtype dt, int64_t n_lat, int64_t n_rope) {
    const int64_t rows = 12, n = 5, w = n_lat + n_rope, rb = fr_kv_row_bytes(dt, n_lat, n_rope);
    float *src = gc_randn(g, (size_t)(n * w), 71 + (uint64_t)n_lat, 2.0f);
    for (int64_t i = 0; i < w; i++) src[2 * w + i] = 0.0f;               /* an all-zero row: scale 0 */
    src[3 * w] = 1e30f, src[3 * w + 1] = -3e-7f, src[3 * w + 2] = NAN; /* saturation, tiny, NaN */
    const int64_t slots[] = {11, 0, 5, 6, 3};
    uint8_t *want = gc_host(g, (size_t)(rows * rb));
    memset(want, 0x5a, (size_t)(rows * rb));
    g->cpu->ops->kv_write(g->cpu, want, dt, slots, src, n, n_lat, n_rope);
    void *cache = gc_to_dev_bytes(g, want, (size_t)(rows * rb)); /* untouched rows must stay */
    void *blank = gc_host(g, (size_t)(rows * rb));
    memset(blank, 0x5a, (size_t)(rows * rb));
    cache = gc_to_dev_bytes(g, blank, (size_t)(rows * rb));
    float *dsrc = gc_to_dev(g, src, (size_t)(n * w));
    gc_ok(g, "kv_write", g->gpu->ops->kv_write(g->gpu, cache, dt, slots, dsrc, n, n_lat, n_rope));
    const uint8_t *got = gc_from_dev_bytes(g, cache, (size_t)(rows * rb));
    char name[80];
    snprintf(name, sizeof name, "kv_write %s %lld+%lld: every byte", dt == FR_KV_FP8 ? "fp8" : "f32",
             (long long)n_lat, (long long)n_rope);
    int64_t bad = -1;
    for (int64_t i = 0; i < rows * rb && bad < 0; i++)
        if (got[i] != want[i] && !(dt == FR_KV_F32 && isnan(((const float *)got)[i / 4]))) bad = i;
    if (bad >= 0) printf("  first differing byte %lld: got 0x%02x want 0x%02x\n", (long long)bad, got[bad], want[bad]);
    gc_check(g, name, bad < 0);
}

int main(void) {
    gc_ctx g;
    int rc = gc_init(&g);
    if (rc) return rc;
    test_embed(&g, FR_DTYPE_BF16, 50, 64);
    test_embed(&g, FR_DTYPE_F32, 7, 33);
    test_embed(&g, FR_DTYPE_F16, 9, 100);
    const int64_t dims[] = {1, 7, 64, 300, 1024, 7168};
    for (size_t i = 0; i < sizeof dims / sizeof *dims; i++) test_rmsnorm(&g, 3, dims[i], dims[i], FR_DTYPE_BF16);
    test_rmsnorm(&g, 4, 512, 576, FR_DTYPE_F32); /* the latent: c_kv of a [r_kv + d_r] row */
    test_add_rmsnorm(&g, 5, 256, true);
    test_add_rmsnorm(&g, 2, 7168, true);
    test_add_rmsnorm(&g, 3, 100, false);
    test_layernorm(&g, 4, 128);
    test_layernorm(&g, 2, 33);
    test_rope(&g, false, 5, 3, 64, 192, 3 * 192);
    test_rope(&g, false, 4, 1, 64, 0, 576);
    test_rope(&g, true, 6, 4, 64, 128, 4 * 128);
    test_rope(&g, false, 1, 2, 2, 8, 16);
    test_copy_rows(&g);
    test_argmax(&g, 8, 1000);
    test_argmax(&g, 16, 257);
    test_argmax(&g, 3, 1);
    test_argmax(&g, 8, 31);
    if (!gc_quick()) test_argmax(&g, 8, 163840); /* DeepSeek's vocabulary */
    test_kv_write(&g, FR_KV_F32, 512, 64);
    test_kv_write(&g, FR_KV_FP8, 512, 64);
    test_kv_write(&g, FR_KV_FP8, 128, 0);
    test_kv_write(&g, FR_KV_FP8, 33, 7);
    test_kv_write(&g, FR_KV_F32, 33, 7);
    /* a view of rows inside a registered tensor translates; an unregistered one fails */
    {
        fr_weight w = gc_weight(&g, FR_DTYPE_BF16, 8, 64, 81);
        fr_weight v = fr_weight_rows(&w, 3, 2);
        float *want = gc_host(&g, 2 * 64 * 4);
        const int32_t ids[] = {1, 0};
        g.cpu->ops->embed(g.cpu, want, ids, 2, &v);
        float *d = gc_dev_poison(&g, 2 * 64);
        gc_ok(&g, "embed on a row view", g.gpu->ops->embed(g.gpu, d, ids, 2, &v));
        gc_close(&g, "embed on a row view", gc_from_dev(&g, d, 2 * 64), want, 2 * 64, 0.0);
        uint16_t stray[64] = {0};
        fr_weight u = {.dtype = FR_DTYPE_BF16, .rows = 1, .cols = 64, .data = stray};
        gc_check(&g, "an unregistered weight is refused",
                 g.gpu->ops->embed(g.gpu, d, ids, 1, &u) == FR_ERR_INVALID);
    }
    return gc_done(&g);
}
