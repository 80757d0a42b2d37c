/* bench_batch.h - batched decode throughput for `frontier bench --batch`. */
#ifndef FR_BENCH_BATCH_H
#define FR_BENCH_BATCH_H

#include <stdbool.h>

#include "model/forward.h"

/* For each batch size, B sequences with their own n_prompt-token prompts decode n_gen
 * steps together; prints a table (or JSON lines) against `bandwidth` bytes/s. */
fr_status fr_bench_batches(fr_model *m, fr_backend *be, fr_kv_dtype kv_dtype, const int64_t *batches, int n_batches,
                           int64_t n_prompt, int64_t n_gen, double bandwidth, bool json, const char *label,
                           fr_error *err);

#endif
