/* metrics.h - Prometheus metrics with vLLM's names and units (SERVING.md 6).
 *
 * Gauges and token totals come from the engine's stats at scrape time; request outcomes,
 * latency histograms and HTTP counts are recorded by the server here. Intervals are seconds
 * on CLOCK_MONOTONIC. Loop-thread only (no locking). Every series carries
 * model_name="<served name>". */
#ifndef FR_SRV_METRICS_H
#define FR_SRV_METRICS_H

#include <stdbool.h>
#include <stdint.h>

#include "../engine/engine.h"
#include "buf.h"

#define SRV_HIST_MAX_BUCKETS 32

typedef struct {
    int n;                              /* finite bucket edges */
    const double *le;                   /* [n] upper edges, ascending */
    uint64_t count[SRV_HIST_MAX_BUCKETS]; /* observations <= le[i] (non-cumulative) */
    uint64_t total;
    double sum;
} srv_hist;

typedef enum { SRV_HIST_TTFT, SRV_HIST_ITL, SRV_HIST_E2E, SRV_HIST_QUEUE, SRV_HIST_COUNT } srv_hist_kind;

#define SRV_MAX_HTTP_SERIES 128

typedef struct {
    srv_hist hist[SRV_HIST_COUNT];
    uint64_t finished[4]; /* by reason: stop, length, abort, error */
    struct {
        const char *handler; /* a static route string */
        const char *method;  /* static */
        int status;
        uint64_t count;
    } http[SRV_MAX_HTTP_SERIES];
    int n_http;
} srv_metrics;

void srv_metrics_init(srv_metrics *m);
void srv_metrics_observe(srv_metrics *m, srv_hist_kind k, double seconds);
/* reason: FR_FINISH_STOP, _LENGTH, _ABORT or _ERROR. */
void srv_metrics_finished(srv_metrics *m, fr_finish reason);
/* handler and method must be static strings. */
void srv_metrics_http(srv_metrics *m, const char *handler, const char *method, int status);
/* Append the exposition text (format 0.0.4). false when out of memory. */
bool srv_metrics_render(const srv_metrics *m, const fr_engine_stats *st, const char *model, srv_buf *out);

#endif
