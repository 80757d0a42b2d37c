/* bench_serve_report.h - what `frontier bench-serve` measures per request and per
 * concurrency level, and the statistics, tables and JSON built from it.
 *
 * The client (cmd_bench_serve.c) fills one fr_bs_result per request; this module turns
 * a level's results into the numbers of `vllm bench serve` (docs SERVING.md §8) and
 * prints them. It owns no network code. */
#ifndef FR_BENCH_SERVE_REPORT_H
#define FR_BENCH_SERVE_REPORT_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "core/status.h"

/* One request's outcome; all times in seconds on CLOCK_MONOTONIC. */
typedef struct {
    int64_t input_len;     /* prompt tokens sent */
    int64_t max_tokens;    /* requested output tokens */
    bool ok;               /* HTTP 200, a complete stream ([DONE]) with at least one chunk */
    double st;             /* just before the request was handed to the transfer loop */
    double ttft;           /* first chunk with a non-empty `choices` - st */
    double latency;        /* last such chunk - st (E2E latency) */
    int64_t output_tokens; /* usage.completion_tokens, else the number of chunks */
    double *itl;           /* [n_itl] gaps between consecutive chunks (owned) */
    int64_t n_itl;
    char error[320];       /* why it failed (one line), "" when ok */
} fr_bs_result;

/* Summary statistics of a sample (numpy conventions: population std, linear percentile). */
typedef struct {
    int64_t n;
    double mean, median, std, p99, min, max;
} fr_bs_stat;

/* A concurrency level's aggregates. Latencies in the stats are in milliseconds. */
typedef struct {
    int64_t concurrency, num_prompts, completed, failed;
    double duration;                 /* first dispatch -> last request done, seconds */
    int64_t total_input, total_output;
    double request_throughput, output_throughput, total_token_throughput; /* per second */
    int64_t max_concurrent;          /* most requests in flight at once (over successes) */
    fr_bs_stat ttft, tpot, itl, e2el;   /* ms */
    fr_bs_stat req_tps;                 /* per-request output tokens / E2E latency */
    double speedup;                  /* output_throughput / that of the base level; 0 unknown */
    char first_error[320];
} fr_bs_level;

/* Stats of x[0..n) (sorts x in place); an empty sample gives n = 0 and zeros. */
void fr_bs_stat_of(double *x, int64_t n, fr_bs_stat *out);
/* numpy.percentile(x, p) with linear interpolation, x sorted ascending, n >= 1. */
double fr_bs_percentile(const double *sorted, int64_t n, double p);

/* Fill the level from its results (copies what it needs). */
fr_status fr_bs_level_compute(fr_bs_level *lv, const fr_bs_result *res, int64_t n, double duration, fr_error *err);

void fr_bs_print_level(FILE *f, const fr_bs_level *lv, int64_t input_len, int64_t output_len);
void fr_bs_print_summary(FILE *f, const fr_bs_level *lv, int n, int64_t base_concurrency);

/* The run's parameters, echoed in the JSON. */
typedef struct {
    const char *url, *model;
    int64_t input_len, output_len;
    double range_ratio;
    uint64_t seed;
    int64_t vocab_allowed; /* token ids prompts are drawn from */
} fr_bs_run_info;

/* Write every level's numbers and per-request samples to path. */
fr_status fr_bs_write_json(const char *path, const fr_bs_run_info *info, const fr_bs_level *lv, int n_levels,
                        fr_bs_result *const *res, const int64_t *n_res, int64_t base_concurrency, fr_error *err);

#endif
