/* api.c - the public API (include/frontier.h) over the internal modules. */
#include "../../include/frontier.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../model/forward.h"
#include "sampler.h"

struct frontier_model {
    fr_model *model;
    fr_backend *be;
};

struct frontier_session {
    frontier_model *m;
    fr_session *s;
};

static int report(const fr_error *e, char *err, size_t errlen) {
    if (err && errlen) snprintf(err, errlen, "%s", e->msg);
    return e->code;
}

int frontier_model_load(const char *dir, int n_threads, frontier_model **out, char *err, size_t errlen) {
    fr_error e = {0};
    *out = NULL;
    frontier_model *m = calloc(1, sizeof *m);
    if (!m) return report(&(fr_error){FR_ERR_NOMEM, "out of memory"}, err, errlen);
    if (fr_cpu_backend_create(n_threads, &m->be, &e) || fr_model_load(dir, &m->model, &e)) {
        frontier_model_free(m);
        return report(&e, err, errlen);
    }
    *out = m;
    return 0;
}

void frontier_model_free(frontier_model *m) {
    if (!m) return;
    fr_model_free(m->model);
    fr_backend_destroy(m->be);
    free(m);
}

int64_t frontier_model_vocab_size(const frontier_model *m) { return m->model->cfg.vocab_size; }

int frontier_model_is_eos(const frontier_model *m, int32_t id) {
    for (int i = 0; i < m->model->cfg.n_eos; i++)
        if (m->model->cfg.eos_token_ids[i] == id) return 1;
    return 0;
}

int frontier_session_create(frontier_model *m, int64_t max_ctx, frontier_session **out, char *err, size_t errlen) {
    fr_error e = {0};
    *out = NULL;
    frontier_session *s = calloc(1, sizeof *s);
    if (!s) return report(&(fr_error){FR_ERR_NOMEM, "out of memory"}, err, errlen);
    s->m = m;
    if (fr_session_create(m->model, m->be, max_ctx, &s->s, &e)) {
        free(s);
        return report(&e, err, errlen);
    }
    *out = s;
    return 0;
}

void frontier_session_free(frontier_session *s) {
    if (!s) return;
    fr_session_free(s->s);
    free(s);
}

int frontier_session_eval(frontier_session *s, const int32_t *ids, int64_t n, float *logits, char *err,
                          size_t errlen) {
    fr_error e = {0};
    if (fr_session_eval(s->s, ids, n, FR_ATTN_AUTO, logits, false, &e)) return report(&e, err, errlen);
    return 0;
}

int64_t frontier_session_position(const frontier_session *s) { return fr_session_pos(s->s); }
void frontier_session_reset(frontier_session *s) { fr_session_reset(s->s); }

int32_t frontier_sample(const frontier_model *m, const float *logits, const frontier_sampling *p, uint64_t draw) {
    fr_sampler smp;
    fr_error e;
    /* A fresh generator per draw, seeded from (seed, draw index): reproducible and stateless. */
    fr_sampler_params sp = {p->temperature, p->top_k, p->top_p, p->min_p, p->seed * 0x9e3779b97f4a7c15ull + draw};
    if (fr_sampler_init(&smp, &sp, m->model->cfg.vocab_size, &e)) return e.code;
    int32_t id = fr_sampler_sample(&smp, logits);
    fr_sampler_release(&smp);
    return id;
}
