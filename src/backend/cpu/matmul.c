/* matmul.c - CPU matrix products over weights in their stored format (see matmul.h).
 *
 * Decode is a chain of matrix-vector products over weights far larger than any
 * cache, so the n = 1 path is written to stream each weight byte exactly once at
 * the memory-bandwidth limit: rows are split over OpenMP threads in one contiguous
 * run per thread; each thread walks eight rows at a time (four with AVX2) - one
 * memory stream and accumulator set per row, one load of x shared by all, and a
 * software prefetch a few lines ahead in every stream - and the stored dtype is
 * widened to f32 in registers: BF16 by a 16-bit shift, F16 by vcvtph2ps, FP8-E4M3
 * by re-biasing the byte into an IEEE half and vcvtph2ps, and the 4-bit formats
 * (MXFP4, INT4: core/mx.h) by a permute through a 16-entry table of their values.
 * Activations stay f32, except where the CPU has AVX-512 VNNI: its 4-bit products round
 * x to int8 per block and sum exact integers (the VNNI section below). FP8 rows accumulate each block_cols-wide segment on its own
 * and fold in that block's scale when the segment ends; 4-bit rows do the same per
 * 32-element group, four groups to a vector of partial sums, against an x that is
 * rearranged once per product to match the nibble order the kernel extracts (see
 * q4_prep_x). Several tokens (decode batches and prefill) go through the same
 * kernels widened to 2 rows x 3 tokens per register tile, rows in 16-row blocks so a
 * block's weights come from memory once and from cache for the later token groups;
 * each (token, row) sum is formed in exactly the single-token order, so results do not
 * depend on batching. The transposed product keeps a strip
 * of output columns in registers while the rows stream past. Every kernel exists
 * three times - AVX-512 (F/BW/VL; the 4-bit ones a fourth time with VNNI+VBMI),
 * AVX2+FMA+F16C and portable C - chosen per call
 * from fr_isa_active(); the x86 variants carry per-function target attributes so
 * the library itself builds for baseline x86-64, and elsewhere only the portable
 * path is compiled. */
#include "matmul.h"

#include "../../core/bigmem.h"
#include "../../core/mx.h"

#include <math.h>
#include <omp.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if defined(__x86_64__)
#include <immintrin.h>
#define FR_X86 1
#define T512 __attribute__((target("avx512f,avx512bw,avx512vl,fma,f16c")))
#define T256 __attribute__((target("avx2,fma,f16c")))
#define T512V __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,fma,f16c")))
#endif

#if defined(__GNUC__)
#define AI inline __attribute__((always_inline))
#else
#define AI inline
#endif

/* Rows per matvec group. Each row is its own memory stream with its own
 * accumulators, and the group shares every load of x. With AVX-512 eight rows
 * measured best (FP8 ~5% faster than four, and more streams read DRAM faster than
 * one; twelve rows spill registers); AVX2 has 16 vector registers, which four
 * rows fill. See prefetch_rows for the software prefetch. */
#define MV_ROWS_512 8
#define MV_ROWS_256 4
/* Rows are split between threads in multiples of this. */
#define MV_SPLIT 8
/* Below this many weight elements an OpenMP fork/join costs more than it saves:
 * on the 2-core target a 128x512 BF16 product takes ~2 us either way, 256x512
 * gains ~20% from the second thread. */
#define PAR_MIN_ELEMS 65536
/* matmul_t: output columns per work item. */
#define T_CW 256

/* ------------------------------------------------------------------ ISA choice */

static _Atomic int isa_detected = -1;
static _Atomic int isa_limit = FR_ISA_AVX512VNNI;

#if defined(FR_X86) && defined(__clang__)
#include <cpuid.h>
/* clang's __builtin_cpu_supports does not know "f16c"; ask cpuid (leaf 1, ECX). */
static int has_f16c(void) {
    unsigned a, b, c, d;
    return __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
}
#elif defined(FR_X86)
static int has_f16c(void) { return __builtin_cpu_supports("f16c"); }
#endif

static int isa_detect(void) {
    int best = FR_ISA_PORTABLE;
#if defined(FR_X86)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && has_f16c()) {
        best = FR_ISA_AVX2;
        if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
            __builtin_cpu_supports("avx512vl")) {
            best = FR_ISA_AVX512;
            if (__builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vbmi"))
                best = FR_ISA_AVX512VNNI;
        }
    }
#endif
    /* FR_ISA only ever lowers the choice: asking for a path the CPU lacks would crash. */
    const char *e = getenv("FR_ISA");
    if (e) {
        int want = -1;
        if (strcmp(e, "portable") == 0) want = FR_ISA_PORTABLE;
        else if (strcmp(e, "avx2") == 0) want = FR_ISA_AVX2;
        else if (strcmp(e, "avx512") == 0) want = FR_ISA_AVX512;
        else if (strcmp(e, "avx512vnni") == 0) want = FR_ISA_AVX512VNNI;
        if (want >= 0 && want < best) best = want;
    }
    return best;
}

fr_isa fr_isa_active(void) {
    int d = atomic_load_explicit(&isa_detected, memory_order_relaxed);
    if (d < 0) { /* racing first callers compute the same value; no lock needed */
        d = isa_detect();
        atomic_store_explicit(&isa_detected, d, memory_order_relaxed);
    }
    int l = atomic_load_explicit(&isa_limit, memory_order_relaxed);
    return (fr_isa)(d < l ? d : l);
}

void fr_isa_set_limit(fr_isa limit) {
    int l = (int)limit;
    if (l < FR_ISA_PORTABLE) l = FR_ISA_PORTABLE;
    if (l > FR_ISA_AVX512VNNI) l = FR_ISA_AVX512VNNI;
    atomic_store_explicit(&isa_limit, l, memory_order_relaxed);
}

const char *fr_isa_name(fr_isa isa) {
    switch (isa) {
    case FR_ISA_PORTABLE: return "portable";
    case FR_ISA_AVX2: return "avx2";
    case FR_ISA_AVX512: return "avx512";
    case FR_ISA_AVX512VNNI: return "avx512vnni";
    }
    return "?";
}

/* ------------------------------------------------------------ shared helpers */

static AI size_t esize(fr_dtype dt) { return dt == FR_DTYPE_F32 ? 4 : dt == FR_DTYPE_F8_E4M3 ? 1 : 2; }

static AI const uint8_t *row_ptr(const fr_weight *w, int64_t r) {
    return (const uint8_t *)w->data + (size_t)r * (size_t)w->cols * esize(w->dtype);
}

/* The scale row of view row r (FP8 only). */
static AI const float *scale_row(const fr_weight *w, int64_t r) {
    return w->scale_inv + ((w->row0 + r) / w->block_rows) * w->scale_cols;
}

/* Width of the K segments that share one scale: the FP8 block, or the whole row. */
static AI int64_t seg_len(const fr_weight *w) {
    return w->dtype == FR_DTYPE_F8_E4M3 ? w->block_cols : w->cols;
}

static AI int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* Scalar element of a row (portable path and AVX2 tails); memcpy keeps unaligned
 * mmap data free of alignment UB. FP8 comes back unscaled. */
static AI float elem(fr_dtype dt, const uint8_t *p, int64_t i) {
    switch (dt) {
    case FR_DTYPE_F32: {
        float f;
        memcpy(&f, p + 4 * i, 4);
        return f;
    }
    case FR_DTYPE_F16: {
        uint16_t h;
        memcpy(&h, p + 2 * i, 2);
        return fr_f16_to_f32(h);
    }
    case FR_DTYPE_BF16: {
        uint16_t h;
        memcpy(&h, p + 2 * i, 2);
        return fr_bf16_to_f32(h);
    }
    default: return fr_e4m3_to_f32(p[i]);
    }
}

/* ------------------------------------------------------ 4-bit formats (shared) */

/* MXFP4 and INT4 (core/mx.h) have the same row layout in memory: cols / 2 bytes,
 * element 2j in the low nibble of byte j (INT4's little-endian words hold nibble k at
 * bits 4k), plus one scale per 32 elements. So every kernel below reads both; only
 * the nibble -> value table and the scale decoding differ. cols is a multiple of 32
 * (normalize() rejects other views), so rows hold whole 16-byte blocks. */
static AI bool is_q4(fr_dtype dt) { return dt == FR_DTYPE_MXFP4 || dt == FR_DTYPE_INT4; }

static AI const uint8_t *q4_row(const fr_weight *w, int64_t r) {
    return (const uint8_t *)w->data + (size_t)r * (size_t)(w->cols / 2);
}

/* Scale row of view row r (fr_weight_rows has already offset `scales`). */
static AI const uint8_t *q4_srow(fr_dtype dt, const fr_weight *w, int64_t r) {
    return (const uint8_t *)w->scales + (size_t)r * (size_t)(w->cols / 32) * (dt == FR_DTYPE_MXFP4 ? 1 : 2);
}

/* Scale of block b of a scale row, exact (E8M0 0 is 2^-127, 0xFF NaN; BF16 widened). */
static AI float q4_scale(fr_dtype dt, const uint8_t *srow, int64_t b) {
    if (dt == FR_DTYPE_MXFP4) return fr_e8m0_to_f32(srow[b]);
    uint16_t h;
    memcpy(&h, srow + 2 * b, 2);
    return fr_bf16_to_f32(h);
}

/* Nibble -> value: E2M1 for MXFP4 (fr_e2m1_table), u - 8 for INT4. */
static const float q4_lut_int4[16] = {-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7};
static AI const float *q4_lut(fr_dtype dt) { return dt == FR_DTYPE_MXFP4 ? fr_e2m1_table : q4_lut_int4; }

/* Element c of a row, unscaled. */
static AI float q4_elem(const float *lut, const uint8_t *row, int64_t c) {
    return lut[(row[c / 2] >> (4 * (c & 1))) & 15];
}

/* The n = 1 kernels read a 32-bit word of weights (8 nibbles, elements 8d .. 8d+7 of a
 * chunk) into lane d and extract nibble k of every lane with one shift, so vector k of
 * a chunk holds elements 8d + k. Rather than interleave eight such vectors back into
 * element order for every row, x is rearranged once per product to match: in each
 * chunk of 8 * L elements (L lanes per vector), xp[k * L + d] = x[8d + k]. The rows are
 * zero-padded to whole chunks (q4_prep_len floats, 64-byte aligned) so the kernels never
 * test for a short chunk of x. */
/* Floats q4_prep_x writes for a row of K inputs: whole chunks of 8 x L. */
static int64_t q4_prep_len(int64_t K, int L) { return (K + 8 * (int64_t)L - 1) / (8 * (int64_t)L) * (8 * (int64_t)L); }

static void q4_prep_x(const float *x, int64_t K, int L, float *xp) {
    const int64_t ch = 8 * (int64_t)L, nch = (K + ch - 1) / ch;
    for (int64_t j = 0; j < nch; j++)
        for (int k = 0; k < 8; k++)
            for (int d = 0; d < L; d++) {
                const int64_t c = j * ch + 8 * d + k;
                xp[j * ch + k * L + d] = c < K ? x[c] : 0.0f;
            }
}


/* ===================================================================== AVX-512 */
#if defined(FR_X86)

/* 16 weights at element i as f32. FP8 comes back as e4m3 / 256: sign-extending the
 * byte to 16 bits and shifting left by 7 puts exponent and mantissa exactly where a
 * half keeps them (bias 15 instead of 7, hence the 2^-8) and duplicates the sign
 * into bits 14 and 15; masking bit 14 leaves the half, exact for every finite e4m3
 * value including subnormals. The caller folds the 256 into the block scale. */
static AI T512 __m512 ld512(fr_dtype dt, const uint8_t *p, int64_t i) {
    switch (dt) {
    case FR_DTYPE_F32: return _mm512_loadu_ps(p + 4 * i);
    case FR_DTYPE_F16: return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p + 2 * i)));
    case FR_DTYPE_BF16:
        return _mm512_castsi512_ps(
            _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(p + 2 * i))), 16));
    default: {
        __m256i h = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(p + i)));
        h = _mm256_and_si256(_mm256_slli_epi16(h, 7), _mm256_set1_epi16((short)0xBF80));
        return _mm512_cvtph_ps(h);
    }
    }
}

/* The same for the lanes in m only; masked-off bytes are not touched (no fault past
 * the end of the matrix) and read as zero. */
static AI T512 __m512 ld512m(fr_dtype dt, const uint8_t *p, int64_t i, __mmask16 m) {
    switch (dt) {
    case FR_DTYPE_F32: return _mm512_maskz_loadu_ps(m, p + 4 * i);
    case FR_DTYPE_F16: return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p + 2 * i));
    case FR_DTYPE_BF16:
        return _mm512_castsi512_ps(
            _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p + 2 * i)), 16));
    default: {
        __m256i h = _mm256_cvtepi8_epi16(_mm_maskz_loadu_epi8(m, p + i));
        h = _mm256_and_si256(_mm256_slli_epi16(h, 7), _mm256_set1_epi16((short)0xBF80));
        return _mm512_cvtph_ps(h);
    }
    }
}

/* 32 FP8 weights at p as two f32 vectors (e4m3 / 256): the same re-biasing done on
 * 32 lanes at once costs 5 rather than 6 port-0/5 uops per 16 weights, which
 * matters because FP8 is the one format whose widening nears the memory time. */
static AI T512 void ld512_f8x2(const uint8_t *p, __m512 *lo, __m512 *hi) {
    __m512i h = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)p));
    h = _mm512_and_si512(_mm512_slli_epi16(h, 7), _mm512_set1_epi16((short)0xBF80));
    *lo = _mm512_cvtph_ps(_mm512_castsi512_si256(h));
    *hi = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(h, 1));
}

static AI T512 __mmask16 mask16(int64_t count) { return (__mmask16)((1u << count) - 1u); }

/* Software prefetch, PF_AHEAD bytes ahead in each of the R row streams, one per
 * cache line: it brings ~10% on top of the hardware prefetchers, which restart at
 * every 4 KiB page of every stream (measured on the 2-core Sapphire Rapids target:
 * BF16 28.5 -> 32 GB/s; 256 bytes ahead is too close, 768 too far). Called once
 * per `step` columns; when a row advances less than a line per call, only the
 * calls that start a new line prefetch. */
#define PF_AHEAD 512
/* The address to prefetch `ahead` bytes into a row of `len` bytes that a group of R
 * rows reads side by side. Past the row's end it is the same place in the row R rows
 * down, which the next group reads: rows are short (1 KiB for an MXFP4 expert's 2048
 * inputs, 4 KiB for BF16), and without this every group would start on cold lines
 * (measured on MoE-shaped 4-bit products: 46 -> 55% of read bandwidth). */
static AI const uint8_t *row_ahead(const uint8_t *row, int64_t ahead, int64_t len, int R) {
    return ahead < len ? row + ahead : row + (R - 1) * len + ahead;
}

static AI void prefetch_rows(const uint8_t *const *wp, int R, int64_t c, size_t es, int step, int64_t len) {
    const size_t bytes = (size_t)step * es;
    if (bytes < 64 && ((size_t)c * es) % 64 >= bytes) return;
#pragma GCC unroll 8
    for (int i = 0; i < R; i++)
#pragma GCC unroll 2
        for (size_t l = 0; l < (bytes + 63) / 64; l++)
            __builtin_prefetch(row_ahead(wp[i], (int64_t)((size_t)c * es + PF_AHEAD + 64 * l), len, R), 0, 3);
}

/* y[r0 .. r0+R) for R (a constant after inlining) consecutive rows. FP8 weights
 * come out of the loaders as e4m3 / 256; the 256 is applied once per row at the
 * end, so folding a segment in costs one FMA with a broadcast load of its scale. */
static AI T512 void mv_group512(fr_dtype dt, int R, const fr_weight *w, const float *x, float *y,
                                int64_t r0) {
    const bool f8 = dt == FR_DTYPE_F8_E4M3;
    const int64_t K = w->cols, seg = seg_len(w);
    const uint8_t *wp[MV_ROWS_512];
    const float *sp[MV_ROWS_512] = {0};
    __m512 tot[MV_ROWS_512];
#pragma GCC unroll 8
    for (int i = 0; i < R; i++) {
        wp[i] = row_ptr(w, r0 + i);
        if (f8) sp[i] = scale_row(w, r0 + i);
        tot[i] = _mm512_setzero_ps();
    }
    for (int64_t c0 = 0, cb = 0; c0 < K; c0 += seg, cb++) {
        const int64_t c1 = min64(c0 + seg, K);
        /* Independent FMA chains hide the FMA latency: eight rows give enough for
         * FP8, whose widening takes most of the time; the cheaper formats keep a
         * second set (b) so that one to four rows still run at full rate. */
        __m512 a[MV_ROWS_512], b[MV_ROWS_512];
#pragma GCC unroll 8
        for (int i = 0; i < R; i++) a[i] = b[i] = _mm512_setzero_ps();
        int64_t c = c0;
        for (; c + 32 <= c1; c += 32) {
            const __m512 x0 = _mm512_loadu_ps(x + c), x1 = _mm512_loadu_ps(x + c + 16);
            if (R > 1) prefetch_rows(wp, R, c, esize(dt), 32, K * (int64_t)esize(dt));
#pragma GCC unroll 8
            for (int i = 0; i < R; i++) {
                if (f8) {
                    __m512 lo, hi;
                    ld512_f8x2(wp[i] + c, &lo, &hi);
                    a[i] = _mm512_fmadd_ps(hi, x1, _mm512_fmadd_ps(lo, x0, a[i]));
                } else {
                    a[i] = _mm512_fmadd_ps(ld512(dt, wp[i], c), x0, a[i]);
                    b[i] = _mm512_fmadd_ps(ld512(dt, wp[i], c + 16), x1, b[i]);
                }
            }
        }
        if (c + 16 <= c1) {
            const __m512 x0 = _mm512_loadu_ps(x + c);
#pragma GCC unroll 8
            for (int i = 0; i < R; i++) a[i] = _mm512_fmadd_ps(ld512(dt, wp[i], c), x0, a[i]);
            c += 16;
        }
        if (c < c1) {
            const __mmask16 m = mask16(c1 - c);
            const __m512 x0 = _mm512_maskz_loadu_ps(m, x + c);
#pragma GCC unroll 8
            for (int i = 0; i < R; i++) {
                if (f8) a[i] = _mm512_fmadd_ps(ld512m(dt, wp[i], c, m), x0, a[i]);
                else b[i] = _mm512_fmadd_ps(ld512m(dt, wp[i], c, m), x0, b[i]);
            }
        }
#pragma GCC unroll 8
        for (int i = 0; i < R; i++) {
            if (f8) tot[i] = _mm512_fmadd_ps(a[i], _mm512_set1_ps(sp[i][cb]), tot[i]);
            else tot[i] = _mm512_add_ps(tot[i], _mm512_add_ps(a[i], b[i]));
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < R; i++) y[r0 + i] = _mm512_reduce_add_ps(tot[i]) * (f8 ? 256.0f : 1.0f);
}

/* The AVX-512 matvecs' walk over rows [r, r_end): groups of MV_ROWS_512, then of 4, then
 * single rows; GROUP(R) runs the group of R rows at r. */
#define MV_ROW_GROUPS_512(GROUP)                                                   \
    do {                                                                           \
        for (; r + MV_ROWS_512 <= r_end; r += MV_ROWS_512) GROUP(MV_ROWS_512);     \
        for (; r + 4 <= r_end; r += 4) GROUP(4);                                   \
        for (; r < r_end; r++) GROUP(1);                                           \
    } while (0)

static AI T512 void mv_range512_dt(fr_dtype dt, const fr_weight *w, const float *x, float *y, int64_t r,
                                   int64_t r_end) {
#define MV_GROUP(R) mv_group512(dt, R, w, x, y, r)
    MV_ROW_GROUPS_512(MV_GROUP);
#undef MV_GROUP
}

/* A few tokens against the same rows: R <= 2 rows x NT <= 3 tokens (constants after inlining),
 * each weight vector loaded and widened once for all NT tokens. Every (token, row)
 * sum is formed in exactly mv_group512's order (the same chains a and b, the same
 * segment totals, the same final reduction), so a token's outputs are bit-identical
 * whether it runs alone (matvec) or with others: batching decode steps of several
 * sequences does not change any sequence's numbers. */
static AI T512 void mvn_group512(fr_dtype dt, int R, int NT, const fr_weight *w, const float *x, float *y,
                                 int64_t r0, bool pf) {
    const bool f8 = dt == FR_DTYPE_F8_E4M3;
    const int64_t K = w->cols, seg = seg_len(w), ldy = w->rows;
    const uint8_t *wp[2];
    const float *sp[2] = {0};
    __m512 tot[2][3];
#pragma GCC unroll 2
    for (int i = 0; i < R; i++) {
        wp[i] = row_ptr(w, r0 + i);
        if (f8) sp[i] = scale_row(w, r0 + i);
#pragma GCC unroll 4
        for (int t = 0; t < NT; t++) tot[i][t] = _mm512_setzero_ps();
    }
    for (int64_t c0 = 0, cb = 0; c0 < K; c0 += seg, cb++) {
        const int64_t c1 = min64(c0 + seg, K);
        __m512 a[2][3], b[2][3];
#pragma GCC unroll 2
        for (int i = 0; i < R; i++)
#pragma GCC unroll 3
            for (int t = 0; t < NT; t++) a[i][t] = b[i][t] = _mm512_setzero_ps();
        int64_t c = c0;
        for (; c + 32 <= c1; c += 32) {
            /* the first token group streams the rows from memory: prefetch as the matvec does */
            if (pf) prefetch_rows(wp, R, c, esize(dt), 32, K * (int64_t)esize(dt));
            /* both rows' weights widened first, so each x vector is loaded once */
            __m512 w0[2], w1[2];
#pragma GCC unroll 2
            for (int i = 0; i < R; i++) {
                if (f8) ld512_f8x2(wp[i] + c, &w0[i], &w1[i]);
                else w0[i] = ld512(dt, wp[i], c), w1[i] = ld512(dt, wp[i], c + 16);
            }
#pragma GCC unroll 4
            for (int t = 0; t < NT; t++) {
                const __m512 x0 = _mm512_loadu_ps(x + t * K + c), x1 = _mm512_loadu_ps(x + t * K + c + 16);
#pragma GCC unroll 2
                for (int i = 0; i < R; i++) {
                    if (f8) {
                        a[i][t] = _mm512_fmadd_ps(w1[i], x1, _mm512_fmadd_ps(w0[i], x0, a[i][t]));
                    } else {
                        a[i][t] = _mm512_fmadd_ps(w0[i], x0, a[i][t]);
                        b[i][t] = _mm512_fmadd_ps(w1[i], x1, b[i][t]);
                    }
                }
            }
        }
        if (c + 16 <= c1) {
#pragma GCC unroll 2
            for (int i = 0; i < R; i++) {
                const __m512 wv = ld512(dt, wp[i], c);
#pragma GCC unroll 4
                for (int t = 0; t < NT; t++) a[i][t] = _mm512_fmadd_ps(wv, _mm512_loadu_ps(x + t * K + c), a[i][t]);
            }
            c += 16;
        }
        if (c < c1) {
            const __mmask16 m = mask16(c1 - c);
#pragma GCC unroll 2
            for (int i = 0; i < R; i++) {
                const __m512 wv = ld512m(dt, wp[i], c, m);
#pragma GCC unroll 4
                for (int t = 0; t < NT; t++) {
                    const __m512 xv = _mm512_maskz_loadu_ps(m, x + t * K + c);
                    if (f8) a[i][t] = _mm512_fmadd_ps(wv, xv, a[i][t]);
                    else b[i][t] = _mm512_fmadd_ps(wv, xv, b[i][t]);
                }
            }
        }
#pragma GCC unroll 2
        for (int i = 0; i < R; i++)
#pragma GCC unroll 4
            for (int t = 0; t < NT; t++) {
                if (f8) tot[i][t] = _mm512_fmadd_ps(a[i][t], _mm512_set1_ps(sp[i][cb]), tot[i][t]);
                else tot[i][t] = _mm512_add_ps(tot[i][t], _mm512_add_ps(a[i][t], b[i][t]));
            }
    }
#pragma GCC unroll 2
    for (int i = 0; i < R; i++)
#pragma GCC unroll 4
        for (int t = 0; t < NT; t++) y[t * ldy + r0 + i] = _mm512_reduce_add_ps(tot[i][t]) * (f8 ? 256.0f : 1.0f);
}

/* Rows [r, r_end) for n tokens, in blocks of MVN_RB rows: within a block the token
 * groups go outer and the row pairs inner, so a group's x (3 x K floats) stays in L1
 * while the block's weights come from memory once and then from L2. */
#define MVN_RB 16
static AI T512 void mvn_range512_dt(fr_dtype dt, const fr_weight *w, const float *x, int64_t n, float *y, int64_t r0,
                                    int64_t r_end) {
    const int64_t K = w->cols, ldy = w->rows;
    for (int64_t rb = r0; rb < r_end; rb += MVN_RB) {
        const int64_t rb_end = min64(rb + MVN_RB, r_end);
        for (int64_t t = 0; t < n; t += 3) {
            /* three tokens: 2 x 3 x 3 accumulators plus the widened weights and x fill the
             * 32 vector registers; four spill and run several times slower */
            const int nt = (int)min64(3, n - t);
            const float *xt = x + t * K;
            float *yt = y + t * ldy;
            const bool pf = t == 0;
            for (int64_t r = rb; r < rb_end; r += 2) {
                const bool two = r + 2 <= rb_end;
                if (nt == 3) two ? mvn_group512(dt, 2, 3, w, xt, yt, r, pf) : mvn_group512(dt, 1, 3, w, xt, yt, r, pf);
                else if (nt == 2) two ? mvn_group512(dt, 2, 2, w, xt, yt, r, pf) : mvn_group512(dt, 1, 2, w, xt, yt, r, pf);
                else two ? mvn_group512(dt, 2, 1, w, xt, yt, r, pf) : mvn_group512(dt, 1, 1, w, xt, yt, r, pf);
            }
        }
    }
}

static T512 void mvn_range512(const fr_weight *w, const float *x, int64_t n, float *y, int64_t r0, int64_t r1) {
    switch (w->dtype) {
    case FR_DTYPE_F32: mvn_range512_dt(FR_DTYPE_F32, w, x, n, y, r0, r1); break;
    case FR_DTYPE_F16: mvn_range512_dt(FR_DTYPE_F16, w, x, n, y, r0, r1); break;
    case FR_DTYPE_BF16: mvn_range512_dt(FR_DTYPE_BF16, w, x, n, y, r0, r1); break;
    default: mvn_range512_dt(FR_DTYPE_F8_E4M3, w, x, n, y, r0, r1); break;
    }
}

/* Software prefetch for the 4-bit matvecs, measured on the 2-core target (median % of
 * read bandwidth over 1 GiB of 2048 x 8192 matrices): data 384 bytes ahead in each row
 * stream (256 to 512 are within noise of each other, 768 and more lose 10-25%: rows
 * are 4 KiB, and a far prefetch runs past the row into lines another stream has
 * already read); and the scale rows 64 blocks ahead, which the hardware prefetchers do
 * not follow (8 short streams advancing 16 or 32 bytes per 512 weights): INT4 63 ->
 * 75%, MXFP4 70 -> 72%. */
#define Q4_PF_AHEAD 384
#define Q4_PF_SCALES 64
#define Q4N_PF_AHEAD 2048

/* ---- AVX-512, 4-bit formats.
 *
 * The matvec takes a chunk of 128 elements of a row as one 64-byte load: lane d holds
 * the word of elements 8d .. 8d+7, and for k = 0..7 a shift by 4k brings nibble k into
 * the low 4 bits, which is all vpermps looks at, so one permute through the 16-entry
 * value table widens 16 weights (E2M1 values, or u - 8 for INT4). x comes rearranged
 * to match (q4_prep_x). Per 16 weights that is a shift, a permute and an FMA; a chunk's
 * lanes 4b .. 4b+3 belong to block b of the chunk, so its sums are scaled with one FMA
 * by a vector holding each block's scale four times. Scales are widened 16 blocks at a
 * time into a small per-row buffer and spread with one permute per chunk. */

/* v >> 4k in every lane; k is a constant once unrolled, so this is one immediate shift. */
static AI T512 __m512i srl4k512(__m512i v, int k) {
    switch (k) {
    case 0: return v;
    case 1: return _mm512_srli_epi32(v, 4);
    case 2: return _mm512_srli_epi32(v, 8);
    case 3: return _mm512_srli_epi32(v, 12);
    case 4: return _mm512_srli_epi32(v, 16);
    case 5: return _mm512_srli_epi32(v, 20);
    case 6: return _mm512_srli_epi32(v, 24);
    default: return _mm512_srli_epi32(v, 28);
    }
}

/* Scales of blocks b0 .. b0+15 of a scale row as f32 into out[16], exact. E8M0 byte e is
 * the f32 with bits e << 23, except e = 0 (2^-127, a subnormal: 0x00400000) and e = 0xFF
 * (NaN: 0x7FC00000), which both need bit 22 too; (e + 1) & 0xFE is zero for exactly those
 * two. BF16 is the top half of an f32. Blocks at or past `left` are not read (scale 0 or
 * 2^-127: they only ever multiply zero sums). */
static AI T512 __m512 q4_scalev512(fr_dtype dt, const uint8_t *srow, int64_t b0, int64_t left) {
    const __mmask16 m = mask16(left < 16 ? left : 16);
    __m512i bits;
    if (dt == FR_DTYPE_MXFP4) {
        const __m512i e = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, srow + b0));
        const __mmask16 edge =
            _mm512_testn_epi32_mask(_mm512_add_epi32(e, _mm512_set1_epi32(1)), _mm512_set1_epi32(0xFE));
        bits = _mm512_slli_epi32(e, 23);
        bits = _mm512_mask_or_epi32(bits, edge, bits, _mm512_set1_epi32(0x00400000));
    } else {
        bits = _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, srow + 2 * b0)), 16);
    }
    return _mm512_castsi512_ps(bits);
}

static AI T512 void q4_scales512(fr_dtype dt, const uint8_t *srow, int64_t b0, int64_t left, float *out) {
    _mm512_store_ps(out, q4_scalev512(dt, srow, b0, left));
}

/* y[r0 .. r0+R) for R consecutive rows of a 4-bit matrix; xp is x after q4_prep_x(16).
 * Rows go innermost so that the R accumulators are independent FMA chains. */
static AI T512 void mv_q4_group512(fr_dtype dt, int R, const fr_weight *w, const float *xp, float *y,
                                   int64_t r0) {
    const int64_t nb = w->cols / 32, nch = (nb + 3) / 4, es = dt == FR_DTYPE_MXFP4 ? 1 : 2;
    const int64_t rb = w->cols / 2, srb = nb * es; /* bytes of a data row and of a scale row */
    const __m512 lut = _mm512_loadu_ps(q4_lut(dt));
    const __m512i quad = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
    const uint8_t *wp[MV_ROWS_512], *sp[MV_ROWS_512];
    _Alignas(64) float sb[MV_ROWS_512][16];
    __m512 tot[MV_ROWS_512];
#pragma GCC unroll 8
    for (int i = 0; i < R; i++) {
        wp[i] = q4_row(w, r0 + i);
        sp[i] = q4_srow(dt, w, r0 + i);
        tot[i] = _mm512_setzero_ps();
    }
    for (int64_t j0 = 0; j0 < nch; j0 += 4) { /* 4 chunks = 16 blocks per scale vector */
#pragma GCC unroll 8
        for (int i = 0; i < R; i++) {
            __builtin_prefetch(row_ahead(sp[i], (4 * j0 + Q4_PF_SCALES) * es, srb, R), 0, 3);
            q4_scales512(dt, sp[i], 4 * j0, nb - 4 * j0, sb[i]);
        }
        for (int64_t j = j0; j < j0 + 4 && j < nch; j++) {
            const int64_t left = nb - 4 * j; /* blocks from this chunk to the end of the row */
            __m512i raw[MV_ROWS_512];
            if (left >= 4) {
#pragma GCC unroll 8
                for (int i = 0; i < R; i++) {
                    __builtin_prefetch(row_ahead(wp[i], 64 * j + Q4_PF_AHEAD, rb, R), 0, 2);
                    raw[i] = _mm512_loadu_si512(wp[i] + 64 * j);
                }
            } else { /* the last 1-3 blocks; masked lanes read as zero words, against zero x */
                const __mmask16 m = mask16(4 * left);
#pragma GCC unroll 8
                for (int i = 0; i < R; i++) raw[i] = _mm512_maskz_loadu_epi32(m, wp[i] + 64 * j);
            }
            const float *xc = xp + 128 * j;
            __m512 acc[MV_ROWS_512];
#pragma GCC unroll 8
            for (int k = 0; k < 8; k++) {
                const __m512 xk = _mm512_load_ps(xc + 16 * k);
#pragma GCC unroll 8
                for (int i = 0; i < R; i++) {
                    const __m512 v = _mm512_permutexvar_ps(srl4k512(raw[i], k), lut);
                    acc[i] = k == 0 ? _mm512_mul_ps(v, xk) : _mm512_fmadd_ps(v, xk, acc[i]);
                }
            }
            const __m512i idx = _mm512_add_epi32(quad, _mm512_set1_epi32(4 * (int)(j & 3)));
#pragma GCC unroll 8
            for (int i = 0; i < R; i++)
                tot[i] = _mm512_fmadd_ps(acc[i], _mm512_permutexvar_ps(idx, _mm512_load_ps(sb[i])), tot[i]);
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < R; i++) y[r0 + i] = _mm512_reduce_add_ps(tot[i]);
}

static AI T512 void mv_q4_range512(fr_dtype dt, const fr_weight *w, const float *xp, float *y, int64_t r,
                                   int64_t r_end) {
#define Q4_GROUP(R) mv_q4_group512(dt, R, w, xp, y, r)
    MV_ROW_GROUPS_512(Q4_GROUP);
#undef Q4_GROUP
}

/* The 4-bit matvec for R <= 2 rows x NT <= 3 tokens: xp holds each token's x after
 * q4_prep_x(16), ldx floats apart. As mvn_group512 does for the other formats, every
 * (token, row) sum is formed in exactly mv_q4_group512's order, so batching leaves each
 * token's outputs bit-identical to the single-token matvec's. */
static AI T512 void mvn_q4_group512(fr_dtype dt, int R, int NT, const fr_weight *w, const float *xp, int64_t ldx,
                                    float *y, int64_t r0, bool pf) {
    const int64_t nb = w->cols / 32, nch = (nb + 3) / 4, ldy = w->rows, rb = w->cols / 2;
    const __m512 lut = _mm512_loadu_ps(q4_lut(dt));
    const __m512i quad = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
    const uint8_t *wp[2], *sp[2];
    _Alignas(64) float sb[2][16];
    __m512 tot[2][3];
#pragma GCC unroll 2
    for (int i = 0; i < R; i++) {
        wp[i] = q4_row(w, r0 + i);
        sp[i] = q4_srow(dt, w, r0 + i);
#pragma GCC unroll 3
        for (int t = 0; t < NT; t++) tot[i][t] = _mm512_setzero_ps();
    }
    for (int64_t j0 = 0; j0 < nch; j0 += 4) {
#pragma GCC unroll 2
        for (int i = 0; i < R; i++) q4_scales512(dt, sp[i], 4 * j0, nb - 4 * j0, sb[i]);
        for (int64_t j = j0; j < j0 + 4 && j < nch; j++) {
            const int64_t left = nb - 4 * j;
            __m512i raw[2];
#pragma GCC unroll 2
            for (int i = 0; i < R; i++) {
                if (left >= 4) {
                    if (pf) __builtin_prefetch(row_ahead(wp[i], 64 * j + Q4N_PF_AHEAD, rb, R), 0, 2);
                    raw[i] = _mm512_loadu_si512(wp[i] + 64 * j);
                } else {
                    raw[i] = _mm512_maskz_loadu_epi32(mask16(4 * left), wp[i] + 64 * j);
                }
            }
            __m512 acc[2][3];
#pragma GCC unroll 8
            for (int k = 0; k < 8; k++) {
                __m512 v[2];
#pragma GCC unroll 2
                for (int i = 0; i < R; i++) v[i] = _mm512_permutexvar_ps(srl4k512(raw[i], k), lut);
#pragma GCC unroll 3
                for (int t = 0; t < NT; t++) {
                    const __m512 xk = _mm512_load_ps(xp + t * ldx + 128 * j + 16 * k);
#pragma GCC unroll 2
                    for (int i = 0; i < R; i++)
                        acc[i][t] = k == 0 ? _mm512_mul_ps(v[i], xk) : _mm512_fmadd_ps(v[i], xk, acc[i][t]);
                }
            }
            const __m512i idx = _mm512_add_epi32(quad, _mm512_set1_epi32(4 * (int)(j & 3)));
#pragma GCC unroll 2
            for (int i = 0; i < R; i++) {
                const __m512 sc = _mm512_permutexvar_ps(idx, _mm512_load_ps(sb[i]));
#pragma GCC unroll 3
                for (int t = 0; t < NT; t++) tot[i][t] = _mm512_fmadd_ps(acc[i][t], sc, tot[i][t]);
            }
        }
    }
#pragma GCC unroll 2
    for (int i = 0; i < R; i++)
#pragma GCC unroll 3
        for (int t = 0; t < NT; t++) y[t * ldy + r0 + i] = _mm512_reduce_add_ps(tot[i][t]);
}

/* The tile walk of the multi-token 4-bit matvecs: MVN_RB-row blocks, NT_MAX tokens at a time
 * (the first group streams the rows from memory and prefetches, the rest find them in
 * cache), pairs of rows; TILE(R, NT) runs one tile with xt, yt, r and pf in scope. */
#define MVN_Q_TILES(NT_MAX, TILE)                                                                \
    for (int64_t rb = r0; rb < r_end; rb += MVN_RB) {                                            \
        const int64_t rb_end = min64(rb + MVN_RB, r_end);                                        \
        for (int64_t t = 0; t < n; t += NT_MAX) {                                                \
            const int nt = (int)min64(NT_MAX, n - t);                                            \
            const float *xt = xp + t * ldx;                                                      \
            float *yt = y + t * w->rows;                                                         \
            const bool pf = t == 0;                                                              \
            for (int64_t r = rb; r < rb_end; r += 2) {                                           \
                const int two = r + 2 <= rb_end;                                                 \
                if (nt >= 4) two ? TILE(2, 4) : TILE(1, 4);                                      \
                else if (nt == 3) two ? TILE(2, 3) : TILE(1, 3);                                 \
                else if (nt == 2) two ? TILE(2, 2) : TILE(1, 2);                                 \
                else two ? TILE(2, 1) : TILE(1, 1);                                              \
            }                                                                                    \
        }                                                                                        \
    }

static AI T512 void mvn_q4_range512_dt(fr_dtype dt, const fr_weight *w, const float *xp, int64_t ldx, int64_t n,
                                       float *y, int64_t r0, int64_t r_end) {
    /* 3 tokens at most: 2 x 3 f32 accumulator sets fill the registers (NT 4 is never asked) */
#define Q4_TILE(R, NT) mvn_q4_group512(dt, R, (NT) > 3 ? 3 : (NT), w, xt, ldx, yt, r, pf)
    MVN_Q_TILES(3, Q4_TILE)
#undef Q4_TILE
}

static T512 void mvnq_range512(const fr_weight *w, const float *xp, int64_t ldx, int64_t n, float *y, int64_t r0,
                               int64_t r1) {
    if (w->dtype == FR_DTYPE_MXFP4) mvn_q4_range512_dt(FR_DTYPE_MXFP4, w, xp, ldx, n, y, r0, r1);
    else mvn_q4_range512_dt(FR_DTYPE_INT4, w, xp, ldx, n, y, r0, r1);
}

/* ---- AVX-512 VNNI + VBMI, 4-bit formats against int8 activations (see matmul.h).
 *
 * The f32 kernels above spend a shift, a permute and an FMA on every 16 weights, which
 * on the 2-core target is slower than DRAM delivers MXFP4 (82% of read bandwidth from
 * cache). Here x is rounded to int8 per 32-block once per product (q8_prep_x), and a
 * 64-byte chunk of a row (128 weights, 4 blocks) costs: one vpermb through a 64-byte
 * table for the low nibbles (vpermb reads 6 index bits; the table repeats its 16
 * entries 4 times, so bits 4-5 need no masking), a 16-bit shift and a vpermb for the
 * high nibbles, and two vpdpbusd against the even and odd inputs, whose 4-byte groups
 * never straddle a block: lanes 4b .. 4b+3 hold block b's integer sums, exact. vpdpbusd
 * multiplies unsigned by signed bytes, so the table holds the weights offset to be
 * non-negative - u = 2 * E2M1 + 12 in 0 .. 24 for MXFP4 (every E2M1 value doubled is
 * an integer), the raw nibble for INT4 (value u - 8) - and the accumulator starts from
 * -12 (or -8) times the block's sum of q, which q8_prep_x stores. The sums are then
 * converted and scaled by weight scale x activation scale, one FMA per chunk as in
 * the f32 kernel. |sum| <= 32 * 24 * 128, far inside int32 and exact in f32. */

/* Floats q8_prep_x writes for a row of K inputs (K a multiple of 32): per chunk of 128
 * inputs 128 bytes of q (the even inputs' bytes, then the odd ones') and 16 int32
 * offsets, then per 16 blocks 16 activation scales; all 64-byte aligned. */
static int64_t q8_prep_len(int64_t K) {
    const int64_t nch = (K / 32 + 3) / 4;
    return 48 * nch + 16 * ((nch + 3) / 4);
}

/* One block of 32 inputs whose amax is below 2^-100, where 127 / amax overflows f32:
 * the same rounding carried out in double. Such activations are zero for any purpose. */
static void q8_tiny_block(const float *x, float amax, float *s, int8_t *q) {
    const double inv = 127.0 / (double)amax;
    for (int i = 0; i < 32; i++) q[i] = (int8_t)nearbyint((double)x[i] * inv);
    *s = (float)((double)amax / 127.0);
}

#define Q8_RN (_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)

static T512V void q8_prep_x(const float *x, int64_t K, fr_dtype dt, float *xp) {
    const int64_t nb = K / 32, nch = (nb + 3) / 4;
    uint8_t *qx = (uint8_t *)xp;
    int32_t *off = (int32_t *)(xp + 32 * nch);
    float *xs = xp + 48 * nch;
    memset(xp, 0, (size_t)q8_prep_len(K) * sizeof(float));
    const int32_t bias = dt == FR_DTYPE_MXFP4 ? -12 : -8;
    const float unit = dt == FR_DTYPE_MXFP4 ? 0.5f : 1.0f; /* the MXFP4 table holds 2 * E2M1 */
    const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    for (int64_t b = 0; b < nb; b++) {
        const __m512 a = _mm512_loadu_ps(x + 32 * b), c = _mm512_loadu_ps(x + 32 * b + 16);
        const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(a), _mm512_abs_ps(c)));
        uint8_t *qe = qx + 128 * (b / 4) + 16 * (b % 4), *qo = qe + 64;
        float s = 0.0f;
        int32_t sum = 0;
        /* vmaxps passes a NaN through only from one operand, so NaNs are looked for apart */
        const bool nan = (_mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q) | _mm512_cmp_ps_mask(c, c, _CMP_UNORD_Q)) != 0;
        if (nan || !(amax <= 3.4028235e38f)) { /* Inf or NaN: the block's products are NaN, q stays 0 */
            s = NAN;
        } else if (amax >= 0x1p-100f) {
            s = amax / 127.0f;
            const __m512 inv = _mm512_set1_ps(127.0f / amax);
            /* ties to even whatever the caller's rounding mode; |x| * inv <= 127 (1 + 2^-23) */
            const __m512i ie = _mm512_cvt_roundps_epi32(_mm512_mul_ps(_mm512_permutex2var_ps(a, even, c), inv), Q8_RN);
            const __m512i io = _mm512_cvt_roundps_epi32(_mm512_mul_ps(_mm512_permutex2var_ps(a, odd, c), inv), Q8_RN);
            _mm_storeu_si128((__m128i *)qe, _mm512_cvtsepi32_epi8(ie));
            _mm_storeu_si128((__m128i *)qo, _mm512_cvtsepi32_epi8(io));
            sum = _mm512_reduce_add_epi32(_mm512_add_epi32(ie, io));
        } else if (amax > 0.0f) {
            int8_t q[32];
            q8_tiny_block(x + 32 * b, amax, &s, q);
            for (int i = 0; i < 16; i++) {
                qe[i] = (uint8_t)q[2 * i];
                qo[i] = (uint8_t)q[2 * i + 1];
                sum += q[2 * i] + q[2 * i + 1];
            }
        }
        off[16 * (b / 4) + 4 * (b % 4)] = bias * sum;
        xs[b] = s * unit;
    }
}

/* The nibble -> u table, its 16 entries repeated 4 times (vpermb indexes 64 bytes). */
static AI T512V __m512i q8_table(fr_dtype dt) {
    if (dt == FR_DTYPE_MXFP4)
        return _mm512_broadcast_i32x4(_mm_setr_epi8(12, 13, 14, 15, 16, 18, 20, 24, 12, 11, 10, 9, 8, 6, 4, 0));
    return _mm512_broadcast_i32x4(_mm_setr_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
}

/* Integer sums of one chunk of a row against one token's q: lanes 4b .. 4b+3 add up to
 * block b's sum of value x q (MXFP4: 2 * E2M1 x q). lo / hi are the row's widened
 * nibbles; q points at the token's chunk (even bytes, then odd), off at its offsets. */
static AI T512V __m512 q8_chunk(__m512i lo, __m512i hi, const uint8_t *q, const int32_t *off) {
    __m512i acc = _mm512_load_si512(off);
    acc = _mm512_dpbusd_epi32(acc, lo, _mm512_load_si512(q));
    acc = _mm512_dpbusd_epi32(acc, hi, _mm512_load_si512(q + 64));
    return _mm512_cvtepi32_ps(acc);
}

/* Chunk j of row p as 64 + 64 table entries (low nibbles, high nibbles); the last
 * 1-3 blocks of a row load masked (zero bytes, against zero q). */
static AI T512V void q8_widen(__m512i tbl, const uint8_t *p, int64_t j, int64_t left, __m512i *lo, __m512i *hi) {
    const __m512i raw = left >= 4 ? _mm512_loadu_si512(p + 64 * j) : _mm512_maskz_loadu_epi32(mask16(4 * left), p + 64 * j);
    *lo = _mm512_permutexvar_epi8(raw, tbl);
    *hi = _mm512_permutexvar_epi8(_mm512_srli_epi16(raw, 4), tbl);
}

/* y[r0 .. r0+R) for R consecutive rows; xp is x after q8_prep_x. */
static AI T512V void mv_q8_group512(fr_dtype dt, int R, const fr_weight *w, const float *xp, float *y,
                                    int64_t r0) {
    const int64_t nb = w->cols / 32, nch = (nb + 3) / 4, es = dt == FR_DTYPE_MXFP4 ? 1 : 2;
    const int64_t rb = w->cols / 2, srb = nb * es;
    const uint8_t *qx = (const uint8_t *)xp;
    const int32_t *off = (const int32_t *)(xp + 32 * nch);
    const float *xs = xp + 48 * nch;
    const __m512i tbl = q8_table(dt);
    const __m512i quad = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
    const uint8_t *wp[MV_ROWS_512], *sp[MV_ROWS_512];
    _Alignas(64) float sb[MV_ROWS_512][16];
    __m512 tot[MV_ROWS_512];
#pragma GCC unroll 8
    for (int i = 0; i < R; i++) {
        wp[i] = q4_row(w, r0 + i);
        sp[i] = q4_srow(dt, w, r0 + i);
        tot[i] = _mm512_setzero_ps();
    }
    for (int64_t j0 = 0; j0 < nch; j0 += 4) {
        const __m512 xsv = _mm512_load_ps(xs + 4 * j0);
#pragma GCC unroll 8
        for (int i = 0; i < R; i++) {
            __builtin_prefetch(row_ahead(sp[i], (4 * j0 + Q4_PF_SCALES) * es, srb, R), 0, 3);
            _mm512_store_ps(sb[i], _mm512_mul_ps(q4_scalev512(dt, sp[i], 4 * j0, nb - 4 * j0), xsv));
        }
        for (int64_t j = j0; j < j0 + 4 && j < nch; j++) {
            const int64_t left = nb - 4 * j;
            const __m512i idx = _mm512_add_epi32(quad, _mm512_set1_epi32(4 * (int)(j & 3)));
#pragma GCC unroll 8
            for (int i = 0; i < R; i++) {
                if (left >= 4) __builtin_prefetch(row_ahead(wp[i], 64 * j + Q4_PF_AHEAD, rb, R), 0, 2);
                __m512i lo, hi;
                q8_widen(tbl, wp[i], j, left, &lo, &hi);
                tot[i] = _mm512_fmadd_ps(q8_chunk(lo, hi, qx + 128 * j, off + 16 * j),
                                         _mm512_permutexvar_ps(idx, _mm512_load_ps(sb[i])), tot[i]);
            }
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < R; i++) y[r0 + i] = _mm512_reduce_add_ps(tot[i]);
}

static AI T512V void mv_q8_range512(fr_dtype dt, const fr_weight *w, const float *xp, float *y, int64_t r,
                                    int64_t r_end) {
#define Q8_GROUP(R) mv_q8_group512(dt, R, w, xp, y, r)
    MV_ROW_GROUPS_512(Q8_GROUP);
#undef Q8_GROUP
}

/* R <= 2 rows x NT <= 4 tokens, xp holding each token's q8_prep_x ldx floats apart;
 * every (token, row) sum is formed in mv_q8_group512's order (batch invariance). */
static AI T512V void mvn_q8_group512(fr_dtype dt, int R, int NT, const fr_weight *w, const float *xp, int64_t ldx,
                                     float *y, int64_t r0, bool pf) {
    const int64_t nb = w->cols / 32, nch = (nb + 3) / 4, ldy = w->rows, rb = w->cols / 2;
    const __m512i tbl = q8_table(dt);
    const __m512i quad = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
    const uint8_t *wp[2], *sp[2];
    _Alignas(64) float sb[2][4][16];
    __m512 tot[2][4];
#pragma GCC unroll 2
    for (int i = 0; i < R; i++) {
        wp[i] = q4_row(w, r0 + i);
        sp[i] = q4_srow(dt, w, r0 + i);
#pragma GCC unroll 4
        for (int t = 0; t < NT; t++) tot[i][t] = _mm512_setzero_ps();
    }
    for (int64_t j0 = 0; j0 < nch; j0 += 4) {
#pragma GCC unroll 2
        for (int i = 0; i < R; i++) {
            const __m512 wv = q4_scalev512(dt, sp[i], 4 * j0, nb - 4 * j0);
#pragma GCC unroll 4
            for (int t = 0; t < NT; t++)
                _mm512_store_ps(sb[i][t], _mm512_mul_ps(wv, _mm512_load_ps(xp + t * ldx + 48 * nch + 4 * j0)));
        }
        for (int64_t j = j0; j < j0 + 4 && j < nch; j++) {
            const int64_t left = nb - 4 * j;
            const __m512i idx = _mm512_add_epi32(quad, _mm512_set1_epi32(4 * (int)(j & 3)));
            __m512i lo[2], hi[2];
#pragma GCC unroll 2
            for (int i = 0; i < R; i++) {
                if (pf && left >= 4) __builtin_prefetch(row_ahead(wp[i], 64 * j + Q4N_PF_AHEAD, rb, R), 0, 2);
                q8_widen(tbl, wp[i], j, left, &lo[i], &hi[i]);
            }
#pragma GCC unroll 4
            for (int t = 0; t < NT; t++) {
                const float *xt = xp + t * ldx;
                const uint8_t *q = (const uint8_t *)xt + 128 * j;
                const int32_t *off = (const int32_t *)(xt + 32 * nch) + 16 * j;
#pragma GCC unroll 2
                for (int i = 0; i < R; i++)
                    tot[i][t] = _mm512_fmadd_ps(q8_chunk(lo[i], hi[i], q, off),
                                                _mm512_permutexvar_ps(idx, _mm512_load_ps(sb[i][t])), tot[i][t]);
            }
        }
    }
#pragma GCC unroll 2
    for (int i = 0; i < R; i++)
#pragma GCC unroll 4
        for (int t = 0; t < NT; t++) y[t * ldy + r0 + i] = _mm512_reduce_add_ps(tot[i][t]);
}

static AI T512V void mvn_q8_range512_dt(fr_dtype dt, const fr_weight *w, const float *xp, int64_t ldx, int64_t n,
                                        float *y, int64_t r0, int64_t r_end) {
#define Q8_TILE(R, NT) mvn_q8_group512(dt, R, NT, w, xt, ldx, yt, r, pf)
    MVN_Q_TILES(4, Q8_TILE)
#undef Q8_TILE
}

/* 16 weights in element order from the 8 bytes at p (unscaled): lane l takes byte l / 2
 * and shifts its nibble l & 1 down, then the table. For the prefill panels and matmul_t,
 * where weights are reused and the extra two uops do not matter. */
static AI T512 __m512 ld512_q4(__m512 lut, const uint8_t *p) {
    const __m512i b = _mm512_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p));
    const __m512i t = _mm512_srlv_epi32(
        _mm512_permutexvar_epi32(_mm512_set_epi32(7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0), b),
        _mm512_set_epi32(4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0));
    return _mm512_permutexvar_ps(t, lut);
}


/* Transposed product over 4-bit weights for one token: NV vectors of 16 columns from
 * c0 (a multiple of 16) stay in registers while the rows stream past; each row's piece
 * is widened in element order and scaled (exact), then multiplied by x[r]. */
static AI T512 void mt_q4_strip512(fr_dtype dt, int NV, const fr_weight *w, const float *x, float *y,
                                   int64_t c0) {
    const __m512 lut = _mm512_loadu_ps(q4_lut(dt));
    __m512 acc[8];
#pragma GCC unroll 8
    for (int j = 0; j < NV; j++) acc[j] = _mm512_setzero_ps();
    for (int64_t r = 0; r < w->rows; r++) {
        const uint8_t *p = q4_row(w, r) + c0 / 2, *sr = q4_srow(dt, w, r);
        const __m512 xr = _mm512_set1_ps(x[r]);
#pragma GCC unroll 8
        for (int j = 0; j < NV; j++) {
            const __m512 s = _mm512_set1_ps(q4_scale(dt, sr, (c0 + 16 * j) / 32));
            acc[j] = _mm512_fmadd_ps(_mm512_mul_ps(ld512_q4(lut, p + 8 * j), s), xr, acc[j]);
        }
    }
#pragma GCC unroll 8
    for (int j = 0; j < NV; j++) _mm512_storeu_ps(y + c0 + 16 * j, acc[j]);
}

/* y[c .. c1) for one token; c1 - c is a multiple of 32 (whole blocks). */
static AI T512 void mt_q4_range512(fr_dtype dt, const fr_weight *w, const float *x, float *y, int64_t c,
                                   int64_t c1) {
    for (; c + 128 <= c1; c += 128) mt_q4_strip512(dt, 8, w, x, y, c);
    for (; c < c1; c += 16) mt_q4_strip512(dt, 1, w, x, y, c);
}

static T512 void mv_range512(const fr_weight *w, const float *x, float *y, int64_t r, int64_t r_end) {
    switch (w->dtype) {
    case FR_DTYPE_MXFP4: mv_q4_range512(FR_DTYPE_MXFP4, w, x, y, r, r_end); break;
    case FR_DTYPE_INT4: mv_q4_range512(FR_DTYPE_INT4, w, x, y, r, r_end); break;
    case FR_DTYPE_F32: mv_range512_dt(FR_DTYPE_F32, w, x, y, r, r_end); break;
    case FR_DTYPE_F16: mv_range512_dt(FR_DTYPE_F16, w, x, y, r, r_end); break;
    case FR_DTYPE_BF16: mv_range512_dt(FR_DTYPE_BF16, w, x, y, r, r_end); break;
    default: mv_range512_dt(FR_DTYPE_F8_E4M3, w, x, y, r, r_end); break;
    }
}




/* The FP8 scales of columns c0 .. c0+15 in one scale row, times 256 (see ld512);
 * lanes past the matrix get 0. Built lane by lane because a block may end inside
 * a vector when block_cols is not a multiple of 16. */
static AI T512 __m512 scale_vec512(const fr_weight *w, const float *srow, int64_t c0) {
    float s[16];
    for (int l = 0; l < 16; l++) s[l] = c0 + l < w->cols ? srow[(c0 + l) / w->block_cols] * 256.0f : 0.0f;
    return _mm512_loadu_ps(s);
}

/* Transposed product for one token over a strip of NV vectors of columns starting
 * at c0 (the last vector limited to the lanes in mlast): y[c] = sum_r x[r] W[r, c].
 * The strip's sums stay in registers while the rows stream past, so each weight
 * is loaded, widened and FMA'd once with no store traffic. FP8 rows accumulate one
 * block_rows run at a time and fold in that run's per-column scales at its end. */
#define MT_PF_ROWS 16
static AI T512 void mt_strip512(fr_dtype dt, int NV, const fr_weight *w, const float *x, float *y, int64_t c0,
                                __mmask16 mlast) {
    const int64_t rows = w->rows;
    const size_t stride = (size_t)w->cols * esize(dt);
    const uint8_t *base = (const uint8_t *)w->data;
    __m512 tot[8], acc[8];
#pragma GCC unroll 8
    for (int j = 0; j < NV; j++) tot[j] = _mm512_setzero_ps();
    for (int64_t r = 0; r < rows;) {
        int64_t r1 = rows, rb = 0;
        if (dt == FR_DTYPE_F8_E4M3) {
            rb = (w->row0 + r) / w->block_rows;
            r1 = min64(rows, (rb + 1) * w->block_rows - w->row0);
        }
#pragma GCC unroll 8
        for (int j = 0; j < NV; j++) acc[j] = _mm512_setzero_ps();
        for (; r < r1; r++) {
            const __m512 xr = _mm512_set1_ps(x[r]);
            const uint8_t *rp = base + (size_t)r * stride;
            /* The strip is a column of short pieces a row apart, which the hardware
             * prefetchers follow poorly: fetch the piece MT_PF_ROWS rows down. */
            for (int l = 0; l < NV * 16 * (int)esize(dt) / 64; l++)
                __builtin_prefetch(rp + MT_PF_ROWS * stride + (size_t)c0 * esize(dt) + 64 * l, 0, 3);
#pragma GCC unroll 8
            for (int j = 0; j < NV; j++) {
                const __m512 v =
                    j == NV - 1 ? ld512m(dt, rp, c0 + 16 * j, mlast) : ld512(dt, rp, c0 + 16 * j);
                acc[j] = _mm512_fmadd_ps(v, xr, acc[j]);
            }
        }
#pragma GCC unroll 8
        for (int j = 0; j < NV; j++) {
            if (dt == FR_DTYPE_F8_E4M3)
                tot[j] = _mm512_fmadd_ps(
                    acc[j], scale_vec512(w, w->scale_inv + rb * w->scale_cols, c0 + 16 * j), tot[j]);
            else tot[j] = acc[j];
        }
    }
#pragma GCC unroll 8
    for (int j = 0; j < NV; j++) {
        if (j == NV - 1) _mm512_mask_storeu_ps(y + c0 + 16 * j, mlast, tot[j]);
        else _mm512_storeu_ps(y + c0 + 16 * j, tot[j]);
    }
}

/* y[c0 .. c1) for one token: 128-column strips, then 16 columns at a time. */
static AI T512 void mt_range512_dt(fr_dtype dt, const fr_weight *w, const float *x, float *y, int64_t c,
                                   int64_t c1) {
    for (; c + 128 <= c1; c += 128) mt_strip512(dt, 8, w, x, y, c, 0xffff);
    for (; c < c1; c += 16) mt_strip512(dt, 1, w, x, y, c, c + 16 <= c1 ? 0xffff : mask16(c1 - c));
}

static T512 void mt_range512(const fr_weight *w, const float *x, float *y, int64_t c0, int64_t c1) {
    switch (w->dtype) {
    case FR_DTYPE_MXFP4: mt_q4_range512(FR_DTYPE_MXFP4, w, x, y, c0, c1); break;
    case FR_DTYPE_INT4: mt_q4_range512(FR_DTYPE_INT4, w, x, y, c0, c1); break;
    case FR_DTYPE_F32: mt_range512_dt(FR_DTYPE_F32, w, x, y, c0, c1); break;
    case FR_DTYPE_F16: mt_range512_dt(FR_DTYPE_F16, w, x, y, c0, c1); break;
    case FR_DTYPE_BF16: mt_range512_dt(FR_DTYPE_BF16, w, x, y, c0, c1); break;
    default: mt_range512_dt(FR_DTYPE_F8_E4M3, w, x, y, c0, c1); break;
    }
}

/* The bandwidth probe reads its piece as 8 interleaved streams with the same
 * software prefetch as the matvec kernel: one stream per thread is measurably
 * slower (~28.5 against ~32 GB/s here), and the ceiling should be the best way
 * to read memory, not the simplest. Integer adds cannot hit FP assists on
 * arbitrary bit patterns. */
static T512 uint64_t sum512(const uint64_t *p, size_t words) {
    const size_t len = words / 8 / 8 * 8; /* words per stream, whole lines */
    __m512i acc[8];
#pragma GCC unroll 8
    for (int s = 0; s < 8; s++) acc[s] = _mm512_setzero_si512();
    for (size_t i = 0; i < len; i += 8) {
#pragma GCC unroll 8
        for (int s = 0; s < 8; s++) {
            const uint64_t *q = p + s * len + i;
            __builtin_prefetch((const uint8_t *)q + PF_AHEAD, 0, 3);
            acc[s] = _mm512_add_epi64(acc[s], _mm512_loadu_si512(q));
        }
    }
#pragma GCC unroll 8
    for (int s = 1; s < 8; s++) acc[0] = _mm512_add_epi64(acc[0], acc[s]);
    /* not _mm512_reduce_add_epi64: GCC's version adds as signed long long (UB on wrap) */
    uint64_t lanes[8];
    _mm512_storeu_si512(lanes, acc[0]);
    uint64_t sum = 0;
    for (int j = 0; j < 8; j++) sum += lanes[j];
    for (size_t i = 8 * len; i < words; i++) sum += p[i];
    return sum;
}

/* The VNNI path's kernels: 4-bit weights against q8_prep_x rows, the rest as AVX-512. */
static T512V void mv_range512v(const fr_weight *w, const float *x, float *y, int64_t r, int64_t r_end) {
    if (w->dtype == FR_DTYPE_MXFP4) mv_q8_range512(FR_DTYPE_MXFP4, w, x, y, r, r_end);
    else if (w->dtype == FR_DTYPE_INT4) mv_q8_range512(FR_DTYPE_INT4, w, x, y, r, r_end);
    else mv_range512(w, x, y, r, r_end);
}

static T512V void mvnq_range512v(const fr_weight *w, const float *xp, int64_t ldx, int64_t n, float *y, int64_t r0,
                                 int64_t r1) {
    if (w->dtype == FR_DTYPE_MXFP4) mvn_q8_range512_dt(FR_DTYPE_MXFP4, w, xp, ldx, n, y, r0, r1);
    else mvn_q8_range512_dt(FR_DTYPE_INT4, w, xp, ldx, n, y, r0, r1);
}

/* ======================================================================= AVX2 */

static AI T256 float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* 8 weights at element i as f32 (FP8 as e4m3 / 256, see ld512). */
static AI T256 __m256 ld256(fr_dtype dt, const uint8_t *p, int64_t i) {
    switch (dt) {
    case FR_DTYPE_F32: return _mm256_loadu_ps((const float *)(const void *)(p + 4 * i));
    case FR_DTYPE_F16: return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 2 * i)));
    case FR_DTYPE_BF16:
        return _mm256_castsi256_ps(
            _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(p + 2 * i))), 16));
    default: {
        __m128i h = _mm_cvtepi8_epi16(_mm_loadl_epi64((const __m128i *)(p + i)));
        h = _mm_and_si128(_mm_slli_epi16(h, 7), _mm_set1_epi16((short)0xBF80));
        return _mm256_cvtph_ps(h);
    }
    }
}

/* AVX2 has no byte/word masked loads: copy the last < 8 elements into a zeroed
 * buffer so nothing past the matrix is read. */
static AI T256 __m256 ld256_part(fr_dtype dt, const uint8_t *p, int64_t i, int64_t count) {
    uint8_t tmp[32] = {0};
    memcpy(tmp, p + (size_t)i * esize(dt), (size_t)count * esize(dt));
    return ld256(dt, tmp, 0);
}

static AI T256 __m256 ldx256_part(const float *x, int64_t count) {
    float tmp[8] = {0};
    memcpy(tmp, x, (size_t)count * 4);
    return _mm256_loadu_ps(tmp);
}

static AI T256 void mv_group256(fr_dtype dt, int R, const fr_weight *w, const float *x, float *y,
                                int64_t r0) {
    const int64_t K = w->cols, seg = seg_len(w);
    const uint8_t *wp[MV_ROWS_256];
    const float *sp[MV_ROWS_256] = {0};
    __m256 tot[MV_ROWS_256];
#pragma GCC unroll 8
    for (int i = 0; i < R; i++) {
        wp[i] = row_ptr(w, r0 + i);
        if (dt == FR_DTYPE_F8_E4M3) sp[i] = scale_row(w, r0 + i);
        tot[i] = _mm256_setzero_ps();
    }
    for (int64_t c0 = 0, cb = 0; c0 < K; c0 += seg, cb++) {
        const int64_t c1 = min64(c0 + seg, K);
        __m256 a[MV_ROWS_256], b[MV_ROWS_256];
#pragma GCC unroll 8
        for (int i = 0; i < R; i++) a[i] = b[i] = _mm256_setzero_ps();
        int64_t c = c0;
        for (; c + 16 <= c1; c += 16) {
            const __m256 x0 = _mm256_loadu_ps(x + c), x1 = _mm256_loadu_ps(x + c + 8);
            if (R > 1) prefetch_rows(wp, R, c, esize(dt), 16, K * (int64_t)esize(dt));
#pragma GCC unroll 8
            for (int i = 0; i < R; i++) {
                a[i] = _mm256_fmadd_ps(ld256(dt, wp[i], c), x0, a[i]);
                b[i] = _mm256_fmadd_ps(ld256(dt, wp[i], c + 8), x1, b[i]);
            }
        }
        if (c + 8 <= c1) {
            const __m256 x0 = _mm256_loadu_ps(x + c);
#pragma GCC unroll 8
            for (int i = 0; i < R; i++) a[i] = _mm256_fmadd_ps(ld256(dt, wp[i], c), x0, a[i]);
            c += 8;
        }
        if (c < c1) {
            const __m256 x0 = ldx256_part(x + c, c1 - c);
#pragma GCC unroll 8
            for (int i = 0; i < R; i++) b[i] = _mm256_fmadd_ps(ld256_part(dt, wp[i], c, c1 - c), x0, b[i]);
        }
#pragma GCC unroll 8
        for (int i = 0; i < R; i++) {
            const __m256 s = _mm256_add_ps(a[i], b[i]);
            if (dt == FR_DTYPE_F8_E4M3)
                tot[i] = _mm256_fmadd_ps(s, _mm256_set1_ps(sp[i][cb] * 256.0f), tot[i]);
            else tot[i] = _mm256_add_ps(tot[i], s);
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < R; i++) y[r0 + i] = hsum256(tot[i]);
}

static AI T256 void mv_range256_dt(fr_dtype dt, const fr_weight *w, const float *x, float *y, int64_t r,
                                   int64_t r_end) {
    for (; r + MV_ROWS_256 <= r_end; r += MV_ROWS_256) mv_group256(dt, MV_ROWS_256, w, x, y, r);
    for (; r < r_end; r++) mv_group256(dt, 1, w, x, y, r);
}

/* ---- AVX2, 4-bit formats: the AVX-512 scheme (mv_q4_group512) on 8 lanes, a chunk
 * being 64 elements (one 32-byte load, two blocks). vpermps has only 8 table entries
 * here, so the sign bit of the nibble is handled apart: MXFP4 looks up the magnitude
 * (code & 7) and moves nibble bit 3 into the f32 sign; INT4 flips bit 3 of every nibble
 * once per load (u ^ 8 is u - 8 as a two's-complement nibble), shifts the nibble to the
 * top of the lane and sign-extends it back down, then converts the integer. */

static AI T256 __m256i srl4k256(__m256i v, int k) {
    switch (k) {
    case 0: return v;
    case 1: return _mm256_srli_epi32(v, 4);
    case 2: return _mm256_srli_epi32(v, 8);
    case 3: return _mm256_srli_epi32(v, 12);
    case 4: return _mm256_srli_epi32(v, 16);
    case 5: return _mm256_srli_epi32(v, 20);
    case 6: return _mm256_srli_epi32(v, 24);
    default: return _mm256_srli_epi32(v, 28);
    }
}

/* v << (28 - 4k): nibble k to bits 28..31. */
static AI T256 __m256i sll4k256(__m256i v, int k) {
    switch (k) {
    case 0: return _mm256_slli_epi32(v, 28);
    case 1: return _mm256_slli_epi32(v, 24);
    case 2: return _mm256_slli_epi32(v, 20);
    case 3: return _mm256_slli_epi32(v, 16);
    case 4: return _mm256_slli_epi32(v, 12);
    case 5: return _mm256_slli_epi32(v, 8);
    case 6: return _mm256_slli_epi32(v, 4);
    default: return v;
    }
}

/* As q4_scales512 for 8 blocks; a short end of the row goes through a zeroed copy. */
static AI T256 void q4_scales256(fr_dtype dt, const uint8_t *srow, int64_t b0, int64_t left, float *out) {
    const size_t es = dt == FR_DTYPE_MXFP4 ? 1 : 2;
    uint8_t tmp[16] = {0};
    const uint8_t *src = srow + (size_t)b0 * es;
    if (left < 8) {
        memcpy(tmp, src, (size_t)left * es);
        src = tmp;
    }
    __m256i bits;
    if (dt == FR_DTYPE_MXFP4) {
        const __m256i e = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)src));
        const __m256i edge = _mm256_cmpeq_epi32(
            _mm256_and_si256(_mm256_add_epi32(e, _mm256_set1_epi32(1)), _mm256_set1_epi32(0xFE)),
            _mm256_setzero_si256());
        bits =
            _mm256_or_si256(_mm256_slli_epi32(e, 23), _mm256_and_si256(edge, _mm256_set1_epi32(0x00400000)));
    } else {
        bits = _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)src)), 16);
    }
    _mm256_store_ps(out, _mm256_castsi256_ps(bits));
}

/* 8 weights of chunk word vector `raw`, nibble k of each lane, unscaled (see above;
 * for INT4 raw has had every nibble's bit 3 flipped). */
static AI T256 __m256 q4_nib256(fr_dtype dt, __m256i raw, int k, __m256 mag) {
    if (dt == FR_DTYPE_MXFP4) {
        const __m256i sign = _mm256_and_si256(sll4k256(raw, k), _mm256_set1_epi32((int)0x80000000u));
        return _mm256_xor_ps(_mm256_permutevar8x32_ps(mag, srl4k256(raw, k)), _mm256_castsi256_ps(sign));
    }
    return _mm256_cvtepi32_ps(_mm256_srai_epi32(sll4k256(raw, k), 28));
}

/* y[r0 .. r0+R) for R consecutive rows; xp is x after q4_prep_x(8). */
static AI T256 void mv_q4_group256(fr_dtype dt, int R, const fr_weight *w, const float *xp, float *y,
                                   int64_t r0) {
    const int64_t nb = w->cols / 32, nch = (nb + 1) / 2;
    const __m256 mag = _mm256_loadu_ps(fr_e2m1_table); /* codes 0..7 */
    const __m256i pair = _mm256_set_epi32(1, 1, 1, 1, 0, 0, 0, 0);
    const uint8_t *wp[MV_ROWS_256], *sp[MV_ROWS_256];
    _Alignas(32) float sb[MV_ROWS_256][8];
    __m256 tot[MV_ROWS_256];
#pragma GCC unroll 8
    for (int i = 0; i < R; i++) {
        wp[i] = q4_row(w, r0 + i);
        sp[i] = q4_srow(dt, w, r0 + i);
        tot[i] = _mm256_setzero_ps();
    }
    for (int64_t j0 = 0; j0 < nch; j0 += 4) { /* 4 chunks = 8 blocks per scale vector */
#pragma GCC unroll 8
        for (int i = 0; i < R; i++) {
            __builtin_prefetch(sp[i] + (size_t)(2 * j0 + Q4_PF_SCALES) * (dt == FR_DTYPE_MXFP4 ? 1 : 2), 0, 3);
            q4_scales256(dt, sp[i], 2 * j0, nb - 2 * j0, sb[i]);
        }
        for (int64_t j = j0; j < j0 + 4 && j < nch; j++) {
            const int64_t left = nb - 2 * j;
            __m256i raw[MV_ROWS_256];
#pragma GCC unroll 8
            for (int i = 0; i < R; i++) {
                if (left >= 2) {
                    if ((j & 1) == 0) __builtin_prefetch(wp[i] + 32 * j + Q4_PF_AHEAD, 0, 3);
                    raw[i] = _mm256_loadu_si256((const __m256i *)(wp[i] + 32 * j));
                } else { /* one block left: the other four words are not read (maskload) */
                    raw[i] = _mm256_maskload_epi32((const int *)(const void *)(wp[i] + 32 * j),
                                                   _mm256_set_epi32(0, 0, 0, 0, -1, -1, -1, -1));
                }
                if (dt == FR_DTYPE_INT4)
                    raw[i] = _mm256_xor_si256(raw[i], _mm256_set1_epi32((int)0x88888888u));
            }
            const float *xc = xp + 64 * j;
            __m256 acc[MV_ROWS_256];
#pragma GCC unroll 8
            for (int k = 0; k < 8; k++) {
                const __m256 xk = _mm256_load_ps(xc + 8 * k);
#pragma GCC unroll 8
                for (int i = 0; i < R; i++) {
                    const __m256 v = q4_nib256(dt, raw[i], k, mag);
                    acc[i] = k == 0 ? _mm256_mul_ps(v, xk) : _mm256_fmadd_ps(v, xk, acc[i]);
                }
            }
            const __m256i idx = _mm256_add_epi32(pair, _mm256_set1_epi32(2 * (int)(j & 3)));
#pragma GCC unroll 8
            for (int i = 0; i < R; i++)
                tot[i] =
                    _mm256_fmadd_ps(acc[i], _mm256_permutevar8x32_ps(_mm256_load_ps(sb[i]), idx), tot[i]);
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < R; i++) y[r0 + i] = hsum256(tot[i]);
}

static AI T256 void mv_q4_range256(fr_dtype dt, const fr_weight *w, const float *xp, float *y, int64_t r,
                                   int64_t r_end) {
    for (; r + MV_ROWS_256 <= r_end; r += MV_ROWS_256) mv_q4_group256(dt, MV_ROWS_256, w, xp, y, r);
    for (; r < r_end; r++) mv_q4_group256(dt, 1, w, xp, y, r);
}

/* 8 weights in element order from the 4 bytes at p (unscaled), through the full
 * 16-entry table: two 8-entry lookups and a blend on nibble bit 3. */
static AI T256 __m256 ld256_q4(const float *lut, const uint8_t *p) {
    int32_t u;
    memcpy(&u, p, 4);
    const __m256i b = _mm256_cvtepu8_epi32(_mm_cvtsi32_si128(u));
    const __m256i t =
        _mm256_srlv_epi32(_mm256_permutevar8x32_epi32(b, _mm256_set_epi32(3, 3, 2, 2, 1, 1, 0, 0)),
                          _mm256_set_epi32(4, 0, 4, 0, 4, 0, 4, 0));
    const __m256 lo = _mm256_permutevar8x32_ps(_mm256_loadu_ps(lut), t);
    const __m256 hi = _mm256_permutevar8x32_ps(_mm256_loadu_ps(lut + 8), t);
    return _mm256_blendv_ps(lo, hi, _mm256_castsi256_ps(_mm256_slli_epi32(t, 28)));
}


/* As mt_q4_strip512: one block (32 columns, four vectors) from c0. */
static AI T256 void mt_q4_block256(fr_dtype dt, const fr_weight *w, const float *x, float *y, int64_t c0) {
    const float *lt = q4_lut(dt);
    __m256 acc[4];
#pragma GCC unroll 4
    for (int j = 0; j < 4; j++) acc[j] = _mm256_setzero_ps();
    for (int64_t r = 0; r < w->rows; r++) {
        const uint8_t *p = q4_row(w, r) + c0 / 2;
        const __m256 s = _mm256_set1_ps(q4_scale(dt, q4_srow(dt, w, r), c0 / 32));
        const __m256 xr = _mm256_set1_ps(x[r]);
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++)
            acc[j] = _mm256_fmadd_ps(_mm256_mul_ps(ld256_q4(lt, p + 4 * j), s), xr, acc[j]);
    }
#pragma GCC unroll 4
    for (int j = 0; j < 4; j++) _mm256_storeu_ps(y + c0 + 8 * j, acc[j]);
}

static T256 void mv_range256(const fr_weight *w, const float *x, float *y, int64_t r, int64_t r_end) {
    switch (w->dtype) {
    case FR_DTYPE_MXFP4: mv_q4_range256(FR_DTYPE_MXFP4, w, x, y, r, r_end); break;
    case FR_DTYPE_INT4: mv_q4_range256(FR_DTYPE_INT4, w, x, y, r, r_end); break;
    case FR_DTYPE_F32: mv_range256_dt(FR_DTYPE_F32, w, x, y, r, r_end); break;
    case FR_DTYPE_F16: mv_range256_dt(FR_DTYPE_F16, w, x, y, r, r_end); break;
    case FR_DTYPE_BF16: mv_range256_dt(FR_DTYPE_BF16, w, x, y, r, r_end); break;
    default: mv_range256_dt(FR_DTYPE_F8_E4M3, w, x, y, r, r_end); break;
    }
}




static AI T256 __m256 scale_vec256(const fr_weight *w, const float *srow, int64_t c0) {
    float s[8];
    for (int l = 0; l < 8; l++) s[l] = c0 + l < w->cols ? srow[(c0 + l) / w->block_cols] * 256.0f : 0.0f;
    return _mm256_loadu_ps(s);
}

/* As mt_strip512 with NV vectors of 8 columns; the last holds `last` (1..8) columns. */
static AI T256 void mt_strip256(fr_dtype dt, int NV, const fr_weight *w, const float *x, float *y, int64_t c0,
                                int64_t last) {
    const int64_t rows = w->rows;
    const size_t stride = (size_t)w->cols * esize(dt);
    const uint8_t *base = (const uint8_t *)w->data;
    __m256 tot[4], acc[4];
#pragma GCC unroll 8
    for (int j = 0; j < NV; j++) tot[j] = _mm256_setzero_ps();
    for (int64_t r = 0; r < rows;) {
        int64_t r1 = rows, rb = 0;
        if (dt == FR_DTYPE_F8_E4M3) {
            rb = (w->row0 + r) / w->block_rows;
            r1 = min64(rows, (rb + 1) * w->block_rows - w->row0);
        }
#pragma GCC unroll 8
        for (int j = 0; j < NV; j++) acc[j] = _mm256_setzero_ps();
        for (; r < r1; r++) {
            const __m256 xr = _mm256_set1_ps(x[r]);
            const uint8_t *rp = base + (size_t)r * stride;
#pragma GCC unroll 8
            for (int j = 0; j < NV; j++) {
                const __m256 v = j == NV - 1 && last < 8 ? ld256_part(dt, rp, c0 + 8 * j, last)
                                                         : ld256(dt, rp, c0 + 8 * j);
                acc[j] = _mm256_fmadd_ps(v, xr, acc[j]);
            }
        }
#pragma GCC unroll 8
        for (int j = 0; j < NV; j++) {
            if (dt == FR_DTYPE_F8_E4M3)
                tot[j] = _mm256_fmadd_ps(
                    acc[j], scale_vec256(w, w->scale_inv + rb * w->scale_cols, c0 + 8 * j), tot[j]);
            else tot[j] = acc[j];
        }
    }
#pragma GCC unroll 8
    for (int j = 0; j < NV; j++) {
        if (j == NV - 1 && last < 8) {
            float tmp[8];
            _mm256_storeu_ps(tmp, tot[j]);
            memcpy(y + c0 + 8 * j, tmp, (size_t)last * sizeof(float));
        } else {
            _mm256_storeu_ps(y + c0 + 8 * j, tot[j]);
        }
    }
}

static AI T256 void mt_range256_dt(fr_dtype dt, const fr_weight *w, const float *x, float *y, int64_t c,
                                   int64_t c1) {
    for (; c + 32 <= c1; c += 32) mt_strip256(dt, 4, w, x, y, c, 8);
    for (; c < c1; c += 8) mt_strip256(dt, 1, w, x, y, c, min64(8, c1 - c));
}

static T256 void mt_range256(const fr_weight *w, const float *x, float *y, int64_t c0, int64_t c1) {
    if (is_q4(w->dtype)) { /* c1 - c0 is a multiple of 32 */
        for (int64_t c = c0; c < c1; c += 32) {
            if (w->dtype == FR_DTYPE_MXFP4)
                mt_q4_block256(FR_DTYPE_MXFP4, w, x, y, c);
            else
                mt_q4_block256(FR_DTYPE_INT4, w, x, y, c);
        }
        return;
    }
    switch (w->dtype) {
    case FR_DTYPE_F32: mt_range256_dt(FR_DTYPE_F32, w, x, y, c0, c1); break;
    case FR_DTYPE_F16: mt_range256_dt(FR_DTYPE_F16, w, x, y, c0, c1); break;
    case FR_DTYPE_BF16: mt_range256_dt(FR_DTYPE_BF16, w, x, y, c0, c1); break;
    default: mt_range256_dt(FR_DTYPE_F8_E4M3, w, x, y, c0, c1); break;
    }
}

/* As sum512. */
static T256 uint64_t sum256(const uint64_t *p, size_t words) {
    const size_t len = words / 8 / 8 * 8;
    __m256i acc[8];
#pragma GCC unroll 8
    for (int s = 0; s < 8; s++) acc[s] = _mm256_setzero_si256();
    for (size_t i = 0; i < len; i += 8) {
#pragma GCC unroll 8
        for (int s = 0; s < 8; s++) {
            const uint64_t *q = p + s * len + i;
            __builtin_prefetch((const uint8_t *)q + PF_AHEAD, 0, 3);
            acc[s] = _mm256_add_epi64(acc[s], _mm256_loadu_si256((const __m256i *)q));
            acc[s] = _mm256_add_epi64(acc[s], _mm256_loadu_si256((const __m256i *)(q + 4)));
        }
    }
#pragma GCC unroll 8
    for (int s = 1; s < 8; s++) acc[0] = _mm256_add_epi64(acc[0], acc[s]);
    uint64_t lanes[4];
    _mm256_storeu_si256((__m256i *)lanes, acc[0]);
    uint64_t sum = lanes[0] + lanes[1] + lanes[2] + lanes[3];
    for (size_t i = 8 * len; i < words; i++) sum += p[i];
    return sum;
}

#endif /* FR_X86 */

/* =================================================================== portable */

static AI void mv_row_portable_dt(fr_dtype dt, const fr_weight *w, const float *x, float *y, int64_t r) {
    const int64_t K = w->cols, seg = seg_len(w);
    const uint8_t *p = row_ptr(w, r);
    const float *sp = dt == FR_DTYPE_F8_E4M3 ? scale_row(w, r) : NULL;
    float tot = 0.0f;
    for (int64_t c0 = 0, cb = 0; c0 < K; c0 += seg, cb++) {
        const int64_t c1 = min64(c0 + seg, K);
        float acc[4] = {0, 0, 0, 0}; /* four chains, as the vector paths have lanes */
        int64_t c = c0;
        for (; c + 4 <= c1; c += 4)
            for (int j = 0; j < 4; j++) acc[j] += x[c + j] * elem(dt, p, c + j);
        for (; c < c1; c++) acc[0] += x[c] * elem(dt, p, c);
        const float s = (acc[0] + acc[1]) + (acc[2] + acc[3]);
        tot += sp ? s * sp[cb] : s;
    }
    y[r] = tot;
}

/* 4-bit row in element order: each block's sum (four chains) times its scale. */
static AI void mv_q4_row_portable(fr_dtype dt, const fr_weight *w, const float *x, float *y, int64_t r) {
    const float *lut = q4_lut(dt);
    const uint8_t *p = q4_row(w, r), *sr = q4_srow(dt, w, r);
    float tot = 0.0f;
    for (int64_t b = 0; b < w->cols / 32; b++) {
        const uint8_t *pb = p + 16 * b;
        const float *xb = x + 32 * b;
        float acc[4] = {0, 0, 0, 0};
        for (int j = 0; j < 16; j += 2)
            for (int l = 0; l < 2; l++) {
                acc[2 * l] += lut[pb[j + l] & 15] * xb[2 * (j + l)];
                acc[2 * l + 1] += lut[pb[j + l] >> 4] * xb[2 * (j + l) + 1];
            }
        tot += ((acc[0] + acc[1]) + (acc[2] + acc[3])) * q4_scale(dt, sr, b);
    }
    y[r] = tot;
}

static void mv_range_portable(const fr_weight *w, const float *x, float *y, int64_t r, int64_t r_end) {
    for (; r < r_end; r++) {
        switch (w->dtype) {
        case FR_DTYPE_MXFP4: mv_q4_row_portable(FR_DTYPE_MXFP4, w, x, y, r); break;
        case FR_DTYPE_INT4: mv_q4_row_portable(FR_DTYPE_INT4, w, x, y, r); break;
        case FR_DTYPE_F32: mv_row_portable_dt(FR_DTYPE_F32, w, x, y, r); break;
        case FR_DTYPE_F16: mv_row_portable_dt(FR_DTYPE_F16, w, x, y, r); break;
        case FR_DTYPE_BF16: mv_row_portable_dt(FR_DTYPE_BF16, w, x, y, r); break;
        default: mv_row_portable_dt(FR_DTYPE_F8_E4M3, w, x, y, r); break;
        }
    }
}

static void cvt_row_portable(const fr_weight *w, int64_t r, int64_t c0, int64_t c1, float *out) {
    const fr_dtype dt = w->dtype;
    if (is_q4(dt)) {
        const float *lut = q4_lut(dt);
        const uint8_t *p = q4_row(w, r), *sr = q4_srow(dt, w, r);
        for (int64_t c = c0; c < c1; c++) out[c - c0] = q4_elem(lut, p, c) * q4_scale(dt, sr, c / 32);
        return;
    }
    const uint8_t *p = row_ptr(w, r);
    if (dt == FR_DTYPE_F8_E4M3) {
        const float *sp = scale_row(w, r);
        const int64_t seg = w->block_cols;
        for (int64_t c = c0; c < c1; c++) out[c - c0] = fr_e4m3_to_f32(p[c]) * sp[c / seg];
        return;
    }
    for (int64_t c = c0; c < c1; c++) out[c - c0] = elem(dt, p, c);
}


/* Portable transposed product for one token: y[c0 .. c1) by rows, each row's piece
 * converted once (block scale included) into a small buffer and added in. */
static void mt_range_portable(const fr_weight *w, const float *x, float *y, int64_t c0, int64_t c1) {
    float buf[256];
    for (int64_t a = c0; a < c1; a += 256) {
        const int64_t b = min64(a + 256, c1);
        for (int64_t c = a; c < b; c++) y[c] = 0.0f;
        for (int64_t r = 0; r < w->rows; r++) {
            cvt_row_portable(w, r, a, b, buf);
            for (int64_t c = a; c < b; c++) y[c] += x[r] * buf[c - a];
        }
    }
}

static uint64_t sum_portable(const uint64_t *p, size_t words) {
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    size_t i = 0;
    for (; i + 4 <= words; i += 4) {
        s0 += p[i];
        s1 += p[i + 1];
        s2 += p[i + 2];
        s3 += p[i + 3];
    }
    for (; i < words; i++) s0 += p[i];
    return s0 + s1 + s2 + s3;
}

/* ================================================================== dispatch */

typedef void (*mv_fn)(const fr_weight *, const float *, float *, int64_t, int64_t);
typedef void (*mt_fn)(const fr_weight *, const float *, float *, int64_t, int64_t);
typedef uint64_t (*sum_fn)(const uint64_t *, size_t);
typedef void (*mvn_fn)(const fr_weight *, const float *, int64_t, float *, int64_t, int64_t);
typedef void (*mvnq_fn)(const fr_weight *, const float *, int64_t, int64_t, float *, int64_t, int64_t);

typedef struct {
    mv_fn mv;
    mt_fn mt;
    sum_fn sum;
    int q4_lanes; /* > 0: mv takes 4-bit rows against q4_prep_x(x, K, q4_lanes), not x */
    bool q8;      /* ... or against q8_prep_x(x, K, dtype) (the VNNI path) */
    mvn_fn mvn;   /* several tokens at once, 8- and 16-bit formats (portable: all formats) */
    mvnq_fn mvnq; /* several tokens at once, 4-bit formats against q4_prep_x rows ldx apart */
} kernels;

/* The multi-token matvec of the ISAs without a fused one: each token through the
 * matvec (so, as with AVX-512, alone or batched gives the same bits), 16 rows at a
 * time so that the later tokens find the rows in cache. */
#define MVN_ROW_BLOCK 16
#define MVN_BY_TOKEN(name, mv)                                                                     \
    static void name(const fr_weight *w, const float *x, int64_t n, float *y, int64_t r0, int64_t r1) { \
        for (int64_t r = r0; r < r1; r += MVN_ROW_BLOCK)                                           \
            for (int64_t t = 0; t < n; t++) mv(w, x + t * w->cols, y + t * w->rows, r, min64(r + MVN_ROW_BLOCK, r1)); \
    }
MVN_BY_TOKEN(mvn_range_portable, mv_range_portable)
#if defined(FR_X86)
MVN_BY_TOKEN(mvn_range256, mv_range256)
static void mvnq_range256(const fr_weight *w, const float *xp, int64_t ldx, int64_t n, float *y, int64_t r0,
                          int64_t r1) {
    for (int64_t r = r0; r < r1; r += MVN_ROW_BLOCK)
        for (int64_t t = 0; t < n; t++) mv_range256(w, xp + t * ldx, y + t * w->rows, r, min64(r + MVN_ROW_BLOCK, r1));
}
#endif

static kernels pick(fr_isa isa) {
#if defined(FR_X86)
    if (isa == FR_ISA_AVX512VNNI)
        return (kernels){mv_range512v, mt_range512, sum512, 16, true, mvn_range512, mvnq_range512v};
    if (isa == FR_ISA_AVX512) return (kernels){mv_range512, mt_range512, sum512, 16, false, mvn_range512, mvnq_range512};
    if (isa == FR_ISA_AVX2) return (kernels){mv_range256, mt_range256, sum256, 8, false, mvn_range256, mvnq_range256};
#else
    (void)isa;
#endif
    return (kernels){mv_range_portable, mt_range_portable, sum_portable, 0, false, mvn_range_portable, NULL};
}

/* Kernels see only F32/F16/BF16/F8 views with sane FP8 blocking, and 4-bit views in
 * the one shape they read: an FP8 view without scales reads as scale 1 and
 * non-positive block sizes as one block, so a malformed view gives wrong numbers
 * rather than a crash. Returns false for dtypes that have no product, and for MXFP4 and
 * INT4 views without scales, with a group other than 32 or with cols not a multiple of
 * 32 (the loader never makes those): the output is then zero. */
static bool normalize(const fr_weight *w, fr_weight *out) {
    static const float one = 1.0f;
    *out = *w;
    switch (w->dtype) {
    case FR_DTYPE_F32:
    case FR_DTYPE_F16:
    case FR_DTYPE_BF16: return true;
    case FR_DTYPE_F8_E4M3:
        if (!w->scale_inv) {
            out->scale_inv = &one;
            out->row0 = 0;
            out->scale_cols = 0;
            out->block_rows = out->block_cols = INT32_MAX;
        }
        if (out->block_rows <= 0) out->block_rows = INT32_MAX;
        if (out->block_cols <= 0) out->block_cols = INT32_MAX;
        return true;
    case FR_DTYPE_MXFP4:
    case FR_DTYPE_INT4: return w->data && w->scales && w->group == 32 && w->cols % 32 == 0;
    default: return false;
    }
}

/* ------------------------------------------------------- products in groups */

/* A product of a group, resolved for the kernels. */
typedef struct {
    fr_weight w; /* normalized view */
    float *y;
    const float *src; /* the caller's x */
    const float *x;   /* what the kernels read: src, or its q4_prep_x rows */
    int64_t n, ldx;   /* tokens; floats from one token's x to the next */
    int64_t groups;   /* row groups of MV_SPLIT rows */
    bool prepared;    /* 4-bit rows against prepared x (the vector ISAs' kernels) */
} mm_job;

/* Several tokens of a matrix go through the multi-token matvec whatever their number:
 * every token's sums are then formed as the single-token matvec forms them, so no result
 * depends on how tokens were batched or a prompt was chunked (a greedy request gives the
 * same tokens alone or in any batch). A tiled gemm (f32 panels, 4x4 register tiles) was
 * ~15% faster at prefill sizes for BF16 (2048 x 11264, 2 cores: n=512 152 ms against
 * 183 ms) but slower for 4-bit weights at every size and for all formats at decode
 * sizes; batch invariance decided it. */
static void run_rows(const mm_job *j, const kernels *k, int64_t r0, int64_t r1) {
    if (j->n == 1) k->mv(&j->w, j->x, j->y, r0, r1);
    else if (j->prepared) k->mvnq(&j->w, j->x, j->ldx, j->n, j->y, r0, r1);
    else k->mvn(&j->w, j->x, j->n, j->y, r0, r1);
}

/* Floats a prepared row of x takes for job j. */
static int64_t prep_len(const mm_job *j, const kernels *k) {
#if defined(FR_X86)
    if (k->q8) return q8_prep_len(j->w.cols);
#endif
    return q4_prep_len(j->w.cols, k->q4_lanes);
}

static void prep_x(const mm_job *j, const kernels *k, const float *x, float *xp) {
#if defined(FR_X86)
    if (k->q8) {
        q8_prep_x(x, j->w.cols, j->w.dtype, xp);
        return;
    }
#endif
    q4_prep_x(x, j->w.cols, k->q4_lanes, xp);
}

/* q4_prep_x (or q8_prep_x) of every 4-bit job's x into one buffer; jobs with the same x
 * (gate and up of an expert; at batch 1 every expert's) share its rows. False when out
 * of memory. */
static bool prepare_q4(mm_job *jobs, int count, const kernels *k, float **buf) {
    int64_t total = 0;
    for (int i = 0; i < count; i++)
        if (jobs[i].prepared) total += jobs[i].n * prep_len(&jobs[i], k);
    *buf = NULL;
    if (!total) return true;
    float *xp = aligned_alloc(64, (size_t)total * sizeof(float));
    if (!xp) return false;
    int64_t used = 0;
    for (int i = 0; i < count; i++) {
        mm_job *j = &jobs[i];
        if (!j->prepared) continue;
        j->ldx = prep_len(j, k);
        int p = 0; /* q8 rows depend on the format too (offsets, the MXFP4 factor 1/2) */
        while (p < i && !(jobs[p].prepared && jobs[p].src == j->src && jobs[p].n == j->n &&
                          jobs[p].w.cols == j->w.cols && (!k->q8 || jobs[p].w.dtype == j->w.dtype)))
            p++;
        if (p < i) {
            j->x = jobs[p].x;
            continue;
        }
        float *dst = xp + used;
        for (int64_t t = 0; t < j->n; t++) prep_x(j, k, j->src + t * j->w.cols, dst + t * j->ldx);
        used += j->n * j->ldx;
        j->x = dst;
    }
    *buf = xp;
    return true;
}

/* Resolves items into jobs (zeroing the outputs of views the kernels cannot read) and
 * returns how many there are. */
static int make_jobs(const fr_matmul_item *items, int count, const kernels *k, mm_job *jobs) {
    int m = 0;
    for (int i = 0; i < count; i++) {
        const fr_matmul_item *it = &items[i];
        if (it->n <= 0 || it->w->rows <= 0) continue;
        mm_job *j = &jobs[m];
        if (it->w->cols <= 0 || !normalize(it->w, &j->w)) {
            memset(it->y, 0, (size_t)it->n * (size_t)it->w->rows * sizeof(float));
            continue;
        }
        j->y = it->y;
        j->src = j->x = it->x;
        j->n = it->n;
        j->ldx = j->w.cols;
        j->groups = (j->w.rows + MV_SPLIT - 1) / MV_SPLIT;
        j->prepared = is_q4(j->w.dtype) && k->q4_lanes > 0;
        m++;
    }
    return m;
}

/* Each job's row groups are cut into one contiguous run per thread, and each thread
 * goes through its runs job after job: every thread streams the same mix of formats
 * (which run at different speeds: a BF16 shared expert beside MXFP4 routed ones), so
 * they finish together, and a group of small matrices costs one fork/join. */
static void run_jobs(const mm_job *jobs, int count, const kernels *k) {
    int64_t elems = 0, groups = 0;
    for (int i = 0; i < count; i++) {
        elems += jobs[i].w.rows * jobs[i].w.cols * jobs[i].n;
        if (jobs[i].groups > groups) groups = jobs[i].groups;
    }
    /* Inside a parallel region (attention's per-head products) a nested one would get
     * one thread and still cost its setup. */
    int64_t chunks = omp_in_parallel() ? 1 : omp_get_max_threads();
    if (chunks > groups) chunks = groups;
    if (elems < PAR_MIN_ELEMS || chunks < 2) {
        for (int i = 0; i < count; i++) run_rows(&jobs[i], k, 0, jobs[i].w.rows);
        return;
    }
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < chunks; c++)
        for (int i = 0; i < count; i++) {
            const int64_t g = jobs[i].groups, g0 = g * c / chunks, g1 = g * (c + 1) / chunks;
            if (g0 < g1) run_rows(&jobs[i], k, g0 * MV_SPLIT, min64(g1 * MV_SPLIT, jobs[i].w.rows));
        }
}

void fr_cpu_matmul_group(const fr_matmul_item *items, int count) {
    if (count <= 0) return;
    kernels k = pick(fr_isa_active());
    mm_job stack_jobs[16], *jobs = count <= 16 ? stack_jobs : malloc((size_t)count * sizeof *jobs);
    if (!jobs) { /* out of memory: one item at a time */
        for (int i = 0; i < count; i++) fr_cpu_matmul_group(&items[i], 1);
        return;
    }
    const int m = make_jobs(items, count, &k, jobs);
    float *xp = NULL;
    if (!prepare_q4(jobs, m, &k, &xp)) { /* out of memory: the portable kernels read x as it is */
        k = pick(FR_ISA_PORTABLE);
        for (int i = 0; i < m; i++) jobs[i].prepared = false;
    }
    run_jobs(jobs, m, &k);
    free(xp);
    if (jobs != stack_jobs) free(jobs);
}

void fr_cpu_matmul(float *y, const float *x, int64_t n, const fr_weight *w) {
    const fr_matmul_item item = {y, x, n, w};
    fr_cpu_matmul_group(&item, 1);
}

/* Transposed product: work items are T_CW-column stripes of y (disjoint, so no
 * reduction between threads). Within a stripe the tokens go one after another, so
 * the stripe's weights (rows x T_CW) are widened again for every token but come
 * from cache after the first; this product is used on small per-head slices. */
void fr_cpu_matmul_t(float *y, const float *x, int64_t n, const fr_weight *w) {
    if (n <= 0 || w->cols <= 0) return;
    const int64_t rows = w->rows, C = w->cols;
    fr_weight v;
    if (rows <= 0 || !normalize(w, &v)) {
        memset(y, 0, (size_t)n * (size_t)C * sizeof(float));
        return;
    }
    const kernels k = pick(fr_isa_active());
    const int64_t nch = (C + T_CW - 1) / T_CW;
    const bool par = rows * C * n >= PAR_MIN_ELEMS && nch > 1 && !omp_in_parallel();
#pragma omp parallel for schedule(static) if (par)
    for (int64_t ch = 0; ch < nch; ch++) {
        const int64_t c0 = ch * T_CW, c1 = min64(c0 + T_CW, C);
        for (int64_t t = 0; t < n; t++) k.mt(&v, x + t * rows, y + t * C, c0, c1);
    }
}

/* ================================================================= bandwidth */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Keeps the sums observable so the passes cannot be optimized away. */
static volatile uint64_t bw_sink;

/* Returns 0 when the buffer cannot be allocated. */
double fr_cpu_read_bandwidth(size_t bytes, int threads) {
    if (threads <= 0) threads = omp_get_max_threads();
    size_t lines = (bytes + 63) / 64;
    if (lines == 0) lines = 1;
    uint64_t *buf = fr_big_alloc(lines * 64); /* the pages the weights get (core/bigmem.h) */
    if (!buf) return 0.0;
    const size_t words = lines * 8;
    /* Work in 128 KiB pieces with a static schedule: each thread gets one contiguous
     * run, and touching with the same schedule places pages where they are read. */
    const size_t piece = 16384;
    const int64_t pieces = (int64_t)((words + piece - 1) / piece);
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t i = 0; i < pieces; i++) {
        const size_t a = (size_t)i * piece, b = a + piece < words ? a + piece : words;
        for (size_t j = a; j < b; j++) buf[j] = j * 0x9E3779B97F4A7C15ull;
    }
    const sum_fn sum = pick(fr_isa_active()).sum;
    double best = 0.0;
    for (int pass = 0; pass < 5; pass++) {
        uint64_t s = 0;
        const double t0 = now_s();
#pragma omp parallel for schedule(static) num_threads(threads) reduction(+ : s)
        for (int64_t i = 0; i < pieces; i++) {
            const size_t a = (size_t)i * piece, len = a + piece < words ? piece : words - a;
            s += sum(buf + a, len);
        }
        const double dt = now_s() - t0;
        bw_sink = bw_sink + s;
        if (dt > 0 && (double)(words * 8) / dt > best) best = (double)(words * 8) / dt;
    }
    free(buf);
    return best;
}
