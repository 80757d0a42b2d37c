/* test_cuda_matmul.c - the CUDA matmul against the CPU backend's, for every weight format
 * (F32, F16, BF16, plain FP8, FP8 with 128x128 and odd block grids, MXFP4, INT4) over
 * shapes that reach every kernel and path: the vector GEMV (n <= 32) with and without
 * split-K, its scalar fallback (cols that break 16-byte alignment), the tiled kernel
 * (n > 32) with and without split-K and with ragged row, token and K tiles, and row views
 * (FP8 views that start mid-block). Each case also checks that the row of y after the
 * last token stays poisoned and that the op counts the weight's bytes. The decode shapes
 * of a real model (7168 columns; 576 and 2112 rows) are run at n <= 2 only: the emulator
 * runs one fiber per GPU thread. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/dtype.h"
#include "core/weight.h"
#include "gpu_check.h"

/* 1..8: one token group of the GEMV; 9..32: two to four; 33, 70: the tiled kernel */
static const int64_t all_ns[] = {1, 2, 3, 5, 8, 9, 16, 17, 32, 33, 70};
#define N_ALL (sizeof all_ns / sizeof all_ns[0])

/* The formats the main loop runs; fp8 grids are built by make_weight. */
typedef enum { F_F32, F_F16, F_BF16, F_FP8, F_FP8_GRID, F_MXFP4, F_INT4, F_COUNT } fmt;
static const char *fmt_names[F_COUNT] = {"F32", "F16", "BF16", "F8", "F8/128x128", "MXFP4", "INT4"};

static bool fmt_q4(fmt f) { return f == F_MXFP4 || f == F_INT4; }

static fr_weight make_weight(gc_ctx *g, fmt f, int64_t rows, int64_t cols, uint64_t seed) {
    switch (f) {
    case F_F32: return gc_weight(g, FR_DTYPE_F32, rows, cols, seed);
    case F_F16: return gc_weight(g, FR_DTYPE_F16, rows, cols, seed);
    case F_BF16: return gc_weight(g, FR_DTYPE_BF16, rows, cols, seed);
    case F_FP8: return gc_weight(g, FR_DTYPE_F8_E4M3, rows, cols, seed);
    case F_FP8_GRID: return gc_weight_fp8(g, rows, cols, 128, 128, seed);
    case F_MXFP4: return gc_weight(g, FR_DTYPE_MXFP4, rows, cols, seed);
    default: return gc_weight(g, FR_DTYPE_INT4, rows, cols, seed);
    }
}

/* y = x Wᵀ for n tokens of x (host hx, device dx) on both backends; returns the device
 * result (n rows) on the host. */
static float *check_case(gc_ctx *g, const char *what, const fr_weight *w, int64_t n, const float *hx,
                         const float *dx) {
    const int64_t R = w->rows;
    char name[160];
    snprintf(name, sizeof name, "matmul %s %lldx%lld n=%lld", what, (long long)R, (long long)w->cols,
             (long long)n);
    float *want = gc_host(g, (size_t)(n * R) * 4);
    g->cpu->ops->matmul(g->cpu, want, hx, n, w);
    float *dy = gc_dev_poison(g, (size_t)((n + 1) * R));
    const uint64_t b0 = g->gpu->weight_bytes_read;
    gc_ok(g, name, g->gpu->ops->matmul(g->gpu, dy, dx, n, w));
    const uint64_t counted = g->gpu->weight_bytes_read - b0;
    float *got = gc_from_dev(g, dy, (size_t)((n + 1) * R));
    gc_close(g, name, got, want, (size_t)(n * R), 1e-5);
    gc_row_poisoned(g, name, got + n * R, R);
    char buf[256];
    snprintf(buf, sizeof buf, "%s: counts the weight's bytes", name);
    gc_check(g, buf, counted == (uint64_t)fr_weight_bytes(w));
    return got;
}

/* One weight at the given token counts, with fresh x per count. */
static void check_weight(gc_ctx *g, const char *what, const fr_weight *w, const int64_t *ns, size_t nn,
                         uint64_t seed) {
    for (size_t i = 0; i < nn; i++) {
        const int64_t n = ns[i], K = w->cols;
        float *hx = gc_randn(g, (size_t)(n * K), seed + 7 * (uint64_t)i, 1.0f);
        check_case(g, what, w, n, hx, gc_to_dev(g, hx, (size_t)(n * K)));
    }
}

/* Small and odd shapes at every n, a view of rows, and the decode shapes at n <= 2. */
static void test_format(gc_ctx *g, fmt f) {
    const char *nm = fmt_names[f];
    /* rows, cols: 1, 7 and 576 rows; tails of every kind for the float formats */
    static const int64_t shapes_float[][2] = {{1, 64}, {7, 96}, {7, 100}, {5, 33}, {3, 7}, {65, 128}, {576, 96}};
    static const int64_t shapes_q4[][2] = {{1, 64}, {7, 96}, {65, 128}, {576, 64}, {130, 256}};
    const bool q4 = fmt_q4(f);
    const size_t n_shapes = q4 ? sizeof shapes_q4 / sizeof shapes_q4[0] : sizeof shapes_float / sizeof shapes_float[0];
    for (size_t s = 0; s < n_shapes; s++) {
        const int64_t *sh = q4 ? shapes_q4[s] : shapes_float[s];
        fr_weight w = make_weight(g, f, sh[0], sh[1], 100 + s);
        check_weight(g, nm, &w, all_ns, N_ALL, 1000 + 10 * s);
    }
    /* a view of rows 3 .. 62: data (and scales) offset, row0 = 3 */
    {
        fr_weight w = make_weight(g, f, 65, 128, 200);
        fr_weight v = fr_weight_rows(&w, 3, 60);
        char what[64];
        snprintf(what, sizeof what, "%s rows 3..62 of 65", nm);
        check_weight(g, what, &v, all_ns, N_ALL, 2000);
    }
    /* prefill shapes that split K in the tiled kernel (few row tiles) and ragged tiles */
    {
        static const int64_t ns[] = {33};
        fr_weight w = make_weight(g, f, 576, 2048, 300);
        check_weight(g, nm, &w, ns, 1, 3000);
        static const int64_t ns2[] = {70};
        fr_weight w2 = make_weight(g, f, 130, 512, 301);
        check_weight(g, nm, &w2, ns2, 1, 3100);
    }
    /* decode shapes: 7168 columns, 2112 / 576 / 1 rows (split-K), and for the float
     * formats 7000 / 7001 columns (the scalar fallback where rows lose alignment) */
    {
        static const int64_t ns[] = {1, 2};
        const int n_ns = gc_quick() ? 1 : 2; /* GC_QUICK: one token, and no 2112-row matrix */
        if (!gc_quick()) {
            fr_weight w = make_weight(g, f, 2112, 7168, 400);
            check_weight(g, nm, &w, ns, 2, 4000);
        }
        fr_weight w2 = make_weight(g, f, 576, 7168, 401);
        check_weight(g, nm, &w2, ns, n_ns, 4100);
        fr_weight w3 = make_weight(g, f, 1, 7168, 402);
        check_weight(g, nm, &w3, ns, 1, 4200);
        if (!q4) {
            fr_weight w4 = make_weight(g, f, 130, 7000, 403);
            check_weight(g, nm, &w4, ns, 2, 4300);
            fr_weight w5 = make_weight(g, f, 33, 7001, 404);
            check_weight(g, nm, &w5, ns, 1, 4400);
        }
    }
    /* batch invariance inside the GEMV: token 5 of a 16-token product has the bits of
     * the same token alone and of a 3-token product starting there (split-K active) */
    {
        const int64_t R = 576, K = 2048;
        fr_weight w = make_weight(g, f, R, K, 500);
        float *hx = gc_randn(g, (size_t)(16 * K), 5000, 1.0f);
        float *dx = gc_to_dev(g, hx, (size_t)(16 * K));
        float *y16 = check_case(g, nm, &w, 16, hx, dx);
        float *y1 = check_case(g, nm, &w, 1, hx + 5 * K, dx + 5 * K);
        float *y3 = check_case(g, nm, &w, 3, hx + 5 * K, dx + 5 * K);
        char buf[96];
        snprintf(buf, sizeof buf, "matmul %s: n=1, 3 and 16 give a token the same bits", nm);
        gc_check(g, buf, !memcmp(y16 + 5 * R, y1, (size_t)R * 4) && !memcmp(y16 + 5 * R, y3, (size_t)R * 4));
    }
}

/* FP8 block grids other than 128x128, and views that start inside a block. */
static void test_fp8_grids(gc_ctx *g) {
    static const struct {
        int64_t rows, cols;
        int br, bc;
        int64_t r0, nr; /* view */
    } cases[] = {
        {300, 256, 128, 128, 100, 70},  /* view starts mid-block, ends mid-block */
        {300, 256, 128, 128, 250, 50},  /* the last, partial block row */
        {200, 192, 64, 48, 37, 100},    /* block_cols a multiple of 16: vector GEMV */
        {150, 200, 32, 40, 5, 100},     /* block_cols 40: scales change inside a chunk */
        {150, 200, 7, 5, 3, 90},        /* tiny blocks */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fr_weight w = gc_weight_fp8(g, cases[i].rows, cases[i].cols, cases[i].br, cases[i].bc, 600 + i);
        fr_weight v = fr_weight_rows(&w, cases[i].r0, cases[i].nr);
        char what[80];
        snprintf(what, sizeof what, "F8/%dx%d rows %lld.. of %lld", cases[i].br, cases[i].bc,
                 (long long)cases[i].r0, (long long)cases[i].rows);
        check_weight(g, what, &v, all_ns, N_ALL, 6000 + 100 * i);
        snprintf(what, sizeof what, "F8/%dx%d", cases[i].br, cases[i].bc);
        static const int64_t some_ns[] = {9, 32, 70};
        check_weight(g, what, &w, some_ns, 3, 6050 + 100 * i);
    }
    /* block scales of 2^8 and more (the GEMV's folded 2^120 * scale would overflow) next
     * to small ones, and a negative one */
    {
        fr_weight w = gc_weight_fp8(g, 100, 256, 32, 32, 650);
        const int64_t nsc = 4 * 8;
        float *si = gc_host(g, (size_t)nsc * 4);
        for (int64_t i = 0; i < nsc; i++) si[i] = i % 3 == 0 ? 300.0f + (float)i : i % 3 == 1 ? 1e-3f : 3e4f;
        si[5] = -700.0f;
        w.scale_inv = si;
        gc_ok(g, "register big scales", g->gpu->ops->register_weight(g->gpu, &w));
        check_weight(g, "F8/32x32 scales >= 256", &w, all_ns, N_ALL, 6500);
    }
    /* a decode-sized view mid-block: rows 1000 .. 1575 of 2112 (1000 = 7 * 128 + 104) */
    static const int64_t ns[] = {1, 2};
    fr_weight w = gc_weight_fp8(g, 2112, 7168, 128, 128, 700);
    fr_weight v = fr_weight_rows(&w, 1000, 576);
    check_weight(g, "F8/128x128 rows 1000..1575", &v, ns, 2, 7000);
}

/* n = 0 touches nothing; an unregistered weight is refused. */
static void test_edges(gc_ctx *g) {
    fr_weight w = gc_weight(g, FR_DTYPE_BF16, 16, 64, 800);
    float *dx = gc_to_dev(g, gc_randn(g, 64, 801, 1.0f), 64);
    float *dy = gc_dev_poison(g, 16);
    gc_ok(g, "matmul n=0", g->gpu->ops->matmul(g->gpu, dy, dx, 0, &w));
    float *got = gc_from_dev(g, dy, 16);
    bool untouched = true;
    for (int i = 0; i < 16; i++) untouched = untouched && isnan(got[i]);
    gc_check(g, "matmul n=0 leaves y alone", untouched);

    fr_weight u = w;
    u.data = gc_host(g, 16 * 64 * 2); /* never registered */
    gc_check(g, "matmul of an unregistered weight is FR_ERR_INVALID",
             g->gpu->ops->matmul(g->gpu, dy, dx, 1, &u) == FR_ERR_INVALID);
}

int main(void) {
    int rc = 0;
    /* a context per format keeps the host and emulated device memory of the large
     * shapes from piling up */
    for (int f = 0; f < F_COUNT; f++) {
        gc_ctx g;
        const int r = gc_init(&g);
        if (r) return r;
        printf("format %s\n", fmt_names[f]);
        test_format(&g, (fmt)f);
        rc |= gc_done(&g);
    }
    gc_ctx g;
    const int r = gc_init(&g);
    if (r) return r;
    test_fp8_grids(&g);
    test_edges(&g);
    rc |= gc_done(&g);
    return rc;
}
