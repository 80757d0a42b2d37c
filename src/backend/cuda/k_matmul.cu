/* k_matmul.cu - y[n, rows] = x[n, cols] · Wᵀ over weights in their stored format.
 *
 * Two kernels, chosen by the number of tokens:
 *
 *   - decode GEMV (n <= MM_GEMV_MAX_N). Every weight byte must come from DRAM once, at
 *     the bandwidth limit (H200: ~4.8 TB/s, ~18 bytes per SM per clock). A warp owns
 *     4 rows (2 at 8 tokens per block, to spare registers) and its lanes walk them in
 *     16-byte chunks (uint4), lane l taking chunks l, l + FR_WARP, ...: each iteration has
 *     one independent 16-byte load per row in flight per thread, and the rows share
 *     every load of x (float4, from L1/L2), which keeps the L1 traffic for x at 1/4 float
 *     per weight element and token: with one row per warp the 4-bit formats would be
 *     L1-bound already at n = 1. Decoding is done in registers with bit tricks (the
 *     4-bit nibbles through a 16-entry shared table, conflict-free since its 16 words
 *     sit in 16 distinct banks); an FP8 block scale is folded into each decoded weight
 *     (one multiply, which the decoder needs anyway), a 4-bit group scale multiplies the
 *     chunk's sum (a chunk is exactly one 32-element group). A block (256 threads) serves
 *     up to MM_NT tokens; more tokens become more blocks over the same rows, placed next
 *     to each other in the grid so that their weight reads meet in L2 rather than DRAM.
 *     Past ~32 tokens that L2 traffic and the FMA count favour the tiled kernel.
 *     When rows are too few to keep the GPU's memory pipes full (a 576- or 2112-row
 *     projection is 144 / 528 warps against the ~8000 an H200 can hold) the columns are
 *     split (split-K): each split writes partial sums to scratch and a second kernel adds
 *     them in a fixed order. The split depends only on the weight's shape, never on n,
 *     so for n <= MM_GEMV_MAX_N a token's result has the same bits whatever the batch.
 *     Views whose rows or x are not 16-byte aligned, or FP8 blocks narrower than a chunk
 *     (odd shapes: tests, never checkpoints), take a plain warp-per-row kernel instead.
 *
 *   - prefill (n > MM_GEMV_MAX_N): a classic tiled GEMM, 64 rows x 64 tokens per block,
 *     K in tiles of 32 staged through shared memory with the weight tile decoded to f32
 *     on the way in, 4 x 4 outputs per thread. Correct for every format rather than peak
 *     fast: for BF16 this is where cuBLASLt (or a wgmma kernel) would replace it on real
 *     hardware; the emulator can run neither. It is split over K too when the output
 *     tiles alone would leave SMs idle.
 *
 * Both accumulate in f32; per (row, token) the sums are ordered differently from the
 * CPU's (lane-strided chunks, then a butterfly across the warp), a difference of float
 * rounding only, and the tiled kernel's order differs from the GEMV's (so n = 32 and
 * n = 33 may differ in the last bits). The fast decoders (F16, FP8) are exact for every
 * finite value; they do not reproduce F16 Inf/NaN or the E4M3 NaN code, which no
 * checkpoint weight holds. Nothing here allocates or synchronizes, except the first
 * growth of the split-K scratch (fr_cu_scratch). */
#include "cuda_internal.h"
#include "k_weight.cuh"

#include <string.h>

#if defined(FR_GPU_EMU)
#define MM_UNROLL
#else
#define MM_UNROLL _Pragma("unroll")
#endif

#define MM_THREADS 256
#define MM_WARPS (MM_THREADS / FR_WARP)
/* Rows per warp in the GEMV (mm_rpw), and in its split rule. */
#define MM_R 4
/* Tokens per GEMV block, and the largest n that goes through the GEMV. */
#define MM_NT 8
#define MM_GEMV_MAX_N 32
/* Warps the GEMV wants before it splits K: ~32 per SM (fr_cu_sm_count; 132 on an H200).
 * Each holds MM_R x 16 bytes per lane in flight, so this is ~8 MB outstanding on an H200,
 * past the ~4 MB that bandwidth x latency asks for; fewer rows than this leave the memory
 * system idle, and a 576-row product would take ~14 serial DRAM round trips per lane. */
#define MM_WARPS_PER_SM 32
#define MM_MAX_SPLIT 32
/* Tiled kernel geometry. */
#define MM_BM 64
#define MM_BN 64
#define MM_BK 32

/* Everything a kernel needs about one product; out is y, or the split-K partials
 * [splits][n][rows]. */
struct mm_args {
    const uint8_t *w;    /* row-major rows of row_bytes */
    const uint8_t *qs;   /* MXFP4 / INT4 group scales, [rows][cols / 32] */
    const float *sinv;   /* FP8 block scales, NULL for scale 1 */
    int64_t rows, cols, row_bytes;
    int64_t row0, scale_cols;
    int32_t block_rows, block_cols;
    const float *x;
    float *out;
    int64_t n;
    int64_t chunks;      /* GEMV: 16-byte chunks per row */
    int64_t split_len;   /* chunks (GEMV) or columns (tiled) per split */
    int32_t groups;      /* GEMV: token groups of MM_NT */
};

typedef void (*mm_kernel)(mm_args);

__host__ __device__ constexpr bool mm_q4(int dt) { return dt == FR_DTYPE_MXFP4 || dt == FR_DTYPE_INT4; }
/* Elements in a 16-byte chunk. */
__host__ __device__ constexpr int mm_epc(int dt) {
    return dt == FR_DTYPE_F32 ? 4 : dt == FR_DTYPE_F8_E4M3 ? 16 : mm_q4(dt) ? 32 : 8;
}
/* The factor mm_dec leaves out. */
__host__ __device__ constexpr float mm_pre(int dt) {
    return dt == FR_DTYPE_F8_E4M3 ? 0x1p120f : dt == FR_DTYPE_F16 ? 0x1p112f : 1.0f;
}
/* GEMV rows per warp: 4 share each load of x; at 8 tokens 2, where 4 rows' accumulators
 * would cost occupancy. Only the split (from the shape, with MM_R) orders the sums, so
 * this choice never changes a result. */
__host__ __device__ constexpr int mm_rpw(int nt) { return nt >= 8 ? 2 : MM_R; }

__device__ __forceinline__ int64_t mm_min(int64_t a, int64_t b) { return a < b ? a : b; }

/* The 16 nibble values of a 4-bit format (E2M1, or u - 8 for INT4). */
__device__ __forceinline__ float mm_nibble_value(int dt, uint32_t i) {
    return dt == FR_DTYPE_MXFP4 ? fr_dev_e2m1(i) : (float)((int)i - 8);
}

/* Element e (a compile-time constant once unrolled) of packed words u, unscaled and, for
 * F16 and E4M3, short of the factor mm_pre: F16's 15 magnitude bits shifted into an f32
 * are the value times 2^-112, E4M3's 7 magnitude bits in f32 bits 20..26 the value times
 * 2^-120, for normals and subnormals alike (both formats' subnormals land on f32
 * subnormals with the same scale). The caller multiplies by mm_pre, usually folded with
 * the block scale, before the value meets x: the raw products could be subnormal. */
template <int DT> __device__ __forceinline__ float mm_dec(const uint32_t *u, int e, const float *lut) {
    if (DT == FR_DTYPE_F32) return fr_dev_bits_f32(u[e]);
    if (DT == FR_DTYPE_BF16) {
        const uint32_t v = u[e >> 1];
        return fr_dev_bits_f32((e & 1) ? (v & 0xffff0000u) : (v << 16));
    }
    if (DT == FR_DTYPE_F16) {
        const uint32_t h = (u[e >> 1] >> (16 * (e & 1))) & 0xffffu;
        return fr_dev_bits_f32(((h & 0x7fffu) << 13) | ((h & 0x8000u) << 16));
    }
    if (DT == FR_DTYPE_F8_E4M3) {
        const uint32_t b = (u[e >> 2] >> (8 * (e & 3))) & 0xffu;
        return fr_dev_bits_f32(((b & 0x7fu) << 20) | ((b & 0x80u) << 24));
    }
    return lut[(u[e >> 3] >> (4 * (e & 7))) & 15u];
}

/* Row r's FP8 scale row, NULL when the view has no scales (scale 1). */
__device__ __forceinline__ const float *mm_srow(const mm_args &a, int64_t r) {
    return a.sinv ? a.sinv + ((a.row0 + r) / a.block_rows) * a.scale_cols : (const float *)0;
}

/* The 4-bit group scale of row r, group gi. */
template <int DT> __device__ __forceinline__ float mm_qscale(const mm_args &a, int64_t r, int64_t gi) {
    const int64_t i = r * (a.cols / 32) + gi;
    if (DT == FR_DTYPE_MXFP4) return fr_dev_e8m0(a.qs[i]);
    return fr_dev_bf16((uint16_t)(a.qs[2 * i] | (a.qs[2 * i + 1] << 8)));
}

/* Element (r, c) read byte by byte (any alignment), scale applied: the fallbacks. */
template <int DT> __device__ float mm_elem(const mm_args &a, int64_t r, int64_t c) {
    const uint8_t *p = a.w + r * a.row_bytes;
    if (DT == FR_DTYPE_F32) {
        const uint8_t *q = p + 4 * c;
        return fr_dev_bits_f32((uint32_t)q[0] | ((uint32_t)q[1] << 8) | ((uint32_t)q[2] << 16) | ((uint32_t)q[3] << 24));
    }
    if (DT == FR_DTYPE_F16 || DT == FR_DTYPE_BF16) {
        const uint16_t h = (uint16_t)(p[2 * c] | (p[2 * c + 1] << 8));
        return DT == FR_DTYPE_F16 ? fr_dev_f16(h) : fr_dev_bf16(h);
    }
    if (DT == FR_DTYPE_F8_E4M3) {
        const float v = fr_dev_e4m3(p[c]);
        const float *s = mm_srow(a, r);
        return s ? v * s[c / a.block_cols] : v;
    }
    const uint32_t nib = (uint32_t)(p[c / 2] >> (4 * (c & 1))) & 15u;
    return mm_nibble_value(DT, nib) * mm_qscale<DT>(a, r, c / 32);
}

/* ---------------------------------------------------------------- decode GEMV */

/* How a chunk's decoded weights are multiplied before they meet x. */
#define MM_RAW 0 /* not at all (F32, BF16; 4-bit, whose group scale goes on the chunk's sum) */
#define MM_MUL 1 /* by m[i]: mm_pre times the FP8 block scale, or 2^112 for F16 */
#define MM_BIG 2 /* FP8 with a block scale >= 2^8 (2^120 times it overflows): by 2^120, then m[i] */

/* acc[i][t] += sum over the chunk's elements e of w_i[e] * x_t[e], in element order. xc
 * points at the chunk's first float4 of token 0; tokens are xstride float4s apart. */
template <int DT, int NT, int R, int MODE>
__device__ __forceinline__ void mm_chunk(const uint32_t (&u)[R][4], const float (&m)[R], const float4 *xc,
                                         int64_t xstride, int nt, const float *lut, float (&acc)[R][NT]) {
    MM_UNROLL
    for (int g = 0; g < mm_epc(DT) / 4; g++) {
        float wv[R][4];
        MM_UNROLL
        for (int i = 0; i < R; i++)
            MM_UNROLL
            for (int k = 0; k < 4; k++) {
                const float v = mm_dec<DT>(u[i], 4 * g + k, lut);
                wv[i][k] = MODE == MM_MUL ? v * m[i] : MODE == MM_BIG ? v * 0x1p120f * m[i] : v;
            }
        MM_UNROLL
        for (int t = 0; t < NT; t++) {
            if (t >= nt) break;
            const float4 xv = xc[t * xstride + g];
            MM_UNROLL
            for (int i = 0; i < R; i++) {
                acc[i][t] += wv[i][0] * xv.x;
                acc[i][t] += wv[i][1] * xv.y;
                acc[i][t] += wv[i][2] * xv.z;
                acc[i][t] += wv[i][3] * xv.w;
            }
        }
    }
}

/* Block: MM_WARPS warps x mm_rpw(NT) rows, tokens [tg * NT, +NT) of token group tg,
 * chunks of split blockIdx.y; blockIdx.x = row block * groups + tg (token groups of the
 * same rows adjacent). Per (row, token) the sum is: each lane's chunks in order (within a
 * chunk, elements in order; 4-bit: the chunk's sum times its group scale), then the
 * butterfly over the warp, then (split-K) the splits in order: the same for every NT. */
template <int DT, int NT> __global__ void __launch_bounds__(MM_THREADS) mm_gemv(mm_args a) {
    constexpr int EPC = mm_epc(DT), R = mm_rpw(NT);
    __shared__ float lut[16];
    if (mm_q4(DT)) { /* compile-time branch: every thread reaches the barrier */
        if (threadIdx.x < 16) lut[threadIdx.x] = mm_nibble_value(DT, threadIdx.x);
        fr_sync_threads();
    }
    const int lane = (int)threadIdx.x % FR_WARP, warp = (int)threadIdx.x / FR_WARP;
    const int64_t tg = (int64_t)blockIdx.x % a.groups, rb = (int64_t)blockIdx.x / a.groups;
    const int64_t r0 = (rb * MM_WARPS + warp) * R;
    if (r0 >= a.rows) return; /* the whole warp */
    const int64_t t0 = tg * NT, s = blockIdx.y;
    const int nt = (int)mm_min(NT, a.n - t0);
    const int64_t j0 = s * a.split_len, j1 = mm_min(a.chunks, j0 + a.split_len);

    const uint4 *wr[R];
    const float *sr[R];   /* FP8: the row's block scales (NULL: scale 1) */
    const uint8_t *qr[R]; /* 4-bit: the row's group scales */
    MM_UNROLL
    for (int i = 0; i < R; i++) {
        const int64_t r = mm_min(r0 + i, a.rows - 1); /* rows past the end re-read the last one */
        wr[i] = (const uint4 *)(a.w + r * a.row_bytes);
        sr[i] = DT == FR_DTYPE_F8_E4M3 ? mm_srow(a, r) : (const float *)0;
        qr[i] = a.qs + r * (a.cols / 32) * (DT == FR_DTYPE_INT4 ? 2 : 1);
    }
    const float4 *xb = (const float4 *)(a.x + t0 * a.cols);
    const int64_t xstride = a.cols / 4;

    float acc[R][NT];
    MM_UNROLL
    for (int i = 0; i < R; i++)
        MM_UNROLL
        for (int t = 0; t < NT; t++) acc[i][t] = 0.0f;

    for (int64_t j = j0 + lane; j < j1; j += FR_WARP) {
        uint32_t u[R][4];
        MM_UNROLL
        for (int i = 0; i < R; i++) {
            const uint4 q = wr[i][j];
            u[i][0] = q.x, u[i][1] = q.y, u[i][2] = q.z, u[i][3] = q.w;
        }
        const float4 *xc = xb + j * (EPC / 4);
        float m[R];
        if (DT == FR_DTYPE_F8_E4M3) {
            /* one block scale per chunk (block_cols is a multiple of EPC on this path),
             * folded with 2^120 into one multiplier unless that overflows */
            const uint32_t sb = (uint32_t)(j * EPC) / (uint32_t)a.block_cols;
            bool big = false;
            MM_UNROLL
            for (int i = 0; i < R; i++) {
                m[i] = sr[i] ? sr[i][sb] : 1.0f;
                big = big || !(fabsf(m[i]) < 0x1p8f);
            }
            if (!big) {
                MM_UNROLL
                for (int i = 0; i < R; i++) m[i] *= 0x1p120f;
                mm_chunk<DT, NT, R, MM_MUL>(u, m, xc, xstride, nt, lut, acc);
            } else {
                mm_chunk<DT, NT, R, MM_BIG>(u, m, xc, xstride, nt, lut, acc);
            }
        } else if (mm_q4(DT)) {
            /* a chunk is exactly one 32-element group: its sum times the group scale */
            float part[R][NT];
            MM_UNROLL
            for (int i = 0; i < R; i++) {
                m[i] = DT == FR_DTYPE_MXFP4 ? fr_dev_e8m0(qr[i][j])
                                            : fr_dev_bf16((uint16_t)(qr[i][2 * j] | (qr[i][2 * j + 1] << 8)));
                MM_UNROLL
                for (int t = 0; t < NT; t++) part[i][t] = 0.0f;
            }
            mm_chunk<DT, NT, R, MM_RAW>(u, m, xc, xstride, nt, lut, part);
            MM_UNROLL
            for (int i = 0; i < R; i++)
                MM_UNROLL
                for (int t = 0; t < NT; t++) acc[i][t] += part[i][t] * m[i];
        } else {
            MM_UNROLL
            for (int i = 0; i < R; i++) m[i] = mm_pre(DT);
            mm_chunk<DT, NT, R, DT == FR_DTYPE_F16 ? MM_MUL : MM_RAW>(u, m, xc, xstride, nt, lut, acc);
        }
    }
    MM_UNROLL
    for (int t = 0; t < NT; t++) {
        if (t >= nt) break; /* uniform over the warp */
        MM_UNROLL
        for (int i = 0; i < R; i++) {
            const float v = fr_warp_sum(acc[i][t]);
            if (lane == 0 && r0 + i < a.rows) a.out[(s * a.n + t0 + t) * a.rows + r0 + i] = v;
        }
    }
}

/* Any alignment, any cols: a warp per row, element by element, all n tokens in turn
 * (the row comes from cache after the first). Only odd test shapes come here. */
template <int DT> __global__ void __launch_bounds__(MM_THREADS) mm_gemv_any(mm_args a) {
    const int lane = (int)threadIdx.x % FR_WARP;
    const int64_t r = (int64_t)blockIdx.x * MM_WARPS + (int)threadIdx.x / FR_WARP;
    if (r >= a.rows) return;
    for (int64_t t = 0; t < a.n; t++) {
        const float *xr = a.x + t * a.cols;
        float acc = 0.0f;
        for (int64_t c = lane; c < a.cols; c += FR_WARP) acc += mm_elem<DT>(a, r, c) * xr[c];
        acc = fr_warp_sum(acc);
        if (lane == 0) a.out[t * a.rows + r] = acc;
    }
}

/* y[i] = sum over splits of the partials, in split order. */
__global__ void mm_reduce(float *y, const float *part, int64_t count, int splits) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= count) return;
    float v = part[i];
    for (int s = 1; s < splits; s++) v += part[(int64_t)s * count + i];
    y[i] = v;
}

/* ---------------------------------------------------------------- tiled GEMM */

/* Eight weights of row r from column c (a multiple of 8), scaled, zero past k_end or the
 * last row: 16-byte (F32: 2 x 16, FP8 2 x 4, 4-bit 4) loads when VEC says the rows are
 * aligned and the eight lie inside the split, else byte by byte. */
template <int DT, bool VEC>
__device__ __forceinline__ void mm_tile_w(const mm_args &a, int64_t r, int64_t c, int64_t k_end, const float *lut,
                                          float *wv) {
    if (r >= a.rows) {
        for (int e = 0; e < 8; e++) wv[e] = 0.0f;
        return;
    }
    if (VEC && c + 8 <= k_end) {
        const uint8_t *p = a.w + r * a.row_bytes;
        uint32_t u[8];
        if (DT == FR_DTYPE_F32) {
            const uint4 q0 = *(const uint4 *)(p + 4 * c), q1 = *(const uint4 *)(p + 4 * c + 16);
            u[0] = q0.x, u[1] = q0.y, u[2] = q0.z, u[3] = q0.w, u[4] = q1.x, u[5] = q1.y, u[6] = q1.z, u[7] = q1.w;
        } else if (DT == FR_DTYPE_F16 || DT == FR_DTYPE_BF16) {
            const uint4 q = *(const uint4 *)(p + 2 * c);
            u[0] = q.x, u[1] = q.y, u[2] = q.z, u[3] = q.w;
        } else if (DT == FR_DTYPE_F8_E4M3) {
            u[0] = *(const uint32_t *)(p + c), u[1] = *(const uint32_t *)(p + c + 4);
        } else {
            u[0] = *(const uint32_t *)(p + c / 2);
        }
        const float *s = DT == FR_DTYPE_F8_E4M3 ? mm_srow(a, r) : (const float *)0;
        const float qs = mm_q4(DT) ? mm_qscale<DT>(a, r, c / 32) : 1.0f;
        MM_UNROLL
        for (int e = 0; e < 8; e++) {
            float v = mm_dec<DT>(u, e, lut) * mm_pre(DT);
            if (DT == FR_DTYPE_F8_E4M3 && s) v *= s[(c + e) / a.block_cols];
            if (mm_q4(DT)) v *= qs;
            wv[e] = v;
        }
        return;
    }
    for (int e = 0; e < 8; e++) wv[e] = c + e < k_end ? mm_elem<DT>(a, r, c + e) : 0.0f;
}

/* Block (256 threads): rows [bx * 64, +64) x tokens [by * 64, +64), columns of split bz.
 * Thread (tr, tc) = (tid % 16, tid / 16) owns rows tr + 16 i and tokens tc + 16 j, so a
 * warp reads 16 consecutive weight words and 2 broadcast x words per step: no shared
 * memory bank conflicts. The +1 padding makes the transposing stores conflict-free. */
template <int DT, bool VEC> __global__ void __launch_bounds__(MM_THREADS) mm_tiled(mm_args a) {
    __shared__ float ws[MM_BK][MM_BM + 1];
    __shared__ float xs[MM_BK][MM_BN + 1];
    __shared__ float lut[16];
    const int tid = (int)threadIdx.x;
    if (mm_q4(DT) && VEC) { /* compile-time branch */
        if (tid < 16) lut[tid] = mm_nibble_value(DT, (uint32_t)tid);
        fr_sync_threads();
    }
    const int64_t r0 = (int64_t)blockIdx.x * MM_BM, t0 = (int64_t)blockIdx.y * MM_BN, s = blockIdx.z;
    const int64_t k_begin = s * a.split_len, k_end = mm_min(a.cols, k_begin + a.split_len);
    const int tr = tid % 16, tc = tid / 16;
    const int lr = tid / 4, lk = (tid % 4) * 8; /* loader: row lr, columns lk .. lk + 7 */
    float acc[4][4];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) acc[i][j] = 0.0f;

    for (int64_t k0 = k_begin; k0 < k_end; k0 += MM_BK) {
        float wv[8];
        mm_tile_w<DT, VEC>(a, r0 + lr, k0 + lk, k_end, lut, wv);
        MM_UNROLL
        for (int e = 0; e < 8; e++) ws[lk + e][lr] = wv[e];
        MM_UNROLL
        for (int e = 0; e < (MM_BK * MM_BN) / MM_THREADS; e++) {
            const int idx = e * MM_THREADS + tid, t = idx / MM_BK, kk = idx % MM_BK;
            const int64_t tt = t0 + t, c = k0 + kk;
            xs[kk][t] = tt < a.n && c < k_end ? a.x[tt * a.cols + c] : 0.0f;
        }
        fr_sync_threads();
        MM_UNROLL
        for (int kk = 0; kk < MM_BK; kk++) {
            float w4[4], x4[4];
            for (int i = 0; i < 4; i++) w4[i] = ws[kk][tr + 16 * i];
            for (int j = 0; j < 4; j++) x4[j] = xs[kk][tc + 16 * j];
            for (int i = 0; i < 4; i++)
                for (int j = 0; j < 4; j++) acc[i][j] += w4[i] * x4[j];
        }
        fr_sync_threads();
    }
    for (int j = 0; j < 4; j++) {
        const int64_t t = t0 + tc + 16 * j;
        if (t >= a.n) break;
        for (int i = 0; i < 4; i++) {
            const int64_t r = r0 + tr + 16 * i;
            if (r < a.rows) a.out[(s * a.n + t) * a.rows + r] = acc[i][j];
        }
    }
}

/* ---------------------------------------------------------------- host side */

template <int DT> static mm_kernel mm_gemv_pick(int nt) {
    switch (nt) {
    case 1: return mm_gemv<DT, 1>;
    case 2: return mm_gemv<DT, 2>;
    case 4: return mm_gemv<DT, 4>;
    default: return mm_gemv<DT, MM_NT>;
    }
}

/* Kernel for format dt: kind 0 the vector GEMV (nt tokens per block), 1 the scalar
 * GEMV, 2 the tiled kernel, 3 the tiled kernel with vector weight loads. */
template <int DT> static mm_kernel mm_pick_dt(int kind, int nt) {
    switch (kind) {
    case 0: return mm_gemv_pick<DT>(nt);
    case 1: return mm_gemv_any<DT>;
    case 2: return mm_tiled<DT, false>;
    default: return mm_tiled<DT, true>;
    }
}

static mm_kernel mm_pick(fr_dtype dt, int kind, int nt) {
    switch (dt) {
    case FR_DTYPE_F32: return mm_pick_dt<FR_DTYPE_F32>(kind, nt);
    case FR_DTYPE_F16: return mm_pick_dt<FR_DTYPE_F16>(kind, nt);
    case FR_DTYPE_BF16: return mm_pick_dt<FR_DTYPE_BF16>(kind, nt);
    case FR_DTYPE_F8_E4M3: return mm_pick_dt<FR_DTYPE_F8_E4M3>(kind, nt);
    case FR_DTYPE_MXFP4: return mm_pick_dt<FR_DTYPE_MXFP4>(kind, nt);
    default: return mm_pick_dt<FR_DTYPE_INT4>(kind, nt);
    }
}

/* Arguments for view w, as the CPU's normalize() reads views: an FP8 view without scales
 * is scale 1 and non-positive block sizes one block. False when the product is zero by
 * definition (no such format, a malformed 4-bit view, no data). */
static bool mm_prepare(const fr_weight *w, mm_args *a) {
    memset(a, 0, sizeof *a);
    switch (w->dtype) {
    case FR_DTYPE_F32:
    case FR_DTYPE_F16:
    case FR_DTYPE_BF16: break;
    case FR_DTYPE_F8_E4M3:
        a->block_rows = a->block_cols = INT32_MAX; /* no scales: one block of scale 1 */
        if (w->scale_inv) {
            a->sinv = w->scale_inv;
            a->row0 = w->row0, a->scale_cols = w->scale_cols;
            a->block_rows = w->block_rows > 0 ? w->block_rows : INT32_MAX;
            a->block_cols = w->block_cols > 0 ? w->block_cols : INT32_MAX;
        }
        break;
    case FR_DTYPE_MXFP4:
    case FR_DTYPE_INT4:
        if (!w->scales || w->group != 32 || w->cols % 32) return false;
        a->qs = (const uint8_t *)w->scales;
        break;
    default: return false;
    }
    if (!w->data || w->cols <= 0) return false;
    a->w = (const uint8_t *)w->data;
    a->rows = w->rows, a->cols = w->cols;
    a->row_bytes = fr_weight_row_bytes(w);
    return true;
}

static int64_t mm_ceil(int64_t a, int64_t b) { return (a + b - 1) / b; }

/* GEMV split over the chunks of a row, from the shape and the device only (so never from
 * n): enough warps to fill the GPU, at least one chunk per lane per split, splits of whole
 * warp strides. Returns the chunks per split. */
static int64_t mm_gemv_split(int64_t rows, int64_t chunks, int sms) {
    const int64_t warps = mm_ceil(rows, MM_R), target = (int64_t)sms * MM_WARPS_PER_SM;
    if (warps >= target) return chunks;
    int64_t s = mm_ceil(target, warps);
    if (s > MM_MAX_SPLIT) s = MM_MAX_SPLIT;
    if (s > chunks / FR_WARP) s = chunks / FR_WARP;
    if (s <= 1) return chunks;
    return mm_ceil(mm_ceil(chunks, s), FR_WARP) * FR_WARP;
}

fr_status fr_cu_matmul_dev(fr_backend *be, float *y, const float *x, int64_t n, const fr_weight *dev) {
    if (n <= 0 || dev->rows <= 0) return FR_OK;
    const fr_gpu_stream st = fr_cu_stream(be);
    mm_args a;
    if (!mm_prepare(dev, &a)) {
        if (fr_gpu_memset(y, 0, (size_t)(n * dev->rows) * sizeof(float), st)) return FR_ERR_DEVICE;
        return fr_cu_check(be, "matmul");
    }
    a.x = x, a.n = n, a.out = y;
    const bool rows_aligned = (uintptr_t)a.w % 16 == 0 && a.row_bytes % 16 == 0;
    int64_t splits = 1;
    if (n <= MM_GEMV_MAX_N) {
        const bool vec = rows_aligned && (uintptr_t)x % 16 == 0 &&
                         (!a.sinv || a.block_cols % mm_epc(dev->dtype) == 0);
        if (vec) {
            const int nt = n == 1 ? 1 : n == 2 ? 2 : n <= 4 ? 4 : MM_NT;
            a.chunks = a.row_bytes / 16;
            a.split_len = mm_gemv_split(a.rows, a.chunks, fr_cu_sm_count(be));
            splits = mm_ceil(a.chunks, a.split_len);
            a.groups = (int32_t)mm_ceil(n, nt);
            if (splits > 1) {
                a.out = (float *)fr_cu_scratch(be, FR_CU_SCRATCH_MATMUL, (size_t)(splits * n * a.rows) * sizeof(float));
                if (!a.out) return FR_ERR_NOMEM;
            }
            const unsigned gx = (unsigned)(mm_ceil(a.rows, MM_WARPS * mm_rpw(nt)) * a.groups);
            const mm_kernel k = mm_pick(dev->dtype, 0, nt);
            FR_LAUNCH(k, dim3(gx, (unsigned)splits), MM_THREADS, 0, st, a);
        } else {
            const mm_kernel k = mm_pick(dev->dtype, 1, 0);
            FR_LAUNCH(k, fr_cu_blocks(a.rows, MM_WARPS), MM_THREADS, 0, st, a);
        }
    } else {
        const int64_t bx = mm_ceil(a.rows, MM_BM), by = mm_ceil(n, MM_BN), ktiles = mm_ceil(a.cols, MM_BK);
        /* split K only while the output tiles leave SMs idle, keeping >= 4 K tiles each */
        const int64_t target = 2 * (int64_t)fr_cu_sm_count(be);
        int64_t s = 1;
        if (bx * by < target) {
            s = mm_ceil(target, bx * by);
            if (s > ktiles / 4) s = ktiles / 4;
            if (s > MM_MAX_SPLIT) s = MM_MAX_SPLIT;
            if (s < 1) s = 1;
        }
        a.split_len = mm_ceil(ktiles, s) * MM_BK;
        splits = mm_ceil(a.cols, a.split_len);
        if (splits > 1) {
            a.out = (float *)fr_cu_scratch(be, FR_CU_SCRATCH_MATMUL, (size_t)(splits * n * a.rows) * sizeof(float));
            if (!a.out) return FR_ERR_NOMEM;
        }
        const mm_kernel k = mm_pick(dev->dtype, rows_aligned ? 3 : 2, 0);
        FR_LAUNCH(k, dim3((unsigned)bx, (unsigned)by, (unsigned)splits), MM_THREADS, 0, st, a);
    }
    if (splits > 1) {
        const int64_t count = n * a.rows;
        FR_LAUNCH(mm_reduce, fr_cu_blocks(count, MM_THREADS), MM_THREADS, 0, st, y, (const float *)a.out, count,
                  (int)splits);
    }
    return fr_cu_check(be, "matmul");
}

fr_status fr_cu_matmul(fr_backend *be, float *y, const float *x, int64_t n, const fr_weight *w) {
    fr_weight dev;
    const fr_status rc = fr_cu_weight(be, w, &dev);
    if (rc) return rc;
    be->weight_bytes_read += (uint64_t)fr_weight_bytes(w);
    return fr_cu_matmul_dev(be, y, x, n, &dev);
}
