/* forward.h - a session (one sequence's latent KV cache) and the forward pass.
 *
 * The forward pass is written once against the backend op table (backend.h).
 * A session owns its cache and per-step buffers; the model and backend are
 * borrowed and must outlive it. */
#ifndef FR_FORWARD_H
#define FR_FORWARD_H

#include "model.h"

typedef struct fr_session fr_session;

/* A session able to hold max_ctx tokens of context. */
fr_status fr_session_create(const fr_model *m, fr_backend *be, int64_t max_ctx, fr_session **out, fr_error *err);
void fr_session_free(fr_session *s);

/* Tokens already in the cache. */
int64_t fr_session_pos(const fr_session *s);
/* Forget the sequence (keeps the memory). */
void fr_session_reset(fr_session *s);

typedef enum {
    FR_ATTN_AUTO = 0,  /* prefill form for n > 1, absorbed decode form for n == 1 */
    FR_ATTN_NAIVE,     /* always the prefill (up-projecting) form */
    FR_ATTN_ABSORBED,  /* always the absorbed form */
} fr_attn_mode;

/* Run n tokens (appended at the session's position) through the model.
 * logits: NULL, or [n, vocab] when all_logits, else [vocab] for the last token.
 * Ids outside the vocabulary: FR_ERR_INVALID; cache full: FR_ERR_CAPACITY. */
fr_status fr_session_eval(fr_session *s, const int32_t *ids, int64_t n, fr_attn_mode mode, float *logits,
                          bool all_logits, fr_error *err);

#endif
