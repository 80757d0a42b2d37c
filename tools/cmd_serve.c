/* cmd_serve.c - `frontier serve DIR`: load a checkpoint, start the engine, serve the
 * OpenAI-compatible HTTP API (src/server) until SIGINT/SIGTERM.
 *
 * Flags take frontier's names plus the vLLM and llama.cpp spellings users paste from
 * recipes (SERVING.md 7). The API key may also come from FRONTIER_API_KEY or VLLM_API_KEY
 * (the flag wins). The first signal drains (new requests get 503, running ones finish up to
 * --shutdown-timeout seconds, then are aborted) and exits 0; a second one exits at once. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <event2/event.h>

#include "args.h"
#include "engine/engine.h"
#include "model/quantize.h"
#include "server/server.h"
#include "tokenizer/chat.h"
#include "tokenizer/tokenizer.h"

#define USAGE                                                                                                  \
    "usage: frontier serve DIR [--host 127.0.0.1] [--port 8080] [--api-key KEY] [--served-model-name NAME]\n" \
    "         [--max-num-seqs 64] [--max-model-len N] [--kv-cache-memory GB] [--kv-cache-dtype auto|fp8]\n"             \
    "         [--max-queue 256] [--max-batched-tokens 512] [-t THREADS] [--device cpu|cuda[:N]] [--quantize-experts mxfp4] [--no-mmap] [--shutdown-timeout 30]\n"   \
    "         [--max-body-mb 32] [--timeout 600] [--sse-keepalive 15 (0: off)]\n"

typedef struct {
    const char *dir, *host, *api_key, *name, *device;
    int64_t port, max_num_seqs, max_model_len, max_queue, max_batched, threads, body_mb, timeout;
    float kv_gb, shutdown_timeout, sse_keepalive;
    bool quantize_experts;
    bool no_mmap; /* --no-mmap: read the weights into memory (2 MiB pages) */
    fr_kv_dtype kv_dtype;
} serve_opts;

static bool is_any(const char *a, const char *const *names) {
    for (; *names; names++)
        if (!strcmp(a, *names)) return true;
    return false;
}

static fr_status parse(int argc, char **argv, serve_opts *o, fr_error *err) {
    memset(o, 0, sizeof *o);
    o->host = "127.0.0.1";
    o->port = 8080;
    o->shutdown_timeout = 30.0f;
    o->body_mb = 32;
    o->timeout = 600;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        fr_status rc = FR_OK;
        if (a[0] != '-') {
            if (o->dir) return fr_fail(err, FR_ERR_INVALID, "unexpected argument \"%s\"", a);
            o->dir = a;
            continue;
        }
#define IS(...) is_any(a, (const char *[]){__VA_ARGS__, NULL})
#define VAL() if (!(v = fr_arg_value(argc, argv, &i, err))) return err->code
        if (IS("-m", "--model")) { VAL(); o->dir = v; }
        else if (IS("--host")) { VAL(); o->host = v; }
        else if (IS("--port")) { VAL(); rc = fr_arg_i64(a, v, 0, 65535, &o->port, err); }
        else if (IS("--api-key")) { VAL(); o->api_key = v; }
        else if (IS("--served-model-name", "-a", "--alias")) { VAL(); o->name = v; }
        else if (IS("--max-num-seqs", "-np", "--parallel")) { VAL(); rc = fr_arg_i64(a, v, 1, 4096, &o->max_num_seqs, err); }
        else if (IS("--max-model-len", "-c", "--ctx-size")) { VAL(); rc = fr_arg_i64(a, v, 0, INT32_MAX, &o->max_model_len, err); }
        else if (IS("--kv-cache-memory")) { VAL(); rc = fr_arg_f32(a, v, 0.001f, 1e6f, &o->kv_gb, err); }
        else if (IS("--kv-cache-dtype")) { VAL(); rc = fr_kv_dtype_parse(v, &o->kv_dtype, err); }
        else if (IS("--sse-keepalive")) { VAL(); rc = fr_arg_f32(a, v, 0.0f, 3600.0f, &o->sse_keepalive, err); if (!rc && o->sse_keepalive == 0) o->sse_keepalive = -1; }
        else if (IS("--max-queue", "--max-num-queued-reqs")) { VAL(); rc = fr_arg_i64(a, v, 1, 1 << 20, &o->max_queue, err); }
        else if (IS("--max-batched-tokens", "--max-num-batched-tokens")) { VAL(); rc = fr_arg_i64(a, v, 1, 1 << 24, &o->max_batched, err); }
        else if (IS("-t", "--threads")) { VAL(); rc = fr_arg_i64(a, v, 1, 1024, &o->threads, err); }
        else if (IS("--device")) { VAL(); rc = fr_arg_device(v, err); o->device = v; }
        else if (IS("--quantize-experts")) {
            VAL();
            if (strcmp(v, "mxfp4") != 0)
                return fr_fail(err, FR_ERR_INVALID, "--quantize-experts \"%s\" is not supported (supported: mxfp4)", v);
            o->quantize_experts = true;
        }
        else if (IS("--no-mmap")) o->no_mmap = true;
        else if (IS("--shutdown-timeout")) { VAL(); rc = fr_arg_f32(a, v, 0.0f, 1e6f, &o->shutdown_timeout, err); }
        else if (IS("--max-body-mb")) { VAL(); rc = fr_arg_i64(a, v, 1, 1 << 16, &o->body_mb, err); }
        else if (IS("--timeout", "-to")) { VAL(); rc = fr_arg_i64(a, v, 1, 1 << 20, &o->timeout, err); }
        else return fr_fail(err, FR_ERR_INVALID, "unknown option \"%s\"", a);
#undef VAL
#undef IS
        if (rc) return rc;
    }
    if (!o->dir) return fr_fail(err, FR_ERR_INVALID, "missing the checkpoint directory");
    if (!o->api_key || !o->api_key[0]) o->api_key = getenv("FRONTIER_API_KEY");
    if (!o->api_key || !o->api_key[0]) o->api_key = getenv("VLLM_API_KEY");
    return FR_OK;
}

/* Sampling defaults for fields a request leaves out: generation_config.json's, as vLLM
 * does; else OpenAI's (temperature 1, top_p 1). */
static fr_gen_params sampling_defaults(const char *dir) {
    fr_gen_params p = fr_gen_params_default();
    p.temperature = 1.0f;
    p.top_p = 1.0f;
    char path[4096];
    snprintf(path, sizeof path, "%s/generation_config.json", dir);
    FILE *f = fopen(path, "rb");
    if (!f) return p;
    char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    cJSON *g = cJSON_Parse(buf);
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(g, "temperature"),
                *tp = cJSON_GetObjectItemCaseSensitive(g, "top_p"), *tk = cJSON_GetObjectItemCaseSensitive(g, "top_k"),
                *mp = cJSON_GetObjectItemCaseSensitive(g, "min_p");
    /* out-of-range values are ignored rather than trusted */
    if (cJSON_IsNumber(t) && t->valuedouble >= 0 && t->valuedouble <= 2) p.temperature = (float)t->valuedouble;
    if (cJSON_IsNumber(tp) && tp->valuedouble > 0 && tp->valuedouble <= 1) p.top_p = (float)tp->valuedouble;
    if (cJSON_IsNumber(tk) && tk->valuedouble >= 0 && tk->valuedouble <= INT32_MAX) p.top_k = (int)tk->valuedouble;
    if (cJSON_IsNumber(mp) && mp->valuedouble >= 0 && mp->valuedouble <= 1) p.min_p = (float)mp->valuedouble;
    cJSON_Delete(g);
    return p;
}

static void add_stop_id(fr_server_model *sm, int32_t id) {
    if (id < 0 || id >= sm->vocab_size || sm->n_stop_ids == FR_MAX_STOP_IDS) return;
    for (int i = 0; i < sm->n_stop_ids; i++)
        if (sm->stop_ids[i] == id) return;
    sm->stop_ids[sm->n_stop_ids++] = id;
}

/* config.json's eos_token_id (an id or a list); the loaded config holds generation_config's
 * list instead when that file exists, and we want both. */
static void add_config_eos(fr_server_model *sm, const char *dir) {
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "rb");
    if (!f) return;
    static char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    cJSON *c = cJSON_Parse(buf);
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(c, "eos_token_id"), *x;
    if (cJSON_IsNumber(e)) add_stop_id(sm, (int32_t)e->valuedouble);
    else if (cJSON_IsArray(e)) cJSON_ArrayForEach(x, e) if (cJSON_IsNumber(x)) add_stop_id(sm, (int32_t)x->valuedouble);
    cJSON_Delete(c);
}

static fr_server *volatile g_server;
static volatile sig_atomic_t g_signals;

static void on_signal(int sig) {
    (void)sig;
    if (g_signals++ == 0) {
        static const char msg[] = "frontier serve: stopping (a second signal exits at once)\n";
        ssize_t w = write(2, msg, sizeof msg - 1);
        (void)w;
        fr_server_request_stop(g_server);
    } else {
        _exit(130);
    }
}


/* What the loading thread builds; main frees it after joining that thread. */
typedef struct {
    const serve_opts *o;
    const char *name;
    fr_server *srv;
    fr_tokenizer *tok;
    fr_chat_template *chat;
    fr_backend *be;
    fr_model *model;
    fr_engine *engine;
    fr_status rc;
    fr_error err;
} loader;

/* The slow part of loading (experts quantized at load take minutes for a large model) runs
 * while the server already answers (503 "Loading model" until ready): readiness probes and
 * load balancers see a live process from the start. What fails fast (a wrong directory, a
 * malformed file) is checked before binding, so it is one line and exit 1. */
static void *load(void *arg) {
    loader *L = arg;
    const serve_opts *o = L->o;
    fr_error *err = &L->err;
    fr_status rc = FR_OK;
    if (o->quantize_experts && (rc = fr_model_quantize_experts(L->model, FR_QFMT_MXFP4, err))) goto out;

    fr_engine_opts eo = fr_engine_opts_default();
    if (o->max_num_seqs) eo.max_num_seqs = (int)o->max_num_seqs;
    if (o->max_model_len) eo.max_model_len = o->max_model_len;
    if (o->max_queue) eo.max_queue = (int)o->max_queue;
    if (o->max_batched) eo.max_batched_tokens = o->max_batched;
    eo.kv_cache_dtype = o->kv_dtype;
    if (o->kv_gb > 0) {
        int64_t per_tok = fr_kv_bytes_per_token(L->model, o->kv_dtype);
        eo.kv_cache_tokens = per_tok > 0 ? (int64_t)((double)o->kv_gb * (1 << 30) / (double)per_tok) : 0;
        if (eo.kv_cache_tokens < 1) {
            rc = fr_fail(err, FR_ERR_INVALID, "--kv-cache-memory %g GB holds no token (%lld bytes per token)",
                         (double)o->kv_gb, (long long)per_tok);
            goto out;
        }
    }
    if ((rc = fr_engine_create(L->model, L->be, &eo, &L->engine, err))) goto out;

    fr_server_model sm = {.engine = L->engine, .tok = L->tok, .chat = L->chat, .vocab_size = L->model->cfg.vocab_size};
    add_stop_id(&sm, fr_tokenizer_eos_id(L->tok));
    for (int i = 0; i < L->model->cfg.n_eos; i++) add_stop_id(&sm, L->model->cfg.eos_token_ids[i]);
    add_config_eos(&sm, o->dir);
    sm.defaults = sampling_defaults(o->dir);
    sm.reasoning = fr_tokenizer_token_to_id(L->tok, "</think>", 8) >= 0;
    fprintf(stderr, "frontier serve: model %s (max_model_len %lld, %d stop ids%s%s)\n", L->name,
            (long long)fr_engine_max_model_len(L->engine), sm.n_stop_ids, L->chat ? ", chat template" : "",
            sm.reasoning ? ", reasoning split" : "");
    fr_server_set_model(L->srv, &sm);
out:
    L->rc = rc;
    if (rc) fr_server_request_stop(L->srv); /* the loop ends; main reports the error */
    return NULL;
}

int fr_cmd_serve(int argc, char **argv);
int fr_cmd_serve(int argc, char **argv) {
    serve_opts o;
    fr_error err = {0};
    if (argc < 2) return fputs(USAGE, stderr), 2;
    if (parse(argc, argv, &o, &err)) return fr_cli_error("serve", &err), 2;

    char name[1024];
    snprintf(name, sizeof name, "%s", o.name ? o.name : o.dir);
    size_t nl = strlen(name);
    while (!o.name && nl > 1 && name[nl - 1] == '/') name[--nl] = '\0';
    fr_server_opts so = {.host = o.host, .port = (int)o.port, .api_key = o.api_key, .model_name = name,
                         .max_body_bytes = o.body_mb << 20, .http_timeout_s = (int)o.timeout,
                         .shutdown_timeout_s = o.shutdown_timeout, .sse_keepalive_s = o.sse_keepalive};
    const fr_server_model loading = {0};
    loader L = {.o = &o, .name = name};
    pthread_t th;
    bool started = false;
    fr_status rc;
    if ((rc = fr_tokenizer_load(o.dir, &L.tok, &err))) goto out;
    fr_error cerr = {0};
    if (fr_chat_template_load(o.dir, &L.chat, &cerr))
        fprintf(stderr, "frontier serve: no chat template (%s): /v1/chat/completions will answer 400\n", cerr.msg);
    if ((rc = fr_backend_open(o.device, (int)o.threads, &L.be, &err))) goto out;
    if ((rc = fr_model_load_how(o.dir, o.no_mmap ? FR_ST_READ : FR_ST_MAP, &L.model, &err))) goto out;
    if ((rc = fr_server_create(&so, &loading, &L.srv, &err))) goto out;

    g_server = L.srv;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN); /* a client that hangs up must not kill the server */

    fprintf(stderr, "frontier serve: preparing %s; port %d answers 503 until it is ready\n", o.dir,
            fr_server_port(L.srv));
    fflush(stderr);
    if (pthread_create(&th, NULL, load, &L) != 0) {
        rc = fr_fail(&err, FR_ERR_NOMEM, "cannot start the loading thread");
        goto out;
    }
    started = true;
    rc = fr_server_run(L.srv, &err);
    g_server = NULL;
    pthread_join(th, NULL); /* a stop during loading waits for the load to end */
    started = false;
    if (!rc && L.rc) {
        rc = L.rc;
        err = L.err;
    } else {
        fprintf(stderr, "frontier serve: stopped\n");
    }
out:
    if (started) pthread_join(th, NULL);
    fr_server_free(L.srv);
    fr_engine_free(L.engine);
    fr_model_free(L.model);
    fr_backend_destroy(L.be);
    fr_chat_template_free(L.chat);
    fr_tokenizer_free(L.tok);
    libevent_global_shutdown(); /* frees libevent's thread locks: no leak reports under ASan */
    return rc ? fr_cli_error("serve", &err) : 0;
}
