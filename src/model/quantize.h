/* quantize.h - 4-bit experts: `frontier quantize` and load-time conversion.
 *
 * fr_quantize_checkpoint rewrites a checkpoint directory with each module group
 * (attention, dense MLPs, shared experts, routed experts; see config.h) in a chosen
 * format, streaming one tensor at a time, and records the result in config.json as
 * quantization_config {"quant_method": "frontier", "format_by_group": {...}}, which
 * the loader reads back. fr_model_quantize_experts does the routed-expert part of it
 * at load time, into memory the model owns. Both convert through the same exact
 * dequantization and the same core/mx quantizer, so they produce identical bytes. */
#ifndef FR_QUANTIZE_H
#define FR_QUANTIZE_H

#include <stdbool.h>

#include "model.h"

#define FR_QUANT_KEEP (-1) /* a group target: leave the group as it is stored */

typedef struct {
    int target[FR_QGROUP_COUNT]; /* fr_qformat per group (bf16, fp8, mxfp4), or FR_QUANT_KEEP */
    bool progress;               /* one line per layer and per file on stderr */
} fr_quantize_opts;

/* Write out_dir (created if missing; not in_dir) from the checkpoint in in_dir: one
 * output shard per input shard with the same names, the index when the input had
 * one, config.json with the new quantization_config, and every other file of in_dir
 * (tokenizer, generation_config.json, ...) copied. Weights whose group keeps its
 * format are copied byte for byte; the others are dequantized exactly (FP8 blocks,
 * MXFP4, INT4) and requantized. Resident memory: about one input shard (its pages are
 * dropped once its output shard is written) plus two of the largest tensors. */
fr_status fr_quantize_checkpoint(const char *in_dir, const char *out_dir, const fr_quantize_opts *opts,
                                 fr_error *err);

/* Replace every routed expert's view by an MXFP4 copy (to must be FR_QFMT_MXFP4) in
 * memory each layer owns (freed with the model), quantized in parallel over experts.
 * Experts already MXFP4 are left alone. */
fr_status fr_model_quantize_experts(fr_model *m, fr_qformat to, fr_error *err);

/* Row r of w as float32. Exact for every stored format except FP8 blocks, whose
 * products e4m3 * scale_inv (up to 28 significant bits) are computed exactly in double
 * and rounded to odd: any later rounding to 22 bits or fewer (BF16, E4M3, E2M1, INT4)
 * then decides as it would on the exact value. */
void fr_weight_row_exact(const fr_weight *w, int64_t r, float *out);

/* The module group of a linear weight named by its primary tensor (".weight", or the
 * 4-bit ".weight_blocks" / ".weight_packed"), under weight prefix `prefix`: the group,
 * with *layer set, or -1 for any other tensor. */
int fr_linear_group(const char *name, const char *prefix, int *layer);

#endif
