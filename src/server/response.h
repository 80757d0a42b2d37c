/* response.h - the JSON bodies the server sends (OpenAI shapes).
 *
 * Chat: chat.completion / chat.completion.chunk with choices[0].message or .delta
 * (role, content, reasoning_content), logprobs as content[{token, logprob, bytes,
 * top_logprobs}]. Completions: text_completion with choices[0].text and the legacy logprobs
 * {tokens, token_logprobs, top_logprobs, text_offset}. Errors: {"error": {message, type,
 * param, code}}. Every builder returns a malloc'd NUL-terminated string or NULL when out of
 * memory. */
#ifndef FR_SRV_RESPONSE_H
#define FR_SRV_RESPONSE_H

#include <stdbool.h>
#include <stdint.h>

#include "../tokenizer/tokenizer.h"
#include "output.h"
#include "request.h"

typedef struct {
    const char *id;    /* "chatcmpl-..." / "cmpl-..." */
    const char *model; /* the served name */
    int64_t created;   /* unix seconds */
    srv_api api;
    const fr_tokenizer *tok; /* for logprob token strings */
} srv_resp_meta;

typedef struct {
    int64_t prompt, completion, reasoning;
    bool has_reasoning; /* report completion_tokens_details.reasoning_tokens */
} srv_usage;

/* param and code may be NULL (null in the JSON). */
char *srv_json_error(const char *message, const char *type, const char *param, const char *code);

/* Non-streaming body: the output's whole text and logprobs; finish is "stop", "length", ... */
char *srv_json_response(const srv_resp_meta *m, const srv_output *o, const char *finish, const srv_usage *u);

/* One SSE chunk's JSON (without "data: "): the output's pending text (content, reasoning) and
 * logprob entries; role adds "role":"assistant" (first chat delta); finish NULL means null;
 * usage NULL omits it. */
char *srv_json_chunk(const srv_resp_meta *m, const srv_output *o, bool role, const char *finish,
                     const srv_usage *u);

/* The include_usage chunk: choices [] and the usage. */
char *srv_json_usage_chunk(const srv_resp_meta *m, const srv_usage *u);

#endif
