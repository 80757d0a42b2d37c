/* bench_serve_report.c - statistics, markdown tables and JSON of `frontier bench-serve`.
 *
 * Definitions follow `vllm bench serve` (docs SERVING.md §8) so numbers compare across
 * engines: per request TTFT, E2E latency, TPOT = (E2E - TTFT) / (output_len - 1) only
 * when output_len > 1, ITL samples pooled over requests; failed requests are left out
 * of every latency statistic and count zero tokens; throughputs divide by the level's
 * duration (first dispatch to last completion). */
#include "args.h"
#include "bench_serve_report.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

double fr_bs_percentile(const double *sorted, int64_t n, double p) {
    double rank = p / 100.0 * (double)(n - 1);
    int64_t lo = (int64_t)floor(rank), hi = (int64_t)ceil(rank);
    if (lo < 0) lo = 0;
    if (hi > n - 1) hi = n - 1;
    return sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - (double)lo);
}

void fr_bs_stat_of(double *x, int64_t n, fr_bs_stat *out) {
    memset(out, 0, sizeof *out);
    if (n <= 0) return;
    qsort(x, (size_t)n, sizeof *x, fr_cmp_double);
    double sum = 0;
    for (int64_t i = 0; i < n; i++) sum += x[i];
    double mean = sum / (double)n, var = 0;
    for (int64_t i = 0; i < n; i++) var += (x[i] - mean) * (x[i] - mean);
    out->n = n;
    out->mean = mean;
    out->std = sqrt(var / (double)n);
    out->median = fr_bs_percentile(x, n, 50);
    out->p99 = fr_bs_percentile(x, n, 99);
    out->min = x[0];
    out->max = x[n - 1];
}

typedef struct {
    double t;
    int delta; /* +1 start, -1 end */
} fr_bs_edge;

static int cmp_edge(const void *a, const void *b) {
    const fr_bs_edge *x = a, *y = b;
    if (x->t != y->t) return (x->t > y->t) - (x->t < y->t);
    return x->delta - y->delta; /* half-open intervals: an end before a start at the same time */
}

fr_status fr_bs_level_compute(fr_bs_level *lv, const fr_bs_result *res, int64_t n, double duration, fr_error *err) {
    int64_t n_itl = 0;
    for (int64_t i = 0; i < n; i++)
        if (res[i].ok) n_itl += res[i].n_itl;
    size_t per = (size_t)(n > 0 ? n : 1);
    double *ttft = malloc(per * sizeof *ttft), *tpot = malloc(per * sizeof *tpot);
    double *e2el = malloc(per * sizeof *e2el), *tps = malloc(per * sizeof *tps);
    double *itl = malloc((size_t)(n_itl > 0 ? n_itl : 1) * sizeof *itl);
    fr_bs_edge *edges = malloc(2 * per * sizeof *edges);
    fr_status rc = FR_OK;
    if (!ttft || !tpot || !e2el || !tps || !itl || !edges) {
        rc = fr_fail(err, FR_ERR_NOMEM, "out of memory computing statistics");
        goto out;
    }
    lv->num_prompts = n;
    lv->completed = lv->failed = lv->total_input = lv->total_output = 0;
    lv->first_error[0] = 0;
    int64_t k = 0, k_tpot = 0, k_itl = 0, n_edges = 0;
    for (int64_t i = 0; i < n; i++) {
        const fr_bs_result *r = &res[i];
        if (!r->ok) {
            if (!lv->failed++) snprintf(lv->first_error, sizeof lv->first_error, "%s", r->error);
            continue;
        }
        lv->completed++;
        lv->total_input += r->input_len;
        lv->total_output += r->output_tokens;
        ttft[k] = r->ttft * 1e3;
        e2el[k] = r->latency * 1e3;
        tps[k] = r->latency > 0 ? (double)r->output_tokens / r->latency : 0;
        k++;
        if (r->output_tokens > 1) tpot[k_tpot++] = (r->latency - r->ttft) / (double)(r->output_tokens - 1) * 1e3;
        for (int64_t j = 0; j < r->n_itl; j++) itl[k_itl++] = r->itl[j] * 1e3;
        edges[n_edges++] = (fr_bs_edge){r->st, +1};
        edges[n_edges++] = (fr_bs_edge){r->st + r->latency, -1};
    }
    fr_bs_stat_of(ttft, k, &lv->ttft);
    fr_bs_stat_of(tpot, k_tpot, &lv->tpot);
    fr_bs_stat_of(itl, k_itl, &lv->itl);
    fr_bs_stat_of(e2el, k, &lv->e2el);
    fr_bs_stat_of(tps, k, &lv->req_tps);
    qsort(edges, (size_t)n_edges, sizeof *edges, cmp_edge);
    int64_t cur = 0;
    lv->max_concurrent = 0;
    for (int64_t i = 0; i < n_edges; i++) {
        cur += edges[i].delta;
        if (cur > lv->max_concurrent) lv->max_concurrent = cur;
    }
    lv->duration = duration;
    double d = duration > 0 ? duration : 1e-9;
    lv->request_throughput = (double)lv->completed / d;
    lv->output_throughput = (double)lv->total_output / d;
    lv->total_token_throughput = (double)(lv->total_input + lv->total_output) / d;
out:
    free(ttft);
    free(tpot);
    free(e2el);
    free(tps);
    free(itl);
    free(edges);
    return rc;
}

static void stat_row(FILE *f, const char *name, const fr_bs_stat *s, const char *fmt) {
    if (!s->n) {
        fprintf(f, "| %s | - | - | - |\n", name);
        return;
    }
    fprintf(f, "| %s | ", name);
    fprintf(f, fmt, s->mean);
    fprintf(f, " | ");
    fprintf(f, fmt, s->median);
    fprintf(f, " | ");
    fprintf(f, fmt, s->p99);
    fprintf(f, " |\n");
}

void fr_bs_print_level(FILE *f, const fr_bs_level *lv, int64_t input_len, int64_t output_len) {
    fprintf(f, "\n### concurrency %lld: %lld requests, %lld input / %lld output tokens\n\n",
            (long long)lv->concurrency, (long long)lv->num_prompts, (long long)input_len, (long long)output_len);
    fprintf(f, "| metric | value |\n|---|---:|\n");
    fprintf(f, "| successful requests | %lld |\n", (long long)lv->completed);
    fprintf(f, "| failed requests | %lld |\n", (long long)lv->failed);
    fprintf(f, "| duration (s) | %.2f |\n", lv->duration);
    fprintf(f, "| total input tokens | %lld |\n", (long long)lv->total_input);
    fprintf(f, "| total output tokens | %lld |\n", (long long)lv->total_output);
    fprintf(f, "| request throughput (req/s) | %.3f |\n", lv->request_throughput);
    fprintf(f, "| output token throughput (tok/s) | %.2f |\n", lv->output_throughput);
    fprintf(f, "| total token throughput (tok/s) | %.2f |\n", lv->total_token_throughput);
    fprintf(f, "| max concurrent requests | %lld |\n", (long long)lv->max_concurrent);
    fprintf(f, "\n| per request | mean | median | p99 |\n|---|---:|---:|---:|\n");
    stat_row(f, "TTFT (ms)", &lv->ttft, "%.2f");
    stat_row(f, "TPOT (ms)", &lv->tpot, "%.2f");
    stat_row(f, "ITL (ms)", &lv->itl, "%.2f");
    stat_row(f, "E2E latency (ms)", &lv->e2el, "%.2f");
    stat_row(f, "output tok/s", &lv->req_tps, "%.2f");
    if (lv->failed) fprintf(f, "\nfirst failure: %s\n", lv->first_error);
}

void fr_bs_print_summary(FILE *f, const fr_bs_level *lv, int n, int64_t base_concurrency) {
    fprintf(f, "\n### summary\n\n");
    fprintf(f, "| concurrency | ok | failed | duration (s) | req/s | output tok/s | total tok/s | speedup vs c=%lld "
               "| mean TTFT (ms) | mean TPOT (ms) | mean ITL (ms) | output tok/s per request |\n",
            (long long)base_concurrency);
    fprintf(f, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (int i = 0; i < n; i++) {
        const fr_bs_level *l = &lv[i];
        fprintf(f, "| %lld | %lld | %lld | %.2f | %.3f | %.2f | %.2f | ", (long long)l->concurrency,
                (long long)l->completed, (long long)l->failed, l->duration, l->request_throughput,
                l->output_throughput, l->total_token_throughput);
        if (l->speedup > 0) fprintf(f, "%.2fx", l->speedup);
        else fprintf(f, "-");
        fprintf(f, " | %.2f | %.2f | %.2f | %.2f |\n", l->ttft.mean, l->tpot.mean, l->itl.mean, l->req_tps.mean);
    }
}

/* {"mean":..,"median":..,"std":..,"p99":..,"min":..,"max":..,"n":..}, or null when empty. */
static cJSON *stat_json(const fr_bs_stat *s) {
    if (!s->n) return cJSON_CreateNull();
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddNumberToObject(o, "n", (double)s->n);
    cJSON_AddNumberToObject(o, "mean", s->mean);
    cJSON_AddNumberToObject(o, "median", s->median);
    cJSON_AddNumberToObject(o, "std", s->std);
    cJSON_AddNumberToObject(o, "p99", s->p99);
    cJSON_AddNumberToObject(o, "min", s->min);
    cJSON_AddNumberToObject(o, "max", s->max);
    return o;
}

static cJSON *level_json(const fr_bs_level *l, const fr_bs_result *res, int64_t n) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddNumberToObject(o, "concurrency", (double)l->concurrency);
    cJSON_AddNumberToObject(o, "num_prompts", (double)l->num_prompts);
    cJSON_AddNumberToObject(o, "completed", (double)l->completed);
    cJSON_AddNumberToObject(o, "failed", (double)l->failed);
    cJSON_AddNumberToObject(o, "duration_s", l->duration);
    cJSON_AddNumberToObject(o, "total_input_tokens", (double)l->total_input);
    cJSON_AddNumberToObject(o, "total_output_tokens", (double)l->total_output);
    cJSON_AddNumberToObject(o, "request_throughput", l->request_throughput);
    cJSON_AddNumberToObject(o, "output_throughput", l->output_throughput);
    cJSON_AddNumberToObject(o, "total_token_throughput", l->total_token_throughput);
    if (l->speedup > 0) cJSON_AddNumberToObject(o, "speedup", l->speedup);
    else cJSON_AddNullToObject(o, "speedup");
    cJSON_AddNumberToObject(o, "max_concurrent_requests", (double)l->max_concurrent);
    cJSON_AddItemToObject(o, "ttft_ms", stat_json(&l->ttft));
    cJSON_AddItemToObject(o, "tpot_ms", stat_json(&l->tpot));
    cJSON_AddItemToObject(o, "itl_ms", stat_json(&l->itl));
    cJSON_AddItemToObject(o, "e2el_ms", stat_json(&l->e2el));
    cJSON_AddItemToObject(o, "output_tokens_per_s_per_request", stat_json(&l->req_tps));
    if (l->failed) cJSON_AddStringToObject(o, "first_error", l->first_error);
    else cJSON_AddNullToObject(o, "first_error");
    /* Per request, in dispatch order; latencies in ms, null for failed requests. */
    cJSON *rq = cJSON_AddArrayToObject(o, "requests");
    for (int64_t i = 0; rq && i < n; i++) {
        const fr_bs_result *r = &res[i];
        cJSON *e = cJSON_CreateObject();
        if (!e) break;
        cJSON_AddNumberToObject(e, "input_len", (double)r->input_len);
        cJSON_AddNumberToObject(e, "max_tokens", (double)r->max_tokens);
        cJSON_AddBoolToObject(e, "ok", r->ok);
        if (r->ok) {
            cJSON_AddNumberToObject(e, "output_tokens", (double)r->output_tokens);
            cJSON_AddNumberToObject(e, "ttft_ms", r->ttft * 1e3);
            cJSON_AddNumberToObject(e, "e2el_ms", r->latency * 1e3);
            cJSON_AddNumberToObject(e, "chunks", (double)(r->n_itl + 1));
        } else {
            cJSON_AddStringToObject(e, "error", r->error);
        }
        cJSON_AddItemToArray(rq, e);
    }
    return o;
}

fr_status fr_bs_write_json(const char *path, const fr_bs_run_info *info, const fr_bs_level *lv, int n_levels,
                        fr_bs_result *const *res, const int64_t *n_res, int64_t base_concurrency, fr_error *err) {
    cJSON *root = cJSON_CreateObject();
    if (!root) return fr_fail(err, FR_ERR_NOMEM, "out of memory building the JSON report");
    cJSON_AddStringToObject(root, "tool", "frontier bench-serve");
    cJSON_AddStringToObject(root, "url", info->url);
    cJSON_AddStringToObject(root, "model", info->model);
    cJSON_AddStringToObject(root, "endpoint", "/v1/completions");
    cJSON_AddNumberToObject(root, "input_len", (double)info->input_len);
    cJSON_AddNumberToObject(root, "output_len", (double)info->output_len);
    cJSON_AddNumberToObject(root, "range_ratio", info->range_ratio);
    cJSON_AddNumberToObject(root, "seed", (double)info->seed);
    cJSON_AddNumberToObject(root, "prompt_token_choices", (double)info->vocab_allowed);
    cJSON_AddNumberToObject(root, "speedup_base_concurrency", (double)base_concurrency);
    cJSON *levels = cJSON_AddArrayToObject(root, "levels");
    for (int i = 0; levels && i < n_levels; i++) cJSON_AddItemToArray(levels, level_json(&lv[i], res[i], n_res[i]));
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    if (!text) return fr_fail(err, FR_ERR_NOMEM, "out of memory printing the JSON report");
    FILE *f = fopen(path, "w");
    if (!f) {
        free(text);
        return fr_fail(err, FR_ERR_IO, "--json: cannot write %s", path);
    }
    int bad = fputs(text, f) < 0 || fputc('\n', f) == EOF;
    bad |= fclose(f) != 0;
    free(text);
    if (bad) return fr_fail(err, FR_ERR_IO, "--json: write to %s failed", path);
    return FR_OK;
}
