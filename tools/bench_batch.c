/* bench_batch.c - `frontier bench --batch 1,4,16`: decode throughput of B sequences
 * stepping together through fr_forward_step (what the server's engine runs), against the
 * read bandwidth measured in the same run.
 *
 * Each sequence gets its own random prompt of p tokens (prefilled one sequence per step),
 * then n steps decode all B sequences at once. A batched step reads every weight a token
 * of the batch needs once: attention, head and shared experts once per step, and each
 * routed expert chosen by any of the B tokens once, so with uniform routing the distinct
 * experts per layer grow as E (1 - (1 - k/E)^B). The table shows the bytes a step read
 * (as the backend counted them), the tok/s, and the ratio to batch 1: the gain batching
 * can give is bounded by B x (bytes of a batch-1 step) / (bytes of a batch-B step) when
 * memory bound, and by the arithmetic the B tokens need when compute bound. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "bench_batch.h"

/* One batch size: median decode step time and mean weight bytes per step. */
static fr_status run_batch(fr_model *m, fr_backend *be, fr_kv_dtype kv_dtype, int B, int64_t n_prompt, int64_t n_gen,
                           double *t_step, double *bytes_step, fr_error *err) {
    const fr_config *c = &m->cfg;
    const int block = 16;
    const int64_t per_seq = n_prompt + n_gen + 1;
    fr_kv_pool *pool = NULL;
    fr_forward *fwd = NULL;
    fr_kv_seq *seqs = calloc((size_t)B, sizeof *seqs);
    fr_seq_step *st = calloc((size_t)B, sizeof *st);
    int32_t *ids = malloc((size_t)B * (size_t)per_seq * sizeof *ids);
    int32_t *picks = malloc((size_t)B * sizeof *picks); /* greedy steps, as the engine runs them */
    double *steps = malloc((size_t)n_gen * sizeof *steps);
    fr_status rc = FR_OK;
    if (!seqs || !st || !ids || !picks || !steps) {
        rc = fr_fail(err, FR_ERR_NOMEM, "out of memory for a batch of %d", B);
        goto out;
    }
    const int64_t blocks_per_seq = (per_seq + block - 1) / block;
    if ((rc = fr_kv_pool_create_dtype(m, be, (int64_t)B * blocks_per_seq, block, kv_dtype, &pool, err))) goto out;
    if ((rc = fr_forward_create(m, be, pool, &fwd, err))) goto out;
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (int64_t i = 0; i < (int64_t)B * per_seq; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        ids[i] = (int32_t)(x % (uint64_t)c->vocab_size);
    }
    for (int b = 0; b < B && !rc; b++) {
        if (fr_kv_seq_reserve(pool, &seqs[b], per_seq)) {
            rc = fr_fail(err, FR_ERR_NOMEM, "kv pool too small");
            break;
        }
        fr_seq_step p = {.ids = ids + (int64_t)b * per_seq, .n = n_prompt, .pos = 0, .blocks = seqs[b].blocks,
                         .n_absorbed = n_prompt > 1 ? 0 : 1, .logits = FR_LOGITS_LAST};
        rc = fr_forward_step_ids(fwd, &p, 1, picks, err);
    }
    uint64_t bytes = 0;
    for (int64_t i = 0; i <= n_gen && !rc; i++) { /* step 0 is a warm-up, not timed */
        for (int b = 0; b < B; b++)
            st[b] = (fr_seq_step){.ids = ids + (int64_t)b * per_seq + n_prompt + i, .n = 1, .pos = n_prompt + i,
                                  .blocks = seqs[b].blocks, .n_absorbed = 1, .logits = FR_LOGITS_LAST,
                                  .max_ctx = per_seq};
        const uint64_t before = be->weight_bytes_read;
        const double t0 = fr_now_s();
        rc = fr_forward_step_ids(fwd, st, B, picks, err);
        if (i > 0) {
            steps[i - 1] = fr_now_s() - t0;
            bytes += be->weight_bytes_read - before;
        }
    }
    if (!rc) {
        qsort(steps, (size_t)n_gen, sizeof *steps, fr_cmp_double);
        *t_step = steps[n_gen / 2];
        *bytes_step = (double)bytes / (double)n_gen;
    }
out:
    if (pool)
        for (int b = 0; b < B; b++) fr_kv_seq_free(pool, &seqs[b]);
    fr_forward_free(fwd);
    fr_kv_pool_free(pool);
    free(seqs), free(st), free(ids), free(picks), free(steps);
    return rc;
}

fr_status fr_bench_batches(fr_model *m, fr_backend *be, fr_kv_dtype kv_dtype, const int64_t *batches, int n_batches,
                           int64_t n_prompt, int64_t n_gen, double bandwidth, bool json, const char *label,
                           fr_error *err) {
    if (!json) {
        const bool cpu = !strcmp(be->ops->name, "cpu");
        char where[64];
        if (cpu) snprintf(where, sizeof where, "%d threads", be->n_threads);
        else snprintf(where, sizeof where, "%s backend", be->ops->name);
        printf("frontier bench --batch: %s, %d layers, %s, prompt %lld, %lld decode steps (median); "
               "%s bandwidth %.2f GB/s\n",
               label, m->cfg.n_layers, where, (long long)n_prompt, (long long)n_gen, cpu ? "read" : "copy",
               bandwidth / 1e9);
        printf("| batch | step ms | decode tok/s | speedup vs first | weight GB/step | achieved GB/s | "
               "of bandwidth | memory-bound speedup limit |\n");
        printf("|------:|--------:|-------------:|-----------------:|---------------:|--------------:|"
               "-------------:|---------------------------:|\n");
    }
    double base_tps = 0, base_bytes = 0;
    int base_b = 1;
    for (int i = 0; i < n_batches; i++) {
        double t = 0, bytes = 0;
        const int B = (int)batches[i];
        fr_status rc = run_batch(m, be, kv_dtype, B, n_prompt, n_gen, &t, &bytes, err);
        if (rc) return rc;
        const double tps = (double)B / t, gbs = bytes / t / 1e9;
        if (i == 0) base_tps = tps, base_bytes = bytes, base_b = B;
        /* what the speedup would be if both steps ran at the same fraction of bandwidth */
        const double limit = ((double)B / base_b) * base_bytes / bytes;
        if (json)
            printf("{\"model\":\"%s\",\"batch\":%d,\"step_s\":%.6f,\"decode_tok_s\":%.4f,\"speedup\":%.4f,"
                   "\"weight_bytes_per_step\":%.0f,\"achieved_gb_s\":%.3f,\"read_bandwidth_gb_s\":%.3f,"
                   "\"memory_bound_speedup_limit\":%.4f}\n",
                   label, B, t, tps, tps / base_tps, bytes, gbs, bandwidth / 1e9, limit);
        else
            printf("| %5d | %7.1f | %12.2f | %15.2fx | %14.3f | %13.2f | %11.1f%% | %26.2fx |\n", B, 1e3 * t, tps,
                   tps / base_tps, bytes / 1e9, gbs, 100.0 * gbs * 1e9 / bandwidth, limit);
        fflush(stdout);
    }
    return FR_OK;
}
