/* test_sampler.c - sampling filters and reproducibility; MoE expert selection. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "check.h"
#include "engine/sampler.h"

static void test_sampler(void) {
    fr_error err;
    fr_sampler s;
    float logits[6] = {1.0f, 3.0f, 3.0f, 0.5f, -2.0f, 2.9f};
    fr_sampler_params greedy = {.temperature = 0.0f, .top_p = 1.0f};
    CHECK(fr_sampler_init(&s, &greedy, 6, &err) == FR_OK);
    CHECK(fr_sampler_sample(&s, logits) == 1); /* tie 1 vs 2: lower id */
    fr_sampler_release(&s);

    /* temperature 1: frequencies follow softmax(logits) */
    fr_sampler_params p = {.temperature = 1.0f, .top_p = 1.0f, .seed = 42};
    CHECK(fr_sampler_init(&s, &p, 6, &err) == FR_OK);
    int hist[6] = {0};
    const int N = 200000;
    for (int i = 0; i < N; i++) hist[fr_sampler_sample(&s, logits)]++;
    double z = 0;
    for (int i = 0; i < 6; i++) z += exp(logits[i]);
    for (int i = 0; i < 6; i++) {
        double expect = exp(logits[i]) / z;
        CHECK_MSG(fabs(hist[i] / (double)N - expect) < 0.005, "token %d: %g vs %g", i, hist[i] / (double)N, expect);
    }
    fr_sampler_release(&s);

    /* the same seed reproduces the same draws */
    int a[50], b[50];
    for (int rep = 0; rep < 2; rep++) {
        CHECK(fr_sampler_init(&s, &p, 6, &err) == FR_OK);
        for (int i = 0; i < 50; i++) (rep ? b : a)[i] = fr_sampler_sample(&s, logits);
        fr_sampler_release(&s);
    }
    CHECK(memcmp(a, b, sizeof a) == 0);

    /* top-k 2: only ids 1 and 2 (the two largest) */
    p.top_k = 2;
    CHECK(fr_sampler_init(&s, &p, 6, &err) == FR_OK);
    int ok = 1;
    for (int i = 0; i < 2000; i++) {
        int id = fr_sampler_sample(&s, logits);
        ok &= id == 1 || id == 2;
    }
    CHECK(ok);
    fr_sampler_release(&s);

    /* top-p: probabilities ~ {.07,.38,.38,.04,.003,.14}; p = 0.5 keeps the two 0.38s */
    p.top_k = 0;
    p.top_p = 0.5f;
    CHECK(fr_sampler_init(&s, &p, 6, &err) == FR_OK);
    ok = 1;
    for (int i = 0; i < 2000; i++) {
        int id = fr_sampler_sample(&s, logits);
        ok &= id == 1 || id == 2;
    }
    CHECK(ok);
    fr_sampler_release(&s);

    /* min-p 0.3: keep p >= 0.3 * 0.38 -> ids 1, 2, 5 */
    p.top_p = 1.0f;
    p.min_p = 0.3f;
    CHECK(fr_sampler_init(&s, &p, 6, &err) == FR_OK);
    int seen[6] = {0};
    for (int i = 0; i < 5000; i++) seen[fr_sampler_sample(&s, logits)]++;
    CHECK(seen[1] && seen[2] && seen[5] && !seen[0] && !seen[3] && !seen[4]);
    fr_sampler_release(&s);

    fr_sampler_params badp = {.temperature = -1.0f, .top_p = 1.0f};
    CHECK(fr_sampler_init(&s, &badp, 6, &err) == FR_ERR_INVALID);
    badp = (fr_sampler_params){.temperature = 1.0f, .top_p = 0.0f};
    CHECK(fr_sampler_init(&s, &badp, 6, &err) == FR_ERR_INVALID);
    badp = (fr_sampler_params){.temperature = 1.0f, .top_p = 1.0f, .min_p = 2.0f};
    CHECK(fr_sampler_init(&s, &badp, 6, &err) == FR_ERR_INVALID);
}

/* noaux_tc selection, worked by hand (ARCH 4.4). 8 experts, 4 groups of 2, keep 2 groups, top 3. */
static void test_route(void) {
    float scores[8] = {0.9f, 0.1f, 0.5f, 0.6f, 0.2f, 0.2f, 0.8f, 0.7f};
    float bias[8] = {0, 0, 0, 0, 0.5f, 0.5f, 0, 0};
    fr_router r = {.n_experts = 8, .top_k = 3, .n_group = 4, .topk_group = 2, .norm_topk_prob = true,
                   .routed_scaling_factor = 2.0f};
    int32_t idx[3];
    float w[3];
    /* choice = {.9,.1,.5,.6,.7,.7,.8,.7}; group sums {1.0, 1.1, 1.4, 1.5} -> keep groups 3, 2
     * -> candidates 4 (.7), 5 (.7), 6 (.8), 7 (.7) -> top 3: 6, then 4 and 5 (ties: lower ids) */
    fr_route_select(&r, scores, bias, idx, w);
    CHECK(idx[0] == 6 && idx[1] == 4 && idx[2] == 5);
    /* weights: unbiased scores .8, .2, .2 normalized (sum 1.2) times 2 */
    CHECK_NEAR(w[0], 0.8 / 1.2 * 2, 1e-6);
    CHECK_NEAR(w[1], 0.2 / 1.2 * 2, 1e-6);
    /* without groups and normalization: top 3 of choice = 0 (.9), 6 (.8), then 4 (.7, lowest of ties) */
    r.n_group = 1;
    r.topk_group = 1;
    r.norm_topk_prob = false;
    fr_route_select(&r, scores, bias, idx, w);
    CHECK(idx[0] == 0 && idx[1] == 6 && idx[2] == 4);
    CHECK_NEAR(w[2], 0.2 * 2, 1e-6);
    /* negative biased scores still rank (no zero floor) */
    float neg_bias[8] = {-5, -5, -5, -5, -5, -5, -5, -4};
    fr_route_select(&r, scores, neg_bias, idx, w);
    CHECK(idx[0] == 7 && idx[1] == 0);
}

int main(void) {
    test_sampler();
    test_route();
    return check_report("sampler");
}
