/* argmax.h - the greedy pick, shared by the sampler and the CPU backend's argmax op. */
#ifndef FR_CORE_ARGMAX_H
#define FR_CORE_ARGMAX_H

#include <stdint.h>

/* Index of the largest of v[0 .. n), the first on ties: a left-to-right scan with `>`, so a
 * NaN never wins, except at index 0, where nothing beats it. n >= 1. */
static inline int32_t fr_argmax_f32(const float *v, int64_t n) {
    int64_t best = 0;
    for (int64_t i = 1; i < n; i++)
        if (v[i] > v[best]) best = i;
    return (int32_t)best;
}

#endif
