/* test_api.c - the public API end to end on the trained kjv-tiny checkpoint: greedy
 * decoding from BOS + "And God said" must give the ids of " unto him, Thy brother is
 * come;" (transformers' greedy continuation recorded in models/kjv-tiny/README.md). */
#include <stdlib.h>
#include <string.h>

#include "../../include/frontier.h"
#include "check.h"

#ifndef FR_SOURCE_DIR
#define FR_SOURCE_DIR "."
#endif

int main(void) {
    char err[512];
    frontier_model *m = NULL;
    frontier_session *s = NULL;
    CHECK(frontier_model_load("/nonexistent", 1, &m, err, sizeof err) == -2 && strstr(err, "/nonexistent"));
    if (frontier_model_load(FR_SOURCE_DIR "/models/kjv-tiny", 1, &m, err, sizeof err)) {
        fprintf(stderr, "load: %s\n", err);
        return 1;
    }
    CHECK(frontier_model_vocab_size(m) == 4096 && frontier_model_is_eos(m, 1) && !frontier_model_is_eos(m, 2));
    CHECK(frontier_session_create(m, 64, &s, err, sizeof err) == 0);
    float *logits = malloc(4096 * sizeof *logits);
    int32_t prompt[] = {0, 297, 388, 389}; /* BOS "And" " God" " said" */
    /* " unto", " him", ",", " Thy", " brother", " is", " come", ";" as the kjv-tiny vocabulary spells them */
    const int32_t want[] = {321, 333, 13, 2613, 967, 336, 490, 28};
    CHECK(frontier_session_eval(s, prompt, 4, logits, err, sizeof err) == 0);
    frontier_sampling greedy = {0.0f, 0, 1.0f, 0.0f, 0};
    int ok = 1;
    for (int i = 0; i < 8; i++) {
        int32_t id = frontier_sample(m, logits, &greedy, (uint64_t)i);
        ok &= id == want[i];
        CHECK(frontier_session_eval(s, &id, 1, logits, err, sizeof err) == 0);
    }
    CHECK(ok);
    CHECK(frontier_session_position(s) == 12);
    int32_t bad = 5000;
    CHECK(frontier_session_eval(s, &bad, 1, logits, err, sizeof err) == -5 && strstr(err, "vocabulary"));
    frontier_sampling badp = {-1.0f, 0, 1.0f, 0.0f, 0};
    CHECK(frontier_sample(m, logits, &badp, 0) == -5);
    /* capacity: 64-token session */
    int32_t many[64] = {0};
    frontier_session_reset(s);
    CHECK(frontier_session_eval(s, many, 64, NULL, err, sizeof err) == 0);
    CHECK(frontier_session_eval(s, many, 1, NULL, err, sizeof err) == -7);
    free(logits);
    frontier_session_free(s);
    frontier_model_free(m);
    return check_report("api");
}
