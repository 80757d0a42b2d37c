/* request.c - request body validation (see request.h). */
#include "request.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* Bound on max_tokens as read from JSON: far above any context (the engine clamps to what
 * fits), and exactly representable, so the double -> int64 conversion cannot overflow. */
#define MAX_TOKENS_LIMIT 1e15

/* Fields each endpoint understands (or knowingly ignores without a warning). */
static const char *const chat_fields[] = {
    "model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens", "temperature",
    "top_p", "top_k", "min_p", "seed", "stop", "stop_token_ids", "logprobs", "top_logprobs",
    "presence_penalty", "frequency_penalty", "ignore_eos", "n", "tools", "tool_choice", "parallel_tool_calls",
    "chat_template_kwargs", "extra_body", "add_generation_prompt", "response_format", "user",
    "reasoning_effort", NULL};
static const char *const completion_fields[] = {
    "model", "prompt", "stream", "stream_options", "max_tokens", "temperature", "top_p", "top_k", "min_p",
    "seed", "stop", "stop_token_ids", "logprobs", "presence_penalty", "frequency_penalty", "ignore_eos", "n",
    "best_of", "echo", "suffix", "user", "extra_body", NULL};

typedef struct {
    const cJSON *body, *extra; /* extra: the "extra_body" object or NULL */
    const char **param;
    fr_error *err;
} ctx;

static fr_status bad(ctx *c, const char *param, const char *fmt, const char *detail) {
    *c->param = param;
    return fr_fail(c->err, FR_ERR_INVALID, fmt, param, detail);
}

/* The field `name` (top level first, then extra_body), NULL when absent or null. */
static const cJSON *field(ctx *c, const char *name) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(c->body, name);
    if (!v && c->extra) v = cJSON_GetObjectItemCaseSensitive(c->extra, name);
    return v && !cJSON_IsNull(v) ? v : NULL;
}

static fr_status get_bool(ctx *c, const char *name, bool *out) {
    const cJSON *v = field(c, name);
    if (!v) return FR_OK;
    if (!cJSON_IsBool(v)) return bad(c, name, "'%s' must be a boolean%s", "");
    *out = cJSON_IsTrue(v);
    return FR_OK;
}

/* A number in [lo, hi]; *set tells whether it was given. */
static fr_status get_num(ctx *c, const char *name, double lo, double hi, bool integer, double *out, bool *set) {
    const cJSON *v = field(c, name);
    if (set) *set = v != NULL;
    if (!v) return FR_OK;
    if (!cJSON_IsNumber(v)) return bad(c, name, "'%s' must be a number%s", "");
    double x = v->valuedouble;
    if (integer && x != floor(x)) return bad(c, name, "'%s' must be an integer%s", "");
    if (!(x >= lo && x <= hi)) {
        char range[96];
        if (hi > 1e15) snprintf(range, sizeof range, " >= %g (got %g)", lo, x); /* "at most 2^63" says nothing */
        else snprintf(range, sizeof range, " in [%g, %g] (got %g)", lo, hi, x);
        return bad(c, name, "'%s' must be%s", range);
    }
    *out = x;
    return FR_OK;
}

static fr_status get_f32(ctx *c, const char *name, double lo, double hi, float *out) {
    double x = *out;
    fr_status rc = get_num(c, name, lo, hi, false, &x, NULL);
    *out = (float)x;
    return rc;
}

static fr_status parse_stop(ctx *c, srv_request *r) {
    const cJSON *v = field(c, "stop");
    if (!v) return FR_OK;
    if (cJSON_IsString(v)) {
        r->stop[r->n_stop++] = v->valuestring;
        return FR_OK;
    }
    if (!cJSON_IsArray(v)) return bad(c, "stop", "'%s' must be a string or a list of strings%s", "");
    if (cJSON_GetArraySize(v) > SRV_MAX_STOP) return bad(c, "stop", "'%s' allows at most 16 strings%s", "");
    const cJSON *s;
    cJSON_ArrayForEach(s, v) {
        if (!cJSON_IsString(s)) return bad(c, "stop", "'%s' must be a string or a list of strings%s", "");
        r->stop[r->n_stop++] = s->valuestring;
    }
    for (int i = 0; i < r->n_stop; i++)
        if (strlen(r->stop[i]) > SRV_MAX_STOP_BYTES) return bad(c, "stop", "'%s' strings are limited to 1024 bytes%s", "");
    return FR_OK;
}

static fr_status parse_stop_ids(ctx *c, srv_request *r) {
    const cJSON *v = field(c, "stop_token_ids"), *e;
    if (!v) return FR_OK;
    if (!cJSON_IsArray(v)) return bad(c, "stop_token_ids", "'%s' must be a list of token ids%s", "");
    if (cJSON_GetArraySize(v) > FR_MAX_STOP_IDS) return bad(c, "stop_token_ids", "'%s' allows at most 16 ids%s", "");
    cJSON_ArrayForEach(e, v) {
        if (!cJSON_IsNumber(e) || e->valuedouble != floor(e->valuedouble) || e->valuedouble < 0 ||
            e->valuedouble > INT32_MAX)
            return bad(c, "stop_token_ids", "'%s' must be a list of non-negative integer token ids%s", "");
        r->stop_token_ids[r->n_stop_token_ids++] = (int32_t)e->valuedouble;
    }
    return FR_OK;
}

static fr_status parse_stream_options(ctx *c, srv_request *r) {
    const cJSON *v = field(c, "stream_options");
    if (!v) return FR_OK;
    /* Unknown members are ignored: rejecting them broke clients elsewhere (SERVING.md 3.2). */
    if (!cJSON_IsObject(v)) return bad(c, "stream_options", "'%s' must be an object%s", "");
    const cJSON *u = cJSON_GetObjectItemCaseSensitive(v, "include_usage");
    const cJSON *cu = cJSON_GetObjectItemCaseSensitive(v, "continuous_usage_stats");
    if ((u && !cJSON_IsNull(u) && !cJSON_IsBool(u)) || (cu && !cJSON_IsNull(cu) && !cJSON_IsBool(cu)))
        return bad(c, "stream_options", "'%s' flags must be booleans%s", "");
    r->include_usage = cJSON_IsTrue(u);
    r->continuous_usage = cJSON_IsTrue(cu);
    return FR_OK;
}

static fr_status parse_response_format(ctx *c) {
    const cJSON *v = field(c, "response_format");
    if (!v) return FR_OK;
    const cJSON *t = cJSON_IsObject(v) ? cJSON_GetObjectItemCaseSensitive(v, "type") : NULL;
    if (!cJSON_IsString(t))
        return bad(c, "response_format", "'%s' must be an object with a string 'type'%s", "");
    if (!strcmp(t->valuestring, "text") || !strcmp(t->valuestring, "json_object")) return FR_OK;
    if (!strcmp(t->valuestring, "json_schema")) {
        const cJSON *js = cJSON_GetObjectItemCaseSensitive(v, "json_schema");
        if (!cJSON_IsObject(js)) return bad(c, "response_format", "'%s' of type json_schema needs a 'json_schema' object%s", "");
        const cJSON *schema = cJSON_GetObjectItemCaseSensitive(js, "schema");
        if (schema && !cJSON_IsNull(schema) && !cJSON_IsObject(schema) && !cJSON_IsBool(schema))
            return bad(c, "response_format", "'%s' json_schema.schema must be an object%s", "");
        return FR_OK;
    }
    return bad(c, "response_format", "'%s' type must be text, json_object or json_schema%s", "");
}

/* chat_template_kwargs from the top level and from extra_body, merged (top level wins). */
static fr_status parse_kwargs(ctx *c, srv_request *r) {
    const cJSON *srcs[2] = {cJSON_GetObjectItemCaseSensitive(c->body, "chat_template_kwargs"),
                            c->extra ? cJSON_GetObjectItemCaseSensitive(c->extra, "chat_template_kwargs") : NULL};
    for (int s = 0; s < 2; s++) {
        const cJSON *k = srcs[s], *e;
        if (!k || cJSON_IsNull(k)) continue;
        if (!cJSON_IsObject(k)) return bad(c, "chat_template_kwargs", "'%s' must be an object%s", "");
        if (!r->kwargs && !(r->kwargs = cJSON_CreateObject())) return fr_fail(c->err, FR_ERR_NOMEM, "out of memory");
        cJSON_ArrayForEach(e, k) {
            if (cJSON_GetObjectItemCaseSensitive(r->kwargs, e->string)) continue;
            cJSON *dup = cJSON_Duplicate(e, true);
            if (!dup) return fr_fail(c->err, FR_ERR_NOMEM, "out of memory");
            cJSON_AddItemToObject(r->kwargs, e->string, dup);
        }
    }
    /* GLM-5-style templates read reasoning_effort as a variable (SERVING.md 2). */
    const cJSON *eff = field(c, "reasoning_effort");
    if (eff) {
        if (!cJSON_IsString(eff)) return bad(c, "reasoning_effort", "'%s' must be a string%s", "");
        if (!r->kwargs && !(r->kwargs = cJSON_CreateObject())) return fr_fail(c->err, FR_ERR_NOMEM, "out of memory");
        if (!cJSON_GetObjectItemCaseSensitive(r->kwargs, "reasoning_effort") &&
            !cJSON_AddStringToObject(r->kwargs, "reasoning_effort", eff->valuestring))
            return fr_fail(c->err, FR_ERR_NOMEM, "out of memory");
    }
    return FR_OK;
}

static fr_status parse_chat(ctx *c, srv_request *r) {
    const cJSON *m = field(c, "messages"), *e;
    if (!m) return bad(c, "messages", "'%s' is required%s", "");
    if (!cJSON_IsArray(m) || cJSON_GetArraySize(m) == 0)
        return bad(c, "messages", "'%s' must be a non-empty list of messages%s", "");
    cJSON_ArrayForEach(e, m) {
        const cJSON *role = cJSON_IsObject(e) ? cJSON_GetObjectItemCaseSensitive(e, "role") : NULL;
        if (!cJSON_IsString(role)) return bad(c, "messages", "'%s' entries must be objects with a string 'role'%s", "");
    }
    r->messages = m;
    const cJSON *t = field(c, "tools");
    if (t && !cJSON_IsArray(t)) return bad(c, "tools", "'%s' must be a list%s", "");
    r->tools = t && cJSON_GetArraySize(t) > 0 ? t : NULL;
    r->add_generation_prompt = true;
    fr_status rc;
    if ((rc = get_bool(c, "add_generation_prompt", &r->add_generation_prompt))) return rc;
    if ((rc = get_bool(c, "logprobs", &r->logprobs))) return rc;
    bool top_set;
    double top = 0;
    if ((rc = get_num(c, "top_logprobs", 0, FR_MAX_TOP_LOGPROBS, true, &top, &top_set))) return rc;
    if (top_set && !r->logprobs) return bad(c, "top_logprobs", "'%s' needs 'logprobs': true%s", "");
    r->top_logprobs = (int)top;
    double mt;
    bool set1, set2;
    if ((rc = get_num(c, "max_completion_tokens", 1, MAX_TOKENS_LIMIT, true, &mt, &set1))) return rc;
    if (set1) r->max_tokens = (int64_t)mt;
    if ((rc = get_num(c, "max_tokens", 1, MAX_TOKENS_LIMIT, true, &mt, &set2))) return rc;
    if (set2 && !set1) r->max_tokens = (int64_t)mt; /* OpenAI: max_completion_tokens supersedes */
    r->max_tokens_set = set1 || set2;
    if ((rc = parse_response_format(c))) return rc;
    return parse_kwargs(c, r);
}

static fr_status parse_prompt_ids(ctx *c, const cJSON *a, srv_request *r) {
    const cJSON *e;
    cJSON_ArrayForEach(e, a) {
        if (!cJSON_IsNumber(e) || e->valuedouble != floor(e->valuedouble) || e->valuedouble < 0 ||
            e->valuedouble > INT32_MAX)
            return bad(c, "prompt", "'%s' token ids must be non-negative integers%s", "");
    }
    r->prompt_ids = a;
    return FR_OK;
}

static fr_status parse_completion(ctx *c, srv_request *r) {
    const cJSON *p = field(c, "prompt");
    if (!p) return bad(c, "prompt", "'%s' is required%s", "");
    /* A string, a list of ids, or a batch of exactly one of either (n prompts would need n choices). */
    if (cJSON_IsArray(p) && cJSON_GetArraySize(p) == 1 && (cJSON_IsString(p->child) || cJSON_IsArray(p->child)))
        p = p->child;
    if (cJSON_IsString(p)) r->prompt_text = p->valuestring;
    else if (cJSON_IsArray(p) && cJSON_GetArraySize(p) > 0 && cJSON_IsNumber(p->child)) {
        fr_status rc = parse_prompt_ids(c, p, r);
        if (rc) return rc;
    } else if (cJSON_IsArray(p) && cJSON_GetArraySize(p) > 1)
        return bad(c, "prompt", "'%s' must be one prompt (batches of several prompts are not supported)%s", "");
    else
        return bad(c, "prompt", "'%s' must be a string or a non-empty list of token ids%s", "");
    fr_status rc;
    double v;
    bool set;
    if ((rc = get_num(c, "max_tokens", 1, MAX_TOKENS_LIMIT, true, &v, &set))) return rc;
    r->max_tokens_set = set;
    if (set) r->max_tokens = (int64_t)v;
    if ((rc = get_num(c, "logprobs", 0, FR_MAX_TOP_LOGPROBS, true, &v, &set))) return rc;
    r->logprobs = set;
    r->top_logprobs = set ? (int)v : 0;
    if ((rc = get_num(c, "best_of", 1, 1, true, &v, NULL))) return rc;
    bool echo = false;
    if ((rc = get_bool(c, "echo", &echo))) return rc;
    if (echo) return bad(c, "echo", "'%s' is not supported%s", "");
    const cJSON *suffix = field(c, "suffix");
    if (suffix && !(cJSON_IsString(suffix) && suffix->valuestring[0] == '\0'))
        return bad(c, "suffix", "'%s' is not supported%s", "");
    return FR_OK;
}

static void note_unknown(const cJSON *body, const char *const *known, srv_request *r) {
    const cJSON *e;
    cJSON_ArrayForEach(e, body) {
        bool found = false;
        for (const char *const *k = known; *k && !found; k++) found = !strcmp(*k, e->string);
        if (found) continue;
        size_t used = strlen(r->unknown);
        snprintf(r->unknown + used, sizeof r->unknown - used, "%s%s", used ? "," : "", e->string);
    }
}

fr_status srv_request_parse(const cJSON *body, srv_api api, const fr_gen_params *defaults, srv_request *r,
                            const char **param, fr_error *err) {
    memset(r, 0, sizeof *r);
    *param = "";
    if (!cJSON_IsObject(body)) return fr_fail(err, FR_ERR_INVALID, "the request body must be a JSON object");
    const cJSON *extra = cJSON_GetObjectItemCaseSensitive(body, "extra_body");
    ctx c = {body, cJSON_IsObject(extra) ? extra : NULL, param, err};
    if (extra && !cJSON_IsNull(extra) && !cJSON_IsObject(extra))
        return bad(&c, "extra_body", "'%s' must be an object%s", "");
    r->api = api;
    r->gen = *defaults;
    r->gen.top_logprobs = -1;
    r->gen.n_stop_ids = 0;
    fr_status rc;
    const cJSON *model = field(&c, "model");
    if (model && !cJSON_IsString(model)) return bad(&c, "model", "'%s' must be a string%s", "");
    double n = 1, top_k = 0, seed = 0;
    if ((rc = get_num(&c, "n", 1, 1, true, &n, NULL))) {
        *param = "n";
        return fr_fail(err, FR_ERR_INVALID, "'n' must be 1 (one choice per request is supported)");
    }
    if ((rc = get_bool(&c, "stream", &r->stream)) || (rc = parse_stream_options(&c, r))) goto out;
    if ((rc = get_f32(&c, "temperature", 0, 2, &r->gen.temperature))) goto out;
    if ((rc = get_f32(&c, "top_p", 1e-9, 1, &r->gen.top_p))) goto out;
    if ((rc = get_f32(&c, "min_p", 0, 1, &r->gen.min_p))) goto out;
    if ((rc = get_f32(&c, "presence_penalty", -2, 2, &r->gen.presence_penalty))) goto out;
    if ((rc = get_f32(&c, "frequency_penalty", -2, 2, &r->gen.frequency_penalty))) goto out;
    /* top_k: vLLM spells "off" as -1, OpenAI-style clients as 0 */
    if ((rc = get_num(&c, "top_k", -1, INT32_MAX, true, &top_k, NULL))) goto out;
    r->gen.top_k = top_k < 0 ? 0 : (int)top_k;
    /* seed: any 64-bit integer; negative ones wrap (clients send both signs) */
    if ((rc = get_num(&c, "seed", -9.2233720368547758e18, 1.8446744073709552e19, true, &seed, &r->seed_set))) goto out;
    if (r->seed_set) r->gen.seed = seed < 0 ? (uint64_t)(int64_t)seed : seed >= 1.8446744073709552e19 ? UINT64_MAX : (uint64_t)seed;
    if ((rc = get_bool(&c, "ignore_eos", &r->gen.ignore_eos))) goto out;
    if ((rc = parse_stop(&c, r)) || (rc = parse_stop_ids(&c, r))) goto out;
    rc = api == SRV_API_CHAT ? parse_chat(&c, r) : parse_completion(&c, r);
    if (rc) goto out;
    r->gen.top_logprobs = r->logprobs ? r->top_logprobs : -1;
    note_unknown(body, api == SRV_API_CHAT ? chat_fields : completion_fields, r);
out:
    if (rc) srv_request_release(r);
    return rc;
}

void srv_request_release(srv_request *r) {
    cJSON_Delete(r->kwargs);
    r->kwargs = NULL;
}
