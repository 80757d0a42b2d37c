/* config.h - config.json (+ generation_config.json) -> the model configuration.
 *
 * Accepts DeepseekV3ForCausalLM (model_type deepseek_v3 or kimi_k2),
 * KimiK25ForConditionalGeneration (text model in "text_config", weights under the
 * "language_model." prefix), and the two DSA (sparse attention) families:
 * DeepseekV32ForCausalLM (deepseek_v32) and GlmMoeDsaForCausalLM (glm_moe_dsa, GLM-5).
 * Unknown architectures and missing required fields are errors, never guesses;
 * optional fields take the defaults of shared/docs/ARCH.md. */
#ifndef FR_CONFIG_H
#define FR_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "../core/status.h"

#define FR_MAX_EOS 8
#define FR_MAX_LAYERS 1024
#define FR_MAX_EXPERTS 4096
#define FR_MAX_NEXTN 16 /* num_nextn_predict_layers (MTP layers) */

/* Stored formats of a module group's linear weights. BF16 stands for "not quantized"
 * (F32, F16 or BF16 tensors). */
typedef enum { FR_QFMT_BF16 = 0, FR_QFMT_FP8, FR_QFMT_MXFP4, FR_QFMT_INT4, FR_QFMT_COUNT } fr_qformat;

/* Module groups: the linear weights a quantization_config speaks about. Embeddings,
 * lm_head, norms and the router belong to none and are never quantized. MTP layers
 * follow the groups of the main layers. */
typedef enum {
    FR_QGROUP_ATTENTION, /* q_a/q_b (or q), kv_a_proj_with_mqa, kv_b, o */
    FR_QGROUP_DENSE,     /* mlp.{gate,up,down}_proj of the dense layers */
    FR_QGROUP_SHARED,    /* mlp.shared_experts.* */
    FR_QGROUP_EXPERTS,   /* mlp.experts.E.* (routed) */
    FR_QGROUP_COUNT
} fr_qgroup;

/* "bf16", "fp8", "mxfp4", "int4" */
const char *fr_qformat_name(fr_qformat f);
/* 0 and *out, or -1 for an unknown name. */
int fr_qformat_parse(const char *s, fr_qformat *out);
/* "attention", "dense", "shared_experts", "experts" (the format_by_group keys) */
const char *fr_qgroup_name(fr_qgroup g);

typedef struct {
    char architecture[64];  /* "DeepseekV3ForCausalLM", ... */
    char model_type[32];    /* of the text model: "deepseek_v3", "kimi_k2", "deepseek_v32", "glm_moe_dsa" */
    char weight_prefix[32]; /* "" or "language_model." (K2.5) */

    int64_t vocab_size;
    int64_t hidden_size;          /* D */
    int64_t intermediate_size;    /* dense MLP width */
    int64_t moe_intermediate_size;/* one expert's width */
    int n_layers;                 /* num_hidden_layers (MTP layers come after) */
    int n_heads;                  /* H */

    /* MLA */
    int q_lora_rank;              /* 0 when null: q_proj is applied directly */
    int kv_lora_rank;
    int qk_nope_head_dim, qk_rope_head_dim, v_head_dim;

    /* MoE */
    int n_routed_experts;         /* 0: every layer is dense */
    int n_shared_experts;
    int n_experts_per_tok;
    int n_group, topk_group;
    int first_k_dense_replace, moe_layer_freq;
    bool norm_topk_prob;
    float routed_scaling_factor;

    float rms_norm_eps;
    double rope_theta;
    struct {
        bool yarn;                /* rope_scaling / rope_parameters of type yarn */
        double factor;
        double original_max_position_embeddings;
        double beta_fast, beta_slow, mscale, mscale_all_dim;
    } rope_scaling;
    int64_t max_position_embeddings;
    bool tie_word_embeddings;
    int num_nextn_predict_layers;

    /* quantization_config: the stored format of each module group's linear weights.
     * Every tensor's stored form is checked against it when the model binds (model.c). */
    struct {
        char method[24]; /* quant_method: "" (none), "fp8", "compressed-tensors", "frontier" */
        fr_qformat group[FR_QGROUP_COUNT];
        bool fp8;                   /* some group is FP8: block_rows/cols are valid */
        bool fp8_lenient;           /* quant_method fp8: an FP8 group may also hold BF16 tensors */
        int block_rows, block_cols; /* weight_block_size */
        bool ue8m0;               /* scale_fmt ue8m0 (power-of-two scales) */
        int group_size;           /* MXFP4 / INT4 elements per scale (32) when any group is 4-bit */
    } quant;

    /* DSA, DeepSeek Sparse Attention (ARCH 5): a lightning indexer per layer picks the
     * index_topk cached tokens each query attends to. Only deepseek_v32 / glm_moe_dsa. */
    struct {
        bool enabled;
        int n_heads;              /* index_n_heads, H_I */
        int head_dim;             /* index_head_dim, D_I; RoPE on its first qk_rope_head_dim dims */
        int topk;                 /* index_topk, K_I */
        bool rope_interleaved;    /* indexer RoPE pairs: interleaved (GLM-5) or half-split (V3.2) */
        /* Per layer, MTP layers included: 1 when the layer has no indexer and reuses the
         * selection of the nearest earlier full layer (GLM-5.1+ IndexShare, `indexer_types`
         * "shared"). Layer 0 and MTP layers are always full. */
        uint8_t shared[FR_MAX_LAYERS + FR_MAX_NEXTN];
    } dsa;

    int32_t bos_token_id;         /* -1 when absent */
    int n_eos;
    int32_t eos_token_ids[FR_MAX_EOS]; /* from generation_config.json, else config.json */
} fr_config;

/* Parse dir/config.json and, when present, dir/generation_config.json. */
fr_status fr_config_load(const char *dir, fr_config *cfg, fr_error *err);

/* Parse config JSON text (name is used in messages). generation_config may be NULL. */
fr_status fr_config_parse(const char *json, const char *generation_json, const char *name,
                          fr_config *cfg, fr_error *err);

/* Is layer l a MoE layer? (layer >= first_k_dense_replace and l % moe_layer_freq == 0) */
bool fr_config_layer_is_moe(const fr_config *cfg, int l);

/* Does layer l (MTP layers included) run its own DSA indexer? False for non-DSA models. */
static inline bool fr_config_layer_has_indexer(const fr_config *c, int l) {
    return c->dsa.enabled && !c->dsa.shared[l];
}

/* q/k head width (qk_nope + qk_rope). */
static inline int fr_config_qk_head_dim(const fr_config *c) {
    return c->qk_nope_head_dim + c->qk_rope_head_dim;
}

/* Attention softmax scale: 1/sqrt(qk_head_dim), times mscale^2 under YaRN (ARCH 4.7). */
double fr_config_softmax_scale(const fr_config *cfg);

/* YaRN attention factor applied to cos/sin: mscale(f, mscale) / mscale(f, mscale_all_dim)
 * with mscale(f, m) = 0.1 m ln f + 1 (1 when f <= 1), as transformers and vLLM compute it.
 * 1 without YaRN and for every released config (mscale == mscale_all_dim). */
double fr_config_rope_mscale(const fr_config *cfg);

/* Rotary inverse frequencies for the d = qk_rope_head_dim rope dims, with YaRN
 * correction (ARCH 4.8): out[i] for i in [0, d/2). */
void fr_config_rope_freqs(const fr_config *cfg, double *out);

#endif
