/* bench_matmul.c - micro-benchmark of the CPU matrix products (not a test).
 *
 * Decode speed is the speed of n = 1 matrix-vector products over weights that do
 * not fit in any cache, so this cycles through about 2 GiB of 4096 x 8192 matrices
 * (BF16, then FP8-E4M3 with 128 x 128 block scales) and reports the weight bytes
 * streamed per second next to fr_cpu_read_bandwidth measured in the same run, the
 * ceiling the engine is judged against. It also reports prefill (n = 64) GFLOP/s.
 * Not built by CMake; build by hand from the repository root:
 *
 *   gcc -std=c11 -O2 -fopenmp -D_GNU_SOURCE -Isrc tests/unit/bench_matmul.c \
 *       src/backend/cpu/matmul.c src/core/weight.c src/core/dtype.c -lm -o /tmp/bench_matmul
 *   /tmp/bench_matmul [GiB of weights, default 2] [threads, default 2]
 *
 * FR_ISA=portable|avx2|avx512 picks the path as in the engine. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/cpu/matmul.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Fill with finite, normal-range values of the dtype (no NaN, no denormal floats)
 * so no path takes a slow floating-point assist the real weights would not. */
static void fill(uint8_t *p, size_t bytes, fr_dtype dt) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < bytes / 2; i++) {
        uint32_t h = (uint32_t)(i * 2654435761u);
        if (dt == FR_DTYPE_BF16) {
            uint16_t v = (uint16_t)(0x3c00 | (h >> 20 & 0x3ff) | (h & 0x8000)); /* |v| in [2^-7, 2^-5) */
            memcpy(p + 2 * i, &v, 2);
        } else { /* two e4m3 bytes, exponent fields 1..14 */
            p[2 * i] = (uint8_t)((h >> 8 & 0x87) | ((1 + (h >> 16) % 14) << 3));
            p[2 * i + 1] = (uint8_t)((h >> 12 & 0x87) | ((1 + (h >> 20) % 14) << 3));
        }
    }
}

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* n = 1 over every matrix in turn, one warm-up pass then `passes` timed passes
 * (at most 16); sets the best and the median pass in weight bytes per second. The
 * machine may be shared, so both are shown: best is what the kernel can do. */
static void run_matvec(const fr_weight *ws, int nm, int passes, const float *x, float *y, double *best,
                       double *median) {
    double bytes = 0, g[16];
    for (int m = 0; m < nm; m++) bytes += (double)fr_weight_bytes(&ws[m]);
    for (int m = 0; m < nm; m++) fr_cpu_matmul(y, x, 1, &ws[m]);
    if (passes > 16) passes = 16;
    for (int p = 0; p < passes; p++) {
        const double t0 = now_s();
        for (int m = 0; m < nm; m++) fr_cpu_matmul(y, x, 1, &ws[m]);
        g[p] = bytes / (now_s() - t0);
    }
    qsort(g, (size_t)passes, sizeof g[0], cmp_double);
    *best = g[passes - 1];
    *median = g[passes / 2];
}

static double run_prefill(const fr_weight *w, int64_t n, int reps, const float *x, float *y) {
    fr_cpu_matmul(y, x, n, w);
    const double t0 = now_s();
    for (int i = 0; i < reps; i++) fr_cpu_matmul(y, x, n, w);
    const double dt = now_s() - t0;
    return 2.0 * (double)w->rows * (double)w->cols * (double)n * reps / dt / 1e9;
}

int main(int argc, char **argv) {
    const double gib = argc > 1 ? atof(argv[1]) : 2.0;
    const int threads = argc > 2 ? atoi(argv[2]) : 2;
    if (gib <= 0 || threads <= 0) {
        fprintf(stderr, "usage: bench_matmul [GiB] [threads]\n");
        return 2;
    }
    omp_set_num_threads(threads);
    const int64_t R = 4096, C = 8192;
    const size_t total = (size_t)(gib * (double)(1u << 30));
    uint8_t *buf = aligned_alloc(4096, (total + 4095) / 4096 * 4096);
    float *x = malloc(64 * 8192 * sizeof(float)), *y = malloc(64 * 8192 * sizeof(float));
    const int64_t sr = R / 128, sc = C / 128;
    float *scales = malloc((size_t)(sr * sc) * sizeof(float));
    if (!buf || !x || !y || !scales) {
        fprintf(stderr, "bench_matmul: out of memory\n");
        return 1;
    }
    for (int64_t i = 0; i < 64 * 8192; i++) x[i] = (float)((i * 7919) % 2001 - 1000) * 1e-3f;
    for (int64_t i = 0; i < sr * sc; i++) scales[i] = 1.0f / 64.0f + (float)(i % 7) * 1e-3f;

    printf("isa %s, %d threads, %.2f GiB of weights\n", fr_isa_name(fr_isa_active()), threads, gib);
    static fr_weight ws[1024];
    double bw = 0, best, med;
    const size_t bw_bytes = (size_t)1 << 30;
    for (int dt = 0; dt < 2; dt++) {
        const fr_dtype type = dt == 0 ? FR_DTYPE_BF16 : FR_DTYPE_F8_E4M3;
        const size_t es = fr_dtype_size(type);
        fill(buf, total, type);
        int nm = (int)(total / ((size_t)(R * C) * es));
        if (nm > 1024) nm = 1024;
        for (int m = 0; m < nm; m++) {
            ws[m] = (fr_weight){.dtype = type, .rows = R, .cols = C, .data = buf + (size_t)m * R * C * es};
            if (type == FR_DTYPE_F8_E4M3) {
                ws[m].scale_inv = scales;
                ws[m].block_rows = ws[m].block_cols = 128;
                ws[m].scale_cols = sc;
            }
        }
        /* bandwidth right before and after, so both see the same machine state */
        const double bw0 = fr_cpu_read_bandwidth(bw_bytes, threads);
        run_matvec(ws, nm, 5, x, y, &best, &med);
        const double bw1 = fr_cpu_read_bandwidth(bw_bytes, threads);
        bw = bw0 > bw1 ? bw0 : bw1;
        printf("read bandwidth (1 GiB, %d threads): %6.2f GB/s (before %.2f, after %.2f)\n", threads,
               bw / 1e9, bw0 / 1e9, bw1 / 1e9);
        printf("matvec %-5s %2d x %lldx%lld:  best %6.2f GB/s = %5.1f%%   median %6.2f GB/s = %5.1f%%\n",
               fr_dtype_name(type), nm, (long long)R, (long long)C, best / 1e9, 100.0 * best / bw, med / 1e9,
               100.0 * med / bw);
        printf("prefill %-5s 4096x8192 n=64: %7.1f GFLOP/s\n", fr_dtype_name(type),
               run_prefill(&ws[0], 64, 5, x, y));
        fr_weight sq = ws[0];
        sq.rows = sq.cols = 2048;
        sq.scale_cols = 16;
        printf("prefill %-5s 2048x2048 n=64: %7.1f GFLOP/s\n", fr_dtype_name(type),
               run_prefill(&sq, 64, 20, x, y));
    }

    free(buf);
    free(x);
    free(y);
    free(scales);
    return 0;
}
