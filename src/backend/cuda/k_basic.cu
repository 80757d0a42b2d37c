/* k_basic.cu - the small ops: embedding, norms, RoPE, row copies, KV-cache writes.
 *
 * Each is a few microseconds of memory traffic at decode, so the kernels are plain: a
 * block per row for reductions (norms, FP8 row encoding), a thread per element or pair
 * otherwise. Statistics accumulate in float32 per thread and combine in the block (the
 * CPU reference sums in double; the difference is far inside the tests' tolerance). RoPE
 * angles are computed in double, as on the CPU, so positions up to 128k keep their
 * precision. */
#include "cuda_internal.h"
#include "k_weight.cuh"

#define ROW_THREADS 256

/* ---- embedding */

__global__ void k_embed(float *out, const int32_t *ids, fr_weight table) {
    const int64_t t = blockIdx.x, cols = table.cols;
    const int64_t r = ids[t];
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) out[t * cols + c] = fr_dev_weight_get(table, r, c);
}

fr_status fr_cu_embed(fr_backend *be, float *out, const int32_t *ids, int64_t n, const fr_weight *table) {
    fr_weight w;
    fr_status rc = fr_cu_weight(be, table, &w);
    if (rc) return rc;
    if (n < 1) return FR_OK;
    const int32_t *dids = (const int32_t *)fr_cu_stage(be, ids, (size_t)n * sizeof *ids);
    if (!dids) return FR_ERR_DEVICE;
    be->weight_bytes_read += (uint64_t)(n * table->cols * (int64_t)fr_dtype_size(table->dtype));
    FR_LAUNCH(k_embed, (unsigned)n, ROW_THREADS, 0, fr_cu_stream(be), out, dids, w);
    return fr_cu_check(be, "embed");
}

/* ---- RMSNorm, fused residual add + RMSNorm */

/* out = w * x / sqrt(mean(x^2) + eps) on one row; x may alias out. */
__device__ void rmsnorm_row(float *out, const float *x, int64_t dim, const fr_weight &w, float eps) {
    float ss = 0.0f;
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) ss += x[i] * x[i];
    ss = fr_block_sum(ss);
    const float inv = 1.0f / sqrtf(ss / (float)dim + eps);
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) out[i] = fr_dev_weight_get(w, 0, i) * (x[i] * inv);
}

__global__ void k_rmsnorm(float *out, const float *x, int64_t dim, int64_t stride, fr_weight w, float eps) {
    const int64_t t = blockIdx.x;
    rmsnorm_row(out + t * stride, x + t * stride, dim, w, eps);
}

__global__ void k_add_rmsnorm(float *out, float *resid, const float *delta, int64_t dim, fr_weight w, float eps) {
    const int64_t t = blockIdx.x;
    float *r = resid + t * dim;
    if (delta) {
        const float *d = delta + t * dim;
        for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) r[i] += d[i];
        fr_sync_threads(); /* each thread reads back only what it wrote, but keep the row whole */
    }
    rmsnorm_row(out + t * dim, r, dim, w, eps);
}

fr_status fr_cu_rmsnorm(fr_backend *be, float *out, const float *x, int64_t n, int64_t dim, int64_t stride,
                        const fr_weight *w, float eps) {
    fr_weight dw;
    fr_status rc = fr_cu_weight(be, w, &dw);
    if (rc || n < 1) return rc;
    FR_LAUNCH(k_rmsnorm, (unsigned)n, ROW_THREADS, 0, fr_cu_stream(be), out, x, dim, stride, dw, eps);
    return fr_cu_check(be, "rmsnorm");
}

fr_status fr_cu_add_rmsnorm(fr_backend *be, float *out, float *resid, const float *delta, int64_t n, int64_t dim,
                            const fr_weight *w, float eps) {
    fr_weight dw;
    fr_status rc = fr_cu_weight(be, w, &dw);
    if (rc || n < 1) return rc;
    FR_LAUNCH(k_add_rmsnorm, (unsigned)n, ROW_THREADS, 0, fr_cu_stream(be), out, resid, delta, dim, dw, eps);
    return fr_cu_check(be, "add_rmsnorm");
}

/* ---- LayerNorm (the DSA indexer's keys) */

__global__ void k_layernorm(float *out, const float *x, int64_t dim, int64_t stride, fr_weight w, fr_weight b,
                            float eps) {
    const float *xr = x + blockIdx.x * stride;
    float *o = out + blockIdx.x * stride;
    float s = 0.0f;
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) s += xr[i];
    const float mean = fr_block_sum(s) / (float)dim;
    float v = 0.0f;
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) v += (xr[i] - mean) * (xr[i] - mean);
    const float inv = 1.0f / sqrtf(fr_block_sum(v) / (float)dim + eps);
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x)
        o[i] = (xr[i] - mean) * inv * fr_dev_weight_get(w, 0, i) + fr_dev_weight_get(b, 0, i);
}

fr_status fr_cu_layernorm(fr_backend *be, float *out, const float *x, int64_t n, int64_t dim, int64_t stride,
                          const fr_weight *w, const fr_weight *b, float eps) {
    fr_weight dw, db;
    fr_status rc = fr_cu_weight(be, w, &dw);
    if (!rc) rc = fr_cu_weight(be, b, &db);
    if (rc || n < 1) return rc;
    FR_LAUNCH(k_layernorm, (unsigned)n, ROW_THREADS, 0, fr_cu_stream(be), out, x, dim, stride, dw, db, eps);
    return fr_cu_check(be, "layernorm");
}

/* ---- RoPE: one thread per (token, pair), looping over heads */

__global__ void k_rope(float *x, int64_t n, int heads, int64_t stride, int64_t head_stride, int rope,
                       const int32_t *pos, const double *freqs, float mscale, int half_split) {
    const int half = rope / 2;
    const int64_t k = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= n * half) return;
    const int64_t t = k / half;
    const int i = (int)(k % half);
    const double a = (double)pos[t] * freqs[i];
    const float c = (float)(cos(a) * mscale), s = (float)(sin(a) * mscale);
    /* interleaved pairs (2i, 2i+1), or half-split pairs (i, i + half) */
    const int i0 = half_split ? i : 2 * i, i1 = half_split ? i + half : 2 * i + 1;
    for (int h = 0; h < heads; h++) {
        float *v = x + t * stride + h * head_stride;
        const float x0 = v[i0], x1 = v[i1];
        v[i0] = x0 * c - x1 * s;
        v[i1] = x0 * s + x1 * c;
    }
}

static fr_status rope_any(fr_backend *be, float *x, int64_t n, int heads, int64_t stride, int64_t head_stride,
                          int rope, const int32_t *pos, const double *freqs, float mscale, int half_split) {
    if (n < 1 || rope < 2) return FR_OK;
    const int32_t *dpos = (const int32_t *)fr_cu_stage(be, pos, (size_t)n * sizeof *pos);
    const double *dfreq = (const double *)fr_cu_stage(be, freqs, (size_t)(rope / 2) * sizeof *freqs);
    if (!dpos || !dfreq) return FR_ERR_DEVICE;
    const int64_t pairs = n * (rope / 2);
    FR_LAUNCH(k_rope, fr_cu_blocks(pairs, ROW_THREADS), ROW_THREADS, 0, fr_cu_stream(be), x, n, heads, stride,
              head_stride, rope, dpos, dfreq, mscale, half_split);
    return fr_cu_check(be, "rope");
}

fr_status fr_cu_rope(fr_backend *be, float *x, int64_t n, int heads, int64_t stride, int64_t head_stride, int rope,
                     const int32_t *pos, const double *freqs, float mscale) {
    return rope_any(be, x, n, heads, stride, head_stride, rope, pos, freqs, mscale, 0);
}

fr_status fr_cu_rope_half(fr_backend *be, float *x, int64_t n, int heads, int64_t stride, int64_t head_stride,
                          int rope, const int32_t *pos, const double *freqs, float mscale) {
    return rope_any(be, x, n, heads, stride, head_stride, rope, pos, freqs, mscale, 1);
}

/* ---- row copies */

__global__ void k_copy_rows(float *dst, const int64_t *dst_rows, const float *src, const int64_t *src_rows,
                            int64_t dim) {
    const int64_t i = blockIdx.x;
    const int64_t d = dst_rows ? dst_rows[i] : i, s = src_rows ? src_rows[i] : i;
    for (int64_t c = threadIdx.x; c < dim; c += blockDim.x) dst[d * dim + c] = src[s * dim + c];
}

fr_status fr_cu_copy_rows(fr_backend *be, float *dst, const int64_t *dst_rows, const float *src,
                          const int64_t *src_rows, int64_t n, int64_t dim) {
    if (n < 1) return FR_OK;
    const int64_t *dd = NULL, *ds = NULL;
    if (dst_rows && !(dd = (const int64_t *)fr_cu_stage(be, dst_rows, (size_t)n * sizeof *dst_rows)))
        return FR_ERR_DEVICE;
    if (src_rows && !(ds = (const int64_t *)fr_cu_stage(be, src_rows, (size_t)n * sizeof *src_rows)))
        return FR_ERR_DEVICE;
    FR_LAUNCH(k_copy_rows, (unsigned)n, ROW_THREADS, 0, fr_cu_stream(be), dst, dd, src, ds, dim);
    return fr_cu_check(be, "copy_rows");
}

/* ---- greedy pick */

/* Whether candidate (v, i) beats (bv, bi) under fr_argmax_f32's order: the larger value,
 * the lower index on ties; a NaN never beats anything, and anything beats the empty
 * candidate (bi < 0). */
__device__ __forceinline__ bool argmax_beats(float v, int i, float bv, int bi) {
    if (v != v || i < 0) return false;
    return bi < 0 || v > bv || (v == bv && i < bi);
}

/* One block per row. Each thread keeps the best of its strided columns, then the warp
 * and the block reduce (value, index) pairs; indexes travel as floats, exact below 2^24.
 * A NaN in column 0 wins outright, as the left-to-right scan leaves it. */
__global__ void k_argmax(int32_t *ids, const float *__restrict__ x, int64_t cols) {
    __shared__ float part_v[1024 / FR_WARP], part_i[1024 / FR_WARP];
    const float *row = x + (int64_t)blockIdx.x * cols;
    float bv = 0.0f;
    int bi = -1;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x)
        if (argmax_beats(row[c], (int)c, bv, bi)) bv = row[c], bi = (int)c;
    for (int m = FR_WARP / 2; m > 0; m >>= 1) {
        const float ov = fr_shfl_xor(bv, m);
        const int oi = (int)fr_shfl_xor((float)bi, m);
        if (argmax_beats(ov, oi, bv, bi)) bv = ov, bi = oi;
    }
    const int lane = (int)threadIdx.x % FR_WARP, warp = (int)threadIdx.x / FR_WARP;
    if (lane == 0) part_v[warp] = bv, part_i[warp] = (float)bi;
    fr_sync_threads();
    if (threadIdx.x == 0) {
        for (int w = 1; w < (int)blockDim.x / FR_WARP; w++)
            if (argmax_beats(part_v[w], (int)part_i[w], bv, bi)) bv = part_v[w], bi = (int)part_i[w];
        const float first = row[0];
        ids[blockIdx.x] = first != first || bi < 0 ? 0 : bi;
    }
}

fr_status fr_cu_argmax(fr_backend *be, int32_t *ids, const float *x, int64_t rows, int64_t cols) {
    if (rows < 1 || cols < 1) return FR_OK;
    if (cols >= (1 << 24) || rows > 2147483647) return FR_ERR_UNSUPPORTED;
    FR_LAUNCH(k_argmax, (unsigned)rows, 256, 0, fr_cu_stream(be), ids, x, cols);
    return fr_cu_check(be, "argmax");
}

/* ---- KV-cache writes */

/* float32 -> E4M3 exactly as e4m3_rne in backend.c (ties to even, saturating, NaN 0x7f). */
__device__ __forceinline__ uint8_t dev_e4m3_rne(float f) {
    uint32_t u = fr_dev_f32_bits(f);
    const uint8_t sign = (uint8_t)((u >> 24) & 0x80);
    u &= 0x7fffffffu;
    if (u > 0x7f800000u) return sign | 0x7f;
    if (u >= 0x43e00000u) return sign | 0x7e;
    if (u < 0x3c800000u) return sign | (uint8_t)(int)rintf(fr_dev_bits_f32(u) * 512.0f);
    u += 0x7ffffu + ((u >> 20) & 1);
    const uint32_t code = (u >> 20) - (120u << 3);
    return sign | (uint8_t)(code > 0x7e ? 0x7e : code);
}

__global__ void k_kv_write_f32(uint8_t *cache, const int64_t *dst_rows, const float *src, int64_t w) {
    const int64_t i = blockIdx.x;
    float *row = (float *)(void *)(cache + dst_rows[i] * w * (int64_t)sizeof(float));
    for (int64_t c = threadIdx.x; c < w; c += blockDim.x) row[c] = src[i * w + c];
}

/* One block per row: amax, then every byte of the row (padding zeroed) as
 * fr_kv_fp8_encode writes it. */
__global__ void k_kv_write_fp8(uint8_t *cache, const int64_t *dst_rows, const float *src, int64_t n_lat,
                               int64_t n_rope, int64_t row_bytes, int64_t rope_off, int64_t scale_off) {
    const int64_t i = blockIdx.x;
    const float *x = src + i * (n_lat + n_rope);
    uint8_t *row = cache + dst_rows[i] * row_bytes;
    float amax = 0.0f;
    for (int64_t c = threadIdx.x; c < n_lat; c += blockDim.x) amax = fmaxf(amax, fabsf(x[c]));
    amax = fr_block_max(amax);
    const float scale = amax / 448.0f;
    for (int64_t b = threadIdx.x; b < row_bytes; b += blockDim.x) {
        uint8_t v = 0;
        if (b < n_lat) {
            v = scale > 0.0f ? dev_e4m3_rne(x[b] / scale) : 0;
        } else if (b >= rope_off && b < rope_off + 2 * n_rope) {
            const uint16_t h = fr_dev_to_bf16(x[n_lat + (b - rope_off) / 2]);
            v = (uint8_t)(((b - rope_off) & 1) ? h >> 8 : h & 0xff); /* little-endian */
        } else if (b >= scale_off && b < scale_off + 4) {
            v = (uint8_t)(fr_dev_f32_bits(scale) >> (8 * (b - scale_off)));
        }
        row[b] = v;
    }
}

fr_status fr_cu_kv_write(fr_backend *be, void *cache, fr_kv_dtype dt, const int64_t *dst_rows, const float *src,
                         int64_t n, int64_t n_lat, int64_t n_rope) {
    if (n < 1) return FR_OK;
    const int64_t *rows = (const int64_t *)fr_cu_stage(be, dst_rows, (size_t)n * sizeof *dst_rows);
    if (!rows) return FR_ERR_DEVICE;
    if (dt == FR_KV_F32) {
        FR_LAUNCH(k_kv_write_f32, (unsigned)n, ROW_THREADS, 0, fr_cu_stream(be), (uint8_t *)cache, rows, src,
                  n_lat + n_rope);
    } else if (dt == FR_KV_FP8) {
        FR_LAUNCH(k_kv_write_fp8, (unsigned)n, ROW_THREADS, 0, fr_cu_stream(be), (uint8_t *)cache, rows, src, n_lat,
                  n_rope, fr_kv_row_bytes(dt, n_lat, n_rope), fr_kv_fp8_rope_off(n_lat),
                  fr_kv_fp8_scale_off(n_lat, n_rope));
    } else {
        return FR_ERR_INVALID;
    }
    return fr_cu_check(be, "kv_write");
}
