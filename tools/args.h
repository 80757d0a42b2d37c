/* args.h - strict command-line value parsing shared by the subcommands.
 * Every parser rejects empty strings, trailing garbage and out-of-range values
 * with a one-line message in err. */
#ifndef FR_ARGS_H
#define FR_ARGS_H

#include <stdint.h>

#include "core/status.h"

#define FR_MAX_PROMPT_IDS (1 << 20)

fr_status fr_arg_i64(const char *what, const char *s, int64_t lo, int64_t hi, int64_t *out, fr_error *err);
fr_status fr_arg_f32(const char *what, const char *s, float lo, float hi, float *out, fr_error *err);
fr_status fr_arg_u64(const char *what, const char *s, uint64_t *out, fr_error *err);
/* "1,2,3" -> malloc'd ids (caller frees); at most FR_MAX_PROMPT_IDS, each in [0, INT32_MAX]. */
fr_status fr_arg_ids(const char *s, int32_t **ids, int64_t *n, fr_error *err);

/* CLOCK_MONOTONIC seconds, for the timings the commands print. */
double fr_now_s(void);
/* qsort comparator of doubles, ascending (medians of timings). */
int fr_cmp_double(const void *a, const void *b);

/* "1,4,16" -> at most cap values, each in [lo, hi], into out; *n counts them. */
fr_status fr_arg_list_i64(const char *what, const char *s, int64_t lo, int64_t hi, int64_t *out, int cap, int *n,
                          fr_error *err);

/* argv[*i] is an option that takes a value: return it and advance *i, or NULL (err set). */
const char *fr_arg_value(int argc, char **argv, int *i, fr_error *err);

/* The backend a --device value names: "cpu" (threads: 0 = all cores), "cuda" or
 * "cuda:N" (GPU N). NULL device means cpu. */
typedef struct fr_backend fr_backend;
fr_status fr_backend_open(const char *device, int threads, fr_backend **out, fr_error *err);
/* Is `device` a name fr_backend_open accepts? (Checked while parsing options.) */
fr_status fr_arg_device(const char *s, fr_error *err);

/* Print "frontier CMD: message" to stderr (one line) and return 1 (exit status). */
int fr_cli_error(const char *cmd, const fr_error *err);

#endif
