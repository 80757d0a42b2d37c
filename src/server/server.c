/* server.c - server lifecycle and the engine -> loop bridge (see server.h).
 *
 * Engine callbacks run on the engine thread and only append to a mutex-guarded queue (token
 * events) or an intrusive list (final events, which must never be lost, so they take no
 * allocation), then activate wake_ev once per batch; the loop drains both under the lock and
 * handles them without it: all of a request's tokens before its final event. */
#include "server_impl.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <event2/thread.h>

double srv_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void srv_on_engine_event(void *user, const fr_token_event *ev) {
    srv_gen *g = user;
    struct fr_server *s = g->srv;
    double t = srv_now();
    pthread_mutex_lock(&s->mu);
    if (ev->finish != FR_FINISH_NONE) {
        g->final_ev = *ev;
        g->final_ev.error = NULL;
        if (ev->error) snprintf(g->final_error, sizeof g->final_error, "%s", ev->error);
        g->final_next = s->finals;
        s->finals = g;
    } else {
        if (s->n_queue == s->cap_queue) {
            size_t cap = s->cap_queue ? 2 * s->cap_queue : 256;
            srv_item *q = realloc(s->queue, cap * sizeof *q);
            if (q) s->queue = q, s->cap_queue = cap;
        }
        /* Out of memory: the token is lost from the text; the counts in later events stay right. */
        if (s->n_queue < s->cap_queue) s->queue[s->n_queue++] = (srv_item){g, *ev, t};
    }
    bool wake = !s->wake_pending;
    s->wake_pending = true;
    pthread_mutex_unlock(&s->mu);
    if (wake) event_active(s->wake_ev, EV_READ, 0);
}

static void on_wake(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what;
    struct fr_server *s = arg;
    pthread_mutex_lock(&s->mu);
    /* swap the queue with the spare array so the engine keeps appending while we work */
    srv_item *items = s->queue;
    size_t n = s->n_queue, cap = s->cap_queue;
    s->queue = s->spare, s->cap_queue = s->cap_spare, s->n_queue = 0;
    srv_gen *finals = s->finals;
    s->finals = NULL;
    s->wake_pending = false;
    pthread_mutex_unlock(&s->mu);

    for (size_t i = 0; i < n; i++) srv_gen_on_token(items[i].g, &items[i].ev, items[i].t);
    /* finals were pushed at the front: reverse to handle them in arrival order */
    srv_gen *rev = NULL;
    while (finals) {
        srv_gen *next = finals->final_next;
        finals->final_next = rev;
        rev = finals;
        finals = next;
    }
    while (rev) {
        srv_gen *next = rev->final_next;
        srv_gen_on_final(rev);
        rev = next;
    }
    pthread_mutex_lock(&s->mu);
    s->spare = items, s->cap_spare = cap;
    pthread_mutex_unlock(&s->mu);
}

static void on_drain_timeout(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what;
    struct fr_server *s = arg;
    fprintf(stderr, "frontier serve: shutdown timeout: aborting %d request(s)\n", s->n_active);
    srv_abort_all(s);
}

static void on_stop(evutil_socket_t fd, short what, void *arg) {
    (void)what;
    struct fr_server *s = arg;
    char buf[64];
    while (read(fd, buf, sizeof buf) > 0) {}
    if (s->draining) return;
    s->draining = true;
    fprintf(stderr, "frontier serve: shutting down: %d request(s) in flight, waiting up to %g s\n", s->n_active,
            s->opts.shutdown_timeout_s);
    if (s->n_active == 0) {
        event_base_loopexit(s->base, NULL);
        return;
    }
    if (s->opts.shutdown_timeout_s <= 0) {
        srv_abort_all(s);
        return;
    }
    double t = s->opts.shutdown_timeout_s;
    struct timeval tv = {(time_t)t, (suseconds_t)((t - (double)(time_t)t) * 1e6)};
    event_add(s->drain_ev, &tv);
}

/* Every STATS_PERIOD_S seconds while there is traffic, one line like vLLM's: throughput
 * since the last line, the batch, the queue and the KV cache. Quiet when idle. */
#define STATS_PERIOD_S 5

static void on_ping(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what;
    srv_keepalive(arg);
}

static void on_stats(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what;
    fr_server *s = arg;
    if (!s->ready) return;
    fr_engine_stats st;
    fr_engine_get_stats(s->model.engine, &st);
    const double t = srv_now(), dt = t - s->last_stats_t;
    const uint64_t prompt = st.prompt_tokens_total - s->last_stats.prompt_tokens_total;
    const uint64_t gen = st.generation_tokens_total - s->last_stats.generation_tokens_total;
    if ((prompt || gen || st.running || st.waiting) && dt > 0)
        fprintf(stderr,
                "frontier serve: prompt %.1f tok/s, generation %.1f tok/s, running %d, waiting %d, KV cache %.1f%%, "
                "preemptions %llu\n",
                (double)prompt / dt, (double)gen / dt, st.running, st.waiting, 100.0 * st.kv_usage,
                (unsigned long long)st.preemptions_total);
    s->last_stats = st;
    s->last_stats_t = t;
}

static void announce(fr_server *s) {
    fprintf(stderr, "frontier serve: listening on http://%s:%d\n", s->host, s->port);
    fflush(stderr);
}

/* The model arrived (loop thread): start serving it. */
static void on_ready(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what;
    fr_server *s = arg;
    pthread_mutex_lock(&s->mu);
    s->model = s->pending;
    pthread_mutex_unlock(&s->mu);
    if (!s->model.engine || !s->model.tok || s->ready) return;
    s->ready = true;
    fr_engine_get_stats(s->model.engine, &s->last_stats);
    s->last_stats_t = srv_now();
    if (!s->draining) announce(s);
}

void fr_server_set_model(fr_server *s, const fr_server_model *model) {
    pthread_mutex_lock(&s->mu);
    s->pending = *model;
    pthread_mutex_unlock(&s->mu);
    event_active(s->ready_ev, EV_READ, 0);
}

void fr_server_request_stop(fr_server *s) {
    if (!s) return;
    int saved = errno; /* a signal handler must leave errno as it found it */
    ssize_t r = write(s->stop_pipe[1], "x", 1);
    (void)r;
    errno = saved;
}

int fr_server_port(const fr_server *s) { return s->port; }

static bool set_nonblock_cloexec(int fd) {
    int fl = fcntl(fd, F_GETFL);
    return fl >= 0 && fcntl(fd, F_SETFL, fl | O_NONBLOCK) == 0 && fcntl(fd, F_SETFD, FD_CLOEXEC) == 0;
}

fr_status fr_server_create(const fr_server_opts *opts, const fr_server_model *model, fr_server **out,
                           fr_error *err) {
    *out = NULL;
    if ((model->engine && !model->tok) || !opts->model_name || !opts->model_name[0])
        return fr_fail(err, FR_ERR_INVALID, "server: a model name, and a tokenizer with the engine, are required");
    /* libevent must know about threads before the base exists: event_active is then safe
     * from the engine thread. Idempotent. */
    if (evthread_use_pthreads() != 0) return fr_fail(err, FR_ERR_UNSUPPORTED, "server: libevent has no pthreads support");
    fr_server *s = calloc(1, sizeof *s);
    if (!s) return fr_fail(err, FR_ERR_NOMEM, "server: out of memory");
    s->stop_pipe[0] = s->stop_pipe[1] = -1;
    pthread_mutex_init(&s->mu, NULL);
    s->opts = *opts;
    s->model = *model;
    snprintf(s->host, sizeof s->host, "%s", opts->host && opts->host[0] ? opts->host : "127.0.0.1");
    snprintf(s->name, sizeof s->name, "%s", opts->model_name);
    snprintf(s->key, sizeof s->key, "%s", opts->api_key ? opts->api_key : "");
    if (opts->api_key && strlen(opts->api_key) >= sizeof s->key) {
        fr_server_free(s);
        return fr_fail(err, FR_ERR_INVALID, "server: the API key is longer than %zu bytes", sizeof s->key - 1);
    }
    s->opts.host = s->host, s->opts.model_name = s->name, s->opts.api_key = s->key;
    if (s->opts.max_body_bytes <= 0) s->opts.max_body_bytes = (int64_t)32 << 20;
    if (s->opts.max_header_bytes <= 0) s->opts.max_header_bytes = (int64_t)64 << 10;
    if (s->opts.http_timeout_s <= 0) s->opts.http_timeout_s = 600;
    if (s->opts.shutdown_timeout_s < 0) s->opts.shutdown_timeout_s = 0;
    if (s->opts.sse_keepalive_s == 0) s->opts.sse_keepalive_s = 15;
    srv_metrics_init(&s->metrics);
    s->seq = (uint64_t)time(NULL) * 2654435761u;

    if (pipe(s->stop_pipe) != 0 || !set_nonblock_cloexec(s->stop_pipe[0]) || !set_nonblock_cloexec(s->stop_pipe[1])) {
        fr_server_free(s);
        return fr_fail(err, FR_ERR_IO, "server: pipe: %s", strerror(errno));
    }
    if (!(s->base = event_base_new()) || !(s->http = evhttp_new(s->base)) ||
        !(s->wake_ev = event_new(s->base, -1, 0, on_wake, s)) ||
        !(s->stop_ev = event_new(s->base, s->stop_pipe[0], EV_READ | EV_PERSIST, on_stop, s)) ||
        !(s->drain_ev = evtimer_new(s->base, on_drain_timeout, s)) ||
        !(s->stats_ev = event_new(s->base, -1, EV_PERSIST, on_stats, s)) ||
        !(s->ping_ev = event_new(s->base, -1, EV_PERSIST, on_ping, s)) ||
        !(s->ready_ev = event_new(s->base, -1, 0, on_ready, s)) || event_add(s->stop_ev, NULL) != 0) {
        fr_server_free(s);
        return fr_fail(err, FR_ERR_NOMEM, "server: cannot set up the event loop");
    }
    /* A declared Content-Length over the limit is answered 413 before any of the body is read
     * (libevent 2.1 writes that reply itself, with an HTML body: it has no error-page hook).
     * Not lingering: a client announcing 2 GiB must get its 413 at once, not after sending it. */
    evhttp_set_max_body_size(s->http, (ev_ssize_t)s->opts.max_body_bytes);
    evhttp_set_max_headers_size(s->http, (ev_ssize_t)s->opts.max_header_bytes);
    evhttp_set_timeout(s->http, s->opts.http_timeout_s);
    /* Let every method through to our handler so wrong ones get a JSON 405, not libevent's 501. */
    evhttp_set_allowed_methods(s->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD | EVHTTP_REQ_PUT |
                                            EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE |
                                            EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH);
    evhttp_set_gencb(s->http, srv_handle, s);
    struct evhttp_bound_socket *sock = evhttp_bind_socket_with_handle(s->http, s->host, (ev_uint16_t)opts->port);
    if (!sock) {
        fr_server_free(s);
        return fr_fail(err, FR_ERR_IO, "server: cannot listen on %s:%d (%s)", opts->host ? opts->host : "127.0.0.1",
                       opts->port, strerror(errno));
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(evhttp_bound_socket_get_fd(sock), (struct sockaddr *)&ss, &sl) != 0) {
        fr_server_free(s);
        return fr_fail(err, FR_ERR_IO, "server: getsockname: %s", strerror(errno));
    }
    s->port = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                        : ntohs(((struct sockaddr_in *)&ss)->sin_port);
    *out = s;
    return FR_OK;
}

fr_status fr_server_run(fr_server *s, fr_error *err) {
    const struct timeval period = {STATS_PERIOD_S, 0};
    s->ready = s->model.engine != NULL;
    if (s->ready) {
        fr_engine_get_stats(s->model.engine, &s->last_stats);
        s->last_stats_t = srv_now();
        announce(s);
    }
    event_add(s->stats_ev, &period);
    if (s->opts.sse_keepalive_s > 0) {
        /* checked at a quarter of the interval: a stream waits at most 1.25 intervals */
        const double q = s->opts.sse_keepalive_s / 4;
        const struct timeval tick = {(time_t)q, (suseconds_t)((q - (double)(time_t)q) * 1e6)};
        event_add(s->ping_ev, &tick);
    }
    if (event_base_dispatch(s->base) < 0) return fr_fail(err, FR_ERR_IO, "server: the event loop failed");
    /* The loop only ends through a drain that saw every request's final event. */
    return FR_OK;
}

void fr_server_free(fr_server *s) {
    if (!s) return;
    /* Normally nothing is in flight here (run returns after the drain). If run was never
     * reached, there is nothing either. */
    if (s->http) evhttp_free(s->http);
    if (s->wake_ev) event_free(s->wake_ev);
    if (s->stop_ev) event_free(s->stop_ev);
    if (s->drain_ev) event_free(s->drain_ev);
    if (s->stats_ev) event_free(s->stats_ev);
    if (s->ping_ev) event_free(s->ping_ev);
    if (s->ready_ev) event_free(s->ready_ev);
    if (s->base) event_base_free(s->base);
    for (int i = 0; i < 2; i++)
        if (s->stop_pipe[i] >= 0) close(s->stop_pipe[i]);
    free(s->queue);
    free(s->spare);
    pthread_mutex_destroy(&s->mu);
    free(s);
}
