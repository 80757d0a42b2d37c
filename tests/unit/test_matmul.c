/* test_matmul.c - the CPU matrix products against a double-precision reference.
 *
 * Every instruction-set path this CPU has (forced with fr_isa_set_limit), every
 * weight dtype, odd shapes (tails of every vector width, rows not a multiple of the
 * row group, K longer than one prefill block), several token counts (the n = 1
 * matvec and the tiled prefill path), square and odd FP8 block grids and FP8 views
 * that start in the middle of a scale block. The reference is built element by
 * element with fr_weight_get, the scalar definition, and summed in double; the
 * tolerance is relative to sum |x * w| of the dot product, the scale of f32
 * rounding error. Weight data is placed at an odd address for half the cases so
 * the sanitizer build catches any misaligned scalar access.
 *
 * The 4-bit formats (MXFP4, INT4) get the same treatment against fr_mx_weight_get,
 * the scalar definition in core/mx.c: random nibbles and scales, cols of one to 65
 * blocks, token counts through every path, row slices (whose data and scales pointers
 * fr_weight_rows offsets), the transposed product, every code on its own, the exact
 * E8M0 edge scales (2^-127 and NaN) and the views the kernels must refuse.
 *
 * fr_cpu_matmul_group must give each product's bits as fr_cpu_matmul gives them alone,
 * for mixed formats and token counts, shared inputs and 1 to 7 threads. */
#include <math.h>
#include <omp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "backend/cpu/matmul.h"
#include "check.h"
#include "core/mx.h"

static uint64_t rng_state = 0x243F6A8885A308D3ull;

static uint32_t rng_u32(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 32);
}

/* uniform in [-1, 1) */
static float rng_f(void) { return (float)((double)rng_u32() / 2147483648.0 - 1.0); }

/* A test matrix: the weight view (data possibly at an odd address), its aligned
 * twin used only for the reference, and owned storage. */
typedef struct {
    fr_weight w;     /* what the kernels see */
    fr_weight w_ref; /* same values, aligned, for fr_weight_get */
    uint8_t *store, *store_ref;
    float *scales;
} tmat;

static void tmat_free(tmat *m) {
    free(m->store);
    free(m->store_ref);
    free(m->scales);
}

static int tmat_make(tmat *m, fr_dtype dt, int64_t rows, int64_t cols, int32_t br, int32_t bc, int misalign) {
    memset(m, 0, sizeof *m);
    const size_t es = fr_dtype_size(dt), bytes = (size_t)rows * (size_t)cols * es;
    m->store_ref = malloc(bytes + 16);
    m->store = malloc(bytes + 16);
    if (!m->store || !m->store_ref) return -1;
    uint8_t *p = m->store_ref;
    for (int64_t i = 0; i < rows * cols; i++) {
        float f = rng_f();
        switch (dt) {
        case FR_DTYPE_F32: memcpy(p + 4 * i, &f, 4); break;
        case FR_DTYPE_F16: {
            uint16_t h = fr_f32_to_f16(f);
            memcpy(p + 2 * i, &h, 2);
            break;
        }
        case FR_DTYPE_BF16: {
            uint16_t h = fr_f32_to_bf16(f);
            memcpy(p + 2 * i, &h, 2);
            break;
        }
        default: {
            uint8_t b = (uint8_t)rng_u32(); /* every code, including subnormals and +-448 */
            if ((b & 0x7f) == 0x7f) b ^= 1; /* but not NaN */
            p[i] = b;
        }
        }
    }
    uint8_t *d = m->store + (misalign ? 1 : 0);
    memcpy(d, p, bytes);
    fr_weight w = {.dtype = dt, .rows = rows, .cols = cols, .data = p};
    if (dt == FR_DTYPE_F8_E4M3) {
        const int64_t sr = (rows + br - 1) / br, sc = (cols + bc - 1) / bc;
        m->scales = malloc((size_t)(sr * sc) * sizeof(float));
        if (!m->scales) return -1;
        for (int64_t i = 0; i < sr * sc; i++)
            m->scales[i] = ldexpf(1.0f + 0.5f * rng_f(), -8 + (int)(rng_u32() % 5));
        w.scale_inv = m->scales;
        w.block_rows = br;
        w.block_cols = bc;
        w.scale_cols = sc;
    }
    m->w_ref = w;
    w.data = d;
    m->w = w;
    return 0;
}

/* Dense W_real of view rows [r0, r0 + rows) of the reference matrix, in double. */
static double *dense(const tmat *m, int64_t r0, int64_t rows) {
    const int64_t cols = m->w_ref.cols;
    double *d = malloc((size_t)(rows * cols) * sizeof(double));
    if (!d) return NULL;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) d[r * cols + c] = fr_weight_get(&m->w_ref, r0 + r, c);
    return d;
}

static float *rand_vec(int64_t len) {
    float *v = malloc((size_t)len * sizeof(float) + 1);
    if (v)
        for (int64_t i = 0; i < len; i++) v[i] = rng_f();
    return v;
}

static const double TOL = 1e-5;

/* The x a product of view v reads, in double: x itself, except for 4-bit weights on the
 * VNNI path, which round x to int8 per block of 32 (matmul.h): q = rint(x * (127 / amax))
 * with f32 arithmetic (double below amax 2^-100), read as q * (amax / 127), NaN where
 * amax is not finite. Written from that definition, apart from the kernels' code. */
static double *read_x(const fr_weight *v, const float *x, int64_t n) {
    const int64_t C = v->cols;
    double *d = malloc((size_t)(n * C) * sizeof(double));
    if (!d) return NULL;
    const bool q8 = fr_isa_active() == FR_ISA_AVX512VNNI && (v->dtype == FR_DTYPE_MXFP4 || v->dtype == FR_DTYPE_INT4);
    for (int64_t i = 0; i < n * C; i++) d[i] = x[i];
    if (!q8) return d;
    for (int64_t b = 0; b < n * C; b += 32) {
        float amax = 0.0f;
        for (int i = 0; i < 32; i++) amax = fabsf(x[b + i]) > amax || isnan(x[b + i]) ? fabsf(x[b + i]) : amax;
        for (int i = 0; i < 32; i++) {
            if (isnan(amax) || isinf(amax)) d[b + i] = NAN;
            else if (amax == 0.0f) d[b + i] = 0.0;
            else if (amax < 0x1p-100f) d[b + i] = nearbyint(x[b + i] * (127.0 / amax)) * (double)(float)(amax / 127.0);
            else d[b + i] = (double)nearbyintf(x[b + i] * (127.0f / amax)) * (double)(amax / 127.0f);
        }
    }
    return d;
}

/* y = x W^T for view v, against dense Wd (v->rows x v->cols). Returns failures. */
static int check_matmul(const fr_weight *v, const double *Wd, int64_t n, const char *what) {
    const int64_t R = v->rows, C = v->cols;
    float *x = rand_vec(n * C), *y = malloc((size_t)(n * R) * sizeof(float));
    if (!x || !y) {
        CHECK_MSG(0, "out of memory");
        free(x);
        free(y);
        return 1;
    }
    for (int64_t i = 0; i < n * R; i++) y[i] = NAN; /* every output must be written */
    fr_cpu_matmul(y, x, n, v);
    double *xr = read_x(v, x, n);
    if (!xr) {
        CHECK_MSG(0, "out of memory");
        free(x);
        free(y);
        return 1;
    }
    int bad = 0;
    for (int64_t t = 0; t < n && bad < 3; t++)
        for (int64_t r = 0; r < R && bad < 3; r++) {
            double ref = 0, mag = 0;
            for (int64_t c = 0; c < C; c++) {
                double p = xr[t * C + c] * Wd[r * C + c];
                ref += p;
                mag += fabs(p);
            }
            double got = y[t * R + r];
            if (!(fabs(got - ref) <= TOL * mag + 1e-30)) {
                bad++;
                CHECK_MSG(0, "matmul %s n=%lld t=%lld r=%lld: got %.9g want %.9g (mag %.3g)", what,
                          (long long)n, (long long)t, (long long)r, got, ref, mag);
            }
        }
    CHECK(bad == 0);
    free(xr);
    free(x);
    free(y);
    return bad;
}

/* y = x W for view v, against dense Wd. */
static int check_matmul_t(const fr_weight *v, const double *Wd, int64_t n, const char *what) {
    const int64_t R = v->rows, C = v->cols;
    float *x = rand_vec(n * R), *y = malloc((size_t)(n * C) * sizeof(float));
    if (!x || !y) {
        CHECK_MSG(0, "out of memory");
        free(x);
        free(y);
        return 1;
    }
    for (int64_t i = 0; i < n * C; i++) y[i] = NAN;
    fr_cpu_matmul_t(y, x, n, v);
    int bad = 0;
    for (int64_t t = 0; t < n && bad < 3; t++)
        for (int64_t c = 0; c < C && bad < 3; c++) {
            double ref = 0, mag = 0;
            for (int64_t r = 0; r < R; r++) {
                double p = (double)x[t * R + r] * Wd[r * C + c];
                ref += p;
                mag += fabs(p);
            }
            double got = y[t * C + c];
            if (!(fabs(got - ref) <= TOL * mag + 1e-30)) {
                bad++;
                CHECK_MSG(0, "matmul_t %s n=%lld t=%lld c=%lld: got %.9g want %.9g (mag %.3g)", what,
                          (long long)n, (long long)t, (long long)c, got, ref, mag);
            }
        }
    CHECK(bad == 0);
    free(x);
    free(y);
    return bad;
}

static fr_isa isas[4];
static int n_isas;

static void collect_isas(void) {
    for (int i = FR_ISA_PORTABLE; i <= FR_ISA_AVX512VNNI; i++) {
        fr_isa_set_limit((fr_isa)i);
        if (fr_isa_active() == (fr_isa)i) isas[n_isas++] = (fr_isa)i;
    }
    fr_isa_set_limit(FR_ISA_AVX512VNNI);
}

static const fr_dtype dtypes[] = {FR_DTYPE_F32, FR_DTYPE_F16, FR_DTYPE_BF16, FR_DTYPE_F8_E4M3};

/* Full views: every path, dtype, shape, token count and block grid. */
static void test_shapes(void) {
    static const int64_t shapes[][2] = {{1, 1},     {7, 5},     {24, 48}, {160, 8},
                                        {130, 257}, {576, 200}, {9, 4500}};
    static const int64_t ns[] = {1, 2, 5, 17};
    static const int32_t blocks[][2] = {{128, 128}, {16, 32}};
    int case_no = 0;
    for (size_t d = 0; d < sizeof dtypes / sizeof dtypes[0]; d++)
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
            for (size_t b = 0; b < 2; b++) {
                const fr_dtype dt = dtypes[d];
                if (b > 0 && dt != FR_DTYPE_F8_E4M3) continue; /* blocks only matter for FP8 */
                tmat m;
                double *Wd = NULL;
                if (tmat_make(&m, dt, shapes[s][0], shapes[s][1], blocks[b][0], blocks[b][1],
                              case_no++ & 1) != 0 ||
                    !(Wd = dense(&m, 0, shapes[s][0]))) {
                    CHECK_MSG(0, "out of memory");
                    tmat_free(&m);
                    continue;
                }
                for (int i = 0; i < n_isas; i++) {
                    fr_isa_set_limit(isas[i]);
                    char what[96];
                    snprintf(what, sizeof what, "%s %s %lldx%lld blk %dx%d", fr_isa_name(isas[i]),
                             fr_dtype_name(dt), (long long)shapes[s][0], (long long)shapes[s][1],
                             blocks[b][0], blocks[b][1]);
                    for (size_t j = 0; j < sizeof ns / sizeof ns[0]; j++) {
                        check_matmul(&m.w, Wd, ns[j], what);
                        check_matmul_t(&m.w, Wd, ns[j], what);
                    }
                }
                fr_isa_set_limit(FR_ISA_AVX512VNNI);
                free(Wd);
                tmat_free(&m);
            }
}

/* More tokens than one prefill token block, with rows across several panels. */
static void test_many_tokens(void) {
    for (size_t d = 0; d < sizeof dtypes / sizeof dtypes[0]; d++) {
        tmat m;
        double *Wd = NULL;
        if (tmat_make(&m, dtypes[d], 70, 300, 128, 128, 0) != 0 || !(Wd = dense(&m, 0, 70))) {
            CHECK_MSG(0, "out of memory");
            tmat_free(&m);
            continue;
        }
        for (int i = 0; i < n_isas; i++) {
            fr_isa_set_limit(isas[i]);
            char what[64];
            snprintf(what, sizeof what, "%s %s 70x300", fr_isa_name(isas[i]), fr_dtype_name(dtypes[d]));
            check_matmul(&m.w, Wd, 70, what);
        }
        fr_isa_set_limit(FR_ISA_AVX512VNNI);
        free(Wd);
        tmat_free(&m);
    }
}

/* Multiply n = 2..16, 43, 70 tokens at once on every ISA and require each token's row of
 * outputs to equal, bit for bit, the product of that token alone. */
static void check_invariant(const fr_weight *w) {
    const int64_t R = w->rows, K = w->cols;
    float *x = rand_vec(70 * K), *y = malloc((size_t)(70 * R) * sizeof *y);
    float *y1 = malloc((size_t)R * sizeof *y1);
    int bad = 0;
    for (int i = 0; i < n_isas; i++)
        for (int64_t n = 2; n <= 70 && x && y && y1; n += n < 16 ? 1 : 27) {
            fr_isa_set_limit(isas[i]);
            fr_cpu_matmul(y, x, n, w);
            for (int64_t t = 0; t < n; t++) {
                fr_cpu_matmul(y1, x + t * K, 1, w);
                bad += memcmp(y1, y + t * R, (size_t)R * sizeof *y1) != 0;
            }
        }
    fr_isa_set_limit(FR_ISA_AVX512VNNI);
    CHECK_MSG(bad == 0 && x && y && y1, "%s %lldx%lld: %d token rows differ from n=1", fr_dtype_name(w->dtype),
              (long long)R, (long long)K, bad);
    free(x), free(y), free(y1);
}

/* Batches: a token's outputs must be bit-identical whether it is multiplied alone or
 * with others (n = 2..16, 43, 70) (the multi-token matvec forms every sum as the matvec
 * does), so batching sequences never changes a sequence's numbers. */
static void test_batch_invariance(void) {
    static const int64_t shapes[][2] = {{7, 5}, {130, 257}, {33, 2048}};
    for (size_t d = 0; d < sizeof dtypes / sizeof dtypes[0]; d++)
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
            for (int b = 0; b < 2; b++) {
                if (b && dtypes[d] != FR_DTYPE_F8_E4M3) continue;
                tmat m;
                const int64_t R = shapes[s][0], K = shapes[s][1];
                if (tmat_make(&m, dtypes[d], R, K, b ? 16 : 128, b ? 32 : 128, (int)s & 1) != 0) {
                    CHECK_MSG(0, "out of memory");
                    tmat_free(&m);
                    continue;
                }
                check_invariant(&m.w);
                tmat_free(&m);
            }
}

/* The same for the 4-bit formats (defined after the q4 helpers below). */
static void test_q4_batch_invariance(void);

/* FP8 row slices starting mid-block: the scale rows must follow row0. The expected
 * values come from the full view's rows, not from the slice. */
static void test_fp8_slices(void) {
    static const int32_t blocks[][2] = {{128, 128}, {16, 32}};
    for (int b = 0; b < 2; b++) {
        tmat m;
        if (tmat_make(&m, FR_DTYPE_F8_E4M3, 300, 200, blocks[b][0], blocks[b][1], b) != 0) {
            CHECK_MSG(0, "out of memory");
            tmat_free(&m);
            continue;
        }
        static const int64_t slices[][2] = {{70, 150}, {131, 5}, {299, 1}};
        for (int s = 0; s < 3; s++) {
            const int64_t r0 = slices[s][0], len = slices[s][1];
            double *Wd = dense(&m, r0, len);
            if (!Wd) {
                CHECK_MSG(0, "out of memory");
                continue;
            }
            fr_weight v = fr_weight_rows(&m.w, r0, len);
            CHECK(v.row0 == r0);
            for (int i = 0; i < n_isas; i++) {
                fr_isa_set_limit(isas[i]);
                char what[96];
                snprintf(what, sizeof what, "%s F8 slice [%lld,+%lld) blk %dx%d", fr_isa_name(isas[i]),
                         (long long)r0, (long long)len, blocks[b][0], blocks[b][1]);
                check_matmul(&v, Wd, 1, what);
                check_matmul(&v, Wd, 3, what);
                check_matmul_t(&v, Wd, 1, what);
                check_matmul_t(&v, Wd, 2, what);
            }
            fr_isa_set_limit(FR_ISA_AVX512VNNI);
            free(Wd);
        }
        tmat_free(&m);
    }
}

/* Every finite e4m3 code converts exactly on every path: row r holds code r once
 * (32 columns, so the paired 32-byte conversion of the matvec is used), x is all
 * ones, scale 1. n = 2 goes through the prefill conversion instead. */
static void test_fp8_codes(void) {
    enum { K = 32 };
    uint8_t *data = calloc(256 * K, 1);
    float one = 1.0f, x[2 * K], y[2 * 256];
    if (!data) {
        CHECK_MSG(0, "out of memory");
        return;
    }
    for (int r = 0; r < 256; r++) data[r * K + r % K] = (r & 0x7f) == 0x7f ? 0 : (uint8_t)r;
    for (int c = 0; c < 2 * K; c++) x[c] = 1.0f;
    fr_weight w = {.dtype = FR_DTYPE_F8_E4M3,
                   .rows = 256,
                   .cols = K,
                   .data = data,
                   .scale_inv = &one,
                   .block_rows = 256,
                   .block_cols = K,
                   .scale_cols = 1};
    for (int i = 0; i < n_isas; i++) {
        fr_isa_set_limit(isas[i]);
        for (int n = 1; n <= 2; n++) {
            fr_cpu_matmul(y, x, n, &w);
            int bad = 0;
            for (int t = 0; t < n; t++)
                for (int r = 0; r < 256; r++) {
                    float want = (r & 0x7f) == 0x7f ? 0.0f : fr_e4m3_to_f32((uint8_t)r);
                    if (y[t * 256 + r] != want && bad++ < 3)
                        CHECK_MSG(0, "%s n=%d e4m3 code 0x%02x: got %g want %g", fr_isa_name(isas[i]), n, r,
                                  y[t * 256 + r], want);
                }
            CHECK(bad == 0);
        }
    }
    fr_isa_set_limit(FR_ISA_AVX512VNNI);
    free(data);
}

/* ------------------------------------------------------------------ 4-bit */

static const fr_dtype q4_dtypes[] = {FR_DTYPE_MXFP4, FR_DTYPE_INT4};

/* A 4-bit test matrix: random data bytes (every nibble is a valid code) and scales;
 * data and scales at odd addresses when misalign. MXFP4 scales are E8M0 2^-8 .. 2^4
 * with a few 2^-127 (byte 0); INT4 scales are BF16 of either sign around 2^-4. */
typedef struct {
    fr_weight w;
    uint8_t *data, *scales;
} q4mat;

static void q4_free(q4mat *m) {
    free(m->data);
    free(m->scales);
}

static int q4_make(q4mat *m, fr_dtype dt, int64_t rows, int64_t cols, int misalign) {
    memset(m, 0, sizeof *m);
    const int64_t nb = rows * (cols / 32), db = rows * cols / 2, sb = nb * (dt == FR_DTYPE_MXFP4 ? 1 : 2);
    m->data = malloc((size_t)db + 16);
    m->scales = malloc((size_t)sb + 16);
    if (!m->data || !m->scales) return -1;
    uint8_t *d = m->data + (misalign ? 1 : 0), *sc = m->scales + (misalign ? 1 : 0);
    for (int64_t i = 0; i < db; i++) d[i] = (uint8_t)rng_u32();
    for (int64_t b = 0; b < nb; b++) {
        if (dt == FR_DTYPE_MXFP4) {
            const uint32_t u = rng_u32();
            sc[b] = u % 61 == 0 ? 0 : (uint8_t)(119 + u % 13);
        } else {
            const uint16_t h = fr_f32_to_bf16(ldexpf(rng_f(), -3));
            memcpy(sc + 2 * b, &h, 2);
        }
    }
    m->w = (fr_weight){.dtype = dt, .rows = rows, .cols = cols, .data = d, .scales = sc, .group = 32};
    return 0;
}

/* Dense W_real of view rows [r0, r0 + rows) of w, in double, from the scalar definition. */
static double *q4_dense(const fr_weight *w, int64_t r0, int64_t rows) {
    const int64_t cols = w->cols;
    double *d = malloc((size_t)(rows * cols) * sizeof(double));
    if (!d) return NULL;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) d[r * cols + c] = fr_mx_weight_get(w, r0 + r, c);
    return d;
}

/* Every path, both formats, cols of 1, 2, 3, 5 and 65 blocks (chunk tails of every
 * length for both vector widths), rows not a multiple of the row group, and every
 * token count: 1 (matvec), 2..17 (prefill tiles), 70 (more than one token block). The
 * 300 x 2080 case is big enough to be split between threads. */
static void test_q4_shapes(void) {
    static const int64_t shapes[][2] = {{1, 32}, {7, 64}, {24, 96}, {130, 160}, {9, 2080}, {300, 2080}};
    static const int64_t ns[] = {1, 2, 5, 17, 70};
    int case_no = 0;
    for (size_t d = 0; d < 2; d++)
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            const fr_dtype dt = q4_dtypes[d];
            const int64_t R = shapes[s][0], C = shapes[s][1];
            q4mat m;
            double *Wd = NULL;
            if (q4_make(&m, dt, R, C, case_no++ & 1) != 0 || !(Wd = q4_dense(&m.w, 0, R))) {
                CHECK_MSG(0, "out of memory");
                q4_free(&m);
                continue;
            }
            for (int i = 0; i < n_isas; i++) {
                fr_isa_set_limit(isas[i]);
                char what[96];
                snprintf(what, sizeof what, "%s %s %lldx%lld", fr_isa_name(isas[i]), fr_dtype_name(dt),
                         (long long)R, (long long)C);
                for (size_t j = 0; j < sizeof ns / sizeof ns[0]; j++) {
                    if (R * C * ns[j] > 4000000) continue; /* the big case: n = 1, 2 only */
                    check_matmul(&m.w, Wd, ns[j], what);
                    if (ns[j] <= 5) check_matmul_t(&m.w, Wd, ns[j], what);
                }
            }
            fr_isa_set_limit(FR_ISA_AVX512VNNI);
            free(Wd);
            q4_free(&m);
        }
}

/* Row slices: fr_weight_rows offsets both data and scales; the expected values come
 * from the full view's rows. */
static void test_q4_slices(void) {
    for (size_t d = 0; d < 2; d++) {
        q4mat m;
        if (q4_make(&m, q4_dtypes[d], 300, 160, (int)d) != 0) {
            CHECK_MSG(0, "out of memory");
            q4_free(&m);
            continue;
        }
        static const int64_t slices[][2] = {{70, 150}, {131, 5}, {299, 1}};
        for (int s = 0; s < 3; s++) {
            const int64_t r0 = slices[s][0], len = slices[s][1];
            double *Wd = q4_dense(&m.w, r0, len);
            if (!Wd) {
                CHECK_MSG(0, "out of memory");
                continue;
            }
            fr_weight v = fr_weight_rows(&m.w, r0, len);
            for (int i = 0; i < n_isas; i++) {
                fr_isa_set_limit(isas[i]);
                char what[96];
                snprintf(what, sizeof what, "%s %s slice [%lld,+%lld)", fr_isa_name(isas[i]),
                         fr_dtype_name(q4_dtypes[d]), (long long)r0, (long long)len);
                check_matmul(&v, Wd, 1, what);
                check_matmul(&v, Wd, 3, what);
                check_matmul_t(&v, Wd, 1, what);
                check_matmul_t(&v, Wd, 2, what);
            }
            fr_isa_set_limit(FR_ISA_AVX512VNNI);
            free(Wd);
        }
        q4_free(&m);
    }
}

/* Every code converts exactly on every path: row r (16 rows) holds code r at column
 * 3 + 2 * r (both nibble positions over the rows) and code 0 elsewhere, scale 1, x all
 * 127, so y[r] is 127 x the code's value (INT4: code 0 is -8, so the other 63 count too). */
static void test_q4_codes(void) {
    enum { R = 16, K = 64 };
    uint8_t data[R * K / 2];
    uint8_t sc8[R * 2];
    uint16_t sc16[R * 2];
    float x[2 * K], y[2 * R], yt[K];
    for (int c = 0; c < 2 * K; c++) x[c] = 127.0f; /* the VNNI path's int8 rounding keeps 127 exact */
    for (int i = 0; i < R * 2; i++) {
        sc8[i] = 127;
        sc16[i] = 0x3F80;
    }
    memset(data, 0, sizeof data);
    for (int r = 0; r < R; r++) {
        const int c = 3 + 2 * r;
        data[r * K / 2 + c / 2] |= (uint8_t)(r << (4 * (c & 1)));
    }
    for (size_t d = 0; d < 2; d++) {
        const fr_dtype dt = q4_dtypes[d];
        fr_weight w = {.dtype = dt,
                       .rows = R,
                       .cols = K,
                       .data = data,
                       .group = 32,
                       .scales = dt == FR_DTYPE_MXFP4 ? (const void *)sc8 : (const void *)sc16};
        for (int i = 0; i < n_isas; i++) {
            fr_isa_set_limit(isas[i]);
            for (int n = 1; n <= 2; n++) {
                fr_cpu_matmul(y, x, n, &w);
                int bad = 0;
                for (int t = 0; t < n; t++)
                    for (int r = 0; r < R; r++) {
                        const float want = 127.0f * (dt == FR_DTYPE_MXFP4 ? fr_e2m1_to_f32((uint8_t)r)
                                                                          : (float)(r - 8) - 8.0f * (K - 1));
                        if (y[t * R + r] != want && bad++ < 3)
                            CHECK_MSG(0, "%s %s n=%d code %d: got %g want %g", fr_isa_name(isas[i]),
                                      fr_dtype_name(dt), n, r, y[t * R + r], want);
                    }
                CHECK(bad == 0);
            }
            /* transposed: column 3 + 2r holds code r of row r only (MXFP4) */
            if (dt == FR_DTYPE_MXFP4) {
                fr_cpu_matmul_t(yt, x, 1, &w);
                int bad = 0;
                for (int c = 0; c < K; c++) {
                    const float want =
                        c >= 3 && c < 3 + 2 * R && (c & 1) ? 127.0f * fr_e2m1_to_f32((uint8_t)((c - 3) / 2)) : 0.0f;
                    if (yt[c] != want && bad++ < 3)
                        CHECK_MSG(0, "%s matmul_t col %d: got %g want %g", fr_isa_name(isas[i]), c, yt[c],
                                  want);
                }
                CHECK(bad == 0);
            }
        }
        fr_isa_set_limit(FR_ISA_AVX512VNNI);
    }
}

/* E8M0 edge scales on every path. Byte 0 is 2^-127, an f32 subnormal (a kernel that
 * built it as 0 << 23 would return zeros): with x around 2^120 the products are normal
 * numbers and must match the reference to the usual tolerance. Byte 0xFF is NaN: the
 * rows (matmul) or columns (matmul_t) that touch such a block are NaN, the rest finite.
 * INT4 with a NaN BF16 scale likewise. */
static void test_q4_edge_scales(void) {
    enum { R = 20, K = 160 };
    for (size_t d = 0; d < 2; d++) {
        const fr_dtype dt = q4_dtypes[d];
        q4mat m;
        if (q4_make(&m, dt, R, K, 1) != 0) {
            CHECK_MSG(0, "out of memory");
            q4_free(&m);
            continue;
        }
        uint8_t *sc = (uint8_t *)(uintptr_t)m.w.scales;
        if (dt == FR_DTYPE_MXFP4) {
            memset(sc, 0, (size_t)R * (K / 32));
            double *Wd = q4_dense(&m.w, 0, R);
            float *x = rand_vec(3 * K), *y = malloc(3 * K * sizeof(float));
            if (Wd && x && y)
                for (int i = 0; i < n_isas; i++) {
                    fr_isa_set_limit(isas[i]);
                    char what[64];
                    snprintf(what, sizeof what, "%s MXFP4 scale 2^-127", fr_isa_name(isas[i]));
                    for (int n = 1; n <= 3; n += 2) {
                        for (int64_t j = 0; j < n * K; j++) x[j] = ldexpf(rng_f(), 120);
                        fr_cpu_matmul(y, x, n, &m.w);
                        double *xr = read_x(&m.w, x, n);
                        int bad = 0;
                        for (int t = 0; t < n && xr; t++)
                            for (int r = 0; r < R; r++) {
                                double ref = 0, mag = 0; /* about 2^-7: no range trouble in double */
                                for (int c = 0; c < K; c++) {
                                    const double p = xr[t * K + c] * Wd[r * K + c];
                                    ref += p;
                                    mag += fabs(p);
                                }
                                const double got = (double)y[t * R + r];
                                if (!(fabs(got - ref) <= TOL * mag) || mag == 0) bad++;
                            }
                        CHECK_MSG(bad == 0 && xr, "%s n=%d: %d rows off", what, n, bad);
                        free(xr);
                        fr_cpu_matmul_t(y, x, n, &m.w); /* x as [n, R] here */
                        bad = 0;
                        for (int t = 0; t < n; t++)
                            for (int c = 0; c < K; c++) {
                                double ref = 0, mag = 0;
                                for (int r = 0; r < R; r++) {
                                    const double p = (double)x[t * R + r] * Wd[r * K + c];
                                    ref += p;
                                    mag += fabs(p);
                                }
                                if (!(fabs((double)y[t * K + c] - ref) <= TOL * mag) || mag == 0) bad++;
                            }
                        CHECK_MSG(bad == 0, "%s n=%d matmul_t: %d columns off", what, n, bad);
                    }
                }
            fr_isa_set_limit(FR_ISA_AVX512VNNI);
            free(Wd);
            free(x);
            free(y);
            memset(sc, 127, (size_t)R * (K / 32));
            sc[5 * (K / 32) + 2] = 0xFF; /* row 5, columns 64..95 */
        } else {
            const uint16_t nan16 = 0x7FC0;
            memcpy(sc + 2 * (5 * (K / 32) + 2), &nan16, 2);
        }
        float x[2 * R * K], y[2 * K];
        for (int j = 0; j < 2 * R * K; j++) x[j] = rng_f();
        for (int i = 0; i < n_isas; i++) {
            fr_isa_set_limit(isas[i]);
            for (int n = 1; n <= 2; n++) {
                fr_cpu_matmul(y, x, n, &m.w);
                int bad = 0;
                for (int t = 0; t < n; t++)
                    for (int r = 0; r < R; r++) bad += (r == 5) != (isnan(y[t * R + r]) != 0);
                CHECK_MSG(bad == 0, "%s %s n=%d NaN scale: %d rows wrong", fr_isa_name(isas[i]),
                          fr_dtype_name(dt), n, bad);
                fr_cpu_matmul_t(y, x, n, &m.w);
                bad = 0;
                for (int t = 0; t < n; t++)
                    for (int c = 0; c < K; c++) bad += (c >= 64 && c < 96) != (isnan(y[t * K + c]) != 0);
                CHECK_MSG(bad == 0, "%s %s n=%d NaN scale (t): %d columns wrong", fr_isa_name(isas[i]),
                          fr_dtype_name(dt), n, bad);
            }
        }
        fr_isa_set_limit(FR_ISA_AVX512VNNI);
        q4_free(&m);
    }
}

/* Activations at the edges of the VNNI path's int8 rounding, on every path (the others
 * read x as it is, and read_x says so): token 0 mixes an exact-ties block (amax 127, so
 * x * 127 / amax = x: 0.5, 1.5, -2.5 round to even), an all-zero block, a block of one
 * nonzero, magnitudes from 2^-30 to 2^30; token 1 is all tiny (amax < 2^-100, the double
 * branch); token 2 holds +Inf and token 3 NaN in one block: every output non-finite
 * (on the VNNI path NaN, the block's scale). */
static void test_q8_activations(void) {
    enum { R = 9, K = 256, N = 4 };
    for (size_t d = 0; d < 2; d++) {
        q4mat m;
        if (q4_make(&m, q4_dtypes[d], R, K, 0) != 0) {
            CHECK_MSG(0, "out of memory");
            q4_free(&m);
            continue;
        }
        double *Wd = q4_dense(&m.w, 0, R);
        float x[N * K], y[N * R];
        for (int c = 0; c < K; c++) {
            const int b = c / 32, i = c % 32;
            float v = rng_f();
            if (b == 0) v = i == 0 ? 127.0f : (float)((i % 7) - 3) + 0.5f; /* -2.5 .. 3.5 and 127 */
            if (b == 1) v = 0.0f;
            if (b == 2) v = i == 5 ? -3.0f : 0.0f;
            if (b >= 3) v = ldexpf(v, 10 * (b - 5)); /* 2^-20 .. 2^20 */
            x[c] = v;
            x[K + c] = ldexpf(rng_f(), -101 - (b & 3));
            x[2 * K + c] = x[3 * K + c] = rng_f();
        }
        x[2 * K + 100] = INFINITY;
        x[3 * K + 7] = NAN;
        for (int i = 0; i < n_isas && Wd; i++) {
            fr_isa_set_limit(isas[i]);
            fr_cpu_matmul(y, x, N, &m.w);
            double *xr = read_x(&m.w, x, N);
            int bad = 0;
            for (int t = 0; t < 2 && xr; t++)
                for (int r = 0; r < R; r++) {
                    double ref = 0, mag = 0;
                    for (int c = 0; c < K; c++) {
                        ref += xr[t * K + c] * Wd[r * K + c];
                        mag += fabs(xr[t * K + c] * Wd[r * K + c]);
                    }
                    if (!(fabs((double)y[t * R + r] - ref) <= TOL * mag + 1e-300) && bad++ < 3)
                        CHECK_MSG(0, "%s %s token %d row %d: got %.9g want %.9g", fr_isa_name(isas[i]),
                                  fr_dtype_name(q4_dtypes[d]), t, r, y[t * R + r], ref);
                }
            for (int t = 2; t < N; t++)
                for (int r = 0; r < R; r++) {
                    const float v = y[t * R + r];
                    const bool ok = isas[i] == FR_ISA_AVX512VNNI ? isnan(v) : !isfinite(v);
                    if (!ok && bad++ < 3)
                        CHECK_MSG(0, "%s %s token %d row %d: got %g, want non-finite", fr_isa_name(isas[i]),
                                  fr_dtype_name(q4_dtypes[d]), t, r, v);
                }
            CHECK(bad == 0 && xr);
            free(xr);
        }
        fr_isa_set_limit(FR_ISA_AVX512VNNI);
        free(Wd);
        q4_free(&m);
    }
}

/* `bytes` of read-write memory that end exactly where an inaccessible page begins, so
 * any read past the end faults (the sanitizers do not see vector loads). Returns NULL
 * on failure; *base / *len are for munmap. */
static uint8_t *guarded(size_t bytes, void **base, size_t *len) {
    const size_t pg = (size_t)sysconf(_SC_PAGESIZE), np = (bytes + pg - 1) / pg + 1;
    uint8_t *m = mmap(NULL, np * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return NULL;
    if (mprotect(m + (np - 1) * pg, pg, PROT_NONE) != 0) {
        munmap(m, np * pg);
        return NULL;
    }
    *base = m;
    *len = np * pg;
    return m + (np - 1) * pg - bytes;
}

/* The last row's data and the last scale end at a guard page: the kernels' tails
 * (masked loads, partial chunks, scale vectors) must not read a byte further. */
static void test_q4_bounds(void) {
    static const int64_t shapes[][2] = {{1, 32}, {3, 96}, {9, 160}, {5, 64}};
    for (size_t d = 0; d < 2; d++)
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            const fr_dtype dt = q4_dtypes[d];
            const int64_t R = shapes[s][0], C = shapes[s][1];
            q4mat m;
            void *b1 = NULL, *b2 = NULL;
            size_t l1 = 0, l2 = 0;
            if (q4_make(&m, dt, R, C, 0) != 0) {
                CHECK_MSG(0, "out of memory");
                q4_free(&m);
                continue;
            }
            const size_t db = (size_t)(R * C / 2), sb = (size_t)(R * C / 32) * (dt == FR_DTYPE_MXFP4 ? 1 : 2);
            uint8_t *gd = guarded(db, &b1, &l1), *gs = guarded(sb, &b2, &l2);
            double *Wd = q4_dense(&m.w, 0, R);
            if (gd && gs && Wd) {
                memcpy(gd, m.w.data, db);
                memcpy(gs, m.w.scales, sb);
                fr_weight w = m.w;
                w.data = gd;
                w.scales = gs;
                for (int i = 0; i < n_isas; i++) {
                    fr_isa_set_limit(isas[i]);
                    char what[96];
                    snprintf(what, sizeof what, "%s %s %lldx%lld at a guard page", fr_isa_name(isas[i]),
                             fr_dtype_name(dt), (long long)R, (long long)C);
                    check_matmul(&w, Wd, 1, what);
                    check_matmul(&w, Wd, 2, what);
                    check_matmul_t(&w, Wd, 1, what);
                    fr_weight last = fr_weight_rows(&w, R - 1, 1);
                    check_matmul(&last, Wd + (R - 1) * C, 1, what);
                }
                fr_isa_set_limit(FR_ISA_AVX512VNNI);
            } else {
                CHECK_MSG(0, "guard pages / memory unavailable");
            }
            if (b1) munmap(b1, l1);
            if (b2) munmap(b2, l2);
            free(Wd);
            q4_free(&m);
        }
}

/* Views the kernels cannot read give zeros (never a crash, never a read past the
 * data): cols not a multiple of 32, a group other than 32, no scales. */
static void test_q4_rejects(void) {
    uint8_t data[4 * 48] = {0x77};
    uint8_t sc[16] = {127, 127, 127, 127, 127, 127, 127, 127};
    float x[2 * 96], y[2 * 96];
    for (int i = 0; i < 2 * 96; i++) x[i] = 1.0f;
    for (size_t d = 0; d < 2; d++) {
        const fr_weight good = {
            .dtype = q4_dtypes[d], .rows = 2, .cols = 64, .data = data, .scales = sc, .group = 32};
        fr_weight bad[3] = {good, good, good};
        bad[0].cols = 48;
        bad[1].group = 16;
        bad[2].scales = NULL;
        for (int b = 0; b < 3; b++)
            for (int n = 1; n <= 2; n++) {
                for (int i = 0; i < 2 * 96; i++) y[i] = NAN;
                fr_cpu_matmul(y, x, n, &bad[b]);
                int nz = 0;
                for (int i = 0; i < n * 2; i++) nz += y[i] != 0.0f;
                CHECK_MSG(nz == 0, "%s reject case %d n=%d", fr_dtype_name(q4_dtypes[d]), b, n);
                for (int i = 0; i < 2 * 96; i++) y[i] = NAN;
                fr_cpu_matmul_t(y, x, n, &bad[b]);
                nz = 0;
                for (int i = 0; i < n * bad[b].cols; i++) nz += y[i] != 0.0f;
                CHECK_MSG(nz == 0, "%s reject case %d n=%d (t)", fr_dtype_name(q4_dtypes[d]), b, n);
            }
    }
}

static void test_isa(void) {
    CHECK(n_isas >= 1 && isas[0] == FR_ISA_PORTABLE);
    CHECK(strcmp(fr_isa_name(FR_ISA_PORTABLE), "portable") == 0);
    CHECK(strcmp(fr_isa_name(FR_ISA_AVX2), "avx2") == 0);
    CHECK(strcmp(fr_isa_name(FR_ISA_AVX512), "avx512") == 0);
    fr_isa_set_limit(FR_ISA_PORTABLE);
    CHECK(fr_isa_active() == FR_ISA_PORTABLE);
    fr_isa_set_limit(FR_ISA_AVX512VNNI);
    CHECK(fr_isa_active() == isas[n_isas - 1]);
    printf("matmul: paths tested:");
    for (int i = 0; i < n_isas; i++) printf(" %s", fr_isa_name(isas[i]));
    printf("\n");
}

static void test_bandwidth(void) {
    double bw = fr_cpu_read_bandwidth(4u << 20, 2);
    CHECK_MSG(bw > 0 && isfinite(bw), "bandwidth %g", bw);
    bw = fr_cpu_read_bandwidth(100, 1); /* smaller than one cache line */
    CHECK_MSG(bw > 0 && isfinite(bw), "bandwidth %g", bw);
}

static void test_q4_batch_invariance(void) {
    static const int64_t shapes[][2] = {{7, 64}, {130, 256}, {33, 2048}};
    for (size_t d = 0; d < 2; d++)
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            q4mat m;
            const int64_t R = shapes[s][0], K = shapes[s][1];
            if (q4_make(&m, q4_dtypes[d], R, K, (int)s & 1) != 0) {
                CHECK_MSG(0, "out of memory");
                q4_free(&m);
                continue;
            }
            check_invariant(&m.w);
            q4_free(&m);
        }
}

/* A group of 21 products: every format, 1, 3 and 17 tokens, inputs shared by several
 * items (as gate and up share one), an unreadable view (MXFP4 without scales: zeros) and
 * an empty one, each output compared bit for bit with the product alone, on every ISA
 * and with 1, 2, 3 and 7 threads (uneven cuts of the rows between threads). */
static void test_group(void) {
    enum { NM = 6, NI = 21 };
    static const int64_t n_of[] = {1, 1, 3, 17, 1, 3, 1};
    tmat dm[4];
    q4mat qm[2];
    const fr_weight *ws[NM];
    int ok = 1;
    for (int d = 0; d < 4; d++) ok &= tmat_make(&dm[d], dtypes[d], 136 + 8 * d, 544, 128, 128, d & 1) == 0;
    for (int d = 0; d < 2; d++) ok &= q4_make(&qm[d], q4_dtypes[d], 300 + d, 544, d) == 0;
    for (int d = 0; d < 4; d++) ws[d] = &dm[d].w;
    for (int d = 0; d < 2; d++) ws[4 + d] = &qm[d].w;
    fr_weight noscale = qm[0].w, empty = dm[2].w;
    noscale.scales = NULL;
    empty.rows = 0;
    float *xs[3] = {rand_vec(17 * 544), rand_vec(17 * 544), rand_vec(17 * 544)};
    fr_matmul_item items[NI];
    float *ys[NI], *ref[NI];
    for (int i = 0; i < NI; i++) {
        const fr_weight *w = i == NI - 2 ? &noscale : i == NI - 1 ? &empty : ws[i % NM];
        const int64_t n = n_of[i % 7], R = w->rows > 0 ? w->rows : 1;
        ys[i] = malloc((size_t)(n * R) * sizeof(float));
        ref[i] = malloc((size_t)(n * R) * sizeof(float));
        ok &= ys[i] && ref[i];
        items[i] = (fr_matmul_item){ys[i], xs[i % 3], n, w};
    }
    ok &= xs[0] && xs[1] && xs[2];
    int bad = 0;
    const int threads0 = omp_get_max_threads();
    static const int threads[] = {1, 2, 3, 7};
    for (int i = 0; i < n_isas && ok; i++)
        for (int t = 0; t < 4; t++) {
            fr_isa_set_limit(isas[i]);
            omp_set_num_threads(threads[t]);
            for (int j = 0; j < NI; j++) {
                const int64_t len = items[j].n * (items[j].w->rows > 0 ? items[j].w->rows : 1);
                for (int64_t e = 0; e < len; e++) ys[j][e] = ref[j][e] = NAN;
                fr_cpu_matmul(ref[j], items[j].x, items[j].n, items[j].w);
            }
            fr_cpu_matmul_group(items, NI);
            for (int j = 0; j < NI; j++) {
                const int64_t len = items[j].n * (items[j].w->rows > 0 ? items[j].w->rows : 1);
                bad += memcmp(ys[j], ref[j], (size_t)len * sizeof(float)) != 0;
            }
            bad += ys[NI - 2][0] != 0.0f; /* the unreadable view gives zeros */
        }
    omp_set_num_threads(threads0);
    fr_isa_set_limit(FR_ISA_AVX512VNNI);
    CHECK_MSG(ok && bad == 0, "group products: %d outputs differ from the products alone", bad);
    for (int i = 0; i < NI; i++) free(ys[i]), free(ref[i]);
    for (int i = 0; i < 3; i++) free(xs[i]);
    for (int d = 0; d < 4; d++) tmat_free(&dm[d]);
    for (int d = 0; d < 2; d++) q4_free(&qm[d]);
}

int main(void) {
    collect_isas();
    test_isa();
    test_fp8_codes();
    test_shapes();
    test_many_tokens();
    test_batch_invariance();
    test_fp8_slices();
    test_q4_codes();
    test_q4_edge_scales();
    test_q8_activations();
    test_q4_rejects();
    test_q4_bounds();
    test_q4_shapes();
    test_q4_batch_invariance();
    test_q4_slices();
    test_group();
    test_bandwidth();
    return check_report("matmul");
}
