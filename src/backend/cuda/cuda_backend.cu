/* cuda_backend.cu - the CUDA backend's op table, device memory and weight residency.
 *
 * Weights are uploaded once, in their stored format, by register_weight (the forward pass
 * registers every tensor of the model when it is created); a weight view the ops receive
 * is a host view, translated to the device copy by looking up the host address range it
 * falls in (a sorted table, binary search: a few hundred lookups per step). Host arrays an
 * op receives go through a staging ring in device memory. Activations are float32 device
 * buffers (the op table's contract); the kernels read weights in their formats and
 * accumulate in float32.
 *
 * Built three ways from the same source: nvcc (CUDA), hipcc (HIP, through gpu_compat.h),
 * and g++ with FR_GPU_EMU, which runs every kernel on the CPU (gpu_emu.h) so that CI tests
 * the kernels without a GPU. */
#include "cuda_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

extern "C" {
#include "cuda_backend.h"
}

typedef struct {
    uintptr_t host;
    size_t bytes;
    char *dev;
} weight_range;

typedef struct {
    const void *key;
    void *dev;
} memo_entry;

typedef enum { MODE_NONE, MODE_EAGER, MODE_CAPTURE, MODE_REPLAY } step_mode;

#define STAGED_SLOTS 4096 /* a power of two; a step stages a few per sequence */

/* One repeated step shape: seen once eagerly (its staging and launch counts noted), then
 * captured into a graph, then replayed. */
typedef struct {
    uint64_t key;
    int eager_runs;
    bool banned; /* capture failed: always eager */
    size_t staged_bytes;
    uint64_t sig;
    unsigned long launches;
    bool have_exec;
    fr_gpu_graph_exec exec;
} step_graph;

bool fr_gpu_skip = false;
unsigned long fr_gpu_launches = 0;

struct fr_cu_ctx {
    fr_gpu_stream stream;
    weight_range *ranges; /* sorted by host address */
    size_t n_ranges, cap_ranges;
    uint64_t uploaded_bytes;
    char *ring, *ring_host; /* staging ring for host arrays: device, and its pinned mirror */
    size_t ring_bytes, ring_head;
    /* within a step: what was staged already (a block table once, not once per layer), an
     * open-addressed table keyed by host address (arrays) or by content (values); entries
     * of an earlier step have an older generation */
    struct {
        uint64_t key;
        const void *host;
        size_t bytes, off;
        unsigned gen;
        bool by_value;
    } staged[STAGED_SLOTS];
    unsigned staged_gen;
    uint64_t stage_sig; /* hash of the step's staging calls, to check a replay */
    bool step_spilled;  /* the ring wrapped or grew during this step */
    /* CUDA graphs of repeated step shapes (see step_begin) */
    step_mode mode;
    step_graph *cur;
    step_graph graphs[64];
    int n_graphs;
    bool graphs_off; /* FR_CUDA_GRAPHS=0 */
    unsigned long n_eager, n_captured, n_replayed, n_retried; /* steps, for FR_CUDA_GRAPHS=log */
    void *scratch[FR_CU_SCRATCH_COUNT];
    size_t scratch_bytes[FR_CU_SCRATCH_COUNT];
    memo_entry *memo;
    size_t n_memo, cap_memo;
    unsigned long long *bytes_counter; /* device */
    bool reported;                     /* one device error message is enough */
    int sm_count;
};

static fr_cu_ctx *ctx_of(fr_backend *be) { return (fr_cu_ctx *)be->ctx; }

fr_gpu_stream fr_cu_stream(fr_backend *be) { return ctx_of(be)->stream; }
int fr_cu_sm_count(fr_backend *be) { return ctx_of(be)->sm_count; }

fr_status fr_cu_check(fr_backend *be, const char *what) {
    fr_gpu_err e = fr_gpu_last_error();
    if (e == FR_GPU_SUCCESS) return FR_OK;
    fr_cu_ctx *c = ctx_of(be);
    if (!c->reported) fprintf(stderr, "cuda backend: %s: %s\n", what, fr_gpu_error_string(e));
    c->reported = true;
    return FR_ERR_DEVICE;
}

static fr_status gpu_fail(fr_backend *be, fr_gpu_err e, const char *what) {
    if (e == FR_GPU_SUCCESS) return FR_OK;
    fr_cu_ctx *c = ctx_of(be);
    if (!c->reported) fprintf(stderr, "cuda backend: %s: %s\n", what, fr_gpu_error_string(e));
    c->reported = true;
    return FR_ERR_DEVICE;
}

/* ---- weight residency */

/* Index of the last range starting at or below host address p, or -1. */
static long range_floor(const fr_cu_ctx *c, uintptr_t p) {
    long lo = 0, hi = (long)c->n_ranges - 1, ans = -1;
    while (lo <= hi) {
        const long mid = (lo + hi) / 2;
        if (c->ranges[mid].host <= p) ans = mid, lo = mid + 1;
        else hi = mid - 1;
    }
    return ans;
}

/* Device address of host bytes [p, p + bytes), or NULL if no uploaded range holds them. */
static const void *translate(const fr_cu_ctx *c, const void *p, size_t bytes) {
    const uintptr_t a = (uintptr_t)p;
    for (long i = range_floor(c, a); i >= 0; i--) { /* overlapping ranges: rare, short walk */
        const weight_range *r = &c->ranges[i];
        if (a >= r->host && a + bytes <= r->host + r->bytes) return r->dev + (a - r->host);
        if (r->host + r->bytes <= a && i < (long)c->n_ranges - 1 && c->ranges[i + 1].host > a) break;
    }
    return NULL;
}

static fr_status upload_range(fr_backend *be, const void *p, size_t bytes) {
    fr_cu_ctx *c = ctx_of(be);
    if (!p || !bytes || translate(c, p, bytes)) return FR_OK;
    if (c->n_ranges == c->cap_ranges) {
        const size_t cap = c->cap_ranges ? 2 * c->cap_ranges : 256;
        weight_range *r = (weight_range *)realloc(c->ranges, cap * sizeof *r);
        if (!r) return FR_ERR_NOMEM;
        c->ranges = r, c->cap_ranges = cap;
    }
    void *dev = NULL;
    fr_status rc = gpu_fail(be, fr_gpu_malloc(&dev, bytes), "allocating weight memory");
    if (!rc) rc = gpu_fail(be, fr_gpu_memcpy_h2d(dev, p, bytes, c->stream), "uploading a weight");
    /* the source may be a buffer the caller frees after registering: wait for the copy */
    if (!rc) rc = gpu_fail(be, fr_gpu_stream_sync(c->stream), "uploading a weight");
    if (rc) {
        if (dev) fr_gpu_free(dev);
        return rc;
    }
    const long at = range_floor(c, (uintptr_t)p) + 1;
    memmove(&c->ranges[at + 1], &c->ranges[at], (c->n_ranges - (size_t)at) * sizeof *c->ranges);
    c->ranges[at] = (weight_range){(uintptr_t)p, bytes, (char *)dev};
    c->n_ranges++;
    c->uploaded_bytes += bytes;
    return FR_OK;
}

/* Host bytes of the scale_inv grid a view indexes: rows up to its last block. */
static size_t scale_inv_bytes(const fr_weight *w) {
    const int64_t last_block = (w->row0 + w->rows + w->block_rows - 1) / w->block_rows;
    return (size_t)(last_block * w->scale_cols) * sizeof(float);
}

static fr_status cu_register_weight(fr_backend *be, const fr_weight *w) {
    if (!w->data || w->rows <= 0) return FR_OK;
    fr_status rc = upload_range(be, w->data, (size_t)(w->rows * fr_weight_row_bytes(w)));
    if (!rc && w->scales) rc = upload_range(be, w->scales, (size_t)(w->rows * fr_weight_row_scale_bytes(w)));
    if (!rc && w->scale_inv) rc = upload_range(be, w->scale_inv, scale_inv_bytes(w));
    return rc;
}

fr_status fr_cu_weight(fr_backend *be, const fr_weight *w, fr_weight *dev) {
    const fr_cu_ctx *c = ctx_of(be);
    *dev = *w;
    if (!w->data) return FR_OK;
    dev->data = translate(c, w->data, (size_t)(w->rows * fr_weight_row_bytes(w)));
    if (w->scales) dev->scales = translate(c, w->scales, (size_t)(w->rows * fr_weight_row_scale_bytes(w)));
    if (w->scale_inv) dev->scale_inv = (const float *)translate(c, w->scale_inv, scale_inv_bytes(w));
    if (!dev->data || (w->scales && !dev->scales) || (w->scale_inv && !dev->scale_inv)) {
        fprintf(stderr, "cuda backend: a %lldx%lld %s weight was never registered\n", (long long)w->rows,
                (long long)w->cols, fr_dtype_name(w->dtype));
        return FR_ERR_INVALID;
    }
    return FR_OK;
}

/* ---- staging, scratch, memo */

static void drop_graphs(fr_cu_ctx *c) {
    for (int i = 0; i < c->n_graphs; i++)
        if (c->graphs[i].have_exec) fr_gpu_graph_exec_destroy(c->graphs[i].exec);
    c->n_graphs = 0;
    c->cur = NULL;
}

static uint64_t mix(uint64_t h, uint64_t v) { return (h ^ v) * 0x100000001b3ull + 0x9e3779b97f4a7c15ull; }

/* Staging. Host bytes go to the pinned mirror, then to the device ring: eagerly one copy
 * per call; in a recorded step one copy of the whole region, the graph's first node, so a
 * replay only rewrites the pinned bytes. A step's calls restart at offset 0, so the same
 * calls land at the same addresses each step. */
/* The dedup table's slot for (host, bytes) or for the bytes' content; NULL when full. */
static uint64_t stage_key(const void *host, size_t bytes, bool by_value) {
    uint64_t h = mix(0x51ed27ull + by_value, bytes);
    if (!by_value) return mix(h, (uint64_t)(uintptr_t)host);
    const unsigned char *p = (const unsigned char *)host;
    for (size_t i = 0; i < bytes; i++) h = mix(h, p[i]);
    return h;
}

static const void *stage(fr_backend *be, const void *host, size_t bytes, size_t reserve, bool by_value) {
    fr_cu_ctx *c = ctx_of(be);
    if (reserve < bytes) reserve = bytes;
    const size_t need = (reserve + 255) & ~(size_t)255;
    const bool in_step = c->mode != MODE_NONE;
    c->stage_sig = mix(c->stage_sig, need);
    const uint64_t key = in_step ? stage_key(host, bytes, by_value) : 0;
    unsigned slot = (unsigned)key & (STAGED_SLOTS - 1);
    if (in_step) {
        for (int probe = 0; probe < 64; probe++, slot = (slot + 1) & (STAGED_SLOTS - 1)) {
            const auto &e = c->staged[slot];
            if (e.gen != c->staged_gen) break; /* free for this step */
            if (e.key == key && e.bytes == bytes && e.by_value == by_value &&
                (by_value ? !memcmp(c->ring_host + e.off, host, bytes) : e.host == host))
                return c->ring + e.off;
        }
    }
    const bool recorded = c->mode == MODE_CAPTURE || c->mode == MODE_REPLAY;
    if (c->ring_head + need > c->ring_bytes) {
        if (recorded) return NULL; /* addresses are fixed now: the step falls back to eager */
        if (fr_gpu_stream_sync(c->stream)) return NULL; /* earlier copies may still be read */
        if (need > c->ring_bytes || (in_step && c->ring_head > 0)) {
            /* grow (a step's staging must fit in one pass of the ring, for its recording) */
            size_t cap = c->ring_bytes ? 2 * c->ring_bytes : (size_t)1 << 20;
            while (cap < 2 * need) cap *= 2;
            void *d = NULL, *h = NULL;
            if (fr_gpu_malloc(&d, cap) || fr_gpu_host_alloc(&h, cap)) {
                if (d) fr_gpu_free(d);
                return NULL;
            }
            if (c->ring) fr_gpu_free(c->ring);
            if (c->ring_host) fr_gpu_host_free(c->ring_host);
            drop_graphs(c); /* they copy to and from the old ring */
            c->ring = (char *)d, c->ring_host = (char *)h, c->ring_bytes = cap;
            c->step_spilled = in_step; /* this step's staging is not one region: do not record it */
        }
        c->ring_head = 0;
        c->staged_gen++; /* what this step staged before is gone */
        slot = (unsigned)key & (STAGED_SLOTS - 1);
        while (in_step && c->staged[slot].gen == c->staged_gen) slot = (slot + 1) & (STAGED_SLOTS - 1);
    }
    const size_t off = c->ring_head;
    c->ring_head += need;
    if (bytes) memcpy(c->ring_host + off, host, bytes);
    if (!recorded && bytes && fr_gpu_memcpy_h2d(c->ring + off, c->ring_host + off, bytes, c->stream)) return NULL;
    if (in_step && c->staged[slot].gen != c->staged_gen)
        c->staged[slot] = {key, host, bytes, off, c->staged_gen, by_value};
    return c->ring + off;
}

const void *fr_cu_stage_reserve(fr_backend *be, const void *host, size_t bytes, size_t reserve) {
    return stage(be, host, bytes, reserve, false);
}

const void *fr_cu_stage(fr_backend *be, const void *host, size_t bytes) { return stage(be, host, bytes, bytes, false); }

const void *fr_cu_stage_value(fr_backend *be, const void *value, size_t bytes) {
    return stage(be, value, bytes, bytes, true);
}

/* ---- steps and graphs
 *
 * The forward pass brackets each step with step_begin(key) / step_end. A key names a step
 * shape that repeats (a decode step of T sequences); 0 is a one-off. The first step of a
 * key runs eagerly and notes how much it staged and launched; the second is captured into
 * a graph (nothing runs while capturing) and launched; later ones replay it: the ops run
 * only their host side (staging into the pinned ring, launches skipped and counted), then
 * the graph runs. A replay whose staging or launch count differs from the recording (the
 * step was not the same shape after all) runs nothing and returns FR_ERR_RETRY: the caller
 * runs the step again, eagerly, and the key is recaptured later. Ops read every per-step
 * value from staged device memory, so the recorded arguments stay right. */
static step_graph *find_graph(fr_cu_ctx *c, uint64_t key) {
    for (int i = 0; i < c->n_graphs; i++)
        if (c->graphs[i].key == key) return &c->graphs[i];
    if (c->n_graphs == (int)(sizeof c->graphs / sizeof *c->graphs)) return NULL;
    step_graph *g = &c->graphs[c->n_graphs++];
    memset(g, 0, sizeof *g);
    g->key = key;
    return g;
}

static fr_status cu_step_begin(fr_backend *be, uint64_t key) {
    fr_cu_ctx *c = ctx_of(be);
    if (c->mode != MODE_NONE) return FR_ERR_INVALID;
    /* the previous step's copies out of the ring must be done before it is rewritten */
    fr_status rc = gpu_fail(be, fr_gpu_stream_sync(c->stream), "step_begin");
    if (rc) return rc;
    c->ring_head = 0, c->stage_sig = 0, c->step_spilled = false;
    c->staged_gen++; /* forget the previous step's staging */
    fr_gpu_launches = 0;
    c->cur = key && !c->graphs_off ? find_graph(c, key) : NULL;
    step_graph *g = c->cur;
    if (!g || g->banned || g->eager_runs == 0) {
        c->mode = MODE_EAGER;
        return FR_OK;
    }
    if (g->have_exec) {
        c->mode = MODE_REPLAY;
        fr_gpu_skip = true;
        return FR_OK;
    }
    if (fr_gpu_capture_begin(c->stream) != FR_GPU_SUCCESS) {
        fr_gpu_last_error();
        g->banned = true;
        c->mode = MODE_EAGER;
        return FR_OK;
    }
    c->mode = MODE_CAPTURE;
    /* the graph's first node: the step's staged bytes, pinned mirror -> device ring */
    if (g->staged_bytes) fr_gpu_memcpy_h2d(c->ring, c->ring_host, g->staged_bytes, c->stream);
    return FR_OK;
}

static fr_status cu_step_end(fr_backend *be) {
    fr_cu_ctx *c = ctx_of(be);
    step_graph *g = c->cur;
    const step_mode mode = c->mode;
    c->mode = MODE_NONE, c->cur = NULL;
    fr_gpu_skip = false;
    const bool same = g && c->ring_head == g->staged_bytes && c->stage_sig == g->sig && fr_gpu_launches == g->launches;
    if (mode == MODE_EAGER) {
        c->n_eager++;
        if (g && !g->banned && !c->step_spilled) {
            g->eager_runs++;
            g->staged_bytes = c->ring_head, g->sig = c->stage_sig, g->launches = fr_gpu_launches;
        }
        return fr_cu_check(be, "step");
    }
    if (mode == MODE_CAPTURE) {
        fr_gpu_graph graph = NULL;
        fr_gpu_err e = fr_gpu_capture_end(c->stream, &graph);
        if (e == FR_GPU_SUCCESS && same) e = fr_gpu_graph_instantiate(&g->exec, graph);
        if (graph) fr_gpu_graph_destroy(graph);
        fr_gpu_last_error(); /* a failed capture leaves an error to clear */
        if (e != FR_GPU_SUCCESS || !same) {
            g->banned = true; /* something in the step cannot be captured: keep it eager */
            c->n_retried++;
            return FR_ERR_RETRY;
        }
        g->have_exec = true;
        c->n_captured++;
    } else if (mode == MODE_REPLAY && !same) {
        fr_gpu_graph_exec_destroy(g->exec);
        g->have_exec = false, g->eager_runs = 0;
        c->n_retried++;
        return FR_ERR_RETRY;
    } else if (mode != MODE_REPLAY) {
        return FR_ERR_INVALID;
    } else {
        c->n_replayed++;
    }
    return gpu_fail(be, fr_gpu_graph_launch(g->exec, c->stream), "launching a step graph");
}

void *fr_cu_scratch(fr_backend *be, fr_cu_scratch_slot slot, size_t bytes) {
    fr_cu_ctx *c = ctx_of(be);
    if (bytes <= c->scratch_bytes[slot]) return c->scratch[slot];
    if (c->mode == MODE_CAPTURE || c->mode == MODE_REPLAY) return NULL; /* fixed addresses: eager instead */
    if (fr_gpu_stream_sync(c->stream)) return NULL;
    drop_graphs(c); /* they use the old buffer */
    if (c->scratch[slot]) fr_gpu_free(c->scratch[slot]);
    c->scratch[slot] = NULL, c->scratch_bytes[slot] = 0;
    size_t cap = (size_t)1 << 16;
    while (cap < bytes) cap *= 2;
    if (fr_gpu_malloc(&c->scratch[slot], cap)) return c->scratch[slot] = NULL;
    c->scratch_bytes[slot] = cap;
    return c->scratch[slot];
}

void *fr_cu_memo(fr_backend *be, const void *key, size_t bytes, bool *fresh) {
    fr_cu_ctx *c = ctx_of(be);
    for (size_t i = 0; i < c->n_memo; i++)
        if (c->memo[i].key == key) {
            *fresh = false;
            return c->memo[i].dev;
        }
    if (c->n_memo == c->cap_memo) {
        const size_t cap = c->cap_memo ? 2 * c->cap_memo : 64;
        memo_entry *m = (memo_entry *)realloc(c->memo, cap * sizeof *m);
        if (!m) return NULL;
        c->memo = m, c->cap_memo = cap;
    }
    void *dev = NULL;
    if (fr_gpu_malloc(&dev, bytes ? bytes : 1)) return NULL;
    c->memo[c->n_memo++] = (memo_entry){key, dev};
    *fresh = true;
    return dev;
}

unsigned long long *fr_cu_bytes_counter(fr_backend *be) { return ctx_of(be)->bytes_counter; }

/* Move the device byte counter into be->weight_bytes_read (after a synchronize). */
static fr_status fold_bytes(fr_backend *be) {
    fr_cu_ctx *c = ctx_of(be);
    unsigned long long n = 0;
    fr_status rc = gpu_fail(be, fr_gpu_memcpy_d2h(&n, c->bytes_counter, sizeof n, c->stream), "reading counters");
    if (!rc && n) {
        be->weight_bytes_read += n;
        rc = gpu_fail(be, fr_gpu_memset(c->bytes_counter, 0, sizeof n, c->stream), "resetting counters");
    }
    return rc;
}

/* ---- plain ops */

static void *cu_alloc(fr_backend *be, size_t bytes) {
    void *p = NULL;
    if (fr_gpu_malloc(&p, bytes ? bytes : 1)) return NULL;
    if (fr_gpu_memset(p, 0, bytes ? bytes : 1, ctx_of(be)->stream)) {
        fr_gpu_free(p);
        return NULL;
    }
    return p;
}

static void cu_free(fr_backend *be, void *p) {
    if (!p) return;
    /* queued work may still use p, and recorded steps may name it */
    fr_gpu_stream_sync(ctx_of(be)->stream);
    drop_graphs(ctx_of(be));
    fr_gpu_free(p);
}

static fr_status cu_synchronize(fr_backend *be) {
    fr_status rc = gpu_fail(be, fr_gpu_stream_sync(ctx_of(be)->stream), "synchronize");
    return rc ? rc : fold_bytes(be);
}

static fr_status cu_to_host(fr_backend *be, float *host, const float *src, size_t n) {
    fr_status rc = gpu_fail(be, fr_gpu_memcpy_d2h(host, src, n * sizeof *host, ctx_of(be)->stream), "to_host");
    return rc ? rc : fold_bytes(be);
}

static fr_status cu_from_host(fr_backend *be, float *dst, const float *host, size_t n) {
    fr_cu_ctx *c = ctx_of(be);
    fr_status rc = gpu_fail(be, fr_gpu_memcpy_h2d(dst, host, n * sizeof *host, c->stream), "from_host");
    /* the caller may overwrite host right after: make the copy complete */
    return rc ? rc : gpu_fail(be, fr_gpu_stream_sync(c->stream), "from_host");
}

static void cu_destroy(fr_backend *be) {
    fr_cu_ctx *c = ctx_of(be);
    const char *log = getenv("FR_CUDA_GRAPHS");
    if (c && log && !strcmp(log, "log"))
        fprintf(stderr, "cuda backend: steps: %lu eager, %lu captured, %lu replayed, %lu retried\n", c->n_eager,
                c->n_captured, c->n_replayed, c->n_retried);
    if (c) {
        fr_gpu_stream_sync(c->stream);
        for (size_t i = 0; i < c->n_ranges; i++) fr_gpu_free(c->ranges[i].dev);
        for (size_t i = 0; i < c->n_memo; i++) fr_gpu_free(c->memo[i].dev);
        for (int i = 0; i < FR_CU_SCRATCH_COUNT; i++)
            if (c->scratch[i]) fr_gpu_free(c->scratch[i]);
        if (c->ring) fr_gpu_free(c->ring);
        if (c->ring_host) fr_gpu_host_free(c->ring_host);
        drop_graphs(c);
        if (c->bytes_counter) fr_gpu_free(c->bytes_counter);
        fr_gpu_stream_destroy(c->stream);
        free(c->ranges), free(c->memo), free(c);
    }
    free(be);
}

static const fr_backend_ops cuda_ops = {
    .api_version = FR_BACKEND_API_VERSION,
    .name = "cuda",
    .destroy = cu_destroy,
    .alloc = cu_alloc,
    .free = cu_free,
    .synchronize = cu_synchronize,
    .embed = fr_cu_embed,
    .matmul = fr_cu_matmul,
    .rmsnorm = fr_cu_rmsnorm,
    .add_rmsnorm = fr_cu_add_rmsnorm,
    .rope = fr_cu_rope,
    .mla_attention = fr_cu_mla_attention,
    .moe = fr_cu_moe,
    .mlp = fr_cu_mlp,
    .copy_rows = fr_cu_copy_rows,
    .kv_write = fr_cu_kv_write,
    .to_host = cu_to_host,
    .from_host = cu_from_host,
    .all_reduce = NULL,
    .layernorm = fr_cu_layernorm,
    .rope_half = fr_cu_rope_half,
    .dsa_select = fr_cu_dsa_select,
    .mla_sparse_attention = fr_cu_mla_sparse_attention,
    .register_weight = cu_register_weight,
    .step_begin = cu_step_begin,
    .step_end = cu_step_end,
    .argmax = fr_cu_argmax,
};

extern "C" fr_status fr_cuda_backend_create(int device, fr_backend **out, fr_error *err) {
    *out = NULL;
    int n = 0;
    fr_gpu_err e = fr_gpu_device_count(&n);
    if (e != FR_GPU_SUCCESS || n < 1)
        return fr_fail(err, FR_ERR_DEVICE, "cuda backend: no GPU found (%s)",
                       e != FR_GPU_SUCCESS ? fr_gpu_error_string(e) : "0 devices");
    if (device < 0 || device >= n)
        return fr_fail(err, FR_ERR_INVALID, "cuda backend: device %d does not exist (%d found)", device, n);
#if !defined(FR_GPU_EMU)
    if ((e = FR_GPU_(SetDevice)(device)) != FR_GPU_SUCCESS)
        return fr_fail(err, FR_ERR_DEVICE, "cuda backend: selecting device %d: %s", device, fr_gpu_error_string(e));
#endif
    fr_backend *be = (fr_backend *)calloc(1, sizeof *be);
    fr_cu_ctx *c = (fr_cu_ctx *)calloc(1, sizeof *c);
    if (!be || !c) {
        free(be), free(c);
        return fr_fail(err, FR_ERR_NOMEM, "cuda backend: out of memory");
    }
    be->ops = &cuda_ops;
    be->ctx = c;
    be->n_threads = 1;
    const char *graphs = getenv("FR_CUDA_GRAPHS");
    c->graphs_off = graphs && !strcmp(graphs, "0");
    void *counter = NULL;
    if ((e = fr_gpu_stream_create(&c->stream)) != FR_GPU_SUCCESS || (e = fr_gpu_malloc(&counter, 8)) != FR_GPU_SUCCESS ||
        (e = fr_gpu_memset(counter, 0, 8, c->stream)) != FR_GPU_SUCCESS) {
        c->bytes_counter = (unsigned long long *)counter;
        cu_destroy(be);
        return fr_fail(err, FR_ERR_DEVICE, "cuda backend: %s", fr_gpu_error_string(e));
    }
    c->bytes_counter = (unsigned long long *)counter;
    if (fr_gpu_sm_count(&c->sm_count) != FR_GPU_SUCCESS || c->sm_count < 1) c->sm_count = 132;
    *out = be;
    return FR_OK;
}

extern "C" uint64_t fr_cuda_backend_uploaded_bytes(const fr_backend *be) {
    return ((const fr_cu_ctx *)be->ctx)->uploaded_bytes;
}

extern "C" const char *fr_cuda_backend_device_name(void) {
#if defined(FR_GPU_EMU)
    return fr_gpu_device_name();
#else
    static char name[512];
    struct FR_GPU_(DeviceProp) p;
    int dev = 0;
    if (FR_GPU_(GetDevice)(&dev) != FR_GPU_SUCCESS || FR_GPU_(GetDeviceProperties)(&p, dev) != FR_GPU_SUCCESS)
        return "unknown GPU";
    snprintf(name, sizeof name, "%.200s (%d SMs, %.0f GiB)", p.name, p.multiProcessorCount,
             (double)p.totalGlobalMem / (1u << 30));
    return name;
#endif
}

/* The ceiling the decode benchmarks quote: device-to-device copies of `bytes`, counting
 * bytes read and written, the best of several after a warm-up. 0 on failure. */
extern "C" double fr_cuda_copy_bandwidth(fr_backend *be, size_t bytes) {
    fr_cu_ctx *c = ctx_of(be);
    void *a = NULL, *b = NULL;
    double best = 0.0;
    if (fr_gpu_malloc(&a, bytes) == FR_GPU_SUCCESS && fr_gpu_malloc(&b, bytes) == FR_GPU_SUCCESS &&
        fr_gpu_memset(a, 1, bytes, c->stream) == FR_GPU_SUCCESS) {
        for (int i = 0; i < 6; i++) {
            struct timespec t0, t1;
            fr_gpu_stream_sync(c->stream);
            clock_gettime(CLOCK_MONOTONIC, &t0);
            if (fr_gpu_memcpy_d2d(b, a, bytes, c->stream) != FR_GPU_SUCCESS ||
                fr_gpu_stream_sync(c->stream) != FR_GPU_SUCCESS)
                break;
            clock_gettime(CLOCK_MONOTONIC, &t1);
            const double s = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
            if (i > 0 && s > 0.0 && 2.0 * (double)bytes / s > best) best = 2.0 * (double)bytes / s;
        }
    }
    if (a) fr_gpu_free(a);
    if (b) fr_gpu_free(b);
    return best;
}
