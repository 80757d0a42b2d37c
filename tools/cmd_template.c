/* cmd_template.c - `frontier template DIR --messages M.json [--tools T.json]
 * [--generation-prompt] [--kwargs K.json]`: print the prompt the checkpoint's chat
 * format makes of a conversation, byte for byte (no newline is added).
 *
 * M.json is a JSON array of messages (or an object with a "messages" array), T.json an
 * array of tool definitions, K.json an object of extra template variables such as
 * {"thinking": true} or {"enable_thinking": false}. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "io/json_util.h"
#include "tokenizer/chat.h"

#define MAX_JSON_INPUT ((size_t)256 << 20)

static int usage(void) {
    fprintf(
        stderr,
        "usage: frontier template DIR --messages M.json [--tools T.json] [--generation-prompt] [--kwargs K.json]\n"
        "  DIR holds tokenizer_config.json (chat_template, bos/eos tokens) and/or chat_template.jinja;\n"
        "  Without a template, config.json with model_type deepseek_v32 selects the built-in DeepSeek-V3.2 format.\n");
    return 2;
}

static fr_status load_json(const char *path, const char *what, cJSON **out, fr_error *err) {
    char *text = NULL;
    size_t len;
    fr_status rc = fr_read_file(path, MAX_JSON_INPUT, &text, &len, err);
    if (!rc) rc = fr_json_parse(text, len, path, out, err);
    free(text);
    if (rc) fr_error_prefix(err, "%s", what);
    return rc;
}

int fr_cmd_template(int argc, char **argv) {
    const char *dir = NULL, *mpath = NULL, *tpath = NULL, *kpath = NULL;
    bool gen = false;
    fr_error err = {0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--messages") || !strcmp(a, "--tools") || !strcmp(a, "--kwargs")) {
            const char *v = fr_arg_value(argc, argv, &i, &err);
            if (!v) return fr_cli_error("template", &err), 2;
            if (!strcmp(a, "--messages"))
                mpath = v;
            else if (!strcmp(a, "--tools"))
                tpath = v;
            else
                kpath = v;
        } else if (!strcmp(a, "--generation-prompt"))
            gen = true;
        else if (a[0] == '-' || dir) {
            fprintf(stderr, "frontier template: unexpected argument \"%s\"\n", a);
            return usage();
        } else
            dir = a;
    }
    if (!dir || !mpath) return usage();

    cJSON *messages = NULL, *tools = NULL, *kwargs = NULL;
    fr_chat_template *t = NULL;
    char *out = NULL;
    size_t len = 0;
    fr_status rc = load_json(mpath, "--messages", &messages, &err);
    if (!rc && tpath) rc = load_json(tpath, "--tools", &tools, &err);
    if (!rc && kpath) rc = load_json(kpath, "--kwargs", &kwargs, &err);
    const cJSON *msgs = messages;
    if (!rc && cJSON_IsObject(messages)) msgs = cJSON_GetObjectItemCaseSensitive(messages, "messages");
    if (!rc && !cJSON_IsArray(msgs))
        rc = fr_fail(&err, FR_ERR_INVALID,
                     "--messages: %s is not a JSON array of messages (nor {\"messages\": [...]})", mpath);
    if (!rc && tools && !cJSON_IsArray(tools))
        rc = fr_fail(&err, FR_ERR_INVALID, "--tools: %s is not a JSON array", tpath);
    if (!rc && kwargs && !cJSON_IsObject(kwargs))
        rc = fr_fail(&err, FR_ERR_INVALID, "--kwargs: %s is not a JSON object", kpath);
    if (!rc) rc = fr_chat_template_load(dir, &t, &err);
    if (!rc) {
        fr_chat_request req = {
            .messages = msgs, .tools = tools, .add_generation_prompt = gen, .kwargs = kwargs};
        rc = fr_chat_render(t, &req, NULL, &out, &len, &err);
    }
    if (!rc && fwrite(out, 1, len, stdout) != len)
        rc = fr_fail(&err, FR_ERR_IO, "writing the prompt to stdout failed");
    if (!rc && fflush(stdout) != 0) rc = fr_fail(&err, FR_ERR_IO, "writing the prompt to stdout failed");
    free(out);
    fr_chat_template_free(t);
    cJSON_Delete(messages);
    cJSON_Delete(tools);
    cJSON_Delete(kwargs);
    return rc ? fr_cli_error("template", &err) : 0;
}
