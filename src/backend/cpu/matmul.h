/* matmul.h - CPU matrix products over weights in their stored format.
 *
 * Activations are float32; weights are F32, F16, BF16, FP8-E4M3 with 128x128
 * (or any block_rows x block_cols) `weight_scale_inv` blocks, MXFP4 or INT4 with one
 * scale per 32 inputs (see core/weight.h), always read in their stored format.
 * Each product picks an instruction-set path at run time (AVX-512, AVX2+FMA+F16C,
 * portable C) and splits the work over OpenMP threads. All paths accumulate in
 * float32 and agree with the scalar definition to rounding, except one: with
 * AVX-512 VNNI and VBMI (FR_ISA_AVX512VNNI) a 4-bit product first rounds x to int8,
 * per block of 32 inputs: q = rint(x * (127 / amax)) in f32 (ties to even), where amax
 * is the block's largest |x|, and x is read as q * (amax / 127); a block whose amax is
 * Inf or NaN reads as NaN. The integer dot products are exact (vpdpbusd), so the result
 * is the scalar definition applied to that rounded x, to f32 rounding. The rounding
 * moves each input by at most amax / 254: llama.cpp and others make the same trade
 * for their 4-bit CPU products; it doubles the kernels' speed (they were
 * compute-bound). FR_ISA=avx512 keeps the f32 activations. */
#ifndef FR_CPU_MATMUL_H
#define FR_CPU_MATMUL_H

#include <stddef.h>
#include <stdint.h>

#include "../../core/weight.h"

typedef enum { FR_ISA_PORTABLE = 0, FR_ISA_AVX2 = 1, FR_ISA_AVX512 = 2, FR_ISA_AVX512VNNI = 3 } fr_isa;

/* Best path this CPU supports (cpuid), lowered by fr_isa_set_limit(). */
fr_isa fr_isa_active(void);
/* Cap the path used (tests run every path; FR_ISA env var "portable"/"avx2"/"avx512"/
 * "avx512vnni" too). */
void fr_isa_set_limit(fr_isa limit);
const char *fr_isa_name(fr_isa isa);

/* y[t, r] = sum_c x[t, c] * W[r, c]     x: [n, w->cols], y: [n, w->rows] (overwritten). */
void fr_cpu_matmul(float *y, const float *x, int64_t n, const fr_weight *w);

/* One product of a group: as fr_cpu_matmul(y, x, n, w). */
typedef struct {
    float *y;
    const float *x;
    int64_t n;
    const fr_weight *w;
} fr_matmul_item;

/* Independent products in one parallel region: each thread takes its share of every
 * item's rows, item after item, so the small matrices of a MoE layer stream back to
 * back rather than paying a fork/join each. Every output is bitwise what fr_cpu_matmul
 * gives for the item alone. Outputs must not overlap each other or any input. */
void fr_cpu_matmul_group(const fr_matmul_item *items, int count);

/* y[t, c] = sum_r x[t, r] * W[r, c]     x: [n, w->rows], y: [n, w->cols] (overwritten).
 * The transposed product, used to absorb kv_b_proj's key half into the query. */
void fr_cpu_matmul_t(float *y, const float *x, int64_t n, const fr_weight *w);

/* Measured streaming-read bandwidth of this machine in bytes/second: the best of a
 * few passes summing a buffer of `bytes` (much larger than the caches) with
 * `threads` OpenMP threads. The ceiling that `frontier bench` reports against. */
double fr_cpu_read_bandwidth(size_t bytes, int threads);

#endif
