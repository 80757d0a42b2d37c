/* jinja.h - a bounded Jinja-subset interpreter for Hugging Face chat templates.
 *
 * Renders the `chat_template` strings that checkpoints ship (tokenizer_config.json or
 * chat_template.jinja). The reference is @huggingface/jinja 0.5.11 (what transformers.js
 * runs), rendered as HF does: trim_blocks and lstrip_blocks on, no autoescape. Where that
 * implementation prints values its own way (true, none, floats, tojson spacing) this one
 * follows it byte for byte; the few deliberate differences are listed in README.md
 * ("Chat templates").
 *
 * Ownership: a parsed template owns a copy of its source and its syntax tree; rendering
 * borrows it (and the cJSON context) and returns a malloc'd string. Nothing here keeps
 * global state: templates can be rendered from several threads at once.
 *
 * Hostile templates are expected: every render runs under fr_jinja_limits (output bytes,
 * memory, evaluation steps, nesting depth) and fails with a clear FR_ERR_CAPACITY error
 * when one is exceeded. Syntax errors and runtime errors name line:column in the source. */
#ifndef FR_JINJA_H
#define FR_JINJA_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "../core/status.h"

typedef struct fr_jinja_template fr_jinja_template;

typedef struct {
    size_t max_output;  /* bytes of the rendered text, and of any one string value */
    size_t max_memory;  /* bytes the render may allocate in all (values, buffers, scopes) */
    uint64_t max_steps; /* evaluation steps: nodes evaluated, loop iterations, items built */
    int max_depth;      /* nesting of evaluation: blocks, expressions, macro calls */
} fr_jinja_limits;

/* Largest template source accepted by fr_jinja_parse (bytes). */
#define FR_JINJA_MAX_SOURCE (16u << 20)

/* Defaults: 32 MiB output, 256 MiB memory, 20M steps, depth 400. */
void fr_jinja_limits_default(fr_jinja_limits *lim);

/* Parse src[0..len) (UTF-8; NULs allowed). On failure err says "line L:C: what". */
fr_status fr_jinja_parse(const char *src, size_t len, fr_jinja_template **out, fr_error *err);

void fr_jinja_free(fr_jinja_template *t);

/* Render with the variables of the cJSON object `context` (NULL: none). Each member
 * becomes a template variable (JSON numbers that are whole are integers, as in
 * JavaScript). lim NULL means the defaults. *out is malloc'd and NUL-terminated
 * (caller frees); *out_len excludes the NUL and may be NULL. */
fr_status fr_jinja_render(const fr_jinja_template *t, const cJSON *context, const fr_jinja_limits *lim,
                          char **out, size_t *out_len, fr_error *err);

#endif
