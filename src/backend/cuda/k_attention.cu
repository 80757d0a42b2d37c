/* k_attention.cu - MLA attention (both forms, dense and sparse) and the DSA indexer top-k.
 *
 * Absorbed (decode) form, per query token t and head h (the CPU's mla_absorbed):
 *   q_lat = W_UK[h]ᵀ q_nope                      mla_qlat_kernel (a transposed product)
 *   p = softmax(scale (q_lat·c_kv[s] + q_pe·k_pe[s])) over the visible keys s
 *   o_lat = Σ p c_kv[s]                            mla_decode_kernel + mla_combine_kernel
 *   out = W_UV[h] o_lat                            mla_project_kernel
 * Every head reads the same latent rows (an MQA), so a warp keeps a group of heads' q_lat
 * in registers and streams each cache row once for all of them; the keys are split over
 * blocks (flash-decoding: a partial max, sum and o_lat per split, merged by the combine).
 *
 * Naive (prefill) form (the CPU's mla_naive): the visible latents are gathered as float32,
 * up-projected by kv_b into per-head k_nope and v (fr_cu_matmul_dev), and a flash-attention
 * kernel runs an online softmax over key tiles for a tile of queries of one head.
 *
 * Sparse forms (cpu_dsa.c): the same over the positions of each token's selection row.
 * The naive form up-projects the union of the selected positions (computed on the device:
 * no host synchronization), then attends per (token, head) over the token's own list.
 *
 * dsa_select: indexer scores per (token, key) into scratch by a register-tiled kernel, then
 * per token a radix select finds the k-th largest score and an ordered compaction writes
 * the kept positions in increasing order (ties: the earliest keys), exactly the CPU's set.
 *
 * Nothing here synchronizes the stream or allocates (scratch grows on first use only).
 * The absorbed forms and dsa_select, what a decode step runs, can be recorded and replayed
 * (backend.h, step bracketing): their launches are sized by max_ctx, and pos0 and the
 * block table come from staged memory. The wall-time counters attention_s / indexer_s
 * are not updated: the work is queued asynchronously, and timing it would need events. */
#include <math.h>

#include "cuda_internal.h"
#include "k_weight.cuh"

/* Full unrolling of the register-array loops (indices must be constants, or the arrays
 * go to local memory); the emulator's compiler needs no hint. */
#if defined(FR_GPU_EMU)
#define AT_UNROLL
#else
#define AT_UNROLL _Pragma("unroll")
#endif

/* ================================================================= shared helpers */

/* Eight weight elements W[r, c0 .. c0+8) as float32 (0 past the last column). vec: the
 * view allows aligned 16-byte (8-byte for FP8) loads of 8 elements (see weight_vec). */
__device__ __forceinline__ void wload8(const fr_weight &w, int64_t r, int64_t c0, int vec, float *o) {
    if (vec && c0 + 8 <= w.cols) {
        const int64_t off = r * w.cols + c0;
        switch (w.dtype) {
        case FR_DTYPE_F32: {
            const float4 a = *(const float4 *)((const float *)w.data + off);
            const float4 b = *(const float4 *)((const float *)w.data + off + 4);
            o[0] = a.x, o[1] = a.y, o[2] = a.z, o[3] = a.w, o[4] = b.x, o[5] = b.y, o[6] = b.z, o[7] = b.w;
            return;
        }
        case FR_DTYPE_BF16:
        case FR_DTYPE_F16: {
            const uint4 u = *(const uint4 *)((const uint16_t *)w.data + off);
            const uint32_t word[4] = {u.x, u.y, u.z, u.w};
            const bool bf = w.dtype == FR_DTYPE_BF16;
            for (int i = 0; i < 4; i++) {
                const uint16_t lo = (uint16_t)(word[i] & 0xffffu), hi = (uint16_t)(word[i] >> 16);
                o[2 * i] = bf ? fr_dev_bf16(lo) : fr_dev_f16(lo);
                o[2 * i + 1] = bf ? fr_dev_bf16(hi) : fr_dev_f16(hi);
            }
            return;
        }
        case FR_DTYPE_F8_E4M3: {
            const uint32_t *p = (const uint32_t *)((const uint8_t *)w.data + off);
            const uint32_t word[2] = {p[0], p[1]};
            const float s =
                w.scale_inv ? w.scale_inv[((w.row0 + r) / w.block_rows) * w.scale_cols + c0 / w.block_cols]
                            : 1.0f;
            for (int i = 0; i < 8; i++) o[i] = fr_dev_e4m3((uint8_t)(word[i / 4] >> (8 * (i % 4)))) * s;
            return;
        }
        default: break;
        }
    }
    for (int i = 0; i < 8; i++) o[i] = c0 + i < w.cols ? fr_dev_weight_get(w, r, c0 + i) : 0.0f;
}

/* Exclusive prefix sum of v over the block (buf: blockDim.x ints of shared memory);
 * *total gets the block's sum. Every thread must call it. */
__device__ int block_excl_scan(int v, int *buf, int *total) {
    const int tid = (int)threadIdx.x, nt = (int)blockDim.x;
    buf[tid] = v;
    fr_sync_threads();
    for (int off = 1; off < nt; off <<= 1) {
        const int x = tid >= off ? buf[tid - off] : 0;
        fr_sync_threads();
        buf[tid] += x;
        fr_sync_threads();
    }
    const int incl = buf[tid];
    *total = buf[nt - 1];
    fr_sync_threads();
    return incl - v;
}

/* Cache row of the sequence's token s in a paged cache (blocks: the device block table). */
__device__ __forceinline__ int64_t page_slot(const int32_t *blocks, int bs, int64_t s) {
    return (int64_t)blocks[s / bs] * bs + s % bs;
}

/* Merge of two online-softmax states: weight of a state with max m under the common max M. */
__device__ __forceinline__ float state_weight(float m, float M) {
    return m == -INFINITY ? 0.0f : expf(m - M);
}

/* ================================================================= absorbed form */

/* q_lat[t, h, c] = Σ_i q[t, h, i] W_UK[h][i, c] (i < nope): a block per (64 columns, head),
 * 8 column groups of 8 by 32 row groups, tokens 4 at a time so each weight element is read
 * once per 4 tokens; the row groups' partial sums meet in shared memory. */
#define QL_TX   8
#define QL_TY   32
#define QL_COLS (QL_TX * 8)
#define QL_TOK  4
struct fr_mla_qlat_args {
    const float *q;
    float *qlat;
    fr_weight kvb;
    int n, H, r, dn, dr, dv, vec;
};

__global__ void mla_qlat_kernel(fr_mla_qlat_args a) {
    __shared__ float red[QL_TY][QL_TOK][QL_COLS];
    const int tid = (int)threadIdx.x, tx = tid % QL_TX, ty = tid / QL_TX;
    const int h = (int)blockIdx.y, cb = (int)blockIdx.x * QL_COLS, c0 = cb + tx * 8;
    const int64_t qw = a.dn + a.dr;
    for (int t0 = 0; t0 < a.n; t0 += QL_TOK) {
        float acc[QL_TOK][8];
        for (int tt = 0; tt < QL_TOK; tt++)
            for (int k = 0; k < 8; k++) acc[tt][k] = 0.0f;
        if (c0 < a.r) {
            for (int i = ty; i < a.dn; i += QL_TY) {
                float w8[8];
                wload8(a.kvb, (int64_t)h * (a.dn + a.dv) + i, c0, a.vec, w8);
                for (int tt = 0; tt < QL_TOK; tt++) {
                    const float qv = t0 + tt < a.n ? a.q[((int64_t)(t0 + tt) * a.H + h) * qw + i] : 0.0f;
                    for (int k = 0; k < 8; k++) acc[tt][k] += qv * w8[k];
                }
            }
        }
        for (int tt = 0; tt < QL_TOK; tt++)
            for (int k = 0; k < 8; k++) red[ty][tt][tx * 8 + k] = acc[tt][k];
        fr_sync_threads();
        for (int o = tid; o < QL_TOK * QL_COLS; o += (int)blockDim.x) {
            const int tt = o / QL_COLS, cl = o % QL_COLS, c = cb + cl;
            float s = 0.0f;
            for (int y = 0; y < QL_TY; y++) s += red[y][tt][cl];
            if (t0 + tt < a.n && c < a.r) a.qlat[((int64_t)(t0 + tt) * a.H + h) * a.r + c] = s;
        }
        fr_sync_threads();
    }
}

/* E4M3 byte b as float32 with two integer operations and one multiply: its exponent and
 * mantissa bits placed in a float32's (bias 127 instead of 7, so times 2^120); subnormals
 * come out right as float32 subnormals. Equal to fr_dev_e4m3 except for the NaN codes,
 * which a cache row never holds (the encoder saturates). */
__device__ __forceinline__ float e4m3_fast(uint32_t b) {
    return fr_dev_bits_f32(((b & 0x80u) << 24) | ((b & 0x7fu) << 20)) * 0x1p120f;
}

/* Sum of each of V values over the warp, every lane getting all V sums, with
 * (V - 1) + log2(FR_WARP / V) + (V - 1) shuffles instead of V log2(FR_WARP): a
 * reduce-scatter (each round a lane keeps half of its values and adds its partner's
 * copies of them), a butterfly over the lanes that hold the same value, then an
 * all-gather. Lanes end bit-identical (a butterfly adds each pair in
 * both orders, and addition commutes), so per-lane decisions on the sums agree. V: a
 * power of two <= FR_WARP. */
template <int V> __device__ __forceinline__ void warp_sum_vec(float *v) {
    const int lane = (int)threadIdx.x % FR_WARP;
    int mask = FR_WARP / 2;
    AT_UNROLL
    for (int c = V; c > 1; c /= 2, mask /= 2) {
        const bool hi = (lane & mask) != 0; /* keep the upper half */
        AT_UNROLL
        for (int j = 0; j < c / 2; j++) {
            const float send = hi ? v[j] : v[c / 2 + j];
            const float keep = hi ? v[c / 2 + j] : v[j];
            v[j] = keep + fr_shfl_xor(send, mask);
        }
    }
    AT_UNROLL
    for (int mk = mask; mk > 0; mk /= 2) v[0] += fr_shfl_xor(v[0], mk);
    AT_UNROLL
    for (int c = 2, mg = FR_WARP / V; c <= V; c *= 2, mg *= 2) {
        const bool hi = (lane & mg) != 0;
        AT_UNROLL
        for (int j = 0; j < c / 2; j++) {
            const float mine = v[j], other = fr_shfl_xor(v[j], mg);
            v[j] = hi ? other : mine;
            v[c / 2 + j] = hi ? mine : other;
        }
    }
}

/* The attention core. A warp owns HG heads of one token and a lane owns NL consecutive
 * latent columns and NR rope columns of every key: the warp holds those heads' q_lat and
 * q_pe in registers, and per key loads its slice of the row once (16 bytes of an FP8
 * row), forms HG partial dots, reduces them over the warp and updates HG online-softmax
 * states and o_lat slices; KU keys per step, so their loads are in flight together and
 * share one reduction and one rescale. The block's warps are gpb head groups x kw key
 * streams over the block's split of the keys (interleaved, so the streams share cache
 * lines); at the end the key streams merge through shared memory and the block writes
 * one partial (max, sum, o_lat) per head and split. No barrier inside the key loop.
 * Scores are kept in log2 units (scale * log2 e folded in) for exp2f. */
struct fr_mla_dec_args {
    const float *qlat, *q;
    const uint8_t *cache;
    const int32_t *blocks, *sel, *rowlen;
    float *pm, *pl, *po;
    const int64_t *pos0; /* staged: a recorded step's arguments stay valid */
    int64_t row_bytes;
    int n, H, r, dr, dn, bs, width, ns, gpb, kw, rope_off, scale_off, fp8, vec;
    float scale2;
};

/* Lane's slice of the latent row at `row`: kv[NL] (an FP8 row's values unscaled, *rs its
 * scale), kr[NR]. */
template <int NL, int NR>
__device__ __forceinline__ void load_key(const fr_mla_dec_args &a, const uint8_t *row, int c0, int e0,
                                         float *kv, float *kr, float *rs) {
    if (!a.fp8) {
        const float *rf = (const float *)row;
        if (a.vec && c0 + NL <= a.r) {
            AT_UNROLL
            for (int i = 0; i < NL / 4; i++) {
                const float4 v = *(const float4 *)(rf + c0 + 4 * i);
                kv[4 * i] = v.x, kv[4 * i + 1] = v.y, kv[4 * i + 2] = v.z, kv[4 * i + 3] = v.w;
            }
        } else {
            AT_UNROLL
            for (int i = 0; i < NL; i++) kv[i] = c0 + i < a.r ? rf[c0 + i] : 0.0f;
        }
        AT_UNROLL
        for (int i = 0; i < NR; i++) kr[i] = e0 + i < a.dr ? rf[a.r + e0 + i] : 0.0f;
        *rs = 1.0f;
        return;
    }
    if (a.vec && c0 + NL <= a.r) {
        uint32_t wd[NL / 4];
        if (NL % 16 == 0) {
            AT_UNROLL
            for (int i = 0; i < NL / 16; i++) {
                const uint4 u = *(const uint4 *)(row + c0 + 16 * i);
                wd[4 * i] = u.x, wd[4 * i + 1] = u.y, wd[4 * i + 2] = u.z, wd[4 * i + 3] = u.w;
            }
        } else {
            AT_UNROLL
            for (int i = 0; i < NL / 4; i++) wd[i] = *(const uint32_t *)(row + c0 + 4 * i);
        }
        AT_UNROLL
        for (int i = 0; i < NL; i++) kv[i] = e4m3_fast((wd[i / 4] >> (8 * (i % 4))) & 0xffu);
    } else {
        AT_UNROLL
        for (int i = 0; i < NL; i++) kv[i] = c0 + i < a.r ? e4m3_fast(row[c0 + i]) : 0.0f;
    }
    *rs = *(const float *)(row + a.scale_off);
    const uint16_t *pe = (const uint16_t *)(row + a.rope_off);
    AT_UNROLL
    for (int i = 0; i < NR; i++) kr[i] = e0 + i < a.dr ? fr_dev_bf16(pe[e0 + i]) : 0.0f;
}

/* CFG = NL * 16 + NR (one template parameter: launch macros split on commas). */
template <int CFG> __global__ void mla_decode_kernel(fr_mla_dec_args a) {
    constexpr int NL = CFG / 16, NR = CFG % 16, HG = NL >= 32 ? 2 : 4, KU = NL >= 32 ? 1 : 2;
    FR_DYN_SHARED(float, buf);
    const int lane = (int)threadIdx.x % FR_WARP, wi = (int)threadIdx.x / FR_WARP;
    const int gl = wi % a.gpb, kw = wi / a.gpb;
    const int ngroups = (a.H + HG - 1) / HG, hchunks = (ngroups + a.gpb - 1) / a.gpb;
    const int t = (int)blockIdx.y / hchunks, g = ((int)blockIdx.y % hchunks) * a.gpb + gl, h0 = g * HG;
    const int sp = (int)blockIdx.x;
    const int c0 = lane * NL, e0 = lane * NR;
    const int64_t qw = a.dn + a.dr;

    float ql[HG][NL], qp[HG][NR], acc[HG][NL], m[HG], l[HG];
    AT_UNROLL
    for (int hh = 0; hh < HG; hh++) {
        const int h = h0 + hh;
        const bool hv = g < ngroups && h < a.H;
        const float *qlh = a.qlat + ((int64_t)t * a.H + h) * a.r,
                    *qph = a.q + ((int64_t)t * a.H + h) * qw + a.dn;
        AT_UNROLL
        for (int i = 0; i < NL; i++) ql[hh][i] = hv && c0 + i < a.r ? qlh[c0 + i] : 0.0f;
        AT_UNROLL
        for (int i = 0; i < NR; i++) qp[hh][i] = hv && e0 + i < a.dr ? qph[e0 + i] : 0.0f;
        AT_UNROLL
        for (int i = 0; i < NL; i++) acc[hh][i] = 0.0f;
        m[hh] = -INFINITY;
        l[hh] = 0.0f;
    }

    /* The splits cover this step's keys evenly (the grid is sized for the longest context) */
    const int64_t pos0 = *a.pos0, mmax = a.sel ? (int64_t)a.width : pos0 + a.n, ch = (mmax + a.ns - 1) / a.ns;
    const int64_t mt = a.sel ? (int64_t)a.rowlen[t] : pos0 + t + 1; /* keys this token sees */
    const int64_t k0 = (int64_t)sp * ch;
    int64_t k1 = k0 + ch < mt ? k0 + ch : mt;
    if (g >= ngroups) k1 = k0;
    const int32_t *srow = a.sel ? a.sel + (int64_t)t * a.width : NULL;
    for (int64_t j0 = k0 + kw; j0 < k1; j0 += (int64_t)KU * a.kw) {
        float kv[KU][NL], kr[KU][NR], rs[KU], part[KU * HG];
        bool ok[KU];
        AT_UNROLL
        for (int u = 0; u < KU; u++) {
            const int64_t j = j0 + (int64_t)u * a.kw;
            ok[u] = j < k1; /* the same in every lane */
            if (ok[u]) {
                const int64_t s = srow ? (int64_t)srow[j] : j;
                load_key<NL, NR>(a, a.cache + page_slot(a.blocks, a.bs, s) * a.row_bytes, c0, e0, kv[u],
                                 kr[u], &rs[u]);
            } else {
                AT_UNROLL
                for (int i = 0; i < NL; i++) kv[u][i] = 0.0f;
                AT_UNROLL
                for (int i = 0; i < NR; i++) kr[u][i] = 0.0f;
                rs[u] = 0.0f;
            }
        }
        AT_UNROLL
        for (int u = 0; u < KU; u++) {
            AT_UNROLL
            for (int hh = 0; hh < HG; hh++) {
                float sl = 0.0f, sr = 0.0f;
                AT_UNROLL
                for (int i = 0; i < NL; i++) sl += ql[hh][i] * kv[u][i];
                AT_UNROLL
                for (int i = 0; i < NR; i++) sr += qp[hh][i] * kr[u][i];
                /* an FP8 row's scale applies to its latent part only */
                part[u * HG + hh] = rs[u] * sl + sr;
            }
        }
        warp_sum_vec<KU * HG>(part);
        AT_UNROLL
        for (int hh = 0; hh < HG; hh++) {
            float sc[KU], mx = m[hh];
            AT_UNROLL
            for (int u = 0; u < KU; u++) {
                sc[u] = ok[u] ? a.scale2 * part[u * HG + hh] : -INFINITY;
                mx = fmaxf(mx, sc[u]);
            }
            if (mx > m[hh]) { /* rescale only when the max grows */
                const float corr = exp2f(m[hh] - mx);
                l[hh] *= corr;
                AT_UNROLL
                for (int i = 0; i < NL; i++) acc[hh][i] *= corr;
                m[hh] = mx;
            }
            float ps[KU];
            AT_UNROLL
            for (int u = 0; u < KU; u++) {
                const float p = ok[u] ? exp2f(sc[u] - m[hh]) : 0.0f;
                l[hh] += p;
                ps[u] = p * rs[u];
            }
            AT_UNROLL
            for (int i = 0; i < NL; i++) {
                AT_UNROLL
                for (int u = 0; u < KU; u++) acc[hh][i] += ps[u] * kv[u][i];
            }
        }
    }

    /* Key streams 1 .. kw-1 hand their states to stream 0, one at a time. */
    const int stride = a.r + 2;
    for (int k = 1; k < a.kw; k++) {
        fr_sync_threads();
        if (kw == k && g < ngroups) {
            AT_UNROLL
            for (int hh = 0; hh < HG; hh++) {
                float *b = buf + (gl * HG + hh) * stride;
                if (lane == 0) b[0] = m[hh], b[1] = l[hh];
                AT_UNROLL
                for (int i = 0; i < NL; i++)
                    if (c0 + i < a.r) b[2 + c0 + i] = acc[hh][i];
            }
        }
        fr_sync_threads();
        if (kw == 0 && g < ngroups) {
            AT_UNROLL
            for (int hh = 0; hh < HG; hh++) {
                const float *b = buf + (gl * HG + hh) * stride;
                const float mk = b[0], M = fmaxf(m[hh], mk);
                if (M == -INFINITY) continue;
                const float w0 = m[hh] == -INFINITY ? 0.0f : exp2f(m[hh] - M);
                const float wk = mk == -INFINITY ? 0.0f : exp2f(mk - M);
                l[hh] = l[hh] * w0 + b[1] * wk;
                AT_UNROLL
                for (int i = 0; i < NL; i++)
                    acc[hh][i] = acc[hh][i] * w0 + (c0 + i < a.r ? b[2 + c0 + i] * wk : 0.0f);
                m[hh] = M;
            }
        }
    }
    if (kw != 0 || g >= ngroups) return;
    AT_UNROLL
    for (int hh = 0; hh < HG; hh++) {
        const int h = h0 + hh;
        if (h >= a.H) break;
        const int64_t idx = ((int64_t)t * a.H + h) * a.ns + sp;
        if (lane == 0) a.pm[idx] = m[hh], a.pl[idx] = l[hh];
        AT_UNROLL
        for (int i = 0; i < NL; i++)
            if (c0 + i < a.r) a.po[idx * a.r + c0 + i] = acc[hh][i];
    }
}

/* Merge the splits' partial states of one (head, token) into o_lat for CB_COLS columns
 * (a block each, so a long context's many partials are read by many blocks). */
#define CB_COLS 64
struct fr_mla_comb_args {
    const float *pm, *pl, *po;
    float *olat;
    int H, r, ns;
};

__global__ void mla_combine_kernel(fr_mla_comb_args a) {
    FR_DYN_SHARED(float, wts);
    const int tid = (int)threadIdx.x, nt = (int)blockDim.x;
    const int h = (int)blockIdx.y, t = (int)blockIdx.z, c = (int)blockIdx.x * CB_COLS + tid;
    const int64_t base = ((int64_t)t * a.H + h) * a.ns;
    float mx = -INFINITY;
    for (int sp = tid; sp < a.ns; sp += nt) mx = fmaxf(mx, a.pm[base + sp]);
    mx = fr_block_max(mx);
    float ls = 0.0f;
    for (int sp = tid; sp < a.ns; sp += nt) {
        const float pm = a.pm[base + sp], wv = pm == -INFINITY ? 0.0f : exp2f(pm - mx);
        wts[sp] = wv;
        ls += wv * a.pl[base + sp];
    }
    ls = fr_block_sum(ls); /* its barriers also publish wts */
    if (c >= a.r) return;
    const float inv = ls > 0.0f ? 1.0f / ls : 0.0f; /* no keys at all (an empty selection): zeros */
    float o = 0.0f;
    for (int sp = 0; sp < a.ns; sp++) o += wts[sp] * a.po[(base + sp) * a.r + c];
    a.olat[((int64_t)t * a.H + h) * a.r + c] = o * inv;
}

/* out[t, h, j] = W_UV[h][j, :] · o_lat[t, h, :]: a warp per output row (h, j) over all
 * tokens, 4 at a time so the row is read once per 4 tokens. */
struct fr_mla_proj_args {
    const float *olat;
    float *out;
    fr_weight kvb;
    int n, H, r, dn, dv, vec;
};

__global__ void mla_project_kernel(fr_mla_proj_args a) {
    const int lane = (int)threadIdx.x % FR_WARP, nw = (int)blockDim.x / FR_WARP;
    const int64_t rowi = (int64_t)blockIdx.x * nw + (int)threadIdx.x / FR_WARP;
    if (rowi >= (int64_t)a.H * a.dv) return; /* a whole warp */
    const int h = (int)(rowi / a.dv), j = (int)(rowi % a.dv);
    const int64_t wr = (int64_t)h * (a.dn + a.dv) + a.dn + j;
    for (int t0 = 0; t0 < a.n; t0 += QL_TOK) {
        float s[QL_TOK] = {0.0f, 0.0f, 0.0f, 0.0f};
        for (int c0 = lane * 8; c0 < a.r; c0 += 8 * FR_WARP) {
            float w8[8];
            wload8(a.kvb, wr, c0, a.vec, w8);
            for (int tt = 0; tt < QL_TOK && t0 + tt < a.n; tt++) {
                const float *ol = a.olat + ((int64_t)(t0 + tt) * a.H + h) * a.r;
                for (int i = 0; i < 8; i++)
                    if (c0 + i < a.r) s[tt] += w8[i] * ol[c0 + i];
            }
        }
        for (int tt = 0; tt < QL_TOK; tt++) s[tt] = fr_warp_sum(s[tt]);
        if (lane == 0)
            for (int tt = 0; tt < QL_TOK && t0 + tt < a.n; tt++)
                a.out[((int64_t)(t0 + tt) * a.H + h) * a.dv + j] = s[tt];
    }
}

/* ================================================================= selections */

/* Length of each selection row (it ends at the first -1) and, with flags, marks the
 * selected positions (the union the sparse naive form up-projects). A block per token. */
__global__ void sel_rowlen_kernel(const int32_t *sel, int width, int *rowlen, int *flags) {
    __shared__ int best;
    const int t = (int)blockIdx.x, tid = (int)threadIdx.x, nt = (int)blockDim.x;
    const int32_t *row = sel + (int64_t)t * width;
    if (tid == 0) best = 0;
    fr_sync_threads();
    for (int j = tid; j < width; j += nt)
        if (row[j] < 0) atomicMax(&best, width - j); /* the first -1 gives the largest value */
    fr_sync_threads();
    const int len = width - best;
    if (tid == 0) rowlen[t] = len;
    if (flags)
        for (int j = tid; j < len; j += nt) flags[row[j]] = 1;
}

/* One block: numbers the marked positions in increasing order (uidx[s], upos[u]) and
 * stores their count; each thread walks a contiguous segment. */
__global__ void sel_union_kernel(const int *flags, int64_t T, int *uidx, int *upos, int *count) {
    __shared__ int scan[256];
    const int tid = (int)threadIdx.x;
    const int64_t seg = (T + blockDim.x - 1) / blockDim.x, s0 = tid * seg, s1 = s0 + seg < T ? s0 + seg : T;
    int c = 0;
    for (int64_t s = s0; s < s1; s++) c += flags[s] != 0;
    int total;
    int u = block_excl_scan(c, scan, &total);
    for (int64_t s = s0; s < s1; s++) {
        if (flags[s]) {
            uidx[s] = u;
            upos[u++] = (int)s;
        } else {
            uidx[s] = -1;
        }
    }
    if (tid == 0) *count = total;
}

/* ================================================================= naive form */

/* Latent rows as float32: lat[u] = c_kv, pe[u] = k_pe of position u (upos NULL) or of
 * upos[u] (rows past *count zeroed). A warp per row. */
struct fr_mla_gather_args {
    const uint8_t *cache;
    const int32_t *blocks;
    const int *upos, *count;
    float *lat, *pe;
    int64_t rows, row_bytes;
    int r, dr, bs, fp8, rope_off, scale_off;
};

__global__ void mla_gather_kernel(fr_mla_gather_args a) {
    const int lane = (int)threadIdx.x % FR_WARP, nw = (int)blockDim.x / FR_WARP;
    const int64_t u = (int64_t)blockIdx.x * nw + (int)threadIdx.x / FR_WARP;
    if (u >= a.rows) return;
    float *lo = a.lat + u * a.r, *po = a.pe + u * a.dr;
    int64_t s = u;
    if (a.upos) s = u < *a.count ? (int64_t)a.upos[u] : -1;
    if (s < 0) {
        for (int c = lane; c < a.r; c += FR_WARP) lo[c] = 0.0f;
        for (int c = lane; c < a.dr; c += FR_WARP) po[c] = 0.0f;
        return;
    }
    const uint8_t *row = a.cache + page_slot(a.blocks, a.bs, s) * a.row_bytes;
    if (!a.fp8) {
        const float *rf = (const float *)row;
        for (int c = lane; c < a.r; c += FR_WARP) lo[c] = rf[c];
        for (int c = lane; c < a.dr; c += FR_WARP) po[c] = rf[a.r + c];
        return;
    }
    const float rs = *(const float *)(row + a.scale_off);
    const uint16_t *pe = (const uint16_t *)(row + a.rope_off);
    for (int c = lane; c < a.r; c += FR_WARP) lo[c] = fr_dev_e4m3(row[c]) * rs;
    for (int c = lane; c < a.dr; c += FR_WARP) po[c] = fr_dev_bf16(pe[c]);
}

/* Causal flash attention of a tile of bq queries of head h over the up-projected keys:
 * K (k_nope | k_pe) and V tiles of FL_BK keys in shared memory, 8 threads per query row
 * (2 scores each, FL_OMAX output columns each), online softmax in registers. The
 * [H, n, T] score matrix never exists. */
#define FL_BK   16
#define FL_OMAX 32 /* output columns per thread: v <= 8 * FL_OMAX */
struct fr_mla_flash_args {
    const float *q, *kv, *pe;
    float *out;
    int64_t pos0;
    int n, H, dn, dr, dv, bq;
    float scale;
};

static inline size_t flash_smem_floats(int bq, int dq, int dv) {
    return (size_t)bq * (dq + 1) + (size_t)FL_BK * (dq + 1) + (size_t)FL_BK * (dv + 1) +
           (size_t)bq * (FL_BK + 1);
}

__global__ void mla_flash_kernel(fr_mla_flash_args a) {
    FR_DYN_SHARED(float, sm);
    const int DQ = a.dn + a.dr, qs = DQ + 1, vs = a.dv + 1, ps = FL_BK + 1;
    float *Qs = sm, *Ks = Qs + a.bq * qs, *Vs = Ks + FL_BK * qs, *Ps = Vs + FL_BK * vs;
    const int tid = (int)threadIdx.x, nt = (int)blockDim.x;
    const int h = (int)blockIdx.y, tq0 = (int)blockIdx.x * a.bq;
    const int qi = tid / 8, sub = tid % 8, t = tq0 + qi;
    const bool qv = t < a.n;
    const int64_t kvw = (int64_t)a.H * (a.dn + a.dv), hoff = (int64_t)h * (a.dn + a.dv);
    for (int i = tid; i < a.bq * DQ; i += nt) {
        const int rr = i / DQ, d = i % DQ, tt = tq0 + rr;
        Qs[rr * qs + d] = tt < a.n ? a.q[((int64_t)tt * a.H + h) * DQ + d] : 0.0f;
    }
    float acc[FL_OMAX];
    for (int j = 0; j < FL_OMAX; j++) acc[j] = 0.0f;
    float m = -INFINITY, l = 0.0f;
    const int tlast = tq0 + a.bq < a.n ? tq0 + a.bq : a.n;
    const int64_t kend = a.pos0 + tlast,
                  lim = a.pos0 + t; /* keys [0, kend) for the tile; row t sees s <= lim */
    for (int64_t k0 = 0; k0 < kend; k0 += FL_BK) {
        fr_sync_threads();
        for (int i = tid; i < FL_BK * DQ; i += nt) {
            const int kj = i / DQ, d = i % DQ;
            const int64_t s = k0 + kj;
            float v = 0.0f;
            if (s < kend) v = d < a.dn ? a.kv[s * kvw + hoff + d] : a.pe[s * a.dr + d - a.dn];
            Ks[kj * qs + d] = v;
        }
        for (int i = tid; i < FL_BK * a.dv; i += nt) {
            const int kj = i / a.dv, c = i % a.dv;
            const int64_t s = k0 + kj;
            Vs[kj * vs + c] = s < kend ? a.kv[s * kvw + hoff + a.dn + c] : 0.0f;
        }
        fr_sync_threads();
        const float *qr = Qs + qi * qs, *ka = Ks + sub * qs, *kb = Ks + (sub + 8) * qs;
        float s0 = 0.0f, s1 = 0.0f;
        for (int d = 0; d < DQ; d++) {
            s0 += qr[d] * ka[d];
            s1 += qr[d] * kb[d];
        }
        const bool ok0 = qv && k0 + sub <= lim, ok1 = qv && k0 + sub + 8 <= lim;
        s0 = ok0 ? a.scale * s0 : -INFINITY;
        s1 = ok1 ? a.scale * s1 : -INFINITY;
        float tm = fmaxf(s0, s1);
        for (int mk = 1; mk < 8; mk <<= 1) tm = fmaxf(tm, fr_shfl_xor(tm, mk)); /* the row's 8 threads */
        const float mn = fmaxf(m, tm);
        float p0 = 0.0f, p1 = 0.0f, corr = 1.0f;
        if (mn != -INFINITY) {
            p0 = ok0 ? expf(s0 - mn) : 0.0f;
            p1 = ok1 ? expf(s1 - mn) : 0.0f;
            corr = state_weight(m, mn);
        }
        float rsum = p0 + p1;
        for (int mk = 1; mk < 8; mk <<= 1) rsum += fr_shfl_xor(rsum, mk);
        l = l * corr + rsum;
        m = mn;
        Ps[qi * ps + sub] = p0;
        Ps[qi * ps + sub + 8] = p1;
        for (int j = 0; j < FL_OMAX; j++) acc[j] *= corr;
        fr_sync_threads();
        for (int kj = 0; kj < FL_BK; kj++) {
            const float p = Ps[qi * ps + kj];
            const float *vr = Vs + kj * vs;
            for (int j = 0; j < FL_OMAX; j++) {
                const int c = sub + 8 * j;
                if (c < a.dv) acc[j] += p * vr[c];
            }
        }
    }
    if (!qv) return;
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
    for (int j = 0; j < FL_OMAX; j++) {
        const int c = sub + 8 * j;
        if (c < a.dv) a.out[((int64_t)t * a.H + h) * a.dv + c] = acc[j] * inv;
    }
}

/* Sparse naive form: a block per (head, token), SN_WARPS warps each taking every
 * SN_WARPS-th selected key; a lane owns columns lane + FR_WARP * i of q / k and of v. The
 * warps' online-softmax states merge through shared memory at the end. */
#define SN_WARPS 4
#define SN_QMAX  8 /* nope + rope <= FR_WARP * SN_QMAX */
#define SN_VMAX  8 /* v <= FR_WARP * SN_VMAX */
struct fr_mla_snaive_args {
    const float *q, *kv, *pe;
    const int32_t *sel;
    const int *rowlen, *uidx;
    float *out;
    int H, dn, dr, dv, width;
    float scale;
};

__global__ void mla_sparse_naive_kernel(fr_mla_snaive_args a) {
    __shared__ float st[SN_WARPS][2];
    __shared__ float ob[SN_WARPS][SN_VMAX * FR_WARP];
    const int lane = (int)threadIdx.x % FR_WARP, wi = (int)threadIdx.x / FR_WARP;
    const int h = (int)blockIdx.x, t = (int)blockIdx.y;
    const int DQ = a.dn + a.dr;
    const int64_t kvw = (int64_t)a.H * (a.dn + a.dv), hoff = (int64_t)h * (a.dn + a.dv);
    float qr[SN_QMAX], o[SN_VMAX];
    for (int i = 0; i < SN_QMAX; i++) {
        const int d = lane + FR_WARP * i;
        qr[i] = d < DQ ? a.q[((int64_t)t * a.H + h) * DQ + d] : 0.0f;
    }
    for (int i = 0; i < SN_VMAX; i++) o[i] = 0.0f;
    float m = -INFINITY, l = 0.0f;
    const int len = a.rowlen[t];
    const int32_t *srow = a.sel + (int64_t)t * a.width;
    for (int j = wi; j < len; j += SN_WARPS) {
        const int64_t u = a.uidx[srow[j]];
        const float *kr = a.kv + u * kvw + hoff, *pr = a.pe + u * a.dr;
        float part = 0.0f;
        for (int i = 0; i < SN_QMAX; i++) {
            const int d = lane + FR_WARP * i;
            if (d < a.dn)
                part += qr[i] * kr[d];
            else if (d < DQ)
                part += qr[i] * pr[d - a.dn];
        }
        const float sc = a.scale * fr_warp_sum(part);
        const float mn = fmaxf(m, sc), corr = state_weight(m, mn), p = expf(sc - mn);
        l = l * corr + p;
        m = mn;
        for (int i = 0; i < SN_VMAX; i++) {
            const int c = lane + FR_WARP * i;
            if (c < a.dv) o[i] = o[i] * corr + p * kr[a.dn + c];
        }
    }
    if (lane == 0) st[wi][0] = m, st[wi][1] = l;
    for (int i = 0; i < SN_VMAX; i++) ob[wi][lane + FR_WARP * i] = o[i];
    fr_sync_threads();
    if (wi != 0) return;
    float M = -INFINITY;
    for (int k = 0; k < SN_WARPS; k++) M = fmaxf(M, st[k][0]);
    float wk[SN_WARPS], L = 0.0f;
    for (int k = 0; k < SN_WARPS; k++) {
        wk[k] = state_weight(st[k][0], M);
        L += wk[k] * st[k][1];
    }
    const float inv = L > 0.0f ? 1.0f / L : 0.0f; /* an empty selection row: zeros */
    for (int i = 0; i < SN_VMAX; i++) {
        const int c = lane + FR_WARP * i;
        if (c >= a.dv) continue;
        float s = 0.0f;
        for (int k = 0; k < SN_WARPS; k++) s += wk[k] * ob[k][c];
        a.out[((int64_t)t * a.H + h) * a.dv + c] = s * inv;
    }
}

/* ================================================================= DSA indexer */

/* Scores of a tile of DS_KT keys for one token: the [heads x keys] dot products as a
 * register-tiled product (a thread: 4 heads x 4 keys) over chunks of DS_DC dims staged
 * in shared memory (q and k transposed, so a thread reads 4 heads / 4 keys as one float4);
 * then ReLU, the per-head weights and the sum over heads (over the 16 head threads of
 * a key group, by shuffles). */
#define DS_KT 64
#define DS_HC 64
#define DS_DC 32
#define DS_LD (DS_KT + 4)
struct fr_dsa_score_args {
    const float *q, *w;
    const uint8_t *keys;
    const int32_t *blocks;
    float *score;
    const int64_t *pos0;  /* staged */
    int64_t T, row_bytes; /* T: the score rows' stride (the longest context) */
    int t0, HI, DI, bs, K, fp8, scale_off, vec;
    float scale;
};

__global__ void dsa_score_kernel(fr_dsa_score_args a) {
    __shared__ float Qc[DS_DC][DS_LD];
    __shared__ float Kc[DS_DC][DS_LD];
    const int tid = (int)threadIdx.x, hg = tid % 16, kg = tid / 16;
    const int tl = (int)blockIdx.y, t = a.t0 + tl;
    const int64_t m = *a.pos0 + t + 1, kt0 = (int64_t)blockIdx.x * DS_KT;
    if (m <= a.K || kt0 >= m) return; /* all keys kept, or past the causal end: no scores needed */
    float part[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int hc = 0; hc < a.HI; hc += DS_HC) {
        float acc[4][4];
        for (int i = 0; i < 4; i++)
            for (int k = 0; k < 4; k++) acc[i][k] = 0.0f;
        for (int dc = 0; dc < a.DI; dc += DS_DC) {
            fr_sync_threads();
            for (int i = tid; i < DS_DC * DS_HC; i += (int)blockDim.x) {
                const int d = i % DS_DC, hh = i / DS_DC, hd = hc + hh, dd = dc + d;
                Qc[d][hh] = hd < a.HI && dd < a.DI ? a.q[((int64_t)t * a.HI + hd) * a.DI + dd] : 0.0f;
            }
            for (int i = tid; i < DS_KT * (DS_DC / 4); i += (int)blockDim.x) {
                const int key = i % DS_KT, d4 = i / DS_KT, dd = dc + 4 * d4;
                const int64_t s = kt0 + key;
                float v[4] = {0.0f, 0.0f, 0.0f, 0.0f};
                if (s < m) {
                    const uint8_t *row = a.keys + page_slot(a.blocks, a.bs, s) * a.row_bytes;
                    if (!a.fp8) {
                        const float *rf = (const float *)row;
                        if (a.vec && dd + 4 <= a.DI) {
                            const float4 x = *(const float4 *)(rf + dd);
                            v[0] = x.x, v[1] = x.y, v[2] = x.z, v[3] = x.w;
                        } else {
                            for (int e = 0; e < 4; e++) v[e] = dd + e < a.DI ? rf[dd + e] : 0.0f;
                        }
                    } else {
                        const float rs = *(const float *)(row + a.scale_off);
                        for (int e = 0; e < 4; e++)
                            v[e] = dd + e < a.DI ? fr_dev_e4m3(row[dd + e]) * rs : 0.0f;
                    }
                }
                for (int e = 0; e < 4; e++) Kc[4 * d4 + e][key] = v[e];
            }
            fr_sync_threads();
            for (int d = 0; d < DS_DC; d++) {
                const float4 qa = *(const float4 *)&Qc[d][hg * 4];
                const float4 kb = *(const float4 *)&Kc[d][kg * 4];
                const float qv[4] = {qa.x, qa.y, qa.z, qa.w}, kv[4] = {kb.x, kb.y, kb.z, kb.w};
                for (int i = 0; i < 4; i++)
                    for (int k = 0; k < 4; k++) acc[i][k] += qv[i] * kv[k];
            }
        }
        for (int i = 0; i < 4; i++) {
            const int hd = hc + hg * 4 + i;
            const float wv = hd < a.HI ? a.w[(int64_t)t * a.HI + hd] : 0.0f;
            for (int k = 0; k < 4; k++)
                if (acc[i][k] > 0.0f) part[k] += wv * acc[i][k]; /* ReLU before the head weight */
        }
    }
    for (int mk = 1; mk < 16; mk <<= 1)
        for (int k = 0; k < 4; k++) part[k] += fr_shfl_xor(part[k], mk);
    if (hg != 0) return;
    for (int k = 0; k < 4; k++) {
        const int64_t s = kt0 + kg * 4 + k;
        if (s < m) a.score[(int64_t)tl * a.T + s] = part[k] * a.scale;
    }
}

/* Order-preserving integer image of a float score (-0 counts as +0, as == does). */
__device__ __forceinline__ uint32_t score_key(float f) {
    if (f == 0.0f) f = 0.0f;
    const uint32_t u = fr_dev_f32_bits(f);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

/* Top-k of one token's scores (a block of exactly 256 threads): a radix select over the
 * keys' 4 bytes (a shared histogram per byte, the bin holding the k-th largest found by a
 * suffix scan) gives the k-th largest key and how many of its ties to keep; then each
 * thread counts its contiguous segment's keys above it and ties, one scan places every
 * segment, and positions are written in increasing order (ties: the earliest). */
struct fr_dsa_sel_args {
    const float *score;
    int32_t *sel;
    const int64_t *pos0; /* staged */
    int64_t T;
    int t0, K;
};

__global__ void dsa_select_kernel(fr_dsa_sel_args a) {
    __shared__ int hist[256];
    __shared__ int scan[256];
    __shared__ uint32_t s_pref;
    __shared__ int s_rem;
    const int tid = (int)threadIdx.x;
    const int tl = (int)blockIdx.x, t = a.t0 + tl;
    const int64_t m = *a.pos0 + t + 1;
    int32_t *row = a.sel + (int64_t)t * a.K;
    if (m <= a.K) { /* every visible key is kept */
        for (int j = tid; j < a.K; j += 256) row[j] = j < m ? j : -1;
        return;
    }
    const float *sc = a.score + (int64_t)tl * a.T;
    if (tid == 0) s_pref = 0, s_rem = a.K;
    uint32_t mask = 0;
    int total;
    for (int shift = 24; shift >= 0; shift -= 8) {
        hist[tid] = 0;
        fr_sync_threads();
        const uint32_t pref = s_pref;
        const int rem = s_rem;
        for (int64_t s = tid; s < m; s += 256) {
            const uint32_t u = score_key(sc[s]);
            if ((u & mask) == pref) atomicAdd(&hist[(u >> shift) & 255u], 1);
        }
        fr_sync_threads();
        const int b = 255 - tid, v = hist[b];
        const int above = block_excl_scan(v, scan, &total); /* keys in bins above b */
        if (above < rem && rem <= above + v) {
            s_pref = pref | ((uint32_t)b << shift);
            s_rem = rem - above;
        }
        mask |= 255u << shift;
        fr_sync_threads();
    }
    const uint32_t thr = s_pref;
    const int need = s_rem; /* ties of thr to keep, the earliest first */
    const int64_t seg = (m + 255) / 256, s0 = tid * seg, s1 = s0 + seg < m ? s0 + seg : m;
    int cg = 0, ce = 0;
    for (int64_t s = s0; s < s1; s++) {
        const uint32_t u = score_key(sc[s]);
        cg += u > thr;
        ce += u == thr;
    }
    const int pg = block_excl_scan(cg, scan, &total);
    int te = block_excl_scan(ce, scan, &total);
    int o = pg + (te < need ? te : need);
    for (int64_t s = s0; s < s1; s++) {
        const uint32_t u = score_key(sc[s]);
        if (u > thr) {
            row[o++] = (int32_t)s;
        } else if (u == thr) {
            if (te < need) row[o++] = (int32_t)s;
            te++;
        }
    }
}

/* ================================================================= host side */

/* May wload8 use vector loads on this device view? Aligned rows of a multiple of 8 columns
 * (and FP8 blocks that keep a scale over 8 columns). */
static int weight_vec(const fr_weight *w) {
    if ((uintptr_t)w->data % 16 || w->cols % 8) return 0;
    switch (w->dtype) {
    case FR_DTYPE_F32:
    case FR_DTYPE_F16:
    case FR_DTYPE_BF16: return 1;
    case FR_DTYPE_F8_E4M3: return !w->scale_inv || w->block_cols % 8 == 0;
    default: return 0;
    }
}

/* Bump allocator over one scratch buffer: 16-byte aligned pieces. */
typedef struct {
    uint8_t *base;
    size_t off;
} carve;
static size_t al16(size_t b) { return (b + 15) & ~(size_t)15; }
static void *carve_take(carve *c, size_t bytes) {
    void *p = c->base + c->off;
    c->off += al16(bytes);
    return p;
}

/* The decode kernel's per-lane widths: NL latent and NR rope columns (lanes x NL >= r). */
static int pick_nl(int r) {
    for (int nl = 4; nl <= 32; nl *= 2)
        if ((int64_t)FR_WARP * nl >= r) return nl;
    return 0;
}
static int pick_nr(int dr) {
    for (int nr = 1; nr <= 4; nr *= 2)
        if ((int64_t)FR_WARP * nr >= dr) return nr;
    return 0;
}

/* Decode splits: enough blocks to keep the GPU busy (two per SM: on an H200's 132, a 1k
 * context already runs on ~128 blocks and a 32k one on 264, 124 keys each); at least
 * DEC_MIN_KEYS keys per split (one step of each key stream). The count follows max_ctx,
 * not this step's context, so a recorded decode step keeps its grid; the kernel spreads
 * the step's keys over the splits it has. */
#define DEC_BLOCKS_PER_SM 2
#define DEC_MIN_KEYS      8
#define DEC_MAX_SPLITS    1024

/* The longest context a call's launches are sized for (fr_mla_layer.max_ctx). */
static int64_t ctx_cap(int64_t max_ctx, int64_t pos0, int64_t n) {
    return max_ctx > pos0 + n ? max_ctx : pos0 + n;
}

/* pos0 on the device: a recorded step (CUDA graph) keeps its launch arguments, so kernels
 * read per-step values from staged memory. */
static const int64_t *stage_pos0(fr_backend *be, int64_t pos0) {
    return (const int64_t *)fr_cu_stage_value(be, &pos0, sizeof pos0);
}

/* The sequence's block table on the device, staged at its longest (ctx_cap tokens) so a
 * recorded step's staging layout holds as the context grows. */
static const int32_t *stage_blocks(fr_backend *be, const int32_t *blocks, int bs, int64_t tokens,
                                   int64_t cap) {
    const int64_t nb = (tokens + bs - 1) / bs, nb_cap = (cap + bs - 1) / bs;
    return (const int32_t *)fr_cu_stage_reserve(be, blocks, (size_t)nb * sizeof(int32_t),
                                                (size_t)nb_cap * sizeof(int32_t));
}

/* The absorbed form over dense keys (sel NULL) or over selection rows. Graph-safe: every
 * launch argument follows from the shapes, n and max_ctx; pos0 and the block table are read
 * from staged memory, the selection and its row lengths from the device. */
static fr_status mla_absorbed_run(fr_backend *be, float *out, const float *q, int64_t n, int64_t pos0,
                                  const fr_mla_layer *L, const fr_weight *kvb, const int32_t *dblocks,
                                  const int64_t *dpos0, const int32_t *sel, int width) {
    const int H = L->n_heads, dn = L->nope, dr = L->rope, dv = L->v, r = L->kv_lora;
    const int nl = pick_nl(r), nr = pick_nr(dr);
    if (!nl || !nr) return FR_ERR_UNSUPPORTED;
    const int hg = nl >= 32 ? 2 : 4;
    const int ngroups = (H + hg - 1) / hg, gpb = ngroups < 8 ? ngroups : 8, kw = 8 / gpb;
    const int hchunks = (ngroups + gpb - 1) / gpb;
    const int64_t mmax = sel ? (int64_t)width : ctx_cap(L->max_ctx, pos0, n);
    int64_t ns = (int64_t)DEC_BLOCKS_PER_SM * fr_cu_sm_count(be) / (n * hchunks);
    const int64_t ns_keys = (mmax + DEC_MIN_KEYS - 1) / DEC_MIN_KEYS;
    if (ns > ns_keys) ns = ns_keys;
    if (ns > DEC_MAX_SPLITS) ns = DEC_MAX_SPLITS;
    if (ns < 1) ns = 1;
    if (n * hchunks > 65535) return FR_ERR_UNSUPPORTED;

    const size_t nh = (size_t)n * H;
    const size_t bytes =
        al16(nh * r * 4) + 2 * al16(nh * ns * 4) + al16(nh * ns * r * 4) + al16((size_t)n * 4);
    carve c = {(uint8_t *)fr_cu_scratch(be, FR_CU_SCRATCH_ATTN, bytes), 0};
    if (!c.base) return FR_ERR_NOMEM;
    float *qlat = (float *)carve_take(&c, nh * r * 4);
    float *pm = (float *)carve_take(&c, nh * ns * 4), *pl = (float *)carve_take(&c, nh * ns * 4);
    float *po = (float *)carve_take(&c, nh * ns * r * 4);
    int *rowlen = (int *)carve_take(&c, (size_t)n * 4);
    fr_gpu_stream st = fr_cu_stream(be);
    (void)st; /* unused where launches ignore the stream (the emulator) */

    if (sel) FR_LAUNCH(sel_rowlen_kernel, (unsigned)n, 128, 0, st, sel, width, rowlen, (int *)NULL);

    fr_mla_qlat_args qa = {q, qlat, *kvb, (int)n, H, r, dn, dr, dv, weight_vec(kvb)};
    FR_LAUNCH(mla_qlat_kernel, dim3(fr_cu_blocks(r, QL_COLS), H), QL_TX * QL_TY, 0, st, qa);

    const int fp8 = L->kv_dtype == FR_KV_FP8;
    fr_mla_dec_args da;
    da.qlat = qlat, da.q = q, da.cache = (const uint8_t *)L->cache, da.blocks = dblocks;
    da.sel = sel, da.rowlen = rowlen, da.pm = pm, da.pl = pl, da.po = po;
    da.pos0 = dpos0, da.row_bytes = fr_kv_row_bytes(L->kv_dtype, r, dr);
    da.n = (int)n, da.H = H, da.r = r, da.dr = dr, da.dn = dn, da.bs = L->block_size, da.width = width;
    da.ns = (int)ns, da.gpb = gpb, da.kw = kw;
    da.rope_off = (int)fr_kv_fp8_rope_off(r), da.scale_off = (int)fr_kv_fp8_scale_off(r, dr), da.fp8 = fp8;
    /* vector loads: 16-byte aligned rows (FP8 rows always are, on an aligned cache) */
    da.vec = (uintptr_t)L->cache % 16 == 0 && (fp8 || (r + dr) % 4 == 0);
    da.scale2 = L->scale * 1.4426950408889634f; /* log2 e: the kernels use exp2f */
    const dim3 grid((unsigned)ns, (unsigned)(n * hchunks));
    const int threads = gpb * kw * FR_WARP;
    const size_t smem = kw > 1 ? (size_t)gpb * hg * (r + 2) * sizeof(float) : 0;
    switch (nl * 16 + nr) {
        // clang-format off
#define DEC_CASE(NL, NR)                                                                                     \
    case NL * 16 + NR: FR_LAUNCH(mla_decode_kernel<NL * 16 + NR>, grid, threads, smem, st, da); break;
        DEC_CASE(4, 1) DEC_CASE(4, 2) DEC_CASE(4, 4) DEC_CASE(8, 1) DEC_CASE(8, 2) DEC_CASE(8, 4)
        DEC_CASE(16, 1) DEC_CASE(16, 2) DEC_CASE(16, 4) DEC_CASE(32, 1) DEC_CASE(32, 2) DEC_CASE(32, 4)
#undef DEC_CASE
    default: return FR_ERR_UNSUPPORTED;
        // clang-format on
    }

    float *olat = qlat; /* q_lat is spent once the core has run */
    fr_mla_comb_args ca = {pm, pl, po, olat, H, r, (int)ns};
    FR_LAUNCH(mla_combine_kernel, dim3(fr_cu_blocks(r, CB_COLS), H, (unsigned)n), CB_COLS,
              (size_t)ns * sizeof(float), st, ca);
    fr_mla_proj_args pa = {olat, out, *kvb, (int)n, H, r, dn, dv, weight_vec(kvb)};
    FR_LAUNCH(mla_project_kernel, fr_cu_blocks((int64_t)H * dv, 8), 8 * FR_WARP, 0, st, pa);
    return fr_cu_check(be, sel ? "mla_sparse_attention (absorbed)" : "mla_attention (absorbed)");
}
/* Gather `rows` latent rows (all positions, or upos[0 .. *count) when upos is set) into
 * float32 lat / pe, and up-project them with kv_b into kv [rows, H * (nope + v)]: per head
 * k_nope then v. */
static fr_status gather_project(fr_backend *be, const fr_mla_layer *L, const fr_weight *kvb, const int32_t *dblocks,
                                const int *upos, const int *count, int64_t rows, float *lat, float *pe, float *kv) {
    const int r = L->kv_lora, dr = L->rope;
    fr_mla_gather_args ga = {(const uint8_t *)L->cache, dblocks, upos, count, lat, pe, rows,
                             fr_kv_row_bytes(L->kv_dtype, r, dr), r, dr, L->block_size, L->kv_dtype == FR_KV_FP8,
                             (int)fr_kv_fp8_rope_off(r), (int)fr_kv_fp8_scale_off(r, dr)};
    FR_LAUNCH(mla_gather_kernel, fr_cu_blocks(rows, 8), 8 * FR_WARP, 0, fr_cu_stream(be), ga);
    return fr_cu_matmul_dev(be, kv, lat, rows, kvb);
}

/* Dense naive form: gather all T latents, up-project, causal flash attention. Its sizes
 * follow this call's context (the prefill form is never part of a recorded step). */
static fr_status mla_naive_run(fr_backend *be, float *out, const float *q, int64_t n, int64_t pos0,
                               const fr_mla_layer *L, const fr_weight *kvb, const int32_t *dblocks) {
    const int H = L->n_heads, dn = L->nope, dr = L->rope, dv = L->v, r = L->kv_lora;
    const int64_t T = pos0 + n, kvw = (int64_t)H * (dn + dv);
    if (dv > 8 * FL_OMAX) return FR_ERR_UNSUPPORTED;
    int bq = 32;
    while (bq >= 8 && flash_smem_floats(bq, dn + dr, dv) * sizeof(float) > 48 * 1024) bq /= 2;
    if (bq < 8) return FR_ERR_UNSUPPORTED;
    if ((n + bq - 1) / bq > 0x7fffffff || H > 65535) return FR_ERR_UNSUPPORTED;

    carve c = {
        (uint8_t *)fr_cu_scratch(be, FR_CU_SCRATCH_ATTN, al16((size_t)T * r * 4) + al16((size_t)T * dr * 4)),
        0};
    float *kv = (float *)fr_cu_scratch(be, FR_CU_SCRATCH_ATTN2, (size_t)T * kvw * 4);
    if (!c.base || !kv) return FR_ERR_NOMEM;
    float *lat = (float *)carve_take(&c, (size_t)T * r * 4),
          *pe = (float *)carve_take(&c, (size_t)T * dr * 4);
    fr_gpu_stream st = fr_cu_stream(be);
    (void)st; /* unused where launches ignore the stream (the emulator) */

    fr_status rc = gather_project(be, L, kvb, dblocks, NULL, NULL, T, lat, pe, kv);
    if (rc) return rc;

    fr_mla_flash_args fa = {q, kv, pe, out, pos0, (int)n, H, dn, dr, dv, bq, L->scale};
    FR_LAUNCH(mla_flash_kernel, dim3(fr_cu_blocks(n, bq), H), bq * 8,
              flash_smem_floats(bq, dn + dr, dv) * sizeof(float), st, fa);
    return fr_cu_check(be, "mla_attention (naive)");
}

/* Sparse naive form: up-project the union of the selected positions (numbered on the
 * device; the row count is bounded on the host by min(T, n * width)), then attend per
 * (head, token) over the token's list. */
static fr_status mla_sparse_naive_run(fr_backend *be, float *out, const float *q, int64_t n, int64_t pos0,
                                      const fr_mla_layer *L, const fr_weight *kvb, const int32_t *dblocks,
                                      const int32_t *sel, int width) {
    const int H = L->n_heads, dn = L->nope, dr = L->rope, dv = L->v, r = L->kv_lora;
    const int64_t T = pos0 + n, kvw = (int64_t)H * (dn + dv);
    if (dn + dr > FR_WARP * SN_QMAX || dv > FR_WARP * SN_VMAX || n > 65535 || H > 0x7fffffff)
        return FR_ERR_UNSUPPORTED;
    int64_t ub = n * (int64_t)width;
    if (ub > T) ub = T;

    const size_t bytes = al16((size_t)ub * r * 4) + al16((size_t)ub * dr * 4) + 3 * al16((size_t)T * 4) +
                         al16(4) + al16((size_t)n * 4);
    carve c = {(uint8_t *)fr_cu_scratch(be, FR_CU_SCRATCH_ATTN, bytes), 0};
    float *kv = (float *)fr_cu_scratch(be, FR_CU_SCRATCH_ATTN2, (size_t)ub * kvw * 4);
    if (!c.base || !kv) return FR_ERR_NOMEM;
    float *lat = (float *)carve_take(&c, (size_t)ub * r * 4),
          *pe = (float *)carve_take(&c, (size_t)ub * dr * 4);
    int *flags = (int *)carve_take(&c, (size_t)T * 4), *uidx = (int *)carve_take(&c, (size_t)T * 4);
    int *upos = (int *)carve_take(&c, (size_t)T * 4), *count = (int *)carve_take(&c, 4);
    int *rowlen = (int *)carve_take(&c, (size_t)n * 4);
    fr_gpu_stream st = fr_cu_stream(be);
    (void)st; /* unused where launches ignore the stream (the emulator) */

    if (fr_gpu_memset(flags, 0, (size_t)T * 4, st)) return fr_cu_check(be, "mla_sparse_attention (memset)");
    FR_LAUNCH(sel_rowlen_kernel, (unsigned)n, 128, 0, st, sel, width, rowlen, flags);
    FR_LAUNCH(sel_union_kernel, 1, 256, 0, st, (const int *)flags, T, uidx, upos, count);
    fr_status rc = gather_project(be, L, kvb, dblocks, upos, count, ub, lat, pe, kv);
    if (rc) return rc;
    fr_mla_snaive_args sa = {q, kv, pe, sel, rowlen, uidx, out, H, dn, dr, dv, width, L->scale};
    FR_LAUNCH(mla_sparse_naive_kernel, dim3(H, (unsigned)n), SN_WARPS * FR_WARP, 0, st, sa);
    return fr_cu_check(be, "mla_sparse_attention (naive)");
}

/* The common part of the MLA ops: checks, kv_b's device view, the staged block table and
 * pos0, and the weight bytes (kv_b is read once per call, as the CPU counts it). */
static fr_status mla_prepare(fr_backend *be, int64_t n, int64_t pos0, const fr_mla_layer *L, fr_weight *kvb,
                             const int32_t **dblocks, const int64_t **dpos0) {
    if (pos0 < 0 || L->n_heads < 1 || L->kv_lora < 1 || L->rope < 1 || L->nope < 1 || L->v < 1 ||
        L->block_size < 1)
        return FR_ERR_INVALID;
    if (L->kv_dtype != FR_KV_F32 && L->kv_dtype != FR_KV_FP8) return FR_ERR_INVALID;
    fr_status rc = fr_cu_weight(be, L->kv_b, kvb);
    if (rc) return rc;
    *dblocks = stage_blocks(be, L->blocks, L->block_size, pos0 + n, ctx_cap(L->max_ctx, pos0, n));
    *dpos0 = stage_pos0(be, pos0);
    if (!*dblocks || !*dpos0) return FR_ERR_NOMEM;
    be->weight_bytes_read += (uint64_t)fr_weight_bytes(L->kv_b);
    return FR_OK;
}

fr_status fr_cu_mla_attention(fr_backend *be, float *out, const float *q, int64_t n, int64_t pos0,
                              const fr_mla_layer *L, bool absorbed) {
    if (n <= 0) return FR_OK;
    fr_weight kvb;
    const int32_t *dblocks;
    const int64_t *dpos0;
    fr_status rc = mla_prepare(be, n, pos0, L, &kvb, &dblocks, &dpos0);
    if (rc) return rc;
    return absorbed ? mla_absorbed_run(be, out, q, n, pos0, L, &kvb, dblocks, dpos0, NULL, 0)
                    : mla_naive_run(be, out, q, n, pos0, L, &kvb, dblocks);
}

fr_status fr_cu_mla_sparse_attention(fr_backend *be, float *out, const float *q, int64_t n, int64_t pos0,
                                     const fr_mla_layer *L, const int32_t *sel, int sel_width,
                                     bool absorbed) {
    if (sel_width < 1) return FR_ERR_INVALID;
    if (n <= 0) return FR_OK;
    fr_weight kvb;
    const int32_t *dblocks;
    const int64_t *dpos0;
    fr_status rc = mla_prepare(be, n, pos0, L, &kvb, &dblocks, &dpos0);
    if (rc) return rc;
    return absorbed ? mla_absorbed_run(be, out, q, n, pos0, L, &kvb, dblocks, dpos0, sel, sel_width)
                    : mla_sparse_naive_run(be, out, q, n, pos0, L, &kvb, dblocks, sel, sel_width);
}

/* Scores of up to this many bytes per pass (tokens are processed in chunks beyond it). */
#define DSA_SCORE_BYTES ((size_t)256 << 20)

/* Graph-safe as the absorbed form: grids and the score rows' stride follow max_ctx, pos0
 * and the block table are staged, and blocks past a token's causal end exit at once. */
fr_status fr_cu_dsa_select(fr_backend *be, int32_t *sel, const float *q, const float *w, int64_t n,
                           int64_t pos0, const fr_dsa_layer *L) {
    if (n <= 0) return FR_OK;
    if (pos0 < 0 || L->topk < 1 || L->n_heads < 1 || L->head_dim < 1 || L->block_size < 1)
        return FR_ERR_INVALID;
    if (L->kv_dtype != FR_KV_F32 && L->kv_dtype != FR_KV_FP8) return FR_ERR_INVALID;
    if (n > 0x7fffffff) return FR_ERR_UNSUPPORTED;
    const int64_t cap = ctx_cap(L->max_ctx, pos0, n);
    fr_gpu_stream st = fr_cu_stream(be);
    (void)st; /* unused where launches ignore the stream (the emulator) */
    const int64_t *dpos0 = stage_pos0(be, pos0);
    if (!dpos0) return FR_ERR_NOMEM;
    fr_dsa_sel_args xa = {NULL, sel, dpos0, cap, 0, L->topk};
    if (cap <= L->topk) { /* every row keeps all of its keys: no scores, no key reads */
        FR_LAUNCH(dsa_select_kernel, (unsigned)n, 256, 0, st, xa);
        return fr_cu_check(be, "dsa_select");
    }
    const int32_t *dblocks = stage_blocks(be, L->blocks, L->block_size, pos0 + n, cap);
    if (!dblocks) return FR_ERR_NOMEM;
    int64_t chunk = (int64_t)(DSA_SCORE_BYTES / ((size_t)cap * sizeof(float)));
    if (chunk < 1) chunk = 1;
    if (chunk > n) chunk = n;
    if (chunk > 65535) chunk = 65535;
    float *score = (float *)fr_cu_scratch(be, FR_CU_SCRATCH_DSA, (size_t)chunk * cap * sizeof(float));
    if (!score) return FR_ERR_NOMEM;
    const int fp8 = L->kv_dtype == FR_KV_FP8;
    fr_dsa_score_args sa;
    sa.q = q, sa.w = w, sa.keys = (const uint8_t *)L->keys, sa.blocks = dblocks, sa.score = score;
    sa.pos0 = dpos0, sa.T = cap, sa.row_bytes = fr_kv_row_bytes(L->kv_dtype, L->head_dim, 0);
    sa.HI = L->n_heads, sa.DI = L->head_dim, sa.bs = L->block_size, sa.K = L->topk, sa.fp8 = fp8;
    sa.scale_off = (int)fr_kv_fp8_scale_off(L->head_dim, 0);
    sa.vec = !fp8 && (uintptr_t)L->keys % 16 == 0 && L->head_dim % 4 == 0;
    sa.scale = L->scale;
    xa.score = score;
    for (int64_t t0 = 0; t0 < n; t0 += chunk) {
        const int64_t nc = t0 + chunk <= n ? chunk : n - t0;
        sa.t0 = (int)t0, xa.t0 = (int)t0;
        FR_LAUNCH(dsa_score_kernel, dim3(fr_cu_blocks(cap, DS_KT), (unsigned)nc), 256, 0, st, sa);
        FR_LAUNCH(dsa_select_kernel, (unsigned)nc, 256, 0, st, xa);
    }
    return fr_cu_check(be, "dsa_select");
}
