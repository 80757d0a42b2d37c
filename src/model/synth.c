/* synth.c - random-weight checkpoints in the exact released layout (see synth.h).
 *
 * Three parts. Presets are the config.json texts of the released models (plus
 * deliberately odd-sized "tiny" ones, of DeepSeek-V3 and of the two DSA families); fr_synth_edit_json shrinks them (layers,
 * experts) or adds block-FP8 quantization with cJSON. build_plan() turns a parsed
 * config into the tensor list - names, shapes and dtypes exactly as the released
 * safetensors have them (ARCH.md 3.1/3.3), plus how to generate each tensor - and
 * is shared by fr_synth_write (files) and fr_synth_memory (an in-memory set), so
 * the two can never disagree. Tensor bytes are produced on demand by synth_fill(),
 * one tensor at a time, so memory stays bounded by the largest single tensor.
 * Each linear weight is stored in the format its module group has in the config's
 * quantization_config (fr_config.quant): BF16, FP8 blocks, MXFP4 or compressed-tensors
 * INT4, the 4-bit forms made by core/mx's quantizers from the same f32 values.
 *
 * Every element is a pure function of (seed, tensor name, row, column): a
 * counter-based generator (splitmix64 per row, two 32-bit hashes per column)
 * gives four 16-bit uniforms whose sum is a bounded Gaussian (Irwin-Hall, |z| <
 * 3.47). Hence values do not depend on the order tensors are written, on sharding,
 * or on the number of threads, and the fill loops parallelise and vectorise. The same
 * underlying f32 values back the BF16 and the FP8 form of a weight, so a BF16 and
 * an FP8 checkpoint of one seed differ only by quantization. Seeds use the name
 * without the K2.5 "language_model." prefix, so the wrapper holds the same values
 * as the equivalent plain DeepseekV3 checkpoint. */
#include "synth.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "../core/mx.h"
#include "../io/json_util.h"

/* The element loops below are plain C that the compiler vectorises; on x86-64
 * they are also compiled for AVX2 and AVX-512 and picked at run time (GCC/clang
 * target_clones), which doubles generation speed over the baseline SSE2 build.
 * Their helpers are forced inline so the clones really use the wider ISA. */
#if defined(__x86_64__) && defined(__GNUC__)
#define SYNTH_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#define SYNTH_INLINE inline __attribute__((always_inline))
#else
#define SYNTH_CLONES
#define SYNTH_INLINE inline
#endif

/* ---- presets ---- */

/* "tiny": a few MB, every width different and not a multiple of 8 or 128 where
 * it can be, so shape mix-ups and block-edge bugs show up; YaRN and an MTP layer
 * included so those paths are exercised too. */
static const char preset_tiny[] =
    "{\n"
    "  \"architectures\": [\"DeepseekV3ForCausalLM\"],\n"
    "  \"model_type\": \"deepseek_v3\",\n"
    "  \"vocab_size\": 1000,\n"
    "  \"hidden_size\": 160,\n"
    "  \"intermediate_size\": 200,\n"
    "  \"moe_intermediate_size\": 48,\n"
    "  \"num_hidden_layers\": 3,\n"
    "  \"first_k_dense_replace\": 1,\n"
    "  \"moe_layer_freq\": 1,\n"
    "  \"num_attention_heads\": 4,\n"
    "  \"num_key_value_heads\": 4,\n"
    "  \"q_lora_rank\": 48,\n"
    "  \"kv_lora_rank\": 24,\n"
    "  \"qk_nope_head_dim\": 16,\n"
    "  \"qk_rope_head_dim\": 8,\n"
    "  \"v_head_dim\": 16,\n"
    "  \"n_routed_experts\": 16,\n"
    "  \"n_shared_experts\": 1,\n"
    "  \"num_experts_per_tok\": 4,\n"
    "  \"n_group\": 4,\n"
    "  \"topk_group\": 2,\n"
    "  \"topk_method\": \"noaux_tc\",\n"
    "  \"scoring_func\": \"sigmoid\",\n"
    "  \"routed_scaling_factor\": 2.5,\n"
    "  \"norm_topk_prob\": true,\n"
    "  \"hidden_act\": \"silu\",\n"
    "  \"attention_bias\": false,\n"
    "  \"attention_dropout\": 0.0,\n"
    "  \"rms_norm_eps\": 1e-06,\n"
    "  \"rope_theta\": 10000.0,\n"
    "  \"rope_scaling\": {\"type\": \"yarn\", \"factor\": 4.0,"
    " \"original_max_position_embeddings\": 64, \"beta_fast\": 32, \"beta_slow\": 1,"
    " \"mscale\": 1.0, \"mscale_all_dim\": 1.0},\n"
    "  \"max_position_embeddings\": 256,\n"
    "  \"num_nextn_predict_layers\": 1,\n"
    "  \"bos_token_id\": 0,\n"
    "  \"eos_token_id\": 1,\n"
    "  \"tie_word_embeddings\": false,\n"
    "  \"initializer_range\": 0.02,\n"
    "  \"use_cache\": true,\n"
    "  \"torch_dtype\": \"bfloat16\"\n"
    "}\n";

/* moonshotai/Moonlight-16B-A3B: no q LoRA (q_proj), 2 shared experts, no MTP. */
static const char preset_moonlight[] =
    "{\n"
    "  \"architectures\": [\"DeepseekV3ForCausalLM\"],\n"
    "  \"auto_map\": {\n"
    "    \"AutoConfig\": \"configuration_deepseek.DeepseekV3Config\",\n"
    "    \"AutoModel\": \"modeling_deepseek.DeepseekV3Model\",\n"
    "    \"AutoModelForCausalLM\": \"modeling_deepseek.DeepseekV3ForCausalLM\"\n"
    "  },\n"
    "  \"model_type\": \"deepseek_v3\",\n"
    "  \"aux_loss_alpha\": 0.001,\n"
    "  \"bos_token_id\": 163584,\n"
    "  \"eos_token_id\": 163585,\n"
    "  \"ep_size\": 1,\n"
    "  \"first_k_dense_replace\": 1,\n"
    "  \"hidden_act\": \"silu\",\n"
    "  \"hidden_size\": 2048,\n"
    "  \"initializer_range\": 0.02,\n"
    "  \"intermediate_size\": 11264,\n"
    "  \"kv_lora_rank\": 512,\n"
    "  \"max_position_embeddings\": 8192,\n"
    "  \"moe_intermediate_size\": 1408,\n"
    "  \"moe_layer_freq\": 1,\n"
    "  \"n_group\": 1,\n"
    "  \"n_routed_experts\": 64,\n"
    "  \"n_shared_experts\": 2,\n"
    "  \"norm_topk_prob\": true,\n"
    "  \"num_attention_heads\": 16,\n"
    "  \"num_experts_per_tok\": 6,\n"
    "  \"num_hidden_layers\": 27,\n"
    "  \"num_key_value_heads\": 16,\n"
    "  \"num_nextn_predict_layers\": 0,\n"
    "  \"pretraining_tp\": 1,\n"
    "  \"q_lora_rank\": null,\n"
    "  \"qk_nope_head_dim\": 128,\n"
    "  \"qk_rope_head_dim\": 64,\n"
    "  \"rms_norm_eps\": 1e-05,\n"
    "  \"rope_scaling\": null,\n"
    "  \"rope_theta\": 50000.0,\n"
    "  \"routed_scaling_factor\": 2.446,\n"
    "  \"scoring_func\": \"sigmoid\",\n"
    "  \"seq_aux\": true,\n"
    "  \"tie_word_embeddings\": false,\n"
    "  \"topk_group\": 1,\n"
    "  \"topk_method\": \"noaux_tc\",\n"
    "  \"torch_dtype\": \"bfloat16\",\n"
    "  \"use_cache\": true,\n"
    "  \"v_head_dim\": 128,\n"
    "  \"vocab_size\": 163840\n"
    "}\n";

/* deepseek-ai/DeepSeek-V3 as released (ARCH.md 2.1), FP8 128x128 blocks. */
static const char preset_deepseek_v3[] =
    "{\n"
    "  \"architectures\": [\"DeepseekV3ForCausalLM\"],\n"
    "  \"attention_bias\": false,\n"
    "  \"attention_dropout\": 0.0,\n"
    "  \"auto_map\": {\n"
    "    \"AutoConfig\": \"configuration_deepseek.DeepseekV3Config\",\n"
    "    \"AutoModel\": \"modeling_deepseek.DeepseekV3Model\",\n"
    "    \"AutoModelForCausalLM\": \"modeling_deepseek.DeepseekV3ForCausalLM\"\n"
    "  },\n"
    "  \"aux_loss_alpha\": 0.001,\n"
    "  \"bos_token_id\": 0,\n"
    "  \"eos_token_id\": 1,\n"
    "  \"ep_size\": 1,\n"
    "  \"first_k_dense_replace\": 3,\n"
    "  \"hidden_act\": \"silu\",\n"
    "  \"hidden_size\": 7168,\n"
    "  \"initializer_range\": 0.02,\n"
    "  \"intermediate_size\": 18432,\n"
    "  \"kv_lora_rank\": 512,\n"
    "  \"max_position_embeddings\": 163840,\n"
    "  \"model_type\": \"deepseek_v3\",\n"
    "  \"moe_intermediate_size\": 2048,\n"
    "  \"moe_layer_freq\": 1,\n"
    "  \"n_group\": 8,\n"
    "  \"n_routed_experts\": 256,\n"
    "  \"n_shared_experts\": 1,\n"
    "  \"norm_topk_prob\": true,\n"
    "  \"num_attention_heads\": 128,\n"
    "  \"num_experts_per_tok\": 8,\n"
    "  \"num_hidden_layers\": 61,\n"
    "  \"num_key_value_heads\": 128,\n"
    "  \"num_nextn_predict_layers\": 1,\n"
    "  \"pretraining_tp\": 1,\n"
    "  \"q_lora_rank\": 1536,\n"
    "  \"qk_nope_head_dim\": 128,\n"
    "  \"qk_rope_head_dim\": 64,\n"
    "  \"quantization_config\": {\n"
    "    \"activation_scheme\": \"dynamic\",\n"
    "    \"fmt\": \"e4m3\",\n"
    "    \"quant_method\": \"fp8\",\n"
    "    \"weight_block_size\": [128, 128]\n"
    "  },\n"
    "  \"rms_norm_eps\": 1e-06,\n"
    "  \"rope_scaling\": {\n"
    "    \"beta_fast\": 32,\n"
    "    \"beta_slow\": 1,\n"
    "    \"factor\": 40,\n"
    "    \"mscale\": 1.0,\n"
    "    \"mscale_all_dim\": 1.0,\n"
    "    \"original_max_position_embeddings\": 4096,\n"
    "    \"type\": \"yarn\"\n"
    "  },\n"
    "  \"rope_theta\": 10000,\n"
    "  \"routed_scaling_factor\": 2.5,\n"
    "  \"scoring_func\": \"sigmoid\",\n"
    "  \"seq_aux\": true,\n"
    "  \"tie_word_embeddings\": false,\n"
    "  \"topk_group\": 4,\n"
    "  \"topk_method\": \"noaux_tc\",\n"
    "  \"torch_dtype\": \"bfloat16\",\n"
    "  \"transformers_version\": \"4.46.3\",\n"
    "  \"use_cache\": true,\n"
    "  \"v_head_dim\": 128,\n"
    "  \"vocab_size\": 129280\n"
    "}\n";

/* deepseek-ai/DeepSeek-V3.2 (ARCH.md 2.2): DeepSeek-V3 plus the DSA indexer fields,
 * power-of-two (ue8m0) FP8 block scales. */
static const char preset_deepseek_v32[] =
    "{\n"
    "  \"architectures\": [\"DeepseekV32ForCausalLM\"],\n"
    "  \"attention_bias\": false,\n"
    "  \"attention_dropout\": 0.0,\n"
    "  \"aux_loss_alpha\": 0.001,\n"
    "  \"bos_token_id\": 0,\n"
    "  \"eos_token_id\": 1,\n"
    "  \"ep_size\": 1,\n"
    "  \"first_k_dense_replace\": 3,\n"
    "  \"hidden_act\": \"silu\",\n"
    "  \"hidden_size\": 7168,\n"
    "  \"index_head_dim\": 128,\n"
    "  \"index_n_heads\": 64,\n"
    "  \"index_topk\": 2048,\n"
    "  \"initializer_range\": 0.02,\n"
    "  \"intermediate_size\": 18432,\n"
    "  \"kv_lora_rank\": 512,\n"
    "  \"max_position_embeddings\": 163840,\n"
    "  \"model_type\": \"deepseek_v32\",\n"
    "  \"moe_intermediate_size\": 2048,\n"
    "  \"moe_layer_freq\": 1,\n"
    "  \"n_group\": 8,\n"
    "  \"n_routed_experts\": 256,\n"
    "  \"n_shared_experts\": 1,\n"
    "  \"norm_topk_prob\": true,\n"
    "  \"num_attention_heads\": 128,\n"
    "  \"num_experts_per_tok\": 8,\n"
    "  \"num_hidden_layers\": 61,\n"
    "  \"num_key_value_heads\": 128,\n"
    "  \"num_nextn_predict_layers\": 1,\n"
    "  \"pretraining_tp\": 1,\n"
    "  \"q_lora_rank\": 1536,\n"
    "  \"qk_nope_head_dim\": 128,\n"
    "  \"qk_rope_head_dim\": 64,\n"
    "  \"quantization_config\": {\n"
    "    \"activation_scheme\": \"dynamic\",\n"
    "    \"fmt\": \"e4m3\",\n"
    "    \"quant_method\": \"fp8\",\n"
    "    \"scale_fmt\": \"ue8m0\",\n"
    "    \"weight_block_size\": [128, 128]\n"
    "  },\n"
    "  \"rms_norm_eps\": 1e-06,\n"
    "  \"rope_scaling\": {\n"
    "    \"beta_fast\": 32,\n"
    "    \"beta_slow\": 1,\n"
    "    \"factor\": 40,\n"
    "    \"mscale\": 1.0,\n"
    "    \"mscale_all_dim\": 1.0,\n"
    "    \"original_max_position_embeddings\": 4096,\n"
    "    \"type\": \"yarn\"\n"
    "  },\n"
    "  \"rope_theta\": 10000,\n"
    "  \"routed_scaling_factor\": 2.5,\n"
    "  \"scoring_func\": \"sigmoid\",\n"
    "  \"seq_aux\": true,\n"
    "  \"tie_word_embeddings\": false,\n"
    "  \"topk_group\": 4,\n"
    "  \"topk_method\": \"noaux_tc\",\n"
    "  \"torch_dtype\": \"bfloat16\",\n"
    "  \"transformers_version\": \"4.57.0\",\n"
    "  \"use_cache\": true,\n"
    "  \"v_head_dim\": 128,\n"
    "  \"vocab_size\": 129280\n"
    "}\n";

/* zai-org/GLM-5 (ARCH.md 2.4): MLA with wider heads (nope 192, v 256), DSA with 32
 * indexer heads, one expert group, no YaRN (rope_theta as ARCH 2.4 gives it, marked
 * unconfirmed there), FP8 128x128 blocks as in GLM-5-FP8. Every layer has its own
 * indexer; GLM-5.1+ configs add indexer_types, which glm-5-tiny exercises. */
static const char preset_glm5[] =
    "{\n"
    "  \"architectures\": [\"GlmMoeDsaForCausalLM\"],\n"
    "  \"attention_bias\": false,\n"
    "  \"attention_dropout\": 0.0,\n"
    "  \"eos_token_id\": [154820, 154827, 154829],\n"
    "  \"first_k_dense_replace\": 3,\n"
    "  \"hidden_act\": \"silu\",\n"
    "  \"hidden_size\": 6144,\n"
    "  \"index_head_dim\": 128,\n"
    "  \"index_n_heads\": 32,\n"
    "  \"index_topk\": 2048,\n"
    "  \"initializer_range\": 0.02,\n"
    "  \"intermediate_size\": 12288,\n"
    "  \"kv_lora_rank\": 512,\n"
    "  \"max_position_embeddings\": 202752,\n"
    "  \"model_type\": \"glm_moe_dsa\",\n"
    "  \"moe_intermediate_size\": 2048,\n"
    "  \"moe_layer_freq\": 1,\n"
    "  \"n_group\": 1,\n"
    "  \"n_routed_experts\": 256,\n"
    "  \"n_shared_experts\": 1,\n"
    "  \"norm_topk_prob\": true,\n"
    "  \"num_attention_heads\": 64,\n"
    "  \"num_experts_per_tok\": 8,\n"
    "  \"num_hidden_layers\": 78,\n"
    "  \"num_key_value_heads\": 64,\n"
    "  \"num_nextn_predict_layers\": 1,\n"
    "  \"q_lora_rank\": 2048,\n"
    "  \"qk_nope_head_dim\": 192,\n"
    "  \"qk_rope_head_dim\": 64,\n"
    "  \"quantization_config\": {\n"
    "    \"activation_scheme\": \"dynamic\",\n"
    "    \"fmt\": \"e4m3\",\n"
    "    \"quant_method\": \"fp8\",\n"
    "    \"weight_block_size\": [128, 128]\n"
    "  },\n"
    "  \"rms_norm_eps\": 1e-05,\n"
    "  \"rope_parameters\": {\"rope_theta\": 1000000, \"rope_type\": \"default\"},\n"
    "  \"routed_scaling_factor\": 2.5,\n"
    "  \"scoring_func\": \"sigmoid\",\n"
    "  \"tie_word_embeddings\": false,\n"
    "  \"topk_group\": 1,\n"
    "  \"topk_method\": \"noaux_tc\",\n"
    "  \"torch_dtype\": \"bfloat16\",\n"
    "  \"use_cache\": true,\n"
    "  \"v_head_dim\": 256,\n"
    "  \"vocab_size\": 154880\n"
    "}\n";

/* DSA at test size: index_topk far below the test sequence lengths, so the indexer's
 * choice changes the logits. Odd widths as in "tiny"; the indexer head (20) is wider
 * than its rotated part (8) so the untouched dims are exercised. */
static const char preset_deepseek_v32_tiny[] =
    "{\n"
    "  \"architectures\": [\"DeepseekV32ForCausalLM\"],\n"
    "  \"model_type\": \"deepseek_v32\",\n"
    "  \"vocab_size\": 1000,\n"
    "  \"hidden_size\": 160,\n"
    "  \"intermediate_size\": 200,\n"
    "  \"moe_intermediate_size\": 48,\n"
    "  \"num_hidden_layers\": 3,\n"
    "  \"first_k_dense_replace\": 1,\n"
    "  \"moe_layer_freq\": 1,\n"
    "  \"num_attention_heads\": 4,\n"
    "  \"num_key_value_heads\": 4,\n"
    "  \"q_lora_rank\": 48,\n"
    "  \"kv_lora_rank\": 24,\n"
    "  \"qk_nope_head_dim\": 16,\n"
    "  \"qk_rope_head_dim\": 8,\n"
    "  \"v_head_dim\": 16,\n"
    "  \"index_n_heads\": 6,\n"
    "  \"index_head_dim\": 20,\n"
    "  \"index_topk\": 5,\n"
    "  \"n_routed_experts\": 16,\n"
    "  \"n_shared_experts\": 1,\n"
    "  \"num_experts_per_tok\": 4,\n"
    "  \"n_group\": 4,\n"
    "  \"topk_group\": 2,\n"
    "  \"topk_method\": \"noaux_tc\",\n"
    "  \"scoring_func\": \"sigmoid\",\n"
    "  \"routed_scaling_factor\": 2.5,\n"
    "  \"norm_topk_prob\": true,\n"
    "  \"hidden_act\": \"silu\",\n"
    "  \"rms_norm_eps\": 1e-06,\n"
    "  \"rope_theta\": 10000.0,\n"
    "  \"rope_scaling\": {\"type\": \"yarn\", \"factor\": 4.0,"
    " \"original_max_position_embeddings\": 64, \"beta_fast\": 32, \"beta_slow\": 1,"
    " \"mscale\": 1.0, \"mscale_all_dim\": 1.0},\n"
    "  \"max_position_embeddings\": 256,\n"
    "  \"num_nextn_predict_layers\": 1,\n"
    "  \"bos_token_id\": 0,\n"
    "  \"eos_token_id\": 1,\n"
    "  \"tie_word_embeddings\": false,\n"
    "  \"torch_dtype\": \"bfloat16\"\n"
    "}\n";

/* GLM-5 at test size: v_head wider than qk_nope as in GLM-5, one expert group, default
 * RoPE, and a GLM-5.1-style indexer_types schedule so shared layers are exercised. */
static const char preset_glm5_tiny[] =
    "{\n"
    "  \"architectures\": [\"GlmMoeDsaForCausalLM\"],\n"
    "  \"model_type\": \"glm_moe_dsa\",\n"
    "  \"vocab_size\": 1000,\n"
    "  \"hidden_size\": 144,\n"
    "  \"intermediate_size\": 176,\n"
    "  \"moe_intermediate_size\": 40,\n"
    "  \"num_hidden_layers\": 4,\n"
    "  \"first_k_dense_replace\": 1,\n"
    "  \"moe_layer_freq\": 1,\n"
    "  \"num_attention_heads\": 4,\n"
    "  \"num_key_value_heads\": 4,\n"
    "  \"q_lora_rank\": 40,\n"
    "  \"kv_lora_rank\": 28,\n"
    "  \"qk_nope_head_dim\": 24,\n"
    "  \"qk_rope_head_dim\": 8,\n"
    "  \"v_head_dim\": 32,\n"
    "  \"index_n_heads\": 4,\n"
    "  \"index_head_dim\": 16,\n"
    "  \"index_topk\": 6,\n"
    "  \"indexer_types\": [\"full\", \"shared\", \"full\", \"shared\"],\n"
    "  \"n_routed_experts\": 8,\n"
    "  \"n_shared_experts\": 1,\n"
    "  \"num_experts_per_tok\": 2,\n"
    "  \"n_group\": 1,\n"
    "  \"topk_group\": 1,\n"
    "  \"topk_method\": \"noaux_tc\",\n"
    "  \"scoring_func\": \"sigmoid\",\n"
    "  \"routed_scaling_factor\": 2.5,\n"
    "  \"norm_topk_prob\": true,\n"
    "  \"hidden_act\": \"silu\",\n"
    "  \"rms_norm_eps\": 1e-05,\n"
    "  \"rope_parameters\": {\"rope_theta\": 10000, \"rope_type\": \"default\"},\n"
    "  \"max_position_embeddings\": 256,\n"
    "  \"num_nextn_predict_layers\": 1,\n"
    "  \"bos_token_id\": 0,\n"
    "  \"eos_token_id\": [1, 2],\n"
    "  \"tie_word_embeddings\": false,\n"
    "  \"torch_dtype\": \"bfloat16\"\n"
    "}\n";

/* moonshotai/Kimi-K2.5 (ARCH.md 2.3): the vision-language wrapper around a
 * DeepseekV3 text model. Routed experts are compressed-tensors INT4 as released
 * (ARCH.md 7.3; the same quantization_config in text_config and at the top level),
 * everything else BF16. The vision config is kept for realism; vision tensors are
 * not written. */
static const char preset_kimi_k25[] =
    "{\n"
    "  \"architectures\": [\"KimiK25ForConditionalGeneration\"],\n"
    "  \"auto_map\": {\n"
    "    \"AutoConfig\": \"configuration_kimi_k25.KimiK25Config\",\n"
    "    \"AutoModel\": \"modeling_kimi_k25.KimiK25ForConditionalGeneration\",\n"
    "    \"AutoModelForCausalLM\": \"modeling_kimi_k25.KimiK25ForConditionalGeneration\"\n"
    "  },\n"
    "  \"model_type\": \"kimi_k25\",\n"
    "  \"bos_token_id\": 163584,\n"
    "  \"eos_token_id\": 163585,\n"
    "  \"pad_token_id\": 163839,\n"
    "  \"media_placeholder_token_id\": 163605,\n"
    "  \"use_unified_vision_chunk\": true,\n"
    "  \"video_placeholder\": \"<|kimi_k25_video_placeholder|>\",\n"
    "  \"tie_word_embeddings\": false,\n"
    "  \"torch_dtype\": \"bfloat16\",\n"
    "  \"quantization_config\": {\n"
    "    \"config_groups\": {\n"
    "      \"group_0\": {\n"
    "        \"input_activations\": null,\n"
    "        \"output_activations\": null,\n"
    "        \"targets\": [\"Linear\"],\n"
    "        \"weights\": {\"actorder\": null, \"block_structure\": null, \"dynamic\": false,"
    " \"group_size\": 32, \"num_bits\": 4, \"observer\": \"minmax\", \"observer_kwargs\": {},"
    " \"strategy\": \"group\", \"symmetric\": true, \"type\": \"int\"}\n"
    "      }\n"
    "    },\n"
    "    \"format\": \"pack-quantized\",\n"
    "    \"ignore\": [\"lm_head\", \"re:.*self_attn.*\", \"re:.*shared_experts.*\","
    " \"re:.*mlp\\\\.(gate|up|gate_up|down)_proj.*\"],\n"
    "    \"kv_cache_scheme\": null,\n"
    "    \"quant_method\": \"compressed-tensors\",\n"
    "    \"quantization_status\": \"compressed\"\n"
    "  },\n"
    "  \"text_config\": {\n"
    "    \"architectures\": [\"DeepseekV3ForCausalLM\"],\n"
    "    \"model_type\": \"deepseek_v3\",\n"
    "    \"attention_bias\": false,\n"
    "    \"attention_dropout\": 0.0,\n"
    "    \"aux_loss_alpha\": 0.001,\n"
    "    \"bos_token_id\": 163584,\n"
    "    \"eos_token_id\": 163585,\n"
    "    \"pad_token_id\": 163839,\n"
    "    \"ep_size\": 1,\n"
    "    \"first_k_dense_replace\": 1,\n"
    "    \"hidden_act\": \"silu\",\n"
    "    \"hidden_size\": 7168,\n"
    "    \"initializer_range\": 0.02,\n"
    "    \"intermediate_size\": 18432,\n"
    "    \"kv_lora_rank\": 512,\n"
    "    \"max_position_embeddings\": 262144,\n"
    "    \"moe_intermediate_size\": 2048,\n"
    "    \"moe_layer_freq\": 1,\n"
    "    \"n_group\": 1,\n"
    "    \"n_routed_experts\": 384,\n"
    "    \"n_shared_experts\": 1,\n"
    "    \"norm_topk_prob\": true,\n"
    "    \"num_attention_heads\": 64,\n"
    "    \"num_experts_per_tok\": 8,\n"
    "    \"num_hidden_layers\": 61,\n"
    "    \"num_key_value_heads\": 64,\n"
    "    \"num_nextn_predict_layers\": 0,\n"
    "    \"pretraining_tp\": 1,\n"
    "    \"q_lora_rank\": 1536,\n"
    "    \"qk_nope_head_dim\": 128,\n"
    "    \"qk_rope_head_dim\": 64,\n"
    "    \"quantization_config\": {\n"
    "      \"config_groups\": {\n"
    "        \"group_0\": {\n"
    "          \"input_activations\": null,\n"
    "          \"output_activations\": null,\n"
    "          \"targets\": [\"Linear\"],\n"
    "          \"weights\": {\"actorder\": null, \"block_structure\": null, \"dynamic\": false,"
    " \"group_size\": 32, \"num_bits\": 4, \"observer\": \"minmax\", \"observer_kwargs\": {},"
    " \"strategy\": \"group\", \"symmetric\": true, \"type\": \"int\"}\n"
    "        }\n"
    "      },\n"
    "      \"format\": \"pack-quantized\",\n"
    "      \"ignore\": [\"lm_head\", \"re:.*self_attn.*\", \"re:.*shared_experts.*\","
    " \"re:.*mlp\\\\.(gate|up|gate_up|down)_proj.*\"],\n"
    "      \"kv_cache_scheme\": null,\n"
    "      \"quant_method\": \"compressed-tensors\",\n"
    "      \"quantization_status\": \"compressed\"\n"
    "    },\n"
    "    \"rms_norm_eps\": 1e-05,\n"
    "    \"rope_scaling\": {\n"
    "      \"beta_fast\": 32.0,\n"
    "      \"beta_slow\": 1.0,\n"
    "      \"factor\": 64.0,\n"
    "      \"mscale\": 1.0,\n"
    "      \"mscale_all_dim\": 1.0,\n"
    "      \"original_max_position_embeddings\": 4096,\n"
    "      \"type\": \"yarn\"\n"
    "    },\n"
    "    \"rope_theta\": 50000.0,\n"
    "    \"routed_scaling_factor\": 2.827,\n"
    "    \"scoring_func\": \"sigmoid\",\n"
    "    \"seq_aux\": true,\n"
    "    \"tie_word_embeddings\": false,\n"
    "    \"topk_group\": 1,\n"
    "    \"topk_method\": \"noaux_tc\",\n"
    "    \"torch_dtype\": \"bfloat16\",\n"
    "    \"use_cache\": true,\n"
    "    \"v_head_dim\": 128,\n"
    "    \"vocab_size\": 163840\n"
    "  },\n"
    "  \"vision_config\": {\n"
    "    \"patch_size\": 14,\n"
    "    \"vt_hidden_size\": 1152,\n"
    "    \"vt_num_hidden_layers\": 27,\n"
    "    \"vt_num_attention_heads\": 16,\n"
    "    \"vt_intermediate_size\": 4304,\n"
    "    \"merge_kernel_size\": [2, 2],\n"
    "    \"mm_projector_type\": \"patchmerger\",\n"
    "    \"mm_hidden_size\": 1152,\n"
    "    \"text_hidden_size\": 7168\n"
    "  }\n"
    "}\n";

static const struct {
    const char *name;
    const char *json;
} presets[] = {
    {"tiny", preset_tiny},
    {"moonlight", preset_moonlight},
    {"deepseek-v3", preset_deepseek_v3},
    {"kimi-k2.5", preset_kimi_k25},
    {"deepseek-v3.2", preset_deepseek_v32},
    {"glm-5", preset_glm5},
    {"deepseek-v3.2-tiny", preset_deepseek_v32_tiny},
    {"glm-5-tiny", preset_glm5_tiny},
};
#define N_PRESETS (sizeof presets / sizeof presets[0])

fr_status fr_synth_preset_json(const char *preset, char **json, fr_error *err) {
    *json = NULL;
    for (size_t i = 0; i < N_PRESETS; i++) {
        if (strcmp(preset, presets[i].name) == 0) {
            *json = strdup(presets[i].json);
            if (!*json) return fr_fail(err, FR_ERR_NOMEM, "synth: out of memory");
            return FR_OK;
        }
    }
    return fr_fail(err, FR_ERR_INVALID,
                   "synth: unknown preset '%s' (presets: tiny, moonlight, deepseek-v3, kimi-k2.5,"
                   " deepseek-v3.2, glm-5, deepseek-v3.2-tiny, glm-5-tiny; or a path to a config .json)",
                   preset);
}

/* ---- config editing ---- */

/* The object holding the text model's fields: "text_config" of a wrapper, else root. */
static cJSON *text_model_of(cJSON *root) {
    cJSON *t = cJSON_GetObjectItemCaseSensitive(root, "text_config");
    return cJSON_IsObject(t) ? t : root;
}

/* Integer field, or dflt when absent, null, not a number or beyond 2^53 (such
 * values are left for fr_config_parse to reject; casting them would be UB). */
static int64_t json_int(const cJSON *obj, const char *key, int64_t dflt) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!cJSON_IsNumber(v) || !(fabs(v->valuedouble) <= 9007199254740992.0)) return dflt;
    return (int64_t)v->valuedouble;
}

/* Set obj[key] = v, keeping the key's position when it exists (so the written
 * config.json reads like the original). */
static fr_status json_set_int(cJSON *obj, const char *key, int64_t v, fr_error *err) {
    cJSON *num = cJSON_CreateNumber((double)v);
    if (!num) return fr_fail(err, FR_ERR_NOMEM, "synth: out of memory");
    if (cJSON_GetObjectItemCaseSensitive(obj, key)) {
        if (!cJSON_ReplaceItemInObjectCaseSensitive(obj, key, num)) {
            cJSON_Delete(num);
            return fr_fail(err, FR_ERR_NOMEM, "synth: cannot set %s", key);
        }
    } else if (!cJSON_AddItemToObject(obj, key, num)) {
        cJSON_Delete(num);
        return fr_fail(err, FR_ERR_NOMEM, "synth: cannot set %s", key);
    }
    return FR_OK;
}

/* quant_method of a quantization_config object, "" when absent. */
static const char *quant_method_of(const cJSON *qc) {
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(qc, "quant_method");
    return cJSON_IsString(m) ? m->valuestring : "";
}

/* Refuse configs whose quantization we would not honour: writing BF16 tensors
 * under a config that announces GPTQ (say) would give an inconsistent checkpoint.
 * The methods generated are the ones the loader reads (config.c); their details
 * are checked when the edited text is parsed. */
static fr_status check_quant(cJSON *root, fr_error *err) {
    cJSON *objs[2] = {root, text_model_of(root)};
    for (int i = 0; i < 2; i++) {
        cJSON *qc = cJSON_GetObjectItemCaseSensitive(objs[i], "quantization_config");
        if (!qc || cJSON_IsNull(qc)) continue;
        const char *m = quant_method_of(qc);
        if (!cJSON_IsObject(qc) ||
            (strcmp(m, "fp8") != 0 && strcmp(m, "compressed-tensors") != 0 && strcmp(m, "frontier") != 0))
            return fr_fail(err, FR_ERR_UNSUPPORTED,
                           "synth: quantization_config quant_method '%s' is not generated"
                           " (fp8, compressed-tensors INT4, frontier; remove it for BF16 weights)",
                           m);
    }
    return FR_OK;
}

/* Replace quantization_config in the text model object and, for a wrapper, at the top
 * level too (the K2.5 wrapper repeats it there, ARCH.md 2.3). Takes ownership of qc. */
static fr_status set_quant_config(cJSON *root, cJSON *qc, fr_error *err) {
    cJSON *text = text_model_of(root);
    cJSON *objs[2] = {text, text != root ? root : NULL};
    for (int i = 0; i < 2 && objs[i]; i++) {
        cJSON *item = i == 0 ? qc : cJSON_Duplicate(qc, 1);
        if (!item) return fr_fail(err, FR_ERR_NOMEM, "synth: out of memory");
        cJSON_DeleteItemFromObjectCaseSensitive(objs[i], "quantization_config");
        if (!cJSON_AddItemToObject(objs[i], "quantization_config", item)) {
            if (i) cJSON_Delete(item);
            return fr_fail(err, FR_ERR_NOMEM, "synth: out of memory");
        }
    }
    return FR_OK;
}

/* The config's quantization_config (text model first), or NULL. */
static cJSON *quant_config_of(cJSON *root) {
    cJSON *q = cJSON_GetObjectItemCaseSensitive(text_model_of(root), "quantization_config");
    if (!q || cJSON_IsNull(q)) q = cJSON_GetObjectItemCaseSensitive(root, "quantization_config");
    return q && !cJSON_IsNull(q) ? q : NULL;
}

/* opts->mxfp4_experts: routed experts MXFP4 under a "frontier" config, the other groups
 * as they were (fp8 when the config had block FP8, else bf16; the INT4 experts of a
 * compressed-tensors config become MXFP4). */
static fr_status make_experts_mxfp4(cJSON *root, fr_error *err) {
    cJSON *have = quant_config_of(root);
    const char *m = have ? quant_method_of(have) : "";
    if (have && strcmp(m, "frontier") == 0) {
        cJSON *fg = cJSON_GetObjectItemCaseSensitive(have, "format_by_group");
        if (!cJSON_IsObject(fg)) return FR_OK; /* left for the parser to reject */
        cJSON *qc = cJSON_Duplicate(have, 1);
        if (!qc) return fr_fail(err, FR_ERR_NOMEM, "synth: out of memory");
        fg = cJSON_GetObjectItemCaseSensitive(qc, "format_by_group");
        cJSON_DeleteItemFromObjectCaseSensitive(fg, "experts");
        cJSON_AddStringToObject(fg, "experts", "mxfp4");
        return set_quant_config(root, qc, err);
    }
    /* compressed-tensors INT4 experts become MXFP4; its other weights are BF16 anyway */
    const bool fp8 = have && strcmp(m, "fp8") == 0;
    if (have && !fp8 && strcmp(m, "compressed-tensors") != 0)
        return fr_fail(err, FR_ERR_UNSUPPORTED,
                       "synth: MXFP4 experts: config already has quantization_config quant_method '%s'", m);
    const char *rest = fp8 ? "fp8" : "bf16";
    char text[512];
    snprintf(
        text, sizeof text,
        "{\"quant_method\": \"frontier\", \"format_by_group\": {\"attention\": \"%s\", \"dense\": \"%s\","
        " \"shared_experts\": \"%s\", \"experts\": \"mxfp4\"}, \"group_size\": 32}",
        rest, rest, rest);
    cJSON *qc = cJSON_Parse(text);
    if (!qc) return fr_fail(err, FR_ERR_NOMEM, "synth: out of memory");
    if (fp8) { /* keep the FP8 block size and scale format */
        const char *keep[] = {"fmt", "weight_block_size", "scale_fmt"};
        for (int i = 0; i < 3; i++) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(have, keep[i]);
            if (v) cJSON_AddItemToObject(qc, keep[i], cJSON_Duplicate(v, 1));
        }
    }
    return set_quant_config(root, qc, err);
}

/* A DSA config's per-layer indexer schedule follows a --layers override: cut to the
 * new count, or extended with "full" layers (every layer keeps a valid source). */
static fr_status resize_indexer_types(cJSON *text, int layers, fr_error *err) {
    cJSON *types = cJSON_GetObjectItemCaseSensitive(text, "indexer_types");
    if (cJSON_IsArray(types)) {
        while (cJSON_GetArraySize(types) > layers) cJSON_DeleteItemFromArray(types, cJSON_GetArraySize(types) - 1);
        while (cJSON_GetArraySize(types) < layers) {
            cJSON *f = cJSON_CreateString("full");
            if (!f || !cJSON_AddItemToArray(types, f)) {
                cJSON_Delete(f);
                return fr_fail(err, FR_ERR_NOMEM, "synth: out of memory");
            }
        }
    }
    cJSON *pat = cJSON_GetObjectItemCaseSensitive(text, "index_topk_pattern");
    if (cJSON_IsString(pat)) {
        size_t n = strlen(pat->valuestring);
        char *v = malloc((size_t)layers + 1);
        if (!v) return fr_fail(err, FR_ERR_NOMEM, "synth: out of memory");
        for (int l = 0; l < layers; l++) v[l] = (size_t)l < n ? pat->valuestring[l] : 'F';
        v[layers] = 0;
        cJSON *str = cJSON_CreateString(v);
        free(v);
        if (!str || !cJSON_ReplaceItemInObjectCaseSensitive(text, "index_topk_pattern", str)) {
            cJSON_Delete(str);
            return fr_fail(err, FR_ERR_NOMEM, "synth: out of memory");
        }
    }
    return FR_OK;
}

/* Apply opts to a parsed config in place. Idempotent: applying it twice is the
 * same as once, so write/memory can re-apply it to already edited text. */
static fr_status edit_config(cJSON *root, const fr_synth_opts *opts, fr_error *err) {
    cJSON *text = text_model_of(root);
    fr_status rc;
    if (opts->layers > 0) {
        if ((rc = json_set_int(text, "num_hidden_layers", opts->layers, err))) return rc;
        int64_t fkd = json_int(text, "first_k_dense_replace", 0);
        if (fkd > opts->layers &&
            (rc = json_set_int(text, "first_k_dense_replace", opts->layers, err)))
            return rc;
        if ((rc = resize_indexer_types(text, opts->layers, err))) return rc;
    }
    if (opts->experts > 0) {
        int64_t e = opts->experts;
        if ((rc = json_set_int(text, "n_routed_experts", e, err))) return rc;
        int64_t k = json_int(text, "num_experts_per_tok", 0);
        if (k > e && (rc = json_set_int(text, "num_experts_per_tok", e, err))) return rc;
        if (k > e) k = e;
        /* noaux_tc scores a group by its top-2 experts and then picks top-k among
         * the kept groups, so grouping only works when the groups divide E, hold
         * at least two experts each, and the kept groups hold at least k experts.
         * Otherwise fall back to one group (plain top-k). */
        int64_t g = json_int(text, "n_group", 1);
        int64_t tg = json_int(text, "topk_group", g); /* absent: all groups (transformers) */
        if (g > 1 && (e % g != 0 || e / g < 2 || (e / g) * (tg < g ? tg : g) < k)) g = tg = 1;
        if (g < 1) g = 1;
        if (tg > g) tg = g;
        if (tg < 1) tg = 1;
        if (cJSON_GetObjectItemCaseSensitive(text, "n_group") &&
            (rc = json_set_int(text, "n_group", g, err)))
            return rc;
        if (cJSON_GetObjectItemCaseSensitive(text, "topk_group") &&
            (rc = json_set_int(text, "topk_group", tg, err)))
            return rc;
    }
    if (opts->fp8_blocks) {
        const cJSON *have = quant_config_of(root);
        if (have) {
            /* keep an existing fp8 config (and its block size); refuse other methods */
            if (!cJSON_IsObject(have) || strcmp(quant_method_of(have), "fp8") != 0)
                return fr_fail(err, FR_ERR_UNSUPPORTED,
                               "synth: --fp8-blocks: config already has quantization_config"
                               " quant_method '%s'",
                               quant_method_of(have));
        } else {
            cJSON *qc = cJSON_Parse("{\"quant_method\": \"fp8\", \"fmt\": \"e4m3\","
                                    " \"activation_scheme\": \"dynamic\","
                                    " \"weight_block_size\": [128, 128]}");
            if (!qc) return fr_fail(err, FR_ERR_NOMEM, "synth: out of memory");
            if ((rc = set_quant_config(root, qc, err))) return rc;
        }
    }
    if (opts->mxfp4_experts && (rc = make_experts_mxfp4(root, err))) return rc;
    return FR_OK;
}

/* cJSON_Print with the layout of the released files: two-space indents and
 * "key": value. cJSON escapes tabs inside strings, so every raw tab in its
 * output is layout: leading ones become two spaces, the one after ':' a space.
 * Caller frees; NULL when out of memory. */
char *fr_synth_print_json(const cJSON *j) {
    char *t = cJSON_Print(j);
    if (!t) return NULL;
    size_t n = 0;
    for (const char *q = t; *q; q++) n += *q == '\t' ? 2 : 1;
    char *out = malloc(n + 1), *o = out;
    if (out) {
        bool line_start = true;
        for (const char *q = t; *q; q++) {
            if (*q == '\t') {
                if (line_start) *o++ = ' ', *o++ = ' ';
                else *o++ = ' ';
                continue;
            }
            line_start = *q == '\n';
            *o++ = *q;
        }
        *o = 0;
    }
    free(t);
    return out;
}

static fr_status parse_json(const char *json, cJSON **root, fr_error *err) {
    fr_status rc = fr_json_parse(json, strlen(json), "synth config", root, err);
    if (rc) return rc;
    if (!cJSON_IsObject(*root)) {
        cJSON_Delete(*root);
        *root = NULL;
        return fr_fail(err, FR_ERR_FORMAT, "synth config: top level is not a JSON object");
    }
    return FR_OK;
}

/* Edit json by opts and return the pretty-printed result (caller frees). */
static fr_status edit_to_text(const char *json, const fr_synth_opts *opts, char **out,
                              fr_error *err) {
    *out = NULL;
    cJSON *root;
    fr_status rc = parse_json(json, &root, err);
    if (rc) return rc;
    rc = edit_config(root, opts, err);
    if (!rc) rc = check_quant(root, err);
    if (!rc) {
        *out = fr_synth_print_json(root);
        if (!*out) rc = fr_fail(err, FR_ERR_NOMEM, "synth: out of memory printing config");
    }
    cJSON_Delete(root);
    return rc;
}

/* opts may be NULL in the public calls: all defaults (seed 0, no edits, shards). */
static const fr_synth_opts no_opts;

fr_status fr_synth_edit_json(const char *json, const fr_synth_opts *opts, char **out,
                             fr_error *err) {
    return edit_to_text(json, opts ? opts : &no_opts, out, err);
}

/* ---- random numbers ---- */

#define GOLDEN 0x9E3779B97F4A7C15ull

static SYNTH_INLINE uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Stream seed of one tensor: FNV-1a of its (unprefixed) name, mixed with the seed. */
static uint64_t tensor_seed(uint64_t seed, const char *name) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        h = (h ^ *p) * 0x100000001b3ull;
    return mix64(mix64(seed) ^ h);
}

/* lowbias32 (C. Wellons' hash-prospector): a cheap bijective 32-bit mixer with
 * good avalanche, and 32-bit only, so the element loops below vectorise. */
static SYNTH_INLINE uint32_t hash32(uint32_t x) {
    x ^= x >> 16;
    x *= 0x7feb352du;
    x ^= x >> 15;
    x *= 0x846ca68bu;
    x ^= x >> 16;
    return x;
}

/* Values mean + std * z of row r, columns [c0, c0 + n) of a tensor whose stream
 * seed is tseed. A 64-bit key per row (splitmix64 of the row counter) and two
 * chained 32-bit hashes per column give four 16-bit uniforms; their centred sum
 * (Irwin-Hall, 4 terms) is Gaussian-ish with unit variance and |z| < 3.47.
 * Element (r, c) depends on nothing else, so any span may be generated alone. */
static SYNTH_INLINE void gen_span(uint64_t tseed, int64_t r, int64_t c0, int64_t n, float mean,
                                  float std, float *out) {
    uint64_t rk = mix64(tseed + (uint64_t)(r + 1) * GOLDEN);
    const uint32_t k1 = (uint32_t)rk, k2 = (uint32_t)(rk >> 32);
    const uint32_t base = (uint32_t)c0; /* cols < 2^31 (plan_push), so c0 + j fits */
    /* the sum has mean 4 * 32767.5 and variance 4 * (65536^2 - 1) / 12 ~= 65536^2 / 3 */
    const float a = std * (1.7320508f / 65536.0f);
#pragma omp simd
    for (int64_t j = 0; j < n; j++) {
        uint32_t h1 = hash32(k1 + (base + (uint32_t)j) * 0x9E3779B9u);
        uint32_t h2 = hash32(h1 ^ k2);
        int32_t s = (int32_t)(h1 & 0xffff) + (int32_t)(h1 >> 16) + (int32_t)(h2 & 0xffff) +
                    (int32_t)(h2 >> 16);
        /* two statements: C allows fusing a*x+b into an FMA only within one
         * expression, and an FMA in some clones but not others would make the
         * bytes depend on the CPU */
        float z = a * (float)(s - 131070);
        out[j] = z + mean;
    }
}

/* f32 -> BF16, round to nearest even, for the finite values gen_span makes:
 * fr_f32_to_bf16 without its NaN branch, so the loop vectorises. */
static SYNTH_INLINE uint16_t bf16_rne(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1)) >> 16);
}

/* f32 -> E4M3 (e4m3fn) with round-to-nearest-even, saturating to +-448: the same
 * result as fr_f32_to_e4m3 (compared on 3e8 values incl. every tie) without its table
 * search, and branch-free so it vectorises. Normal values round the f32 mantissa
 * to 3 bits by add-and-truncate (a carry moves into the exponent by itself);
 * below 2^-6 the E4M3 grid is uniform in 2^-9 steps, and adding 2^23 to a*2^9
 * (< 8) rounds it to an integer in the low mantissa bits. */
static SYNTH_INLINE uint8_t e4m3_rne(float x) {
    uint32_t u, sub;
    memcpy(&u, &x, 4);
    uint32_t sign = (u >> 24) & 0x80;
    u &= 0x7fffffffu;
    float a, t;
    memcpy(&a, &u, 4);
    t = a * 512.0f + 8388608.0f;
    memcpy(&sub, &t, 4);
    sub &= 0xf;                                                     /* 0..8; 8 is 2^-6 */
    uint32_t nrm = ((u + 0x7ffffu + ((u >> 20) & 1)) >> 20) - (120u << 3); /* rebias 127 -> 7 */
    uint32_t v = u < 0x3c800000u ? sub : u >= 0x43e00000u ? 0x7eu : nrm; /* < 2^-6, >= 448 */
    v = u > 0x7f800000u ? 0x7fu : v;                                /* NaN */
    return (uint8_t)(sign | v);
}

/* ---- the tensor plan ---- */

typedef enum {
    GEN_BF16,      /* mean + std * z, stored BF16 */
    GEN_F32,       /* mean + std * z, stored F32 */
    GEN_FP8,       /* std * z, block-quantized to E4M3 */
    GEN_SCALE,     /* the F32 weight_scale_inv of the FP8 tensor `weight` */
    GEN_MX_BLOCKS, /* std * z as MXFP4: U8 [rows, cols / 32, 16] */
    GEN_MX_SCALES, /* the E8M0 scales [rows, cols / 32] of the MXFP4 tensor `weight` */
    GEN_I4_PACKED, /* std * z as compressed-tensors INT4: I32 [rows, cols / 8] */
    GEN_I4_SCALE,  /* the BF16 scales [rows, cols / 32] of the INT4 tensor `weight` */
    GEN_I4_SHAPE,  /* I32 [2] = {rows, cols} of the INT4 tensor `weight` */
} gen_kind;

typedef struct {
    gen_kind kind;
    uint64_t seed;       /* stream of the underlying f32 values */
    float mean, std;
    int64_t rows, cols;  /* the [out, in] matrix (1-D tensors: rows = 1, cols = n) */
    size_t weight;       /* GEN_SCALE, _SCALES, _SCALE, _SHAPE: plan index of its weight */
    int shard;           /* file index: 0 = embed/norm/head, 1 + l = layer l */
} gen_param;

typedef struct {
    size_t n, cap;
    fr_st_spec *specs;   /* names malloc'd, owned by the plan */
    gen_param *gen;
    int n_shards;
    const char *prefix;  /* "" or "language_model." */
    uint64_t seed;
    bool fp8, ue8m0;
    int br, bc;          /* FP8 block rows, cols */
    fr_qformat fmt[FR_QGROUP_COUNT]; /* stored format of each module group */
} synth_plan;

static void plan_free(synth_plan *p) {
    for (size_t i = 0; i < p->n; i++) free((char *)p->specs[i].name);
    free(p->specs);
    free(p->gen);
    memset(p, 0, sizeof *p);
}

static fr_status plan_push(synth_plan *p, const char *name, fr_dtype dt, int ndim,
                           int64_t d0, int64_t d1, const gen_param *g, fr_error *err) {
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 256;
        fr_st_spec *s = realloc(p->specs, cap * sizeof *s);
        if (!s) return fr_fail(err, FR_ERR_NOMEM, "synth: out of memory (tensor list)");
        p->specs = s;
        gen_param *gp = realloc(p->gen, cap * sizeof *gp);
        if (!gp) return fr_fail(err, FR_ERR_NOMEM, "synth: out of memory (tensor list)");
        p->gen = gp;
        p->cap = cap;
    }
    /* 2^40 elements is far beyond any real tensor; the bound keeps every byte
     * count below 2^43, so no size arithmetic downstream can overflow. */
    if (d0 < 1 || d1 < 1 || d0 > ((int64_t)1 << 40) / d1)
        return fr_fail(err, FR_ERR_INVALID, "synth: tensor %s: bad shape [%lld, %lld]", name,
                       (long long)d0, (long long)d1);
    if (g->cols >= ((int64_t)1 << 31)) /* gen_span counts columns in 32 bits */
        return fr_fail(err, FR_ERR_INVALID, "synth: tensor %s: %lld columns, at most 2^31 - 1",
                       name, (long long)g->cols);
    if ((uint64_t)d0 * (uint64_t)d1 * fr_dtype_size(dt) > SIZE_MAX / 2)
        return fr_fail(err, FR_ERR_INVALID, "synth: tensor %s: too large for this platform",
                       name);
    char *copy = malloc(strlen(p->prefix) + strlen(name) + 1);
    if (!copy) return fr_fail(err, FR_ERR_NOMEM, "synth: out of memory (tensor names)");
    strcpy(copy, p->prefix);
    strcat(copy, name);
    fr_st_spec *s = &p->specs[p->n];
    memset(s, 0, sizeof *s);
    s->name = copy;
    s->dtype = dt;
    s->ndim = ndim;
    s->shape[0] = d0;
    if (ndim >= 2) s->shape[1] = d1;
    if (ndim == 3) s->shape[2] = 16; /* MXFP4 blocks: 16 bytes hold 32 elements */
    p->gen[p->n] = *g;
    p->n++;
    return FR_OK;
}

/* A 1-D tensor: a norm (1 + 0.1 z, always positive since |z| < 3.47) or a bias. */
static fr_status add_vec(synth_plan *p, int shard, const char *name, int64_t n, fr_dtype dt,
                         float mean, float std, fr_error *err) {
    gen_param g = {.kind = dt == FR_DTYPE_F32 ? GEN_F32 : GEN_BF16,
                   .seed = tensor_seed(p->seed, name), .mean = mean, .std = std,
                   .rows = 1, .cols = n, .shard = shard};
    return plan_push(p, name, dt, 1, n, 1, &g, err);
}

static fr_status add_norm(synth_plan *p, int shard, const char *name, int64_t n, fr_error *err) {
    return add_vec(p, shard, name, n, FR_DTYPE_BF16, 1.0f, 0.1f, err);
}

/* A [rows, cols] weight with values std * z. seed_name names the value stream
 * (the tensor's own name, or the tensor it duplicates). A weight of a module group
 * (group >= 0) is stored in that group's format: BF16; F8_E4M3 + <name>_scale_inv;
 * MXFP4 <name>_blocks + <name>_scales; INT4 <name>_packed + _scale + _shape. Weights
 * of no group (group < 0: embeddings, head, router) are BF16. */
static fr_status add_matrix(synth_plan *p, int shard, const char *name, const char *seed_name, int64_t rows,
                            int64_t cols, float std, int group, fr_error *err) {
    gen_param g = {.kind = GEN_BF16, .seed = tensor_seed(p->seed, seed_name), .std = std,
                   .rows = rows, .cols = cols, .shard = shard};
    const fr_qformat f = group >= 0 ? p->fmt[group] : FR_QFMT_BF16;
    char sname[256];
    fr_status rc;
    if (f == FR_QFMT_BF16) return plan_push(p, name, FR_DTYPE_BF16, 2, rows, cols, &g, err);
    if (f == FR_QFMT_MXFP4 || f == FR_QFMT_INT4) {
        if (cols % 32)
            return fr_fail(err, FR_ERR_INVALID,
                           "synth: %s: %lld input features, not a multiple of the %s group of 32", name,
                           (long long)cols, fr_qformat_name(f));
        const bool mx = f == FR_QFMT_MXFP4;
        gen_param gs = {
            .kind = mx ? GEN_MX_SCALES : GEN_I4_SCALE, .rows = rows, .cols = cols, .shard = shard};
        g.kind = mx ? GEN_MX_BLOCKS : GEN_I4_PACKED;
        snprintf(sname, sizeof sname, "%s_%s", name, mx ? "blocks" : "packed");
        if ((rc = mx ? plan_push(p, sname, FR_DTYPE_U8, 3, rows, cols / 32, &g, err)
                     : plan_push(p, sname, FR_DTYPE_I32, 2, rows, cols / 8, &g, err)))
            return rc;
        gs.weight = p->n - 1;
        snprintf(sname, sizeof sname, "%s_%s", name, mx ? "scales" : "scale");
        if ((rc = plan_push(p, sname, mx ? FR_DTYPE_U8 : FR_DTYPE_BF16, 2, rows, cols / 32, &gs, err)) || mx)
            return rc;
        gs.kind = GEN_I4_SHAPE;
        snprintf(sname, sizeof sname, "%s_shape", name);
        return plan_push(p, sname, FR_DTYPE_I32, 1, 2, 1, &gs, err);
    }
    g.kind = GEN_FP8;
    rc = plan_push(p, name, FR_DTYPE_F8_E4M3, 2, rows, cols, &g, err);
    if (rc) return rc;
    snprintf(sname, sizeof sname, "%s_scale_inv", name);
    int64_t sr = (rows + p->br - 1) / p->br, sc = (cols + p->bc - 1) / p->bc;
    gen_param gs = {.kind = GEN_SCALE, .rows = sr, .cols = sc, .weight = p->n - 1, .shard = shard};
    return plan_push(p, sname, FR_DTYPE_F32, 2, sr, sc, &gs, err);
}

static fr_status add_linear(synth_plan *p, int shard, const char *name, int64_t out, int64_t in, float gain,
                            fr_qgroup group, fr_error *err) {
    return add_matrix(p, shard, name, name, out, in, gain / sqrtf((float)in), (int)group, err);
}

/* SwiGLU MLP of width `inter` at prefix pre ("...mlp." or "...experts.E."). down_proj
 * is scaled down so the residual stream stays near unit RMS across layers. */
static fr_status add_mlp(synth_plan *p, int shard, const char *pre, int64_t d, int64_t inter, fr_qgroup group,
                         fr_error *err) {
    char nm[256];
    fr_status rc;
    snprintf(nm, sizeof nm, "%sgate_proj.weight", pre);
    if ((rc = add_linear(p, shard, nm, inter, d, 1.0f, group, err))) return rc;
    snprintf(nm, sizeof nm, "%sup_proj.weight", pre);
    if ((rc = add_linear(p, shard, nm, inter, d, 1.0f, group, err))) return rc;
    snprintf(nm, sizeof nm, "%sdown_proj.weight", pre);
    return add_linear(p, shard, nm, d, inter, 0.5f, group, err);
}

#define EMBED_NAME "model.embed_tokens.weight"
#define HEAD_NAME "lm_head.weight"

/* Decoder layer l (an MTP layer when l >= n_layers), names as in ARCH.md 3.1. */
static fr_status add_layer(synth_plan *p, const fr_config *c, int l, fr_error *err) {
    const int shard = 1 + l;
    const int64_t d = c->hidden_size, h = c->n_heads;
    const int64_t qk = c->qk_nope_head_dim + c->qk_rope_head_dim;
    char pre[64], nm[256];
    fr_status rc;
    snprintf(pre, sizeof pre, "model.layers.%d.", l);
#define NAME(...) (snprintf(nm, sizeof nm, __VA_ARGS__), nm)
#define TRY(x)                     \
    do {                           \
        if ((rc = (x))) return rc; \
    } while (0)

    if (l >= c->n_layers) {
        /* MTP extras (ARCH.md 3.1, 6). shared_head.head and embed_tokens duplicate
         * lm_head and the main embedding in the release, so they reuse the same
         * value streams and come out byte-identical. */
        const char *head_seed = c->tie_word_embeddings ? EMBED_NAME : HEAD_NAME;
        float head_std = c->tie_word_embeddings ? 1.0f : 1.0f / sqrtf((float)d);
        TRY(add_matrix(p, shard, NAME("%sembed_tokens.weight", pre), EMBED_NAME, c->vocab_size, d, 1.0f, -1,
                       err));
        TRY(add_norm(p, shard, NAME("%senorm.weight", pre), d, err));
        TRY(add_norm(p, shard, NAME("%shnorm.weight", pre), d, err));
        TRY(add_matrix(p, shard, NAME("%seh_proj.weight", pre), nm, d, 2 * d, 1.0f / sqrtf(2.0f * (float)d),
                       -1, err));
        TRY(add_norm(p, shard, NAME("%sshared_head.norm.weight", pre), d, err));
        TRY(add_matrix(p, shard, NAME("%sshared_head.head.weight", pre), head_seed, c->vocab_size, d,
                       head_std, -1, err));
    }

    TRY(add_norm(p, shard, NAME("%sinput_layernorm.weight", pre), d, err));
    if (c->q_lora_rank > 0) {
        TRY(add_linear(p, shard, NAME("%sself_attn.q_a_proj.weight", pre), c->q_lora_rank, d, 1.0f,
                       FR_QGROUP_ATTENTION, err));
        TRY(add_norm(p, shard, NAME("%sself_attn.q_a_layernorm.weight", pre), c->q_lora_rank,
                     err));
        TRY(add_linear(p, shard, NAME("%sself_attn.q_b_proj.weight", pre), h * qk, c->q_lora_rank, 1.0f,
                       FR_QGROUP_ATTENTION, err));
    } else {
        TRY(add_linear(p, shard, NAME("%sself_attn.q_proj.weight", pre), h * qk, d, 1.0f, FR_QGROUP_ATTENTION,
                       err));
    }
    TRY(add_linear(p, shard, NAME("%sself_attn.kv_a_proj_with_mqa.weight", pre),
                   (int64_t)c->kv_lora_rank + c->qk_rope_head_dim, d, 1.0f, FR_QGROUP_ATTENTION, err));
    TRY(add_norm(p, shard, NAME("%sself_attn.kv_a_layernorm.weight", pre), c->kv_lora_rank, err));
    TRY(add_linear(p, shard, NAME("%sself_attn.kv_b_proj.weight", pre),
                   h * (c->qk_nope_head_dim + c->v_head_dim), c->kv_lora_rank, 1.0f, FR_QGROUP_ATTENTION,
                   err));
    TRY(add_linear(p, shard, NAME("%sself_attn.o_proj.weight", pre), d, h * c->v_head_dim, 0.5f,
                   FR_QGROUP_ATTENTION, err));
    if (fr_config_layer_has_indexer(c, l)) {
        /* DSA indexer (ARCH 3.2 / 3.4): wq_b and wk in the attention group's format, the
         * LayerNorm and weights_proj unquantized. */
        const int64_t hi = c->dsa.n_heads, di = c->dsa.head_dim;
        TRY(add_linear(p, shard, NAME("%sself_attn.indexer.wq_b.weight", pre), hi * di, c->q_lora_rank, 1.0f,
                       FR_QGROUP_ATTENTION, err));
        TRY(add_linear(p, shard, NAME("%sself_attn.indexer.wk.weight", pre), di, d, 1.0f, FR_QGROUP_ATTENTION,
                       err));
        TRY(add_norm(p, shard, NAME("%sself_attn.indexer.k_norm.weight", pre), di, err));
        TRY(add_vec(p, shard, NAME("%sself_attn.indexer.k_norm.bias", pre), di, FR_DTYPE_BF16, 0.0f, 0.1f, err));
        TRY(add_matrix(p, shard, NAME("%sself_attn.indexer.weights_proj.weight", pre), nm, hi, d,
                       1.0f / sqrtf((float)d), -1, err));
    }
    TRY(add_norm(p, shard, NAME("%spost_attention_layernorm.weight", pre), d, err));

    if (c->n_routed_experts > 0 && fr_config_layer_is_moe(c, l)) {
        const int64_t e = c->n_routed_experts, mi = c->moe_intermediate_size;
        if (mi < 1) /* e.g. only the MTP layer is MoE and the parser skipped MoE fields */
            return fr_fail(err, FR_ERR_FORMAT,
                           "synth: layer %d is a MoE layer but the parsed config has"
                           " moe_intermediate_size %lld", l, (long long)mi);
        /* Router logits ~ N(0,1) for a unit-RMS input, and a small correction bias:
         * sigmoid scores then spread over all experts instead of collapsing. */
        TRY(add_matrix(p, shard, NAME("%smlp.gate.weight", pre), nm, e, d, 1.0f / sqrtf((float)d), -1, err));
        TRY(add_vec(p, shard, NAME("%smlp.gate.e_score_correction_bias", pre), e, FR_DTYPE_F32,
                    0.0f, 0.02f, err));
        for (int64_t x = 0; x < e; x++) {
            char epre[160];
            snprintf(epre, sizeof epre, "%smlp.experts.%lld.", pre, (long long)x);
            TRY(add_mlp(p, shard, epre, d, mi, FR_QGROUP_EXPERTS, err));
        }
        if (c->n_shared_experts > 0)
            TRY(add_mlp(p, shard, NAME("%smlp.shared_experts.", pre), d, mi * c->n_shared_experts,
                        FR_QGROUP_SHARED, err));
    } else {
        if (c->intermediate_size < 1)
            return fr_fail(err, FR_ERR_FORMAT,
                           "synth: layer %d is a dense layer but the parsed config has"
                           " intermediate_size %lld", l, (long long)c->intermediate_size);
        TRY(add_mlp(p, shard, NAME("%smlp.", pre), d, c->intermediate_size, FR_QGROUP_DENSE, err));
    }
#undef TRY
#undef NAME
    return FR_OK;
}

/* The whole tensor list of a config, ordered by shard (0: embed, norm, head; then
 * one shard per decoder layer including MTP layers), so each shard is one
 * contiguous range of the plan. */
static fr_status build_plan(const fr_config *c, uint64_t seed, synth_plan *p, fr_error *err) {
    memset(p, 0, sizeof *p);
    p->prefix = c->weight_prefix;
    p->seed = seed;
    p->fp8 = c->quant.fp8;
    p->ue8m0 = c->quant.ue8m0;
    p->br = c->quant.block_rows;
    p->bc = c->quant.block_cols;
    memcpy(p->fmt, c->quant.group, sizeof p->fmt);

    int n_total = c->n_layers + c->num_nextn_predict_layers;
    if (c->vocab_size < 1 || c->hidden_size < 1 || c->n_heads < 1 || c->kv_lora_rank < 1 ||
        c->qk_rope_head_dim < 1 || c->qk_nope_head_dim < 0 || c->v_head_dim < 1 ||
        c->q_lora_rank < 0 || c->n_layers < 0 || c->num_nextn_predict_layers < 0 ||
        n_total > FR_MAX_LAYERS || c->n_routed_experts < 0 ||
        c->n_routed_experts > FR_MAX_EXPERTS || c->n_shared_experts < 0)
        return fr_fail(err, FR_ERR_INVALID, "synth: config out of range (vocab %lld, hidden %lld,"
                       " heads %d, layers %d+%d, experts %d)", (long long)c->vocab_size,
                       (long long)c->hidden_size, c->n_heads, c->n_layers,
                       c->num_nextn_predict_layers, c->n_routed_experts);
    /* Blocks beyond 4096x4096 are not a real format; the bound keeps the
     * per-thread block buffer of fill_fp8 small. */
    if (p->fp8 && (p->br < 1 || p->bc < 1 || (int64_t)p->br * p->bc > (1 << 24)))
        return fr_fail(err, FR_ERR_UNSUPPORTED,
                       "synth: FP8 weight_block_size [%d, %d] not supported", p->br, p->bc);
    p->n_shards = 1 + n_total;

    fr_status rc;
    const int64_t d = c->hidden_size;
    if ((rc = add_matrix(p, 0, EMBED_NAME, EMBED_NAME, c->vocab_size, d, 1.0f, -1, err)) ||
        (rc = add_norm(p, 0, "model.norm.weight", d, err)))
        goto fail;
    if (!c->tie_word_embeddings &&
        (rc = add_matrix(p, 0, HEAD_NAME, HEAD_NAME, c->vocab_size, d, 1.0f / sqrtf((float)d), -1, err)))
        goto fail;
    for (int l = 0; l < n_total; l++)
        if ((rc = add_layer(p, c, l, err))) goto fail;
    return FR_OK;
fail:
    plan_free(p);
    return rc;
}

/* ---- filling tensor bytes ---- */

/* Below this many elements a tensor is generated on one thread: thread start-up
 * would cost more than the work. */
#define PAR_MIN 65536

typedef struct {
    const synth_plan *plan;
    size_t base;          /* plan index of the specs[0] handed to the writer */
    /* The scales computed while quantizing the last FP8 weight, so its
     * scale_inv (written next) need not regenerate the weight. */
    size_t cache_owner;   /* plan index of that weight, SIZE_MAX when empty */
    float *cache;         /* its scales, row-major [ceil(rows/br), ceil(cols/bc)] */
    /* Likewise the scale bytes of the last 4-bit weight (MXFP4 or INT4). */
    size_t q4_owner;
    uint8_t *q4_cache;
} fill_ctx;

/* Columns generated per gen_span call in the dense fills (a 4 KiB stack buffer). */
#define SPAN 1024

static inline void put_f32(uint8_t *b, float f) {
    uint32_t v;
    memcpy(&v, &f, 4);
    b[0] = (uint8_t)v;
    b[1] = (uint8_t)(v >> 8);
    b[2] = (uint8_t)(v >> 16);
    b[3] = (uint8_t)(v >> 24);
}

/* Row r of a BF16 or F32 tensor. Bytes are stored little-endian (safetensors)
 * one by one, which the compiler merges into plain stores. */
static SYNTH_CLONES void dense_row(const gen_param *g, int64_t r, bool bf16, uint8_t *buf) {
    float tmp[SPAN];
    for (int64_t c0 = 0; c0 < g->cols; c0 += SPAN) {
        int64_t m = g->cols - c0 < SPAN ? g->cols - c0 : SPAN;
        gen_span(g->seed, r, c0, m, g->mean, g->std, tmp);
        if (bf16) {
            uint8_t *o = buf + 2 * (r * g->cols + c0);
#pragma omp simd
            for (int64_t j = 0; j < m; j++) {
                uint16_t h = bf16_rne(tmp[j]);
                o[2 * j] = (uint8_t)h;
                o[2 * j + 1] = (uint8_t)(h >> 8);
            }
        } else {
            uint8_t *o = buf + 4 * (r * g->cols + c0);
            for (int64_t j = 0; j < m; j++) put_f32(o + 4 * j, tmp[j]);
        }
    }
}

static void fill_dense(const gen_param *g, bool bf16, uint8_t *buf) {
#pragma omp parallel for if (g->rows * g->cols >= PAR_MIN) schedule(static)
    for (int64_t r = 0; r < g->rows; r++) dense_row(g, r, bf16, buf);
}

/* Block (bi, bj) of an FP8 weight: returns its scale - amax/448 (1 for an
 * all-zero block), rounded up to a power of two under ue8m0 - and, when out is
 * not NULL, stores the block's E4M3 bytes there. tmp holds br * bc floats. */
static SYNTH_CLONES float fp8_block(const synth_plan *p, const gen_param *g, int64_t bi,
                                    int64_t bj, float *tmp, uint8_t *out) {
    int64_t r0 = bi * p->br, r1 = r0 + p->br < g->rows ? r0 + p->br : g->rows;
    int64_t c0 = bj * p->bc, c1 = c0 + p->bc < g->cols ? c0 + p->bc : g->cols;
    int64_t w = c1 - c0;
    /* amax over the bit patterns with the sign cleared: for finite floats their
     * integer order is the order of |x|, and an integer max reduction vectorises
     * under every compiler (a float one needs -ffast-math in some). */
    uint32_t amax_bits = 0;
    for (int64_t r = r0; r < r1; r++) {
        float *t = tmp + (r - r0) * w;
        gen_span(g->seed, r, c0, w, 0.0f, g->std, t);
#pragma omp simd reduction(max : amax_bits)
        for (int64_t c = 0; c < w; c++) {
            uint32_t u;
            memcpy(&u, &t[c], 4);
            u &= 0x7fffffffu;
            amax_bits = u > amax_bits ? u : amax_bits;
        }
    }
    float amax;
    memcpy(&amax, &amax_bits, 4);
    float s = amax > 0.0f ? amax / 448.0f : 1.0f;
    if (p->ue8m0) s = exp2f(ceilf(log2f(s)));
    if (!out) return s;
    for (int64_t r = r0; r < r1; r++) {
        const float *t = tmp + (r - r0) * w;
        uint8_t *o = out + r * g->cols + c0;
#pragma omp simd
        for (int64_t c = 0; c < w; c++) o[c] = e4m3_rne(t[c] / s);
    }
    return s;
}

/* All blocks of an FP8 weight, in parallel: quantized bytes to out (when not
 * NULL) and per-block scales to scales[nbr * nbc]. */
static fr_status fill_fp8(const synth_plan *p, const gen_param *g, uint8_t *out, float *scales,
                          fr_error *err) {
    const int64_t nbr = (g->rows + p->br - 1) / p->br, nbc = (g->cols + p->bc - 1) / p->bc;
    const int64_t nb = nbr * nbc;
    const size_t bsz = (size_t)p->br * (size_t)p->bc;
    int failed = 0;
#pragma omp parallel if (g->rows * g->cols >= PAR_MIN)
    {
        float *tmp = malloc(bsz * sizeof *tmp);
        if (!tmp) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic, 4)
        for (int64_t b = 0; b < nb; b++)
            if (tmp) scales[b] = fp8_block(p, g, b / nbc, b % nbc, tmp, out);
        free(tmp);
    }
    if (failed) return fr_fail(err, FR_ERR_NOMEM, "synth: out of memory (FP8 block buffer)");
    return FR_OK;
}

/* A 4-bit weight (MXFP4 when mx, else INT4), quantized row by row by core/mx from the
 * same f32 values as the BF16 form: the element bytes to data and the scale bytes to
 * scales (either may be NULL). */
static fr_status fill_4bit(const gen_param *g, bool mx, uint8_t *data, uint8_t *scales, fr_error *err) {
    const size_t cols = (size_t)g->cols, ng = cols / 32;
    const size_t dbytes = cols / 2, sbytes = mx ? ng : 2 * ng; /* INT4: cols / 8 int32 words */
    int failed = 0;
#pragma omp parallel if (g->rows * g->cols >= PAR_MIN)
    {
        float *row = malloc(cols * sizeof *row);
        /* 4-byte aligned scratch for the part the caller does not want */
        uint32_t *scratch = malloc(dbytes + sbytes + 8);
        if (!row || !scratch) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (int64_t r = 0; r < g->rows; r++) {
            if (!row || !scratch) continue;
            uint8_t *d = data ? data + (size_t)r * dbytes : (uint8_t *)scratch;
            uint8_t *sc =
                scales ? scales + (size_t)r * sbytes : (uint8_t *)scratch + ((dbytes + 3) & ~(size_t)3);
            gen_span(g->seed, r, 0, g->cols, 0.0f, g->std, row);
            if (mx)
                fr_mxfp4_quantize_row(row, g->cols, d, sc);
            else
                fr_int4_quantize_row(row, g->cols, (int32_t *)(void *)d, (uint16_t *)(void *)sc);
        }
        free(row);
        free(scratch);
    }
    if (failed) return fr_fail(err, FR_ERR_NOMEM, "synth: out of memory (4-bit row buffers)");
    return FR_OK;
}

/* Bytes of a spec'd tensor. */
static size_t spec_bytes(const fr_st_spec *s) {
    size_t n = fr_dtype_size(s->dtype);
    for (int d = 0; d < s->ndim; d++) n *= (size_t)s->shape[d];
    return n;
}

/* fr_st_fill_fn: the bytes of specs[index] (plan index base + index). */
static fr_status synth_fill(void *vctx, size_t index, uint8_t *buf, size_t nbytes,
                            fr_error *err) {
    fill_ctx *ctx = vctx;
    const synth_plan *p = ctx->plan;
    size_t i = ctx->base + index;
    if (i >= p->n) return fr_fail(err, FR_ERR_INVALID, "synth: tensor index %zu out of range", i);
    const fr_st_spec *s = &p->specs[i];
    const gen_param *g = &p->gen[i];
    if (nbytes != spec_bytes(s))
        return fr_fail(err, FR_ERR_INVALID, "synth: %s: asked for %zu bytes, tensor has %zu", s->name, nbytes,
                       spec_bytes(s));

    switch (g->kind) {
    case GEN_BF16:
    case GEN_F32:
        fill_dense(g, g->kind == GEN_BF16, buf);
        return FR_OK;
    case GEN_FP8:
    case GEN_SCALE: {
        size_t w = g->kind == GEN_FP8 ? i : g->weight;
        const gen_param *gw = &p->gen[w];
        size_t nsc = (size_t)(((gw->rows + p->br - 1) / p->br) * ((gw->cols + p->bc - 1) / p->bc));
        if (g->kind == GEN_SCALE) {
            int hit = 0;
            /* critical: nothing promises that a set builder fills one tensor at a time */
#pragma omp critical(fr_synth_scale_cache)
            if (ctx->cache_owner == w) {
                for (size_t j = 0; j < nsc; j++) put_f32(buf + 4 * j, ctx->cache[j]);
                hit = 1;
            }
            if (hit) return FR_OK;
        }
        float *scales = malloc(nsc * sizeof *scales);
        if (!scales) return fr_fail(err, FR_ERR_NOMEM, "synth: out of memory (scales)");
        fr_status rc = fill_fp8(p, gw, g->kind == GEN_FP8 ? buf : NULL, scales, err);
        if (!rc && g->kind == GEN_SCALE)
            for (size_t j = 0; j < nsc; j++) put_f32(buf + 4 * j, scales[j]);
        if (!rc && g->kind == GEN_FP8) {
#pragma omp critical(fr_synth_scale_cache)
            {
                float *old = ctx->cache;
                ctx->cache = scales;
                ctx->cache_owner = w;
                scales = old;
            }
        }
        free(scales);
        return rc;
    }
    case GEN_I4_SHAPE: {
        const gen_param *gw = &p->gen[g->weight];
        int32_t dims[2] = {(int32_t)gw->rows, (int32_t)gw->cols};
        memcpy(buf, dims, sizeof dims);
        return FR_OK;
    }
    case GEN_MX_BLOCKS:
    case GEN_I4_PACKED:
    case GEN_MX_SCALES:
    case GEN_I4_SCALE: {
        /* The data tensor computes the scales too and keeps them for the scale tensor
         * that (in plan order) comes next; a scale tensor asked for alone recomputes. */
        const bool data = g->kind == GEN_MX_BLOCKS || g->kind == GEN_I4_PACKED;
        const bool mx = g->kind == GEN_MX_BLOCKS || g->kind == GEN_MX_SCALES;
        size_t w = data ? i : g->weight;
        const gen_param *gw = &p->gen[w];
        size_t sbytes = (size_t)gw->rows * (size_t)(gw->cols / 32) * (mx ? 1 : 2);
        if (!data) {
            int hit = 0;
#pragma omp critical(fr_synth_scale_cache)
            if (ctx->q4_owner == w) {
                memcpy(buf, ctx->q4_cache, sbytes);
                hit = 1;
            }
            if (hit) return FR_OK;
            return fill_4bit(gw, mx, NULL, buf, err);
        }
        uint8_t *sc = malloc(sbytes);
        if (!sc) return fr_fail(err, FR_ERR_NOMEM, "synth: out of memory (scales)");
        fr_status rc = fill_4bit(gw, mx, buf, sc, err);
        if (!rc) {
#pragma omp critical(fr_synth_scale_cache)
            {
                uint8_t *old = ctx->q4_cache;
                ctx->q4_cache = sc;
                ctx->q4_owner = w;
                sc = old;
            }
        }
        free(sc);
        return rc;
    }
    }
    return fr_fail(err, FR_ERR_INVALID, "synth: %s: bad generator", s->name);
}

/* ---- writing ---- */

/* Parse (already edited, re-edited idempotently) config text into cfg and the
 * pretty-printed text that goes to config.json. */
static fr_status prepare(const char *config_json, const fr_synth_opts *opts, char **text,
                         fr_config *cfg, fr_error *err) {
    fr_status rc = edit_to_text(config_json, opts, text, err);
    if (rc) return rc;
    rc = fr_config_parse(*text, NULL, "synth config", cfg, err);
    if (rc) {
        free(*text);
        *text = NULL;
    }
    return rc;
}

/* mkdir -p; an existing non-directory anywhere on the path is an error. */
static fr_status make_dirs(const char *path, fr_error *err) {
    size_t len = strlen(path);
    if (len == 0) return fr_fail(err, FR_ERR_INVALID, "synth: empty output directory");
    char *buf = strdup(path);
    if (!buf) return fr_fail(err, FR_ERR_NOMEM, "synth: out of memory");
    fr_status rc = FR_OK;
    for (size_t i = 1; i <= len && !rc; i++) {
        if (buf[i] != '/' && buf[i] != 0) continue;
        char saved = buf[i];
        buf[i] = 0;
        struct stat st;
        if (mkdir(buf, 0777) != 0 && errno != EEXIST)
            rc = fr_fail(err, FR_ERR_IO, "synth: mkdir %s: %s", buf, strerror(errno));
        else if (stat(buf, &st) != 0)
            rc = fr_fail(err, FR_ERR_IO, "synth: stat %s: %s", buf, strerror(errno));
        else if (!S_ISDIR(st.st_mode))
            rc = fr_fail(err, FR_ERR_IO, "synth: %s exists and is not a directory", buf);
        buf[i] = saved;
    }
    free(buf);
    return rc;
}

static char *path_join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *s = malloc(n);
    if (s) snprintf(s, n, "%s/%s", dir, name);
    return s;
}

static fr_status write_text(const char *dir, const char *name, const char *text, fr_error *err) {
    char *path = path_join(dir, name);
    if (!path) return fr_fail(err, FR_ERR_NOMEM, "synth: out of memory");
    fr_status rc = FR_OK;
    FILE *f = fopen(path, "wb");
    if (!f) {
        rc = fr_fail(err, FR_ERR_IO, "synth: open %s: %s", path, strerror(errno));
    } else {
        size_t n = strlen(text);
        int bad = fwrite(text, 1, n, f) != n || fputc('\n', f) == EOF;
        if (fclose(f) != 0 || bad)
            rc = fr_fail(err, FR_ERR_IO, "synth: write %s: %s", path, strerror(errno));
    }
    free(path);
    return rc;
}

/* A file that would shadow the layout we are writing (a stale index next to a new
 * single file, or a stale single file next to new shards) is removed. */
static fr_status remove_stale(const char *dir, const char *name, fr_error *err) {
    char *path = path_join(dir, name);
    if (!path) return fr_fail(err, FR_ERR_NOMEM, "synth: out of memory");
    fr_status rc = FR_OK;
    if (unlink(path) != 0 && errno != ENOENT)
        rc = fr_fail(err, FR_ERR_IO, "synth: remove stale %s: %s", path, strerror(errno));
    free(path);
    return rc;
}

static fr_status write_generation_config(const char *dir, const fr_config *c, fr_error *err) {
    cJSON *g = cJSON_CreateObject();
    if (!g) return fr_fail(err, FR_ERR_NOMEM, "synth: out of memory");
    if (c->bos_token_id >= 0) cJSON_AddNumberToObject(g, "bos_token_id", c->bos_token_id);
    if (c->n_eos == 1) {
        cJSON_AddNumberToObject(g, "eos_token_id", c->eos_token_ids[0]);
    } else if (c->n_eos > 1) {
        cJSON *a = cJSON_AddArrayToObject(g, "eos_token_id");
        for (int i = 0; a && i < c->n_eos; i++)
            cJSON_AddItemToArray(a, cJSON_CreateNumber(c->eos_token_ids[i]));
    }
    cJSON_AddBoolToObject(g, "do_sample", 0);
    char *text = fr_synth_print_json(g);
    cJSON_Delete(g);
    if (!text) return fr_fail(err, FR_ERR_NOMEM, "synth: out of memory");
    fr_status rc = write_text(dir, "generation_config.json", text, err);
    free(text);
    return rc;
}

#define ST_METADATA "{\"format\":\"pt\"}"

/* The safetensors files: model.safetensors, or one shard per plan shard plus
 * model.safetensors.index.json. */
static fr_status write_tensors(const synth_plan *p, const char *dir, bool single_file,
                               fr_error *err) {
    fill_ctx ctx = {.plan = p, .cache_owner = SIZE_MAX, .q4_owner = SIZE_MAX};
    fr_status rc = FR_OK;
    char *path = NULL;
    char **files = NULL;              /* shard file names, [n_shards] */
    const char **file_of = NULL;      /* per tensor: its shard's name (borrowed from files) */
    const char **names = NULL;        /* per tensor: its name (borrowed from the plan) */
    uint64_t total = 0;
    size_t begin = 0;

    if (single_file) {
        if ((rc = remove_stale(dir, "model.safetensors.index.json", err))) goto out;
        if (!(path = path_join(dir, "model.safetensors"))) goto nomem;
        rc = fr_st_write(path, p->specs, p->n, synth_fill, &ctx, ST_METADATA, err);
        goto out;
    }

    if ((rc = remove_stale(dir, "model.safetensors", err))) goto out;
    files = calloc((size_t)p->n_shards, sizeof *files);
    file_of = calloc(p->n ? p->n : 1, sizeof *file_of);
    names = calloc(p->n ? p->n : 1, sizeof *names);
    if (!files || !file_of || !names) goto nomem;
    for (int s = 0; s < p->n_shards; s++) {
        char name[64];
        snprintf(name, sizeof name, "model-%05d-of-%05d.safetensors", s + 1, p->n_shards);
        if (!(files[s] = strdup(name))) goto nomem;
        size_t end = begin;
        while (end < p->n && p->gen[end].shard == s) {
            file_of[end] = files[s];
            names[end] = p->specs[end].name;
            total += (uint64_t)spec_bytes(&p->specs[end]);
            end++;
        }
        free(path);
        if (!(path = path_join(dir, name))) goto nomem;
        ctx.base = begin;
        if ((rc = fr_st_write(path, p->specs + begin, end - begin, synth_fill, &ctx, ST_METADATA,
                              err)))
            goto out;
        begin = end;
    }
    if (begin != p->n) {
        rc = fr_fail(err, FR_ERR_INVALID, "synth: tensor plan is not ordered by shard");
        goto out;
    }
    rc = fr_st_write_index(dir, names, file_of, p->n, total, err);
    goto out;
nomem:
    rc = fr_fail(err, FR_ERR_NOMEM, "synth: out of memory");
out:
    if (files)
        for (int s = 0; s < p->n_shards; s++) free(files[s]);
    free(files);
    free(file_of);
    free(names);
    free(path);
    free(ctx.cache);
    free(ctx.q4_cache);
    return rc;
}

fr_status fr_synth_write(const char *config_json, const fr_synth_opts *opts, const char *out_dir,
                         fr_error *err) {
    fr_config cfg;
    char *text = NULL;
    synth_plan plan;
    if (!opts) opts = &no_opts;
    fr_status rc = prepare(config_json, opts, &text, &cfg, err);
    if (rc) return rc;
    if ((rc = build_plan(&cfg, opts->seed, &plan, err))) goto out_text;
    if ((rc = make_dirs(out_dir, err))) goto out_plan;
    if ((rc = write_text(out_dir, "config.json", text, err))) goto out_plan;
    if ((rc = write_generation_config(out_dir, &cfg, err))) goto out_plan;
    rc = write_tensors(&plan, out_dir, opts->single_file, err);
out_plan:
    plan_free(&plan);
out_text:
    free(text);
    return rc;
}

fr_status fr_synth_memory(const char *config_json, const fr_synth_opts *opts, fr_config *cfg,
                          fr_st_set **set, fr_error *err) {
    *set = NULL;
    char *text = NULL;
    synth_plan plan;
    if (!opts) opts = &no_opts;
    fr_status rc = prepare(config_json, opts, &text, cfg, err);
    if (rc) return rc;
    free(text);
    if ((rc = build_plan(cfg, opts->seed, &plan, err))) return rc;
    fill_ctx ctx = {.plan = &plan, .cache_owner = SIZE_MAX, .q4_owner = SIZE_MAX};
    rc = fr_st_open_memory(plan.specs, plan.n, synth_fill, &ctx, set, err);
    free(ctx.cache);
    free(ctx.q4_cache);
    plan_free(&plan);
    return rc;
}
