/* test_cuda_attention.c - the CUDA attention ops against the CPU backend's:
 * mla_attention (absorbed and naive forms), mla_sparse_attention (both forms) and
 * dsa_select.
 *
 * Each case builds a paged cache on the host (a shuffled block table over a pool with
 * unused blocks, block size 16 or 64; rows in float32 or FP8 written by fr_kv_fp8_encode),
 * copies it to the device, and runs the op on both backends with the same block table
 * (host memory) into a poisoned output one row longer than needed; absorbed n = 1, 3, 6
 * (6: two passes of the 4-token loops), naive n = 1, 5, 40, contexts 1 .. 1100. Shapes: a
 * tiny one, DeepSeek's (16 heads, 128 + 64 query, 128 v, 512 latent), GLM-5's head dims
 * (192 + 64 query, 256 v: the smallest flash tile, the sparse kernel's widest rows), and
 * odd ones that reach the kernels' generic paths (head counts off the kernels' groups,
 * columns off 16-byte alignment, a latent wider than 512, more than eight head groups).
 * kv_b in BF16 and FP8 with a 128x128 (or an odd) scale grid, F32 and F16 for the odd
 * shape.
 *
 * Selections: random valid rows of random order and length, rows ended early by -1 with
 * garbage after it, and an empty row. dsa_select: scores from values on a grid of halves
 * (every dot product exact in any order, so both backends tie exactly where they tie),
 * with duplicated keys for deliberate ties, and from continuous values (a differing pick
 * must then be a near-tie in double precision); topk below and above the context.
 * The emulator runs one fiber per GPU thread: the DeepSeek-shaped naive form (a
 * [T x 4096 x 512] up-projection) runs at the longest context only once. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dtype.h"
#include "core/weight.h"
#include "gpu_check.h"

/* ---- small deterministic generator (the test's own choices: positions, orders) */
static uint64_t rng = 0x1234567887654321ull;
static uint64_t rnext(void) {
    rng ^= rng >> 12, rng ^= rng << 25, rng ^= rng >> 27;
    return rng * 0x2545F4914F6CDD1Dull;
}
static int64_t rint_below(int64_t n) { return n > 0 ? (int64_t)(rnext() % (uint64_t)n) : 0; }

/* ---- paged caches */

typedef struct {
    fr_kv_dtype dt;
    int bs;
    int32_t *blocks; /* host block table */
    void *host, *dev;
} pcache;

/* A cache holding T tokens' rows of n_lat + n_rope values (vals[T, n_lat + n_rope], or random
 * unit-normal values when vals is NULL) in a pool of shuffled blocks with spare ones. */
static pcache make_cache(gc_ctx *g, fr_kv_dtype dt, int bs, int64_t T, int64_t n_lat, int64_t n_rope,
                         const float *vals, uint64_t seed) {
    pcache c = {.dt = dt, .bs = bs};
    const int64_t nb = (T + bs - 1) / bs, pool = nb + 3, w = n_lat + n_rope;
    const int64_t rb = fr_kv_row_bytes(dt, n_lat, n_rope);
    int32_t *perm = gc_host(g, (size_t)pool * 4);
    for (int64_t i = 0; i < pool; i++) perm[i] = (int32_t)i;
    for (int64_t i = pool - 1; i > 0; i--) {
        const int64_t j = rint_below(i + 1);
        const int32_t tmp = perm[i];
        perm[i] = perm[j], perm[j] = tmp;
    }
    c.blocks = perm;
    uint8_t *host = gc_host(g, (size_t)(pool * bs * rb));
    const float *noise = gc_randn(g, (size_t)(pool * bs * w), seed, 1.0f);
    for (int64_t row = 0; row < pool * bs; row++) {
        const float *x = noise + row * w;
        if (dt == FR_KV_F32)
            memcpy(host + row * rb, x, (size_t)w * 4);
        else
            fr_kv_fp8_encode(x, n_lat, n_rope, host + row * rb);
    }
    if (vals) /* the sequence's tokens over the noise */
        for (int64_t s = 0; s < T; s++) {
            uint8_t *dst = host + ((int64_t)perm[s / bs] * bs + s % bs) * rb;
            if (dt == FR_KV_F32)
                memcpy(dst, vals + s * w, (size_t)w * 4);
            else
                fr_kv_fp8_encode(vals + s * w, n_lat, n_rope, dst);
        }
    c.host = host;
    c.dev = gc_to_dev_bytes(g, host, (size_t)(pool * bs * rb));
    return c;
}

/* ---- MLA */

typedef struct {
    const char *name;
    int H, dn, dr, dv, r;
} shape;

typedef struct {
    const char *name;
    fr_weight w;
} kvb_fmt;

/* Row t of a random selection of width `width` for a token seeing m keys: distinct
 * positions in random order; `len` valid ones, then -1 and garbage (valid positions). */
static void random_sel_row(int32_t *row, int width, int64_t m, int len, int32_t *scratch) {
    for (int64_t i = 0; i < m; i++) scratch[i] = (int32_t)i;
    for (int j = 0; j < len; j++) { /* partial Fisher-Yates */
        const int64_t k = j + rint_below(m - j);
        const int32_t tmp = scratch[j];
        scratch[j] = scratch[k], scratch[k] = tmp;
        row[j] = scratch[j];
    }
    if (len < width) row[len] = -1;
    for (int j = len + 1; j < width; j++) row[j] = (int32_t)rint_below(m);
}

/* One call of an MLA op on both backends; compares outputs, the poisoned guard row, and
 * the weight bytes counted. sel: host selection rows or NULL (dense). */
/* max_ctx handed to the ops (0: this call's context): a larger one sizes the absorbed form's
 * and dsa_select's launches as a recorded decode step would. */
static int64_t extra_ctx;

static void run_mla(gc_ctx *g, const char *what, const shape *s, const pcache *c, const fr_weight *kvb,
                    int64_t n, int64_t pos0, bool absorbed, const int32_t *sel, int width) {
    const int H = s->H, qw = s->dn + s->dr;
    const int64_t ow = (int64_t)H * s->dv;
    char name[256];
    snprintf(name, sizeof name, "%s %s n=%lld pos0=%lld max_ctx+%lld", what, absorbed ? "absorbed" : "naive",
             (long long)n, (long long)pos0, (long long)extra_ctx);
    fr_mla_layer L = {.n_heads = H,
                      .nope = s->dn,
                      .rope = s->dr,
                      .v = s->dv,
                      .kv_lora = s->r,
                      .scale = 1.0f / sqrtf((float)qw),
                      .kv_b = kvb,
                      .cache = c->host,
                      .kv_dtype = c->dt,
                      .blocks = c->blocks,
                      .block_size = c->bs,
                      .max_ctx = extra_ctx ? pos0 + n + extra_ctx : 0};
    const float *hq = gc_randn(g, (size_t)(n * H * qw), rnext(), 1.0f);
    float *want = gc_host(g, (size_t)(n * ow) * 4);
    fr_status rc =
        sel ? g->cpu->ops->mla_sparse_attention(g->cpu, want, hq, n, pos0, &L, sel, width, absorbed)
            : g->cpu->ops->mla_attention(g->cpu, want, hq, n, pos0, &L, absorbed);
    if (!gc_ok(g, name, rc)) return;

    L.cache = c->dev;
    float *dq = gc_to_dev(g, hq, (size_t)(n * H * qw));
    float *dout = gc_dev_poison(g, (size_t)((n + 1) * ow));
    int32_t *dsel = sel ? gc_to_dev_bytes(g, sel, (size_t)(n * width) * 4) : NULL;
    const uint64_t b0 = g->gpu->weight_bytes_read;
    rc = sel ? g->gpu->ops->mla_sparse_attention(g->gpu, dout, dq, n, pos0, &L, dsel, width, absorbed)
             : g->gpu->ops->mla_attention(g->gpu, dout, dq, n, pos0, &L, absorbed);
    if (!gc_ok(g, name, rc)) return;
    const uint64_t counted = g->gpu->weight_bytes_read - b0;
    float *got = gc_from_dev(g, dout, (size_t)((n + 1) * ow));
    gc_close(g, name, got, want, (size_t)(n * ow), 1e-5);
    gc_row_poisoned(g, name, got + n * ow, ow);
    char buf[320];
    snprintf(buf, sizeof buf, "%s: counts kv_b's bytes", name);
    gc_check(g, buf, counted == (uint64_t)fr_weight_bytes(kvb));
}

/* Selection rows for n tokens at pos0 (width wide): random lengths (full ones included),
 * the last token's row empty when `empty`. */
static int32_t *make_sel(gc_ctx *g, int64_t n, int64_t pos0, int width, bool empty) {
    int32_t *sel = gc_host(g, (size_t)(n * width) * 4);
    int32_t *scratch = gc_host(g, (size_t)(pos0 + n) * 4);
    for (int64_t t = 0; t < n; t++) {
        const int64_t m = pos0 + t + 1;
        const int maxlen = (int)(m < width ? m : width);
        int len = (t % 3 == 0) ? maxlen : 1 + (int)rint_below(maxlen);
        if (empty && t == n - 1) len = 0;
        random_sel_row(sel + t * width, width, m, len, scratch);
    }
    return sel;
}

typedef struct {
    const shape *s;
    const int64_t *ctx;
    int n_ctx;
    bool heavy; /* DeepSeek-sized: the naive form at long contexts only once */
} mla_plan;

static void test_mla(gc_ctx *g, const mla_plan *p, const kvb_fmt *fmts, int n_fmts) {
    const shape *s = p->s;
    static const int64_t abs_ns[] = {1, 3, 6}, naive_ns[] = {1, 5, 40};
    for (int ci = 0; ci < p->n_ctx; ci++) {
        const int64_t T = p->ctx[ci];
        for (int combo = 0; combo < 4; combo++) {
            const fr_kv_dtype dt = (combo & 1) ? FR_KV_FP8 : FR_KV_F32;
            const int bs = (combo & 2) ? 64 : 16;
            const kvb_fmt *f = &fmts[(combo + ci) % n_fmts];
            pcache c = make_cache(g, dt, bs, T, s->r, s->dr, NULL, rnext());
            char what[160];
            snprintf(what, sizeof what, "mla %s T=%lld kv=%s bs=%d kv_b=%s", s->name, (long long)T,
                     dt == FR_KV_F32 ? "f32" : "fp8", bs, f->name);
            for (size_t i = 0; i < sizeof abs_ns / sizeof *abs_ns; i++) {
                if (abs_ns[i] > T) continue;
                extra_ctx = (i + combo) % 2 ? 3 * T + 5 : 0;
                run_mla(g, what, s, &c, &f->w, abs_ns[i], T - abs_ns[i], true, NULL, 0);
                extra_ctx = 0;
            }
            const bool long_heavy = p->heavy && T > 256;
            for (size_t i = 0; i < sizeof naive_ns / sizeof *naive_ns; i++) {
                const int64_t n = naive_ns[i];
                if (n > T || (long_heavy && (combo != 1 || n != 40))) continue;
                run_mla(g, what, s, &c, &f->w, n, T - n, false, NULL, 0);
            }
            /* sparse: widths below and above the context */
            static const int widths[] = {7, 96, 300};
            for (size_t wi = 0; wi < sizeof widths / sizeof *widths; wi++) {
                const int width = widths[wi];
                if ((combo + (int)wi) % 2) continue; /* half the combinations per width */
                snprintf(what, sizeof what, "sparse %s T=%lld kv=%s bs=%d kv_b=%s width=%d", s->name,
                         (long long)T, dt == FR_KV_F32 ? "f32" : "fp8", bs, f->name, width);
                for (size_t i = 0; i < sizeof abs_ns / sizeof *abs_ns; i++) {
                    const int64_t n = abs_ns[i];
                    if (n > T) continue;
                    const int32_t *sel = make_sel(g, n, T - n, width, n > 1);
                    run_mla(g, what, s, &c, &f->w, n, T - n, true, sel, width);
                }
                for (size_t i = 0; i < sizeof naive_ns / sizeof *naive_ns; i++) {
                    const int64_t n = naive_ns[i];
                    if (n > T || (long_heavy && n == 40)) continue;
                    const int32_t *sel = make_sel(g, n, T - n, width, n > 1);
                    run_mla(g, what, s, &c, &f->w, n, T - n, false, sel, width);
                }
            }
        }
    }
}

/* ---- DSA indexer */

/* A value on the grid of halves in [-3.5, 3.5]. */
static float half_grid(void) { return 0.5f * (float)((int)rint_below(15) - 7); }

/* Keys (T x DI), queries (n x HI x DI) and weights (n x HI): continuous, or on grids that
 * make every score exact (keys of halves with a +-3.5 in each row, so an FP8 row's scale
 * is 2^-7 and every value exact; queries of halves; weights of quarters). dup: copy some
 * keys over others, so that scores tie exactly. */
static void dsa_inputs(gc_ctx *g, int64_t T, int64_t n, int HI, int DI, bool grid, bool dup, float **keys,
                       float **q, float **w) {
    *keys = gc_randn(g, (size_t)(T * DI), rnext(), 1.0f);
    *q = gc_randn(g, (size_t)(n * HI * DI), rnext(), 1.0f);
    *w = gc_randn(g, (size_t)(n * HI), rnext(), 1.0f);
    if (grid) {
        for (int64_t i = 0; i < T * DI; i++) (*keys)[i] = half_grid();
        for (int64_t s = 0; s < T; s++) (*keys)[s * DI + rint_below(DI)] = (rnext() & 1) ? 3.5f : -3.5f;
        for (int64_t i = 0; i < n * HI * DI; i++) (*q)[i] = half_grid() * 0.5f;
        for (int64_t i = 0; i < n * HI; i++) (*w)[i] = 0.25f * (float)((int)rint_below(17) - 8);
    }
    if (dup && T > 2)
        for (int64_t i = 0; i < T / 3; i++) {
            const int64_t a = rint_below(T), b = rint_below(T);
            memcpy(*keys + b * DI, *keys + a * DI, (size_t)DI * 4);
        }
}

/* Index score of key s for token t in double precision (near-tie judgement). */
static double dsa_score_ref(const float *key, const float *qt, const float *wt, int HI, int DI,
                            double scale) {
    double acc = 0.0;
    for (int h = 0; h < HI; h++) {
        double d = 0.0;
        for (int i = 0; i < DI; i++) d += (double)qt[(int64_t)h * DI + i] * key[i];
        if (d > 0.0) acc += wt[h] * d;
    }
    return acc * scale;
}

static void run_dsa(gc_ctx *g, int64_t T, int64_t n, int HI, int DI, int topk, fr_kv_dtype dt, int bs,
                    bool grid, bool dup) {
    const int64_t pos0 = T - n;
    char name[256];
    snprintf(name, sizeof name, "dsa_select T=%lld n=%lld HI=%d DI=%d topk=%d kv=%s bs=%d %s%s max_ctx+%lld",
             (long long)T, (long long)n, HI, DI, topk, dt == FR_KV_F32 ? "f32" : "fp8", bs,
             grid ? "grid" : "continuous", dup ? " ties" : "", (long long)extra_ctx);
    float *keys, *hq, *hw;
    dsa_inputs(g, T, n, HI, DI, grid, dup, &keys, &hq, &hw);
    pcache c = make_cache(g, dt, bs, T, DI, 0, keys, rnext());
    fr_dsa_layer L = {.n_heads = HI,
                      .head_dim = DI,
                      .topk = topk,
                      .scale = 1.0f / sqrtf((float)HI) / sqrtf((float)DI),
                      .keys = c.host,
                      .kv_dtype = dt,
                      .blocks = c.blocks,
                      .block_size = bs,
                      .max_ctx = extra_ctx ? T + extra_ctx : 0};
    int32_t *want = gc_host(g, (size_t)(n * topk) * 4);
    if (!gc_ok(g, name, g->cpu->ops->dsa_select(g->cpu, want, hq, hw, n, pos0, &L))) return;
    L.keys = c.dev;
    float *dq = gc_to_dev(g, hq, (size_t)(n * HI * DI)), *dw = gc_to_dev(g, hw, (size_t)(n * HI));
    int32_t *dsel = (int32_t *)gc_dev_poison(g, (size_t)((n + 1) * topk));
    if (!gc_ok(g, name, g->gpu->ops->dsa_select(g->gpu, dsel, dq, dw, n, pos0, &L))) return;
    const int32_t *got = gc_from_dev_bytes(g, dsel, (size_t)((n + 1) * topk) * 4);

    /* the keys as the backends see them (FP8 rows decoded) */
    float *seen = gc_host(g, (size_t)(T * DI) * 4);
    const int64_t rb = fr_kv_row_bytes(dt, DI, 0);
    for (int64_t s = 0; s < T; s++) {
        const uint8_t *row = (const uint8_t *)c.host + ((int64_t)c.blocks[s / bs] * bs + s % bs) * rb;
        if (dt == FR_KV_F32)
            memcpy(seen + s * DI, row, (size_t)DI * 4);
        else
            fr_kv_fp8_decode(row, DI, 0, seen + s * DI);
    }
    int exact = 0, near = 0, bad = 0;
    for (int64_t t = 0; t < n; t++) {
        const int32_t *gr = got + t * topk, *wr = want + t * topk;
        if (!memcmp(gr, wr, (size_t)topk * 4)) {
            exact++;
            continue;
        }
        /* continuous scores may round differently: accept picks that differ only at a
         * near-tie with the k-th score (a valid row shape, increasing positions, is still
         * required) */
        bool ok = !grid;
        const int64_t m = pos0 + t + 1, k = m < topk ? m : topk;
        for (int64_t j = 0; j < topk && ok; j++) {
            if (j < k)
                ok = gr[j] >= 0 && gr[j] < m && (j == 0 || gr[j] > gr[j - 1]);
            else
                ok = gr[j] == -1;
        }
        if (ok) {
            const float *qt = hq + t * HI * DI, *wt = hw + t * HI;
            double kth = INFINITY, mx = 0.0;
            for (int64_t j = 0; j < k; j++) {
                const double sc = dsa_score_ref(seen + (int64_t)wr[j] * DI, qt, wt, HI, DI, L.scale);
                kth = sc < kth ? sc : kth;
                mx = fabs(sc) > mx ? fabs(sc) : mx;
            }
            for (int64_t j = 0; j < k && ok; j++) { /* each pick not in the CPU's set */
                bool in = false;
                for (int64_t i = 0; i < k && !in; i++) in = wr[i] == gr[j];
                if (in) continue;
                const double sc = dsa_score_ref(seen + (int64_t)gr[j] * DI, qt, wt, HI, DI, L.scale);
                ok = fabs(sc - kth) <= 1e-5 * (mx > 0 ? mx : 1.0);
            }
        }
        if (ok)
            near++;
        else {
            if (!bad) {
                printf("  %s: token %lld differs:\n   cpu:", name, (long long)t);
                for (int j = 0; j < topk && j < 24; j++) printf(" %d", wr[j]);
                printf("\n   gpu:");
                for (int j = 0; j < topk && j < 24; j++) printf(" %d", gr[j]);
                printf("\n");
            }
            bad++;
        }
    }
    char buf[320];
    snprintf(buf, sizeof buf, "%s: selections equal (%d exact, %d near-ties)", name, exact, near);
    gc_check(g, buf, bad == 0);
    gc_row_poisoned(g, name, (const float *)(const void *)(got + n * topk), topk);
}

static void test_dsa(gc_ctx *g) {
    static const int64_t ctx_full[] = {1, 17, 200, 1100}, ctx_quick[] = {1, 17, 200};
    static const int64_t ns[] = {1, 3, 8};
    const int64_t *ctx = gc_quick() ? ctx_quick : ctx_full;
    const size_t n_ctx = gc_quick() ? 3 : 4;
    /* (heads, dims): tiny, DeepSeek-V3.2's 64 x 128, and odd sizes (a partial head chunk,
     * dims off float4 alignment and off the 32-wide chunks) */
    static const int dims[][2] = {{4, 16}, {64, 128}, {70, 18}};
    static const int topks[] = {5, 64, 2048};
    int k = 0;
    for (size_t di = 0; di < sizeof dims / sizeof *dims; di++)
        for (size_t ci = 0; ci < n_ctx; ci++)
            for (size_t ni = 0; ni < sizeof ns / sizeof *ns; ni++) {
                const int64_t T = ctx[ci], n = ns[ni];
                if (n > T) continue;
                for (size_t ti = 0; ti < sizeof topks / sizeof *topks; ti++, k++) {
                    const fr_kv_dtype dt = (k & 1) ? FR_KV_FP8 : FR_KV_F32;
                    const int bs = (k & 2) ? 64 : 16;
                    /* grids (exact scores, many ties) always; continuous and duplicates by turns;
                     * launches sized for a longer max_ctx by turns */
                    extra_ctx = (k / 4) % 2 ? 2 * T + 70 : 0;
                    run_dsa(g, T, n, dims[di][0], dims[di][1], topks[ti], dt, bs, true, (k % 3) == 0);
                    if (T > topks[ti])
                        run_dsa(g, T, n, dims[di][0], dims[di][1], topks[ti], dt, bs, false, (k % 3) == 1);
                    extra_ctx = 0;
                }
            }
}

/* ---- recorded decode steps */

/* Decode steps bracketed by step_begin / step_end under one key, as the forward pass runs
 * them: the backend records the second and replays the later ones with the recorded
 * launch arguments, so the ops must read pos0 and the block table from what they stage.
 * Each step (dense absorbed attention, dsa_select, sparse absorbed attention over that
 * selection, at positions P, P + 1, ...) must match the CPU, and no replay may be
 * declined. */
static void test_replay(gc_ctx *g) {
    if (!g->gpu->ops->step_begin) return;
    const shape s = {"deepseek", 16, 128, 64, 128, 512};
    const int H = s.H, qw = s.dn + s.dr, HI = 8, DI = 32, topk = 64, bs = 16, steps = 8;
    const int64_t M = 400, P = 290, ow = (int64_t)H * s.dv;
    const fr_weight kvb = gc_weight_fp8(g, (int64_t)H * (s.dn + s.dv), s.r, 128, 128, 71);
    pcache c = make_cache(g, FR_KV_FP8, bs, M, s.r, s.dr, NULL, 72);
    float *keys, *unused_q, *unused_w;
    dsa_inputs(g, M, 1, HI, DI, true, true, &keys, &unused_q, &unused_w);
    pcache kc = make_cache(g, FR_KV_F32, bs, M, DI, 0, keys, 73);
    fr_mla_layer L = {.n_heads = H,
                      .nope = s.dn,
                      .rope = s.dr,
                      .v = s.dv,
                      .kv_lora = s.r,
                      .scale = 1.0f / sqrtf((float)qw),
                      .kv_b = &kvb,
                      .cache = c.host,
                      .kv_dtype = FR_KV_FP8,
                      .blocks = c.blocks,
                      .block_size = bs,
                      .max_ctx = M};
    fr_dsa_layer D = {.n_heads = HI,
                      .head_dim = DI,
                      .topk = topk,
                      .scale = 1.0f / sqrtf((float)(HI * DI)),
                      .keys = kc.host,
                      .kv_dtype = FR_KV_F32,
                      .blocks = kc.blocks,
                      .block_size = bs,
                      .max_ctx = M};
    float *dq = gc_dev_poison(g, (size_t)(H * qw)), *diq = gc_dev_poison(g, (size_t)(HI * DI));
    float *dw = gc_dev_poison(g, (size_t)HI);
    float *dout = gc_dev_poison(g, (size_t)ow), *dout2 = gc_dev_poison(g, (size_t)ow);
    int32_t *dsel = (int32_t *)gc_dev_poison(g, (size_t)topk);
    int retries = 0;
    for (int k = 0; k < steps; k++) {
        const int64_t pos0 = P + k;
        float *hq = gc_randn(g, (size_t)(H * qw), rnext(), 1.0f), *hiq, *hw, *unused_k;
        dsa_inputs(g, 1, 1, HI, DI, true, false, &unused_k, &hiq, &hw);
        g->gpu->ops->from_host(g->gpu, dq, hq, (size_t)(H * qw));
        g->gpu->ops->from_host(g->gpu, diq, hiq, (size_t)(HI * DI));
        g->gpu->ops->from_host(g->gpu, dw, hw, (size_t)HI);

        float *want = gc_host(g, (size_t)ow * 4), *want2 = gc_host(g, (size_t)ow * 4);
        int32_t *wsel = gc_host(g, (size_t)topk * 4);
        L.cache = c.host, D.keys = kc.host;
        fr_status rc = g->cpu->ops->mla_attention(g->cpu, want, hq, 1, pos0, &L, true);
        if (!rc) rc = g->cpu->ops->dsa_select(g->cpu, wsel, hiq, hw, 1, pos0, &D);
        if (!rc) rc = g->cpu->ops->mla_sparse_attention(g->cpu, want2, hq, 1, pos0, &L, wsel, topk, true);
        if (!gc_ok(g, "replay: cpu reference", rc)) return;

        L.cache = c.dev, D.keys = kc.dev;
        for (int attempt = 0;; attempt++) {
            rc = g->gpu->ops->step_begin(g->gpu, attempt ? 0 : 0x5eed);
            if (!rc) rc = g->gpu->ops->mla_attention(g->gpu, dout, dq, 1, pos0, &L, true);
            if (!rc) rc = g->gpu->ops->dsa_select(g->gpu, dsel, diq, dw, 1, pos0, &D);
            if (!rc) rc = g->gpu->ops->mla_sparse_attention(g->gpu, dout2, dq, 1, pos0, &L, dsel, topk, true);
            const fr_status end = g->gpu->ops->step_end(g->gpu);
            if (end == FR_ERR_RETRY && attempt == 0) {
                retries++;
                continue;
            }
            if (!rc) rc = end;
            break;
        }
        char name[128];
        snprintf(name, sizeof name, "replay step %d (pos0 %lld)", k, (long long)pos0);
        if (!gc_ok(g, name, rc)) return;
        const float *got = gc_from_dev(g, dout, (size_t)ow), *got2 = gc_from_dev(g, dout2, (size_t)ow);
        const int32_t *gsel = gc_from_dev_bytes(g, dsel, (size_t)topk * 4);
        char buf[192];
        snprintf(buf, sizeof buf, "%s: mla_attention absorbed", name);
        gc_close(g, buf, got, want, (size_t)ow, 1e-5);
        snprintf(buf, sizeof buf, "%s: dsa_select", name);
        gc_check(g, buf, !memcmp(gsel, wsel, (size_t)topk * 4));
        snprintf(buf, sizeof buf, "%s: mla_sparse_attention absorbed", name);
        gc_close(g, buf, got2, want2, (size_t)ow, 1e-5);
    }
    gc_check(g, "replay: every recorded step replayed (none declined)", retries == 0);
}

int main(void) {
    gc_ctx g;
    int rc = gc_init(&g);
    if (rc) return rc;

    static const shape tiny = {"tiny", 2, 16, 8, 16, 32};
    static const shape deepseek = {"deepseek", 16, 128, 64, 128, 512};
    static const shape odd = {"odd", 5, 24, 6, 20, 36};  /* 2 head groups, unaligned rows, generic loads */
    static const shape wide = {"wide", 40, 8, 4, 8, 32}; /* 10 head groups: two head chunks per token */
    static const shape lora = {"lora1000", 3, 16, 40, 16, 1000}; /* 32 latent columns per lane, 2 rope */
    static const shape glm = {"glm5", 4, 192, 64, 256, 512}; /* GLM-5's head dims: the smallest flash tile */

    static const int64_t ctx_all[] = {1, 17, 200, 1100};
    static const int64_t ctx_mid[] = {17, 200};
    const bool quick = gc_quick(); /* the long contexts and second formats of big shapes go */

    {
        const kvb_fmt f[] = {{"bf16", gc_weight(&g, FR_DTYPE_BF16, 2 * 32, 32, 11)},
                             {"fp8/16x16", gc_weight_fp8(&g, 2 * 32, 32, 16, 16, 12)},
                             {"fp8/12x12", gc_weight_fp8(&g, 2 * 32, 32, 12, 12, 13)}};
        const mla_plan p = {&tiny, ctx_all, 4, false};
        test_mla(&g, &p, f, 3);
    }
    {
        const kvb_fmt f[] = {{"bf16", gc_weight(&g, FR_DTYPE_BF16, 16 * 256, 512, 21)},
                             {"fp8/128x128", gc_weight_fp8(&g, 16 * 256, 512, 128, 128, 22)}};
        const mla_plan p = {&deepseek, quick ? ctx_mid : ctx_all, quick ? 2 : 4, true};
        test_mla(&g, &p, f, quick ? 1 : 2);
    }
    {
        const kvb_fmt f[] = {{"f32", gc_weight(&g, FR_DTYPE_F32, 5 * 44, 36, 31)},
                             {"f16", gc_weight(&g, FR_DTYPE_F16, 5 * 44, 36, 32)},
                             {"fp8/128x128", gc_weight_fp8(&g, 5 * 44, 36, 128, 128, 33)}};
        const mla_plan p = {&odd, ctx_mid, 2, false};
        test_mla(&g, &p, f, 3);
    }
    {
        const kvb_fmt f[] = {{"bf16", gc_weight(&g, FR_DTYPE_BF16, 40 * 16, 32, 41)}};
        const mla_plan p = {&wide, ctx_mid, 2, false};
        test_mla(&g, &p, f, 1);
    }
    {
        const kvb_fmt f[] = {{"bf16", gc_weight(&g, FR_DTYPE_BF16, 3 * 32, 1000, 51)},
                             {"fp8/128x128", gc_weight_fp8(&g, 3 * 32, 1000, 128, 128, 52)}};
        const mla_plan p = {&lora, ctx_mid, quick ? 1 : 2, false};
        test_mla(&g, &p, f, quick ? 1 : 2);
    }
    {
        const kvb_fmt f[] = {{"bf16", gc_weight(&g, FR_DTYPE_BF16, 4 * 448, 512, 61)},
                             {"fp8/128x128", gc_weight_fp8(&g, 4 * 448, 512, 128, 128, 62)}};
        const mla_plan p = {&glm, ctx_mid, quick ? 1 : 2, false};
        test_mla(&g, &p, f, quick ? 1 : 2);
    }
    test_dsa(&g);
    test_replay(&g);
    return gc_done(&g);
}
