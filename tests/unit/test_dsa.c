/* test_dsa.c - DeepSeek Sparse Attention: config parsing and the CPU backend's DSA ops.
 *
 * Config: the two DSA architectures, the indexer RoPE layout per family, the GLM-5.1
 * indexer schedules (list, pattern, freq/offset rule) and their refusals.
 * Ops (against scalar definitions written here from shared/docs/ARCH.md 5): LayerNorm,
 * half-split RoPE, the indexer top-k over a paged key cache (ties, padding, all-visible
 * rows), and sparse MLA (all keys selected = dense mla_attention; naive form =
 * absorbed form; a strict subset = attention over just those keys).
 * Forward: a batched step of a sparse and a dense sequence over interleaved pages gives
 * each the logits of its own one-sequence session (glm-5-tiny, in memory). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "check.h"
#include "core/dtype.h"
#include "io/config.h"
#include "model/forward.h"
#include "model/synth.h"

/* ---- config */

/* GLM-5's released fields (ARCH 2.4) at a few layers, with a %s slot for extra fields. */
static const char *GLM5 =
    "{\"architectures\":[\"GlmMoeDsaForCausalLM\"],\"model_type\":\"glm_moe_dsa\",\"vocab_size\":154880,"
    "\"hidden_size\":6144,\"intermediate_size\":12288,\"moe_intermediate_size\":2048,\"num_hidden_layers\":6,"
    "\"num_attention_heads\":64,\"n_shared_experts\":1,\"n_routed_experts\":256,\"routed_scaling_factor\":2.5,"
    "\"kv_lora_rank\":512,\"q_lora_rank\":2048,\"qk_rope_head_dim\":64,\"v_head_dim\":256,\"qk_nope_head_dim\":192,"
    "\"n_group\":1,\"topk_group\":1,\"num_experts_per_tok\":8,\"first_k_dense_replace\":3,\"norm_topk_prob\":true,"
    "\"rms_norm_eps\":1e-05,\"rope_parameters\":{\"rope_theta\":1000000,\"rope_type\":\"default\"},"
    "\"num_nextn_predict_layers\":1,\"index_n_heads\":32,\"index_head_dim\":128,\"index_topk\":2048%s}";

static fr_status glm(const char *extra, fr_config *c, fr_error *err) {
    char buf[4096];
    snprintf(buf, sizeof buf, GLM5, extra);
    return fr_config_parse(buf, NULL, "config.json", c, err);
}

static void test_config(void) {
    fr_config c;
    fr_error err = {0};
    CHECK(glm("", &c, &err) == FR_OK);
    CHECK(c.dsa.enabled && c.dsa.n_heads == 32 && c.dsa.head_dim == 128 && c.dsa.topk == 2048);
    CHECK(c.dsa.rope_interleaved); /* GLM-5: interleaved indexer RoPE (ARCH 4.9) */
    CHECK_NEAR(fr_config_softmax_scale(&c), 0.0625, 1e-12);
    for (int l = 0; l < 7; l++) CHECK(fr_config_layer_has_indexer(&c, l)); /* no schedule: all full, MTP too */

    CHECK(glm(",\"indexer_types\":[\"full\",\"shared\",\"shared\",\"full\",\"shared\",\"full\"]", &c, &err) == FR_OK);
    const bool want[] = {1, 0, 0, 1, 0, 1, 1};
    for (int l = 0; l < 7; l++) CHECK_MSG(fr_config_layer_has_indexer(&c, l) == want[l], "layer %d", l);
    CHECK(glm(",\"index_topk_pattern\":\"FFSFSS\"", &c, &err) == FR_OK);
    CHECK(!c.dsa.shared[1] && c.dsa.shared[2] && !c.dsa.shared[3] && c.dsa.shared[5]);
    /* ARCH 2.4: freq 4, offset 3 -> full layers 0, 1, 2, 6, ... */
    CHECK(glm(",\"index_topk_freq\":4,\"index_skip_topk_offset\":3", &c, &err) == FR_OK);
    CHECK(!c.dsa.shared[0] && !c.dsa.shared[1] && !c.dsa.shared[2] && c.dsa.shared[3] && c.dsa.shared[5]);
    CHECK(glm(",\"indexer_rope_interleave\":false", &c, &err) == FR_OK && !c.dsa.rope_interleaved);

    /* refusals, each with a message */
    const char *bad[] = {
        ",\"indexer_types\":[\"shared\",\"full\",\"full\",\"full\",\"full\",\"full\"]", /* layer 0 shared */
        ",\"indexer_types\":[\"full\",\"full\"]",                                      /* length */
        ",\"indexer_types\":[\"full\",\"full\",\"full\",\"full\",\"full\",\"full\",\"shared\"]", /* MTP shared */
        ",\"indexer_types\":[\"full\",\"half\",\"full\",\"full\",\"full\",\"full\"]",  /* value */
        ",\"indexer_types\":\"full\"",                                                 /* not a list */
        ",\"index_topk_freq\":2",                                                      /* layer 0 shared by rule */
        ",\"index_topk_pattern\":\"FFXFFF\"",
        ",\"index_topk_freq\":0",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        err.msg[0] = 0;
        CHECK_MSG(glm(bad[i], &c, &err) != FR_OK && err.msg[0], "%s", bad[i]);
    }
    char buf[4096];
    snprintf(buf, sizeof buf, GLM5, "");
    /* DeepSeek-V3.2: half-split indexer RoPE; required fields; index dims vs rope */
    const char *edits[][2] = {
        {"GlmMoeDsaForCausalLM\"],\"model_type\":\"glm_moe_dsa", "DeepseekV32ForCausalLM\"],\"model_type\":\"deepseek_v32"},
        {",\"index_topk\":2048", ""},                                                         /* missing */
        {"\"index_head_dim\":128", "\"index_head_dim\":32"},                                 /* < rope 64 */
        {"\"q_lora_rank\":2048", "\"q_lora_rank\":null"},                                    /* no q latent */
        {"GlmMoeDsaForCausalLM\"],\"model_type\":\"glm_moe_dsa", "DeepseekV3ForCausalLM\"],\"model_type\":\"deepseek_v3"},
        {"\"model_type\":\"glm_moe_dsa\"", "\"model_type\":\"deepseek_v32\""},              /* wrong pairing */
    };
    for (size_t i = 0; i < sizeof edits / sizeof *edits; i++) {
        char out[4096];
        const char *p = strstr(buf, edits[i][0]);
        CHECK(p != NULL);
        if (!p) continue;
        snprintf(out, sizeof out, "%.*s%s%s", (int)(p - buf), buf, edits[i][1], p + strlen(edits[i][0]));
        err.msg[0] = 0;
        fr_status rc = fr_config_parse(out, NULL, "config.json", &c, &err);
        if (i == 0) CHECK(rc == FR_OK && c.dsa.enabled && !c.dsa.rope_interleaved && !strcmp(c.model_type, "deepseek_v32"));
        else CHECK_MSG(rc != FR_OK && err.msg[0], "edit %zu", i);
    }
}

/* ---- ops */

static uint32_t rng_state = 12345;
static float frand(void) { /* uniform in [-1, 1) */
    rng_state = rng_state * 1664525u + 1013904223u;
    return (float)((rng_state >> 8) * (1.0 / 8388608.0)) - 1.0f;
}

static fr_weight f32_vec(const float *v, int64_t n) {
    fr_weight w = {0};
    w.dtype = FR_DTYPE_F32, w.rows = 1, w.cols = n, w.data = v;
    return w;
}

static void test_layernorm_rope(fr_backend *be) {
    enum { N = 3, DIM = 10, STRIDE = 13 };
    float x[N * STRIDE], o[N * STRIDE], w[DIM], b[DIM];
    for (int i = 0; i < N * STRIDE; i++) x[i] = 3.0f * frand() + 0.5f;
    for (int i = 0; i < DIM; i++) w[i] = 1.0f + 0.2f * frand(), b[i] = 0.3f * frand();
    memcpy(o, x, sizeof o);
    fr_weight W = f32_vec(w, DIM), B = f32_vec(b, DIM);
    CHECK(be->ops->layernorm(be, o, x, N, DIM, STRIDE, &W, &B, 1e-6f) == FR_OK);
    for (int t = 0; t < N; t++) {
        double mu = 0, var = 0;
        for (int i = 0; i < DIM; i++) mu += x[t * STRIDE + i];
        mu /= DIM;
        for (int i = 0; i < DIM; i++) var += (x[t * STRIDE + i] - mu) * (x[t * STRIDE + i] - mu);
        var /= DIM;
        for (int i = 0; i < DIM; i++)
            CHECK_NEAR(o[t * STRIDE + i], (x[t * STRIDE + i] - mu) / sqrt(var + 1e-6) * w[i] + b[i], 1e-5);
        for (int i = DIM; i < STRIDE; i++) CHECK(o[t * STRIDE + i] == x[t * STRIDE + i]); /* gaps untouched */
    }
    /* half-split RoPE: pairs (i, i + 4) of an 8-dim rope part in 2 heads of 12 */
    enum { H = 2, HD = 12, R = 8 };
    float v[N * H * HD], v0[N * H * HD];
    for (int i = 0; i < N * H * HD; i++) v0[i] = v[i] = frand();
    const int32_t pos[N] = {0, 5, 1000};
    const double freqs[R / 2] = {1.0, 0.3, 0.01, 1e-4};
    CHECK(be->ops->rope_half(be, v, N, H, H * HD, HD, R, pos, freqs, 1.0f) == FR_OK);
    for (int t = 0; t < N; t++)
        for (int h = 0; h < H; h++) {
            const float *a = v0 + (t * H + h) * HD, *y = v + (t * H + h) * HD;
            for (int i = 0; i < R / 2; i++) {
                double c = cos(pos[t] * freqs[i]), s = sin(pos[t] * freqs[i]);
                CHECK_NEAR(y[i], a[i] * c - a[i + R / 2] * s, 1e-5);
                CHECK_NEAR(y[i + R / 2], a[i] * s + a[i + R / 2] * c, 1e-5);
            }
            for (int i = R; i < HD; i++) CHECK(y[i] == a[i]);
        }
}

/* Blocks of 4 tokens in a shuffled order, as a pool hands them out. */
enum { BS = 4, NB = 5, CTX = BS * NB };
static const int32_t BLOCKS[NB] = {3, 0, 4, 2, 1};
static int64_t slot(int64_t s) { return (int64_t)BLOCKS[s / BS] * BS + s % BS; }

static void test_select(fr_backend *be) {
    enum { HI = 3, DI = 6, K = 5, N = 7, POS0 = 13 }; /* queries at positions 13..19 */
    float keys[CTX * DI], q[N * HI * DI], w[N * HI];
    for (int i = 0; i < CTX * DI; i++) keys[i] = frand();
    for (int i = 0; i < N * HI * DI; i++) q[i] = frand();
    for (int i = 0; i < N * HI; i++) w[i] = frand();
    /* ties: tokens 2 and 9 get token 5's key (equal scores: the earlier must win) */
    memcpy(keys + slot(2) * DI, keys + slot(5) * DI, DI * sizeof *keys);
    memcpy(keys + slot(9) * DI, keys + slot(5) * DI, DI * sizeof *keys);
    fr_dsa_layer L = {.n_heads = HI, .head_dim = DI, .topk = K, .scale = 0.25f, .keys = keys, .blocks = BLOCKS,
                      .block_size = BS};
    int32_t sel[N * K];
    CHECK(be->ops->dsa_select(be, sel, q, w, N, POS0, &L) == FR_OK);
    for (int t = 0; t < N; t++) {
        const int64_t m = POS0 + t + 1;
        double score[CTX];
        for (int64_t s = 0; s < m; s++) {
            score[s] = 0;
            for (int h = 0; h < HI; h++) {
                double d = 0;
                for (int i = 0; i < DI; i++) d += (double)q[(t * HI + h) * DI + i] * keys[slot(s) * DI + i];
                score[s] += w[t * HI + h] * (d > 0 ? d : 0) * 0.25;
            }
        }
        /* expected: K picks of the best score, the earliest among equals */
        bool taken[CTX] = {false};
        for (int k = 0; k < K; k++) {
            int64_t best = -1;
            for (int64_t s = 0; s < m; s++)
                if (!taken[s] && (best < 0 || score[s] > score[best] + 1e-9)) best = s;
            taken[best] = true;
        }
        int j = 0;
        for (int64_t s = 0; s < m; s++)
            if (taken[s]) CHECK_MSG(sel[t * K + j++] == s, "row %d entry %d: %d, want %lld", t, j - 1, sel[t * K + j - 1], (long long)s);
    }
    /* rows that see no more than K keys keep them all, in order, padded with -1 */
    int32_t sel2[3 * K];
    CHECK(be->ops->dsa_select(be, sel2, q, w, 3, 1, &L) == FR_OK); /* positions 1, 2, 3 */
    for (int t = 0; t < 3; t++)
        for (int j = 0; j < K; j++) CHECK(sel2[t * K + j] == (j <= t + 1 ? j : -1));
    /* all-equal scores (w = 0): the K earliest keys */
    float w0[N * HI] = {0};
    CHECK(be->ops->dsa_select(be, sel, q, w0, 1, POS0, &L) == FR_OK);
    for (int j = 0; j < K; j++) CHECK(sel[j] == j);
}

static void test_sparse_mla(fr_backend *be) {
    enum { H = 2, DN = 5, DR = 4, DV = 7, R = 6, ROW = R + DR, N = 6, POS0 = 9, T = POS0 + N, W = T };
    static float cache[CTX * ROW], kvb[H * (DN + DV) * R], q[N * H * (DN + DR)];
    static float dense[N * H * DV], sparse[N * H * DV], other[N * H * DV], want[N * H * DV];
    for (int i = 0; i < CTX * ROW; i++) cache[i] = frand();
    for (int i = 0; i < H * (DN + DV) * R; i++) kvb[i] = frand() * 0.5f;
    for (int i = 0; i < N * H * (DN + DR); i++) q[i] = frand();
    fr_weight wkvb = {0};
    wkvb.dtype = FR_DTYPE_F32, wkvb.rows = H * (DN + DV), wkvb.cols = R, wkvb.data = kvb;
    fr_mla_layer L = {.n_heads = H, .nope = DN, .rope = DR, .v = DV, .kv_lora = R, .scale = 0.3f, .kv_b = &wkvb,
                      .cache = cache, .blocks = BLOCKS, .block_size = BS};
    /* every causal key selected: the same as dense attention, in both forms */
    int32_t sel[N * W];
    for (int t = 0; t < N; t++)
        for (int j = 0; j < W; j++) sel[t * W + j] = j <= POS0 + t ? j : -1;
    for (int absorbed = 0; absorbed < 2; absorbed++) {
        CHECK(be->ops->mla_attention(be, dense, q, N, POS0, &L, absorbed) == FR_OK);
        CHECK(be->ops->mla_sparse_attention(be, sparse, q, N, POS0, &L, sel, W, absorbed) == FR_OK);
        for (int i = 0; i < N * H * DV; i++) CHECK_NEAR(sparse[i], dense[i], 1e-5);
    }
    /* a strict subset (3 keys, unordered rows end early): both forms against a scalar
     * evaluation of ARCH 4.5 over those keys only */
    enum { KW = 4 };
    int32_t sub[N * KW];
    for (int t = 0; t < N; t++) {
        sub[t * KW + 0] = t;
        sub[t * KW + 1] = POS0 + t;
        sub[t * KW + 2] = (3 * t + 1) % (POS0 + t);
        sub[t * KW + 3] = -1;
    }
    for (int t = 0; t < N; t++)
        for (int h = 0; h < H; h++) {
            double p[3], mx = -1e300, sum = 0;
            const float *qh = q + (t * H + h) * (DN + DR);
            for (int j = 0; j < 3; j++) {
                const float *c = cache + slot(sub[t * KW + j]) * ROW;
                double s = 0;
                for (int d = 0; d < DN; d++) {
                    double k = 0; /* k_nope = W_UK[h] c_kv */
                    for (int i = 0; i < R; i++) k += (double)kvb[(h * (DN + DV) + d) * R + i] * c[i];
                    s += qh[d] * k;
                }
                for (int d = 0; d < DR; d++) s += (double)qh[DN + d] * c[R + d];
                p[j] = 0.3 * s;
                mx = p[j] > mx ? p[j] : mx;
            }
            for (int j = 0; j < 3; j++) sum += (p[j] = exp(p[j] - mx));
            for (int d = 0; d < DV; d++) {
                double o = 0;
                for (int j = 0; j < 3; j++) {
                    const float *c = cache + slot(sub[t * KW + j]) * ROW;
                    double v = 0;
                    for (int i = 0; i < R; i++) v += (double)kvb[(h * (DN + DV) + DN + d) * R + i] * c[i];
                    o += p[j] / sum * v;
                }
                want[(t * H + h) * DV + d] = (float)o;
            }
        }
    CHECK(be->ops->mla_sparse_attention(be, sparse, q, N, POS0, &L, sub, KW, false) == FR_OK);
    CHECK(be->ops->mla_sparse_attention(be, other, q, N, POS0, &L, sub, KW, true) == FR_OK);
    for (int i = 0; i < N * H * DV; i++) {
        CHECK_NEAR(sparse[i], want[i], 1e-5);
        CHECK_NEAR(other[i], want[i], 1e-5);
    }
}

/* Two sequences through fr_forward_step over one pool of 4-token blocks handed out
 * alternately, against fr_session_eval per sequence. Step 1: A prefills 10 tokens
 * (context > index_topk 6: sparse), B 3 (dense). Step 2: A decodes 1 (absorbed), B
 * prefills 5 more (now sparse, naive form). */
static void test_batched(fr_backend *be) {
    fr_error err = {0};
    char *json = NULL;
    fr_config cfg;
    fr_st_set *set = NULL;
    fr_model *m = NULL;
    fr_kv_pool *pool = NULL;
    fr_forward *fwd = NULL;
    fr_session *sa = NULL, *sb = NULL;
    fr_kv_seq qa = {0}, qb = {0};
    float *got = NULL, *want = NULL;
    if (fr_synth_preset_json("glm-5-tiny", &json, &err) || fr_synth_memory(json, NULL, &cfg, &set, &err) ||
        fr_model_from_set(&cfg, set, &m, &err) || fr_kv_pool_create(m, be, 16, 4, &pool, &err) ||
        fr_forward_create(m, be, pool, &fwd, &err) || fr_session_create(m, be, 32, &sa, &err) ||
        fr_session_create(m, be, 32, &sb, &err)) {
        CHECK_MSG(0, "setup: %s", err.msg);
        goto out;
    }
    CHECK(cfg.dsa.topk == 6);
    for (int64_t n = 4; n <= 12; n += 4) /* interleave the two block tables */
        CHECK(!fr_kv_seq_reserve(pool, &qa, n) && !fr_kv_seq_reserve(pool, &qb, n));
    const int64_t V = cfg.vocab_size;
    const int32_t a_ids[11] = {5, 17, 3, 99, 250, 7, 31, 600, 2, 45, 8};
    const int32_t b_ids[8] = {11, 400, 9, 77, 13, 500, 21, 6};
    got = malloc(16 * (size_t)V * sizeof *got);
    want = malloc(16 * (size_t)V * sizeof *want);
    if (!got || !want) goto out;
    /* step 1 */
    fr_seq_step st[2] = {
        {.ids = a_ids, .n = 10, .pos = 0, .blocks = qa.blocks, .n_absorbed = 0, .logits = FR_LOGITS_ALL},
        {.ids = b_ids, .n = 3, .pos = 0, .blocks = qb.blocks, .n_absorbed = 0, .logits = FR_LOGITS_ALL},
    };
    CHECK(fr_forward_step(fwd, st, 2, got, &err) == FR_OK);
    CHECK(fr_session_eval(sa, a_ids, 10, FR_ATTN_NAIVE, want, true, &err) == FR_OK);
    CHECK(fr_session_eval(sb, b_ids, 3, FR_ATTN_NAIVE, want + 10 * V, true, &err) == FR_OK);
    double worst = 0;
    for (int64_t i = 0; i < 13 * V; i++) worst = fmax(worst, fabs(got[i] - want[i]));
    CHECK_MSG(worst < 1e-4, "step 1: %g", worst);
    /* step 2 */
    fr_seq_step st2[2] = {
        {.ids = a_ids + 10, .n = 1, .pos = 10, .blocks = qa.blocks, .n_absorbed = 1, .logits = FR_LOGITS_LAST},
        {.ids = b_ids + 3, .n = 5, .pos = 3, .blocks = qb.blocks, .n_absorbed = 0, .logits = FR_LOGITS_ALL},
    };
    CHECK(fr_forward_step(fwd, st2, 2, got, &err) == FR_OK);
    CHECK(fr_session_eval(sa, a_ids + 10, 1, FR_ATTN_ABSORBED, want, false, &err) == FR_OK);
    CHECK(fr_session_eval(sb, b_ids + 3, 5, FR_ATTN_NAIVE, want + V, true, &err) == FR_OK);
    worst = 0;
    for (int64_t i = 0; i < 6 * V; i++) worst = fmax(worst, fabs(got[i] - want[i]));
    CHECK_MSG(worst < 1e-4, "step 2: %g", worst);
out:
    free(got), free(want), free(json);
    if (pool) fr_kv_seq_free(pool, &qa), fr_kv_seq_free(pool, &qb);
    fr_session_free(sa), fr_session_free(sb);
    fr_forward_free(fwd);
    fr_kv_pool_free(pool);
    fr_model_free(m);
}

int main(void) {
    test_config();
    fr_backend *be = NULL;
    fr_error err = {0};
    if (fr_cpu_backend_create(2, &be, &err)) {
        fprintf(stderr, "cpu backend: %s\n", err.msg);
        return 1;
    }
    test_layernorm_rope(be);
    test_select(be);
    test_sparse_mla(be);
    test_batched(be);
    fr_backend_destroy(be);
    return check_report("test_dsa");
}
