/* tokenizer.h - text <-> token ids for the checkpoints frontier serves.
 *
 * A tokenizer is loaded from a checkpoint directory holding either
 *   - tokenizer.json (Hugging Face `tokenizers` format: BPE with normalizers,
 *     pre-tokenizers, added tokens, a post-processor and decoders), or
 *   - tiktoken.model (Kimi K2: "base64(bytes) rank" per line, Kimi's split pattern),
 * plus tokenizer_config.json for BOS/EOS, add_bos_token/add_eos_token and (tiktoken)
 * the special tokens of added_tokens_decoder.
 *
 * Behaviour follows Python transformers (the Rust `tokenizers` library): ids equal
 * `tok.encode(text, add_special_tokens=...)`. One deliberate difference: decoding
 * returns the exact bytes the tokens stand for, so text with invalid UTF-8 encodes
 * byte-level and decodes back byte for byte; FR_TOK_LOSSY gives HF's replacement of
 * invalid sequences by U+FFFD instead.
 *
 * A loaded tokenizer is read-only except for an internal word cache, which is taken
 * with a try-lock: concurrent encode calls on one tokenizer are safe (a call that
 * finds the cache busy runs without it). Every size is bounded (FR_TOK_MAX_*); bad
 * files give FR_ERR_FORMAT naming the file and the JSON path, line or byte offset.
 * Depends on core/ and io/ only. */
#ifndef FR_TOKENIZER_H
#define FR_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../core/status.h"

#define FR_TOK_MAX_TEXT ((size_t)256 << 20)      /* bytes of text per encode call */
#define FR_TOK_MAX_VOCAB (1 << 22)               /* ids are in [0, 4M) */
#define FR_TOK_MAX_TOKEN_BYTES 4096              /* longest vocabulary / added token */
#define FR_TOK_MAX_JSON ((size_t)512 << 20)      /* tokenizer.json, tiktoken.model */

/* Flags for encode, decode and the streaming detokenizer. */
enum {
    FR_TOK_ADD_SPECIAL = 1 << 0,   /* encode: add BOS/EOS as the post-processor or tokenizer_config asks */
    FR_TOK_SPLIT_SPECIAL = 1 << 1, /* encode: do not match special-token strings in the text (treat as text) */
    FR_TOK_SKIP_SPECIAL = 1 << 2,  /* decode: leave special tokens out of the text */
    FR_TOK_LOSSY = 1 << 3,         /* decode: invalid UTF-8 becomes U+FFFD (as HF decode); default: raw bytes */
};

typedef struct fr_tokenizer fr_tokenizer;

/* Growable outputs; zero-initialize, reuse across calls, release when done.
 * Encode and decode overwrite (n = 0 first); the detokenizer appends. */
typedef struct {
    int32_t *ids;
    int64_t n, cap;
} fr_tok_ids;

typedef struct {
    char *data; /* NUL-terminated for convenience; may contain NUL and invalid UTF-8 */
    size_t len, cap;
} fr_tok_text;

void fr_tok_ids_release(fr_tok_ids *v);
void fr_tok_text_release(fr_tok_text *t);

/* Load the tokenizer of checkpoint directory dir (tokenizer.json preferred over
 * tiktoken.model). *out is owned by the caller (fr_tokenizer_free). */
fr_status fr_tokenizer_load(const char *dir, fr_tokenizer **out, fr_error *err);
void fr_tokenizer_free(fr_tokenizer *t);

/* text[0..len) -> ids in out (overwritten). flags: FR_TOK_ADD_SPECIAL, FR_TOK_SPLIT_SPECIAL.
 * Never fails on content (any bytes encode); fails on size (> FR_TOK_MAX_TEXT) or memory. */
fr_status fr_tokenizer_encode(const fr_tokenizer *t, const char *text, size_t len, unsigned flags, fr_tok_ids *out,
                              fr_error *err);

/* ids -> bytes in out (overwritten). flags: FR_TOK_SKIP_SPECIAL, FR_TOK_LOSSY. Ids with no
 * token (negative, past the vocabulary, holes) are skipped, as HF does. */
fr_status fr_tokenizer_decode(const fr_tokenizer *t, const int32_t *ids, int64_t n, unsigned flags, fr_tok_text *out,
                              fr_error *err);

/* Vocabulary lookups. Token strings are as tokenizer.json spells them (byte-level
 * tokens in GPT-2's printable alphabet, e.g. "Ġthe"); tiktoken tokens are shown in
 * the same alphabet. token_to_id returns -1 when absent; id_to_token NULL, else a string
 * owned by the tokenizer of *len bytes, not NUL-terminated. */
int32_t fr_tokenizer_token_to_id(const fr_tokenizer *t, const char *s, size_t len);
const char *fr_tokenizer_id_to_token(const fr_tokenizer *t, int32_t id, size_t *len);
int64_t fr_tokenizer_vocab_size(const fr_tokenizer *t); /* largest id + 1 */
bool fr_tokenizer_is_special(const fr_tokenizer *t, int32_t id);

/* BOS / EOS from tokenizer_config.json (-1 / NULL when it names none). */
int32_t fr_tokenizer_bos_id(const fr_tokenizer *t);
int32_t fr_tokenizer_eos_id(const fr_tokenizer *t);
const char *fr_tokenizer_bos_token(const fr_tokenizer *t);
const char *fr_tokenizer_eos_token(const fr_tokenizer *t);

/* Streaming detokenizer: feed generated ids one at a time, get text as soon as it is
 * final. Partial UTF-8 characters are held back until complete, so no piece ends
 * inside a character; the concatenation of everything pushed out (push... then
 * finish) equals fr_tokenizer_decode of all the ids with the same flags.
 * flags: FR_TOK_SKIP_SPECIAL, FR_TOK_LOSSY. The tokenizer must outlive it. */
typedef struct fr_detok fr_detok;

fr_status fr_detok_create(const fr_tokenizer *t, unsigned flags, fr_detok **out, fr_error *err);
/* Append the text that id completes to out (possibly nothing). */
fr_status fr_detok_push(fr_detok *d, int32_t id, fr_tok_text *out, fr_error *err);
/* End of stream: append whatever was held back (an incomplete trailing character). */
fr_status fr_detok_finish(fr_detok *d, fr_tok_text *out, fr_error *err);
void fr_detok_reset(fr_detok *d);
void fr_detok_destroy(fr_detok *d);

#endif
