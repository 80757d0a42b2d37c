/* cmd_run.c - `frontier run` (generate ids) and `frontier logits` (the conformance
 * interface: float32 logits for every position, prefill then step-by-step decode). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "engine/sampler.h"
#include "model/forward.h"
#include "model/quantize.h"
#include "prompt.h"

typedef struct {
    const char *dir, *ids_arg, *out;
    const char *device; /* --device cpu|cuda|cuda:N */
    const char *prompt; /* -p TEXT: encoded with the checkpoint's tokenizer; output is text */
    bool chat;          /* --chat: the prompt is one user message through the chat template */
    int64_t n_predict, threads, decode_from;
    bool has_decode_from;
    bool quantize_experts; /* --quantize-experts mxfp4 */
    bool no_mmap;          /* --no-mmap: read the weights into memory (2 MiB pages) */
    fr_kv_dtype kv_dtype;  /* --kv-cache-dtype */
    fr_sampler_params sp;
} run_opts;

/* --quantize-experts FORMAT: mxfp4 is the one format converted at load time. */
static fr_status parse_quantize(const char *v, run_opts *o, fr_error *err) {
    if (strcmp(v, "mxfp4") != 0)
        return fr_fail(err, FR_ERR_INVALID, "--quantize-experts \"%s\" is not supported (supported: mxfp4)", v);
    o->quantize_experts = true;
    return FR_OK;
}

/* Parse options shared by run and logits. Returns FR_OK or sets err. */
static fr_status parse(int argc, char **argv, bool logits, run_opts *o, fr_error *err) {
    memset(o, 0, sizeof *o);
    o->n_predict = 64;
    o->sp = (fr_sampler_params){.temperature = 0.0f, .top_k = 0, .top_p = 1.0f, .min_p = 0.0f, .seed = 0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        fr_status rc = FR_OK;
        int64_t k;
        if (a[0] != '-') {
            if (o->dir) return fr_fail(err, FR_ERR_INVALID, "unexpected argument \"%s\"", a);
            o->dir = a;
            continue;
        }
#define VAL() if (!(v = fr_arg_value(argc, argv, &i, err))) return err->code
        if (!strcmp(a, "--ids")) { VAL(); o->ids_arg = v; }
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) { VAL(); rc = fr_arg_i64(a, v, 1, 1024, &o->threads, err); }
        else if (!strcmp(a, "--quantize-experts")) { VAL(); rc = parse_quantize(v, o, err); }
        else if (!strcmp(a, "--no-mmap")) o->no_mmap = true;
        else if (!strcmp(a, "--device")) { VAL(); rc = fr_arg_device(v, err); o->device = v; }
        else if (!strcmp(a, "--kv-cache-dtype")) { VAL(); rc = fr_kv_dtype_parse(v, &o->kv_dtype, err); }
        else if (logits && !strcmp(a, "--out")) { VAL(); o->out = v; }
        else if (logits && !strcmp(a, "--decode-from")) { VAL(); rc = fr_arg_i64(a, v, 0, INT32_MAX, &o->decode_from, err); o->has_decode_from = true; }
        else if (!logits && (!strcmp(a, "-p") || !strcmp(a, "--prompt"))) { VAL(); o->prompt = v; }
        else if (!logits && !strcmp(a, "--chat")) o->chat = true;
        else if (!logits && !strcmp(a, "-n")) { VAL(); rc = fr_arg_i64(a, v, 0, 1 << 24, &o->n_predict, err); }
        else if (!logits && !strcmp(a, "--temp")) { VAL(); rc = fr_arg_f32(a, v, 0.0f, 100.0f, &o->sp.temperature, err); }
        else if (!logits && !strcmp(a, "--top-k")) { VAL(); rc = fr_arg_i64(a, v, 0, INT32_MAX, &k, err); o->sp.top_k = (int)k; }
        else if (!logits && !strcmp(a, "--top-p")) { VAL(); rc = fr_arg_f32(a, v, 1e-6f, 1.0f, &o->sp.top_p, err); }
        else if (!logits && !strcmp(a, "--min-p")) { VAL(); rc = fr_arg_f32(a, v, 0.0f, 1.0f, &o->sp.min_p, err); }
        else if (!logits && !strcmp(a, "--seed")) { VAL(); rc = fr_arg_u64(a, v, &o->sp.seed, err); }
        else return fr_fail(err, FR_ERR_INVALID, "unknown option \"%s\"", a);
#undef VAL
        if (rc) return rc;
    }
    if (!o->dir) return fr_fail(err, FR_ERR_INVALID, "missing the checkpoint directory");
    if (!o->ids_arg == !o->prompt)
        return fr_fail(err, FR_ERR_INVALID, logits ? "missing --ids" : "give the prompt as --ids 1,2,3 or as -p TEXT (not both)");
    if (o->chat && !o->prompt) return fr_fail(err, FR_ERR_INVALID, "--chat needs a text prompt (-p TEXT)");
    if (logits && !o->out) return fr_fail(err, FR_ERR_INVALID, "missing --out FILE");
    return FR_OK;
}

typedef struct {
    fr_model *model;
    fr_backend *be;
    fr_session *sess;
    fr_tokenizer *tok; /* only for text prompts */
    int32_t *ids;
    int64_t n_ids;
} run_ctx;

static void ctx_free(run_ctx *c) {
    fr_session_free(c->sess);
    fr_model_free(c->model);
    fr_backend_destroy(c->be);
    fr_tokenizer_free(c->tok);
    free(c->ids);
}

static fr_status setup(const run_opts *o, int64_t extra_ctx, run_ctx *c, fr_error *err) {
    memset(c, 0, sizeof *c);
    fr_status rc;
    if (o->prompt) {
        if ((rc = fr_tokenizer_load(o->dir, &c->tok, err))) return rc;
        rc = fr_prompt_encode(o->dir, c->tok, o->prompt, o->chat, &c->ids, &c->n_ids, err);
    } else {
        rc = fr_arg_ids(o->ids_arg, &c->ids, &c->n_ids, err);
    }
    if (rc) return rc;
    if ((rc = fr_backend_open(o->device, (int)o->threads, &c->be, err))) return rc;
    if ((rc = fr_model_load_how(o->dir, o->no_mmap ? FR_ST_READ : FR_ST_MAP, &c->model, err))) return rc;
    if (o->quantize_experts) {
        double t0 = fr_now_s();
        if ((rc = fr_model_quantize_experts(c->model, FR_QFMT_MXFP4, err))) return rc;
        fprintf(stderr, "routed experts quantized to MXFP4 at load in %.2f s\n", fr_now_s() - t0);
    }
    for (int64_t i = 0; i < c->n_ids; i++)
        if (c->ids[i] >= c->model->cfg.vocab_size)
            return fr_fail(err, FR_ERR_INVALID, "token id %d (position %lld) is outside the vocabulary [0, %lld)",
                           c->ids[i], (long long)i, (long long)c->model->cfg.vocab_size);
    const fr_session_opts so = {.max_ctx = c->n_ids + extra_ctx, .kv_dtype = o->kv_dtype};
    return fr_session_create_opts(c->model, c->be, &so, &c->sess, err);
}

int fr_cmd_logits(int argc, char **argv) {
    run_opts o;
    fr_error err = {0};
    if (argc < 2) return fprintf(stderr, "usage: frontier logits DIR --ids 1,2,3 [--decode-from K] --out FILE [-t THREADS] [--device cpu|cuda[:N]] [--quantize-experts mxfp4] [--kv-cache-dtype auto|fp8] [--no-mmap]\n"), 2;
    if (parse(argc, argv, true, &o, &err)) return fr_cli_error("logits", &err), 2;
    run_ctx c;
    fr_status rc = setup(&o, 0, &c, &err);
    FILE *f = NULL;
    float *logits = NULL;
    if (rc) goto out;
    const int64_t n = c.n_ids, V = c.model->cfg.vocab_size;
    const int64_t K = o.has_decode_from ? o.decode_from : n;
    if (K < 1 || K > n) {
        rc = fr_fail(&err, FR_ERR_INVALID, "--decode-from %lld is outside [1, %lld] (the number of ids)", (long long)K,
                     (long long)n);
        goto out;
    }
    logits = malloc((size_t)(n * V) * sizeof *logits);
    if (!logits) {
        rc = fr_fail(&err, FR_ERR_NOMEM, "out of memory for %lld x %lld logits", (long long)n, (long long)V);
        goto out;
    }
    /* positions [0, K) in one prefill, then one token at a time through the cache */
    if ((rc = fr_session_eval(c.sess, c.ids, K, FR_ATTN_AUTO, logits, true, &err))) goto out;
    for (int64_t t = K; t < n; t++)
        if ((rc = fr_session_eval(c.sess, c.ids + t, 1, FR_ATTN_AUTO, logits + t * V, false, &err))) goto out;
    f = fopen(o.out, "wb");
    if (!f) {
        rc = fr_fail(&err, FR_ERR_IO, "cannot write %s", o.out);
        goto out;
    }
    /* float32 little-endian: the in-memory layout on every host we build for (x86-64, arm64) */
    if (fwrite(logits, sizeof *logits, (size_t)(n * V), f) != (size_t)(n * V) || fflush(f) != 0)
        rc = fr_fail(&err, FR_ERR_IO, "short write to %s", o.out);
out:
    if (f && fclose(f) != 0 && !rc) rc = fr_fail(&err, FR_ERR_IO, "close %s failed", o.out);
    free(logits);
    ctx_free(&c);
    return rc ? fr_cli_error("logits", &err) : 0;
}

static bool is_eos(const fr_config *cfg, int32_t id) {
    for (int i = 0; i < cfg->n_eos; i++)
        if (cfg->eos_token_ids[i] == id) return true;
    return false;
}

int fr_cmd_run(int argc, char **argv) {
    run_opts o;
    fr_error err = {0};
    if (argc < 2)
        return fprintf(stderr, "usage: frontier run DIR (--ids 1,2,3 | -p TEXT [--chat]) [-n N] [--temp T] [--top-k K] [--top-p P] [--min-p M] [--seed S] [-t THREADS] [--device cpu|cuda[:N]] [--quantize-experts mxfp4] [--kv-cache-dtype auto|fp8] [--no-mmap]\n"), 2;
    if (parse(argc, argv, false, &o, &err)) return fr_cli_error("run", &err), 2;
    run_ctx c;
    fr_sampler smp = {0};
    float *logits = NULL;
    fr_detok *detok = NULL;
    fr_tok_text piece = {0};
    fr_status rc = setup(&o, o.n_predict, &c, &err);
    if (rc) goto out;
    /* Text prompts stream text: special tokens (EOS, turn markers) are left out. */
    if (c.tok && (rc = fr_detok_create(c.tok, FR_TOK_SKIP_SPECIAL | FR_TOK_LOSSY, &detok, &err))) goto out;
    const int64_t V = c.model->cfg.vocab_size;
    if ((rc = fr_sampler_init(&smp, &o.sp, V, &err))) goto out;
    logits = malloc((size_t)V * sizeof *logits);
    if (!logits) {
        rc = fr_fail(&err, FR_ERR_NOMEM, "out of memory");
        goto out;
    }
    /* greedy: the backend picks the id (on a GPU only the id comes back), the sampler's argmax */
    const bool greedy = o.sp.temperature == 0.0f || o.sp.top_k == 1;
    int32_t next = 0;
    double t0 = fr_now_s();
    rc = greedy ? fr_session_eval_greedy(c.sess, c.ids, c.n_ids, FR_ATTN_AUTO, &next, &err)
                : fr_session_eval(c.sess, c.ids, c.n_ids, FR_ATTN_AUTO, logits, false, &err);
    if (rc) goto out;
    double t1 = fr_now_s();
    int64_t produced = 0;
    for (; produced < o.n_predict; produced++) {
        int32_t id = greedy ? next : fr_sampler_sample(&smp, logits);
        if (detok) {
            piece.len = 0;
            if ((rc = fr_detok_push(detok, id, &piece, &err))) goto out;
            fwrite(piece.data, 1, piece.len, stdout);
        } else {
            printf(produced ? " %d" : "%d", id);
        }
        fflush(stdout);
        if (is_eos(&c.model->cfg, id)) {
            produced++;
            break;
        }
        if (produced + 1 < o.n_predict &&
            (rc = greedy ? fr_session_eval_greedy(c.sess, &id, 1, FR_ATTN_AUTO, &next, &err)
                         : fr_session_eval(c.sess, &id, 1, FR_ATTN_AUTO, logits, false, &err)))
            goto out;
    }
    double t2 = fr_now_s();
    if (detok) {
        piece.len = 0;
        if ((rc = fr_detok_finish(detok, &piece, &err))) goto out;
        fwrite(piece.data, 1, piece.len, stdout);
    }
    printf("\n");
    fflush(stdout);
    fprintf(stderr, "prefill: %lld tokens in %.3f s (%.1f tok/s); decode: %lld tokens in %.3f s (%.2f tok/s)\n",
            (long long)c.n_ids, t1 - t0, (double)c.n_ids / (t1 - t0), (long long)produced, t2 - t1,
            produced > 1 ? (double)(produced - 1) / (t2 - t1) : 0.0);
out:
    fr_detok_destroy(detok);
    fr_tok_text_release(&piece);
    fr_sampler_release(&smp);
    free(logits);
    ctx_free(&c);
    return rc ? fr_cli_error("run", &err) : 0;
}
