/* model.h - a loaded DeepSeek-V3-family model: configuration plus weight views.
 *
 * Loading binds every tensor the forward pass needs to an fr_weight view into the
 * safetensors mmap, checking each tensor's dtype and shape against what the
 * config implies (a config that contradicts its tensors is an error naming the
 * tensor, expected and found). Nothing is copied or dequantized. The model owns
 * its safetensors set; weights live as long as the model. Linear weights may be
 * stored 4-bit (MXFP4 blocks, compressed-tensors INT4): see model.c. The one
 * exception to "nothing is copied" is fr_model_quantize_experts (quantize.h), which
 * replaces the routed experts' views with MXFP4 copies the layer owns.
 *
 * MTP layers (index >= num_hidden_layers) are bound and validated when the
 * checkpoint has them (m->mtp), so a checkpoint with a malformed MTP layer fails at
 * load; the main forward pass does not use them (speculative decoding will). A
 * checkpoint without its MTP layers (some converters drop them) loads with n_mtp 0.
 *
 * DSA models (DeepSeek-V3.2, GLM-5) also bind each full layer's indexer
 * (self_attn.indexer.*, ARCH 3.2 / 3.4); "shared" layers have none and point at the
 * layer whose selection they reuse. */
#ifndef FR_MODEL_H
#define FR_MODEL_H

#include <stdbool.h>

#include "../backend/backend.h"
#include "../io/config.h"
#include "../io/safetensors.h"

typedef struct {
    fr_weight input_norm, post_norm;   /* [D] */
    /* attention (MLA) */
    bool has_q_lora;
    fr_weight q_a, q_a_norm, q_b;      /* [r_q, D], [r_q], [H*(dn+dr), r_q] */
    fr_weight q;                       /* [H*(dn+dr), D] when q_lora_rank is null */
    fr_weight kv_a, kv_a_norm, kv_b;   /* [r_kv+dr, D], [r_kv], [H*(dn+dv), r_kv] */
    fr_weight o;                       /* [D, H*dv] */
    /* DSA indexer (ARCH 5): H_I heads of D_I; has_indexer false on non-DSA models and
     * on shared layers, which use the selection of layer index_source instead. */
    bool has_indexer;
    int index_source;                  /* layer whose top-k selection this layer attends with */
    fr_weight idx_wq_b;                /* [H_I*D_I, r_q]   indexer.wq_b (on the q latent) */
    fr_weight idx_wk;                  /* [D_I, D]         indexer.wk */
    fr_weight idx_k_norm, idx_k_bias;  /* [D_I], [D_I]     indexer.k_norm LayerNorm weight, bias */
    fr_weight idx_weights;             /* [H_I, D]         indexer.weights_proj (never quantized) */
    /* feed-forward: dense MLP or MoE */
    bool is_moe;
    fr_weight gate, up, down;          /* dense: [I, D], [I, D], [D, I]; MoE: shared experts */
    bool has_shared;
    fr_weight router, router_bias;     /* [E, D], [E] */
    fr_weight *exp_gate, *exp_up, *exp_down; /* [E] each; owned array of views */
    fr_mlp *experts;                   /* [E] views of the above, as the backend takes them */
    void *expert_mem;                  /* owned: experts converted at load time, else NULL */
} fr_layer;

/* One MTP (next-n prediction) layer, ARCH 3.1 / 6: the extras plus a full decoder block
 * (with its own indexer on DSA models). */
typedef struct {
    fr_weight enorm, hnorm;            /* [D], [D] */
    fr_weight eh_proj;                 /* [D, 2D]: input concat(enorm(embed), hnorm(hidden)) */
    fr_weight head_norm;               /* shared_head.norm [D] */
    fr_weight head;                    /* shared_head.head [V, D], else a copy of the main lm_head view */
    fr_weight embed;                   /* embed_tokens [V, D], else a copy of the main embedding view */
    fr_layer block;
} fr_mtp_layer;

typedef struct {
    fr_config cfg;
    fr_st_set *st;                     /* owned: the mapped checkpoint */
    fr_weight embed, final_norm, lm_head; /* [V, D], [D], [V, D] */
    fr_layer *layers;                  /* [n_layers] */
    int n_mtp;                         /* MTP layers bound: num_nextn_predict_layers, or 0 when absent */
    fr_mtp_layer *mtp;                 /* [n_mtp] */
    double *rope_freqs;                /* [qk_rope_head_dim / 2] incl. YaRN */
    float softmax_scale;
    float rope_mscale;                 /* YaRN attention factor on cos/sin (1 for released configs) */
} fr_model;

/* Load the checkpoint directory dir (config.json + safetensors). */
fr_status fr_model_load(const char *dir, fr_model **out, fr_error *err);
/* As fr_model_load, with the weight files mapped (FR_ST_MAP) or read into memory with
 * 2 MiB pages (FR_ST_READ, `--no-mmap`: faster CPU decode, see io/safetensors.h). */
fr_status fr_model_load_how(const char *dir, fr_st_load how, fr_model **out, fr_error *err);

/* Bind a model over an already open set (takes ownership of st, even on failure). */
fr_status fr_model_from_set(const fr_config *cfg, fr_st_set *st, fr_model **out, fr_error *err);

void fr_model_free(fr_model *m);

/* Hand every weight the forward pass reads to the backend's register_weight op (a device
 * backend uploads them; a no-op where the op is NULL or the bytes are resident). */
fr_status fr_model_register_weights(const fr_model *m, fr_backend *be, fr_error *err);

/* Bind one linear weight `name` ("....weight") of module group `group` as an [rows, cols]
 * view, in whichever form st stores it, checked against cfg's quantization_config
 * (what fr_model_from_set does for every layer; `frontier quantize` uses it alone). */
fr_status fr_model_bind_linear(const fr_config *cfg, const fr_st_set *st, const char *name, int64_t rows,
                               int64_t cols, fr_qgroup group, fr_weight *w, fr_error *err);

/* Parameter and byte accounting for `frontier info` and benchmarks. */
typedef struct {
    int64_t params_total;        /* every weight element of the main model (no scales, no MTP) */
    int64_t params_mtp;          /* elements of MTP layers */
    int64_t params_active;       /* per token: all but unchosen routed experts */
    int64_t bytes_by_dtype[FR_DTYPE_COUNT]; /* stored bytes of every tensor in the checkpoint */
    /* Per module group of the main model (as bound, so after any load-time conversion):
     * the format its weights are in and the bytes they (with their scales) take.
     * format -1 when the group has no weights in this model; "other" is embeddings,
     * head, norms and router. */
    int format_by_group[FR_QGROUP_COUNT];
    int64_t bytes_by_group[FR_QGROUP_COUNT];
    int64_t bytes_other;
    int64_t kv_bytes_per_token_bf16; /* latent cache (+ DSA indexer keys) per token, all layers, BF16 */
    int64_t kv_bytes_per_token;      /* as this build's CPU cache holds it (float32) */
} fr_model_stats;

void fr_model_stats_compute(const fr_model *m, fr_model_stats *s);

#endif
