/* test_cuda_forward.c - batched decode steps on the CUDA backend against the CPU backend,
 * with recorded steps (CUDA graphs) replayed across changing positions and block tables.
 *
 * Three sequences of different lengths prefill, then decode together for many steps in a
 * pool of 4-token blocks (so their block tables grow during the run) whose blocks are handed
 * out interleaved; every step's logits must match the CPU backend's. With graphs on, step 1
 * of the decode shape runs eagerly, step 2 is captured and later ones replay: a launch that
 * kept a per-step value (a position, a length, a block) as an argument gives wrong logits
 * from step 3 on. Also a DSA model (DeepSeek-V3.2 tiny, index_topk below the contexts), whose
 * decode switches from dense to sparse attention mid-run (a new step shape), and the FP8
 * cache. Then GREEDY steps where the GPU picks the ids itself (fr_forward_step_ids: the
 * argmax op inside the recorded step, only ids copied back), against the argmax of the
 * CPU's logits. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/argmax.h"
#include "gpu_check.h"
#include "model/forward.h"
#include "model/kv_cache.h"
#include "model/synth.h"

#define NSEQ 3
#define STEPS 12
#define GREEDY 4

static fr_model *load_preset(const char *preset, uint64_t seed) {
    fr_error err = {0};
    char *json = NULL, *edited = NULL;
    fr_synth_opts so = {.seed = seed};
    fr_config cfg;
    fr_st_set *st = NULL;
    fr_model *m = NULL;
    if (fr_synth_preset_json(preset, &json, &err) || fr_synth_edit_json(json, &so, &edited, &err) ||
        fr_synth_memory(edited, &so, &cfg, &st, &err) || fr_model_from_set(&cfg, st, &m, &err)) {
        fprintf(stderr, "test_cuda_forward: %s: %s\n", preset, err.msg);
        m = NULL;
    }
    free(json), free(edited);
    return m;
}

typedef struct {
    fr_kv_pool *pool;
    fr_forward *fwd;
    fr_kv_seq seq[NSEQ];
} runner;

static bool runner_open(runner *r, const fr_model *m, fr_backend *be, fr_kv_dtype dt, int64_t max_ctx) {
    fr_error err = {0};
    memset(r, 0, sizeof *r);
    const int bs = 4;
    if (fr_kv_pool_create_dtype(m, be, NSEQ * (max_ctx / bs + 1), bs, dt, &r->pool, &err) ||
        fr_forward_create(m, be, r->pool, &r->fwd, &err)) {
        fprintf(stderr, "test_cuda_forward: %s\n", err.msg);
        return false;
    }
    /* grow the tables a block at a time, round robin, so each sequence's blocks are scattered */
    for (int64_t k = bs; k < max_ctx + bs; k += bs)
        for (int i = 0; i < NSEQ; i++)
            if (fr_kv_seq_reserve(r->pool, &r->seq[i], k)) return false;
    return true;
}

static void runner_close(runner *r) {
    for (int i = 0; i < NSEQ; i++)
        if (r->pool) fr_kv_seq_free(r->pool, &r->seq[i]);
    fr_forward_free(r->fwd);
    fr_kv_pool_free(r->pool);
}

/* Decode step k of every sequence, for the CPU runner (sc) and the GPU one (sg). */
static void decode_step(fr_seq_step *sc, fr_seq_step *sg, const runner *rc, const runner *rg, int32_t ids[][64],
                        const int64_t *prompt, int k, int64_t max_ctx) {
    for (int i = 0; i < NSEQ; i++) {
        const int64_t pos = prompt[i] + k;
        sc[i] = (fr_seq_step){.ids = &ids[i][pos], .n = 1, .pos = pos, .blocks = rc->seq[i].blocks,
                              .n_absorbed = 1, .logits = FR_LOGITS_LAST, .max_ctx = max_ctx};
        sg[i] = sc[i];
        sg[i].blocks = rg->seq[i].blocks;
    }
}

static void run_case(gc_ctx *g, const char *name, const fr_model *m, fr_kv_dtype dt, double tol) {
    const int64_t V = m->cfg.vocab_size;
    const int64_t prompt[NSEQ] = {5, 9, 2};
    const int64_t max_ctx = 9 + STEPS + GREEDY + 1;
    runner rc, rg;
    if (!runner_open(&rc, m, g->cpu, dt, max_ctx) || !runner_open(&rg, m, g->gpu, dt, max_ctx)) {
        gc_check(g, name, false);
        return;
    }
    int32_t ids[NSEQ][64];
    uint64_t x = 0x2545F4914F6CDD1Dull;
    for (int i = 0; i < NSEQ; i++)
        for (int k = 0; k < 64; k++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            ids[i][k] = (int32_t)(x % (uint64_t)V);
        }
    float *want = malloc((size_t)(NSEQ * V) * sizeof *want), *got = malloc((size_t)(NSEQ * V) * sizeof *got);
    fr_error err = {0};
    char label[128];
    bool ok = want && got;
    /* prefill each sequence alone, then decode all together */
    for (int i = 0; i < NSEQ && ok; i++) {
        fr_seq_step s = {.ids = ids[i], .n = prompt[i], .pos = 0, .blocks = rc.seq[i].blocks, .logits = FR_LOGITS_LAST,
                         .max_ctx = max_ctx};
        ok = !fr_forward_step(rc.fwd, &s, 1, want, &err);
        s.blocks = rg.seq[i].blocks;
        ok = ok && !fr_forward_step(rg.fwd, &s, 1, got, &err);
        snprintf(label, sizeof label, "%s: prefill of sequence %d", name, i);
        if (ok) gc_close(g, label, got, want, (size_t)V, tol);
    }
    double worst = 0.0;
    for (int k = 0; k < STEPS && ok; k++) {
        fr_seq_step sc[NSEQ], sg[NSEQ];
        decode_step(sc, sg, &rc, &rg, ids, prompt, k, max_ctx);
        ok = !fr_forward_step(rc.fwd, sc, NSEQ, want, &err) && !fr_forward_step(rg.fwd, sg, NSEQ, got, &err);
        if (!ok) break;
        const double e = gc_rel_l2(got, want, (size_t)(NSEQ * V));
        if (!(e <= worst)) worst = e;
        snprintf(label, sizeof label, "%s: decode step %d of %d sequences", name, k, NSEQ);
        gc_close(g, label, got, want, (size_t)(NSEQ * V), tol);
    }
    /* greedy steps: the GPU's picks against the argmax of the CPU's logits; a different
     * pick is accepted only on a near tie (the two logits within 1e-5 of the row's scale) */
    int differ = 0, near_ties = 0;
    for (int k = STEPS; k < STEPS + GREEDY && ok; k++) {
        fr_seq_step sc[NSEQ], sg[NSEQ];
        decode_step(sc, sg, &rc, &rg, ids, prompt, k, max_ctx);
        int32_t picks[NSEQ];
        ok = !fr_forward_step(rc.fwd, sc, NSEQ, want, &err) && !fr_forward_step_ids(rg.fwd, sg, NSEQ, picks, &err);
        for (int i = 0; i < NSEQ && ok; i++) {
            const float *row = want + (int64_t)i * V;
            const int32_t best = fr_argmax_f32(row, V);
            if (picks[i] == best) continue;
            float scale = 0.0f;
            for (int64_t c = 0; c < V; c++) scale = fabsf(row[c]) > scale ? fabsf(row[c]) : scale;
            const bool in_range = picks[i] >= 0 && picks[i] < V;
            if (in_range && fabsf(row[picks[i]] - row[best]) <= 1e-5f * scale) near_ties++;
            else differ++;
        }
    }
    snprintf(label, sizeof label, "%s: %d greedy steps picked on the device", name, GREEDY);
    if (ok) gc_check(g, label, differ == 0);
    if (near_ties) printf("  %s: %d near-tie picks differ\n", name, near_ties);
    if (!ok) printf("  %s: %s\n", name, err.msg);
    gc_check(g, name, ok);
    printf("%-40s worst decode rel L2 %.3g over %d steps\n", name, worst, STEPS);
    free(want), free(got);
    runner_close(&rc);
    runner_close(&rg);
}

int main(void) {
    gc_ctx g;
    int rc = gc_init(&g);
    if (rc) return rc;
    fr_model *tiny = load_preset("tiny", 5);
    fr_model *dsa = load_preset("deepseek-v3.2-tiny", 6);
    if (!tiny || !dsa) return 1;
    run_case(&g, "tiny f32 cache", tiny, FR_KV_F32, 1e-4);
    run_case(&g, "tiny fp8 cache", tiny, FR_KV_FP8, 1e-4);
    run_case(&g, "deepseek-v3.2-tiny (dense, then sparse)", dsa, FR_KV_F32, 1e-3);
    rc = gc_done(&g);
    fr_model_free(tiny);
    fr_model_free(dsa);
    return rc;
}
