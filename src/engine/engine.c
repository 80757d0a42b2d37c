/* engine.c - continuous batching: the step loop, scheduling, sampling, events.
 *
 * One thread runs steps. A step (1) drops aborted requests, (2) schedules: every
 * running sequence gets its pending tokens (1 while decoding, a chunk while its
 * prompt is being computed) under the token budget, decoding ones first, oldest
 * first, then waiting requests are admitted first come first served while the
 * budget, max_num_seqs and free blocks allow, (3) runs one fr_forward_step over all of them, (4) samples
 * for the sequences whose pending tokens are all computed and emits the events.
 * When the pool has no block for a running sequence, the newest running sequence
 * is preempted: its blocks are freed and it goes back to the head of the queue,
 * to be recomputed (prompt and generated tokens) when blocks are free again.
 *
 * Locking: one mutex guards the queue, the running set, abort flags and stats;
 * it is held while scheduling, never during the forward pass or a callback. */
#include "engine.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../model/forward.h"
#include "sampler.h"

typedef struct req {
    uint64_t id;
    fr_gen_params p;
    fr_event_fn fn;
    void *user;
    int32_t *tokens;            /* prompt, then generated; room for cap_tokens */
    int64_t n_prompt, n_tokens, cap_tokens;
    int64_t n_computed;         /* tokens whose latents are in the cache */
    fr_kv_seq seq;
    uint64_t rng[4];            /* this request's sampler state */
    double t_submitted, t_scheduled, t_first_token;
    int preemptions;
    bool aborted;
    uint64_t step_mark;         /* the step that last scheduled or preempted it */
    struct req *next;           /* waiting queue link */
} req;

struct fr_engine {
    const fr_model *m;
    fr_backend *be;
    fr_engine_opts o;
    int64_t max_model_len;
    fr_kv_pool *pool;
    fr_forward *fwd;
    fr_sampler smp;             /* shared scratch; each request swaps its own state in */
    float *logits;              /* [max_num_seqs, V] */
    int32_t *picks;             /* [max_num_seqs]: greedy ids, when a step needs no logits */
    float *work;                /* [V] penalized logits */
    int32_t *counts;            /* [V] token counts for penalties, zero between uses */
    struct sched_item *items;   /* [max_num_seqs] this step's work */
    fr_seq_step *steps;         /* [max_num_seqs] */
    struct pending_event *evs;  /* [ev_cap] this step's events */

    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool shutdown;
    uint64_t next_id;
    req *wait_head, *wait_tail; /* FIFO; preempted requests go back to the head */
    int n_waiting;
    req **running;              /* [max_num_seqs], admission order */
    int n_running;
    uint64_t schedule_calls;    /* numbers the steps for req.step_mark */
    fr_engine_stats st;
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

fr_gen_params fr_gen_params_default(void) {
    return (fr_gen_params){.temperature = 0.0f, .top_p = 1.0f, .min_p = 0.0f, .max_tokens = 16, .top_logprobs = -1};
}

fr_engine_opts fr_engine_opts_default(void) {
    return (fr_engine_opts){.max_num_seqs = 64, .kv_cache_tokens = 64 * 1024, .max_queue = 256,
                            .max_batched_tokens = 512, .block_size = 16};
}

int64_t fr_engine_max_model_len(const fr_engine *e) { return e->max_model_len; }

/* ---------------------------------------------------------------- queue */

static void queue_push_back(fr_engine *e, req *r) {
    r->next = NULL;
    if (e->wait_tail) e->wait_tail->next = r;
    else e->wait_head = r;
    e->wait_tail = r;
    e->n_waiting++;
}

static void queue_push_front(fr_engine *e, req *r) {
    r->next = e->wait_head;
    e->wait_head = r;
    if (!e->wait_tail) e->wait_tail = r;
    e->n_waiting++;
}

static req *queue_pop_front(fr_engine *e) {
    req *r = e->wait_head;
    if (!r) return NULL;
    e->wait_head = r->next;
    if (!e->wait_head) e->wait_tail = NULL;
    r->next = NULL;
    e->n_waiting--;
    return r;
}

static void req_free(fr_engine *e, req *r) {
    if (!r) return;
    fr_kv_seq_free(e->pool, &r->seq);
    free(r->tokens);
    free(r);
}

/* ---------------------------------------------------------------- events */

/* Events of one step, delivered after the lock is released. */
typedef struct pending_event {
    req *r;
    fr_token_event ev;
    bool final; /* free r after delivery */
} pending_event;

static void event_base(const req *r, fr_token_event *ev) {
    memset(ev, 0, sizeof *ev);
    ev->id = r->id;
    ev->token = -1;
    ev->prompt_tokens = r->n_prompt;
    ev->completion_tokens = r->n_tokens - r->n_prompt;
    ev->t_submitted = r->t_submitted;
    ev->t_scheduled = r->t_scheduled;
    ev->t_first_token = r->t_first_token;
    ev->preemptions = r->preemptions;
}

static void count_finish(fr_engine *e, fr_finish f) {
    switch (f) {
    case FR_FINISH_STOP: e->st.finished_stop++; break;
    case FR_FINISH_LENGTH: e->st.finished_length++; break;
    case FR_FINISH_ABORT: e->st.finished_abort++; break;
    case FR_FINISH_ERROR: e->st.finished_error++; break;
    default: break;
    }
}

static void deliver(fr_engine *e, pending_event *evs, int n) {
    for (int i = 0; i < n; i++) {
        evs[i].r->fn(evs[i].r->user, &evs[i].ev);
        if (evs[i].final) req_free(e, evs[i].r);
    }
}

/* ---------------------------------------------------------------- submit / abort */

static fr_status check_params(const fr_engine *e, const int32_t *prompt, int64_t n, const fr_gen_params *p,
                              fr_error *err) {
    const int64_t V = e->m->cfg.vocab_size;
    if (n < 1) return fr_fail(err, FR_ERR_INVALID, "the prompt is empty");
    if (n + 1 > e->max_model_len)
        return fr_fail(err, FR_ERR_INVALID,
                       "this model's maximum context length is %lld tokens, but the prompt has %lld tokens "
                       "(at least one more is needed to generate)",
                       (long long)e->max_model_len, (long long)n);
    for (int64_t i = 0; i < n; i++)
        if (prompt[i] < 0 || prompt[i] >= V)
            return fr_fail(err, FR_ERR_INVALID, "prompt token %d at index %lld is outside the vocabulary [0, %lld)",
                           prompt[i], (long long)i, (long long)V);
    if (!(p->temperature >= 0.0f && isfinite(p->temperature)))
        return fr_fail(err, FR_ERR_INVALID, "temperature must be a finite number >= 0");
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f)) return fr_fail(err, FR_ERR_INVALID, "top_p must be in (0, 1]");
    if (!(p->min_p >= 0.0f && p->min_p <= 1.0f)) return fr_fail(err, FR_ERR_INVALID, "min_p must be in [0, 1]");
    if (p->top_k < 0) return fr_fail(err, FR_ERR_INVALID, "top_k must be >= 0");
    if (!(p->presence_penalty >= -2.0f && p->presence_penalty <= 2.0f) ||
        !(p->frequency_penalty >= -2.0f && p->frequency_penalty <= 2.0f))
        return fr_fail(err, FR_ERR_INVALID, "presence and frequency penalties must be in [-2, 2]");
    if (p->max_tokens < 1) return fr_fail(err, FR_ERR_INVALID, "max_tokens must be at least 1");
    if (p->n_stop_ids < 0 || p->n_stop_ids > FR_MAX_STOP_IDS)
        return fr_fail(err, FR_ERR_INVALID, "at most %d stop ids", FR_MAX_STOP_IDS);
    for (int i = 0; i < p->n_stop_ids; i++)
        if (p->stop_ids[i] < 0 || p->stop_ids[i] >= V)
            return fr_fail(err, FR_ERR_INVALID, "stop id %d is outside the vocabulary", p->stop_ids[i]);
    if (p->top_logprobs < -1 || p->top_logprobs > FR_MAX_TOP_LOGPROBS)
        return fr_fail(err, FR_ERR_INVALID, "top_logprobs must be in [0, %d]", FR_MAX_TOP_LOGPROBS);
    return FR_OK;
}


fr_status fr_engine_submit(fr_engine *e, const int32_t *prompt, int64_t n_prompt, const fr_gen_params *p,
                           fr_event_fn fn, void *user, uint64_t *id, fr_error *err) {
    fr_status rc = check_params(e, prompt, n_prompt, p, err);
    if (rc) return rc;
    if (!fn) return fr_fail(err, FR_ERR_INVALID, "no event callback");
    req *r = calloc(1, sizeof *r);
    if (!r) return fr_fail(err, FR_ERR_NOMEM, "out of memory");
    int64_t room = e->max_model_len - n_prompt; /* >= 1, checked above */
    r->cap_tokens = n_prompt + (p->max_tokens < room ? p->max_tokens : room);
    r->tokens = malloc((size_t)r->cap_tokens * sizeof *r->tokens);
    if (!r->tokens) {
        const long long want = (long long)r->cap_tokens;
        free(r);
        return fr_fail(err, FR_ERR_NOMEM, "out of memory for a %lld-token request", want);
    }
    memcpy(r->tokens, prompt, (size_t)n_prompt * sizeof *prompt);
    r->n_prompt = r->n_tokens = n_prompt;
    r->p = *p;
    r->fn = fn;
    r->user = user;
    r->t_submitted = now_s();
    fr_sampler_seed(r->rng, p->seed); /* as fr_sampler_init seeds: `frontier run` draws the same */

    pthread_mutex_lock(&e->mu);
    if (e->shutdown || e->n_waiting >= e->o.max_queue) {
        bool down = e->shutdown;
        pthread_mutex_unlock(&e->mu);
        req_free(e, r);
        return down ? fr_fail(err, FR_ERR_BUSY, "the engine is shutting down")
                    : fr_fail(err, FR_ERR_BUSY, "the queue is full (%d requests waiting)", e->o.max_queue);
    }
    r->id = ++e->next_id;
    if (id) *id = r->id;
    queue_push_back(e, r);
    e->st.waiting = e->n_waiting;
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
    return FR_OK;
}

void fr_engine_abort(fr_engine *e, uint64_t id) {
    pthread_mutex_lock(&e->mu);
    for (req *r = e->wait_head; r; r = r->next)
        if (r->id == id) r->aborted = true;
    for (int i = 0; i < e->n_running; i++)
        if (e->running[i]->id == id) e->running[i]->aborted = true;
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
}

void fr_engine_get_stats(fr_engine *e, fr_engine_stats *out) {
    pthread_mutex_lock(&e->mu);
    *out = e->st;
    out->running = e->n_running;
    out->waiting = e->n_waiting;
    out->kv_blocks_total = e->pool->n_blocks;
    out->kv_blocks_used = e->pool->n_blocks - e->pool->n_free;
    out->kv_usage = (double)out->kv_blocks_used / (double)out->kv_blocks_total;
    pthread_mutex_unlock(&e->mu);
}

/* ---------------------------------------------------------------- sampling */

/* Log-softmax of the raw logits at `tok`, and the n most likely ids with theirs. */
static void logprobs(const float *x, int64_t V, int32_t tok, int n, fr_token_event *ev) {
    float mx = x[0];
    for (int64_t i = 1; i < V; i++) mx = x[i] > mx ? x[i] : mx;
    double sum = 0.0;
    for (int64_t i = 0; i < V; i++) sum += exp((double)(x[i] - mx));
    const double lse = (double)mx + log(sum);
    ev->logprob = (float)((double)x[tok] - lse);
    /* insertion into a sorted top-n list: n <= 20, one pass over the vocabulary */
    int k = 0;
    for (int64_t i = 0; i < V; i++) {
        if (k == n && !(x[i] > x[ev->top_ids[k - 1]])) continue;
        int j = k < n ? k++ : n - 1;
        while (j > 0 && x[i] > x[ev->top_ids[j - 1]]) {
            ev->top_ids[j] = ev->top_ids[j - 1];
            j--;
        }
        ev->top_ids[j] = (int32_t)i;
    }
    ev->n_top = k;
    for (int i = 0; i < k; i++) ev->top_logprobs[i] = (float)((double)x[ev->top_ids[i]] - lse);
}

static bool is_stop(const req *r, int32_t tok) {
    for (int i = 0; i < r->p.n_stop_ids; i++)
        if (r->p.stop_ids[i] == tok) return true;
    return false;
}

/* Choose r's next token from its logits row; fill the event. */
static int32_t sample(fr_engine *e, req *r, const float *row, fr_token_event *ev) {
    const int64_t V = e->m->cfg.vocab_size;
    const float *x = row;
    if (r->p.presence_penalty != 0.0f || r->p.frequency_penalty != 0.0f) {
        /* OpenAI's penalties over the tokens generated so far */
        memcpy(e->work, row, (size_t)V * sizeof *e->work);
        for (int64_t i = r->n_prompt; i < r->n_tokens; i++) e->counts[r->tokens[i]]++;
        for (int64_t i = r->n_prompt; i < r->n_tokens; i++) {
            int32_t t = r->tokens[i];
            if (!e->counts[t]) continue;
            e->work[t] -= r->p.frequency_penalty * (float)e->counts[t] + r->p.presence_penalty;
            e->counts[t] = 0;
        }
        x = e->work;
    }
    e->smp.p = (fr_sampler_params){.temperature = r->p.temperature, .top_k = r->p.top_k, .top_p = r->p.top_p,
                                   .min_p = r->p.min_p, .seed = r->p.seed};
    memcpy(e->smp.rng, r->rng, sizeof r->rng);
    int32_t tok = fr_sampler_sample(&e->smp, x);
    memcpy(r->rng, e->smp.rng, sizeof r->rng);
    if (r->p.top_logprobs >= 0) logprobs(row, V, tok, r->p.top_logprobs, ev);
    return tok;
}

/* ---------------------------------------------------------------- the step */

typedef struct sched_item {
    req *r;
    int64_t n; /* tokens computed this step */
} sched_item;

/* Remove running[i], keeping admission order. */
static void running_remove(fr_engine *e, int i) {
    memmove(e->running + i, e->running + i + 1, (size_t)(e->n_running - i - 1) * sizeof *e->running);
    e->n_running--;
}

/* Free the blocks of the newest running request this step has not scheduled and requeue it
 * at the head of the queue, to be recomputed. Returns its index, or -1 if every running
 * request is already in this step. */
static int preempt_newest(fr_engine *e, uint64_t step) {
    for (int j = e->n_running - 1; j >= 0; j--) {
        req *v = e->running[j];
        if (v->step_mark == step) continue;
        running_remove(e, j);
        fr_kv_seq_release(e->pool, &v->seq);
        v->n_computed = 0;
        v->preemptions++;
        v->step_mark = step;
        e->st.preemptions_total++;
        queue_push_front(e, v);
        return j;
    }
    return -1;
}

/* Under the lock: collect aborted requests' final events, then pick this step's work. */
static int schedule(fr_engine *e, sched_item *items, pending_event *evs, int *n_evs) {
    /* aborts */
    for (int i = 0; i < e->n_running;) {
        req *r = e->running[i];
        if (!r->aborted) {
            i++;
            continue;
        }
        running_remove(e, i);
        fr_kv_seq_release(e->pool, &r->seq);
        pending_event *pe = &evs[(*n_evs)++];
        event_base(r, &pe->ev);
        pe->ev.finish = FR_FINISH_ABORT, pe->ev.t_finished = now_s(), pe->r = r, pe->final = true;
        count_finish(e, FR_FINISH_ABORT);
    }
    for (req **pp = &e->wait_head, *prev = NULL; *pp;) {
        req *r = *pp;
        if (!r->aborted) {
            prev = r;
            pp = &r->next;
            continue;
        }
        *pp = r->next;
        if (e->wait_tail == r) e->wait_tail = prev;
        e->n_waiting--;
        pending_event *pe = &evs[(*n_evs)++];
        event_base(r, &pe->ev);
        pe->ev.finish = FR_FINISH_ABORT, pe->ev.t_finished = now_s(), pe->r = r, pe->final = true;
        count_finish(e, FR_FINISH_ABORT);
    }

    int64_t budget = e->o.max_batched_tokens;
    int n = 0;
    const uint64_t step = ++e->schedule_calls;
    /* Running sequences, oldest first: those decoding (one pending token) before those
     * still in their prompt, so that a long prefill never delays the others' next token.
     * The pool running dry preempts the newest sequence not yet in this step. */
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < e->n_running && budget > 0; i++) {
            req *r = e->running[i];
            int64_t want = r->n_tokens - r->n_computed;
            if (r->step_mark == step || (pass == 0) != (want == 1)) continue;
            if (want > budget) want = budget;
            bool gone = false, stuck = false;
            while (!gone && !stuck && fr_kv_seq_reserve(e->pool, &r->seq, r->n_computed + want) != FR_OK) {
                const int j = preempt_newest(e, step);
                stuck = j < 0;  /* everything else is in this step: r waits for the next */
                gone = j == i;  /* r itself was the newest */
            }
            if (gone) {
                i--;
                continue;
            }
            if (stuck) continue;
            r->step_mark = step;
            items[n++] = (sched_item){r, want};
            budget -= want;
        }
    /* admissions, first come first served (not what was preempted just now) */
    while (budget > 0 && e->wait_head && e->n_running < e->o.max_num_seqs && e->wait_head->step_mark != step) {
        req *r = e->wait_head;
        int64_t want = r->n_tokens - r->n_computed;
        if (want > budget) want = budget;
        if (fr_kv_seq_reserve(e->pool, &r->seq, r->n_computed + want) != FR_OK) break;
        queue_pop_front(e);
        r->step_mark = step;
        if (r->t_scheduled == 0.0) r->t_scheduled = now_s();
        e->running[e->n_running++] = r;
        items[n++] = (sched_item){r, want};
        budget -= want;
    }
    return n;
}

/* Whether r's next token is the argmax of the raw logits and nothing else reads them: then
 * a step of such requests asks the forward pass for ids (picked on the device) alone. */
static bool plain_greedy(const req *r) {
    return (r->p.temperature == 0.0f || r->p.top_k == 1) && r->p.presence_penalty == 0.0f &&
           r->p.frequency_penalty == 0.0f && r->p.top_logprobs < 0;
}

/* After the forward pass: advance, sample (or take the step's greedy picks), and queue
 * events; finished requests leave. */
static void finish_step(fr_engine *e, sched_item *items, int n, const float *logits, const int32_t *picks,
                        pending_event *evs, int *n_evs) {
    const int64_t V = e->m->cfg.vocab_size;
    int row = 0;
    const double t = now_s();
    for (int i = 0; i < n; i++) {
        req *r = items[i].r;
        const int64_t prompt_part = r->n_computed < r->n_prompt
                                        ? (r->n_computed + items[i].n < r->n_prompt ? items[i].n : r->n_prompt - r->n_computed)
                                        : 0;
        e->st.prompt_tokens_total += (uint64_t)prompt_part;
        r->n_computed += items[i].n;
        if (r->n_computed < r->n_tokens) continue; /* more prompt to go */
        pending_event *pe = &evs[(*n_evs)++];
        event_base(r, &pe->ev);
        pe->r = r;
        pe->final = false;
        const int32_t tok = picks ? picks[row] : sample(e, r, logits + (int64_t)row * V, &pe->ev);
        row++;
        r->tokens[r->n_tokens++] = tok;
        e->st.generation_tokens_total++;
        if (r->t_first_token == 0.0) r->t_first_token = t;
        pe->ev.token = tok;
        pe->ev.completion_tokens = r->n_tokens - r->n_prompt;
        pe->ev.t_first_token = r->t_first_token;
        fr_finish f = FR_FINISH_NONE;
        if (!r->p.ignore_eos && is_stop(r, tok)) f = FR_FINISH_STOP;
        else if (r->n_tokens - r->n_prompt >= r->p.max_tokens || r->n_tokens >= r->cap_tokens) f = FR_FINISH_LENGTH;
        if (f) {
            pe->ev.finish = f;
            pe->ev.t_finished = t;
            pe->final = true;
            count_finish(e, f);
        }
    }
    /* finished requests leave the running set and give their blocks back */
    for (int i = 0; i < *n_evs; i++) {
        if (!evs[i].final || evs[i].ev.finish == FR_FINISH_ABORT) continue;
        for (int j = 0; j < e->n_running; j++)
            if (e->running[j] == evs[i].r) {
                running_remove(e, j);
                break;
            }
        fr_kv_seq_release(e->pool, &evs[i].r->seq);
    }
}

/* A failed forward pass fails the requests that were in it. */
static void fail_step(fr_engine *e, sched_item *items, int n, const char *msg, pending_event *evs, int *n_evs) {
    for (int i = 0; i < n; i++) {
        req *r = items[i].r;
        for (int j = 0; j < e->n_running; j++)
            if (e->running[j] == r) {
                running_remove(e, j);
                break;
            }
        fr_kv_seq_release(e->pool, &r->seq);
        pending_event *pe = &evs[(*n_evs)++];
        event_base(r, &pe->ev);
        pe->ev.finish = FR_FINISH_ERROR, pe->ev.t_finished = now_s(), pe->ev.error = msg;
        pe->r = r, pe->final = true;
        count_finish(e, FR_FINISH_ERROR);
    }
}

static void *step_loop(void *arg) {
    fr_engine *e = arg;
    sched_item *items = e->items;
    fr_seq_step *steps = e->steps;
    pending_event *evs = e->evs;
    fr_error err;
    for (;;) {
        int n_evs = 0;
        pthread_mutex_lock(&e->mu);
        while (!e->shutdown && !e->wait_head && !e->n_running) pthread_cond_wait(&e->cv, &e->mu);
        if (e->shutdown) {
            pthread_mutex_unlock(&e->mu);
            break;
        }
        int n = schedule(e, items, evs, &n_evs);
        e->st.running = e->n_running;
        e->st.waiting = e->n_waiting;
        pthread_mutex_unlock(&e->mu);
        deliver(e, evs, n_evs);
        n_evs = 0;
        if (!n) continue;

        for (int i = 0; i < n; i++) {
            req *r = items[i].r;
            /* `frontier run`'s forms: the prompt in the prefill form (absorbed when it is a
             * single token), generated tokens in the absorbed form */
            const int64_t boundary = r->n_prompt > 1 ? r->n_prompt : 0;
            const int64_t end = r->n_computed + items[i].n;
            int64_t absorbed = end - (boundary > r->n_computed ? boundary : r->n_computed);
            steps[i] = (fr_seq_step){
                .ids = r->tokens + r->n_computed, .n = items[i].n, .pos = r->n_computed, .blocks = r->seq.blocks,
                .n_absorbed = absorbed < 0 ? 0 : absorbed,
                .logits = end == r->n_tokens ? FR_LOGITS_LAST : FR_LOGITS_NONE,
                .max_ctx = e->max_model_len, /* the same for every request: decode steps repeat */
            };
        }
        bool greedy = true;
        for (int i = 0; i < n; i++) greedy &= steps[i].logits == FR_LOGITS_NONE || plain_greedy(items[i].r);
        fr_status rc = greedy ? fr_forward_step_ids(e->fwd, steps, n, e->picks, &err)
                              : fr_forward_step(e->fwd, steps, n, e->logits, &err);
        pthread_mutex_lock(&e->mu);
        e->st.steps_total++;
        if (rc) fail_step(e, items, n, err.msg, evs, &n_evs);
        else finish_step(e, items, n, e->logits, greedy ? e->picks : NULL, evs, &n_evs);
        e->st.running = e->n_running;
        e->st.waiting = e->n_waiting;
        pthread_mutex_unlock(&e->mu);
        deliver(e, evs, n_evs);
    }
    return NULL;
}

/* Aborts can come from the whole queue plus the running set in one step. */
static int event_capacity(const fr_engine_opts *o) { return 2 * o->max_num_seqs + o->max_queue; }

/* ---------------------------------------------------------------- lifecycle */

fr_status fr_engine_create(const fr_model *m, fr_backend *be, const fr_engine_opts *opts, fr_engine **out,
                           fr_error *err) {
    *out = NULL;
    fr_engine_opts o = fr_engine_opts_default(), in = opts ? *opts : o;
    if (in.max_num_seqs < 0 || in.max_num_seqs > 4096 || in.max_model_len < 0 || in.kv_cache_tokens < 0 ||
        in.max_queue < 0 || in.max_queue > 1 << 20 || in.max_batched_tokens < 0 || in.max_batched_tokens > 1 << 20 ||
        in.block_size < 0 || in.block_size > 4096)
        return fr_fail(err, FR_ERR_INVALID, "engine options out of range");
    if (in.max_num_seqs) o.max_num_seqs = in.max_num_seqs;
    if (in.kv_cache_tokens) o.kv_cache_tokens = in.kv_cache_tokens;
    if (in.max_queue) o.max_queue = in.max_queue;
    if (in.max_batched_tokens) o.max_batched_tokens = in.max_batched_tokens;
    if (in.block_size) o.block_size = in.block_size;
    o.max_model_len = in.max_model_len;
    o.kv_cache_dtype = in.kv_cache_dtype;
    int64_t model_max = m->cfg.max_position_embeddings > 0 ? m->cfg.max_position_embeddings : INT32_MAX;
    if (!o.max_model_len) o.max_model_len = o.kv_cache_tokens < model_max ? o.kv_cache_tokens : model_max;
    if (o.max_model_len < 2) return fr_fail(err, FR_ERR_INVALID, "max_model_len must be at least 2");
    if (o.max_model_len > model_max)
        return fr_fail(err, FR_ERR_INVALID, "max_model_len %lld exceeds the model's max_position_embeddings %lld",
                       (long long)o.max_model_len, (long long)model_max);
    if (o.kv_cache_tokens < o.max_model_len) o.kv_cache_tokens = o.max_model_len; /* one request always fits */

    fr_engine *e = calloc(1, sizeof *e);
    if (!e) return fr_fail(err, FR_ERR_NOMEM, "out of memory");
    e->m = m, e->be = be, e->o = o, e->max_model_len = o.max_model_len;
    const int64_t V = m->cfg.vocab_size;
    fr_sampler_params sp = {.temperature = 0.0f, .top_k = 0, .top_p = 1.0f, .min_p = 0.0f, .seed = 0};
    fr_status rc = fr_kv_pool_create_dtype(m, be, (o.kv_cache_tokens + o.block_size - 1) / o.block_size,
                                           o.block_size, o.kv_cache_dtype, &e->pool, err);
    if (!rc) rc = fr_forward_create(m, be, e->pool, &e->fwd, err);
    if (!rc) rc = fr_sampler_init(&e->smp, &sp, V, err);
    if (!rc) {
        e->logits = malloc((size_t)o.max_num_seqs * (size_t)V * sizeof *e->logits);
        e->picks = malloc((size_t)o.max_num_seqs * sizeof *e->picks);
        e->work = malloc((size_t)V * sizeof *e->work);
        e->counts = calloc((size_t)V, sizeof *e->counts);
        e->running = calloc((size_t)o.max_num_seqs, sizeof *e->running);
        e->items = malloc((size_t)o.max_num_seqs * sizeof *e->items);
        e->steps = malloc((size_t)o.max_num_seqs * sizeof *e->steps);
        e->evs = malloc((size_t)event_capacity(&o) * sizeof *e->evs);
        if (!e->logits || !e->picks || !e->work || !e->counts || !e->running || !e->items || !e->steps || !e->evs) rc = fr_fail(err, FR_ERR_NOMEM, "engine: out of memory");
    }
    if (!rc) {
        pthread_mutex_init(&e->mu, NULL);
        pthread_cond_init(&e->cv, NULL);
        if (pthread_create(&e->thread, NULL, step_loop, e) != 0) {
            pthread_mutex_destroy(&e->mu);
            pthread_cond_destroy(&e->cv);
            rc = fr_fail(err, FR_ERR_NOMEM, "engine: cannot start the step thread");
        }
    }
    if (rc) {
        fr_kv_pool_free(e->pool);
        fr_forward_free(e->fwd);
        fr_sampler_release(&e->smp);
        free(e->logits), free(e->picks), free(e->work), free(e->counts), free(e->running);
        free(e->items), free(e->steps), free(e->evs), free(e);
        return rc;
    }
    *out = e;
    return FR_OK;
}

void fr_engine_free(fr_engine *e) {
    if (!e) return;
    pthread_mutex_lock(&e->mu);
    e->shutdown = true;
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
    pthread_join(e->thread, NULL);
    /* everything still in flight ends with an abort event (on this thread: the step
     * thread is gone) */
    fr_token_event ev;
    while (e->n_running > 0) {
        req *r = e->running[--e->n_running];
        event_base(r, &ev);
        ev.finish = FR_FINISH_ABORT, ev.t_finished = now_s();
        r->fn(r->user, &ev);
        req_free(e, r);
    }
    for (req *r; (r = queue_pop_front(e));) {
        event_base(r, &ev);
        ev.finish = FR_FINISH_ABORT, ev.t_finished = now_s();
        r->fn(r->user, &ev);
        req_free(e, r);
    }
    pthread_mutex_destroy(&e->mu);
    pthread_cond_destroy(&e->cv);
    fr_forward_free(e->fwd);
    fr_kv_pool_free(e->pool);
    fr_sampler_release(&e->smp);
    free(e->logits), free(e->picks), free(e->work), free(e->counts), free(e->running);
    free(e->items), free(e->steps), free(e->evs);
    free(e);
}
