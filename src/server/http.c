/* http.c - routing, authentication and reply helpers; the small GET routes.
 *
 * Every error is OpenAI's envelope with a status that matches it; errors a retry cannot fix
 * carry x-should-retry: false, overload and draining carry Retry-After (SERVING.md 4). */
#include "server_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <event2/buffer.h>
#include <event2/keyvalq_struct.h>

static const char *method_name(enum evhttp_cmd_type m) {
    switch (m) {
    case EVHTTP_REQ_GET: return "GET";
    case EVHTTP_REQ_POST: return "POST";
    case EVHTTP_REQ_HEAD: return "HEAD";
    case EVHTTP_REQ_PUT: return "PUT";
    case EVHTTP_REQ_DELETE: return "DELETE";
    case EVHTTP_REQ_OPTIONS: return "OPTIONS";
    case EVHTTP_REQ_TRACE: return "TRACE";
    case EVHTTP_REQ_CONNECT: return "CONNECT";
    case EVHTTP_REQ_PATCH: return "PATCH";
    default: return "OTHER";
    }
}

static void send_body(struct fr_server *s, struct evhttp_request *req, const char *route, int status,
                      const char *type, const char *body, size_t len) {
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Content-Type", type);
    if (status >= 400 && status < 500) evhttp_add_header(h, "x-should-retry", "false");
    if (status == 503) evhttp_add_header(h, "Retry-After", "1");
    struct evbuffer *b = evbuffer_new();
    if (b) evbuffer_add(b, body, len);
    srv_metrics_http(&s->metrics, route, method_name(evhttp_request_get_command(req)), status);
    evhttp_send_reply(req, status, NULL, b);
    if (b) evbuffer_free(b);
}

void srv_send_json(struct fr_server *s, struct evhttp_request *req, const char *route, int status, char *json) {
    if (!json) {
        static const char oom[] = "{\"error\":{\"message\":\"out of memory\",\"type\":\"internal_error\","
                                  "\"param\":null,\"code\":\"internal_error\"}}";
        send_body(s, req, route, 500, "application/json", oom, sizeof oom - 1);
        return;
    }
    send_body(s, req, route, status, "application/json", json, strlen(json));
    free(json);
}

static const char *default_type(int status) {
    switch (status) {
    case 401: return "authentication_error";
    case 404: return "not_found_error";
    case 413: return "invalid_request_error";
    case 503: return "service_unavailable_error";
    default: return status >= 500 ? "internal_error" : "invalid_request_error";
    }
}

void srv_send_error(struct fr_server *s, struct evhttp_request *req, const char *route, int status,
                    const char *message, const char *param, const char *code) {
    char num[16];
    if (!code) {
        snprintf(num, sizeof num, "%d", status);
        code = num;
    }
    srv_send_json(s, req, route, status, srv_json_error(message, default_type(status), param, code));
}

/* Constant-time in the key's content (lengths may leak; the key length is not secret enough
 * to matter, its bytes are). */
static bool key_matches(const char *given, const char *key) {
    size_t gl = strlen(given), kl = strlen(key);
    unsigned char diff = (unsigned char)(gl != kl);
    for (size_t i = 0; i < kl; i++) diff |= (unsigned char)(key[i] ^ (i < gl ? given[i] : 0));
    return diff == 0;
}

static bool authorized(struct fr_server *s, struct evhttp_request *req) {
    if (!s->key[0]) return true;
    const char *auth = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
    if (!auth || strncasecmp(auth, "Bearer ", 7) != 0) return false;
    auth += 7;
    while (*auth == ' ') auth++;
    return key_matches(auth, s->key);
}

static void handle_health(struct fr_server *s, struct evhttp_request *req, const char *route) {
    if (s->draining) {
        srv_send_error(s, req, route, 503, "the server is shutting down", NULL, NULL);
        return;
    }
    static const char ok[] = "{\"status\":\"ok\"}";
    send_body(s, req, route, 200, "application/json", ok, sizeof ok - 1);
}

static void handle_models(struct fr_server *s, struct evhttp_request *req, const char *route) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "object", "list");
    cJSON *data = cJSON_AddArrayToObject(root, "data"), *m = cJSON_CreateObject();
    char *json = NULL;
    if (root && data && m) {
        cJSON_AddItemToArray(data, m);
        cJSON_AddStringToObject(m, "id", s->name);
        cJSON_AddStringToObject(m, "object", "model");
        cJSON_AddNumberToObject(m, "created", (double)time(NULL));
        cJSON_AddStringToObject(m, "owned_by", "frontier");
        cJSON_AddStringToObject(m, "root", s->name);
        cJSON_AddNullToObject(m, "parent");
        cJSON_AddNumberToObject(m, "max_model_len", (double)fr_engine_max_model_len(s->model.engine));
        m = NULL;
        json = cJSON_PrintUnformatted(root);
    }
    cJSON_Delete(m);
    cJSON_Delete(root);
    srv_send_json(s, req, route, 200, json);
}

static void handle_metrics(struct fr_server *s, struct evhttp_request *req, const char *route) {
    fr_engine_stats st;
    fr_engine_get_stats(s->model.engine, &st);
    srv_buf b = {0};
    /* count this scrape before rendering so it shows up in its own output */
    srv_metrics_http(&s->metrics, route, "GET", 200);
    if (!srv_metrics_render(&s->metrics, &st, s->name, &b)) {
        srv_buf_release(&b);
        srv_send_error(s, req, route, 500, "out of memory rendering metrics", NULL, NULL);
        return;
    }
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Content-Type", "text/plain; version=0.0.4; charset=utf-8");
    struct evbuffer *out = evbuffer_new();
    if (out) evbuffer_add(out, b.data, b.len);
    evhttp_send_reply(req, 200, NULL, out);
    if (out) evbuffer_free(out);
    srv_buf_release(&b);
}

typedef enum { R_CHAT, R_COMPLETIONS, R_MODELS, R_HEALTH, R_METRICS } route_id;

static const struct {
    const char *path;
    route_id id;
    enum evhttp_cmd_type method;
} routes[] = {
    {"/v1/chat/completions", R_CHAT, EVHTTP_REQ_POST},
    {"/v1/completions", R_COMPLETIONS, EVHTTP_REQ_POST},
    {"/v1/models", R_MODELS, EVHTTP_REQ_GET},
    {"/health", R_HEALTH, EVHTTP_REQ_GET},
    {"/v1/health", R_HEALTH, EVHTTP_REQ_GET},
    {"/metrics", R_METRICS, EVHTTP_REQ_GET},
};

void srv_handle(struct evhttp_request *req, void *arg) {
    struct fr_server *s = arg;
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    if (!path || !path[0]) path = "/";
    int r = -1;
    for (size_t i = 0; i < sizeof routes / sizeof *routes && r < 0; i++)
        if (!strcmp(path, routes[i].path)) r = (int)i;
    /* Metrics label: the route's own (static) path, so clients cannot grow the series set. */
    const char *route = r >= 0 ? routes[r].path : "other";
    if (r < 0 || routes[r].id != R_HEALTH) {
        if (!authorized(s, req)) {
            evhttp_add_header(evhttp_request_get_output_headers(req), "WWW-Authenticate", "Bearer");
            srv_send_error(s, req, route, 401, "invalid or missing API key (send Authorization: Bearer KEY)", NULL,
                           "invalid_api_key");
            return;
        }
    }
    if (r < 0) {
        srv_send_error(s, req, route, 404, "no such route", NULL, NULL);
        return;
    }
    if (evhttp_request_get_command(req) != routes[r].method) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow",
                          routes[r].method == EVHTTP_REQ_POST ? "POST" : "GET");
        srv_send_error(s, req, route, 405, "method not allowed on this route", NULL, NULL);
        return;
    }
    if (!s->ready) { /* bound early, still loading: probes see 503 until the model serves */
        srv_send_error(s, req, route, 503, "Loading model", NULL, NULL);
        return;
    }
    switch (routes[r].id) {
    case R_CHAT: srv_generate(s, req, SRV_API_CHAT, route); break;
    case R_COMPLETIONS: srv_generate(s, req, SRV_API_COMPLETIONS, route); break;
    case R_MODELS: handle_models(s, req, route); break;
    case R_HEALTH: handle_health(s, req, route); break;
    case R_METRICS: handle_metrics(s, req, route); break;
    }
}
