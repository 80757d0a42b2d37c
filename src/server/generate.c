/* generate.c - POST /v1/chat/completions and /v1/completions: request -> engine -> reply.
 *
 * The handler validates, renders and encodes the prompt, submits it, and (streaming) sends
 * the SSE headers at once. Token events then arrive through the bridge (server.c): each one
 * runs the output pipeline (output.h) and, when streaming, becomes one chunk if it produced
 * text. A stop string ends the reply early and aborts the engine request; the request state
 * lives on until the engine's final event, so the engine never calls back into freed memory.
 *
 * Disconnects: libevent stops reading a connection while its request is handled, so it would
 * only notice a vanished client on a failed write. We watch the socket ourselves (read
 * readiness + MSG_PEEK: 0 bytes = EOF) and also take libevent's close callback; either aborts
 * the engine request, also mid-prefill. */
#include "server_impl.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/keyvalq_struct.h>

static const char *finish_name(fr_finish f) {
    switch (f) {
    case FR_FINISH_STOP: return "stop";
    case FR_FINISH_LENGTH: return "length";
    case FR_FINISH_ABORT: return "abort";
    default: return "error";
    }
}

static srv_resp_meta meta_of(const srv_gen *g) {
    return (srv_resp_meta){g->id, g->srv->name, g->created, g->api, g->srv->model.tok};
}

static srv_usage usage_of(const srv_gen *g) {
    return (srv_usage){g->n_prompt, g->out.n_tokens, g->out.reasoning_tokens,
                       g->api == SRV_API_CHAT && g->srv->model.reasoning};
}

/* ---- disconnect detection ---------------------------------------------------------- */

static void stop_watching(srv_gen *g) {
    if (g->watch) event_free(g->watch);
    g->watch = NULL;
}

static void client_gone(srv_gen *g) {
    if (g->client_gone) return;
    g->client_gone = true;
    stop_watching(g);
    if (!g->engine_done) fr_engine_abort(g->srv->model.engine, g->engine_id);
}

/* libevent freed the connection (write failure, timeout): the request is detached from it
 * and still ours to finish (evhttp_send_reply_end frees it then). */
static void on_conn_close(struct evhttp_connection *evcon, void *arg) {
    (void)evcon;
    srv_gen *g = arg;
    g->evcon = NULL;
    client_gone(g);
}

static void on_watch(evutil_socket_t fd, short what, void *arg) {
    (void)what;
    srv_gen *g = arg;
    char c;
    ssize_t n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
        client_gone(g);
    } else if (n > 0) {
        /* A pipelined request is waiting: we can no longer see EOF this way; failed writes
         * (libevent's close callback) still catch a disconnect. */
        stop_watching(g);
    } else {
        event_add(g->watch, NULL);
    }
}

static void watch_connection(srv_gen *g) {
    g->evcon = evhttp_request_get_connection(g->req);
    if (!g->evcon) return;
    evhttp_connection_set_closecb(g->evcon, on_conn_close, g);
    struct bufferevent *bev = evhttp_connection_get_bufferevent(g->evcon);
    evutil_socket_t fd = bev ? bufferevent_getfd(bev) : -1;
    if (fd < 0) return;
    /* Stream chunks are small writes: without TCP_NODELAY, Nagle's algorithm holds each
     * behind the client's delayed ACK on a reused keep-alive connection (~40 ms bursts). */
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    g->watch = event_new(g->srv->base, fd, EV_READ, on_watch, g);
    if (g->watch && event_add(g->watch, NULL) != 0) stop_watching(g);
}

/* ---- replies ----------------------------------------------------------------------- */

static void release_connection(srv_gen *g) {
    stop_watching(g);
    if (g->evcon) evhttp_connection_set_closecb(g->evcon, NULL, NULL);
}

static void log_line(const srv_gen *g) {
    double now = srv_now();
    double ttft = g->t_first > 0 ? g->t_first - g->t_arrival : -1;
    fprintf(stderr, "frontier serve: %s %s status=%d prompt=%lld completion=%lld finish=%s ttft=%.3fs duration=%.3fs%s\n",
            g->id, g->api == SRV_API_CHAT ? "chat" : "completion", g->status, (long long)g->n_prompt,
            (long long)g->out.n_tokens, finish_name(g->finish), ttft, now - g->t_arrival,
            g->client_gone ? " (client disconnected)" : g->stream ? " stream" : "");
}

/* Write one SSE event: "data: <payload>\n\n". */
static void sse(srv_gen *g, const char *payload) {
    if (g->client_gone || !payload) return;
    struct evbuffer *b = evbuffer_new();
    if (!b) return;
    if (evbuffer_add(b, "data: ", 6) == 0 && evbuffer_add(b, payload, strlen(payload)) == 0 &&
        evbuffer_add(b, "\n\n", 2) == 0)
        evhttp_send_reply_chunk(g->req, b);
    evbuffer_free(b);
    g->t_wrote = srv_now();
}

/* A long prefill (minutes for a 10k-token prompt on a CPU) sends nothing: proxies and
 * clients with read timeouts would drop the stream. SSE comment lines keep it alive and
 * are ignored by every client. */
void srv_keepalive(struct fr_server *s) {
    const double now = srv_now(), idle = s->opts.sse_keepalive_s;
    for (srv_gen *g = s->active; g; g = g->next) {
        if (!g->stream || g->http_done || g->client_gone || !g->req || now - g->t_wrote < idle) continue;
        struct evbuffer *b = evbuffer_new();
        if (!b) return;
        if (evbuffer_add(b, ": keep-alive\n\n", 14) == 0) evhttp_send_reply_chunk(g->req, b);
        evbuffer_free(b);
        g->t_wrote = now;
    }
}

/* Send what the output holds as one chunk (if anything, or always when finishing). */
static void send_delta(srv_gen *g, const char *finish) {
    srv_output *o = &g->out;
    if (!finish && !o->content.len && !o->reasoning.len && !o->n_lp) return;
    bool role = g->api == SRV_API_CHAT && !g->role_sent;
    srv_resp_meta m = meta_of(g);
    srv_usage u = usage_of(g);
    char *json = srv_json_chunk(&m, o, role, finish, g->continuous_usage ? &u : NULL);
    sse(g, json);
    free(json);
    g->role_sent = true;
    srv_buf_clear(&o->content);
    srv_buf_clear(&o->reasoning);
    srv_output_take_logprobs(o);
}

/* Finish the HTTP side. Streaming: the last chunk with finish (NULL: an error was already
 * sent), the usage chunk, [DONE]. Otherwise the full body with status. */
static void http_finish(srv_gen *g, const char *finish, int status, char *body) {
    if (g->http_done) {
        free(body);
        return;
    }
    release_connection(g);
    struct fr_server *s = g->srv;
    const char *route = g->api == SRV_API_CHAT ? "/v1/chat/completions" : "/v1/completions";
    if (g->stream) {
        free(body);
        if (finish) send_delta(g, finish);
        if (finish && g->include_usage) {
            srv_resp_meta m = meta_of(g);
            srv_usage u = usage_of(g);
            char *json = srv_json_usage_chunk(&m, &u);
            sse(g, json);
            free(json);
        }
        sse(g, "[DONE]");
        srv_metrics_http(&s->metrics, route, "POST", g->status);
        evhttp_send_reply_end(g->req); /* also frees a request whose connection is gone */
    } else if (!evhttp_request_get_connection(g->req)) {
        free(body);
        evhttp_send_reply_end(g->req); /* connection gone: this only frees the request */
    } else {
        g->status = status;
        evhttp_add_header(evhttp_request_get_output_headers(g->req), "X-Request-Id", g->id);
        srv_send_json(s, g->req, route, status, body);
    }
    g->req = NULL;
    g->http_done = true;
}

static void finish_ok(srv_gen *g, const char *finish) {
    char *body = NULL;
    if (!g->stream && !g->client_gone) {
        srv_resp_meta m = meta_of(g);
        srv_usage u = usage_of(g);
        body = srv_json_response(&m, &g->out, finish, &u);
        if (!body) body = srv_json_error("out of memory building the response", "internal_error", NULL, "500");
    }
    http_finish(g, finish, body ? 200 : 500, body);
}

static void finish_error(srv_gen *g, int status, const char *msg) {
    const char *type = status == 503 ? "service_unavailable_error" : "internal_error";
    char code[8];
    snprintf(code, sizeof code, "%d", status);
    char *body = srv_json_error(msg, type, NULL, code);
    if (g->stream) {
        sse(g, body); /* the stream is already 200: report in-band, as vLLM does */
        free(body);
        http_finish(g, NULL, status, NULL);
    } else {
        http_finish(g, NULL, status, body);
    }
}

/* ---- lifecycle --------------------------------------------------------------------- */

static void gen_free(srv_gen *g) {
    struct fr_server *s = g->srv;
    if (g->prev) g->prev->next = g->next;
    else if (s->active == g) s->active = g->next;
    if (g->next) g->next->prev = g->prev;
    stop_watching(g);
    srv_output_release(&g->out);
    free(g);
    s->n_active--;
    if (s->draining && s->n_active == 0 && !s->exiting) {
        s->exiting = true;
        /* a moment for the last replies to leave the socket buffers */
        struct timeval tv = {0, 200 * 1000};
        event_base_loopexit(s->base, &tv);
    }
}

static void note_time(srv_gen *g, double t) {
    struct fr_server *s = g->srv;
    if (g->t_first == 0) {
        g->t_first = t;
        srv_metrics_observe(&s->metrics, SRV_HIST_TTFT, t - g->t_arrival);
    } else {
        srv_metrics_observe(&s->metrics, SRV_HIST_ITL, t - g->t_last);
    }
    g->t_last = t;
}

static void process_token(srv_gen *g, const fr_token_event *ev) {
    bool matched = false;
    fr_error err = {0};
    if (srv_output_token(&g->out, ev, &matched, &err)) {
        if (!g->engine_done) fr_engine_abort(g->srv->model.engine, g->engine_id);
        g->finish = FR_FINISH_ERROR;
        finish_error(g, 500, err.msg);
        return;
    }
    if (matched) {
        g->stopped_by_string = true;
        g->finish = FR_FINISH_STOP;
        if (!g->engine_done) fr_engine_abort(g->srv->model.engine, g->engine_id);
        finish_ok(g, "stop");
        return;
    }
    if (g->stream) send_delta(g, NULL);
}

void srv_gen_on_token(srv_gen *g, const fr_token_event *ev, double t) {
    note_time(g, t);
    if (!g->http_done && !g->client_gone) process_token(g, ev);
    else g->out.n_tokens++; /* still counted for the log and usage */
}

void srv_gen_on_final(srv_gen *g) {
    struct fr_server *s = g->srv;
    const fr_token_event *ev = &g->final_ev;
    g->engine_done = true;
    if (ev->token >= 0) srv_gen_on_token(g, ev, ev->t_finished > 0 ? ev->t_finished : srv_now());
    if (!g->http_done) {
        g->finish = ev->finish;
        fr_error err = {0};
        if (g->client_gone) {
            http_finish(g, NULL, 499, NULL);
        } else if (ev->finish == FR_FINISH_ERROR) {
            finish_error(g, 500, g->final_error[0] ? g->final_error : "the engine failed");
        } else if (srv_output_finish(&g->out, &err)) {
            g->finish = FR_FINISH_ERROR;
            finish_error(g, 500, err.msg);
        } else if (ev->finish == FR_FINISH_ABORT && g->shutdown_abort && !g->stream) {
            finish_error(g, 503, "the server shut down before the request finished");
        } else {
            finish_ok(g, finish_name(ev->finish));
        }
    }
    if (g->client_gone && g->finish != FR_FINISH_ERROR) g->finish = FR_FINISH_ABORT;
    srv_metrics_finished(&s->metrics, g->finish);
    double t_end = ev->t_finished > 0 ? ev->t_finished : srv_now();
    srv_metrics_observe(&s->metrics, SRV_HIST_E2E, t_end - g->t_arrival);
    if (ev->t_scheduled > 0 && ev->t_submitted > 0)
        srv_metrics_observe(&s->metrics, SRV_HIST_QUEUE, ev->t_scheduled - ev->t_submitted);
    log_line(g);
    gen_free(g);
}

void srv_abort_all(struct fr_server *s) {
    for (srv_gen *g = s->active; g; g = g->next) {
        g->shutdown_abort = true;
        if (!g->engine_done) fr_engine_abort(s->model.engine, g->engine_id);
    }
}

/* ---- the handler ------------------------------------------------------------------- */

/* splitmix64: decorrelates consecutive counters into request ids and default seeds. */
static uint64_t mix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

static void reject(struct fr_server *s, struct evhttp_request *req, const char *route, int status, const char *msg,
                   const char *param, const char *code) {
    fprintf(stderr, "frontier serve: POST %s status=%d: %s\n", route, status, msg);
    srv_send_error(s, req, route, status, msg, param && param[0] ? param : NULL, code);
}

/* The prompt's ids: chat template + encode (no added specials: the template writes BOS), a
 * text prompt encoded as `frontier run -p` does (with the tokenizer's specials), or ids. */
static fr_status prompt_ids(struct fr_server *s, const srv_request *rq, int32_t **ids, int64_t *n, bool *think_first,
                            const char **param, fr_error *err) {
    fr_tok_ids v = {0};
    fr_status rc;
    *think_first = false;
    if (rq->api == SRV_API_CHAT) {
        *param = "messages";
        if (!s->model.chat)
            return fr_fail(err, FR_ERR_INVALID, "this model has no chat template; use /v1/completions");
        fr_chat_request cr = {rq->messages, rq->tools, rq->add_generation_prompt, rq->kwargs};
        char *text = NULL;
        size_t len = 0;
        if ((rc = fr_chat_render(s->model.chat, &cr, NULL, &text, &len, err))) return rc;
        *think_first = srv_prompt_opens_reasoning(text, len);
        rc = fr_tokenizer_encode(s->model.tok, text, len, 0, &v, err);
        free(text);
    } else if (rq->prompt_text) {
        *param = "prompt";
        rc = fr_tokenizer_encode(s->model.tok, rq->prompt_text, strlen(rq->prompt_text), FR_TOK_ADD_SPECIAL, &v, err);
    } else {
        *param = "prompt";
        int64_t cnt = cJSON_GetArraySize(rq->prompt_ids), i = 0;
        if (!(v.ids = malloc((size_t)cnt * sizeof *v.ids))) return fr_fail(err, FR_ERR_NOMEM, "out of memory");
        const cJSON *e;
        cJSON_ArrayForEach(e, rq->prompt_ids) {
            double x = e->valuedouble;
            if (x >= (double)s->model.vocab_size) {
                free(v.ids);
                return fr_fail(err, FR_ERR_INVALID, "token id %.0f (position %lld) is outside the vocabulary [0, %lld)",
                               x, (long long)i, (long long)s->model.vocab_size);
            }
            v.ids[i++] = (int32_t)x;
        }
        v.n = cnt;
        rc = FR_OK;
    }
    if (rc) {
        fr_tok_ids_release(&v);
        return rc;
    }
    if (v.n == 0) {
        fr_tok_ids_release(&v);
        return fr_fail(err, FR_ERR_INVALID, "the prompt encodes to no tokens");
    }
    *ids = v.ids;
    *n = v.n;
    return FR_OK;
}

/* Engine stop ids: the model's EOS ids plus the request's stop_token_ids. */
static fr_status stop_ids(struct fr_server *s, const srv_request *rq, fr_gen_params *p, fr_error *err) {
    p->n_stop_ids = 0;
    for (int k = 0; k < 2; k++) {
        const int32_t *src = k ? rq->stop_token_ids : s->model.stop_ids;
        int n = k ? rq->n_stop_token_ids : s->model.n_stop_ids;
        for (int i = 0; i < n; i++) {
            if (src[i] >= s->model.vocab_size)
                return fr_fail(err, FR_ERR_INVALID, "stop token id %d is outside the vocabulary [0, %lld)", src[i],
                               (long long)s->model.vocab_size);
            bool dup = false;
            for (int j = 0; j < p->n_stop_ids && !dup; j++) dup = p->stop_ids[j] == src[i];
            if (dup) continue;
            if (p->n_stop_ids == FR_MAX_STOP_IDS)
                return fr_fail(err, FR_ERR_INVALID, "too many stop token ids (at most %d with the model's own)",
                               FR_MAX_STOP_IDS);
            p->stop_ids[p->n_stop_ids++] = src[i];
        }
    }
    return FR_OK;
}

void srv_generate(struct fr_server *s, struct evhttp_request *req, srv_api api, const char *route) {
    double t_arrival = srv_now();
    if (s->draining) {
        srv_send_error(s, req, route, 503, "the server is shutting down", NULL, NULL);
        return;
    }
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    const char *text = len ? (const char *)evbuffer_pullup(in, -1) : "";
    cJSON *body = text ? cJSON_ParseWithLength(text, len) : NULL;
    if (!body) {
        reject(s, req, route, 400, "the request body is not valid JSON", NULL, "invalid_json");
        return;
    }
    srv_request rq;
    const char *param = "";
    fr_error err = {0};
    int32_t *ids = NULL;
    int64_t n = 0;
    bool think_first = false;
    srv_gen *g = NULL;
    fr_status rc = srv_request_parse(body, api, &s->model.defaults, &rq, &param, &err);
    if (rc) {
        reject(s, req, route, rc == FR_ERR_NOMEM ? 500 : 400, err.msg, param, NULL);
        cJSON_Delete(body);
        return;
    }
    if ((rc = prompt_ids(s, &rq, &ids, &n, &think_first, &param, &err))) {
        reject(s, req, route, rc == FR_ERR_NOMEM ? 500 : 400, err.msg, param, NULL);
        goto out;
    }
    const int64_t max_len = fr_engine_max_model_len(s->model.engine);
    if (n + 1 > max_len) {
        char msg[256];
        snprintf(msg, sizeof msg,
                 "This model's maximum context length is %lld tokens. However, your request has %lld input tokens, "
                 "which leaves no room for output. Please reduce the length of the input.",
                 (long long)max_len, (long long)n);
        reject(s, req, route, 400, msg, api == SRV_API_CHAT ? "messages" : "prompt", "context_length_exceeded");
        goto out;
    }
    fr_gen_params p = rq.gen;
    /* max_tokens: the endpoint's default, then clamped to what fits in the context (rather
     * than rejected as vLLM does: agents that ask for "as much as possible" keep working). */
    p.max_tokens = rq.max_tokens_set ? rq.max_tokens : api == SRV_API_CHAT ? max_len - n : 16;
    if (p.max_tokens > max_len - n) p.max_tokens = max_len - n;
    if (!rq.seed_set) p.seed = mix64(s->seq++ ^ (uint64_t)(t_arrival * 1e9));
    if ((rc = stop_ids(s, &rq, &p, &err))) {
        reject(s, req, route, 400, err.msg, "stop_token_ids", NULL);
        goto out;
    }

    if (!(g = calloc(1, sizeof *g))) {
        reject(s, req, route, 500, "out of memory", NULL, NULL);
        goto out;
    }
    g->srv = s;
    g->req = req;
    g->api = api;
    g->stream = rq.stream;
    g->include_usage = rq.stream && rq.include_usage;
    g->continuous_usage = rq.stream && rq.continuous_usage;
    g->created = (int64_t)time(NULL);
    g->t_arrival = t_arrival;
    g->n_prompt = n;
    g->max_tokens = p.max_tokens;
    snprintf(g->id, sizeof g->id, "%s-%016llx", api == SRV_API_CHAT ? "chatcmpl" : "cmpl",
             (unsigned long long)mix64(s->seq++));
    if ((rc = srv_output_init(&g->out, s->model.tok, rq.stop, rq.n_stop, api == SRV_API_CHAT && s->model.reasoning,
                              think_first, rq.logprobs, &err))) {
        reject(s, req, route, rc == FR_ERR_NOMEM ? 500 : 400, err.msg, "stop", NULL);
        free(g);
        g = NULL;
        goto out;
    }
    rc = fr_engine_submit(s->model.engine, ids, n, &p, srv_on_engine_event, g, &g->engine_id, &err);
    if (rc) {
        if (rc == FR_ERR_BUSY) reject(s, req, route, 503, "the server is busy (request queue full); retry later", NULL, NULL);
        else reject(s, req, route, rc == FR_ERR_INVALID ? 400 : 500, err.msg, NULL, NULL);
        srv_output_release(&g->out);
        free(g);
        g = NULL;
        goto out;
    }
    if (rq.unknown[0]) fprintf(stderr, "frontier serve: %s: ignoring unknown field(s): %s\n", g->id, rq.unknown);
    g->next = s->active;
    if (s->active) s->active->prev = g;
    s->active = g;
    s->n_active++;
    g->status = 200;
    watch_connection(g);
    if (g->stream) {
        struct evkeyvalq *h = evhttp_request_get_output_headers(req);
        evhttp_add_header(h, "Content-Type", "text/event-stream");
        evhttp_add_header(h, "Cache-Control", "no-cache");
        evhttp_add_header(h, "X-Accel-Buffering", "no"); /* proxies must not hold chunks back */
        evhttp_add_header(h, "X-Request-Id", g->id);
        evhttp_send_reply_start(req, 200, "OK");
        g->t_wrote = srv_now();
    }
out:
    free(ids);
    srv_request_release(&rq);
    cJSON_Delete(body);
}
