/* engine.h - continuous batching over one model, for the server.
 *
 * A step loop on its own thread. Each step runs every running sequence's next
 * token together with chunks of waiting prompts (chunked prefill) under a token
 * budget, in one batched forward pass; the latent KV cache is paged (blocks of
 * block_size tokens from one pool, freed at finish or abort); when blocks run
 * out the newest running sequence is preempted and later recomputed. Requests
 * are token ids in, token events out: text, templates, stop strings and the
 * HTTP protocol live in the server.
 *
 * Threads: submit, abort, stats and free may be called from any thread. Event
 * callbacks run on the engine thread (the final aborts of fr_engine_free on the
 * thread calling it), one request's events in order; they must
 * be quick and must not call back into the engine except fr_engine_abort. After
 * a request's final event (finish != FR_FINISH_NONE) its callback is never
 * called again, so `user` may be freed then, and not before. */
#ifndef FR_ENGINE_H
#define FR_ENGINE_H

#include <stdbool.h>
#include <stdint.h>

#include "../core/status.h"
#include "../model/kv_cache.h"
#include "../model/model.h"

#define FR_MAX_TOP_LOGPROBS 20
#define FR_MAX_STOP_IDS 16

typedef enum {
    FR_FINISH_NONE = 0, /* more events follow */
    FR_FINISH_STOP,     /* a stop id was sampled (it is the event's token) */
    FR_FINISH_LENGTH,   /* max_tokens reached, or the sequence reached max_model_len */
    FR_FINISH_ABORT,    /* fr_engine_abort, or engine shutdown; no token */
    FR_FINISH_ERROR,    /* the forward pass failed; no token; message in `error` */
} fr_finish;

typedef struct {
    float temperature, top_p, min_p; /* 0 greedy; top_p 1 off; min_p 0 off */
    int top_k;                       /* 0 off */
    uint64_t seed;                   /* fixes the draws of this request */
    float presence_penalty, frequency_penalty; /* OpenAI's, in [-2, 2], on generated tokens */
    int64_t max_tokens;              /* >= 1 */
    bool ignore_eos;                 /* sample past stop ids (benchmarks) */
    int n_stop_ids;                  /* 0 .. FR_MAX_STOP_IDS ids that finish the request */
    int32_t stop_ids[FR_MAX_STOP_IDS];
    int top_logprobs;                /* -1: no logprobs; 0 .. FR_MAX_TOP_LOGPROBS alternatives */
} fr_gen_params;

/* fr_gen_params with the defaults: greedy, no penalties, max_tokens 16, no logprobs. */
fr_gen_params fr_gen_params_default(void);

typedef struct {
    uint64_t id;           /* the request's id from fr_engine_submit */
    int32_t token;         /* the sampled token, or -1 (abort, error) */
    float logprob;         /* log-softmax of the model's raw logits at `token` (if logprobs asked) */
    int n_top;             /* alternatives below, most likely first */
    int32_t top_ids[FR_MAX_TOP_LOGPROBS];
    float top_logprobs[FR_MAX_TOP_LOGPROBS];
    fr_finish finish;
    int64_t prompt_tokens, completion_tokens; /* counts so far (this token included) */
    /* Engine-side times on the CLOCK_MONOTONIC clock, seconds (0 until they happen). */
    double t_submitted, t_scheduled, t_first_token, t_finished;
    int preemptions;       /* times this request was preempted */
    const char *error;     /* FR_FINISH_ERROR: one line; else NULL */
} fr_token_event;

typedef void (*fr_event_fn)(void *user, const fr_token_event *ev);

typedef struct {
    int max_num_seqs;           /* running sequences per step (default 64) */
    int64_t max_model_len;      /* prompt + output tokens per request (default: the pool, at most the model's) */
    int64_t kv_cache_tokens;    /* pool size in tokens (default 64 * 1024, at least max_model_len) */
    int max_queue;              /* waiting requests before submit answers FR_ERR_BUSY (default 256) */
    int64_t max_batched_tokens; /* tokens per step: decodes + prefill chunks (default 512) */
    int block_size;             /* tokens per KV block (default 16) */
    fr_kv_dtype kv_cache_dtype; /* FR_KV_F32 (default, exact) or FR_KV_FP8 (kv_cache.h) */
} fr_engine_opts;

/* Zeroes in opts mean the defaults above. */
fr_engine_opts fr_engine_opts_default(void);

typedef struct fr_engine fr_engine;

/* Start the step thread. The model and backend must outlive the engine. */
fr_status fr_engine_create(const fr_model *m, fr_backend *be, const fr_engine_opts *opts, fr_engine **out,
                           fr_error *err);
/* Abort everything still in flight (each gets its final event), join the thread, free. */
void fr_engine_free(fr_engine *e);

int64_t fr_engine_max_model_len(const fr_engine *e);

/* Queue a request. Errors (no event will follow): FR_ERR_INVALID for bad parameters,
 * ids outside the vocabulary, an empty prompt, or prompt + 1 > max_model_len (the
 * message says the counts); FR_ERR_BUSY when max_queue requests are waiting. */
fr_status fr_engine_submit(fr_engine *e, const int32_t *prompt, int64_t n_prompt, const fr_gen_params *p,
                           fr_event_fn fn, void *user, uint64_t *id, fr_error *err);

/* Stop a request at the next step boundary (also mid-prefill) and free its blocks; its
 * final event has FR_FINISH_ABORT unless it already finished. Unknown ids are ignored. */
void fr_engine_abort(fr_engine *e, uint64_t id);

typedef struct {
    int running, waiting;             /* sequences now */
    int64_t kv_blocks_total, kv_blocks_used;
    double kv_usage;                  /* used / total, 0..1 */
    uint64_t prompt_tokens_total;     /* prompt tokens computed (recomputation included) */
    uint64_t generation_tokens_total;
    uint64_t preemptions_total, steps_total;
    uint64_t finished_stop, finished_length, finished_abort, finished_error;
} fr_engine_stats;

void fr_engine_get_stats(fr_engine *e, fr_engine_stats *out);

#endif
