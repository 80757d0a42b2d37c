/* chat.h - a checkpoint's chat format: messages in, prompt text out.
 *
 * Most checkpoints ship a Jinja chat template (tokenizer_config.json "chat_template",
 * a string or a list of {name, template} of which "default" is used, or a
 * chat_template.jinja file, which wins as in transformers); it is rendered by jinja.h with
 * the variables HF passes: messages, tools (none when absent), add_generation_prompt,
 * bos_token / eos_token (when tokenizer_config.json defines them, as strings or
 * {"content": ...}), plus caller kwargs such as `thinking` or `enable_thinking`.
 *
 * DeepSeek-V3.2 ships no Jinja template, only a Python encoder; its format is built in
 * here (fr_chat_dsv32_render) and chosen when the directory has no template and
 * config.json says model_type deepseek_v32 (or architectures DeepseekV32ForCausalLM).
 * A template that is present wins: DeepSeek-V3.2-Exp has the same model_type and ships
 * its own (V3.1-style) Jinja template.
 *
 * Ownership: a template owns its parsed form and token strings; requests borrow cJSON. */
#ifndef FR_CHAT_H
#define FR_CHAT_H

#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>

#include "../core/status.h"
#include "jinja.h"

typedef struct fr_chat_template fr_chat_template;

typedef enum {
    FR_CHAT_JINJA, /* the checkpoint's own Jinja template */
    FR_CHAT_DSV32, /* built-in DeepSeek-V3.2 encoder */
} fr_chat_kind;

typedef struct {
    const cJSON *messages; /* array of {role, content, ...} (required) */
    const cJSON *tools;    /* array of tool definitions, or NULL */
    bool add_generation_prompt;
    const cJSON *kwargs; /* object of extra template variables, or NULL */
} fr_chat_request;

/* Load the chat format of checkpoint directory dir (see above for the search order). */
fr_status fr_chat_template_load(const char *dir, fr_chat_template **out, fr_error *err);

/* A Jinja template from a string; bos / eos may be NULL (then undefined in the template). */
fr_status fr_chat_template_from_string(const char *src, size_t len, const char *bos, const char *eos,
                                       fr_chat_template **out, fr_error *err);

void fr_chat_template_free(fr_chat_template *t);
fr_chat_kind fr_chat_template_kind(const fr_chat_template *t);

/* Render a request; lim NULL means the defaults. *out is malloc'd, NUL-terminated. */
fr_status fr_chat_render(const fr_chat_template *t, const fr_chat_request *req, const fr_jinja_limits *lim,
                         char **out, size_t *out_len, fr_error *err);

/* DeepSeek-V3.2's prompt format (the encoding_dsv32.py layout, driven the way vLLM drives
 * it): BOS, system text (tools appended as a DSML tool prompt), <｜User｜>…<｜Assistant｜>
 * followed by <think> after the last user turn in thinking mode (kwargs `thinking`,
 * `enable_thinking` true, or `thinking_mode` "thinking") and </think> otherwise, assistant
 * turns as {reasoning</think> after the last user turn}{content}{DSML tool calls}
 * <｜end▁of▁sentence｜>, tool results in <function_results>. bos may be NULL (default).
 * The tool and response-format prompt texts are read from dir/encoding/encoding_dsv32.py
 * (the checkpoint's own encoder) only when a request has tools or a response_format; then
 * a NULL dir or a missing file or constant is FR_ERR_UNSUPPORTED. */
fr_status fr_chat_dsv32_render(const fr_chat_request *req, const char *dir, const char *bos,
                               size_t max_output, char **out, size_t *out_len, fr_error *err);

#endif
