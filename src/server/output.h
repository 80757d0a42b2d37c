/* output.h - one request's generated tokens -> text, split and cut as the API asks.
 *
 * Per token: streaming detokenizer (whole UTF-8 characters only, special tokens left out, as
 * `frontier run` prints) -> stop strings (stop.h) -> for chat on thinking models, the
 * reasoning / content split (reasoning.h). The text produced since the caller last cleared
 * `content` / `reasoning` is there to send: a streaming caller sends and clears it per
 * token, a non-streaming caller keeps it all. Logprob entries collect the same way in lp.
 * Loop-thread only. */
#ifndef FR_SRV_OUTPUT_H
#define FR_SRV_OUTPUT_H

#include <stdbool.h>
#include <stdint.h>

#include "../engine/engine.h"
#include "../tokenizer/tokenizer.h"
#include "buf.h"
#include "reasoning.h"
#include "stop.h"

typedef struct {
    int32_t id;
    float logprob;
    int n_top;
    int32_t top_ids[FR_MAX_TOP_LOGPROBS];
    float top_logprobs[FR_MAX_TOP_LOGPROBS];
    int64_t text_offset; /* legacy completions: characters of content released before this token */
} srv_logprob;

typedef struct {
    fr_detok *detok;
    srv_stop stop;
    bool split_reasoning;
    srv_reasoning rsn;
    srv_buf content, reasoning; /* text not yet taken by the caller */
    fr_tok_text piece;          /* scratch: the detokenizer's output */
    srv_buf cut;                /* scratch: text past the stop check */
    int64_t content_total;      /* characters of content released so far (for text_offset) */
    int64_t n_tokens;           /* tokens generated (the stop token included) */
    int64_t reasoning_tokens;   /* of which produced while inside the reasoning */
    bool stopped;               /* a stop string matched: later tokens are ignored */
    bool want_logprobs;
    srv_logprob *lp;            /* entries not yet taken */
    int64_t n_lp, cap_lp;
} srv_output;

/* stops: the request's stop strings. split_reasoning: chat on a model with think tags;
 * reasoning_first: the rendered prompt ended in <think>. */
fr_status srv_output_init(srv_output *o, const fr_tokenizer *tok, const char *const *stops, int n_stops,
                          bool split_reasoning, bool reasoning_first, bool want_logprobs, fr_error *err);
void srv_output_release(srv_output *o);

/* One token event (not a final abort/error one). A final STOP event's token is a stop id:
 * counted, not shown. Sets *matched when a stop string completed (the request is done). */
fr_status srv_output_token(srv_output *o, const fr_token_event *ev, bool *matched, fr_error *err);
/* The output ended: release all held-back text. */
fr_status srv_output_finish(srv_output *o, fr_error *err);
/* Forget the logprob entries (after sending them). */
void srv_output_take_logprobs(srv_output *o);

#endif
