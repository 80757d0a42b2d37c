/* forward.h - the forward pass over a batch of sequences, and a one-sequence session.
 *
 * fr_forward_step runs one step for several sequences at once: their new tokens
 * are concatenated, every matmul and the MoE run once over all of them, and
 * attention runs per sequence over its own pages of the latent cache (kv_cache.h).
 * This is what continuous batching (src/engine/engine.c) drives; fr_session is the
 * one-sequence form that run, logits and the public API use. The model and backend
 * are borrowed and must outlive what is created here. */
#ifndef FR_FORWARD_H
#define FR_FORWARD_H

#include "kv_cache.h"
#include "model.h"

typedef enum {
    FR_LOGITS_NONE = 0, /* a prefill chunk that does not reach the end of the prompt */
    FR_LOGITS_LAST,     /* the last token's logits: one row */
    FR_LOGITS_ALL,      /* every token's logits: n rows */
} fr_logits_want;

/* One sequence's share of a step. */
typedef struct {
    const int32_t *ids;    /* the n new tokens */
    int64_t n, pos;        /* pos: tokens of this sequence already in the cache */
    const int32_t *blocks; /* its block table, holding at least pos + n tokens */
    int64_t n_absorbed;    /* the last n_absorbed tokens attend in the absorbed (decode) form,
                            * the others in the prefill (up-projecting) form */
    fr_logits_want logits;
    int64_t max_ctx;       /* the most tokens this sequence can reach (0: not known); a backend
                            * that records repeated decode steps sizes them by it */
} fr_seq_step;

typedef struct fr_forward fr_forward;

fr_status fr_forward_create(const fr_model *m, fr_backend *be, fr_kv_pool *pool, fr_forward **out, fr_error *err);
void fr_forward_free(fr_forward *f);

/* Run one step. logits (host memory, may be NULL when no sequence wants any): the wanted
 * rows, sequence by sequence, each [vocab]. Ids outside the vocabulary: FR_ERR_INVALID. */
fr_status fr_forward_step(fr_forward *f, const fr_seq_step *seqs, int n_seqs, float *logits, fr_error *err);
/* The same step, but greedy: ids (host memory) gets the argmax of each wanted row (the
 * first index of its largest logit, as fr_argmax_f32 picks it). With a backend argmax op
 * (a GPU) the pick runs there and only the ids cross to the host. */
fr_status fr_forward_step_ids(fr_forward *f, const fr_seq_step *seqs, int n_seqs, int32_t *ids, fr_error *err);

/* ---- one sequence */

typedef struct fr_session fr_session;

typedef struct {
    int64_t max_ctx;      /* tokens of context the session's own cache pool holds */
    fr_kv_dtype kv_dtype; /* the cache's element format (FR_KV_F32: exact, the default) */
} fr_session_opts;

/* A session able to hold max_ctx tokens of context (its own float32 cache pool). */
fr_status fr_session_create(const fr_model *m, fr_backend *be, int64_t max_ctx, fr_session **out, fr_error *err);
/* The same with every option. */
fr_status fr_session_create_opts(const fr_model *m, fr_backend *be, const fr_session_opts *o, fr_session **out,
                                 fr_error *err);
void fr_session_free(fr_session *s);

/* Tokens already in the cache. */
int64_t fr_session_pos(const fr_session *s);
fr_kv_dtype fr_session_kv_dtype(const fr_session *s);
/* Benchmarks only: append n tokens whose cache rows (latent and indexer keys, every layer)
 * are random values of the scale real ones have, written through the backend's kv_write
 * (so FP8 rows are quantized as usual), instead of running a prefill over n tokens. Decode
 * after it costs what it would after a real prefill of that length; its outputs are
 * meaningless. Needs the backend's from_host op. */
fr_status fr_session_fill_synthetic(fr_session *s, int64_t n, uint64_t seed, fr_error *err);
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
/* The same, greedy: *next gets the argmax of the last token's logits (fr_forward_step_ids:
 * on a GPU only the id crosses to the host). */
fr_status fr_session_eval_greedy(fr_session *s, const int32_t *ids, int64_t n, fr_attn_mode mode, int32_t *next,
                                 fr_error *err);

#endif
