/* cmd_bench_serve.c - `frontier bench-serve`: load benchmark of an OpenAI-compatible server
 * (frontier serve, vLLM, SGLang, llama.cpp, ...) with the metrics of `vllm bench serve`.
 *
 * For each concurrency level it sends num_prompts streaming requests to
 * POST {URL}/v1/completions, keeping `concurrency` of them in flight, each a prompt of
 * random token ids with max_tokens = output length, ignore_eos, temperature 0 and
 * stream_options.include_usage. Everything runs in one thread on the libcurl multi
 * interface; the SSE stream of each request is parsed as bytes arrive (events may be
 * split anywhere), and each chunk is timestamped when its bytes are handed to us.
 *
 * Before measuring: wait (bounded) for GET /health to answer 200, find the model name in
 * GET /v1/models unless --model gives it, and send one test request (longest prompt,
 * max_tokens 1) so a misconfiguration is one clear error instead of a table of failures.
 * Each level draws fresh prompts from one seeded generator, so a level never reuses an
 * earlier level's prefix cache.
 *
 * Prompt ids differ from vLLM's `random` dataset on purpose: vLLM builds runs of
 * consecutive ids and re-tokenizes text; we send ids drawn independently and uniformly
 * from the vocabulary minus special/added ids, so the prompt length is exact. */
#include <curl/curl.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "args.h"
#include "bench_serve_report.h"

#define FR_BS_MAX_LEVELS 32
#define FR_BS_MAX_CONCURRENCY 1024
#define FR_BS_MAX_PROMPTS 100000
#define FR_BS_MAX_LEN (1 << 20)
#define FR_BS_MAX_LEVEL_BODY_BYTES ((size_t)2 << 30) /* request bodies of one level, all in memory */
#define FR_BS_MAX_SSE_LINE ((size_t)4 << 20)          /* one SSE line / event */
#define FR_BS_MAX_ERR_BODY ((size_t)64 << 10)         /* kept of a non-200 body */
#define FR_BS_MAX_FILE ((size_t)256 << 20)            /* tokenizer files */
#define FR_BS_MAX_KEY 1024

static const char *CMD = "bench-serve";

/* ---------------------------------------------------------------- growable buffer */

typedef struct {
    char *p;
    size_t len, cap;
} fr_bs_buf;

/* Append n bytes, keeping a NUL after them; false when out of memory or over limit. */
static bool buf_add(fr_bs_buf *b, const char *s, size_t n, size_t limit) {
    if (n > limit || b->len > limit - n) return false;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap *= 2;
        char *q = realloc(b->p, cap);
        if (!q) return false;
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
    return true;
}

static bool buf_str(fr_bs_buf *b, const char *s) { return buf_add(b, s, strlen(s), SIZE_MAX / 2); }

static bool buf_i64(fr_bs_buf *b, int64_t v) {
    char t[24];
    int n = snprintf(t, sizeof t, "%lld", (long long)v);
    return buf_add(b, t, (size_t)n, SIZE_MAX / 2);
}

/* s as a JSON string literal (quotes included). */
static bool buf_json_str(fr_bs_buf *b, const char *s) {
    if (!buf_add(b, "\"", 1, SIZE_MAX / 2)) return false;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char esc[8];
        if (c == '"' || c == '\\') snprintf(esc, sizeof esc, "\\%c", c);
        else if (c < 0x20) snprintf(esc, sizeof esc, "\\u%04x", c);
        else {
            esc[0] = (char)c;
            esc[1] = 0;
        }
        if (!buf_str(b, esc)) return false;
    }
    return buf_add(b, "\"", 1, SIZE_MAX / 2);
}

static void buf_free(fr_bs_buf *b) {
    free(b->p);
    *b = (fr_bs_buf){0};
}

/* ---------------------------------------------------------------- seeded generator */

/* xoshiro256** seeded through splitmix64: fast, reproducible across platforms. */
typedef struct {
    uint64_t s[4];
} fr_bs_rng;

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void rng_seed(fr_bs_rng *r, uint64_t seed) {
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t rng_next(fr_bs_rng *r) {
    uint64_t *s = r->s, out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

/* Uniform in [0, n), n >= 1, without modulo bias. */
static uint64_t rng_below(fr_bs_rng *r, uint64_t n) {
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do x = rng_next(r);
    while (x >= limit);
    return x % n;
}

/* ---------------------------------------------------------------- prompt vocabulary */

static fr_status read_file(const char *path, char **out, size_t *len, fr_error *err) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return fr_fail(err, FR_ERR_IO, "cannot open %s", path);
    fr_bs_buf b = {0};
    char chunk[1 << 16];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (!buf_add(&b, chunk, n, FR_BS_MAX_FILE)) {
            fclose(f);
            buf_free(&b);
            return fr_fail(err, FR_ERR_FORMAT, "%s: larger than %zu MiB or out of memory", path, FR_BS_MAX_FILE >> 20);
        }
    }
    int bad = ferror(f);
    fclose(f);
    if (bad || !b.p) {
        buf_free(&b);
        return fr_fail(err, FR_ERR_IO, "%s: read failed or empty", path);
    }
    *out = b.p;
    *len = b.len;
    return FR_OK;
}

static bool file_exists(const char *path) {
    FILE *f = fopen(path, "rb");
    if (f) fclose(f);
    return f != NULL;
}

/* Mark id as special (when inside [0, n)). */
static void mark(uint8_t *special, int64_t n, double id) {
    if (id >= 0 && id < (double)n) special[(int64_t)id] = 1;
}

/* The ids prompts are drawn from: [0, vocab) minus the tokenizer's added/special tokens,
 * read from DIR/tokenizer.json (or DIR/tiktoken.model) and DIR/tokenizer_config.json. */
static fr_status load_vocab(const char *dir, int32_t **allowed, int64_t *n_allowed, fr_error *err) {
    char path[4096];
    char *text = NULL;
    size_t len = 0;
    cJSON *tok = NULL, *tcfg = NULL;
    uint8_t *special = NULL;
    int64_t vocab = 0;
    fr_status rc = FR_OK;
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    if (file_exists(path)) {
        if ((rc = read_file(path, &text, &len, err))) goto out;
        tok = cJSON_ParseWithLength(text, len);
        free(text);
        text = NULL;
        const cJSON *v = tok ? cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(tok, "model"), "vocab")
                             : NULL;
        if (!cJSON_IsObject(v) && !cJSON_IsArray(v)) {
            rc = fr_fail(err, FR_ERR_FORMAT, "%s: not JSON with a model.vocab", path);
            goto out;
        }
        if (cJSON_IsArray(v)) vocab = cJSON_GetArraySize(v); /* unigram: [[piece, score], ...] */
        const cJSON *e;
        cJSON_ArrayForEach(e, v) if (cJSON_IsNumber(e) && e->valuedouble + 1 > (double)vocab && e->valuedouble < 1e8)
            vocab = (int64_t)e->valuedouble + 1;
        cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(tok, "added_tokens")) {
            const cJSON *id = cJSON_GetObjectItemCaseSensitive(e, "id");
            if (cJSON_IsNumber(id) && id->valuedouble + 1 > (double)vocab && id->valuedouble < 1e8)
                vocab = (int64_t)id->valuedouble + 1;
        }
    } else {
        snprintf(path, sizeof path, "%s/tiktoken.model", dir);
        if ((rc = read_file(path, &text, &len, err))) {
            rc = fr_fail(err, FR_ERR_IO, "--tokenizer: %s has no tokenizer.json or tiktoken.model", dir);
            goto out;
        }
        for (size_t i = 0; i < len; i++) vocab += text[i] == '\n'; /* one "base64 rank" per line */
        if (len && text[len - 1] != '\n') vocab++;
        free(text);
        text = NULL;
    }
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    if (file_exists(path)) {
        if ((rc = read_file(path, &text, &len, err))) goto out;
        tcfg = cJSON_ParseWithLength(text, len);
        free(text);
        text = NULL;
        const cJSON *e;
        cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(tcfg, "added_tokens_decoder")) {
            char *end;
            double id = strtod(e->string ? e->string : "", &end);
            if (e->string && *e->string && !*end && id + 1 > (double)vocab && id < 1e8) vocab = (int64_t)id + 1;
        }
    }
    if (vocab < 2 || vocab > 100000000) {
        rc = fr_fail(err, FR_ERR_FORMAT, "--tokenizer: %s gives a vocabulary of %lld tokens", dir, (long long)vocab);
        goto out;
    }
    special = calloc((size_t)vocab, 1);
    *allowed = malloc((size_t)vocab * sizeof **allowed);
    if (!special || !*allowed) {
        rc = fr_fail(err, FR_ERR_NOMEM, "out of memory for a vocabulary of %lld", (long long)vocab);
        goto out;
    }
    const cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(tok, "added_tokens")) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(e, "id");
        if (cJSON_IsNumber(id)) mark(special, vocab, id->valuedouble);
    }
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(tcfg, "added_tokens_decoder"))
        if (e->string) mark(special, vocab, strtod(e->string, NULL));
    int64_t k = 0;
    for (int64_t i = 0; i < vocab; i++)
        if (!special[i]) (*allowed)[k++] = (int32_t)i;
    *n_allowed = k;
    if (!k) rc = fr_fail(err, FR_ERR_FORMAT, "--tokenizer: %s has no non-special token", dir);
out:
    if (rc) {
        free(*allowed);
        *allowed = NULL;
    }
    free(text);
    free(special);
    cJSON_Delete(tok);
    cJSON_Delete(tcfg);
    return rc;
}

/* ---------------------------------------------------------------- options */

typedef struct {
    char base[2048];     /* server URL without a trailing "/" or "/v1" */
    char model[512];     /* served model name ("" = ask /v1/models) */
    const char *api_key;
    int64_t input_len, output_len;
    int64_t levels[FR_BS_MAX_LEVELS];
    int n_levels;
    int64_t num_prompts; /* 0: per level max(2 * concurrency, 8) */
    double range_ratio;
    uint64_t seed;
    int64_t vocab;       /* --vocab, or 0 */
    const char *tokenizer;
    const char *json_path;
    double timeout_s;    /* per request */
    double ready_timeout_s;
} fr_bs_opts;

static int usage(const char *msg) {
    if (msg) return fprintf(stderr, "frontier bench-serve: %s\n", msg), 2;
    fprintf(stderr,
            "usage: frontier bench-serve --url URL (--vocab N | --tokenizer DIR) [--model NAME] [--api-key KEY]\n"
            "         [--input-len 10000] [--output-len 1500] [--concurrency 1,8,64] [--num-prompts N]\n"
            "         [--range-ratio 0] [--seed 0] [--json FILE] [--timeout 1800] [--ready-timeout 600]\n"
            "\n"
            "Streams POST URL/v1/completions with random token-id prompts (ignore_eos, temperature 0),\n"
            "keeping CONCURRENCY requests in flight, for each level of --concurrency. --num-prompts\n"
            "defaults to max(2 x concurrency, 8) per level. Lengths are drawn uniformly from\n"
            "[floor(L(1-R)), ceil(L(1+R))] (at least 1). Prompt ids: [0, --vocab), or the vocabulary of\n"
            "DIR/tokenizer.json (or tiktoken.model) minus its added/special tokens. --timeout bounds each\n"
            "request (seconds); --ready-timeout bounds the wait for GET /health to answer 200.\n"
            "Metrics as `vllm bench serve`: TTFT, TPOT, ITL, E2E latency (mean, median, p99), throughput.\n");
    return 2;
}

static fr_status parse_levels(const char *s, fr_bs_opts *o, fr_error *err) {
    o->n_levels = 0;
    const char *p = s;
    for (;;) {
        const char *q = strchr(p, ',');
        size_t n = q ? (size_t)(q - p) : strlen(p);
        char item[32];
        if (n == 0 || n >= sizeof item) return fr_fail(err, FR_ERR_INVALID, "--concurrency: expected a list like 1,8,64");
        memcpy(item, p, n);
        item[n] = 0;
        if (o->n_levels == FR_BS_MAX_LEVELS)
            return fr_fail(err, FR_ERR_INVALID, "--concurrency: more than %d levels", FR_BS_MAX_LEVELS);
        fr_status rc = fr_arg_i64("--concurrency", item, 1, FR_BS_MAX_CONCURRENCY, &o->levels[o->n_levels], err);
        if (rc) return rc;
        o->n_levels++;
        if (!q) return FR_OK;
        p = q + 1;
    }
}

static fr_status parse_url(const char *s, fr_bs_opts *o, fr_error *err) {
    if (strncmp(s, "http://", 7) && strncmp(s, "https://", 8))
        return fr_fail(err, FR_ERR_INVALID, "--url: \"%s\" is not an http:// or https:// URL", s);
    const char *host = strstr(s, "://") + 3;
    if (!*host || *host == '/' || *host == ':')
        return fr_fail(err, FR_ERR_INVALID, "--url: \"%s\" has no host", s);
    for (const char *c = s; *c; c++)
        if ((unsigned char)*c <= ' ' || *c == '?' || *c == '#')
            return fr_fail(err, FR_ERR_INVALID, "--url: \"%s\" must be a base URL like http://127.0.0.1:8000", s);
    size_t n = strlen(s);
    if (n >= sizeof o->base) return fr_fail(err, FR_ERR_INVALID, "--url: longer than %zu bytes", sizeof o->base - 1);
    memcpy(o->base, s, n + 1);
    /* Accept the client-style base_url "http://host:port/v1" too. */
    while (n && o->base[n - 1] == '/') o->base[--n] = 0;
    if (n >= 3 && !strcmp(o->base + n - 3, "/v1")) o->base[n -= 3] = 0;
    while (n && o->base[n - 1] == '/') o->base[--n] = 0;
    return FR_OK;
}

/* Returns 0 when parsed, else the exit status (2). */
static int parse_opts(int argc, char **argv, fr_bs_opts *o) {
    fr_error err = {0};
    *o = (fr_bs_opts){.input_len = 10000, .output_len = 1500, .levels = {1, 8, 64}, .n_levels = 3,
                   .timeout_s = 1800, .ready_timeout_s = 600};
    bool have_url = false;
    if (argc < 2) return usage(NULL);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        fr_status rc = FR_OK;
        float f;
#define VAL() if (!(v = fr_arg_value(argc, argv, &i, &err))) return usage(err.msg)
        if (!strcmp(a, "--url")) { VAL(); rc = parse_url(v, o, &err); have_url = true; }
        else if (!strcmp(a, "--model")) {
            VAL();
            if (!*v || strlen(v) >= sizeof o->model) return usage("--model: empty or too long");
            snprintf(o->model, sizeof o->model, "%s", v);
        } else if (!strcmp(a, "--api-key")) {
            VAL();
            if (!*v || strlen(v) > FR_BS_MAX_KEY) return usage("--api-key: empty or longer than 1024 bytes");
            o->api_key = v;
        }
        else if (!strcmp(a, "--input-len")) { VAL(); rc = fr_arg_i64(a, v, 1, FR_BS_MAX_LEN, &o->input_len, &err); }
        else if (!strcmp(a, "--output-len")) { VAL(); rc = fr_arg_i64(a, v, 1, FR_BS_MAX_LEN, &o->output_len, &err); }
        else if (!strcmp(a, "--concurrency")) { VAL(); rc = parse_levels(v, o, &err); }
        else if (!strcmp(a, "--num-prompts")) { VAL(); rc = fr_arg_i64(a, v, 1, FR_BS_MAX_PROMPTS, &o->num_prompts, &err); }
        else if (!strcmp(a, "--range-ratio")) {
            VAL();
            rc = fr_arg_f32(a, v, 0.0f, 0.999f, &f, &err);
            o->range_ratio = f;
        } else if (!strcmp(a, "--seed")) { VAL(); rc = fr_arg_u64(a, v, &o->seed, &err); }
        else if (!strcmp(a, "--vocab")) { VAL(); rc = fr_arg_i64(a, v, 1, 100000000, &o->vocab, &err); }
        else if (!strcmp(a, "--tokenizer")) { VAL(); o->tokenizer = v; }
        else if (!strcmp(a, "--json")) { VAL(); o->json_path = v; }
        else if (!strcmp(a, "--timeout")) {
            VAL();
            rc = fr_arg_f32(a, v, 0.001f, 86400.0f, &f, &err);
            o->timeout_s = f;
        } else if (!strcmp(a, "--ready-timeout")) {
            VAL();
            rc = fr_arg_f32(a, v, 0.0f, 86400.0f, &f, &err);
            o->ready_timeout_s = f;
        } else {
            snprintf(err.msg, sizeof err.msg, "unknown option \"%s\"", a);
            return usage(err.msg);
        }
#undef VAL
        if (rc) return usage(err.msg);
    }
    if (!have_url) return usage("--url is required (the server's base URL, e.g. http://127.0.0.1:8000)");
    if (!o->vocab == !o->tokenizer) return usage("give exactly one of --vocab N or --tokenizer DIR (prompt token ids)");
    return 0;
}

/* Length range of --range-ratio: [floor(L(1-r)), ceil(L(1+r))], at least 1. */
static void len_range(int64_t L, double r, int64_t *lo, int64_t *hi) {
    *lo = (int64_t)floor((double)L * (1 - r));
    *hi = (int64_t)ceil((double)L * (1 + r));
    if (*lo < 1) *lo = 1;
    if (*hi < *lo) *hi = *lo;
}

/* ---------------------------------------------------------------- requests */

typedef struct {
    fr_bs_opts o;
    const int32_t *allowed;
    int64_t n_allowed;
    fr_bs_rng rng;
    struct curl_slist *headers; /* JSON + auth headers of every POST */
    CURLM *multi;
} fr_bs_ctx;

/* A request to send: its body, and the result filled while it runs. */
typedef struct {
    char *body; /* owned JSON */
    size_t body_len;
    int64_t itl_cap; /* bound on chunks recorded */
    fr_bs_result *res;
} fr_bs_req;

/* An in-flight transfer. */
typedef struct {
    CURL *h;
    fr_bs_req *req;
    fr_bs_buf line;    /* bytes of the current SSE line */
    fr_bs_buf data;    /* data: lines of the current event */
    fr_bs_buf errbody; /* body of a non-200 answer */
    long status;
    bool failed, done, got_usage, busy;
    int64_t chunks, usage_tokens;
    double last_ts;
    char curl_err[CURL_ERROR_SIZE];
} fr_bs_slot;

static void slot_fail(fr_bs_slot *s, const char *fmt, const char *detail) {
    if (s->failed) return;
    s->failed = true;
    snprintf(s->req->res->error, sizeof s->req->res->error, fmt, detail);
}

/* One complete SSE event's data. */
static void on_event(fr_bs_slot *s, const char *data, double ts) {
    fr_bs_result *r = s->req->res;
    if (!strcmp(data, "[DONE]")) {
        s->done = true;
        return;
    }
    cJSON *j = cJSON_Parse(data);
    if (!j) {
        slot_fail(s, "stream event is not JSON: %.200s", data);
        return;
    }
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
    if (e && !cJSON_IsNull(e)) {
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(e, "message");
        slot_fail(s, "error event in the stream: %.250s", cJSON_IsString(m) ? m->valuestring : "(no message)");
    }
    const cJSON *ch = cJSON_GetObjectItemCaseSensitive(j, "choices");
    if (cJSON_IsArray(ch) && cJSON_GetArraySize(ch) > 0) {
        /* As vLLM: every chunk with choices counts, even with empty text (a special token,
         * or bytes of an unfinished UTF-8 character held back). */
        if (s->chunks == 0) r->ttft = ts - r->st;
        else if (r->n_itl < s->req->itl_cap) r->itl[r->n_itl++] = ts - s->last_ts;
        s->last_ts = ts;
        s->chunks++;
    }
    const cJSON *u = cJSON_GetObjectItemCaseSensitive(j, "usage");
    const cJSON *ct = cJSON_GetObjectItemCaseSensitive(u, "completion_tokens");
    if (cJSON_IsNumber(ct) && ct->valuedouble >= 0 && ct->valuedouble < 1e12) {
        s->got_usage = true;
        s->usage_tokens = (int64_t)ct->valuedouble;
    }
    cJSON_Delete(j);
}

/* One SSE line (without its end of line). */
static void on_line(fr_bs_slot *s, char *p, size_t n, double ts) {
    if (n && p[n - 1] == '\r') p[--n] = 0;
    if (n == 0) { /* blank line: dispatch the event */
        if (s->data.len) on_event(s, s->data.p, ts);
        s->data.len = 0;
        return;
    }
    if (p[0] == ':') return; /* comment (keep-alive ping) */
    char *colon = memchr(p, ':', n);
    size_t name_len = colon ? (size_t)(colon - p) : n;
    if (name_len != 4 || memcmp(p, "data", 4)) return; /* event:, id:, retry: are not used */
    const char *v = colon ? colon + 1 : p + n;
    if (*v == ' ') v++;
    size_t vn = (size_t)(p + n - v);
    if (s->data.len && !buf_add(&s->data, "\n", 1, FR_BS_MAX_SSE_LINE)) slot_fail(s, "%s", "SSE event over 4 MiB");
    if (!buf_add(&s->data, v, vn, FR_BS_MAX_SSE_LINE)) slot_fail(s, "%s", "SSE event over 4 MiB");
}

static size_t on_write(char *p, size_t size, size_t nmemb, void *user) {
    fr_bs_slot *s = user;
    size_t n = size * nmemb;
    double ts = fr_now_s();
    if (!s->status) curl_easy_getinfo(s->h, CURLINFO_RESPONSE_CODE, &s->status);
    if (s->status != 200) {
        size_t keep = FR_BS_MAX_ERR_BODY - s->errbody.len;
        if (keep > n) keep = n;
        if (keep) buf_add(&s->errbody, p, keep, FR_BS_MAX_ERR_BODY);
        return n;
    }
    if (s->failed) return 0; /* abort the transfer */
    size_t i = 0;
    while (i < n) {
        char *nl = memchr(p + i, '\n', n - i);
        size_t seg = nl ? (size_t)(nl - (p + i)) : n - i;
        if (!buf_add(&s->line, p + i, seg, FR_BS_MAX_SSE_LINE)) {
            slot_fail(s, "%s", "SSE line over 4 MiB");
            return 0;
        }
        i += seg;
        if (nl) {
            on_line(s, s->line.p, s->line.len, ts);
            s->line.len = 0;
            i++;
        }
    }
    return s->failed ? 0 : n;
}

/* The server's message from an error body: error.message, message, or the raw text. */
static void error_message(const fr_bs_buf *body, char *out, size_t cap) {
    out[0] = 0;
    if (!body->len) return;
    cJSON *j = cJSON_ParseWithLength(body->p, body->len);
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
    const cJSON *m = cJSON_IsObject(e) ? cJSON_GetObjectItemCaseSensitive(e, "message") : e;
    if (!cJSON_IsString(m)) m = cJSON_GetObjectItemCaseSensitive(j, "message");
    if (cJSON_IsString(m)) snprintf(out, cap, "%s", m->valuestring);
    else snprintf(out, cap, "%.*s", (int)(body->len < 200 ? body->len : 200), body->p);
    cJSON_Delete(j);
    for (char *c = out; *c; c++)
        if (*c == '\n' || *c == '\r') *c = ' ';
}

static fr_status slot_start(fr_bs_ctx *c, fr_bs_slot *s, fr_bs_req *q, fr_error *err) {
    s->req = q;
    s->line.len = s->data.len = s->errbody.len = 0;
    s->status = 0;
    s->failed = s->done = s->got_usage = false;
    s->chunks = s->usage_tokens = 0;
    s->curl_err[0] = 0;
    q->res->itl = malloc((size_t)(q->itl_cap > 0 ? q->itl_cap : 1) * sizeof *q->res->itl);
    if (!q->res->itl) return fr_fail(err, FR_ERR_NOMEM, "out of memory for ITL samples");
    char url[sizeof c->o.base + 32];
    snprintf(url, sizeof url, "%s/v1/completions", c->o.base);
    CURL *h = s->h;
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, c->headers);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, q->body);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)q->body_len);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, s);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, s->curl_err);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)(c->o.timeout_s * 1000));
    q->res->st = fr_now_s();
    CURLMcode mc = curl_multi_add_handle(c->multi, h);
    if (mc) return fr_fail(err, FR_ERR_IO, "curl_multi_add_handle: %s", curl_multi_strerror(mc));
    s->busy = true;
    return FR_OK;
}

/* The transfer of s ended with result cr: settle its request's result. */
static void slot_finish(fr_bs_slot *s, CURLcode cr) {
    fr_bs_result *r = s->req->res;
    /* An event not ended by a blank line when the stream closes is dropped (as SSE says). */
    s->busy = false;
    if (!s->status) curl_easy_getinfo(s->h, CURLINFO_RESPONSE_CODE, &s->status);
    if (s->failed) {
        /* message set already */
    } else if (s->status && s->status != 200) {
        char msg[256];
        error_message(&s->errbody, msg, sizeof msg);
        snprintf(r->error, sizeof r->error, "HTTP %ld: %s", s->status, msg[0] ? msg : "(empty body)");
    } else if (cr != CURLE_OK) {
        snprintf(r->error, sizeof r->error, "%s", s->curl_err[0] ? s->curl_err : curl_easy_strerror(cr));
    } else if (!s->chunks) {
        snprintf(r->error, sizeof r->error, "the stream carried no completion chunk (is SSE streaming supported?)");
    } else if (!s->done) {
        snprintf(r->error, sizeof r->error, "the stream ended without data: [DONE]");
    } else {
        r->ok = true;
        r->latency = s->last_ts - r->st;
        r->output_tokens = s->got_usage ? s->usage_tokens : s->chunks;
    }
    if (!r->ok) r->n_itl = 0;
}

/* Build a request body with a fresh random prompt. */
static fr_status make_request(fr_bs_ctx *c, fr_bs_req *q, int64_t n_in, int64_t max_tokens, fr_error *err) {
    fr_bs_buf b = {0};
    bool ok = buf_str(&b, "{\"model\":") && buf_json_str(&b, c->o.model) && buf_str(&b, ",\"prompt\":[");
    for (int64_t i = 0; ok && i < n_in; i++) {
        if (i) ok = buf_add(&b, ",", 1, SIZE_MAX / 2);
        ok = ok && buf_i64(&b, c->allowed[rng_below(&c->rng, (uint64_t)c->n_allowed)]);
    }
    ok = ok && buf_str(&b, "],\"max_tokens\":") && buf_i64(&b, max_tokens) &&
         buf_str(&b, ",\"temperature\":0,\"ignore_eos\":true,\"stream\":true,"
                     "\"stream_options\":{\"include_usage\":true}}");
    if (!ok) {
        buf_free(&b);
        return fr_fail(err, FR_ERR_NOMEM, "out of memory building a %lld-token prompt", (long long)n_in);
    }
    q->body = b.p;
    q->body_len = b.len;
    q->itl_cap = max_tokens + 64;
    q->res->input_len = n_in;
    q->res->max_tokens = max_tokens;
    return FR_OK;
}

/* Run n requests with at most conc in flight; *duration = first dispatch to last done. */
static fr_status run_requests(fr_bs_ctx *c, fr_bs_req *q, int64_t n, int64_t conc, double *duration, fr_error *err) {
    int64_t n_slots = conc < n ? conc : n;
    fr_bs_slot *slots = calloc((size_t)n_slots, sizeof *slots);
    fr_status rc = FR_OK;
    int64_t next = 0, inflight = 0;
    if (!slots) return fr_fail(err, FR_ERR_NOMEM, "out of memory for %lld transfers", (long long)n_slots);
    for (int64_t i = 0; i < n_slots; i++)
        if (!(slots[i].h = curl_easy_init())) {
            rc = fr_fail(err, FR_ERR_NOMEM, "curl_easy_init failed");
            goto out;
        }
    double t0 = fr_now_s(), t_end = t0;
    for (int64_t i = 0; i < n_slots; i++, next++, inflight++)
        if ((rc = slot_start(c, &slots[i], &q[next], err))) goto out;
    while (inflight > 0) {
        int running = 0;
        CURLMcode mc = curl_multi_perform(c->multi, &running);
        if (mc) {
            rc = fr_fail(err, FR_ERR_IO, "curl_multi_perform: %s", curl_multi_strerror(mc));
            goto out;
        }
        CURLMsg *m;
        int left;
        while ((m = curl_multi_info_read(c->multi, &left))) {
            if (m->msg != CURLMSG_DONE) continue;
            fr_bs_slot *s = NULL;
            for (int64_t i = 0; i < n_slots && !s; i++)
                if (slots[i].busy && slots[i].h == m->easy_handle) s = &slots[i];
            if (!s) continue;
            CURLcode cr = m->data.result;
            curl_multi_remove_handle(c->multi, s->h);
            slot_finish(s, cr);
            t_end = fr_now_s();
            inflight--;
            if (next < n) {
                if ((rc = slot_start(c, s, &q[next], err))) goto out;
                next++;
                inflight++;
            }
        }
        if (inflight > 0 && (mc = curl_multi_poll(c->multi, NULL, 0, 100, NULL))) {
            rc = fr_fail(err, FR_ERR_IO, "curl_multi_poll: %s", curl_multi_strerror(mc));
            goto out;
        }
    }
    *duration = t_end - t0;
out:
    for (int64_t i = 0; i < n_slots; i++) {
        if (slots[i].busy) curl_multi_remove_handle(c->multi, slots[i].h);
        if (slots[i].h) curl_easy_cleanup(slots[i].h);
        buf_free(&slots[i].line);
        buf_free(&slots[i].data);
        buf_free(&slots[i].errbody);
    }
    free(slots);
    return rc;
}

/* ---------------------------------------------------------------- readiness, model name */

/* GET base+path into body; *status = HTTP status (0 when no answer). */
static CURLcode http_get(const fr_bs_ctx *c, const char *path, long timeout_ms, fr_bs_buf *body, long *status,
                         char *curl_err) {
    char url[sizeof c->o.base + 32];
    snprintf(url, sizeof url, "%s%s", c->o.base, path);
    CURL *h = curl_easy_init();
    if (!h) return CURLE_OUT_OF_MEMORY;
    body->len = 0;
    *status = 0;
    curl_err[0] = 0;
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, c->headers);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, curl_err);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, NULL);
    FILE *sink = NULL;
    char *mem = NULL;
    size_t mem_len = 0;
    sink = open_memstream(&mem, &mem_len);
    if (!sink) {
        curl_easy_cleanup(h);
        return CURLE_OUT_OF_MEMORY;
    }
    curl_easy_setopt(h, CURLOPT_WRITEDATA, sink);
    curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)FR_BS_MAX_ERR_BODY * 16);
    CURLcode cr = curl_easy_perform(h);
    fclose(sink);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, status);
    curl_easy_cleanup(h);
    if (mem && !buf_add(body, mem, mem_len, FR_BS_MAX_ERR_BODY * 16) && cr == CURLE_OK) cr = CURLE_OUT_OF_MEMORY;
    free(mem);
    return cr;
}

static fr_status wait_ready(const fr_bs_ctx *c, fr_error *err) {
    double deadline = fr_now_s() + c->o.ready_timeout_s;
    bool said = false;
    fr_bs_buf body = {0};
    char cerr[CURL_ERROR_SIZE], msg[256];
    fr_status rc = FR_OK;
    for (;;) {
        long status;
        CURLcode cr = http_get(c, "/health", 10000, &body, &status, cerr);
        if (cr != CURLE_OK && !status) {
            rc = fr_fail(err, FR_ERR_IO, "cannot reach %s: %s", c->o.base, cerr[0] ? cerr : curl_easy_strerror(cr));
            break;
        }
        if (status == 200 || status == 404) break; /* 404: a server without /health */
        if (status != 503) {
            error_message(&body, msg, sizeof msg);
            rc = fr_fail(err, FR_ERR_IO, "GET %s/health: HTTP %ld: %s", c->o.base, status, msg[0] ? msg : "(empty body)");
            break;
        }
        if (fr_now_s() >= deadline) {
            rc = fr_fail(err, FR_ERR_IO, "%s/health still answers 503 after %.0f s (--ready-timeout)", c->o.base,
                         c->o.ready_timeout_s);
            break;
        }
        if (!said) fprintf(stderr, "frontier bench-serve: waiting for %s/health (server loading)\n", c->o.base);
        said = true;
        struct timespec ts = {0, 250 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    buf_free(&body);
    return rc;
}

static fr_status find_model(fr_bs_ctx *c, fr_error *err) {
    fr_bs_buf body = {0};
    char cerr[CURL_ERROR_SIZE], msg[256];
    long status;
    fr_status rc = FR_OK;
    CURLcode cr = http_get(c, "/v1/models", 30000, &body, &status, cerr);
    if (cr != CURLE_OK && !status) {
        rc = fr_fail(err, FR_ERR_IO, "GET %s/v1/models: %s", c->o.base, cerr[0] ? cerr : curl_easy_strerror(cr));
    } else if (status != 200) {
        error_message(&body, msg, sizeof msg);
        rc = fr_fail(err, FR_ERR_IO, "GET %s/v1/models: HTTP %ld: %s", c->o.base, status, msg[0] ? msg : "(empty body)");
    } else {
        cJSON *j = cJSON_ParseWithLength(body.p ? body.p : "", body.len);
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(
            cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "data"), 0), "id");
        if (cJSON_IsString(id) && *id->valuestring && strlen(id->valuestring) < sizeof c->o.model)
            snprintf(c->o.model, sizeof c->o.model, "%s", id->valuestring);
        else
            rc = fr_fail(err, FR_ERR_FORMAT, "GET %s/v1/models: no model id in the answer (give --model)", c->o.base);
        cJSON_Delete(j);
    }
    buf_free(&body);
    return rc;
}

/* ---------------------------------------------------------------- the command */

/* Headers of every request: a JSON body, no "Expect: 100-continue" round trip, the API key.
 * NULL when out of memory. */
static struct curl_slist *make_headers(const char *api_key) {
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    if (!h || !curl_slist_append(h, "Expect:")) goto fail;
    if (api_key) {
        char auth[FR_BS_MAX_KEY + 32];
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", api_key);
        if (!curl_slist_append(h, auth)) goto fail;
    }
    return h;
fail:
    curl_slist_free_all(h);
    return NULL;
}

static void free_requests(fr_bs_req *q, int64_t n) {
    for (int64_t i = 0; q && i < n; i++) free(q[i].body);
    free(q);
}

static void free_results(fr_bs_result *r, int64_t n) {
    for (int64_t i = 0; r && i < n; i++) free(r[i].itl);
    free(r);
}

/* Prepare one level's requests (bodies and lengths drawn now, before the clock starts). */
static fr_status prepare_level(fr_bs_ctx *c, int64_t n, fr_bs_req **q_out, fr_bs_result **r_out, fr_error *err) {
    int64_t in_lo, in_hi, out_lo, out_hi;
    len_range(c->o.input_len, c->o.range_ratio, &in_lo, &in_hi);
    len_range(c->o.output_len, c->o.range_ratio, &out_lo, &out_hi);
    if ((double)n * (double)in_hi * 12 > (double)FR_BS_MAX_LEVEL_BODY_BYTES)
        return fr_fail(err, FR_ERR_CAPACITY, "%lld prompts of up to %lld tokens exceed the 2 GiB bound on request bodies",
                       (long long)n, (long long)in_hi);
    fr_bs_req *q = calloc((size_t)n, sizeof *q);
    fr_bs_result *r = calloc((size_t)n, sizeof *r);
    if (!q || !r) {
        free(q);
        free(r);
        return fr_fail(err, FR_ERR_NOMEM, "out of memory for %lld requests", (long long)n);
    }
    for (int64_t i = 0; i < n; i++) {
        q[i].res = &r[i];
        int64_t n_in = in_lo + (int64_t)rng_below(&c->rng, (uint64_t)(in_hi - in_lo + 1));
        int64_t n_out = out_lo + (int64_t)rng_below(&c->rng, (uint64_t)(out_hi - out_lo + 1));
        fr_status rc = make_request(c, &q[i], n_in, n_out, err);
        if (rc) {
            free_requests(q, n);
            free_results(r, n);
            return rc;
        }
    }
    *q_out = q;
    *r_out = r;
    return FR_OK;
}

/* One request with the longest prompt and max_tokens 1: fails early on a bad setup. */
static fr_status test_request(fr_bs_ctx *c, fr_error *err) {
    int64_t in_lo, in_hi;
    len_range(c->o.input_len, c->o.range_ratio, &in_lo, &in_hi);
    fr_bs_result r = {0};
    fr_bs_req q = {.res = &r};
    double d;
    fr_status rc = make_request(c, &q, in_hi, 1, err);
    if (!rc) rc = run_requests(c, &q, 1, 1, &d, err);
    if (!rc && !r.ok) rc = fr_fail(err, FR_ERR_IO, "test request (%lld prompt tokens) failed: %s", (long long)in_hi, r.error);
    free(q.body);
    free(r.itl);
    return rc;
}

int fr_cmd_bench_serve(int argc, char **argv) {
    fr_bs_ctx c = {0};
    int code = parse_opts(argc, argv, &c.o);
    if (code) return code;
    fr_error err = {0};
    fr_status rc = FR_OK;
    int32_t *allowed = NULL;
    fr_bs_level lv[FR_BS_MAX_LEVELS];
    fr_bs_result *res[FR_BS_MAX_LEVELS] = {0};
    int64_t n_res[FR_BS_MAX_LEVELS] = {0};
    fr_bs_req *reqs = NULL;
    int done_levels = 0;
    memset(lv, 0, sizeof lv);

    if (c.o.tokenizer) {
        if ((rc = load_vocab(c.o.tokenizer, &allowed, &c.n_allowed, &err))) return fr_cli_error(CMD, &err);
    } else {
        allowed = malloc((size_t)c.o.vocab * sizeof *allowed);
        if (!allowed) return fprintf(stderr, "frontier bench-serve: out of memory\n"), 1;
        for (int64_t i = 0; i < c.o.vocab; i++) allowed[i] = (int32_t)i;
        c.n_allowed = c.o.vocab;
    }
    c.allowed = allowed;
    rng_seed(&c.rng, c.o.seed);

    signal(SIGPIPE, SIG_IGN); /* a server that hangs up mid-request must not kill the client */
    if (curl_global_init(CURL_GLOBAL_DEFAULT)) {
        free(allowed);
        return fprintf(stderr, "frontier bench-serve: curl_global_init failed\n"), 1;
    }
    c.multi = curl_multi_init();
    c.headers = make_headers(c.o.api_key);
    if (!c.multi || !c.headers) {
        rc = fr_fail(&err, FR_ERR_NOMEM, "libcurl initialisation failed");
        goto out;
    }
    if ((rc = wait_ready(&c, &err))) goto out;
    if (!c.o.model[0] && (rc = find_model(&c, &err))) goto out;
    if ((rc = test_request(&c, &err))) goto out;

    int64_t base = c.o.levels[0];
    for (int i = 0; i < c.o.n_levels; i++)
        if (c.o.levels[i] < base) base = c.o.levels[i];
    printf("## frontier bench-serve: %s, model %s, /v1/completions\n", c.o.base, c.o.model);
    printf("\ninput %lld, output %lld tokens (range ratio %.3g), seed %llu, prompt ids from %lld tokens\n",
           (long long)c.o.input_len, (long long)c.o.output_len, c.o.range_ratio, (unsigned long long)c.o.seed,
           (long long)c.n_allowed);
    fflush(stdout);
    for (int i = 0; i < c.o.n_levels; i++) {
        int64_t conc = c.o.levels[i];
        int64_t n = c.o.num_prompts ? c.o.num_prompts : (2 * conc > 8 ? 2 * conc : 8);
        double duration = 0;
        if ((rc = prepare_level(&c, n, &reqs, &res[i], &err))) goto out;
        n_res[i] = n;
        fprintf(stderr, "frontier bench-serve: concurrency %lld, %lld requests\n", (long long)conc, (long long)n);
        rc = run_requests(&c, reqs, n, conc, &duration, &err);
        free_requests(reqs, n);
        reqs = NULL;
        if (rc) goto out;
        lv[i].concurrency = conc;
        if ((rc = fr_bs_level_compute(&lv[i], res[i], n, duration, &err))) goto out;
        done_levels = i + 1;
        const fr_bs_level *b = NULL;
        for (int k = 0; k <= i; k++)
            if (lv[k].concurrency == base) b = &lv[k];
        lv[i].speedup = b && b->output_throughput > 0 ? lv[i].output_throughput / b->output_throughput : 0;
        fr_bs_print_level(stdout, &lv[i], c.o.input_len, c.o.output_len);
        fflush(stdout);
        if (!lv[i].completed) {
            rc = fr_fail(&err, FR_ERR_IO, "every request at concurrency %lld failed: %s", (long long)conc,
                         lv[i].first_error);
            goto out;
        }
        if (lv[i].failed)
            fprintf(stderr, "frontier bench-serve: %lld of %lld requests failed at concurrency %lld; first: %s\n",
                    (long long)lv[i].failed, (long long)n, (long long)conc, lv[i].first_error);
    }
    /* The base level may come later in the list than others: settle every speedup now. */
    for (int i = 0; i < done_levels; i++)
        for (int k = 0; k < done_levels; k++)
            if (lv[k].concurrency == base && lv[k].output_throughput > 0)
                lv[i].speedup = lv[i].output_throughput / lv[k].output_throughput;
    fr_bs_print_summary(stdout, lv, done_levels, base);
    fflush(stdout);
    if (c.o.json_path) {
        fr_bs_run_info info = {.url = c.o.base, .model = c.o.model, .input_len = c.o.input_len,
                            .output_len = c.o.output_len, .range_ratio = c.o.range_ratio, .seed = c.o.seed,
                            .vocab_allowed = c.n_allowed};
        rc = fr_bs_write_json(c.o.json_path, &info, lv, done_levels, res, n_res, base, &err);
    }
out:
    for (int i = 0; i < FR_BS_MAX_LEVELS; i++) free_results(res[i], n_res[i]);
    curl_slist_free_all(c.headers);
    if (c.multi) curl_multi_cleanup(c.multi);
    curl_global_cleanup();
    free(allowed);
    if (rc) {
        fflush(stdout);
        return fr_cli_error(CMD, &err);
    }
    return 0;
}
