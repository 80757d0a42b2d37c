/* chat.c - finding a checkpoint's chat template and rendering requests through it.
 *
 * Search order in DIR (transformers' rules): chat_template.jinja, else the
 * "chat_template" of tokenizer_config.json (a string, or a list of {name, template}
 * where "default" is taken). bos_token / eos_token come from tokenizer_config.json as
 * strings or AddedToken objects ({"content": ...}); null or absent leaves them undefined,
 * as HF's special_tokens_map does. With no template at all, config.json saying
 * DeepSeek-V3.2 selects the built-in encoder: V3.2 ships none, while V3.2-Exp (same
 * model_type) ships a Jinja template of its own, which must win. */
#include "chat.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../io/json_util.h"

#define FR_CHAT_MAX_CONFIG ((size_t)64 << 20)

struct fr_chat_template {
    fr_chat_kind kind;
    fr_jinja_template *jinja; /* FR_CHAT_JINJA */
    char *bos, *eos;          /* NULL when not defined */
    char *dir;                /* FR_CHAT_DSV32: the checkpoint directory (tool prompts are read there) */
};

fr_chat_kind fr_chat_template_kind(const fr_chat_template *t) { return t->kind; }

void fr_chat_template_free(fr_chat_template *t) {
    if (!t) return;
    fr_jinja_free(t->jinja);
    free(t->bos);
    free(t->eos);
    free(t->dir);
    free(t);
}

static bool file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* A special token as tokenizer_config.json writes it: "text" or {"content": "text"}. */
static fr_status token_string(const cJSON *cfg, const char *key, char **out, fr_error *err) {
    *out = NULL;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, key);
    if (!v || cJSON_IsNull(v)) return FR_OK;
    if (cJSON_IsObject(v)) v = cJSON_GetObjectItemCaseSensitive(v, "content");
    if (!cJSON_IsString(v))
        return fr_fail(err, FR_ERR_FORMAT,
                       "tokenizer_config.json: %s is neither a string nor {\"content\": string}", key);
    if (!(*out = strdup(v->valuestring))) return fr_fail(err, FR_ERR_NOMEM, "chat template: out of memory");
    return FR_OK;
}

/* The "chat_template" entry: a string, or [{name, template}] of which "default". */
static fr_status config_template(const cJSON *cfg, const char **src, fr_error *err) {
    *src = NULL;
    const cJSON *ct = cJSON_GetObjectItemCaseSensitive(cfg, "chat_template");
    if (!ct || cJSON_IsNull(ct)) return FR_OK;
    if (cJSON_IsString(ct)) {
        *src = ct->valuestring;
        return FR_OK;
    }
    if (!cJSON_IsArray(ct))
        return fr_fail(err, FR_ERR_FORMAT,
                       "tokenizer_config.json: chat_template is neither a string nor a list");
    const cJSON *e;
    cJSON_ArrayForEach(e, ct) {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(e, "name");
        const cJSON *tpl = cJSON_GetObjectItemCaseSensitive(e, "template");
        if (!cJSON_IsString(name) || !cJSON_IsString(tpl))
            return fr_fail(err, FR_ERR_FORMAT,
                           "tokenizer_config.json: chat_template list entries need string name and template");
        if (!strcmp(name->valuestring, "default")) {
            *src = tpl->valuestring;
            return FR_OK;
        }
    }
    return fr_fail(err, FR_ERR_FORMAT,
                   "tokenizer_config.json: chat_template list has no entry named \"default\"");
}

/* config.json says DeepSeek-V3.2? (model_type deepseek_v32 or its architecture name) */
static fr_status is_dsv32(const char *dir, bool *yes, fr_error *err) {
    char path[4096];
    *yes = false;
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (!file_exists(path)) return FR_OK;
    char *text = NULL;
    size_t len;
    cJSON *cfg = NULL;
    fr_status rc = fr_read_file(path, FR_CHAT_MAX_CONFIG, &text, &len, err);
    if (!rc) rc = fr_json_parse(text, len, path, &cfg, err);
    free(text);
    if (rc) return rc;
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(cfg, "model_type");
    const cJSON *arch = cJSON_GetObjectItemCaseSensitive(cfg, "architectures"), *a;
    if (cJSON_IsString(mt) && !strcmp(mt->valuestring, "deepseek_v32")) *yes = true;
    cJSON_ArrayForEach(a, arch) if (cJSON_IsString(a) &&
                                    !strcmp(a->valuestring, "DeepseekV32ForCausalLM")) *yes = true;
    cJSON_Delete(cfg);
    return FR_OK;
}

fr_status fr_chat_template_from_string(const char *src, size_t len, const char *bos, const char *eos,
                                       fr_chat_template **out, fr_error *err) {
    *out = NULL;
    fr_chat_template *t = calloc(1, sizeof *t);
    if (!t) return fr_fail(err, FR_ERR_NOMEM, "chat template: out of memory");
    t->kind = FR_CHAT_JINJA;
    if ((bos && !(t->bos = strdup(bos))) || (eos && !(t->eos = strdup(eos)))) {
        fr_chat_template_free(t);
        return fr_fail(err, FR_ERR_NOMEM, "chat template: out of memory");
    }
    fr_status rc = fr_jinja_parse(src, len, &t->jinja, err);
    if (rc) {
        fr_chat_template_free(t);
        return rc;
    }
    *out = t;
    return FR_OK;
}

fr_status fr_chat_template_load(const char *dir, fr_chat_template **out, fr_error *err) {
    *out = NULL;
    char path[4096];
    char *cfg_text = NULL, *jinja_text = NULL, *bos = NULL, *eos = NULL;
    size_t cfg_len = 0, jinja_len = 0;
    cJSON *cfg = NULL;
    const char *src = NULL;
    bool v32 = false;
    fr_status rc = is_dsv32(dir, &v32, err);
    if (rc) return rc;
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    if (file_exists(path)) {
        if ((rc = fr_read_file(path, FR_CHAT_MAX_CONFIG, &cfg_text, &cfg_len, err)) ||
            (rc = fr_json_parse(cfg_text, cfg_len, path, &cfg, err)))
            goto out;
        if ((rc = token_string(cfg, "bos_token", &bos, err)) ||
            (rc = token_string(cfg, "eos_token", &eos, err)) || (rc = config_template(cfg, &src, err)))
            goto out;
    }
    snprintf(path, sizeof path, "%s/chat_template.jinja", dir);
    if (file_exists(path)) {
        if ((rc = fr_read_file(path, FR_JINJA_MAX_SOURCE, &jinja_text, &jinja_len, err))) goto out;
        src = jinja_text;
    }
    if (v32 && !src) {
        fr_chat_template *t = calloc(1, sizeof *t);
        if (!t) {
            rc = fr_fail(err, FR_ERR_NOMEM, "chat template: out of memory");
            goto out;
        }
        t->kind = FR_CHAT_DSV32;
        t->bos = bos, t->eos = eos;
        bos = eos = NULL;
        if (!(t->dir = strdup(dir))) {
            fr_chat_template_free(t);
            rc = fr_fail(err, FR_ERR_NOMEM, "chat template: out of memory");
            goto out;
        }
        *out = t;
        goto out;
    }
    if (!src) {
        rc = fr_fail(
            err, FR_ERR_FORMAT,
            "%s has no chat template (no chat_template.jinja, no chat_template in tokenizer_config.json)",
            dir);
        goto out;
    }
    rc = fr_chat_template_from_string(src, src == jinja_text ? jinja_len : strlen(src), bos, eos, out, err);
    if (rc) fr_error_prefix(err, "%s", src == jinja_text ? "chat_template.jinja" : "tokenizer_config.json");
out:
    cJSON_Delete(cfg);
    free(cfg_text);
    free(jinja_text);
    free(bos);
    free(eos);
    return rc;
}

static bool has_key(const cJSON *obj, const char *key) {
    return obj && cJSON_GetObjectItemCaseSensitive(obj, key);
}

fr_status fr_chat_render(const fr_chat_template *t, const fr_chat_request *req, const fr_jinja_limits *lim,
                         char **out, size_t *out_len, fr_error *err) {
    *out = NULL;
    if (!cJSON_IsArray(req->messages))
        return fr_fail(err, FR_ERR_INVALID, "chat: messages must be a JSON array");
    if (req->tools && !cJSON_IsArray(req->tools) && !cJSON_IsNull(req->tools))
        return fr_fail(err, FR_ERR_INVALID, "chat: tools must be a JSON array");
    if (req->kwargs && !cJSON_IsObject(req->kwargs))
        return fr_fail(err, FR_ERR_INVALID, "chat: kwargs must be a JSON object");
    static const char *const reserved[] = {"messages", "tools", "add_generation_prompt"};
    for (size_t i = 0; i < sizeof reserved / sizeof *reserved; i++)
        if (has_key(req->kwargs, reserved[i]))
            return fr_fail(err, FR_ERR_INVALID, "chat: kwargs may not set \"%s\" (it has its own option)",
                           reserved[i]);
    if (t->kind == FR_CHAT_DSV32) {
        fr_jinja_limits d;
        if (!lim) fr_jinja_limits_default(&d), lim = &d;
        return fr_chat_dsv32_render(req, t->dir, t->bos, lim->max_output, out, out_len, err);
    }
    /* The context holds references: nothing of the request is copied or freed here. */
    cJSON *ctx = cJSON_CreateObject();
    bool ok = ctx && cJSON_AddItemReferenceToObject(ctx, "messages", (cJSON *)req->messages) &&
              cJSON_AddBoolToObject(ctx, "add_generation_prompt", req->add_generation_prompt);
    if (ok)
        ok = req->tools ? cJSON_AddItemReferenceToObject(ctx, "tools", (cJSON *)req->tools)
                        : cJSON_AddNullToObject(ctx, "tools") != NULL;
    if (ok && t->bos && !has_key(req->kwargs, "bos_token"))
        ok = cJSON_AddStringToObject(ctx, "bos_token", t->bos) != NULL;
    if (ok && t->eos && !has_key(req->kwargs, "eos_token"))
        ok = cJSON_AddStringToObject(ctx, "eos_token", t->eos) != NULL;
    for (const cJSON *k = req->kwargs ? req->kwargs->child : NULL; ok && k; k = k->next)
        ok = cJSON_AddItemReferenceToObject(ctx, k->string, (cJSON *)k);
    fr_status rc = ok ? fr_jinja_render(t->jinja, ctx, lim, out, out_len, err)
                      : fr_fail(err, FR_ERR_NOMEM, "chat: out of memory building the template context");
    cJSON_Delete(ctx);
    return rc;
}
