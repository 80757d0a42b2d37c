/* response.c - OpenAI-shaped JSON bodies (see response.h). */
#include "response.h"

#include <string.h>

#include <cjson/cJSON.h>

char *srv_json_error(const char *message, const char *type, const char *param, const char *code) {
    cJSON *root = cJSON_CreateObject();
    cJSON *e = cJSON_AddObjectToObject(root, "error");
    char *s = NULL;
    if (e && cJSON_AddStringToObject(e, "message", message) && cJSON_AddStringToObject(e, "type", type) &&
        (param ? cJSON_AddStringToObject(e, "param", param) : cJSON_AddNullToObject(e, "param")) &&
        (code ? cJSON_AddStringToObject(e, "code", code) : cJSON_AddNullToObject(e, "code")))
        s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return s;
}

/* Token text for logprobs: lossy (valid UTF-8) and with special tokens spelled out. */
static bool token_text(const fr_tokenizer *t, int32_t id, unsigned flags, fr_tok_text *buf) {
    fr_error err;
    return fr_tokenizer_decode(t, &id, 1, flags, buf, &err) == FR_OK;
}

static cJSON *bytes_array(const fr_tokenizer *t, int32_t id, fr_tok_text *buf) {
    if (!token_text(t, id, 0, buf)) return NULL;
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; a && i < buf->len; i++) {
        cJSON *n = cJSON_CreateNumber((unsigned char)buf->data[i]);
        if (!n) {
            cJSON_Delete(a);
            return NULL;
        }
        cJSON_AddItemToArray(a, n);
    }
    return a;
}

/* One {token, logprob, bytes} object (chat shape). */
static cJSON *chat_token(const fr_tokenizer *t, int32_t id, float lp, fr_tok_text *buf) {
    cJSON *o = cJSON_CreateObject();
    if (!o || !token_text(t, id, FR_TOK_LOSSY, buf) || !cJSON_AddStringToObject(o, "token", buf->data ? buf->data : "") ||
        !cJSON_AddNumberToObject(o, "logprob", (double)lp)) {
        cJSON_Delete(o);
        return NULL;
    }
    cJSON *b = bytes_array(t, id, buf);
    if (!b) {
        cJSON_Delete(o);
        return NULL;
    }
    cJSON_AddItemToObject(o, "bytes", b);
    return o;
}

static cJSON *chat_logprobs(const srv_resp_meta *m, const srv_output *o) {
    fr_tok_text buf = {0};
    cJSON *root = cJSON_CreateObject(), *content = cJSON_CreateArray();
    if (!root || !content) goto fail;
    cJSON_AddItemToObject(root, "content", content);
    for (int64_t i = 0; i < o->n_lp; i++) {
        const srv_logprob *e = &o->lp[i];
        cJSON *tok = chat_token(m->tok, e->id, e->logprob, &buf), *top = cJSON_CreateArray();
        if (!tok || !top) {
            cJSON_Delete(tok);
            cJSON_Delete(top);
            goto fail_root;
        }
        cJSON_AddItemToArray(content, tok);
        cJSON_AddItemToObject(tok, "top_logprobs", top);
        for (int k = 0; k < e->n_top; k++) {
            cJSON *alt = chat_token(m->tok, e->top_ids[k], e->top_logprobs[k], &buf);
            if (!alt) goto fail_root;
            cJSON_AddItemToArray(top, alt);
        }
    }
    if (!cJSON_AddNullToObject(root, "refusal")) goto fail_root;
    fr_tok_text_release(&buf);
    return root;
fail:
    cJSON_Delete(content);
fail_root:
    cJSON_Delete(root);
    fr_tok_text_release(&buf);
    return NULL;
}

static cJSON *legacy_logprobs(const srv_resp_meta *m, const srv_output *o) {
    fr_tok_text buf = {0};
    cJSON *root = cJSON_CreateObject();
    cJSON *tokens = cJSON_AddArrayToObject(root, "tokens"), *lps = cJSON_AddArrayToObject(root, "token_logprobs");
    cJSON *tops = cJSON_AddArrayToObject(root, "top_logprobs"), *offs = cJSON_AddArrayToObject(root, "text_offset");
    if (!root || !tokens || !lps || !tops || !offs) goto fail;
    for (int64_t i = 0; i < o->n_lp; i++) {
        const srv_logprob *e = &o->lp[i];
        if (!token_text(m->tok, e->id, FR_TOK_LOSSY, &buf)) goto fail;
        cJSON *top = cJSON_CreateObject();
        if (!top) goto fail;
        cJSON_AddItemToArray(tops, top);
        cJSON *s = cJSON_CreateString(buf.data ? buf.data : ""), *lp = cJSON_CreateNumber(e->logprob),
              *off = cJSON_CreateNumber((double)e->text_offset);
        if (s) cJSON_AddItemToArray(tokens, s);
        if (lp) cJSON_AddItemToArray(lps, lp);
        if (off) cJSON_AddItemToArray(offs, off);
        if (!s || !lp || !off) goto fail;
        for (int k = 0; k < e->n_top; k++) {
            if (!token_text(m->tok, e->top_ids[k], FR_TOK_LOSSY, &buf)) goto fail;
            const char *key = buf.data ? buf.data : "";
            /* two ids may decode to the same text: keep the first (more likely) one */
            if (cJSON_GetObjectItemCaseSensitive(top, key)) continue;
            if (!cJSON_AddNumberToObject(top, key, (double)e->top_logprobs[k])) goto fail;
        }
    }
    fr_tok_text_release(&buf);
    return root;
fail:
    cJSON_Delete(root);
    fr_tok_text_release(&buf);
    return NULL;
}

static cJSON *usage_json(const srv_usage *u) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddNumberToObject(o, "prompt_tokens", (double)u->prompt);
    cJSON_AddNumberToObject(o, "completion_tokens", (double)u->completion);
    cJSON_AddNumberToObject(o, "total_tokens", (double)(u->prompt + u->completion));
    cJSON *pd = cJSON_AddObjectToObject(o, "prompt_tokens_details");
    if (pd) cJSON_AddNumberToObject(pd, "cached_tokens", 0);
    if (u->has_reasoning) {
        cJSON *cd = cJSON_AddObjectToObject(o, "completion_tokens_details");
        if (cd) cJSON_AddNumberToObject(cd, "reasoning_tokens", (double)u->reasoning);
    }
    return o;
}

/* {id, object, created, model} of every body. */
static cJSON *envelope(const srv_resp_meta *m, const char *object) {
    cJSON *root = cJSON_CreateObject();
    if (!root) return NULL;
    if (!cJSON_AddStringToObject(root, "id", m->id) || !cJSON_AddStringToObject(root, "object", object) ||
        !cJSON_AddNumberToObject(root, "created", (double)m->created) ||
        !cJSON_AddStringToObject(root, "model", m->model)) {
        cJSON_Delete(root);
        return NULL;
    }
    return root;
}

/* Add text (which may be NULL when empty) as a string member. */
static bool add_text(cJSON *o, const char *name, const srv_buf *b) {
    return cJSON_AddStringToObject(o, name, b->data ? b->data : "") != NULL;
}

/* choices[0] with the text (message or delta), logprobs and finish_reason. */
static cJSON *choice(const srv_resp_meta *m, const srv_output *o, bool stream, bool role, const char *finish) {
    cJSON *c = cJSON_CreateObject();
    if (!c || !cJSON_AddNumberToObject(c, "index", 0)) goto fail;
    if (m->api == SRV_API_CHAT) {
        cJSON *msg = cJSON_AddObjectToObject(c, stream ? "delta" : "message");
        if (!msg) goto fail;
        if ((role || !stream) && !cJSON_AddStringToObject(msg, "role", "assistant")) goto fail;
        /* Streams send only what is new; the full message always has content. reasoning_content
         * is omitted (not null, not "") when there is none, consistently in both forms. */
        if ((!stream || o->content.len || role) && !add_text(msg, "content", &o->content)) goto fail;
        if (o->reasoning.len && !add_text(msg, "reasoning_content", &o->reasoning)) goto fail;
    } else if (!add_text(c, "text", &o->content)) {
        goto fail;
    }
    cJSON *lp = NULL;
    if (o->want_logprobs && (o->n_lp || !stream)) {
        lp = m->api == SRV_API_CHAT ? chat_logprobs(m, o) : legacy_logprobs(m, o);
        if (!lp) goto fail;
        cJSON_AddItemToObject(c, "logprobs", lp);
    } else if (!cJSON_AddNullToObject(c, "logprobs")) {
        goto fail;
    }
    if (!(finish ? cJSON_AddStringToObject(c, "finish_reason", finish) : cJSON_AddNullToObject(c, "finish_reason")))
        goto fail;
    return c;
fail:
    cJSON_Delete(c);
    return NULL;
}

static char *finish_print(cJSON *root, cJSON *c, const srv_usage *u) {
    char *s = NULL;
    cJSON *choices = cJSON_AddArrayToObject(root, "choices");
    if (!choices || !c) goto out;
    cJSON_AddItemToArray(choices, c);
    c = NULL;
    if (u) {
        cJSON *uj = usage_json(u);
        if (!uj) goto out;
        cJSON_AddItemToObject(root, "usage", uj);
    }
    s = cJSON_PrintUnformatted(root);
out:
    cJSON_Delete(c);
    cJSON_Delete(root);
    return s;
}

char *srv_json_response(const srv_resp_meta *m, const srv_output *o, const char *finish, const srv_usage *u) {
    cJSON *root = envelope(m, m->api == SRV_API_CHAT ? "chat.completion" : "text_completion");
    if (!root) return NULL;
    return finish_print(root, choice(m, o, false, false, finish), u);
}

char *srv_json_chunk(const srv_resp_meta *m, const srv_output *o, bool role, const char *finish,
                     const srv_usage *u) {
    cJSON *root = envelope(m, m->api == SRV_API_CHAT ? "chat.completion.chunk" : "text_completion");
    if (!root) return NULL;
    return finish_print(root, choice(m, o, true, role, finish), u);
}

char *srv_json_usage_chunk(const srv_resp_meta *m, const srv_usage *u) {
    cJSON *root = envelope(m, m->api == SRV_API_CHAT ? "chat.completion.chunk" : "text_completion");
    cJSON *uj = usage_json(u);
    char *s = NULL;
    if (root && uj && cJSON_AddArrayToObject(root, "choices")) {
        cJSON_AddItemToObject(root, "usage", uj);
        uj = NULL;
        s = cJSON_PrintUnformatted(root);
    }
    cJSON_Delete(uj);
    cJSON_Delete(root);
    return s;
}
