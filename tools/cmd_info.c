/* cmd_info.c - `frontier info DIR`: what a checkpoint is and what it costs. */
#include <stdio.h>
#include <string.h>

#include "args.h"
#include "model/kv_cache.h"
#include "model/model.h"

static void human(char *buf, size_t n, double v, const char *unit) {
    const char *p[] = {"", "K", "M", "G", "T"};
    int i = 0;
    while (v >= 1000.0 && i < 4) v /= 1000.0, i++;
    snprintf(buf, n, "%.2f %s%s", v, p[i], unit);
}

int fr_cmd_info(int argc, char **argv) {
    if (argc != 2 || argv[1][0] == '-') {
        fprintf(stderr, "usage: frontier info DIR\n");
        return 2;
    }
    fr_error err = {0};
    fr_model *m = NULL;
    if (fr_model_load(argv[1], &m, &err)) return fr_cli_error("info", &err);
    const fr_config *c = &m->cfg;
    fr_model_stats s;
    fr_model_stats_compute(m, &s);
    char a[32], b[32], d[32];
    printf("architecture     %s (model_type %s%s%s)\n", c->architecture, c->model_type,
           c->weight_prefix[0] ? ", weights under " : "", c->weight_prefix);
    printf("layers           %d (%d dense first, MoE every %d after), %d MTP\n", c->n_layers,
           c->n_routed_experts ? c->first_k_dense_replace : c->n_layers, c->moe_layer_freq, c->num_nextn_predict_layers);
    printf("hidden           %lld, vocab %lld, heads %d\n", (long long)c->hidden_size, (long long)c->vocab_size, c->n_heads);
    printf("MLA              q_lora %d, kv_lora %d, qk nope/rope %d/%d, v %d, softmax scale %.6f%s\n", c->q_lora_rank,
           c->kv_lora_rank, c->qk_nope_head_dim, c->qk_rope_head_dim, c->v_head_dim, m->softmax_scale,
           c->rope_scaling.yarn ? " (YaRN)" : "");
    if (c->dsa.enabled) {
        int full = 0;
        for (int l = 0; l < c->n_layers; l++) full += fr_config_layer_has_indexer(c, l);
        printf("DSA              indexer %d heads x %d (%s RoPE), top %d keys; %d of %d layers run their own indexer\n",
               c->dsa.n_heads, c->dsa.head_dim, c->dsa.rope_interleaved ? "interleaved" : "half-split", c->dsa.topk,
               full, c->n_layers);
    }
    if (c->n_routed_experts)
        printf("MoE              %d routed (top %d, %d groups keep %d), %d shared, width %lld, scale %.3f\n",
               c->n_routed_experts, c->n_experts_per_tok, c->n_group, c->topk_group, c->n_shared_experts,
               (long long)c->moe_intermediate_size, c->routed_scaling_factor);
    if (c->quant.method[0]) {
        printf("quantization     %s", c->quant.method);
        if (c->quant.fp8)
            printf(", fp8 e4m3 %dx%d blocks%s", c->quant.block_rows, c->quant.block_cols,
                   c->quant.ue8m0 ? ", ue8m0 scales" : "");
        if (c->quant.group_size) printf(", 4-bit groups of %d", c->quant.group_size);
        printf("\n");
    }
    human(a, sizeof a, (double)s.params_total, "");
    human(b, sizeof b, (double)s.params_active, "");
    human(d, sizeof d, (double)s.params_mtp, "");
    printf("parameters       %s total, %s active per token (%lld / %lld), MTP %s\n", a, b, (long long)s.params_total,
           (long long)s.params_active, d);
    printf("bytes by dtype  ");
    for (int t = 0; t < FR_DTYPE_COUNT; t++) {
        if (!s.bytes_by_dtype[t]) continue;
        human(a, sizeof a, (double)s.bytes_by_dtype[t], "B");
        printf(" %s %s;", fr_dtype_name((fr_dtype)t), a);
    }
    /* Each module group as bound: the format its weights are stored in and their bytes
     * (with scales); MTP layers are not bound and not counted here. */
    printf("\nmodule groups   ");
    const char *sep = "";
    for (int g = 0; g < FR_QGROUP_COUNT; g++) {
        if (s.format_by_group[g] < 0) continue;
        human(a, sizeof a, (double)s.bytes_by_group[g], "B");
        printf("%s %s %s %s", sep, fr_qgroup_name((fr_qgroup)g),
               fr_qformat_name((fr_qformat)s.format_by_group[g]), a);
        sep = ";";
    }
    human(a, sizeof a, (double)s.bytes_other, "B");
    printf("%s other (embeddings, head, norms, router) %s", sep, a);
    printf("\nKV cache         %lld bytes/token in BF16 (CPU cache: %lld as float32, %lld with --kv-cache-dtype fp8)\n",
           (long long)s.kv_bytes_per_token_bf16, (long long)fr_kv_bytes_per_token(m, FR_KV_F32),
           (long long)fr_kv_bytes_per_token(m, FR_KV_FP8));
    printf("stop ids        ");
    for (int i = 0; i < c->n_eos; i++) printf(" %d", c->eos_token_ids[i]);
    printf("\n");
    fr_model_free(m);
    return 0;
}
