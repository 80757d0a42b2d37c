/* server_impl.h - state shared by server.c (lifecycle, engine bridge), http.c (routing,
 * replies) and generate.c (completion requests). Not a public header. */
#ifndef FR_SERVER_IMPL_H
#define FR_SERVER_IMPL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <event2/event.h>
#include <event2/http.h>

#include "metrics.h"
#include "output.h"
#include "request.h"
#include "response.h"
#include "server.h"

/* One generation request in flight. Freed when both sides are done: the HTTP reply is
 * finished or abandoned (http_done) and the engine has sent its final event (engine_done,
 * after which it never calls back with this pointer again). */
typedef struct srv_gen {
    struct fr_server *srv;
    struct srv_gen *prev, *next;    /* the server's in-flight list */
    struct srv_gen *final_next;     /* the final-event list (engine thread -> loop) */
    struct evhttp_request *req;     /* NULL once http_done */
    struct evhttp_connection *evcon;/* NULL when the connection went away */
    struct event *watch;            /* read-readiness of the socket: EOF = client gone */
    srv_api api;
    bool stream, include_usage, continuous_usage;
    char id[48];                    /* chatcmpl-... / cmpl-... */
    int64_t created;
    int64_t n_prompt, max_tokens;
    uint64_t engine_id;
    srv_output out;
    fr_token_event final_ev;        /* the final event, copied on the engine thread */
    char final_error[256];
    bool http_done, engine_done, client_gone, role_sent, stopped_by_string, shutdown_abort;
    fr_finish finish;               /* for metrics and the log (STOP for a stop string) */
    int status;                     /* HTTP status sent */
    double t_arrival, t_first, t_last; /* CLOCK_MONOTONIC seconds */
    double t_wrote;                 /* last bytes sent on a stream (keep-alive) */
} srv_gen;

/* A token event crossing from the engine thread. */
typedef struct {
    srv_gen *g;
    fr_token_event ev;
    double t; /* when the engine produced it */
} srv_item;

struct fr_server {
    fr_server_opts opts;
    fr_server_model model;
    char host[256], name[256], key[512];
    struct event_base *base;
    struct evhttp *http;
    int port;
    struct event *wake_ev, *stop_ev, *drain_ev, *stats_ev, *ping_ev, *ready_ev;
    bool ready;                  /* the model is loaded (loop thread) */
    fr_server_model pending;     /* set by fr_server_set_model under mu, taken by the loop */
    fr_engine_stats last_stats;  /* at the previous periodic log line */
    double last_stats_t;
    int stop_pipe[2];

    pthread_mutex_t mu;        /* guards the four fields below */
    srv_item *queue, *spare;   /* token events not yet handled; spare: the other half */
    size_t n_queue, cap_queue, cap_spare;
    srv_gen *finals;           /* final events not yet handled (pushed at the front) */
    bool wake_pending;

    srv_gen *active;           /* in-flight requests (loop thread) */
    int n_active;
    bool draining, exiting;
    uint64_t seq;              /* request counter for ids and default seeds */
    srv_metrics metrics;
};

double srv_now(void);

/* http.c */
void srv_handle(struct evhttp_request *req, void *arg);
/* Send a JSON body (takes ownership of json; NULL means out of memory -> 500). */
void srv_send_json(struct fr_server *s, struct evhttp_request *req, const char *route, int status, char *json);
/* Send an OpenAI error envelope. type defaults from the status when NULL. */
void srv_send_error(struct fr_server *s, struct evhttp_request *req, const char *route, int status,
                    const char *message, const char *param, const char *code);

/* generate.c */
void srv_generate(struct fr_server *s, struct evhttp_request *req, srv_api api, const char *route);
/* Engine callback (engine thread). */
void srv_on_engine_event(void *user, const fr_token_event *ev);
/* Loop side of the bridge. */
void srv_gen_on_token(srv_gen *g, const fr_token_event *ev, double t);
void srv_gen_on_final(srv_gen *g);
/* An SSE comment on every stream that has sent nothing for sse_keepalive_s. */
void srv_keepalive(struct fr_server *s);
/* Abort every in-flight request (shutdown timeout). */
void srv_abort_all(struct fr_server *s);

#endif
