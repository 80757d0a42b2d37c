/* frontier.h - the public C API of the frontier inference engine.
 *
 * Opaque handles only: a caller never sees tensors, backends or the KV cache.
 * Every fallible call returns 0 on success or a negative status (the values of
 * fr_status: -1 out of memory, -2 i/o, -3 bad format, -4 unsupported, -5 invalid
 * argument, -6 device, -7 capacity) and writes a one-line message into the
 * caller's buffer `err` of `errlen` bytes (may be NULL).
 *
 *   frontier_model *m;  frontier_session *s;
 *   frontier_model_load("/models/DeepSeek-V3", 0, &m, err, sizeof err);
 *   frontier_session_create(m, 4096, &s, err, sizeof err);
 *   frontier_session_eval(s, ids, n, logits, err, sizeof err);   // logits of the last id
 *   int next = frontier_sample(m, logits, &params, step);
 */
#ifndef FRONTIER_H
#define FRONTIER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct frontier_model frontier_model;     /* weights + config + backend; read-only once loaded */
typedef struct frontier_session frontier_session; /* one sequence: its KV cache and position */

/* Load a checkpoint directory (config.json + safetensors) on the CPU backend with
 * n_threads threads (0: all cores). */
int frontier_model_load(const char *dir, int n_threads, frontier_model **out, char *err, size_t errlen);
void frontier_model_free(frontier_model *m);

int64_t frontier_model_vocab_size(const frontier_model *m);
/* Is id one of the model's end-of-sequence ids? */
int frontier_model_is_eos(const frontier_model *m, int32_t id);

/* A session holding up to max_ctx tokens. The model must outlive it. */
int frontier_session_create(frontier_model *m, int64_t max_ctx, frontier_session **out, char *err, size_t errlen);
void frontier_session_free(frontier_session *s);
/* Append n ids and compute the logits of the last one into logits[vocab] (may be NULL). */
int frontier_session_eval(frontier_session *s, const int32_t *ids, int64_t n, float *logits, char *err,
                          size_t errlen);
int64_t frontier_session_position(const frontier_session *s);
void frontier_session_reset(frontier_session *s);

typedef struct {
    float temperature; /* 0: greedy */
    int top_k;         /* 0: off */
    float top_p;       /* 1: off */
    float min_p;       /* 0: off */
    uint64_t seed;
} frontier_sampling;

/* Choose the next id from logits[vocab] (temperature, top-k, top-p, min-p, seeded). Returns
 * the id, or a negative status for invalid parameters. */
/* draw: index of this draw in the sequence (0, 1, ...); with the seed it fixes the result. */
int32_t frontier_sample(const frontier_model *m, const float *logits, const frontier_sampling *p, uint64_t draw);

#ifdef __cplusplus
}
#endif

#endif
