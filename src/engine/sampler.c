/* sampler.c - greedy and filtered random sampling (see sampler.h). */
#include "sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../core/argmax.h"

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t next_u64(uint64_t *s) {
    uint64_t r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0], s[3] ^= s[1], s[1] ^= s[2], s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return r;
}

double fr_sampler_uniform(fr_sampler *s) { return (double)(next_u64(s->rng) >> 11) * 0x1.0p-53; }

void fr_sampler_seed(uint64_t rng[4], uint64_t seed) {
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) rng[i] = splitmix64(&x);
}

fr_status fr_sampler_init(fr_sampler *s, const fr_sampler_params *p, int64_t vocab, fr_error *err) {
    memset(s, 0, sizeof *s);
    if (!(p->temperature >= 0.0f) || !isfinite(p->temperature))
        return fr_fail(err, FR_ERR_INVALID, "temperature must be a finite number >= 0 (got %g)", p->temperature);
    if (p->top_k < 0) return fr_fail(err, FR_ERR_INVALID, "top-k must be >= 0 (got %d)", p->top_k);
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
        return fr_fail(err, FR_ERR_INVALID, "top-p must be in (0, 1] (got %g)", p->top_p);
    if (!(p->min_p >= 0.0f && p->min_p <= 1.0f))
        return fr_fail(err, FR_ERR_INVALID, "min-p must be in [0, 1] (got %g)", p->min_p);
    if (vocab < 1) return fr_fail(err, FR_ERR_INVALID, "empty vocabulary");
    s->p = *p;
    s->vocab = vocab;
    s->cand = malloc((size_t)vocab * sizeof *s->cand);
    if (!s->cand) return fr_fail(err, FR_ERR_NOMEM, "sampler: out of memory");
    fr_sampler_seed(s->rng, p->seed);
    return FR_OK;
}

void fr_sampler_release(fr_sampler *s) {
    free(s->cand);
    s->cand = NULL;
}

static int by_prob_desc(const void *a, const void *b) {
    const struct fr_cand *x = a, *y = b;
    if (x->p != y->p) return x->p < y->p ? 1 : -1;
    return (x->id > y->id) - (x->id < y->id);
}

int32_t fr_sampler_sample(fr_sampler *s, const float *logits) {
    const int64_t V = s->vocab;
    if (s->p.temperature == 0.0f || s->p.top_k == 1) return fr_argmax_f32(logits, V);
    /* softmax(logits / T), stable */
    float mx = logits[fr_argmax_f32(logits, V)];
    double sum = 0.0;
    for (int64_t i = 0; i < V; i++) {
        float e = expf((logits[i] - mx) / s->p.temperature);
        s->cand[i] = (struct fr_cand){e, (int32_t)i};
        sum += e;
    }
    for (int64_t i = 0; i < V; i++) s->cand[i].p = (float)(s->cand[i].p / sum);
    qsort(s->cand, (size_t)V, sizeof *s->cand, by_prob_desc);
    int64_t n = V;
    if (s->p.top_k > 0 && s->p.top_k < n) n = s->p.top_k;
    if (s->p.top_p < 1.0f) {
        /* renormalize over the top-k survivors, then keep the smallest prefix reaching top_p */
        double tot = 0.0, acc = 0.0;
        for (int64_t i = 0; i < n; i++) tot += s->cand[i].p;
        int64_t keep = n;
        for (int64_t i = 0; i < n; i++) {
            acc += s->cand[i].p / tot;
            if (acc >= s->p.top_p) {
                keep = i + 1;
                break;
            }
        }
        n = keep;
    }
    if (s->p.min_p > 0.0f) {
        float floor_p = s->p.min_p * s->cand[0].p; /* relative to the most likely token */
        int64_t keep = 1;
        while (keep < n && s->cand[keep].p >= floor_p) keep++;
        n = keep;
    }
    double tot = 0.0;
    for (int64_t i = 0; i < n; i++) tot += s->cand[i].p;
    double u = fr_sampler_uniform(s) * tot, acc = 0.0;
    for (int64_t i = 0; i < n; i++) {
        acc += s->cand[i].p;
        if (u < acc) return s->cand[i].id;
    }
    return s->cand[n - 1].id;
}
