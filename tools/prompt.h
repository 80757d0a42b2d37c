/* prompt.h - text prompts for `frontier run`: text -> ids through the checkpoint's
 * tokenizer (optionally wrapped as one user message by its chat template), and
 * generated ids -> text through the streaming detokenizer. */
#ifndef FR_PROMPT_H
#define FR_PROMPT_H

#include <stdbool.h>
#include <stdint.h>

#include "core/status.h"
#include "tokenizer/tokenizer.h"

/* Encode `text` for generation. chat: render [{"role":"user","content":text}] with the
 * generation prompt through the chat template, then encode without adding special tokens
 * (the template writes BOS itself, as transformers' apply_chat_template does); otherwise
 * encode with the tokenizer's own special-token rules (BOS where tokenizer_config asks).
 * *ids is malloc'd. */
fr_status fr_prompt_encode(const char *dir, const fr_tokenizer *tok, const char *text, bool chat, int32_t **ids,
                           int64_t *n, fr_error *err);

#endif
