/* prompt.c - text prompts for `frontier run` (see prompt.h). */
#include "prompt.h"

#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "tokenizer/chat.h"

static fr_status render_chat(const char *dir, const char *text, char **out, size_t *len, fr_error *err) {
    fr_chat_template *t = NULL;
    fr_status rc = fr_chat_template_load(dir, &t, err);
    if (rc) return rc;
    cJSON *messages = cJSON_CreateArray(), *m = cJSON_CreateObject();
    if (!messages || !m || !cJSON_AddStringToObject(m, "role", "user") || !cJSON_AddStringToObject(m, "content", text)) {
        cJSON_Delete(messages);
        cJSON_Delete(m);
        fr_chat_template_free(t);
        return fr_fail(err, FR_ERR_NOMEM, "out of memory building the chat message");
    }
    cJSON_AddItemToArray(messages, m);
    fr_chat_request req = {.messages = messages, .tools = NULL, .add_generation_prompt = true, .kwargs = NULL};
    rc = fr_chat_render(t, &req, NULL, out, len, err);
    cJSON_Delete(messages);
    fr_chat_template_free(t);
    return rc;
}

fr_status fr_prompt_encode(const char *dir, const fr_tokenizer *tok, const char *text, bool chat, int32_t **ids,
                           int64_t *n, fr_error *err) {
    *ids = NULL;
    *n = 0;
    char *rendered = NULL;
    size_t len = strlen(text);
    fr_status rc = FR_OK;
    if (chat) {
        if ((rc = render_chat(dir, text, &rendered, &len, err))) return rc;
        text = rendered;
    }
    fr_tok_ids v = {0};
    rc = fr_tokenizer_encode(tok, text, len, chat ? 0u : (unsigned)FR_TOK_ADD_SPECIAL, &v, err);
    free(rendered);
    if (rc) {
        fr_tok_ids_release(&v);
        return rc;
    }
    if (v.n == 0) {
        fr_tok_ids_release(&v);
        return fr_fail(err, FR_ERR_INVALID, "the prompt encodes to no tokens");
    }
    *ids = v.ids;
    *n = v.n;
    return FR_OK;
}
