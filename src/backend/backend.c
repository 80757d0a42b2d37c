/* backend.c - backend-independent pieces: destruction and MoE expert selection.
 *
 * Selection is a few dozen comparisons per token; every backend (the CUDA one
 * included, for its host-side checks) must pick exactly the same experts, so the
 * rule lives here once: noaux_tc of shared/docs/ARCH.md section 4.4, ties going
 * to the lower index. */
#include "backend.h"

#include <math.h>
#include <stdlib.h>

void fr_backend_destroy(fr_backend *be) {
    if (!be) return;
    if (be->ops && be->ops->destroy) be->ops->destroy(be);
    else free(be);
}

/* Index of the largest v[i] over i < n with allowed[i] (or all when allowed is NULL)
 * not yet taken; lower index wins ties. -1 when none is left. */
static int argmax_free(const float *v, int n, const unsigned char *taken) {
    int best = -1;
    for (int i = 0; i < n; i++) {
        if (taken[i]) continue;
        if (best < 0 || v[i] > v[best]) best = i;
    }
    return best;
}

void fr_route_select(const fr_router *r, const float *scores, const float *bias, int32_t *idx, float *w) {
    enum { MAXE = 4096 };
    int E = r->n_experts;
    float choice[MAXE];
    unsigned char taken[MAXE] = {0};
    for (int e = 0; e < E; e++) choice[e] = scores[e] + (bias ? bias[e] : 0.0f);

    if (r->n_group > 1) {
        int gs = E / r->n_group;
        float gscore[MAXE];
        unsigned char gtaken[MAXE] = {0};
        for (int g = 0; g < r->n_group; g++) {
            /* group score = sum of the two largest choices in the group (one if the group has one) */
            float a = -INFINITY, b = -INFINITY;
            for (int e = g * gs; e < (g + 1) * gs; e++) {
                if (choice[e] > a) { b = a; a = choice[e]; }
                else if (choice[e] > b) b = choice[e];
            }
            gscore[g] = gs > 1 ? a + b : a;
        }
        unsigned char keep[MAXE] = {0};
        for (int k = 0; k < r->topk_group; k++) {
            int g = argmax_free(gscore, r->n_group, gtaken);
            gtaken[g] = 1;
            keep[g] = 1;
        }
        for (int e = 0; e < E; e++)
            if (!keep[e / gs]) taken[e] = 1; /* excluded groups can never be chosen */
    }
    double sum = 0.0;
    for (int k = 0; k < r->top_k; k++) {
        int e = argmax_free(choice, E, taken);
        taken[e] = 1;
        idx[k] = e;
        w[k] = scores[e];
        sum += scores[e];
    }
    for (int k = 0; k < r->top_k; k++) {
        double v = w[k];
        if (r->norm_topk_prob) v /= (sum + 1e-20);
        w[k] = (float)(v * r->routed_scaling_factor);
    }
}
