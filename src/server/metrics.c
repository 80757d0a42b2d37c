/* metrics.c - Prometheus exposition (see metrics.h). */
#include "metrics.h"

#include <string.h>

/* Bucket edges, chosen so common SLOs fall on an edge: TTFT has le="2" (a 2 s TTFT SLO would
 * otherwise read green until the next edge), ITL has 0.05 and 0.1, E2E 60 and 120. */
static const double ttft_le[] = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0,
                                 2.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0};
static const double itl_le[] = {0.001, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5,
                                0.75, 1.0, 2.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0};
static const double e2e_le[] = {0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0,
                                50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0};

static const struct {
    const char *name, *help;
} hist_names[SRV_HIST_COUNT] = {
    {"vllm:time_to_first_token_seconds", "Time from request arrival to the first generated token."},
    {"vllm:inter_token_latency_seconds", "Time between consecutive generated tokens of a request."},
    {"vllm:e2e_request_latency_seconds", "Time from request arrival to its last token."},
    {"vllm:request_queue_time_seconds", "Time a request waited in the engine queue before it was scheduled."},
};

void srv_metrics_init(srv_metrics *m) {
    memset(m, 0, sizeof *m);
    const double *edges[SRV_HIST_COUNT] = {ttft_le, itl_le, e2e_le, e2e_le};
    const int n[SRV_HIST_COUNT] = {(int)(sizeof ttft_le / sizeof *ttft_le), (int)(sizeof itl_le / sizeof *itl_le),
                                   (int)(sizeof e2e_le / sizeof *e2e_le), (int)(sizeof e2e_le / sizeof *e2e_le)};
    for (int k = 0; k < SRV_HIST_COUNT; k++) m->hist[k].le = edges[k], m->hist[k].n = n[k];
}

void srv_metrics_observe(srv_metrics *m, srv_hist_kind k, double s) {
    srv_hist *h = &m->hist[k];
    if (!(s >= 0)) s = 0; /* clock quirks or NaN never poison the sum */
    int i = 0;
    while (i < h->n && s > h->le[i]) i++;
    if (i < h->n) h->count[i]++;
    h->total++;
    h->sum += s;
}

void srv_metrics_finished(srv_metrics *m, fr_finish reason) {
    int i = reason == FR_FINISH_STOP ? 0 : reason == FR_FINISH_LENGTH ? 1 : reason == FR_FINISH_ABORT ? 2 : 3;
    m->finished[i]++;
}

void srv_metrics_http(srv_metrics *m, const char *handler, const char *method, int status) {
    for (int i = 0; i < m->n_http; i++)
        if (m->http[i].handler == handler && m->http[i].method == method && m->http[i].status == status) {
            m->http[i].count++;
            return;
        }
    if (m->n_http == SRV_MAX_HTTP_SERIES) return; /* bounded: unusual combinations stop being counted */
    m->http[m->n_http].handler = handler;
    m->http[m->n_http].method = method;
    m->http[m->n_http].status = status;
    m->http[m->n_http++].count = 1;
}

/* model_name label value, escaped as the exposition format requires. */
static void escape_label(const char *s, char *out, size_t cap) {
    size_t j = 0;
    for (; *s && j + 3 < cap; s++) {
        if (*s == '\\' || *s == '"') out[j++] = '\\', out[j++] = *s;
        else if (*s == '\n') out[j++] = '\\', out[j++] = 'n';
        else out[j++] = *s;
    }
    out[j] = '\0';
}

static bool head(srv_buf *b, const char *name, const char *type, const char *help) {
    return srv_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static bool scalar(srv_buf *b, const char *name, const char *type, const char *help, const char *lbl, double v) {
    return head(b, name, type, help) && srv_buf_printf(b, "%s{model_name=\"%s\"} %.17g\n", name, lbl, v);
}

static bool histogram(srv_buf *b, const srv_hist *h, const char *name, const char *help, const char *lbl) {
    bool ok = head(b, name, "histogram", help);
    uint64_t cum = 0;
    for (int i = 0; ok && i < h->n; i++) {
        cum += h->count[i];
        ok = srv_buf_printf(b, "%s_bucket{le=\"%g\",model_name=\"%s\"} %llu\n", name, h->le[i], lbl,
                            (unsigned long long)cum);
    }
    return ok && srv_buf_printf(b, "%s_bucket{le=\"+Inf\",model_name=\"%s\"} %llu\n", name, lbl,
                                (unsigned long long)h->total) &&
           srv_buf_printf(b, "%s_sum{model_name=\"%s\"} %.17g\n", name, lbl, h->sum) &&
           srv_buf_printf(b, "%s_count{model_name=\"%s\"} %llu\n", name, lbl, (unsigned long long)h->total);
}

bool srv_metrics_render(const srv_metrics *m, const fr_engine_stats *st, const char *model, srv_buf *b) {
    char lbl[512];
    escape_label(model, lbl, sizeof lbl);
    bool ok = scalar(b, "vllm:num_requests_running", "gauge", "Number of requests in model execution batches.", lbl, st->running) &&
              scalar(b, "vllm:num_requests_waiting", "gauge", "Number of requests waiting to be processed.", lbl, st->waiting) &&
              scalar(b, "vllm:kv_cache_usage_perc", "gauge", "KV-cache usage. 1 means 100 percent usage.", lbl, st->kv_usage) &&
              scalar(b, "vllm:gpu_cache_usage_perc", "gauge", "KV-cache usage (old name of vllm:kv_cache_usage_perc).", lbl, st->kv_usage) &&
              scalar(b, "vllm:prompt_tokens_total", "counter", "Number of prefill tokens processed.", lbl, (double)st->prompt_tokens_total) &&
              scalar(b, "vllm:generation_tokens_total", "counter", "Number of generation tokens processed.", lbl, (double)st->generation_tokens_total) &&
              scalar(b, "vllm:num_preemptions_total", "counter", "Cumulative number of preemptions from the engine.", lbl, (double)st->preemptions_total);
    static const char *const reasons[4] = {"stop", "length", "abort", "error"};
    ok = ok && head(b, "vllm:request_success_total", "counter", "Count of finished requests by finish reason.");
    for (int i = 0; ok && i < 4; i++)
        ok = srv_buf_printf(b, "vllm:request_success_total{finished_reason=\"%s\",model_name=\"%s\"} %llu\n", reasons[i],
                            lbl, (unsigned long long)m->finished[i]);
    for (int k = 0; ok && k < SRV_HIST_COUNT; k++) ok = histogram(b, &m->hist[k], hist_names[k].name, hist_names[k].help, lbl);
    ok = ok && head(b, "http_requests_total", "counter", "HTTP requests by handler, method and status.");
    for (int i = 0; ok && i < m->n_http; i++)
        ok = srv_buf_printf(b, "http_requests_total{handler=\"%s\",method=\"%s\",status=\"%d\"} %llu\n",
                            m->http[i].handler, m->http[i].method, m->http[i].status,
                            (unsigned long long)m->http[i].count);
    return ok;
}
