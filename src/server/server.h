/* server.h - the OpenAI-compatible HTTP server over one engine.
 *
 * One libevent event loop (evhttp) on the calling thread serves POST /v1/chat/completions,
 * POST /v1/completions (non-streaming and SSE), GET /v1/models, GET /health and GET /metrics
 * (shared/docs/SERVING.md). Requests become token ids here (chat template, tokenizer) and go
 * to the engine; the engine's per-token callbacks (on its own thread) are queued under a
 * mutex and handed to the loop by a wake-up event, where text, stop strings, reasoning and
 * JSON are made. A client that disconnects has its request aborted in the engine.
 *
 * Lifecycle: create (binds the socket), run (blocks), request_stop from a signal handler
 * (drain: new requests get 503, in-flight ones finish for up to shutdown_timeout seconds,
 * then are aborted; run returns once all have had their final event), free. The server
 * installs no signal handlers; the caller should ignore SIGPIPE (writes to closed sockets).
 * The server can bind and run before the model is loaded: created with a NULL engine it
 * answers 503 ("Loading model") on every route until fr_server_set_model (any thread).
 * The line "frontier serve: listening on http://HOST:PORT" goes to stderr once it serves.
 *
 * Ownership: the server borrows the engine, tokenizer and chat template, which must outlive
 * it. It owns its sockets, events and in-flight request state. */
#ifndef FR_SERVER_H
#define FR_SERVER_H

#include <stdbool.h>
#include <stdint.h>

#include "../core/status.h"
#include "../engine/engine.h"
#include "../tokenizer/chat.h"
#include "../tokenizer/tokenizer.h"

typedef struct {
    const char *host;          /* bind address (default "127.0.0.1") */
    int port;                  /* 0: any free port (fr_server_port tells which) */
    const char *api_key;       /* NULL or "": no authentication */
    const char *model_name;    /* the served name (required) */
    int64_t max_body_bytes;    /* request body limit, answered 413 (default 32 MiB) */
    int64_t max_header_bytes;  /* request line + headers limit (default 64 KiB) */
    int http_timeout_s;        /* per-connection read/write/idle timeout (default 600) */
    double shutdown_timeout_s; /* drain time after request_stop before aborting (default 30) */
    double sse_keepalive_s;    /* an SSE comment on streams silent this long (default 15; < 0: never) */
} fr_server_opts;

typedef struct {
    fr_engine *engine;              /* borrowed */
    const fr_tokenizer *tok;        /* borrowed */
    const fr_chat_template *chat;   /* borrowed; NULL: the chat endpoint answers 400 */
    int64_t vocab_size;             /* ids at or past it are rejected */
    int n_stop_ids;                 /* EOS ids that end every request (ignore_eos aside) */
    int32_t stop_ids[FR_MAX_STOP_IDS];
    fr_gen_params defaults;         /* sampling defaults (generation_config.json) */
    bool reasoning;                 /* chat output has <think>...</think>: split reasoning_content */
} fr_server_model;

typedef struct fr_server fr_server;

/* Bind and prepare the loop. */
fr_status fr_server_create(const fr_server_opts *opts, const fr_server_model *model, fr_server **out,
                           fr_error *err);
/* The bound TCP port. */
int fr_server_port(const fr_server *s);
/* Serve until a stop request has drained. */
fr_status fr_server_run(fr_server *s, fr_error *err);
/* Begin the drain. Async-signal-safe (writes one byte to a pipe). */
void fr_server_request_stop(fr_server *s);
/* The model is ready (call once, from any thread; the server copies *model). */
void fr_server_set_model(fr_server *s, const fr_server_model *model);
void fr_server_free(fr_server *s);

#endif
