/* test_cuda_moe.c - the CUDA moe and mlp ops against the CPU backend's.
 *
 * mlp: F32, BF16, FP8 (128x128 and odd scale grids), MXFP4 and INT4 weights, at batch
 * sizes that take the fused expert kernels (n <= 16) and the matmul path (n = 33), plus
 * a shape whose rows break 16-byte alignment (the element-wise fallback).
 * moe: routers without groups and with n_group / topk_group and a correction bias,
 * norm_topk_prob on and off, routed_scaling_factor 1 and 2.5, with and without a shared
 * expert, experts in BF16, FP8 with a block grid, MXFP4, INT4 and F32, at n = 1, 2, 7, 33
 * (one-token and multi-token work items, experts left idle, tails). Every case checks
 * the bytes the op counts against the CPU's, and at n = 1 that they are exactly the
 * router, the shared expert and top_k routed experts. Routers with duplicated rows make
 * exact score ties, which selection must break to the lower index as the CPU does.
 * Outputs are poisoned with NaN, so a slot nobody wrote fails the comparison. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/dtype.h"
#include "core/weight.h"
#include "gpu_check.h"

typedef enum { W_F32, W_BF16, W_FP8_128, W_FP8_ODD, W_MXFP4, W_INT4 } wfmt;
static const char *wfmt_names[] = {"F32", "BF16", "F8/128x128", "F8/24x40", "MXFP4", "INT4"};

static fr_weight make_weight(gc_ctx *g, wfmt f, int64_t rows, int64_t cols, uint64_t seed) {
    switch (f) {
    case W_F32: return gc_weight(g, FR_DTYPE_F32, rows, cols, seed);
    case W_BF16: return gc_weight(g, FR_DTYPE_BF16, rows, cols, seed);
    case W_FP8_128: return gc_weight_fp8(g, rows, cols, 128, 128, seed);
    case W_FP8_ODD: return gc_weight_fp8(g, rows, cols, 24, 40, seed); /* blocks off the 16-byte chunks */
    case W_MXFP4: return gc_weight(g, FR_DTYPE_MXFP4, rows, cols, seed);
    default: return gc_weight(g, FR_DTYPE_INT4, rows, cols, seed);
    }
}

/* An MLP whose three weights live in host memory owned by g (fr_mlp holds pointers). */
static fr_mlp make_mlp(gc_ctx *g, wfmt f, int64_t D, int64_t I, uint64_t seed) {
    fr_weight *w = gc_host(g, 3 * sizeof *w);
    w[0] = make_weight(g, f, I, D, seed);
    w[1] = make_weight(g, f, I, D, seed + 1);
    w[2] = make_weight(g, f, D, I, seed + 2);
    return (fr_mlp){&w[0], &w[1], &w[2]};
}

static uint64_t mlp_bytes(const fr_mlp *m) {
    return (uint64_t)(fr_weight_bytes(m->gate) + fr_weight_bytes(m->up) + fr_weight_bytes(m->down));
}

/* Bytes the backend counted for the op just queued (the device counter folds in at
 * synchronize). */
static uint64_t counted_since(gc_ctx *g, uint64_t before) {
    gc_ok(g, "synchronize", g->gpu->ops->synchronize(g->gpu));
    return g->gpu->weight_bytes_read - before;
}

static void check_mlp(gc_ctx *g, wfmt f, int64_t D, int64_t I, int64_t n, uint64_t seed) {
    char name[160];
    snprintf(name, sizeof name, "mlp %s D=%lld I=%lld n=%lld", wfmt_names[f], (long long)D, (long long)I,
             (long long)n);
    const fr_mlp m = make_mlp(g, f, D, I, seed);
    float *hx = gc_randn(g, (size_t)(n * D), seed + 10, 1.0f);
    float *want = gc_host(g, (size_t)(n * D) * 4);
    const uint64_t c0 = g->cpu->weight_bytes_read;
    gc_ok(g, name, g->cpu->ops->mlp(g->cpu, want, hx, n, &m));
    const uint64_t cpu_bytes = g->cpu->weight_bytes_read - c0;
    float *dx = gc_to_dev(g, hx, (size_t)(n * D));
    float *dy = gc_dev_poison(g, (size_t)((n + 1) * D));
    gc_ok(g, "synchronize", g->gpu->ops->synchronize(g->gpu));
    const uint64_t b0 = g->gpu->weight_bytes_read;
    gc_ok(g, name, g->gpu->ops->mlp(g->gpu, dy, dx, n, &m));
    const uint64_t counted = counted_since(g, b0);
    float *got = gc_from_dev(g, dy, (size_t)((n + 1) * D));
    gc_close(g, name, got, want, (size_t)(n * D), 1e-5);
    gc_row_poisoned(g, name, got + n * D, D);
    char buf[256];
    snprintf(buf, sizeof buf, "%s: counts %llu bytes as the CPU (%llu)", name, (unsigned long long)counted,
             (unsigned long long)cpu_bytes);
    gc_check(g, buf, counted == cpu_bytes && counted == mlp_bytes(&m));
}

/* One MoE configuration: its weights are built once and checked at several n. */
typedef struct {
    const char *name;
    int E, K, n_group, topk_group;
    bool norm, bias, shared;
    float rsf;
    int64_t D, I;
    wfmt experts, router; /* router: W_F32 or W_BF16 */
    int tie;              /* > 0: router rows e and e + tie are equal (exact score ties; no bias) */
} moe_case;

/* An F32 router whose row e + half equals row e (e < half = E / 2), so that expert e and
 * e + half always score the same and selection must break ties to the lower index. Built
 * by hand: gc_weight uploads its bytes at once. */
static fr_weight tied_router(gc_ctx *g, int E, int64_t D, uint64_t seed) {
    const int half = E / 2;
    const float *base = gc_randn(g, (size_t)(half * D), seed, 1.0f / sqrtf((float)D));
    float *d = gc_host(g, (size_t)(E * D) * 4);
    for (int e = 0; e < E; e++) memcpy(d + e * D, base + (e % half) * D, (size_t)D * 4);
    fr_weight w = {.dtype = FR_DTYPE_F32, .rows = E, .cols = D, .data = d};
    gc_ok(g, "register tied router", g->gpu->ops->register_weight(g->gpu, &w));
    return w;
}

static void check_moe(gc_ctx *g, const moe_case *c, uint64_t seed) {
    const int E = c->E;
    fr_weight *rw = gc_host(g, 2 * sizeof *rw);
    rw[0] = c->tie ? tied_router(g, E, c->D, seed) : make_weight(g, c->router, E, c->D, seed);
    if (c->bias) rw[1] = gc_weight(g, FR_DTYPE_F32, 1, E, seed + 1);
    const fr_router r = {
        .n_experts = E, .top_k = c->K, .n_group = c->n_group, .topk_group = c->topk_group,
        .norm_topk_prob = c->norm, .routed_scaling_factor = c->rsf, .gate = &rw[0], .bias = c->bias ? &rw[1] : NULL,
    };
    /* a bias view without data means no bias (the GPU's rule; the CPU is given NULL) */
    fr_weight *empty = gc_host(g, sizeof *empty);
    empty->dtype = FR_DTYPE_F32, empty->rows = 1, empty->cols = E;
    fr_router r_gpu = r;
    if (!c->bias) r_gpu.bias = empty;

    /* a fresh array per case: the backend keys its device expert table by this address */
    fr_mlp *experts = gc_host(g, (size_t)E * sizeof *experts);
    for (int e = 0; e < E; e++) experts[e] = make_mlp(g, c->experts, c->D, c->I, seed + 100 + 10 * (uint64_t)e);
    fr_mlp shared = {0};
    if (c->shared) shared = make_mlp(g, W_BF16, c->D, c->I, seed + 7);
    const fr_mlp *sh = c->shared ? &shared : NULL;

    static const int64_t ns[] = {1, 2, 7, 33};
    for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++) {
        const int64_t n = ns[i], D = c->D;
        char name[200];
        snprintf(name, sizeof name, "moe %s %s n=%lld", c->name, wfmt_names[c->experts], (long long)n);
        float *hx = gc_randn(g, (size_t)(n * D), seed + 1000 + i, 1.0f);
        float *want = gc_host(g, (size_t)(n * D) * 4);
        const uint64_t c0 = g->cpu->weight_bytes_read;
        gc_ok(g, name, g->cpu->ops->moe(g->cpu, want, hx, n, D, &r, experts, sh));
        const uint64_t cpu_bytes = g->cpu->weight_bytes_read - c0;

        float *dx = gc_to_dev(g, hx, (size_t)(n * D));
        float *dy = gc_dev_poison(g, (size_t)((n + 1) * D));
        gc_ok(g, "synchronize", g->gpu->ops->synchronize(g->gpu));
        const uint64_t b0 = g->gpu->weight_bytes_read;
        gc_ok(g, name, g->gpu->ops->moe(g->gpu, dy, dx, n, D, &r_gpu, experts, sh));
        const uint64_t counted = counted_since(g, b0);
        float *got = gc_from_dev(g, dy, (size_t)((n + 1) * D));
        gc_close(g, name, got, want, (size_t)(n * D), 1e-5);

        gc_row_poisoned(g, name, got + n * D, D);
        char buf[300];
        snprintf(buf, sizeof buf, "%s: counts %llu bytes as the CPU (%llu)", name, (unsigned long long)counted,
                 (unsigned long long)cpu_bytes);
        gc_check(g, buf, counted == cpu_bytes);
        if (n == 1) {
            const uint64_t want_bytes = (uint64_t)fr_weight_bytes(&rw[0]) + (c->shared ? mlp_bytes(&shared) : 0) +
                                        (uint64_t)c->K * mlp_bytes(&experts[0]);
            snprintf(buf, sizeof buf, "%s: counts router + shared + exactly top_k experts", name);
            gc_check(g, buf, counted == want_bytes);
        }
        /* the same call again: the expert table is reused, results identical to the bit */
        float *dy2 = gc_dev_poison(g, (size_t)(n * D));
        gc_ok(g, name, g->gpu->ops->moe(g->gpu, dy2, dx, n, D, &r_gpu, experts, sh));
        float *got2 = gc_from_dev(g, dy2, (size_t)(n * D));
        snprintf(buf, sizeof buf, "%s: a second call gives the same bits", name);
        gc_check(g, buf, memcmp(got, got2, (size_t)(n * D) * 4) == 0);
    }
}

int main(void) {
    gc_ctx g;
    int rc = gc_init(&g);
    if (rc) return rc;

    /* dense MLP: every format at fused (n <= 16) and matmul (n = 33) batch sizes */
    static const int64_t mlp_ns[] = {1, 2, 7, 16, 33};
    static const wfmt mlp_fmts[] = {W_BF16, W_F32, W_FP8_128, W_FP8_ODD, W_MXFP4, W_INT4};
    uint64_t seed = 1;
    for (size_t f = 0; f < sizeof mlp_fmts / sizeof mlp_fmts[0]; f++)
        for (size_t i = 0; i < sizeof mlp_ns / sizeof mlp_ns[0]; i++, seed += 10) {
            const int64_t D = (i & 1) ? 256 : 64, I = (i & 1) ? 96 : 32;
            check_mlp(&g, mlp_fmts[f], D, I, mlp_ns[i], seed);
        }
    /* rows that are not a whole number of 16-byte chunks: the element-wise fallback */
    check_mlp(&g, W_BF16, 68, 36, 1, 501);
    check_mlp(&g, W_BF16, 68, 36, 5, 511);
    check_mlp(&g, W_F32, 66, 34, 3, 521);
    check_mlp(&g, W_BF16, 64, 35, 2, 531); /* odd I: fast gate/up with a one-row tail, element-wise down */

    static const moe_case cases[] = {
        {"E8/k2", 8, 2, 1, 1, true, false, true, 1.0f, 64, 32, W_BF16, W_F32, 0},
        {"E8/k2 no-shared bf16-router", 8, 2, 1, 1, false, false, false, 1.0f, 96, 64, W_BF16, W_BF16, 0},
        {"E16/k4 g4/2 bias", 16, 4, 4, 2, true, true, true, 2.5f, 128, 64, W_FP8_128, W_F32, 0},
        {"E16/k4 g4/2 bias no-norm", 16, 4, 4, 2, false, true, false, 2.5f, 128, 96, W_MXFP4, W_F32, 0},
        {"E16/k4 g4/2 bias", 16, 4, 4, 2, true, true, true, 2.5f, 256, 96, W_INT4, W_BF16, 0},
        {"E16/k4 g4/2 bias", 16, 4, 4, 2, true, true, false, 2.5f, 64, 32, W_MXFP4, W_F32, 0},
        {"E16/k4 g4/2 bias no-norm", 16, 4, 4, 2, false, true, true, 1.0f, 96, 64, W_BF16, W_F32, 0},
        {"E8/k2 g4/2", 8, 2, 4, 2, true, false, true, 2.5f, 64, 32, W_FP8_ODD, W_F32, 0},
        {"E8/k2", 8, 2, 1, 1, true, true, false, 1.0f, 64, 40, W_F32, W_F32, 0},
        {"E8/k2 odd-I", 8, 2, 1, 1, true, false, true, 1.0f, 64, 33, W_BF16, W_F32, 0},
        /* exact ties at the top_k boundary (odd k), inside a lane (E = 64: e and e + 32)
         * and across lanes (E = 16), and between groups (g and g + 4, odd topk_group) */
        {"E64/k3 ties", 64, 3, 1, 1, true, false, false, 1.0f, 64, 32, W_BF16, W_F32, 32},
        {"E16/k3 ties", 16, 3, 1, 1, false, false, true, 2.5f, 64, 32, W_BF16, W_F32, 8},
        {"E64/k3 g8/3 ties", 64, 3, 8, 3, true, false, false, 2.5f, 64, 32, W_MXFP4, W_F32, 32},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check_moe(&g, &cases[i], 7000 + 1000 * i);
    return gc_done(&g);
}
