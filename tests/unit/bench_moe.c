/* bench_moe.c - micro-benchmark of a MoE layer's expert products (not a test).
 *
 * The products one decode step runs in cpu_moe, without the rest of the model: per layer,
 * gate and up of the chosen experts (and of the shared expert) as one fr_cpu_matmul_group,
 * then their down projections as another, over 26 layers of distinct weights (far more
 * than the caches hold). Moonlight's shapes: hidden 2048, expert width 1408, 6 chosen
 * MXFP4 experts, a BF16 shared expert of width 2816. Weights come from fr_big_alloc, as
 * the engine's do. Three sets: routed experts alone, with the shared expert, and 3 tokens
 * per expert (a batched step). Prints the median of the timed passes as GB/s of weights
 * against fr_cpu_read_bandwidth measured in the same run.
 * Not built by CMake; build by hand from the repository root:
 *
 *   gcc -std=c11 -O2 -fopenmp -D_GNU_SOURCE -Isrc tests/unit/bench_moe.c src/backend/cpu/matmul.c \
 *       src/core/weight.c src/core/dtype.c src/core/mx.c src/core/bigmem.c -lm -o /tmp/bench_moe
 *   /tmp/bench_moe [timed passes, default 15]
 *
 * FR_ISA=avx512 compares the f32-activation 4-bit kernels with the VNNI ones. As with
 * bench_matmul, read the medians on an idle machine. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/cpu/matmul.h"
#include "core/bigmem.h"

enum { LAYERS = 26, CHOSEN = 6, D = 2048, I = 1408, SHARED_I = 2816 };

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* A rows x cols weight with arbitrary finite contents; NULL data when out of memory. */
static fr_weight make(fr_dtype dt, int64_t rows, int64_t cols) {
    fr_weight w = {.dtype = dt, .rows = rows, .cols = cols};
    const size_t n = (size_t)(rows * cols);
    if (dt == FR_DTYPE_MXFP4) {
        uint8_t *d = fr_big_alloc(n / 2 + n / 32);
        if (!d) return w;
        for (size_t i = 0; i < n / 2; i++) d[i] = (uint8_t)(i * 2654435761u >> 13);
        for (size_t i = 0; i < n / 32; i++) d[n / 2 + i] = (uint8_t)(120 + i % 8); /* 2^-7 .. 2^0 */
        w.data = d;
        w.scales = d + n / 2;
        w.group = 32;
    } else {
        uint16_t *d = fr_big_alloc(n * 2);
        if (!d) return w;
        for (size_t i = 0; i < n; i++) d[i] = (uint16_t)(0x3c00 | ((i * 2654435761u >> 20) & 0x3ff));
        w.data = d;
    }
    return w;
}

typedef struct {
    fr_weight gate, up, down;
} expert;

static expert routed[LAYERS][CHOSEN], shared[LAYERS];

/* One pass over the layers with nt tokens per expert; returns seconds. */
static double pass(bool with_shared, int nt, const float *x, float *h, float *y) {
    const double t0 = now_s();
    for (int l = 0; l < LAYERS; l++) {
        fr_matmul_item it[2 * CHOSEN + 2];
        int m = 0;
        float *hs = h + (size_t)nt * 2 * CHOSEN * I; /* the shared expert's gate, then up */
        if (with_shared) {
            it[m++] = (fr_matmul_item){hs, x, nt, &shared[l].gate};
            it[m++] = (fr_matmul_item){hs + (size_t)nt * SHARED_I, x, nt, &shared[l].up};
        }
        for (int e = 0; e < CHOSEN; e++) {
            it[m++] = (fr_matmul_item){h + (size_t)nt * 2 * e * I, x, nt, &routed[l][e].gate};
            it[m++] = (fr_matmul_item){h + (size_t)nt * (2 * e + 1) * I, x, nt, &routed[l][e].up};
        }
        fr_cpu_matmul_group(it, m);
        m = 0;
        if (with_shared) it[m++] = (fr_matmul_item){y + (size_t)nt * CHOSEN * D, hs, nt, &shared[l].down};
        for (int e = 0; e < CHOSEN; e++)
            it[m++] = (fr_matmul_item){y + (size_t)nt * e * D, h + (size_t)nt * 2 * e * I, nt, &routed[l][e].down};
        fr_cpu_matmul_group(it, m);
    }
    return now_s() - t0;
}

int main(int argc, char **argv) {
    const int passes = argc > 1 ? atoi(argv[1]) : 15;
    if (passes < 1 || passes > 1000) return fprintf(stderr, "passes: 1 .. 1000\n"), 2;
    for (int l = 0; l < LAYERS; l++) {
        for (int e = 0; e < CHOSEN; e++)
            routed[l][e] = (expert){make(FR_DTYPE_MXFP4, I, D), make(FR_DTYPE_MXFP4, I, D), make(FR_DTYPE_MXFP4, D, I)};
        shared[l] = (expert){make(FR_DTYPE_BF16, SHARED_I, D), make(FR_DTYPE_BF16, SHARED_I, D),
                             make(FR_DTYPE_BF16, D, SHARED_I)};
        if (!shared[l].down.data || !routed[l][CHOSEN - 1].down.data) return fprintf(stderr, "out of memory\n"), 1;
    }
    enum { NT_MAX = 3 };
    float *x = malloc(sizeof(float) * NT_MAX * D);
    float *h = malloc(sizeof(float) * NT_MAX * (2 * CHOSEN * I + 2 * SHARED_I));
    float *y = malloc(sizeof(float) * NT_MAX * (CHOSEN + 1) * D);
    double *ts = malloc(sizeof(double) * (size_t)passes);
    if (!x || !h || !y || !ts) return fprintf(stderr, "out of memory\n"), 1;
    for (int i = 0; i < NT_MAX * D; i++) x[i] = 0.01f * (float)(i % 7 - 3);
    for (int i = 0; i < NT_MAX * (2 * CHOSEN * I + 2 * SHARED_I); i++) h[i] = 0.01f * (float)(i % 5 - 2);

    const double q4 = (double)LAYERS * CHOSEN * 3 * I * D * (0.5 + 1.0 / 32), bf = (double)LAYERS * 3 * SHARED_I * D * 2;
    const double bw = fr_cpu_read_bandwidth((size_t)1 << 30, 0);
    printf("isa %s, %d layers x %d MXFP4 experts (%d x %d) + BF16 shared (%d), %d timed passes\n",
           fr_isa_name(fr_isa_active()), LAYERS, CHOSEN, I, D, SHARED_I, passes);
    printf("read bandwidth (1 GiB, measured now): %.2f GB/s\n\n", bw / 1e9);
    printf("| set | tokens | weight MB | median ms | GB/s | of read bandwidth |\n|---|---:|---:|---:|---:|---:|\n");
    static const struct {
        const char *name;
        bool shared;
        int nt;
    } sets[] = {{"routed experts", false, 1}, {"routed + shared", true, 1}, {"routed experts", false, 3}};
    for (size_t s = 0; s < sizeof sets / sizeof sets[0]; s++) {
        pass(sets[s].shared, sets[s].nt, x, h, y); /* warm-up */
        for (int p = 0; p < passes; p++) ts[p] = pass(sets[s].shared, sets[s].nt, x, h, y);
        qsort(ts, (size_t)passes, sizeof *ts, cmp_double);
        const double t = ts[passes / 2], bytes = q4 + (sets[s].shared ? bf : 0);
        printf("| %s | %d | %.0f | %.2f | %.2f | %.1f%% |\n", sets[s].name, sets[s].nt, bytes / 1e6, t * 1e3,
               bytes / t / 1e9, 100.0 * bytes / t / bw);
    }
    return 0;
}
