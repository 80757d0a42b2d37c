/* request.h - an OpenAI request body (cJSON) -> validated generation parameters.
 *
 * Pure: no tokenizer, no engine. Every number is type- and range-checked before use; a bad
 * field gives FR_ERR_INVALID with a one-line message and the field's name in `param` (the
 * server answers 400 with both). null counts as absent. Fields we do not know are ignored
 * and listed in `unknown` for a warning. The Python SDK's extra_body arrives at the top
 * level; a literal "extra_body" object is also read, top-level fields winning.
 *
 * Ownership: strings and arrays are borrowed from the body, which must outlive the request;
 * kwargs is owned (srv_request_release). */
#ifndef FR_SRV_REQUEST_H
#define FR_SRV_REQUEST_H

#include <stdbool.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "../core/status.h"
#include "../engine/engine.h"
#include "stop.h"

typedef enum { SRV_API_CHAT, SRV_API_COMPLETIONS } srv_api;

typedef struct {
    srv_api api;
    bool stream;
    bool include_usage;    /* stream_options.include_usage: a usage chunk before [DONE] */
    bool continuous_usage; /* stream_options.continuous_usage_stats (vLLM): usage on every chunk */
    fr_gen_params gen;     /* sampling; gen.max_tokens is set by the server (below) */
    bool max_tokens_set;   /* max_tokens / max_completion_tokens given: max_tokens */
    int64_t max_tokens;
    bool seed_set;
    int n_stop;
    const char *stop[SRV_MAX_STOP]; /* borrowed */
    int n_stop_token_ids;           /* vLLM's stop_token_ids (checked against the vocabulary later) */
    int32_t stop_token_ids[FR_MAX_STOP_IDS];
    bool logprobs;    /* chat: logprobs true; completions: logprobs given (an integer) */
    int top_logprobs; /* alternatives per token, 0 .. FR_MAX_TOP_LOGPROBS */

    /* chat */
    const cJSON *messages; /* non-empty array of objects with a string role */
    const cJSON *tools;    /* array or NULL */
    cJSON *kwargs;         /* owned: chat_template_kwargs (top level + extra_body), or NULL */
    bool add_generation_prompt;

    /* completions: exactly one of these */
    const char *prompt_text;  /* borrowed */
    const cJSON *prompt_ids;  /* borrowed: non-empty array of integers in [0, INT32_MAX] */

    char unknown[200]; /* ignored field names, comma-separated (truncated) */
} srv_request;

/* Parse and validate body for api. defaults: the sampling parameters of absent fields
 * (the checkpoint's generation_config.json, as vLLM does). On failure *param names the
 * field ("" when none). */
fr_status srv_request_parse(const cJSON *body, srv_api api, const fr_gen_params *defaults, srv_request *out,
                            const char **param, fr_error *err);
void srv_request_release(srv_request *r);

#endif
