/* test_engine.c - continuous batching on the trained kjv-tiny checkpoint.
 *
 * The oracle is the one-sequence path `frontier run` uses (fr_session + sampler):
 * every request's greedy (and seeded sampled) tokens must equal what that path
 * produces for the same prompt alone, whatever batch the request ran in, also
 * when a small KV pool forces preemption and recomputation. Then aborts, the
 * queue limit, stop ids, logprobs and parameter checks. */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "engine/engine.h"
#include "engine/sampler.h"
#include "model/forward.h"

#ifndef FR_SOURCE_DIR
#define FR_SOURCE_DIR "."
#endif

#define NREQ 12
#define MAXGEN 24

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int32_t toks[MAXGEN + 1];
    int n;
    fr_finish finish;
    bool done;
    int events_after_final;
    float logprob0, top0;
    int n_top;
} result;

static void on_event(void *user, const fr_token_event *ev) {
    result *r = user;
    pthread_mutex_lock(&r->mu);
    if (r->done) r->events_after_final++;
    if (ev->token >= 0 && r->n <= MAXGEN) {
        if (r->n == 0) r->logprob0 = ev->logprob, r->top0 = ev->n_top ? ev->top_logprobs[0] : NAN, r->n_top = ev->n_top;
        r->toks[r->n++] = ev->token;
    }
    if (ev->finish) {
        r->finish = ev->finish;
        r->done = true;
        pthread_cond_broadcast(&r->cv);
    }
    pthread_mutex_unlock(&r->mu);
}

static void wait_done(result *r) {
    pthread_mutex_lock(&r->mu);
    while (!r->done) pthread_cond_wait(&r->cv, &r->mu);
    pthread_mutex_unlock(&r->mu);
}

static void result_init(result *r) {
    memset(r, 0, sizeof *r);
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
}

/* The `frontier run` loop: prefill the prompt, then one token at a time. */
static int reference(const fr_model *m, fr_backend *be, fr_kv_dtype kv, const int32_t *prompt, int n, int n_gen,
                     const fr_sampler_params *sp, int32_t *out) {
    fr_error err;
    fr_session *s;
    fr_sampler smp;
    const int64_t V = m->cfg.vocab_size;
    float *logits = malloc((size_t)V * sizeof *logits);
    fr_session_opts so = {.max_ctx = n + n_gen, .kv_dtype = kv};
    if (fr_session_create_opts(m, be, &so, &s, &err) || fr_sampler_init(&smp, sp, V, &err)) return -1;
    fr_session_eval(s, prompt, n, FR_ATTN_AUTO, logits, false, &err);
    for (int i = 0; i < n_gen; i++) {
        out[i] = fr_sampler_sample(&smp, logits);
        if (i + 1 < n_gen) fr_session_eval(s, &out[i], 1, FR_ATTN_AUTO, logits, false, &err);
    }
    fr_sampler_release(&smp);
    fr_session_free(s);
    free(logits);
    return 0;
}

/* Prompt i: BOS then a deterministic walk over ordinary ids, lengths 1 .. 70. */
static int make_prompt(int i, int32_t *p) {
    int n = 1 + (i * 37) % 70;
    p[0] = 0;
    for (int j = 1; j < n; j++) p[j] = 100 + (int32_t)((i * 131 + j * 17) % 3000);
    return n;
}

/* Run NREQ requests together on an engine with these options; compare with the reference. */
static void batch_matches_reference(const fr_model *m, fr_backend *be, fr_engine_opts o, bool sampled,
                                    const char *what) {
    fr_error err;
    fr_engine *e;
    CHECK(fr_engine_create(m, be, &o, &e, &err) == FR_OK);
    static result res[NREQ];
    static int32_t prompts[NREQ][80];
    int lens[NREQ];
    fr_gen_params gp = fr_gen_params_default();
    gp.max_tokens = MAXGEN;
    if (sampled) gp.temperature = 0.8f, gp.top_p = 0.9f;
    for (int i = 0; i < NREQ; i++) {
        result_init(&res[i]);
        lens[i] = make_prompt(i, prompts[i]);
        gp.seed = 1000 + (uint64_t)i;
        uint64_t id;
        CHECK(fr_engine_submit(e, prompts[i], lens[i], &gp, on_event, &res[i], &id, &err) == FR_OK);
        if (i == NREQ / 2) usleep(20000); /* later ones join a running batch */
    }
    int same = 0;
    for (int i = 0; i < NREQ; i++) {
        wait_done(&res[i]);
        int32_t want[MAXGEN];
        fr_sampler_params sp = {.temperature = gp.temperature, .top_k = 0, .top_p = gp.top_p, .min_p = 0.0f,
                                .seed = 1000 + (uint64_t)i};
        reference(m, be, o.kv_cache_dtype, prompts[i], lens[i], MAXGEN, &sp, want);
        bool eq = res[i].n == MAXGEN && res[i].finish == FR_FINISH_LENGTH && !memcmp(want, res[i].toks, sizeof want);
        same += eq;
        if (!eq) fprintf(stderr, "%s: request %d (prompt %d tokens) differs from the one-sequence run\n", what, i, lens[i]);
        CHECK(res[i].events_after_final == 0);
    }
    CHECK_MSG(same == NREQ, "%s: %d of %d requests match", what, same, NREQ);
    fr_engine_stats st;
    fr_engine_get_stats(e, &st);
    CHECK(st.running == 0 && st.waiting == 0 && st.kv_blocks_used == 0);
    CHECK(st.generation_tokens_total == NREQ * MAXGEN && st.finished_length == NREQ);
    printf("%s: %d/%d identical, %llu steps, %llu preemptions\n", what, same, NREQ, (unsigned long long)st.steps_total,
           (unsigned long long)st.preemptions_total);
    if (o.kv_cache_tokens && o.kv_cache_tokens < 400) CHECK_MSG(st.preemptions_total > 0, "%s: no preemption", what);
    fr_engine_free(e);
}

int main(void) {
    fr_error err;
    fr_backend *be;
    fr_model *m;
    if (fr_cpu_backend_create(0, &be, &err) || fr_model_load(FR_SOURCE_DIR "/models/kjv-tiny", &m, &err)) {
        fprintf(stderr, "setup: %s\n", err.msg);
        return 1;
    }
    fr_engine_opts o = fr_engine_opts_default();
    batch_matches_reference(m, be, o, false, "greedy, default budget");
    o.max_batched_tokens = 16; /* prompts split into chunks */
    batch_matches_reference(m, be, o, false, "greedy, 16-token chunks");
    o.max_batched_tokens = 64, o.kv_cache_tokens = 160, o.max_model_len = 100, o.block_size = 8;
    batch_matches_reference(m, be, o, false, "greedy, 160-token pool (preemption)");
    o = fr_engine_opts_default();
    o.max_num_seqs = 3;
    batch_matches_reference(m, be, o, true, "sampled, 3 at a time");
    o = fr_engine_opts_default();
    o.kv_cache_dtype = FR_KV_FP8, o.max_batched_tokens = 16;
    batch_matches_reference(m, be, o, false, "greedy, FP8 cache, 16-token chunks");

    /* abort, queue limit, stop ids, logprobs, parameter checks */
    o = fr_engine_opts_default();
    o.max_num_seqs = 1, o.max_queue = 2, o.max_model_len = 256;
    fr_engine *e;
    CHECK(fr_engine_create(m, be, &o, &e, &err) == FR_OK);
    int32_t prompt[] = {0, 297, 388, 389}; /* BOS "And God said" */
    fr_gen_params gp = fr_gen_params_default();
    gp.max_tokens = 200;
    result a, b, c, d;
    result_init(&a), result_init(&b), result_init(&c), result_init(&d);
    uint64_t ida, idb, idc;
    CHECK(fr_engine_submit(e, prompt, 4, &gp, on_event, &a, &ida, &err) == FR_OK);
    /* once a is running, b and c fill the queue (max_queue 2) and d is refused */
    for (int i = 0; i < 2000; i++) {
        pthread_mutex_lock(&a.mu);
        int got = a.n;
        pthread_mutex_unlock(&a.mu);
        if (got) break;
        usleep(1000);
    }
    CHECK(fr_engine_submit(e, prompt, 4, &gp, on_event, &b, &idb, &err) == FR_OK);
    CHECK(fr_engine_submit(e, prompt, 4, &gp, on_event, &c, &idc, &err) == FR_OK);
    CHECK(fr_engine_submit(e, prompt, 4, &gp, on_event, &d, NULL, &err) == FR_ERR_BUSY && strstr(err.msg, "queue"));
    fr_engine_abort(e, ida), fr_engine_abort(e, idb), fr_engine_abort(e, idc);
    fr_engine_abort(e, 999999); /* unknown: ignored */
    wait_done(&a), wait_done(&b), wait_done(&c);
    CHECK(a.finish == FR_FINISH_ABORT && b.finish == FR_FINISH_ABORT && c.finish == FR_FINISH_ABORT);
    CHECK(a.n < 200 && b.n < 200);

    /* stop id: greedy continuation of "And God said" is " unto him , ..." (ids 321 333 13) */
    result s;
    result_init(&s);
    gp = fr_gen_params_default();
    gp.max_tokens = 50, gp.n_stop_ids = 1, gp.stop_ids[0] = 13, gp.top_logprobs = 5;
    CHECK(fr_engine_submit(e, prompt, 4, &gp, on_event, &s, NULL, &err) == FR_OK);
    wait_done(&s);
    CHECK_MSG(s.finish == FR_FINISH_STOP && s.n == 3 && s.toks[0] == 321 && s.toks[2] == 13, "finish %d n %d",
              s.finish, s.n);
    CHECK(s.n_top == 5 && s.logprob0 <= 0.0f && fabsf(s.logprob0 - s.top0) < 1e-6f);
    /* ignore_eos samples through the stop id */
    result s2;
    result_init(&s2);
    gp.ignore_eos = true, gp.max_tokens = 5;
    CHECK(fr_engine_submit(e, prompt, 4, &gp, on_event, &s2, NULL, &err) == FR_OK);
    wait_done(&s2);
    CHECK(s2.finish == FR_FINISH_LENGTH && s2.n == 5);

    /* bad requests: an error, no event */
    gp = fr_gen_params_default();
    int32_t big[300];
    for (int i = 0; i < 300; i++) big[i] = 5;
    CHECK(fr_engine_submit(e, big, 256, &gp, on_event, &d, NULL, &err) == FR_ERR_INVALID && strstr(err.msg, "256"));
    CHECK(fr_engine_submit(e, big, 0, &gp, on_event, &d, NULL, &err) == FR_ERR_INVALID);
    int32_t oov = 4096;
    CHECK(fr_engine_submit(e, &oov, 1, &gp, on_event, &d, NULL, &err) == FR_ERR_INVALID && strstr(err.msg, "vocabulary"));
    gp.temperature = -1.0f;
    CHECK(fr_engine_submit(e, prompt, 4, &gp, on_event, &d, NULL, &err) == FR_ERR_INVALID);
    gp = fr_gen_params_default(), gp.top_logprobs = 21;
    CHECK(fr_engine_submit(e, prompt, 4, &gp, on_event, &d, NULL, &err) == FR_ERR_INVALID);
    gp = fr_gen_params_default(), gp.max_tokens = 0;
    CHECK(fr_engine_submit(e, prompt, 4, &gp, on_event, &d, NULL, &err) == FR_ERR_INVALID);

    /* freeing with work in flight aborts it */
    result f;
    result_init(&f);
    gp = fr_gen_params_default(), gp.max_tokens = 250;
    CHECK(fr_engine_submit(e, prompt, 4, &gp, on_event, &f, NULL, &err) == FR_OK);
    fr_engine_stats st;
    fr_engine_get_stats(e, &st);
    CHECK(st.finished_abort >= 3 && st.finished_stop == 1);
    fr_engine_free(e);
    CHECK(f.done && (f.finish == FR_FINISH_ABORT || f.finish == FR_FINISH_LENGTH));

    fr_model_free(m);
    fr_backend_destroy(be);
    return check_report("engine");
}
