/* quantize.c - `frontier quantize` and load-time expert conversion (see quantize.h).
 *
 * The checkpoint writer works from the input's tensor list, shard by shard. Every
 * tensor is either a module group's linear weight (found by its name, with its
 * companions: _scale_inv, MXFP4 _scales, INT4 _scale/_shape) or anything else, which
 * is copied byte for byte. A group weight is bound to a validated view exactly as the
 * loader binds it (fr_model_bind_linear), then written in its group's target format:
 * copied when the format does not change, else converted row by row from the exact
 * float values (fr_weight_row_exact). fr_st_write asks for one tensor at a time;
 * the parts of one converted weight (data and scales) are computed together and kept
 * until the next weight is asked for, so memory stays at about two tensors whatever
 * the checkpoint size. A scale tensor that the writer asks for before its data (F32
 * scale_inv precedes U8 data in the file) simply triggers the conversion first.
 *
 * The loader side converts routed experts in parallel over experts into one buffer
 * per layer; it uses the same row conversion and the same quantizer, so its bytes are
 * those `frontier quantize` writes. */
#include "quantize.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "../core/bigmem.h"
#include "../core/mx.h"
#include "../io/json_util.h"
#include "synth.h"

#define NAME_MAX_LEN 256
#define FP8_MAX      448.0f
#define ST_METADATA  "{\"format\":\"pt\"}"
#define INDEX_NAME   "model.safetensors.index.json"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* ---- exact rows ---- */

/* d rounded to a float with round-to-odd: exact when representable, else the neighbour
 * toward zero with its last mantissa bit set. Keeps d's position relative to every
 * float of 22 or fewer significant bits (and its floor(log2)). */
static float round_to_odd(double d) {
    float f = (float)d;
    if ((double)f == d || d != d) return f;
    if (fabs((double)f) > fabs(d)) f = nextafterf(f, 0.0f);
    uint32_t u;
    memcpy(&u, &f, 4);
    u |= 1u;
    memcpy(&f, &u, 4);
    return f;
}

void fr_weight_row_exact(const fr_weight *w, int64_t r, float *out) {
    const int64_t n = w->cols;
    const size_t off = (size_t)r * (size_t)n;
    switch (w->dtype) {
    case FR_DTYPE_F32: memcpy(out, (const float *)w->data + off, (size_t)n * sizeof *out); return;
    case FR_DTYPE_BF16: {
        const uint16_t *p = (const uint16_t *)w->data + off;
        for (int64_t c = 0; c < n; c++) out[c] = fr_bf16_to_f32(p[c]);
        return;
    }
    case FR_DTYPE_F16: {
        const uint16_t *p = (const uint16_t *)w->data + off;
        for (int64_t c = 0; c < n; c++) out[c] = fr_f16_to_f32(p[c]);
        return;
    }
    case FR_DTYPE_F8_E4M3: {
        const uint8_t *p = (const uint8_t *)w->data + off;
        const float *s = w->scale_inv + (w->row0 + r) / w->block_rows * w->scale_cols;
        for (int64_t c = 0; c < n; c++)
            out[c] = round_to_odd((double)fr_e4m3_to_f32(p[c]) * (double)s[c / w->block_cols]);
        return;
    }
    case FR_DTYPE_MXFP4:
        fr_mxfp4_dequantize_row((const uint8_t *)w->data + (size_t)r * (size_t)(n / 2),
                                (const uint8_t *)w->scales + (size_t)r * (size_t)(n / 32), n, out);
        return;
    case FR_DTYPE_INT4:
        fr_int4_dequantize_row((const int32_t *)w->data + (size_t)r * (size_t)(n / 8),
                               (const uint16_t *)w->scales + (size_t)r * (size_t)(n / 32), n, out);
        return;
    default:
        for (int64_t c = 0; c < n; c++) out[c] = fr_weight_get(w, r, c);
    }
}

/* ---- conversions of one weight ---- */

/* Rows [r0, r1) of w to MXFP4 (blocks: cols/2 bytes a row, scales: cols/32); tmp holds cols floats. */
static void mx_rows(const fr_weight *w, int64_t r0, int64_t r1, float *tmp, uint8_t *blocks,
                    uint8_t *scales) {
    const size_t rb = (size_t)(w->cols / 2), rs = (size_t)(w->cols / 32);
    for (int64_t r = r0; r < r1; r++) {
        fr_weight_row_exact(w, r, tmp);
        fr_mxfp4_quantize_row(tmp, w->cols, blocks + (size_t)r * rb, scales + (size_t)r * rs);
    }
}

/* Below this many elements a weight converts on one thread. */
#define PAR_MIN 65536

static fr_status nomem(fr_error *err, const char *what) {
    return fr_fail(err, FR_ERR_NOMEM, "quantize: out of memory (%s)", what);
}

static fr_status to_mxfp4(const fr_weight *w, uint8_t *blocks, uint8_t *scales, fr_error *err) {
    int failed = 0;
#pragma omp parallel if (w->rows * w->cols >= PAR_MIN)
    {
        float *tmp = malloc((size_t)w->cols * sizeof *tmp);
        if (!tmp) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (int64_t r = 0; r < w->rows; r++)
            if (tmp) mx_rows(w, r, r + 1, tmp, blocks, scales);
        free(tmp);
    }
    return failed ? nomem(err, "row buffer") : FR_OK;
}

static fr_status to_bf16(const fr_weight *w, uint16_t *out, fr_error *err) {
    int failed = 0;
#pragma omp parallel if (w->rows * w->cols >= PAR_MIN)
    {
        float *tmp = malloc((size_t)w->cols * sizeof *tmp);
        if (!tmp) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (int64_t r = 0; r < w->rows; r++) {
            if (!tmp) continue;
            fr_weight_row_exact(w, r, tmp);
            for (int64_t c = 0; c < w->cols; c++) out[r * w->cols + c] = fr_f32_to_bf16(tmp[c]);
        }
        free(tmp);
    }
    return failed ? nomem(err, "row buffer") : FR_OK;
}

/* DeepSeek block FP8 (ARCH 7.2): per br x bc block, scale = amax / 448 (1 for an all-zero
 * block; rounded up to a power of two under ue8m0), q = e4m3(x / scale), and the stored
 * scale_inv is that scale (a multiplier). One block-row band of rows per task. */
static fr_status to_fp8(const fr_weight *w, int br, int bc, bool ue8m0, uint8_t *q, float *scale_inv,
                        fr_error *err) {
    const int64_t nbr = (w->rows + br - 1) / br, nbc = (w->cols + bc - 1) / bc;
    int failed = 0;
#pragma omp parallel if (w->rows * w->cols >= PAR_MIN)
    {
        float *band = malloc((size_t)br * (size_t)w->cols * sizeof *band);
        float *amax = malloc((size_t)nbc * sizeof *amax);
        if (!band || !amax) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t bi = 0; bi < nbr; bi++) {
            if (!band || !amax) continue;
            const int64_t r0 = bi * br, r1 = r0 + br < w->rows ? r0 + br : w->rows;
            for (int64_t j = 0; j < nbc; j++) amax[j] = 0.0f;
            for (int64_t r = r0; r < r1; r++) {
                float *row = band + (r - r0) * w->cols;
                fr_weight_row_exact(w, r, row);
                for (int64_t c = 0; c < w->cols; c++) {
                    float a = fabsf(row[c]);
                    if (a > amax[c / bc]) amax[c / bc] = a;
                }
            }
            for (int64_t j = 0; j < nbc; j++) {
                float s = amax[j] > 0.0f ? amax[j] / FP8_MAX : 1.0f;
                if (ue8m0) s = exp2f(ceilf(log2f(s)));
                amax[j] = s;
                scale_inv[bi * nbc + j] = s;
            }
            for (int64_t r = r0; r < r1; r++) {
                const float *row = band + (r - r0) * w->cols;
                for (int64_t c = 0; c < w->cols; c++)
                    q[r * w->cols + c] = fr_f32_to_e4m3(row[c] / amax[c / bc]);
            }
        }
        free(band);
        free(amax);
    }
    return failed ? nomem(err, "FP8 block band") : FR_OK;
}

/* ---- load-time expert conversion ---- */

fr_status fr_model_quantize_experts(fr_model *m, fr_qformat to, fr_error *err) {
    const fr_config *c = &m->cfg;
    if (to != FR_QFMT_MXFP4)
        return fr_fail(err, FR_ERR_UNSUPPORTED, "--quantize-experts %s is not supported (supported: mxfp4)",
                       fr_qformat_name(to));
    const int E = c->n_routed_experts;
    for (int l = 0; l < c->n_layers; l++) {
        fr_layer *L = &m->layers[l];
        if (!L->is_moe) continue;
        bool all_mx = true;
        for (int e = 0; e < E; e++)
            all_mx &= L->exp_gate[e].dtype == FR_DTYPE_MXFP4 && L->exp_up[e].dtype == FR_DTYPE_MXFP4 &&
                      L->exp_down[e].dtype == FR_DTYPE_MXFP4;
        if (all_mx) continue;
        const int64_t D = c->hidden_size, I = c->moe_intermediate_size;
        if (D % 32 || I % 32)
            return fr_fail(
                err, FR_ERR_UNSUPPORTED,
                "--quantize-experts mxfp4: experts of [%lld, %lld] need both widths to be multiples of 32 (MXFP4 blocks)",
                (long long)I, (long long)D);
        /* Per expert: gate and up [I, D], down [D, I]; each blocks (n/2 bytes) then scales (n/32). */
        const size_t mat = (size_t)(I * D), per = 3 * (mat / 2 + mat / 32);
        uint8_t *mem = fr_big_alloc(per * (size_t)E);
        if (!mem)
            return fr_fail(err, FR_ERR_NOMEM,
                           "--quantize-experts: out of memory for layer %d's %d MXFP4 experts (%zu bytes)", l,
                           E, per * (size_t)E);
        fr_weight *mats[3] = {L->exp_gate, L->exp_up, L->exp_down};
        int failed = 0;
#pragma omp parallel
        {
            float *tmp = malloc((size_t)(D > I ? D : I) * sizeof *tmp);
            if (!tmp) {
#pragma omp atomic write
                failed = 1;
            }
#pragma omp for schedule(dynamic, 1)
            for (int64_t k = 0; k < 3 * (int64_t)E; k++) {
                const fr_weight *w = &mats[k % 3][k / 3];
                uint8_t *blocks = mem + (size_t)(k / 3) * per + (size_t)(k % 3) * (mat / 2 + mat / 32);
                if (tmp) mx_rows(w, 0, w->rows, tmp, blocks, blocks + mat / 2);
            }
            free(tmp);
        }
        if (failed) {
            free(mem);
            return fr_fail(err, FR_ERR_NOMEM, "--quantize-experts: out of memory for row buffers");
        }
        for (int e = 0; e < E; e++)
            for (int k = 0; k < 3; k++) {
                fr_weight *w = &mats[k][e];
                uint8_t *blocks = mem + (size_t)e * per + (size_t)k * (mat / 2 + mat / 32);
                *w = (fr_weight){.dtype = FR_DTYPE_MXFP4,
                                 .rows = w->rows,
                                 .cols = w->cols,
                                 .data = blocks,
                                 .scales = blocks + mat / 2,
                                 .group = 32};
            }
        free(L->expert_mem);
        L->expert_mem = mem;
    }
    m->cfg.quant.group[FR_QGROUP_EXPERTS] = FR_QFMT_MXFP4;
    m->cfg.quant.group_size = 32;
    return FR_OK;
}

/* ---- tensor names ---- */

/* Strictly parse a decimal index at *p (no sign, no leading zeros but "0"), advancing *p. */
static int parse_index(const char **p) {
    const char *s = *p;
    if (*s < '0' || *s > '9' || (s[0] == '0' && s[1] >= '0' && s[1] <= '9')) return -1;
    long v = 0;
    while (*s >= '0' && *s <= '9') {
        v = v * 10 + (*s++ - '0');
        if (v > INT_MAX / 16) return -1;
    }
    *p = s;
    return (int)v;
}

int fr_linear_group(const char *name, const char *prefix, int *layer) {
    size_t pl = strlen(prefix);
    if (strncmp(name, prefix, pl) != 0) return -1;
    const char *p = name + pl;
    if (strncmp(p, "model.layers.", 13) != 0) return -1;
    p += 13;
    int l = parse_index(&p);
    if (l < 0 || *p++ != '.') return -1;
    /* the primary tensor: ".weight" or its 4-bit spellings */
    char rest[NAME_MAX_LEN];
    size_t n = strlen(p);
    if (n >= sizeof rest) return -1;
    memcpy(rest, p, n + 1);
    if (ends_with(rest, ".weight_blocks"))
        rest[n - 7] = 0;
    else if (ends_with(rest, ".weight_packed"))
        rest[n - 7] = 0;
    else if (!ends_with(rest, ".weight"))
        return -1;
    /* the DSA indexer's two projections belong to the attention group (model.c binds them so) */
    static const char *const attn[] = {"self_attn.q_a_proj.weight",     "self_attn.q_b_proj.weight",
                                       "self_attn.q_proj.weight",       "self_attn.kv_a_proj_with_mqa.weight",
                                       "self_attn.kv_b_proj.weight",    "self_attn.o_proj.weight",
                                       "self_attn.indexer.wq_b.weight", "self_attn.indexer.wk.weight"};
    static const char *const mlp[] = {"gate_proj.weight", "up_proj.weight", "down_proj.weight"};
    *layer = l;
    for (size_t i = 0; i < sizeof attn / sizeof *attn; i++)
        if (strcmp(rest, attn[i]) == 0) return FR_QGROUP_ATTENTION;
    const char *q = rest;
    if (strncmp(q, "mlp.", 4) != 0) return -1;
    q += 4;
    int g = FR_QGROUP_DENSE;
    if (strncmp(q, "shared_experts.", 15) == 0) {
        q += 15;
        g = FR_QGROUP_SHARED;
    } else if (strncmp(q, "experts.", 8) == 0) {
        q += 8;
        if (parse_index(&q) < 0 || *q++ != '.') return -1;
        g = FR_QGROUP_EXPERTS;
    }
    for (int i = 0; i < 3; i++)
        if (strcmp(q, mlp[i]) == 0) return g;
    return -1;
}

/* The companion suffixes of a linear weight "X.weight": X.weight<suffix>. */
static const char *const companions[] = {"_scale_inv", "_scales", "_scale", "_shape"};

/* Is `name` a companion of a group linear weight? */
static bool is_companion(const char *name, const char *prefix) {
    for (size_t i = 0; i < sizeof companions / sizeof *companions; i++) {
        if (!ends_with(name, companions[i])) continue;
        size_t n = strlen(name) - strlen(companions[i]);
        char base[NAME_MAX_LEN];
        if (n >= sizeof base) return false;
        memcpy(base, name, n);
        base[n] = 0;
        int l;
        if (ends_with(base, ".weight") && fr_linear_group(base, prefix, &l) >= 0) return true;
    }
    return false;
}

/* ---- the output plan ---- */

typedef enum {
    OUT_COPY,      /* src's bytes */
    OUT_BF16,      /* weight -> BF16 */
    OUT_FP8,       /* weight -> E4M3 data */
    OUT_FP8_SCALE, /* weight -> F32 scale_inv */
    OUT_MX_BLOCKS, /* weight -> MXFP4 blocks */
    OUT_MX_SCALES, /* weight -> E8M0 scales */
} out_kind;

typedef struct {
    out_kind kind;
    const fr_st_tensor *src; /* OUT_COPY */
    size_t weight;           /* the others: index into plan.weights */
} out_item;

typedef struct {
    fr_weight view; /* validated source view */
    int group, layer;
    fr_qformat to;
} qweight;

typedef struct {
    const char *path;        /* input file (owned by the set) */
    size_t begin, end;       /* its range of plan.specs / plan.items */
    size_t in_begin, in_end; /* its range of the input set's tensors */
} qfile;

typedef struct {
    const fr_config *cfg;
    fr_st_spec *specs; /* names: owned when owned_name[i] */
    bool *owned_name;
    out_item *items;
    size_t n, cap;
    qweight *weights;
    size_t nw, capw;
    qfile *files;
    size_t nf;
    int br, bc; /* FP8 block of newly quantized weights */
    bool ue8m0;
    /* fill state */
    bool progress;
    int n_layers_all, last_layer;
    size_t file_index;
    double t0;
    size_t cache_w; /* weight whose converted parts are cached, SIZE_MAX: none */
    uint8_t *cache_a, *cache_b;
    size_t len_a, len_b;
} qplan;

static void plan_free(qplan *p) {
    for (size_t i = 0; i < p->n; i++)
        if (p->owned_name[i]) free((char *)p->specs[i].name);
    free(p->specs);
    free(p->owned_name);
    free(p->items);
    free(p->weights);
    free(p->files);
    free(p->cache_a);
    free(p->cache_b);
}

static fr_status plan_add(qplan *p, const char *name, bool copy_name, fr_dtype dt, int ndim,
                          const int64_t *shape, out_item it, fr_error *err) {
    if (p->n == p->cap) {
        size_t cap = p->cap ? 2 * p->cap : 1024;
        fr_st_spec *s = realloc(p->specs, cap * sizeof *s);
        if (s) p->specs = s;
        bool *o = s ? realloc(p->owned_name, cap * sizeof *o) : NULL;
        if (o) p->owned_name = o;
        out_item *i = o ? realloc(p->items, cap * sizeof *i) : NULL;
        if (!i) return nomem(err, "tensor list");
        p->items = i;
        p->cap = cap;
    }
    fr_st_spec *s = &p->specs[p->n];
    memset(s, 0, sizeof *s);
    s->name = copy_name ? strdup(name) : name;
    if (!s->name) return nomem(err, "tensor names");
    s->dtype = dt;
    s->ndim = ndim;
    for (int d = 0; d < ndim; d++) s->shape[d] = shape[d];
    p->owned_name[p->n] = copy_name;
    p->items[p->n] = it;
    p->n++;
    return FR_OK;
}

static fr_status plan_copy(qplan *p, const fr_st_tensor *t, fr_error *err) {
    return plan_add(p, t->name, false, t->dtype, t->ndim, t->shape, (out_item){.kind = OUT_COPY, .src = t},
                    err);
}

static fr_qformat stored_format(const fr_weight *w) {
    switch (w->dtype) {
    case FR_DTYPE_F8_E4M3: return FR_QFMT_FP8;
    case FR_DTYPE_MXFP4: return FR_QFMT_MXFP4;
    case FR_DTYPE_INT4: return FR_QFMT_INT4;
    default: return FR_QFMT_BF16;
    }
}

/* The [rows, cols] of a linear weight from its primary tensor (binding checks the rest). */
static fr_status primary_dims(const fr_st_tensor *t, int64_t *rows, int64_t *cols, fr_error *err) {
    if (ends_with(t->name, "_blocks") && t->ndim == 3)
        *rows = t->shape[0], *cols = t->shape[1] * 32;
    else if (ends_with(t->name, "_packed") && t->ndim == 2)
        *rows = t->shape[0], *cols = t->shape[1] * 8;
    else if (ends_with(t->name, ".weight") && t->ndim == 2)
        *rows = t->shape[0], *cols = t->shape[1];
    else
        return fr_fail(err, FR_ERR_FORMAT, "tensor \"%s\" in %s has %d dimensions, not a linear weight",
                       t->name, t->file, t->ndim);
    return FR_OK;
}

/* Add the output tensors of group weight k (plan.weights[k], primary tensor t). */
static fr_status plan_weight(qplan *p, const fr_st_set *st, const fr_st_tensor *t, size_t k, fr_error *err) {
    const qweight *q = &p->weights[k];
    const fr_weight *w = &q->view;
    char base[NAME_MAX_LEN + 16], nm[NAME_MAX_LEN + 32];
    snprintf(base, sizeof base, "%s", t->name);
    if (ends_with(base, "_blocks") || ends_with(base, "_packed")) base[strlen(base) - 7] = 0;
    const fr_qformat have = stored_format(w);
    fr_status rc;
    if (q->to == have) { /* unchanged: the primary and its companions byte for byte */
        if ((rc = plan_copy(p, t, err))) return rc;
        for (size_t i = 0; i < sizeof companions / sizeof *companions; i++) {
            snprintf(nm, sizeof nm, "%s%s", base, companions[i]);
            const fr_st_tensor *c = fr_st_find(st, nm);
            if (c && (rc = plan_copy(p, c, err))) return rc;
        }
        return FR_OK;
    }
    const int64_t R = w->rows, C = w->cols;
    switch (q->to) {
    case FR_QFMT_BF16:
        return plan_add(p, base, true, FR_DTYPE_BF16, 2, (int64_t[]){R, C},
                        (out_item){.kind = OUT_BF16, .weight = k}, err);
    case FR_QFMT_FP8:
        if ((rc = plan_add(p, base, true, FR_DTYPE_F8_E4M3, 2, (int64_t[]){R, C},
                           (out_item){.kind = OUT_FP8, .weight = k}, err)))
            return rc;
        snprintf(nm, sizeof nm, "%s_scale_inv", base);
        return plan_add(p, nm, true, FR_DTYPE_F32, 2,
                        (int64_t[]){(R + p->br - 1) / p->br, (C + p->bc - 1) / p->bc},
                        (out_item){.kind = OUT_FP8_SCALE, .weight = k}, err);
    case FR_QFMT_MXFP4:
        if (C % 32)
            return fr_fail(
                err, FR_ERR_FORMAT,
                "quantize: weight \"%s\" has %lld input features, not a multiple of the MXFP4 block of 32",
                base, (long long)C);
        snprintf(nm, sizeof nm, "%s_blocks", base);
        if ((rc = plan_add(p, nm, true, FR_DTYPE_U8, 3, (int64_t[]){R, C / 32, 16},
                           (out_item){.kind = OUT_MX_BLOCKS, .weight = k}, err)))
            return rc;
        snprintf(nm, sizeof nm, "%s_scales", base);
        return plan_add(p, nm, true, FR_DTYPE_U8, 2, (int64_t[]){R, C / 32},
                        (out_item){.kind = OUT_MX_SCALES, .weight = k}, err);
    default:
        return fr_fail(err, FR_ERR_UNSUPPORTED,
                       "quantize: writing %s weights is not supported (targets: bf16, fp8, mxfp4)",
                       fr_qformat_name(q->to));
    }
}

/* Convert weight k into the cache (both of its parts). */
static fr_status convert(qplan *p, size_t k, fr_error *err) {
    if (p->cache_w == k) return FR_OK;
    const qweight *q = &p->weights[k];
    const fr_weight *w = &q->view;
    const size_t R = (size_t)w->rows, C = (size_t)w->cols;
    size_t la = 0, lb = 0;
    switch (q->to) {
    case FR_QFMT_BF16: la = R * C * 2; break;
    case FR_QFMT_FP8:
        la = R * C,
        lb = (R + (size_t)p->br - 1) / (size_t)p->br * ((C + (size_t)p->bc - 1) / (size_t)p->bc) * 4;
        break;
    case FR_QFMT_MXFP4: la = R * C / 2, lb = R * C / 32; break;
    default: return fr_fail(err, FR_ERR_INVALID, "quantize: bad target");
    }
    free(p->cache_a);
    free(p->cache_b);
    p->cache_w = SIZE_MAX;
    p->cache_a = malloc(la ? la : 1);
    p->cache_b = malloc(lb ? lb : 1);
    if (!p->cache_a || !p->cache_b) return nomem(err, "converted weight");
    p->len_a = la, p->len_b = lb;
    if (p->progress && q->layer != p->last_layer) {
        p->last_layer = q->layer;
        fprintf(stderr, "quantize: layer %d/%d (file %zu/%zu) %.1f s\n", q->layer + 1, p->n_layers_all,
                p->file_index + 1, p->nf, now_s() - p->t0);
    }
    fr_status rc;
    switch (q->to) {
    case FR_QFMT_BF16: rc = to_bf16(w, (uint16_t *)(void *)p->cache_a, err); break;
    case FR_QFMT_FP8:
        rc = to_fp8(w, p->br, p->bc, p->ue8m0, p->cache_a, (float *)(void *)p->cache_b, err);
        break;
    default: rc = to_mxfp4(w, p->cache_a, p->cache_b, err); break;
    }
    if (!rc) p->cache_w = k;
    return rc;
}

/* fr_st_fill_fn over the current file's range of the plan. */
static fr_status fill(void *vctx, size_t index, uint8_t *buf, size_t nbytes, fr_error *err) {
    qplan *p = vctx;
    const size_t i = p->files[p->file_index].begin + index;
    const out_item *it = &p->items[i];
    if (it->kind == OUT_COPY) {
        if (nbytes != it->src->nbytes)
            return fr_fail(err, FR_ERR_INVALID, "quantize: size mismatch copying a tensor");
        if (nbytes) memcpy(buf, it->src->data, nbytes);
        return FR_OK;
    }
    fr_status rc = convert(p, it->weight, err);
    if (rc) return rc;
    const bool a = it->kind == OUT_BF16 || it->kind == OUT_FP8 || it->kind == OUT_MX_BLOCKS;
    if (nbytes != (a ? p->len_a : p->len_b))
        return fr_fail(err, FR_ERR_INVALID, "quantize: size mismatch writing a tensor");
    memcpy(buf, a ? p->cache_a : p->cache_b, nbytes);
    return FR_OK;
}

/* Drop the pages of an input file's tensors once its shard is written, so resident
 * memory stays at about one shard however large the checkpoint. The mapping is private
 * and read-only: discarded pages would simply be read again from the file. A companion
 * stored in another shard is read later; that costs a re-read, never correctness. */
static void release_input(const fr_st_set *st, const qfile *f) {
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    for (size_t i = f->in_begin; i < f->in_end; i++) {
        const fr_st_tensor *t = fr_st_at(st, i);
        if (!t->nbytes) continue;
        uintptr_t a = (uintptr_t)t->data & ~(page - 1),
                  b = ((uintptr_t)t->data + t->nbytes + page - 1) & ~(page - 1);
        madvise((void *)a, b - a, MADV_DONTNEED);
    }
}

/* ---- files ---- */

static char *path_join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *s = malloc(n);
    if (s) snprintf(s, n, "%s/%s", dir, name);
    return s;
}

static const char *base_name(const char *path) {
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

static fr_status copy_file(const char *from, const char *to, fr_error *err) {
    FILE *in = fopen(from, "rb");
    if (!in) return fr_fail(err, FR_ERR_IO, "quantize: open %s: %s", from, strerror(errno));
    FILE *out = fopen(to, "wb");
    if (!out) {
        fclose(in);
        return fr_fail(err, FR_ERR_IO, "quantize: create %s: %s", to, strerror(errno));
    }
    char buf[1 << 16];
    size_t n;
    int bad = 0;
    while (!bad && (n = fread(buf, 1, sizeof buf, in)) > 0) bad = fwrite(buf, 1, n, out) != n;
    bad |= ferror(in);
    fclose(in);
    if (fclose(out) != 0 || bad) return fr_fail(err, FR_ERR_IO, "quantize: copy %s to %s failed", from, to);
    return FR_OK;
}

/* Every regular file of in_dir that is not weights or config.json (tokenizer files,
 * generation_config.json, chat template, custom code, README). */
static fr_status copy_other_files(const char *in_dir, const char *out_dir, fr_error *err) {
    DIR *d = opendir(in_dir);
    if (!d) return fr_fail(err, FR_ERR_IO, "quantize: open directory %s: %s", in_dir, strerror(errno));
    fr_status rc = FR_OK;
    struct dirent *e;
    while (!rc && (e = readdir(d))) {
        const char *n = e->d_name;
        if (n[0] == '.' || ends_with(n, ".safetensors") || !strcmp(n, INDEX_NAME) ||
            !strcmp(n, "config.json"))
            continue;
        char *from = path_join(in_dir, n), *to = path_join(out_dir, n);
        struct stat sb;
        if (!from || !to)
            rc = nomem(err, "paths");
        else if (stat(from, &sb) == 0 && S_ISREG(sb.st_mode))
            rc = copy_file(from, to, err);
        free(from);
        free(to);
    }
    closedir(d);
    return rc;
}

static fr_status remove_file(const char *dir, const char *name, fr_error *err) {
    char *path = path_join(dir, name);
    if (!path) return nomem(err, "paths");
    fr_status rc = FR_OK;
    if (unlink(path) != 0 && errno != ENOENT)
        rc = fr_fail(err, FR_ERR_IO, "quantize: remove stale %s: %s", path, strerror(errno));
    free(path);
    return rc;
}

/* config.json with quantization_config replaced (in the text model object, and at the
 * top level of a wrapper, as the K2.5 release repeats it there). */
static fr_status write_config(const char *in_dir, const char *out_dir, const fr_qformat *fmt, const qplan *p,
                              fr_error *err) {
    char *in = path_join(in_dir, "config.json"), *out = path_join(out_dir, "config.json"), *text = NULL,
         *printed = NULL;
    cJSON *root = NULL, *qc = NULL;
    fr_status rc = FR_OK;
    if (!in || !out) {
        rc = nomem(err, "paths");
        goto done;
    }
    if ((rc = fr_read_file(in, 4u << 20, &text, NULL, err))) goto done;
    if ((rc = fr_json_parse(text, strlen(text), in, &root, err))) goto done;
    qc = cJSON_CreateObject();
    cJSON *fg = qc ? cJSON_AddObjectToObject(qc, "format_by_group") : NULL;
    if (!fg || !cJSON_AddStringToObject(qc, "quant_method", "frontier")) {
        rc = nomem(err, "config");
        goto done;
    }
    /* quant_method first reads better: move format_by_group after it */
    cJSON_DetachItemViaPointer(qc, fg);
    cJSON_AddItemToObject(qc, "format_by_group", fg);
    bool fp8 = false, four = false;
    for (int g = 0; g < FR_QGROUP_COUNT; g++) {
        cJSON_AddStringToObject(fg, fr_qgroup_name((fr_qgroup)g), fr_qformat_name(fmt[g]));
        fp8 |= fmt[g] == FR_QFMT_FP8;
        four |= fmt[g] == FR_QFMT_MXFP4 || fmt[g] == FR_QFMT_INT4;
    }
    if (four) cJSON_AddNumberToObject(qc, "group_size", 32);
    if (fp8) {
        cJSON_AddStringToObject(qc, "fmt", "e4m3");
        cJSON *bs = cJSON_AddArrayToObject(qc, "weight_block_size");
        if (bs) {
            cJSON_AddItemToArray(bs, cJSON_CreateNumber(p->br));
            cJSON_AddItemToArray(bs, cJSON_CreateNumber(p->bc));
        }
        if (p->ue8m0) cJSON_AddStringToObject(qc, "scale_fmt", "ue8m0");
    }
    cJSON *text_obj = cJSON_GetObjectItemCaseSensitive(root, "text_config");
    cJSON *objs[2] = {cJSON_IsObject(text_obj) ? text_obj : root, cJSON_IsObject(text_obj) ? root : NULL};
    for (int i = 1; i >= 0; i--) { /* the top-level copy first: the text model's takes qc itself */
        if (!objs[i]) continue;
        cJSON *item = i == 0 ? qc : cJSON_Duplicate(qc, 1);
        if (!item) {
            rc = nomem(err, "config");
            goto done;
        }
        cJSON_DeleteItemFromObjectCaseSensitive(objs[i], "quantization_config");
        cJSON_AddItemToObject(objs[i], "quantization_config", item);
        if (i == 0) qc = NULL; /* owned by root now */
    }
    if (!(printed = fr_synth_print_json(root))) {
        rc = nomem(err, "config");
        goto done;
    }
    FILE *f = fopen(out, "wb");
    if (!f) {
        rc = fr_fail(err, FR_ERR_IO, "quantize: create %s: %s", out, strerror(errno));
        goto done;
    }
    size_t n = strlen(printed);
    int bad = fwrite(printed, 1, n, f) != n || fputc('\n', f) == EOF;
    if (fclose(f) != 0 || bad) rc = fr_fail(err, FR_ERR_IO, "quantize: write %s: %s", out, strerror(errno));
done:
    cJSON_Delete(qc);
    cJSON_Delete(root);
    free(printed);
    free(text);
    free(in);
    free(out);
    return rc;
}

/* ---- the checkpoint ---- */

/* Classify every tensor and bind the group weights; fills p->weights/specs/items/files. */
static fr_status build_plan(qplan *p, const fr_st_set *st, const fr_quantize_opts *o, fr_qformat *out_fmt,
                            fr_error *err) {
    const fr_config *c = p->cfg;
    const char *pre = c->weight_prefix;
    const size_t n = fr_st_count(st);
    unsigned have_mask[FR_QGROUP_COUNT] = {0};
    fr_status rc;
    /* 1. bind every group weight, note the formats each group has */
    p->weights = calloc(n ? n : 1, sizeof *p->weights);
    size_t *weight_of = malloc((n ? n : 1) * sizeof *weight_of); /* tensor -> weight index, SIZE_MAX: none */
    if (!p->weights || !weight_of) {
        free(weight_of);
        return nomem(err, "tensor list");
    }
    for (size_t i = 0; i < n; i++) {
        const fr_st_tensor *t = fr_st_at(st, i);
        int layer, g = fr_linear_group(t->name, pre, &layer);
        weight_of[i] = SIZE_MAX;
        if (g < 0) continue;
        int64_t rows = 0, cols = 0;
        char base[NAME_MAX_LEN + 16];
        snprintf(base, sizeof base, "%s", t->name);
        if (ends_with(base, "_blocks") || ends_with(base, "_packed")) base[strlen(base) - 7] = 0;
        qweight *q = &p->weights[p->nw];
        if ((rc = primary_dims(t, &rows, &cols, err)) ||
            (rc = fr_model_bind_linear(c, st, base, rows, cols, (fr_qgroup)g, &q->view, err))) {
            free(weight_of);
            return rc;
        }
        q->group = g;
        q->layer = layer;
        have_mask[g] |= 1u << stored_format(&q->view);
        weight_of[i] = p->nw++;
    }
    /* 2. each group's output format */
    static const char *const flag[FR_QGROUP_COUNT] = {"--attention", "--dense", "--dense", "--experts"};
    for (int g = 0; g < FR_QGROUP_COUNT; g++) {
        int t = o->target[g];
        if (t == FR_QUANT_KEEP) {
            unsigned m = have_mask[g];
            if (m & (m - 1)) {
                int f1 = __builtin_ctz(m), f2 = __builtin_ctz(m & (m - 1));
                free(weight_of);
                return fr_fail(err, FR_ERR_INVALID,
                               "quantize: the %s group mixes %s and %s weights: choose its format with %s",
                               fr_qgroup_name((fr_qgroup)g), fr_qformat_name((fr_qformat)f1),
                               fr_qformat_name((fr_qformat)f2), flag[g]);
            }
            t = m ? __builtin_ctz(m) : FR_QFMT_BF16;
        } else if (t < 0 || t >= FR_QFMT_COUNT || t == FR_QFMT_INT4 ||
                   (g == FR_QGROUP_ATTENTION && t != FR_QFMT_BF16 && t != FR_QFMT_FP8)) {
            free(weight_of);
            return fr_fail(err, FR_ERR_UNSUPPORTED, "quantize: %s %s is not supported (%s)", flag[g],
                           t >= 0 && t < FR_QFMT_COUNT ? fr_qformat_name((fr_qformat)t) : "?",
                           g == FR_QGROUP_ATTENTION ? "bf16 or fp8" : "bf16, fp8 or mxfp4");
        }
        out_fmt[g] = (fr_qformat)t;
    }
    for (size_t k = 0; k < p->nw; k++) p->weights[k].to = out_fmt[p->weights[k].group];
    /* 3. the output tensors, file by file in input order */
    p->files = calloc(n ? n : 1, sizeof *p->files);
    if (!p->files) {
        free(weight_of);
        return nomem(err, "file list");
    }
    rc = FR_OK;
    for (size_t i = 0; i < n && !rc; i++) {
        const fr_st_tensor *t = fr_st_at(st, i);
        if (p->nf == 0 || strcmp(p->files[p->nf - 1].path, t->file) != 0) {
            if (p->nf) p->files[p->nf - 1].end = p->n, p->files[p->nf - 1].in_end = i;
            p->files[p->nf++] = (qfile){.path = t->file, .begin = p->n, .in_begin = i};
        }
        if (weight_of[i] != SIZE_MAX)
            rc = plan_weight(p, st, t, weight_of[i], err);
        else if (!is_companion(t->name, pre))
            rc = plan_copy(p, t, err);
    }
    if (p->nf) p->files[p->nf - 1].end = p->n, p->files[p->nf - 1].in_end = n;
    free(weight_of);
    return rc;
}

fr_status fr_quantize_checkpoint(const char *in_dir, const char *out_dir, const fr_quantize_opts *o,
                                 fr_error *err) {
    fr_model *m = NULL;
    qplan p;
    memset(&p, 0, sizeof p);
    p.cache_w = SIZE_MAX;
    p.last_layer = -1;
    p.t0 = now_s();
    const char **names = NULL, **file_of = NULL;
    char *path = NULL, **out_names = NULL;
    fr_status rc;
    /* Distinct directories, or the writer would truncate the shards it is reading. */
    char rin[PATH_MAX], rout[PATH_MAX];
    if (!realpath(in_dir, rin)) return fr_fail(err, FR_ERR_IO, "quantize: %s: %s", in_dir, strerror(errno));
    if (mkdir(out_dir, 0777) != 0 && errno != EEXIST)
        return fr_fail(err, FR_ERR_IO, "quantize: create %s: %s", out_dir, strerror(errno));
    if (!realpath(out_dir, rout))
        return fr_fail(err, FR_ERR_IO, "quantize: %s: %s", out_dir, strerror(errno));
    if (strcmp(rin, rout) == 0)
        return fr_fail(err, FR_ERR_INVALID, "quantize: OUT_DIR is the input directory %s", in_dir);

    /* Load (and so validate) the input as the engine would. */
    if ((rc = fr_model_load(in_dir, &m, err))) return rc;
    p.cfg = &m->cfg;
    p.progress = o->progress;
    p.n_layers_all = m->cfg.n_layers + m->cfg.num_nextn_predict_layers;
    p.br = m->cfg.quant.fp8 ? m->cfg.quant.block_rows : 128;
    p.bc = m->cfg.quant.fp8 ? m->cfg.quant.block_cols : 128;
    p.ue8m0 = m->cfg.quant.fp8 && m->cfg.quant.ue8m0;
    fr_qformat fmt[FR_QGROUP_COUNT];
    if ((rc = build_plan(&p, m->st, o, fmt, err))) goto done;
    if (o->progress) {
        fprintf(stderr, "quantize: %s -> %s: %zu weights in %zu files;", in_dir, out_dir, p.nw, p.nf);
        for (int g = 0; g < FR_QGROUP_COUNT; g++)
            fprintf(stderr, " %s %s", fr_qgroup_name((fr_qgroup)g), fr_qformat_name(fmt[g]));
        fprintf(stderr, "\n");
    }

    /* The shards, then the index (when there are several files or the input had one). */
    char *in_index = path_join(in_dir, INDEX_NAME);
    if (!in_index) {
        rc = nomem(err, "paths");
        goto done;
    }
    const bool index = p.nf > 1 || access(in_index, F_OK) == 0;
    free(in_index);
    if (!index && (rc = remove_file(out_dir, INDEX_NAME, err))) goto done;
    if (index && (rc = remove_file(out_dir, "model.safetensors", err))) goto done;
    names = malloc((p.n ? p.n : 1) * sizeof *names);
    file_of = malloc((p.n ? p.n : 1) * sizeof *file_of);
    out_names = calloc(p.nf ? p.nf : 1, sizeof *out_names);
    if (!names || !file_of || !out_names) {
        rc = nomem(err, "index");
        goto done;
    }
    uint64_t total = 0;
    for (size_t f = 0; f < p.nf; f++) {
        const qfile *qf = &p.files[f];
        const char *name = base_name(qf->path);
        /* a lone model.safetensors inside an index keeps the loader's lookup order simple */
        if (index && !strcmp(name, "model.safetensors")) name = "model-00001-of-00001.safetensors";
        free(path);
        if (!(out_names[f] = strdup(name)) || !(path = path_join(out_dir, name))) {
            rc = nomem(err, "paths");
            goto done;
        }
        p.file_index = f;
        if (o->progress)
            fprintf(stderr, "quantize: file %zu/%zu %s (%zu tensors)\n", f + 1, p.nf, name,
                    qf->end - qf->begin);
        if ((rc = fr_st_write(path, p.specs + qf->begin, qf->end - qf->begin, fill, &p, ST_METADATA, err)))
            goto done;
        release_input(m->st, qf);
        for (size_t i = qf->begin; i < qf->end; i++) {
            size_t b = fr_dtype_size(p.specs[i].dtype);
            for (int d = 0; d < p.specs[i].ndim; d++) b *= (size_t)p.specs[i].shape[d];
            total += b;
            names[i] = p.specs[i].name;
            file_of[i] = out_names[f];
        }
    }
    if (index && (rc = fr_st_write_index(out_dir, names, file_of, p.n, total, err))) goto done;
    if ((rc = write_config(in_dir, out_dir, fmt, &p, err))) goto done;
    if ((rc = copy_other_files(in_dir, out_dir, err))) goto done;
    if (o->progress) {
        uint64_t in_bytes = 0;
        for (size_t i = 0; i < fr_st_count(m->st); i++) in_bytes += fr_st_at(m->st, i)->nbytes;
        fprintf(stderr, "quantize: wrote %s: %zu tensors in %zu files, %.3f GB (from %.3f GB) in %.1f s\n",
                out_dir, p.n, p.nf, (double)total / 1e9, (double)in_bytes / 1e9, now_s() - p.t0);
    }
done:
    if (out_names)
        for (size_t f = 0; f < p.nf; f++) free(out_names[f]);
    free(out_names);
    free(names);
    free(file_of);
    free(path);
    plan_free(&p);
    fr_model_free(m);
    return rc;
}
