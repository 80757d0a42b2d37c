/* k_moe.cu - the routed-expert MoE op and the dense SwiGLU MLP.
 *
 * MoE, all on the device (no host synchronization, so a decode step can be captured in
 * a graph), one chunk of at most MOE_CHUNK_BYTES of scratch worth of tokens at a time:
 *   1. router logits x·gateᵀ (fr_cu_matmul_dev);
 *   2. k_moe_select, a warp per token: sigmoid, then fr_route_select's noaux_tc rule
 *      exactly (bias for selection only, group scores, top_k, ties to the lower index,
 *      weights normalized and scaled in double as on the CPU);
 *   3. k_moe_group, one block: counting sort of the n*top_k (token, k) slots by expert and
 *      a list of work items (expert, first sorted slot, up to MOE_TTB tokens); one
 *      atomicAdd of each chosen expert's weight bytes to the device byte counter;
 *   4. k_moe_gateup* and k_moe_down*: a block per (work item, tile of output rows); grids
 *      are sized from an upper bound the host knows and blocks past the real item count
 *      exit at once, so at batch 1 exactly top_k experts' weights are read. A gate/up warp
 *      streams the gate and up rows of two outputs together (SiLU fused), a down warp four
 *      rows, with 16-byte loads decoded in registers from the stored format, for one token
 *      (the *1 kernels, lean enough for full occupancy at decode) or up to MOE_TTB (*4);
 *   5. k_moe_combine: out[t] = shared(x)[t] + Σ_k w[t,k] · y[t,k], summed in k order, so
 *      results do not depend on the order blocks run in.
 * Per-slot outputs go to scratch and are reduced by k_moe_combine rather than with float
 * atomics: same bits on every run.
 *
 * The dense MLP runs the same two expert kernels over a single "expert" for small batches
 * (decode: gate and up are read in one pass, no intermediate round trip); large batches
 * use three fr_cu_matmul_dev products and an elementwise SiLU·up. */
#include "cuda_internal.h"
#include "k_weight.cuh"

#include <stdlib.h>
#include <string.h>

#define MOE_THREADS 128                            /* 4 warps (2 on a 64-wide warp) */
/* Output rows per warp: gate/up streams 2 rows of each (4 rows in flight), down 4 rows,
 * so that every lane keeps 4 (x 2 unrolled) 16-byte weight loads in flight. */
#define MOE_RPW 2
#define MOE_RPW_DOWN 4
#define MOE_ROWS (MOE_THREADS / FR_WARP * MOE_RPW)           /* gate/up rows per block */
#define MOE_ROWS_DOWN (MOE_THREADS / FR_WARP * MOE_RPW_DOWN) /* down rows per block */
#define MOE_TTB 4                                  /* tokens per work item */
#define MOE_MAX_E 4096                             /* fr_route_select's limit */
#define MOE_GROUP_THREADS 256
#define MOE_CHUNK_BYTES ((size_t)256 << 20)        /* scratch budget per token chunk */
#define MLP_FUSED_MAX_N 16                         /* larger batches: fr_cu_matmul_dev */

/* Unrolling hint for nvcc (g++ would warn about the unknown pragma). */
#if defined(FR_GPU_EMU)
#define MOE_UNROLL
#else
#define MOE_UNROLL _Pragma("unroll")
#endif

/* One expert as the kernels see it: device views and the bytes a pass over it reads. */
typedef struct {
    fr_weight gate, up, down;
    unsigned long long bytes;
} moe_expert;

/* ---- weight rows in 16-byte chunks
 *
 * A fast format reads a row as uint4 chunks (EPC elements each) and decodes them in
 * registers; F_GENERIC reads element by element through fr_dev_weight_get (views whose
 * rows or scale blocks do not line up with 16 bytes). */
enum { F_GENERIC = 0, F_F32, F_F16, F_BF16, F_FP8, F_MXFP4, F_INT4 };

template <int F> struct fmt_info;
template <> struct fmt_info<F_F32> { enum { epc = 4, scaled = 0 }; };
template <> struct fmt_info<F_F16> { enum { epc = 8, scaled = 0 }; };
template <> struct fmt_info<F_BF16> { enum { epc = 8, scaled = 0 }; };
template <> struct fmt_info<F_FP8> { enum { epc = 16, scaled = 1 }; };
template <> struct fmt_info<F_MXFP4> { enum { epc = 32, scaled = 1 }; };
template <> struct fmt_info<F_INT4> { enum { epc = 32, scaled = 1 }; };

/* The fast format for w, or F_GENERIC when its rows cannot be read in aligned chunks. */
__device__ __forceinline__ int moe_fmt(const fr_weight &w) {
    if (!w.data || ((uintptr_t)w.data & 15)) return F_GENERIC;
    switch (w.dtype) {
    case FR_DTYPE_F32: return w.cols % 4 == 0 ? F_F32 : F_GENERIC;
    case FR_DTYPE_F16: return w.cols % 8 == 0 ? F_F16 : F_GENERIC;
    case FR_DTYPE_BF16: return w.cols % 8 == 0 ? F_BF16 : F_GENERIC;
    case FR_DTYPE_F8_E4M3:
        /* a chunk must not straddle two scale blocks */
        return w.cols % 16 == 0 && (!w.scale_inv || (w.block_cols % 16 == 0 && w.block_rows > 0)) ? F_FP8
                                                                                                   : F_GENERIC;
    case FR_DTYPE_MXFP4:
    case FR_DTYPE_INT4:
        if (w.cols % 32 || !w.scales || w.group <= 0 || w.group % 32) return F_GENERIC;
        if (w.dtype == FR_DTYPE_INT4 && ((uintptr_t)w.scales & 1)) return F_GENERIC;
        return w.dtype == FR_DTYPE_MXFP4 ? F_MXFP4 : F_INT4;
    default: return F_GENERIC;
    }
}

/* Where one weight row's chunks and chunk scales are. */
typedef struct {
    const uint4 *p;  /* the row */
    const void *s;   /* its scales: FP8 the scale_inv row of its block (NULL: 1), MX / INT4 its group scales */
    int sdiv;        /* elements per scale: block_cols or group */
} row_src;

template <int F> __device__ __forceinline__ row_src moe_row(const fr_weight &w, int64_t r) {
    row_src s;
    const int64_t row_bytes = F == F_MXFP4 || F == F_INT4 ? w.cols / 2 : w.cols * (F == F_F32 ? 4 : F == F_FP8 ? 1 : 2);
    s.p = (const uint4 *)((const char *)w.data + r * row_bytes);
    s.s = NULL;
    s.sdiv = 1;
    if (F == F_FP8 && w.scale_inv) {
        s.s = w.scale_inv + ((w.row0 + r) / w.block_rows) * w.scale_cols;
        s.sdiv = w.block_cols;
    } else if (F == F_MXFP4) {
        s.s = (const uint8_t *)w.scales + r * (w.cols / w.group);
        s.sdiv = w.group;
    } else if (F == F_INT4) {
        s.s = (const uint16_t *)w.scales + r * (w.cols / w.group);
        s.sdiv = w.group;
    }
    return s;
}

/* Multiplier of chunk ch of a row (1 for unscaled formats). */
template <int F> __device__ __forceinline__ float moe_chunk_scale(const row_src &s, int64_t ch) {
    const int64_t i = ch * fmt_info<F>::epc / s.sdiv;
    if (F == F_FP8) return s.s ? ((const float *)s.s)[i] : 1.0f;
    if (F == F_MXFP4) return fr_dev_e8m0(((const uint8_t *)s.s)[i]);
    if (F == F_INT4) return fr_dev_bf16(((const uint16_t *)s.s)[i]);
    return 1.0f;
}

__device__ __forceinline__ uint32_t u4_word(const uint4 &u, int i) {
    return i == 0 ? u.x : i == 1 ? u.y : i == 2 ? u.z : u.w;
}

/* Elements 4q .. 4q+3 of a chunk as float32, before the chunk scale. The FP8 and E2M1
 * decodes place the code's bits in a float32 and rescale by a power of two (exact; the
 * smallest codes pass through float32 subnormals, so a flush-to-zero build takes the
 * table-free k_weight.cuh definitions instead). FP8's fast decode reads the NaN codes
 * 0x7f / 0xff as 480: checkpoints never store them. */
#if defined(__USE_FAST_MATH__)
#define MOE_EXACT_DECODE 1
#endif
template <int F> __device__ __forceinline__ void moe_decode4(const uint4 &u, int q, float v[4]) {
    if (F == F_F32) {
        for (int j = 0; j < 4; j++) v[j] = fr_dev_bits_f32(u4_word(u, j));
    } else if (F == F_BF16 || F == F_F16) {
        const uint32_t w0 = u4_word(u, 2 * q), w1 = u4_word(u, 2 * q + 1);
        if (F == F_BF16) {
            v[0] = fr_dev_bits_f32(w0 << 16), v[1] = fr_dev_bits_f32(w0 & 0xffff0000u);
            v[2] = fr_dev_bits_f32(w1 << 16), v[3] = fr_dev_bits_f32(w1 & 0xffff0000u);
        } else {
            v[0] = fr_dev_f16((uint16_t)(w0 & 0xffffu)), v[1] = fr_dev_f16((uint16_t)(w0 >> 16));
            v[2] = fr_dev_f16((uint16_t)(w1 & 0xffffu)), v[3] = fr_dev_f16((uint16_t)(w1 >> 16));
        }
    } else if (F == F_FP8) {
        const uint32_t w = u4_word(u, q);
        for (int j = 0; j < 4; j++) {
            const uint32_t b = (w >> (8 * j)) & 0xffu;
#if defined(MOE_EXACT_DECODE)
            v[j] = fr_dev_e4m3((uint8_t)b);
#else
            /* e4m3 bits at float32's exponent/mantissa top: value * 2^-120 */
            v[j] = fr_dev_bits_f32(((b & 0x80u) << 24) | ((b & 0x7fu) << 20)) * 0x1p120f;
#endif
        }
    } else { /* MXFP4, INT4: element 4q + j is nibble j of the q-th 16 bits */
        const uint32_t h = u4_word(u, q >> 1) >> (16 * (q & 1));
        for (int j = 0; j < 4; j++) {
            const uint32_t nib = (h >> (4 * j)) & 15u;
            if (F == F_INT4) {
                v[j] = fr_dev_bits_f32(0x4b000000u | nib) - 8388616.0f; /* (2^23 + nib) - (2^23 + 8) */
            } else {
#if defined(MOE_EXACT_DECODE)
                v[j] = fr_dev_e2m1(nib);
#else
                /* e2m1 bits at float32's exponent/mantissa top: value * 2^-126 */
                v[j] = fr_dev_bits_f32(((nib & 8u) << 28) | ((nib & 7u) << 22)) * 0x1p126f;
#endif
            }
        }
    }
}

/* acc[r][t] += (row r's chunk u[r]) · (x_t's matching elements), scale s[r]. */
template <int F, int NR, int TT>
__device__ __forceinline__ void moe_chunk(const uint4 (&u)[NR], const float (&s)[NR], int64_t ch,
                                          const float *const (&xs)[TT], float (&acc)[NR][TT]) {
    const int Q = fmt_info<F>::epc / 4;
    float part[NR][TT];
    for (int r = 0; r < NR; r++)
        for (int t = 0; t < TT; t++) part[r][t] = 0.0f;
MOE_UNROLL
    for (int q = 0; q < Q; q++) {
        float4 xv[TT];
        for (int t = 0; t < TT; t++) xv[t] = ((const float4 *)xs[t])[ch * Q + q];
        for (int r = 0; r < NR; r++) {
            float v[4];
            moe_decode4<F>(u[r], q, v);
            for (int t = 0; t < TT; t++) {
                float p = part[r][t];
                p = fmaf(v[0], xv[t].x, p);
                p = fmaf(v[1], xv[t].y, p);
                p = fmaf(v[2], xv[t].z, p);
                p = fmaf(v[3], xv[t].w, p);
                part[r][t] = p;
            }
        }
    }
    for (int r = 0; r < NR; r++)
        for (int t = 0; t < TT; t++) acc[r][t] = fmaf(part[r][t], s[r], acc[r][t]);
}

/* Per-lane partial dot products of NR weight rows with TT activation rows (cols
 * elements each), lanes taking 16-byte chunks in turn, two chunks per lane in flight.
 * Each token's sum runs in the same order whatever TT is, so results do not depend on
 * how tokens were grouped. */
template <int F, int NR, int TT>
__device__ __forceinline__ void moe_dot_fast(const row_src (&src)[NR], int64_t cols, const float *const (&xs)[TT],
                                             float (&acc)[NR][TT]) {
    const int64_t nch = cols / fmt_info<F>::epc;
    int64_t ch = (int)threadIdx.x % FR_WARP;
    for (; ch + FR_WARP < nch; ch += 2 * FR_WARP) {
        uint4 u0[NR], u1[NR];
        float s0[NR], s1[NR];
        for (int r = 0; r < NR; r++) {
            u0[r] = src[r].p[ch];
            u1[r] = src[r].p[ch + FR_WARP];
            s0[r] = moe_chunk_scale<F>(src[r], ch);
            s1[r] = moe_chunk_scale<F>(src[r], ch + FR_WARP);
        }
        moe_chunk<F, NR, TT>(u0, s0, ch, xs, acc);
        moe_chunk<F, NR, TT>(u1, s1, ch + FR_WARP, xs, acc);
    }
    if (ch < nch) {
        uint4 u0[NR];
        float s0[NR];
        for (int r = 0; r < NR; r++) {
            u0[r] = src[r].p[ch];
            s0[r] = moe_chunk_scale<F>(src[r], ch);
        }
        moe_chunk<F, NR, TT>(u0, s0, ch, xs, acc);
    }
}

template <int NR, int TT>
__device__ __forceinline__ void moe_dot_generic(const fr_weight *const (&w)[NR], const int64_t (&row)[NR], int64_t cols,
                                                const float *const (&xs)[TT], float (&acc)[NR][TT]) {
    for (int64_t c = (int)threadIdx.x % FR_WARP; c < cols; c += FR_WARP)
        for (int r = 0; r < NR; r++) {
            const float v = fr_dev_weight_get(*w[r], row[r], c);
            for (int t = 0; t < TT; t++) acc[r][t] = fmaf(v, xs[t][c], acc[r][t]);
        }
}

/* acc[r][t] = W_r[row r] · x_t summed over the warp (every lane gets every sum). The
 * weights w[r] may differ (gate and up); a fast path needs them all in one format and
 * the activations 16-byte aligned (cols is then a multiple of 4). */
template <int F, int NR, int TT>
__device__ __forceinline__ void moe_dot_as(const fr_weight *const (&w)[NR], const int64_t (&row)[NR], int64_t cols,
                                           const float *const (&xs)[TT], float (&acc)[NR][TT]) {
    row_src src[NR];
    for (int r = 0; r < NR; r++) src[r] = moe_row<F>(*w[r], row[r]);
    moe_dot_fast<F, NR, TT>(src, cols, xs, acc);
}

template <int NR, int TT>
__device__ __forceinline__ void moe_dot(const fr_weight *const (&w)[NR], const int64_t (&row)[NR], int64_t cols,
                                        const float *const (&xs)[TT], bool x_aligned, float (&acc)[NR][TT]) {
    for (int r = 0; r < NR; r++)
        for (int t = 0; t < TT; t++) acc[r][t] = 0.0f;
    int f = x_aligned ? moe_fmt(*w[0]) : F_GENERIC;
    for (int r = 1; r < NR; r++)
        if (moe_fmt(*w[r]) != f) f = F_GENERIC;
    switch (f) {
    case F_F32: moe_dot_as<F_F32, NR, TT>(w, row, cols, xs, acc); break;
    case F_F16: moe_dot_as<F_F16, NR, TT>(w, row, cols, xs, acc); break;
    case F_BF16: moe_dot_as<F_BF16, NR, TT>(w, row, cols, xs, acc); break;
    case F_FP8: moe_dot_as<F_FP8, NR, TT>(w, row, cols, xs, acc); break;
    case F_MXFP4: moe_dot_as<F_MXFP4, NR, TT>(w, row, cols, xs, acc); break;
    case F_INT4: moe_dot_as<F_INT4, NR, TT>(w, row, cols, xs, acc); break;
    default: moe_dot_generic<NR, TT>(w, row, cols, xs, acc); break;
    }
    for (int r = 0; r < NR; r++)
        for (int t = 0; t < TT; t++) acc[r][t] = fr_warp_sum(acc[r][t]);
}

__device__ __forceinline__ float moe_silu(float g) { return g / (1.0f + expf(-g)); }

/* ---- the expert kernels
 *
 * Shared arguments. Routed mode (table != NULL): work item j (j < *n_items) is expert
 * item_e[j]'s sorted slots item_start[j] .. + item_cnt[j]; sorted slot p is the original
 * slot sorted[p] = token * K + k; h is [n*K, I] by sorted slot, y [n*K, D] by original
 * slot. Direct mode (the dense MLP): item j is tokens 4j .. 4j+3 of n_direct, the
 * weights are gate/up/down, h [n, I] and y (the op's out) [n, D] by token. */
typedef struct {
    const moe_expert *table;
    fr_weight gate, up, down;
    const int *n_items, *item_e, *item_start, *item_cnt, *sorted;
    int K;
    int64_t n_direct;
    const float *x; /* [n, D] */
    float *h;       /* SiLU(gate)·up */
    float *y;       /* down products */
    int64_t D, I;
    int which; /* the items this launch takes: MOE_ALL, MOE_SINGLE (one token), MOE_MULTI */
} moe_args;

/* The one-token kernels (decode) need far fewer registers than the MOE_TTB-token ones,
 * so each item count gets its own kernel; a launch skips the other kind's items. */
enum { MOE_ALL = 0, MOE_SINGLE, MOE_MULTI };

/* Work item blockIdx.x: its expert (routed mode) and first sorted slot / token count;
 * false for blocks past the last item or items of the other launch's kind. */
__device__ __forceinline__ bool moe_item(const moe_args &a, int *e, int64_t *start, int *cnt) {
    const int64_t j = blockIdx.x;
    if (a.table) {
        if (j >= *a.n_items) return false;
        *e = a.item_e[j], *start = a.item_start[j], *cnt = a.item_cnt[j];
    } else {
        *e = 0, *start = j * MOE_TTB;
        const int64_t left = a.n_direct - *start;
        *cnt = (int)(left < MOE_TTB ? left : MOE_TTB);
        if (*cnt < 1) return false;
    }
    return a.which == MOE_ALL || (a.which == MOE_SINGLE) == (*cnt == 1);
}

/* Token row of sorted slot p. */
__device__ __forceinline__ int64_t moe_token(const moe_args &a, int64_t p) { return a.table ? a.sorted[p] / a.K : p; }

template <int TT>
__device__ __forceinline__ void moe_gateup_rows(const moe_args &a, const fr_weight &g, const fr_weight &u, int64_t start,
                                                int cnt, int64_t i0) {
    const int64_t i1 = i0 + 1 < a.I ? i0 + 1 : i0;
    const fr_weight *const w[4] = {&g, &g, &u, &u};
    const int64_t row[4] = {i0, i1, i0, i1};
    const float *xs[TT];
    for (int t = 0; t < TT; t++) xs[t] = a.x + moe_token(a, start + (t < cnt ? t : cnt - 1)) * a.D;
    float acc[4][TT];
    moe_dot<4, TT>(w, row, a.D, xs, ((uintptr_t)a.x & 15) == 0, acc);
    if ((int)threadIdx.x % FR_WARP == 0)
        for (int t = 0; t < TT && t < cnt; t++) {
            float *h = a.h + (start + t) * a.I;
            h[i0] = moe_silu(acc[0][t]) * acc[2][t];
            if (i1 != i0) h[i1] = moe_silu(acc[1][t]) * acc[3][t];
        }
}

/* h[slot, i] = SiLU(gate_i · x) * (up_i · x) for a tile of MOE_ROWS rows i. */
template <int TT> __device__ __forceinline__ void moe_gateup(const moe_args &a) {
    int e, cnt;
    int64_t start;
    if (!moe_item(a, &e, &start, &cnt)) return;
    const int64_t i0 = (int64_t)blockIdx.y * MOE_ROWS + (int)threadIdx.x / FR_WARP * MOE_RPW;
    if (i0 >= a.I) return; /* the whole warp: no block barrier follows */
    const fr_weight g = a.table ? a.table[e].gate : a.gate, u = a.table ? a.table[e].up : a.up;
    if (!g.data || !u.data) { /* an expert the table could not translate: poison, never fault */
        if ((int)threadIdx.x % FR_WARP == 0)
            for (int t = 0; t < cnt; t++)
                for (int64_t i = i0; i < i0 + MOE_RPW && i < a.I; i++) a.h[(start + t) * a.I + i] = fr_dev_bits_f32(0x7fc00000u);
        return;
    }
    moe_gateup_rows<TT>(a, g, u, start, cnt, i0);
}
__global__ void __launch_bounds__(MOE_THREADS, 4) k_moe_gateup1(moe_args a) { moe_gateup<1>(a); }
__global__ void k_moe_gateup4(moe_args a) { moe_gateup<MOE_TTB>(a); }

template <int TT>
__device__ __forceinline__ void moe_down_rows(const moe_args &a, const fr_weight &d, int64_t start, int cnt,
                                              int64_t d0) {
    const fr_weight *w[MOE_RPW_DOWN];
    int64_t row[MOE_RPW_DOWN];
    for (int r = 0; r < MOE_RPW_DOWN; r++) w[r] = &d, row[r] = d0 + r < a.D ? d0 + r : d0; /* tail: recompute d0 */
    const float *xs[TT];
    for (int t = 0; t < TT; t++) xs[t] = a.h + (start + (t < cnt ? t : cnt - 1)) * a.I;
    float acc[MOE_RPW_DOWN][TT];
    moe_dot<MOE_RPW_DOWN, TT>(w, row, a.I, xs, ((uintptr_t)a.h & 15) == 0, acc);
    if ((int)threadIdx.x % FR_WARP == 0)
        for (int t = 0; t < TT && t < cnt; t++) {
            const int64_t o = a.table ? a.sorted[start + t] : start + t;
            float *y = a.y + o * a.D;
            for (int r = 0; r < MOE_RPW_DOWN && d0 + r < a.D; r++) y[d0 + r] = acc[r][t];
        }
}

/* y[slot, d] = down_d · h[slot] for a tile of MOE_ROWS_DOWN rows d. */
template <int TT> __device__ __forceinline__ void moe_down(const moe_args &a) {
    int e, cnt;
    int64_t start;
    if (!moe_item(a, &e, &start, &cnt)) return;
    const int64_t d0 = (int64_t)blockIdx.y * MOE_ROWS_DOWN + (int)threadIdx.x / FR_WARP * MOE_RPW_DOWN;
    if (d0 >= a.D) return;
    const fr_weight d = a.table ? a.table[e].down : a.down;
    if (!d.data) {
        if ((int)threadIdx.x % FR_WARP == 0)
            for (int t = 0; t < cnt; t++)
                for (int64_t o = d0; o < d0 + MOE_RPW_DOWN && o < a.D; o++)
                    a.y[(a.table ? a.sorted[start + t] : start + t) * a.D + o] = fr_dev_bits_f32(0x7fc00000u);
        return;
    }
    moe_down_rows<TT>(a, d, start, cnt, d0);
}
__global__ void __launch_bounds__(MOE_THREADS, 4) k_moe_down1(moe_args a) { moe_down<1>(a); }
__global__ void k_moe_down4(moe_args a) { moe_down<MOE_TTB>(a); }

/* The expert products for `items` work items: one-token items by the lean kernels, the
 * rest by the MOE_TTB-token ones (only when some item can have more than one token). */
static void moe_launch_experts(fr_backend *be, moe_args a, int64_t items, bool multi) {
    (void)be; /* the emulator's launches ignore the stream */
    const dim3 gu((unsigned)items, fr_cu_blocks(a.I, MOE_ROWS)), dn((unsigned)items, fr_cu_blocks(a.D, MOE_ROWS_DOWN));
    a.which = multi ? MOE_SINGLE : MOE_ALL;
    FR_LAUNCH(k_moe_gateup1, gu, MOE_THREADS, 0, fr_cu_stream(be), a);
    if (multi) {
        a.which = MOE_MULTI;
        FR_LAUNCH(k_moe_gateup4, gu, MOE_THREADS, 0, fr_cu_stream(be), a);
    }
    a.which = multi ? MOE_SINGLE : MOE_ALL;
    FR_LAUNCH(k_moe_down1, dn, MOE_THREADS, 0, fr_cu_stream(be), a);
    if (multi) {
        a.which = MOE_MULTI;
        FR_LAUNCH(k_moe_down4, dn, MOE_THREADS, 0, fr_cu_stream(be), a);
    }
}

/* ---- routing */

/* Warp argmax over lane-held candidates (v, i): the largest v, the lowest i among equals
 * (each lane offers its own lowest-index best). Every lane gets the result. */
__device__ __forceinline__ int moe_warp_argmax(float v, int i) {
    const float m = fr_warp_max(v);
    const float c = v == m ? (float)i : 3.0e38f;
    return (int)-fr_warp_max(-c);
}

/* The smallest e >= lo that lane owns (e % FR_WARP == lane). */
__device__ __forceinline__ int moe_owned_first(int lo, int lane) { return lo + ((lane - lo % FR_WARP) + FR_WARP) % FR_WARP; }

/* One token per block of one warp. Lane l owns experts e ≡ l (mod FR_WARP) and groups
 * g ≡ l: only the owner reads or writes an entry (no cross-lane shared memory, hence no
 * warp barrier needed); results travel by shuffles. scores: [n, E] logits in, sigmoid
 * scores out (in place). Selection follows fr_route_select step by step. */
__global__ void k_moe_select(float *scores, fr_weight bias, int has_bias, int E, int K, int n_group, int topk_group,
                             int norm, float rsf, int32_t *idx, float *wts) {
    FR_DYN_SHARED(float, choice);          /* [E] score + bias, -inf once taken or excluded */
    float *gscore = choice + E;            /* [n_group] */
    unsigned char *kept = (unsigned char *)(gscore + n_group); /* [E] */
    const int lane = (int)threadIdx.x;
    const int64_t t = blockIdx.x;
    float *sc = scores + t * E;
    for (int e = lane; e < E; e += FR_WARP) {
        const float s = 1.0f / (1.0f + expf(-sc[e]));
        sc[e] = s;
        choice[e] = s + (has_bias ? fr_dev_weight_get(bias, 0, e) : 0.0f);
        kept[e] = 0;
    }
    if (n_group > 1) {
        const int gs = E / n_group;
        for (int g = 0; g < n_group; g++) {
            /* group score: the two largest choices (with multiplicity), or the one */
            const int lo = g * gs, hi = lo + gs;
            float bv = -INFINITY;
            int bi = 1 << 24;
            for (int e = moe_owned_first(lo, lane); e < hi; e += FR_WARP)
                if (choice[e] > bv) bv = choice[e], bi = e;
            const float a = fr_warp_max(bv);
            float gsc = a;
            if (gs > 1) {
                const int ai = moe_warp_argmax(bv, bi);
                float b2 = -INFINITY;
                for (int e = moe_owned_first(lo, lane); e < hi; e += FR_WARP)
                    if (e != ai && choice[e] > b2) b2 = choice[e];
                gsc = a + fr_warp_max(b2);
            }
            if (lane == g % FR_WARP) gscore[g] = gsc;
        }
        for (int k = 0; k < topk_group; k++) {
            float bv = -INFINITY;
            int bi = 1 << 24;
            for (int g = lane; g < n_group; g += FR_WARP)
                if (gscore[g] > bv) bv = gscore[g], bi = g;
            int gi = moe_warp_argmax(bv, bi);
            gi = gi < 0 ? 0 : gi >= n_group ? n_group - 1 : gi;
            if (lane == gi % FR_WARP) gscore[gi] = -INFINITY;
            for (int e = moe_owned_first(gi * gs, lane); e < gi * gs + gs; e += FR_WARP) kept[e] = 1;
        }
        for (int e = lane; e < E; e += FR_WARP)
            if (!kept[e]) choice[e] = -INFINITY; /* excluded groups can never be chosen */
    }
    double sum = 0.0;
    for (int k = 0; k < K; k++) {
        float bv = -INFINITY;
        int bi = 1 << 24;
        for (int e = lane; e < E; e += FR_WARP)
            if (choice[e] > bv) bv = choice[e], bi = e;
        int ei = moe_warp_argmax(bv, bi);
        ei = ei < 0 ? 0 : ei >= E ? E - 1 : ei; /* only NaN scores get here: keep indices valid */
        const bool own = lane == ei % FR_WARP;
        const float s = fr_warp_max(own ? sc[ei] : -INFINITY);
        if (own) choice[ei] = -INFINITY;
        if (lane == 0) idx[t * K + k] = ei, wts[t * K + k] = s;
        sum += s;
    }
    if (lane == 0)
        for (int k = 0; k < K; k++) {
            double v = wts[t * K + k];
            if (norm) v /= (sum + 1e-20);
            wts[t * K + k] = (float)(v * rsf);
        }
}

/* Counting sort of the n*K slots by expert, in one block: per-expert counts (shared
 * atomics), one exclusive scan over experts of (slots, work items), work items written
 * in expert order, then each slot placed at its expert's cursor. The order of slots
 * within an expert varies from run to run; nothing downstream depends on it (each
 * token's sums are independent and land at its original slot). Each chosen expert adds
 * its bytes to the device counter once. */
__global__ void k_moe_group(const int32_t *idx, int64_t nK, int E, const moe_expert *table,
                            unsigned long long *bytes_counter, int *n_items, int *item_e, int *item_start,
                            int *item_cnt, int *sorted) {
    FR_DYN_SHARED(int, cnt); /* [E] counts, then cursors */
    __shared__ int scan_s[MOE_GROUP_THREADS], scan_i[MOE_GROUP_THREADS];
    const int tid = (int)threadIdx.x, T = (int)blockDim.x;
    for (int e = tid; e < E; e += T) cnt[e] = 0;
    fr_sync_threads();
    for (int64_t i = tid; i < nK; i += T) atomicAdd(&cnt[idx[i]], 1);
    fr_sync_threads();
    const int per = (E + T - 1) / T, lo = tid * per < E ? tid * per : E, hi = lo + per < E ? lo + per : E;
    int my_s = 0, my_i = 0;
    for (int e = lo; e < hi; e++) my_s += cnt[e], my_i += (cnt[e] + MOE_TTB - 1) / MOE_TTB;
    scan_s[tid] = my_s, scan_i[tid] = my_i;
    fr_sync_threads();
    for (int off = 1; off < T; off *= 2) { /* inclusive Hillis-Steele scan */
        const int vs = tid >= off ? scan_s[tid - off] : 0, vi = tid >= off ? scan_i[tid - off] : 0;
        fr_sync_threads();
        scan_s[tid] += vs, scan_i[tid] += vi;
        fr_sync_threads();
    }
    int pos = scan_s[tid] - my_s, it = scan_i[tid] - my_i;
    if (tid == T - 1) *n_items = scan_i[tid];
    fr_sync_threads(); /* everyone has read the scan before counts turn into cursors */
    for (int e = lo; e < hi; e++) {
        const int c = cnt[e];
        cnt[e] = pos;
        if (c) atomicAdd(bytes_counter, table[e].bytes);
        for (int s = 0; s < c; s += MOE_TTB, it++)
            item_e[it] = e, item_start[it] = pos + s, item_cnt[it] = c - s < MOE_TTB ? c - s : MOE_TTB;
        pos += c;
    }
    fr_sync_threads();
    for (int64_t i = tid; i < nK; i += T) sorted[atomicAdd(&cnt[idx[i]], 1)] = (int)i;
}

/* out[t, d] = (shared ? out[t, d] : 0) + Σ_k w[t, k] y[t*K + k, d], k in order. */
__global__ void k_moe_combine(float *out, const float *y, const float *wts, int64_t n, int64_t D, int K, int has_shared) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n * D) return;
    const int64_t t = i / D, d = i % D;
    float acc = has_shared ? out[i] : 0.0f;
    for (int k = 0; k < K; k++) acc += wts[t * K + k] * y[(t * K + k) * D + d];
    out[i] = acc;
}

/* h = SiLU(g) * u elementwise (the large-batch MLP). */
__global__ void k_silu_mul(float *g, const float *u, int64_t count) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < count) g[i] = moe_silu(g[i]) * u[i];
}

/* ---- host side */

static int64_t i64_min(int64_t a, int64_t b) { return a < b ? a : b; }
static size_t align256(size_t b) { return (b + 255) & ~(size_t)255; }

static bool mlp_shapes_ok(const fr_mlp *m, int64_t D, int64_t I) {
    return m->gate && m->up && m->down && m->gate->rows == I && m->gate->cols == D && m->up->rows == I &&
           m->up->cols == D && m->down->rows == D && m->down->cols == I;
}

fr_status fr_cu_mlp(fr_backend *be, float *out, const float *x, int64_t n, const fr_mlp *m) {
    if (!m->gate || !m->up || !m->down) return FR_ERR_INVALID;
    const int64_t I = m->gate->rows, D = m->gate->cols;
    if (!mlp_shapes_ok(m, D, I)) return FR_ERR_INVALID;
    moe_args a;
    memset(&a, 0, sizeof a);
    fr_status rc = fr_cu_weight(be, m->gate, &a.gate);
    if (!rc) rc = fr_cu_weight(be, m->up, &a.up);
    if (!rc) rc = fr_cu_weight(be, m->down, &a.down);
    if (rc || n < 1) return rc;
    const uint64_t bytes = (uint64_t)(fr_weight_bytes(m->gate) + fr_weight_bytes(m->up) + fr_weight_bytes(m->down));
    if (n <= MLP_FUSED_MAX_N) {
        be->weight_bytes_read += bytes;
        /* gate and up in one pass over their rows, then down: the expert kernels' direct mode */
        a.h = (float *)fr_cu_scratch(be, FR_CU_SCRATCH_MOE3, (size_t)(n * I) * sizeof(float));
        if (!a.h) return FR_ERR_DEVICE;
        a.n_direct = n, a.x = x, a.y = out, a.D = D, a.I = I, a.K = 1;
        const dim3 gu(fr_cu_blocks(n, MOE_TTB), fr_cu_blocks(I, MOE_ROWS)), dn(gu.x, fr_cu_blocks(D, MOE_ROWS_DOWN));
        a.which = MOE_ALL; /* the last item may hold one token: the wide kernel takes it too */
        if (n == 1) {
            FR_LAUNCH(k_moe_gateup1, gu, MOE_THREADS, 0, fr_cu_stream(be), a);
            FR_LAUNCH(k_moe_down1, dn, MOE_THREADS, 0, fr_cu_stream(be), a);
        } else {
            FR_LAUNCH(k_moe_gateup4, gu, MOE_THREADS, 0, fr_cu_stream(be), a);
            FR_LAUNCH(k_moe_down4, dn, MOE_THREADS, 0, fr_cu_stream(be), a);
        }
        return fr_cu_check(be, "mlp");
    }
    /* large batches: the matmul kernels, in chunks of tokens that keep g and u in budget */
    const int64_t chunk = i64_min(n, (int64_t)(MOE_CHUNK_BYTES / ((size_t)(2 * I) * sizeof(float))) + 1);
    float *g = (float *)fr_cu_scratch(be, FR_CU_SCRATCH_MOE3, align256((size_t)(chunk * I) * sizeof(float)) * 2);
    if (!g) return FR_ERR_DEVICE;
    float *u = g + align256((size_t)(chunk * I) * sizeof(float)) / sizeof(float);
    for (int64_t t0 = 0; t0 < n && !rc; t0 += chunk) {
        const int64_t c = i64_min(chunk, n - t0);
        be->weight_bytes_read += bytes; /* each chunk reads the weights again */
        rc = fr_cu_matmul_dev(be, g, x + t0 * D, c, &a.gate);
        if (!rc) rc = fr_cu_matmul_dev(be, u, x + t0 * D, c, &a.up);
        if (rc) break;
        FR_LAUNCH(k_silu_mul, fr_cu_blocks(c * I, 256), 256, 0, fr_cu_stream(be), g, u, c * I);
        rc = fr_cu_matmul_dev(be, out + t0 * D, g, c, &a.down);
    }
    return rc ? rc : fr_cu_check(be, "mlp");
}

/* The device table of experts' views, built on the first call with this `experts` array.
 * An expert that cannot be translated (never registered, wrong shape) gets a zero entry,
 * which the kernels turn into NaN outputs; that first call reports the error. */
static const moe_expert *moe_table(fr_backend *be, const fr_mlp *experts, int E, int64_t D, int64_t I, fr_status *rc) {
    bool fresh = false;
    moe_expert *dev = (moe_expert *)fr_cu_memo(be, experts, (size_t)E * sizeof(moe_expert), &fresh);
    *rc = FR_OK;
    if (!dev) {
        *rc = FR_ERR_DEVICE;
        return NULL;
    }
    if (!fresh) return dev;
    moe_expert *host = (moe_expert *)calloc((size_t)E, sizeof *host);
    if (!host) {
        *rc = FR_ERR_NOMEM;
        return NULL;
    }
    for (int e = 0; e < E; e++) {
        const fr_mlp *m = &experts[e];
        moe_expert x;
        fr_status r = mlp_shapes_ok(m, D, I) ? FR_OK : FR_ERR_INVALID;
        if (!r) r = fr_cu_weight(be, m->gate, &x.gate);
        if (!r) r = fr_cu_weight(be, m->up, &x.up);
        if (!r) r = fr_cu_weight(be, m->down, &x.down);
        if (r) {
            *rc = r;
            continue; /* the entry stays zero */
        }
        x.bytes = (unsigned long long)(fr_weight_bytes(m->gate) + fr_weight_bytes(m->up) + fr_weight_bytes(m->down));
        host[e] = x;
    }
    /* pageable source: the copy has left `host` when the call returns */
    if (fr_gpu_memcpy_h2d(dev, host, (size_t)E * sizeof *host, fr_cu_stream(be)) != FR_GPU_SUCCESS && !*rc)
        *rc = FR_ERR_DEVICE;
    free(host);
    return *rc ? NULL : dev;
}

/* Scratch of one token chunk: routing state in MOE, h in MOE's tail, y in MOE2. */
typedef struct {
    float *scores;
    int32_t *idx;
    float *wts;
    int *sorted, *n_items, *item_e, *item_start, *item_cnt;
    float *h, *y;
} moe_bufs;

static size_t moe_bufs_bytes(int64_t c, int E, int K, int64_t items, int64_t I, moe_bufs *b, char *base) {
    size_t off = 0;
    const int64_t nK = c * K;
#define MOE_CARVE(field, type, count)                                                                                  \
    do {                                                                                                               \
        if (b) b->field = (type *)(base + off);                                                                        \
        off += align256((size_t)(count) * sizeof(type));                                                               \
    } while (0)
    MOE_CARVE(scores, float, c * E);
    MOE_CARVE(idx, int32_t, nK);
    MOE_CARVE(wts, float, nK);
    MOE_CARVE(sorted, int, nK);
    MOE_CARVE(n_items, int, 1);
    MOE_CARVE(item_e, int, items);
    MOE_CARVE(item_start, int, items);
    MOE_CARVE(item_cnt, int, items);
    MOE_CARVE(h, float, nK * I);
#undef MOE_CARVE
    return off;
}

/* Upper bound of work items for c tokens: Σ_e ceil(cnt_e / TTB) over at most
 * min(E, c*K) active experts. */
static int64_t moe_items_bound(int64_t c, int E, int K) {
    const int64_t nK = c * K, act = i64_min(E, nK);
    return (nK + act * (MOE_TTB - 1)) / MOE_TTB;
}

fr_status fr_cu_moe(fr_backend *be, float *out, const float *x, int64_t n, int64_t dim, const fr_router *r,
                    const fr_mlp *experts, const fr_mlp *shared) {
    const int E = r->n_experts, K = r->top_k;
    if (E < 1 || E > MOE_MAX_E || K < 1 || K > E || !r->gate || r->gate->rows != E || r->gate->cols != dim)
        return FR_ERR_INVALID;
    const int ng = r->n_group > 1 ? r->n_group : 1;
    if (ng > 1 && (ng > E || r->topk_group < 1 || r->topk_group > ng || K > r->topk_group * (E / ng)))
        return FR_ERR_INVALID; /* fr_route_select would run out of experts to pick */
    if (!experts[0].gate) return FR_ERR_INVALID;
    const int64_t I = experts[0].gate->rows;
    fr_weight gate, bias;
    fr_status rc = fr_cu_weight(be, r->gate, &gate);
    const int has_bias = r->bias && r->bias->data;
    memset(&bias, 0, sizeof bias);
    if (!rc && has_bias) rc = fr_cu_weight(be, r->bias, &bias);
    if (rc) return rc;
    if (n < 1) return FR_OK;
    const moe_expert *table = moe_table(be, experts, E, dim, I, &rc);
    if (rc) return rc;

    /* tokens per chunk: routing state, h and y of a chunk within MOE_CHUNK_BYTES */
    const size_t per_token = (size_t)K * (size_t)(I + dim) * sizeof(float) + (size_t)E * sizeof(float) + 64;
    const int64_t chunk = i64_min(n, (int64_t)(MOE_CHUNK_BYTES / per_token) + 1);
    const int64_t bound = moe_items_bound(chunk, E, K);
    moe_bufs b;
    char *base = (char *)fr_cu_scratch(be, FR_CU_SCRATCH_MOE, moe_bufs_bytes(chunk, E, K, bound, I, NULL, NULL));
    float *y = (float *)fr_cu_scratch(be, FR_CU_SCRATCH_MOE2, (size_t)(chunk * K * dim) * sizeof(float));
    if (!base || !y) return FR_ERR_DEVICE;
    moe_bufs_bytes(chunk, E, K, bound, I, &b, base);
    b.y = y;

    const bool with_shared = shared && shared->gate;
    if (with_shared && (rc = fr_cu_mlp(be, out, x, n, shared)) != FR_OK) return rc;

    const size_t select_smem = (size_t)E * (sizeof(float) + 1) + (size_t)ng * sizeof(float) + 16;
    for (int64_t t0 = 0; t0 < n; t0 += chunk) {
        const int64_t c = i64_min(chunk, n - t0), nK = c * K, items = moe_items_bound(c, E, K);
        const float *xc = x + t0 * dim;
        /* bytes are what is read: a batch past one chunk reads router and experts per chunk */
        be->weight_bytes_read += (uint64_t)fr_weight_bytes(r->gate);
        if ((rc = fr_cu_matmul_dev(be, b.scores, xc, c, &gate)) != FR_OK) return rc;
        FR_LAUNCH(k_moe_select, (unsigned)c, FR_WARP, select_smem, fr_cu_stream(be), b.scores, bias, has_bias, E, K, ng,
                  r->topk_group, (int)r->norm_topk_prob, r->routed_scaling_factor, b.idx, b.wts);
        FR_LAUNCH(k_moe_group, 1, MOE_GROUP_THREADS, (size_t)E * sizeof(int), fr_cu_stream(be), b.idx, nK, E, table,
                  fr_cu_bytes_counter(be), b.n_items, b.item_e, b.item_start, b.item_cnt, b.sorted);
        moe_args a;
        memset(&a, 0, sizeof a);
        a.table = table, a.n_items = b.n_items, a.item_e = b.item_e, a.item_start = b.item_start;
        a.item_cnt = b.item_cnt, a.sorted = b.sorted, a.K = K, a.x = xc, a.h = b.h, a.y = b.y, a.D = dim, a.I = I;
        moe_launch_experts(be, a, items, c > 1);
        FR_LAUNCH(k_moe_combine, fr_cu_blocks(c * dim, 256), 256, 0, fr_cu_stream(be), out + t0 * dim, b.y, b.wts, c, dim, K,
                  (int)with_shared);
    }
    return fr_cu_check(be, "moe");
}
