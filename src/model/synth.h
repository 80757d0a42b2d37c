/* synth.h - random-weight checkpoints in the exact released layout.
 *
 * `frontier synth` writes config.json, generation_config.json and safetensors
 * (one tensor per expert; FP8-E4M3 with 128x128 `weight_scale_inv` blocks when
 * asked; DSA indexer weights on the layers that run an indexer;
 * each module group in the format the config's quantization_config names,
 * so compressed-tensors INT4 experts for kimi-k2.5 as released and MXFP4 under a
 * "frontier" config; MTP layers when the config has num_nextn_predict_layers), deterministic
 * by seed. Weights are scaled so activations stay in a realistic range and the
 * router does not collapse onto a few experts. The same generator fills an
 * in-memory set for `--load-format dummy` benchmarks at real shapes. */
#ifndef FR_SYNTH_H
#define FR_SYNTH_H

#include <stdbool.h>
#include <stdint.h>

#include "../io/config.h"
#include "../io/safetensors.h"

typedef struct {
    uint64_t seed;
    int layers;       /* > 0: override num_hidden_layers (first_k_dense_replace clamped) */
    int experts;      /* > 0: override n_routed_experts (top-k and groups clamped to fit) */
    bool fp8_blocks;  /* store linear weights as FP8-E4M3 + weight_scale_inv, as releases do */
    bool mxfp4_experts; /* routed experts as MXFP4 blocks + scales ("frontier" quantization_config) */
    bool single_file; /* one model.safetensors instead of shards + index.json */
} fr_synth_opts;

/* Config JSON text of a preset: "tiny", "moonlight", "deepseek-v3", "kimi-k2.5",
 * "deepseek-v3.2", "glm-5", and the DSA test sizes "deepseek-v3.2-tiny", "glm-5-tiny".
 * Caller frees *json. FR_ERR_INVALID for an unknown name (message lists presets). */
fr_status fr_synth_preset_json(const char *preset, char **json, fr_error *err);

/* Apply opts (layers, experts, fp8 quantization_config) to config JSON text; the
 * result is what gets written as config.json. Caller frees *out. */
fr_status fr_synth_edit_json(const char *json, const fr_synth_opts *opts, char **out,
                             fr_error *err);

/* Write a checkpoint directory (created if missing) for the given config JSON text
 * (already edited). */
fr_status fr_synth_write(const char *config_json, const fr_synth_opts *opts, const char *out_dir,
                         fr_error *err);

/* JSON text laid out like the released config files (two-space indents), caller
 * frees; NULL when out of memory. */
struct cJSON;
char *fr_synth_print_json(const struct cJSON *j);

/* The same tensors, in memory: parses config_json into *cfg and builds *set. */
fr_status fr_synth_memory(const char *config_json, const fr_synth_opts *opts, fr_config *cfg,
                          fr_st_set **set, fr_error *err);

#endif
