/* cmd_bench.c - `frontier bench`: prefill and decode speed against the memory-bandwidth
 * ceiling measured in the same run (like llama-bench, in-process).
 *
 * Decode at one stream is memory bound: each step must read the weights of the
 * attention, the shared and the *chosen* routed experts, the head, and the KV cache.
 * The bench counts those bytes as the backend actually touched them, divides by the
 * median step time, and compares with a streaming-read bandwidth it measures itself. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "args.h"
#include "backend/cpu/matmul.h"
#include "model/forward.h"
#include "model/quantize.h"
#include "model/synth.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int usage(const char *msg) {
    if (msg) return fprintf(stderr, "frontier bench: %s\n", msg), 2;
    fprintf(stderr, "usage: frontier bench (DIR | --preset P --load-format dummy [--layers N] [--experts E] [--fp8-blocks])\n"
                    "                      [-p PROMPT_TOKENS] [-n DECODE_TOKENS] [-t THREADS] [--quantize-experts mxfp4] [--json]\n");
    return 2;
}

/* Weight bytes of one layer's attention (what every decode step reads in full). */
static int64_t attention_bytes(const fr_layer *L) {
    int64_t b = fr_weight_bytes(&L->kv_a) + fr_weight_bytes(&L->kv_b) + fr_weight_bytes(&L->o);
    if (L->has_q_lora) b += fr_weight_bytes(&L->q_a) + fr_weight_bytes(&L->q_b);
    else b += fr_weight_bytes(&L->q);
    return b;
}

int fr_cmd_bench(int argc, char **argv) {
    const char *dir = NULL, *preset = NULL, *load_format = NULL;
    int64_t n_prompt = 512, n_gen = 128, threads = 0, layers = 0, experts = 0;
    bool json = false, fp8 = false, q_experts = false;
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
        else if (!strcmp(a, "-p")) { VAL(); rc = fr_arg_i64(a, v, 1, 1 << 20, &n_prompt, &err); }
        else if (!strcmp(a, "-n")) { VAL(); rc = fr_arg_i64(a, v, 1, 1 << 20, &n_gen, &err); }
        else if (!strcmp(a, "-t")) { VAL(); rc = fr_arg_i64(a, v, 1, 1024, &threads, &err); }
        else if (!strcmp(a, "--json")) json = true;
        else if (!strcmp(a, "--quantize-experts")) { VAL(); if (strcmp(v, "mxfp4")) return usage("--quantize-experts supports mxfp4 only"); q_experts = true; }
        else return usage("unknown option");
#undef VAL
        if (rc) return usage(err.msg);
    }
    if (!dir == !preset) return usage("give a checkpoint directory or --preset");
    if (preset && (!load_format || strcmp(load_format, "dummy") != 0))
        return usage("--preset needs --load-format dummy (random weights built in memory)");

    fr_backend *be = NULL;
    fr_model *m = NULL;
    fr_session *s = NULL;
    int32_t *ids = NULL;
    double *step = NULL;
    char *json_text = NULL, *edited = NULL;
    fr_status rc = fr_cpu_backend_create((int)threads, &be, &err);
    if (rc) goto out;
    double t_load = now_s();
    if (dir) {
        if ((rc = fr_model_load(dir, &m, &err))) goto out;
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
    t_load = now_s() - t_load;
    double t_quant = now_s();
    if (q_experts && dir && (rc = fr_model_quantize_experts(m, FR_QFMT_MXFP4, &err))) goto out;
    t_quant = now_s() - t_quant;
    const fr_config *c = &m->cfg;

    /* The ceiling: streaming reads of a buffer far larger than the caches. */
    double bw = fr_cpu_read_bandwidth((size_t)1 << 30, (int)threads);

    if ((rc = fr_session_create(m, be, n_prompt + n_gen, &s, &err))) goto out;
    ids = malloc((size_t)(n_prompt + n_gen) * sizeof *ids);
    step = malloc((size_t)n_gen * sizeof *step);
    float *logits = malloc((size_t)c->vocab_size * sizeof *logits);
    if (!ids || !step || !logits) {
        free(logits);
        rc = fr_fail(&err, FR_ERR_NOMEM, "out of memory");
        goto out;
    }
    uint64_t x = 88172645463325252ull;
    for (int64_t i = 0; i < n_prompt + n_gen; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        ids[i] = (int32_t)(x % (uint64_t)c->vocab_size);
    }
    double t0 = now_s();
    rc = fr_session_eval(s, ids, n_prompt, FR_ATTN_AUTO, logits, false, &err);
    double t_prefill = now_s() - t0;
    uint64_t weight_bytes = 0;
    for (int64_t i = 0; i < n_gen && !rc; i++) {
        uint64_t before = be->weight_bytes_read;
        double a = now_s();
        rc = fr_session_eval(s, ids + n_prompt + i, 1, FR_ATTN_AUTO, logits, false, &err);
        step[i] = now_s() - a;
        weight_bytes += be->weight_bytes_read - before;
    }
    free(logits);
    if (rc) goto out;
    qsort(step, (size_t)n_gen, sizeof *step, cmp_double);
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
    const double kv = ctx * (double)c->n_layers * (c->kv_lora_rank + c->qk_rope_head_dim) * sizeof(float);
    const double total = w_step + kv;
    const double gbs = total / t_step / 1e9;
    fr_model_stats st;
    fr_model_stats_compute(m, &st);
    const int xf = st.format_by_group[FR_QGROUP_EXPERTS];
    const char *experts_fmt = xf >= 0 ? fr_qformat_name((fr_qformat)xf) : "none";

    if (json) {
        printf("{\"model\":\"%s\",\"layers\":%d,\"threads\":%d,\"isa\":\"%s\",\"params_total\":%lld,\"params_active\":%lld,"
               "\"prompt_tokens\":%lld,\"decode_tokens\":%lld,\"prefill_tok_s\":%.3f,\"decode_tok_s\":%.4f,"
               "\"decode_step_median_s\":%.6f,\"bytes_per_token\":%.0f,\"bytes_attention\":%lld,\"bytes_ffn\":%.0f,"
               "\"bytes_head\":%lld,\"bytes_kv\":%.0f,\"achieved_gb_s\":%.3f,\"read_bandwidth_gb_s\":%.3f,"
               "\"bandwidth_fraction\":%.4f,\"experts_format\":\"%s\",\"quantize_experts_s\":%.3f}\n",
               dir ? dir : preset, c->n_layers, be->n_threads, fr_isa_name(fr_isa_active()), (long long)st.params_total,
               (long long)st.params_active, (long long)n_prompt, (long long)n_gen, (double)n_prompt / t_prefill,
               1.0 / t_step, t_step, total, (long long)attn, ffn, (long long)head, kv, gbs, bw / 1e9, gbs * 1e9 / bw,
               experts_fmt, q_experts && dir ? t_quant : 0.0);
    } else {
        printf("frontier bench: %s, %d layers, %d threads, %s kernels, %s experts (load %.1f s", dir ? dir : preset,
               c->n_layers, be->n_threads, fr_isa_name(fr_isa_active()), experts_fmt, t_load);
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
        printf("| bytes/token: KV cache           | %12.4g |\n", kv);
        printf("| bytes/token: total              | %12.4g |\n", total);
        printf("| achieved GB/s                   | %12.2f |\n", gbs);
        printf("| measured read bandwidth GB/s    | %12.2f |\n", bw / 1e9);
        printf("| fraction of bandwidth           | %11.1f%% |\n", 100.0 * gbs * 1e9 / bw);
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
