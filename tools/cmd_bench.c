/* cmd_bench.c - `frontier bench`: prefill and decode speed against the memory-bandwidth
 * ceiling measured in the same run (like llama-bench, in-process).
 *
 * Decode at one stream is memory bound: each step must read the weights of the
 * attention, the shared and the *chosen* routed experts, the head, and the KV cache.
 * The bench counts those bytes as the backend actually touched them, divides by the
 * median step time, and compares with a streaming-read bandwidth it measures itself.
 *
 * --context N,M,...: decode cost against context length. For each N the cache is filled
 * with N tokens of synthetic rows (fr_session_fill_synthetic: random latents and indexer
 * keys written through the backend's kv_write, so no prefill of N tokens is run: only
 * decode timing matters and a 32k prefill would take long on a small CPU), then -n decode
 * steps are timed and split by the backend's op timers into attention (mla_attention,
 * mla_sparse_attention), the DSA indexer's scoring and top-k (dsa_select) and the rest.
 * With DSA, attention per token stops growing once the context passes index_topk while
 * the indexer keeps growing; --dense-contrast repeats the table with the indexer switched
 * off (the same weights run as the dense MLA model of the same shape). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "backend/cuda/cuda_backend.h"
#include "bench_batch.h"
#include "backend/cpu/matmul.h"
#include "model/forward.h"
#include "model/quantize.h"
#include "model/synth.h"

static int usage(const char *msg) {
    if (msg) return fprintf(stderr, "frontier bench: %s\n", msg), 2;
    fprintf(stderr, "usage: frontier bench (DIR | --preset P --load-format dummy [--layers N] [--experts E] [--fp8-blocks])\n"
                    "                      [-p PROMPT_TOKENS] [-n DECODE_TOKENS] [-t THREADS] [--device cpu|cuda[:N]] [--quantize-experts mxfp4] [--json]\n"
                    "                      [--kv-cache-dtype auto|fp8] [--context N[,N...] [--dense-contrast]] [--batch B[,B...]] [--no-mmap]\n");
    return 2;
}

/* Weight bytes of one layer's attention (what every decode step reads in full). */
static int64_t attention_bytes(const fr_layer *L) {
    int64_t b = fr_weight_bytes(&L->kv_a) + fr_weight_bytes(&L->kv_b) + fr_weight_bytes(&L->o);
    if (L->has_q_lora) b += fr_weight_bytes(&L->q_a) + fr_weight_bytes(&L->q_b);
    else b += fr_weight_bytes(&L->q);
    return b;
}

/* Decode bytes of KV cache one step reads at context ctx: every latent row (or the
 * index_topk selected ones once a DSA model attends sparsely) and, then, every indexer key. */
static double kv_read_bytes(const fr_model *m, fr_kv_dtype dt, double ctx) {
    const fr_config *c = &m->cfg;
    const bool sparse = c->dsa.enabled && ctx > c->dsa.topk;
    double b = 0;
    for (int l = 0; l < c->n_layers; l++) {
        b += (sparse ? c->dsa.topk : ctx) * (double)fr_kv_row_bytes(dt, c->kv_lora_rank, c->qk_rope_head_dim);
        if (sparse && m->layers[l].has_indexer) b += ctx * (double)fr_kv_row_bytes(dt, c->dsa.head_dim, 0);
    }
    return b;
}


/* Run a DSA model as its dense sibling: no indexer, every key attended (DeepSeek-V3.2 is
 * DeepSeek-V3 plus the indexer, at the same shapes). Sessions created afterwards see it. */
static void drop_indexer(fr_model *m) {
    m->cfg.dsa.enabled = false;
    for (int l = 0; l < m->cfg.n_layers; l++) m->layers[l].has_indexer = false;
}

/* The --context table: decode n_gen steps after each context length. */
static fr_status bench_contexts(fr_model *m, fr_backend *be, fr_kv_dtype kv_dtype, const int64_t *ctxs, int n_ctx,
                                int64_t n_gen, bool json, const char *label, fr_error *err) {
    const fr_config *c = &m->cfg;
    fr_status rc = FR_OK;
    if (!json) {
        printf("\n%s: %d layers, %s KV cache (%lld bytes/token)", label, c->n_layers, fr_kv_dtype_name(kv_dtype),
               (long long)fr_kv_bytes_per_token(m, kv_dtype));
        if (c->dsa.enabled) printf(", DSA index_topk %d (%d indexer heads x %d)", c->dsa.topk, c->dsa.n_heads,
                                   c->dsa.head_dim);
        printf("; mean of %lld decode steps after a synthetic context\n", (long long)n_gen);
        printf("| context | decode tok/s | attention ms/token | indexer ms/token | other ms/token | KV read MB/token |\n");
        printf("|--------:|-------------:|-------------------:|-----------------:|---------------:|-----------------:|\n");
    }
    for (int i = 0; i < n_ctx && !rc; i++) {
        fr_session *s = NULL;
        const fr_session_opts so = {.max_ctx = ctxs[i] + n_gen + 1, .kv_dtype = kv_dtype};
        if ((rc = fr_session_create_opts(m, be, &so, &s, err))) break;
        rc = fr_session_fill_synthetic(s, ctxs[i], 7, err);
        /* one untimed step first: step buffers and the scratch of each op get allocated */
        int32_t id = 1 % (int32_t)c->vocab_size, next;
        if (!rc) rc = fr_session_eval_greedy(s, &id, 1, FR_ATTN_AUTO, &next, err);
        const double a0 = be->attention_s, i0 = be->indexer_s, t0 = fr_now_s();
        for (int64_t k = 0; k < n_gen && !rc; k++) {
            id = (int32_t)((k * 7919 + 3) % c->vocab_size);
            rc = fr_session_eval_greedy(s, &id, 1, FR_ATTN_AUTO, &next, err);
        }
        const double per = (fr_now_s() - t0) / (double)n_gen, attn = (be->attention_s - a0) / (double)n_gen;
        const double idx = (be->indexer_s - i0) / (double)n_gen;
        const double kvmb = kv_read_bytes(m, kv_dtype, (double)ctxs[i]) / 1e6;
        fr_session_free(s);
        if (rc) break;
        if (json)
            printf("{\"model\":\"%s\",\"context\":%lld,\"kv_cache_dtype\":\"%s\",\"dsa\":%s,\"decode_tok_s\":%.4f,"
                   "\"attention_ms\":%.3f,\"indexer_ms\":%.3f,\"other_ms\":%.3f,\"kv_read_bytes\":%.0f}\n",
                   label, (long long)ctxs[i], fr_kv_dtype_name(kv_dtype), c->dsa.enabled ? "true" : "false", 1.0 / per,
                   1e3 * attn, 1e3 * idx, 1e3 * (per - attn - idx), kvmb * 1e6);
        else
            printf("| %7lld | %12.3f | %18.2f | %16.2f | %14.2f | %16.2f |\n", (long long)ctxs[i], 1.0 / per, 1e3 * attn,
                   1e3 * idx, 1e3 * (per - attn - idx), kvmb);
        fflush(stdout);
    }
    return rc;
}

int fr_cmd_bench(int argc, char **argv) {
    const char *dir = NULL, *preset = NULL, *load_format = NULL, *device = NULL;
    int64_t n_prompt = 512, n_gen = 128, threads = 0, layers = 0, experts = 0;
    bool json = false, fp8 = false, q_experts = false, dense_contrast = false, no_mmap = false;
    fr_kv_dtype kv_dtype = FR_KV_F32;
    int64_t ctxs[16], batches[16];
    int n_ctx = 0, n_batches = 0;
    fr_error err = {0};
    if (argc < 2) return usage(NULL);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        fr_status rc = FR_OK;
#define VAL() if (!(v = fr_arg_value(argc, argv, &i, &err))) return usage(err.msg)
        if (a[0] != '-') {
            if (dir) return usage("more than one checkpoint directory");
            dir = a;
        } else if (!strcmp(a, "--preset")) { VAL(); preset = v; }
        else if (!strcmp(a, "--load-format")) { VAL(); load_format = v; }
        else if (!strcmp(a, "--layers")) { VAL(); rc = fr_arg_i64(a, v, 1, FR_MAX_LAYERS, &layers, &err); }
        else if (!strcmp(a, "--experts")) { VAL(); rc = fr_arg_i64(a, v, 1, FR_MAX_EXPERTS, &experts, &err); }
        else if (!strcmp(a, "--fp8-blocks")) fp8 = true;
        else if (!strcmp(a, "--no-mmap")) no_mmap = true;
        else if (!strcmp(a, "-p")) { VAL(); rc = fr_arg_i64(a, v, 1, 1 << 20, &n_prompt, &err); }
        else if (!strcmp(a, "-n")) { VAL(); rc = fr_arg_i64(a, v, 1, 1 << 20, &n_gen, &err); }
        else if (!strcmp(a, "-t")) { VAL(); rc = fr_arg_i64(a, v, 1, 1024, &threads, &err); }
        else if (!strcmp(a, "--json")) json = true;
        else if (!strcmp(a, "--device")) { VAL(); rc = fr_arg_device(v, &err); device = v; }
        else if (!strcmp(a, "--kv-cache-dtype")) { VAL(); rc = fr_kv_dtype_parse(v, &kv_dtype, &err); }
        else if (!strcmp(a, "--context")) { VAL(); rc = fr_arg_list_i64("--context", v, 1, INT32_MAX / 2, ctxs, 16, &n_ctx, &err); }
        else if (!strcmp(a, "--dense-contrast")) dense_contrast = true;
        else if (!strcmp(a, "--batch")) { VAL(); rc = fr_arg_list_i64("--batch", v, 1, 4096, batches, 16, &n_batches, &err); }
        else if (!strcmp(a, "--quantize-experts")) { VAL(); if (strcmp(v, "mxfp4")) return usage("--quantize-experts supports mxfp4 only"); q_experts = true; }
        else return usage("unknown option");
#undef VAL
        if (rc) return usage(err.msg);
    }
    if (!dir == !preset) return usage("give a checkpoint directory or --preset");
    if (preset && (!load_format || strcmp(load_format, "dummy") != 0))
        return usage("--preset needs --load-format dummy (random weights built in memory)");
    if (dense_contrast && !n_ctx) return usage("--dense-contrast goes with --context");
    if (n_ctx && n_batches) return usage("--context and --batch are separate benchmarks");

    fr_backend *be = NULL;
    fr_model *m = NULL;
    fr_session *s = NULL;
    int32_t *ids = NULL;
    double *step = NULL;
    char *json_text = NULL, *edited = NULL;
    fr_status rc = fr_backend_open(device, (int)threads, &be, &err);
    if (rc) goto out;
    double t_load = fr_now_s();
    if (dir) {
        if ((rc = fr_model_load_how(dir, no_mmap ? FR_ST_READ : FR_ST_MAP, &m, &err))) goto out;
    } else {
        /* Random weights: with --quantize-experts the generator writes the experts as MXFP4
         * itself (core/mx's quantizer on the same values), so no BF16 copy is ever held. */
        fr_synth_opts so = {.seed = 1, .layers = (int)layers, .experts = (int)experts, .fp8_blocks = fp8,
                            .mxfp4_experts = q_experts};
        fr_config cfg;
        fr_st_set *st = NULL;
        if ((rc = fr_synth_preset_json(preset, &json_text, &err))) goto out;
        if ((rc = fr_synth_edit_json(json_text, &so, &edited, &err))) goto out;
        if ((rc = fr_synth_memory(edited, &so, &cfg, &st, &err))) goto out;
        if ((rc = fr_model_from_set(&cfg, st, &m, &err))) goto out;
    }
    t_load = fr_now_s() - t_load;
    double t_quant = fr_now_s();
    if (q_experts && dir && (rc = fr_model_quantize_experts(m, FR_QFMT_MXFP4, &err))) goto out;
    t_quant = fr_now_s() - t_quant;
    const fr_config *c = &m->cfg;

    if (n_ctx) {
        char label[256];
        snprintf(label, sizeof label, "%s%s", dir ? dir : preset, c->dsa.enabled ? " (DSA)" : "");
        rc = bench_contexts(m, be, kv_dtype, ctxs, n_ctx, n_gen, json, label, &err);
        if (!rc && dense_contrast && c->dsa.enabled) {
            drop_indexer(m);
            snprintf(label, sizeof label, "%s, dense contrast (indexer off)", dir ? dir : preset);
            rc = bench_contexts(m, be, kv_dtype, ctxs, n_ctx, n_gen, json, label, &err);
        }
        goto out;
    }

    /* The ceiling: streaming reads of a buffer far larger than the caches (CPU), or
     * device-to-device copies (GPU: bytes read + written, what HBM sustains). */
    const bool on_gpu = strcmp(be->ops->name, "cpu") != 0;
    double bw = on_gpu ? fr_cuda_copy_bandwidth(be, (size_t)1 << 30) : fr_cpu_read_bandwidth((size_t)1 << 30, (int)threads);
    if (!(bw > 0.0)) {
        rc = fr_fail(&err, FR_ERR_DEVICE, "measuring the %s bandwidth failed", be->ops->name);
        goto out;
    }
    if (n_batches) {
        rc = fr_bench_batches(m, be, kv_dtype, batches, n_batches, n_prompt, n_gen, bw, json, dir ? dir : preset, &err);
        goto out;
    }

    const fr_session_opts so = {.max_ctx = n_prompt + n_gen, .kv_dtype = kv_dtype};
    if ((rc = fr_session_create_opts(m, be, &so, &s, &err))) goto out;
    ids = malloc((size_t)(n_prompt + n_gen) * sizeof *ids);
    step = malloc((size_t)n_gen * sizeof *step);
    if (!ids || !step) {
        rc = fr_fail(&err, FR_ERR_NOMEM, "out of memory");
        goto out;
    }
    uint64_t x = 88172645463325252ull;
    for (int64_t i = 0; i < n_prompt + n_gen; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        ids[i] = (int32_t)(x % (uint64_t)c->vocab_size);
    }
    /* greedy steps, as a server runs them: on a GPU only the picked id comes back */
    int32_t next;
    double t0 = fr_now_s();
    rc = fr_session_eval_greedy(s, ids, n_prompt, FR_ATTN_AUTO, &next, &err);
    double t_prefill = fr_now_s() - t0;
    uint64_t weight_bytes = 0;
    for (int64_t i = 0; i < n_gen && !rc; i++) {
        uint64_t before = be->weight_bytes_read;
        double a = fr_now_s();
        rc = fr_session_eval_greedy(s, ids + n_prompt + i, 1, FR_ATTN_AUTO, &next, &err);
        step[i] = fr_now_s() - a;
        weight_bytes += be->weight_bytes_read - before;
    }
    if (rc) goto out;
    qsort(step, (size_t)n_gen, sizeof *step, fr_cmp_double);
    const double t_step = step[n_gen / 2];

    /* Bytes one decode step reads: weights as counted by the backend (mean over steps),
     * split into attention / head / FFN (dense, shared and chosen experts), plus the KV
     * cache at the mean context length. */
    int64_t attn = 0;
    for (int l = 0; l < c->n_layers; l++) attn += attention_bytes(&m->layers[l]);
    const int64_t head = fr_weight_bytes(&m->lm_head);
    const int64_t embed_row = c->hidden_size * (int64_t)fr_dtype_size(m->embed.dtype);
    const double w_step = (double)weight_bytes / (double)n_gen;
    const double ffn = w_step - (double)attn - (double)head - (double)embed_row;
    const double ctx = (double)n_prompt + (double)n_gen / 2.0;
    const double kv = kv_read_bytes(m, kv_dtype, ctx);
    const int64_t kv_tok = fr_kv_bytes_per_token(m, kv_dtype);
    const double total = w_step + kv;
    const double gbs = total / t_step / 1e9;
    fr_model_stats st;
    fr_model_stats_compute(m, &st);
    const int xf = st.format_by_group[FR_QGROUP_EXPERTS];
    const char *experts_fmt = xf >= 0 ? fr_qformat_name((fr_qformat)xf) : "none";
    char device_label[320];
    if (on_gpu) snprintf(device_label, sizeof device_label, "%s", fr_cuda_backend_device_name());
    else snprintf(device_label, sizeof device_label, "%d threads, %s kernels", be->n_threads, fr_isa_name(fr_isa_active()));

    if (json) {
        printf("{\"model\":\"%s\",\"layers\":%d,\"threads\":%d,\"isa\":\"%s\",\"params_total\":%lld,\"params_active\":%lld,"
               "\"prompt_tokens\":%lld,\"decode_tokens\":%lld,\"prefill_tok_s\":%.3f,\"decode_tok_s\":%.4f,"
               "\"decode_step_median_s\":%.6f,\"bytes_per_token\":%.0f,\"bytes_attention\":%lld,\"bytes_ffn\":%.0f,"
               "\"bytes_head\":%lld,\"bytes_kv\":%.0f,\"achieved_gb_s\":%.3f,\"read_bandwidth_gb_s\":%.3f,"
               "\"bandwidth_fraction\":%.4f,\"experts_format\":\"%s\",\"quantize_experts_s\":%.3f,"
               "\"kv_cache_dtype\":\"%s\",\"kv_bytes_per_cached_token\":%lld}\n",
               dir ? dir : preset, c->n_layers, be->n_threads, fr_isa_name(fr_isa_active()), (long long)st.params_total,
               (long long)st.params_active, (long long)n_prompt, (long long)n_gen, (double)n_prompt / t_prefill,
               1.0 / t_step, t_step, total, (long long)attn, ffn, (long long)head, kv, gbs, bw / 1e9, gbs * 1e9 / bw,
               experts_fmt, q_experts && dir ? t_quant : 0.0, fr_kv_dtype_name(kv_dtype), (long long)kv_tok);
    } else {
        printf("frontier bench: %s, %d layers, %s, %s experts (load %.1f s", dir ? dir : preset, c->n_layers,
               device_label, experts_fmt, t_load);
        if (q_experts && dir) printf(", experts quantized at load in %.1f s", t_quant);
        if (q_experts && !dir) printf(", experts generated as MXFP4");
        printf(")\n");
        printf("| metric                          | value        |\n");
        printf("|---------------------------------|--------------|\n");
        printf("| prefill tok/s (p=%-6lld)        | %12.2f |\n", (long long)n_prompt, (double)n_prompt / t_prefill);
        printf("| decode tok/s (median of %-5lld)  | %12.3f |\n", (long long)n_gen, 1.0 / t_step);
        printf("| bytes/token: attention weights  | %12.4g |\n", (double)attn);
        printf("| bytes/token: FFN (chosen exp.)  | %12.4g |\n", ffn);
        printf("| bytes/token: head               | %12.4g |\n", (double)head);
        printf("| bytes/token: KV cache read      | %12.4g |\n", kv);
        printf("| bytes/token: total              | %12.4g |\n", total);
        printf("| achieved GB/s                   | %12.2f |\n", gbs);
        printf("| measured %s bandwidth GB/s    | %12.2f |\n", on_gpu ? "copy" : "read", bw / 1e9);
        printf("| fraction of bandwidth           | %11.1f%% |\n", 100.0 * gbs * 1e9 / bw);
        char what[64];
        snprintf(what, sizeof what, "KV bytes per cached token (%s)", kv_dtype == FR_KV_FP8 ? "fp8" : "f32");
        printf("| %-31s | %12lld |\n", what, (long long)kv_tok);
    }
out:
    free(ids);
    free(step);
    free(json_text);
    free(edited);
    fr_session_free(s);
    fr_model_free(m);
    fr_backend_destroy(be);
    return rc ? fr_cli_error("bench", &err) : 0;
}
