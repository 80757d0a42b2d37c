/* sampler.h - choose the next token from logits.
 *
 * Greedy when temperature is 0 (argmax; the lower id wins a tie). Otherwise the
 * filters apply in the order transformers applies them: temperature, top-k,
 * top-p (nucleus), min-p; then a draw from the renormalized distribution with a
 * seeded generator, so a seed reproduces a run exactly. */
#ifndef FR_SAMPLER_H
#define FR_SAMPLER_H

#include <stdint.h>

#include "../core/status.h"

typedef struct {
    float temperature; /* 0: greedy */
    int top_k;         /* 0: off */
    float top_p;       /* 1: off; in (0, 1] */
    float min_p;       /* 0: off; in [0, 1] */
    uint64_t seed;
} fr_sampler_params;

typedef struct {
    fr_sampler_params p;
    uint64_t rng[4];   /* xoshiro256** state */
    int64_t vocab;
    struct fr_cand { float p; int32_t id; } *cand; /* [vocab] scratch */
} fr_sampler;

/* Check parameters (ranges above) and allocate scratch for a vocabulary. */
fr_status fr_sampler_init(fr_sampler *s, const fr_sampler_params *p, int64_t vocab, fr_error *err);
void fr_sampler_release(fr_sampler *s);

/* The generator state a seed gives (what fr_sampler_init sets up): lets a caller that keeps
 * one sampler's scratch for many requests hold each request's own draws. */
void fr_sampler_seed(uint64_t rng[4], uint64_t seed);

/* Next token id from logits[vocab]. */
int32_t fr_sampler_sample(fr_sampler *s, const float *logits);

/* Uniform double in [0, 1) from the sampler's generator (exposed for tests). */
double fr_sampler_uniform(fr_sampler *s);

#endif
