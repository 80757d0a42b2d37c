/* bench_matmul.c - micro-benchmark of the CPU matrix products (not a test).
 *
 * Decode speed is the speed of n = 1 matrix-vector products over weights that do
 * not fit in any cache, so this cycles through about 2 GiB of matrices in each of
 * four formats: BF16 and FP8-E4M3 (128 x 128 block scales) as 4096 x 8192, and the
 * 4-bit expert formats MXFP4 and INT4 (group 32, scales included in the 2 GiB) as
 * 2048 x 8192, the shape class of MoE expert projections. For each it reports the
 * stored bytes streamed per second (data + scales) next to fr_cpu_read_bandwidth
 * measured right before and after in the same run, the ceiling the engine is judged
 * against, as best and median of the timed passes; then a table of median weights
 * per second against BF16 (the 4-bit target: >= 1.6x BF16's weights/s, i.e. decode
 * tokens/s of experts, and >= 60% of the read bandwidth). Each format also runs on 256
 * rows from cache, the rate its arithmetic alone allows, and prefill (n = 64) GFLOP/s.
 * Not built by CMake; build by hand from the repository root:
 *
 *   gcc -std=c11 -O2 -fopenmp -D_GNU_SOURCE -Isrc tests/unit/bench_matmul.c \
 *       src/backend/cpu/matmul.c src/core/weight.c src/core/dtype.c src/core/mx.c -lm -o /tmp/bench_matmul
 *   /tmp/bench_matmul [GiB of weights, default 2] [threads, default 2] [timed passes, default 9]
 *
 * FR_ISA=portable|avx2|avx512|avx512vnni picks the path as in the engine. The machine may be
 * shared: check that it is idle, and read the medians. Another process on one core
 * shows as a read bandwidth far below its usual value before or after a format, and
 * it hurts the 4-bit products most: each is a short parallel region (~0.3 ms), and
 * a preempted thread stalls its barrier for a whole time slice. Discard such runs. */
#include <omp.h>
#include <stdbool.h>
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
 * so no path takes a slow floating-point assist the real weights would not. 4-bit
 * data may be any bytes (every nibble is a valid code); their scales are filled
 * separately (fill_scales). */
static void fill(uint8_t *p, size_t bytes, fr_dtype dt) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < bytes / 2; i++) {
        uint32_t h = (uint32_t)(i * 2654435761u);
        if (dt == FR_DTYPE_BF16) {
            uint16_t v = (uint16_t)(0x3c00 | (h >> 20 & 0x3ff) | (h & 0x8000)); /* |v| in [2^-7, 2^-5) */
            memcpy(p + 2 * i, &v, 2);
        } else if (dt == FR_DTYPE_F8_E4M3) { /* two e4m3 bytes, exponent fields 1..14 */
            p[2 * i] = (uint8_t)((h >> 8 & 0x87) | ((1 + (h >> 16) % 14) << 3));
            p[2 * i + 1] = (uint8_t)((h >> 12 & 0x87) | ((1 + (h >> 20) % 14) << 3));
        } else {
            p[2 * i] = (uint8_t)(h >> 13);
            p[2 * i + 1] = (uint8_t)(h >> 21);
        }
    }
}

/* Group scales of a 4-bit matrix: E8M0 2^-9 .. 2^-1 (no 0 or NaN), or BF16 ~1e-2. */
static void fill_scales(uint8_t *p, int64_t n, fr_dtype dt) {
    for (int64_t i = 0; i < n; i++) {
        if (dt == FR_DTYPE_MXFP4) {
            p[i] = (uint8_t)(118 + i % 9);
        } else {
            const uint16_t v = (uint16_t)(0x3c20 + i % 64); /* ~0.0098 .. 0.0117 */
            memcpy(p + 2 * i, &v, 2);
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

typedef struct {
    fr_dtype type;
    int64_t rows, cols;
    int nm;
    double bw, best, med; /* bytes/s */
    double wbytes;        /* stored bytes per weight, scales included */
    double hot;           /* median bytes/s from cache */
} result;

int main(int argc, char **argv) {
    const double gib = argc > 1 ? atof(argv[1]) : 2.0;
    const int threads = argc > 2 ? atoi(argv[2]) : 2;
    const int passes = argc > 3 ? atoi(argv[3]) : 9;
    if (gib <= 0 || threads <= 0 || passes <= 0) {
        fprintf(stderr, "usage: bench_matmul [GiB] [threads] [passes]\n");
        return 2;
    }
    omp_set_num_threads(threads);
    const int64_t C = 8192;
    const size_t total = (size_t)(gib * (double)(1u << 30));
    uint8_t *buf = aligned_alloc(4096, (total + 4095) / 4096 * 4096);
    float *x = malloc(64 * 8192 * sizeof(float)), *y = malloc(64 * 8192 * sizeof(float));
    const int64_t sr = 4096 / 128, sc = C / 128;
    float *scales = malloc((size_t)(sr * sc) * sizeof(float));
    if (!buf || !x || !y || !scales) {
        fprintf(stderr, "bench_matmul: out of memory\n");
        return 1;
    }
    for (int64_t i = 0; i < 64 * 8192; i++) x[i] = (float)((i * 7919) % 2001 - 1000) * 1e-3f;
    for (int64_t i = 0; i < sr * sc; i++) scales[i] = 1.0f / 64.0f + (float)(i % 7) * 1e-3f;

    printf("isa %s, %d threads, %.2f GiB of weights, %d timed passes\n", fr_isa_name(fr_isa_active()),
           threads, gib, passes);
    static fr_weight ws[4096];
    static const fr_dtype types[] = {FR_DTYPE_BF16, FR_DTYPE_F8_E4M3, FR_DTYPE_MXFP4, FR_DTYPE_INT4};
    result res[4];
    const size_t bw_bytes = (size_t)1 << 30;
    for (int ti = 0; ti < 4; ti++) {
        const fr_dtype type = types[ti];
        const bool q4 = type == FR_DTYPE_MXFP4 || type == FR_DTYPE_INT4;
        const int64_t R = q4 ? 2048 : 4096;
        fr_weight proto = {.dtype = type, .rows = R, .cols = C};
        if (q4) proto.group = 32;
        /* each matrix: data then its scales (4-bit), 64-byte aligned */
        const size_t dbytes = (size_t)(R * fr_weight_row_bytes(&proto));
        const size_t sbytes = (size_t)(R * fr_weight_row_scale_bytes(&proto));
        const size_t mbytes = (dbytes + sbytes + 63) / 64 * 64;
        fill(buf, total, type);
        int nm = (int)(total / mbytes);
        if (nm > 4096) nm = 4096;
        for (int m = 0; m < nm; m++) {
            ws[m] = proto;
            ws[m].data = buf + (size_t)m * mbytes;
            if (q4) {
                ws[m].scales = buf + (size_t)m * mbytes + dbytes;
                fill_scales(buf + (size_t)m * mbytes + dbytes, R * (C / 32), type);
            }
            if (type == FR_DTYPE_F8_E4M3) {
                ws[m].scale_inv = scales;
                ws[m].block_rows = ws[m].block_cols = 128;
                ws[m].scale_cols = sc;
            }
        }
        /* bandwidth right before and after, so both see the same machine state */
        double best, med;
        const double bw0 = fr_cpu_read_bandwidth(bw_bytes, threads);
        run_matvec(ws, nm, passes, x, y, &best, &med);
        const double bw1 = fr_cpu_read_bandwidth(bw_bytes, threads);
        const double bw = bw0 > bw1 ? bw0 : bw1;
        res[ti] = (result){type, R, C, nm, bw, best, med, (double)fr_weight_bytes(&ws[0]) / (double)(R * C), 0};
        printf("read bandwidth (1 GiB, %d threads): %6.2f GB/s (before %.2f, after %.2f)\n", threads,
               bw / 1e9, bw0 / 1e9, bw1 / 1e9);
        printf("matvec %-7s %3d x %lldx%lld:  best %6.2f GB/s = %5.1f%%   median %6.2f GB/s = %5.1f%%\n",
               fr_dtype_name(type), nm, (long long)R, (long long)C, best / 1e9, 100.0 * best / bw, med / 1e9,
               100.0 * med / bw);
        /* The same kernel on 256 rows (a few MB at most, read from cache): what its
         * arithmetic alone allows. Close to the read bandwidth, the product is bound by
         * both, and reaches the bandwidth only with room to spare. */
        static fr_weight hot[64];
        for (int m = 0; m < 64; m++) hot[m] = fr_weight_rows(&ws[0], 0, 256);
        double hot_best, hot_med;
        run_matvec(hot, 64, passes, x, y, &hot_best, &hot_med);
        printf("matvec %-7s  in cache (256 rows): best %6.2f GB/s = %5.1f%%   median %6.2f GB/s = %5.1f%%\n",
               fr_dtype_name(type), hot_best / 1e9, 100.0 * hot_best / bw, hot_med / 1e9, 100.0 * hot_med / bw);
        res[ti].hot = hot_med;
        printf("prefill %-7s %lldx8192 n=64: %7.1f GFLOP/s\n", fr_dtype_name(type), (long long)R,
               run_prefill(&ws[0], 64, 5, x, y));
        if (!q4) {
            fr_weight sq = ws[0];
            sq.rows = sq.cols = 2048;
            sq.scale_cols = 16;
            printf("prefill %-7s 2048x2048 n=64: %7.1f GFLOP/s\n", fr_dtype_name(type),
                   run_prefill(&sq, 64, 20, x, y));
        }
    }
    /* Decode of experts is bound by weights streamed per second: compare formats by
     * median weights/s (bytes/s over stored bytes per weight). */
    const double bf16_wps = res[0].med / res[0].wbytes;
    printf("\n%-8s %-10s %9s %11s %8s %12s %8s %14s\n", "format", "matrix", "B/weight", "median GB/s", "% of BW",
           "Gweights/s", "vs BF16", "cache GB/s %BW");
    for (int ti = 0; ti < 4; ti++) {
        const result *r = &res[ti];
        const double wps = r->med / r->wbytes;
        char shape[32];
        snprintf(shape, sizeof shape, "%lldx%lld", (long long)r->rows, (long long)r->cols);
        printf("%-8s %-10s %9.4f %11.2f %7.1f%% %12.2f %7.2fx %8.2f %4.0f%%\n", fr_dtype_name(r->type), shape,
               r->wbytes, r->med / 1e9, 100.0 * r->med / r->bw, wps / 1e9, wps / bf16_wps, r->hot / 1e9,
               100.0 * r->hot / r->bw);
    }

    free(buf);
    free(x);
    free(y);
    free(scales);
    return 0;
}
