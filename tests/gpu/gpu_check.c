/* gpu_check.c - see gpu_check.h. */
#include "gpu_check.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cuda_backend.h"
#include "core/dtype.h"

static void *track(void ***arr, size_t *n, size_t *cap, void *p) {
    if (!p) {
        fprintf(stderr, "gpu_check: out of memory\n");
        abort();
    }
    if (*n == *cap) {
        *cap = *cap ? 2 * *cap : 64;
        *arr = realloc(*arr, *cap * sizeof **arr);
        if (!*arr) abort();
    }
    (*arr)[(*n)++] = p;
    return p;
}

void *gc_host(gc_ctx *g, size_t bytes) {
    return track(&g->host_allocs, &g->n_host, &g->cap_host, calloc(1, bytes ? bytes : 1));
}

static void *dev_alloc(gc_ctx *g, size_t bytes) {
    return track(&g->dev_allocs, &g->n_dev, &g->cap_dev, g->gpu->ops->alloc(g->gpu, bytes ? bytes : 1));
}

int gc_init(gc_ctx *g) {
    memset(g, 0, sizeof *g);
    setvbuf(stdout, NULL, _IOLBF, 0); /* a crash keeps what was printed */
    fr_error err = {0};
    fr_status rc = fr_cuda_backend_create(0, &g->gpu, &err);
    if (rc == FR_ERR_DEVICE || rc == FR_ERR_UNSUPPORTED) {
        printf("skipped: %s\n", err.msg);
        return 77;
    }
    if (rc) {
        fprintf(stderr, "gpu_check: %s\n", err.msg);
        return 1;
    }
    if ((rc = fr_cpu_backend_create(0, &g->cpu, &err))) {
        fprintf(stderr, "gpu_check: %s\n", err.msg);
        return 1;
    }
    printf("device: %s\n", fr_cuda_backend_device_name());
    return 0;
}

int gc_done(gc_ctx *g) {
    for (size_t i = 0; i < g->n_dev; i++) g->gpu->ops->free(g->gpu, g->dev_allocs[i]);
    for (size_t i = 0; i < g->n_host; i++) free(g->host_allocs[i]);
    free(g->dev_allocs), free(g->host_allocs);
    fr_backend_destroy(g->gpu);
    fr_backend_destroy(g->cpu);
    printf("%d checks, %d failures\n", g->checks, g->failures);
    return g->failures ? 1 : 0;
}

/* ---- random numbers: xorshift64*, Box-Muller */
static uint64_t next(uint64_t *s) {
    *s ^= *s >> 12, *s ^= *s << 25, *s ^= *s >> 27;
    return *s * 0x2545F4914F6CDD1Dull;
}
static double uniform(uint64_t *s) { return ((double)(next(s) >> 11) + 0.5) / 9007199254740992.0; }
static float normal(uint64_t *s) {
    const double u = uniform(s), v = uniform(s);
    return (float)(sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v));
}
static uint64_t seeded(uint64_t seed) { return seed * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull; }

float *gc_randn(gc_ctx *g, size_t n, uint64_t seed, float scale) {
    float *x = gc_host(g, n * sizeof *x);
    uint64_t s = seeded(seed);
    for (size_t i = 0; i < n; i++) x[i] = normal(&s) * scale;
    return x;
}

static void register_weight(gc_ctx *g, const fr_weight *w) {
    fr_status rc = g->gpu->ops->register_weight ? g->gpu->ops->register_weight(g->gpu, w) : FR_OK;
    if (rc) {
        fprintf(stderr, "gpu_check: register_weight failed (%s)\n", fr_status_name(rc));
        abort();
    }
}

fr_weight gc_weight(gc_ctx *g, fr_dtype dt, int64_t rows, int64_t cols, uint64_t seed) {
    fr_weight w = {.dtype = dt, .rows = rows, .cols = cols};
    uint64_t s = seeded(seed);
    const size_t n = (size_t)(rows * cols);
    /* 1/sqrt(cols) keeps products of unit-scale inputs near unit scale */
    const float sc = 1.0f / sqrtf((float)cols);
    switch (dt) {
    case FR_DTYPE_F32: {
        float *d = gc_host(g, n * 4);
        for (size_t i = 0; i < n; i++) d[i] = normal(&s) * sc;
        w.data = d;
        break;
    }
    case FR_DTYPE_F16:
    case FR_DTYPE_BF16: {
        uint16_t *d = gc_host(g, n * 2);
        for (size_t i = 0; i < n; i++) {
            const float v = normal(&s) * sc;
            d[i] = dt == FR_DTYPE_F16 ? fr_f32_to_f16(v) : fr_f32_to_bf16(v);
        }
        w.data = d;
        break;
    }
    case FR_DTYPE_F8_E4M3: {
        uint8_t *d = gc_host(g, n);
        for (size_t i = 0; i < n; i++) d[i] = fr_f32_to_e4m3(normal(&s) * sc * 16.0f);
        w.data = d;
        break;
    }
    case FR_DTYPE_MXFP4:
    case FR_DTYPE_INT4: {
        w.group = 32;
        const size_t ng = (size_t)(rows * (cols / 32));
        uint8_t *d = gc_host(g, n / 2);
        for (size_t i = 0; i < n / 2; i++) d[i] = (uint8_t)next(&s);
        w.data = d;
        if (dt == FR_DTYPE_MXFP4) {
            uint8_t *sc8 = gc_host(g, ng);
            /* E2M1 magnitudes up to 6: 2^-5..2^-3 keeps values near 1/sqrt(cols) */
            for (size_t i = 0; i < ng; i++) sc8[i] = (uint8_t)(127 - 7 + (int)(next(&s) % 3));
            w.scales = sc8;
        } else {
            uint16_t *sc16 = gc_host(g, ng * 2);
            for (size_t i = 0; i < ng; i++) sc16[i] = fr_f32_to_bf16(sc * (0.1f + 0.2f * (float)uniform(&s)));
            w.scales = sc16;
        }
        break;
    }
    default:
        fprintf(stderr, "gpu_check: no random weights of %s\n", fr_dtype_name(dt));
        abort();
    }
    register_weight(g, &w);
    return w;
}

fr_weight gc_weight_fp8(gc_ctx *g, int64_t rows, int64_t cols, int br, int bc, uint64_t seed) {
    fr_weight w = gc_weight(g, FR_DTYPE_F8_E4M3, rows, cols, seed);
    const int64_t sr = (rows + br - 1) / br, scn = (cols + bc - 1) / bc;
    float *si = gc_host(g, (size_t)(sr * scn) * 4);
    uint64_t s = seeded(seed ^ 0xabcdef);
    for (int64_t i = 0; i < sr * scn; i++) si[i] = (float)(0.5 + uniform(&s)) / 16.0f;
    w.scale_inv = si;
    w.block_rows = br, w.block_cols = bc, w.scale_cols = scn;
    register_weight(g, &w);
    return w;
}

void *gc_to_dev_bytes(gc_ctx *g, const void *host, size_t bytes) {
    const size_t nf = (bytes + 3) / 4;
    float *tmp = calloc(nf ? nf : 1, 4);
    if (!tmp) abort();
    memcpy(tmp, host, bytes);
    float *d = dev_alloc(g, nf * 4);
    fr_status rc = g->gpu->ops->from_host(g->gpu, d, tmp, nf);
    free(tmp);
    if (rc) {
        fprintf(stderr, "gpu_check: from_host failed\n");
        abort();
    }
    return d;
}

float *gc_to_dev(gc_ctx *g, const float *host, size_t n) { return gc_to_dev_bytes(g, host, n * 4); }

float *gc_dev_poison(gc_ctx *g, size_t n) {
    float *h = malloc((n ? n : 1) * 4);
    if (!h) abort();
    for (size_t i = 0; i < n; i++) h[i] = NAN;
    float *d = gc_to_dev(g, h, n);
    free(h);
    return d;
}

void *gc_from_dev_bytes(gc_ctx *g, const void *dev, size_t bytes) {
    const size_t nf = (bytes + 3) / 4;
    float *h = gc_host(g, nf * 4);
    fr_status rc = g->gpu->ops->to_host(g->gpu, h, dev, nf);
    if (rc) {
        fprintf(stderr, "gpu_check: to_host failed (%s)\n", fr_status_name(rc));
        abort();
    }
    return h;
}

float *gc_from_dev(gc_ctx *g, const float *dev, size_t n) { return gc_from_dev_bytes(g, dev, n * 4); }

double gc_rel_l2(const float *got, const float *want, size_t n) {
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(got[i])) return NAN;
        const double d = (double)got[i] - (double)want[i];
        num += d * d;
        den += (double)want[i] * want[i];
    }
    return den > 0.0 ? sqrt(num / den) : sqrt(num);
}

bool gc_quick(void) {
    const char *v = getenv("GC_QUICK");
    return v && *v == '1';
}

static bool verbose(void) {
    const char *v = getenv("GC_VERBOSE");
    return v && *v == '1';
}

bool gc_close(gc_ctx *g, const char *name, const float *got, const float *want, size_t n, double tol) {
    const double e = gc_rel_l2(got, want, n);
    const bool ok = e <= tol; /* false for NaN */
    g->checks++;
    if (!ok) g->failures++;
    if (!ok || verbose()) printf("%s %-48s rel L2 %.3g (tol %.3g)\n", ok ? "ok  " : "FAIL", name, e, tol);
    return ok;
}

bool gc_row_poisoned(gc_ctx *g, const char *name, const float *row, int64_t width) {
    bool poisoned = true;
    for (int64_t i = 0; i < width; i++) poisoned = poisoned && isnan(row[i]);
    char buf[320];
    snprintf(buf, sizeof buf, "%s: the row after the last token stays poisoned", name);
    return gc_check(g, buf, poisoned);
}

bool gc_check(gc_ctx *g, const char *name, bool ok) {
    g->checks++;
    if (!ok) g->failures++;
    if (!ok || verbose()) printf("%s %s\n", ok ? "ok  " : "FAIL", name);
    return ok;
}

bool gc_ok(gc_ctx *g, const char *name, fr_status rc) {
    char buf[256];
    snprintf(buf, sizeof buf, "%s: %s", name, fr_status_name(rc));
    return gc_check(g, buf, rc == FR_OK);
}
