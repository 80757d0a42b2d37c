/* tok_impl.h - what the tokenizer's source files share and nobody else sees.
 *
 * The pipeline, in the order encode runs it (tokenizer.c drives it):
 *   added tokens (added.c) -> normalizers (normalize.c) -> pre-tokenizers (pretok.c)
 *   -> BPE (bpe.c) -> post-processor ids (tokenizer.c)
 * and back: decoders and the streaming detokenizer (detok.c). tok_util.c holds the
 * hash maps, byte buffers and UTF-8 / Unicode helpers; tok_regex.c wraps PCRE2 and
 * translates Oniguruma-style patterns; tiktoken.c loads Kimi's tiktoken.model.
 *
 * Byte-level tokenizers (ByteLevel pre-tokenizer, tiktoken) run BPE on raw bytes:
 * tokenizer.json's GPT-2-alphabet strings are mapped back to bytes at load time, so
 * encode never builds the printable form. Char-level tokenizers (Metaspace, byte
 * fallback) run BPE on UTF-8 characters. */
#ifndef FR_TOK_IMPL_H
#define FR_TOK_IMPL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "tokenizer.h"

/* ------------------------------------------------------------------ buffers */

typedef struct {
    uint8_t *p;
    size_t n, cap;
} fr_buf;

fr_status fr_buf_reserve(fr_buf *b, size_t extra, fr_error *err);
fr_status fr_buf_add(fr_buf *b, const void *src, size_t n, fr_error *err);
void fr_buf_release(fr_buf *b);

fr_status fr_ids_push(fr_tok_ids *v, int32_t id, fr_error *err);
fr_status fr_ids_add(fr_tok_ids *v, const int32_t *ids, int64_t n, fr_error *err);
fr_status fr_text_add(fr_tok_text *t, const void *src, size_t n, fr_error *err);

/* ------------------------------------------------------------------ hashing */

uint64_t fr_hash_bytes(const void *p, size_t n);

/* Byte string -> int32 map. Owns copies of its keys. get returns -1 when absent. */
typedef struct {
    struct fr_strmap_slot {
        uint32_t entry; /* entry index + 1, 0 = empty */
        uint32_t hash;  /* low bits of the key's hash: most misses never touch the entry */
    } *slots;           /* [mask + 1] */
    uint32_t mask, count;
    struct fr_strmap_entry {
        uint64_t hash;
        uint32_t off, len; /* key bytes in keys */
        int32_t value;
    } *entries;
    uint32_t entries_cap;
    fr_buf keys;
} fr_strmap;

fr_status fr_strmap_reserve(fr_strmap *m, uint32_t n, fr_error *err); /* room for n keys without rehashing */
fr_status fr_strmap_put(fr_strmap *m, const void *key, size_t len, int32_t value, fr_error *err);
int32_t fr_strmap_get(const fr_strmap *m, const void *key, size_t len);
void fr_strmap_release(fr_strmap *m);

/* (left id, right id) -> (rank, merged id): the merges of a tokenizer.json BPE. */
typedef struct {
    struct fr_pair_slot {
        uint64_t key; /* left << 32 | right, UINT64_MAX = empty */
        uint64_t val; /* rank << 32 | merged id */
    } *slots;         /* [mask + 1]: key and value share a cache line */
    uint64_t mask, count;
} fr_pairmap;

fr_status fr_pairmap_reserve(fr_pairmap *m, uint64_t n, fr_error *err);
fr_status fr_pairmap_put(fr_pairmap *m, int32_t a, int32_t b, uint32_t rank, int32_t merged, fr_error *err);
bool fr_pairmap_get(const fr_pairmap *m, int32_t a, int32_t b, uint32_t *rank, int32_t *merged);
void fr_pairmap_release(fr_pairmap *m);

/* ------------------------------------------------------------------ UTF-8 / Unicode */

/* Length of the valid UTF-8 character at s[0..n) (1..4), or 0 if s starts with an
 * invalid or truncated sequence. *cp receives the code point when valid. */
int fr_utf8_next(const uint8_t *s, size_t n, int32_t *cp);
int fr_utf8_encode(int32_t cp, uint8_t out[4]);
bool fr_uni_is_space(int32_t cp);      /* Unicode White_Space */
bool fr_uni_is_word(int32_t cp);       /* regex \w: alphabetic, marks, Nd, Pc, join controls */
bool fr_uni_is_py_space(int32_t cp);   /* Python str.isspace() (Kimi's run splitting) */

/* GPT-2's reversible byte <-> printable character map (ByteLevel). */
int32_t fr_byte_to_cp(uint8_t b); /* the printable character standing for byte b */
int fr_char_to_byte(int32_t cp);  /* -1 if cp is not in the 256-character alphabet */
/* Map GPT-2-alphabet UTF-8 s to raw bytes in out; false if some character is outside. */
bool fr_bytelevel_to_bytes(const uint8_t *s, size_t n, fr_buf *out, fr_error *err, fr_status *rc);
fr_status fr_bytes_to_bytelevel(const uint8_t *s, size_t n, fr_buf *out, fr_error *err);

/* UTF-8 filter for decoded bytes: passes complete characters, holds back an incomplete
 * trailing sequence (at most 3 bytes) until it completes or proves invalid; invalid
 * sequences pass as raw bytes, or as U+FFFD per maximal subpart when lossy. */
typedef struct {
    uint8_t hold[4];
    int nhold, need;
    bool lossy;
} fr_utf8_filter;

fr_status fr_utf8_filter_feed(fr_utf8_filter *f, const uint8_t *s, size_t n, fr_tok_text *out, fr_error *err);
fr_status fr_utf8_filter_flush(fr_utf8_filter *f, fr_tok_text *out, fr_error *err);

/* ------------------------------------------------------------------ regex (PCRE2) */

typedef struct {
    void *code; /* pcre2_code_8 * */
} fr_regex;

/* Per-call match state (match data, reused across every match of one encode). */
typedef struct {
    void *md; /* pcre2_match_data_8 * */
} fr_regex_scratch;

/* Compile pattern (Oniguruma/HF syntax, translated to PCRE2: \s as White_Space,
 * script properties as Script not Script_Extensions, [A&&B] intersections) or a
 * literal string; UTF + UCP + invalid-UTF tolerant, JIT when available. what names
 * the JSON location for errors. */
fr_status fr_regex_compile(fr_regex *re, const char *pat, size_t len, bool literal, const char *what, fr_error *err);
/* Compile a pattern already in PCRE2 syntax (no translation). */
fr_status fr_regex_compile_raw(fr_regex *re, const char *pat, const char *what, fr_error *err);
void fr_regex_free(fr_regex *re);
/* Translate Oniguruma syntax to PCRE2 (exposed for tests). *out is malloc'd. */
fr_status fr_regex_translate(const char *pat, size_t len, char **out, const char *what, fr_error *err);

fr_status fr_regex_scratch_init(fr_regex_scratch *s, fr_error *err);
void fr_regex_scratch_release(fr_regex_scratch *s);
/* Find the first match in s[0..n) starting at or after `from`. Returns 1 and sets
 * [*ms, *me) when found, 0 when not, or a negative fr_status (err set). */
int fr_regex_find(const fr_regex *re, fr_regex_scratch *sc, const uint8_t *s, size_t n, size_t from, size_t *ms,
                  size_t *me, fr_error *err);

/* A Replace / Split pattern object: {"String": s} (literal) or {"Regex": r}. */
fr_status fr_parse_pattern(const cJSON *j, const char *path, fr_regex *re, fr_error *err);

/* ------------------------------------------------------------------ normalizers */

typedef struct fr_normalizer fr_normalizer; /* a flattened chain */

fr_status fr_normalizer_parse(const cJSON *j, const char *path, fr_normalizer **out, fr_error *err);
void fr_normalizer_free(fr_normalizer *n);
/* in -> out (overwritten). Invalid UTF-8 bytes pass through unchanged. */
fr_status fr_normalizer_run(const fr_normalizer *n, fr_regex_scratch *sc, const uint8_t *in, size_t len, fr_buf *out,
                            fr_error *err);

/* ------------------------------------------------------------------ pre-tokenizers */

typedef struct {
    uint32_t off, len;
    uint32_t first; /* starts at offset 0 of the original text (Metaspace prepend_scheme "first") */
} fr_span;

typedef struct {
    fr_span *v;
    size_t n, cap;
} fr_spans;

fr_status fr_spans_push(fr_spans *s, uint32_t off, uint32_t len, uint32_t first, fr_error *err);

typedef struct fr_pretok fr_pretok; /* a flattened chain of steps */

/* byte_level: set when the chain ends in ByteLevel (BPE then runs on bytes). */
fr_status fr_pretok_parse(const cJSON *j, const char *path, fr_pretok **out, bool *byte_level, fr_error *err);
/* A chain of one Split(pattern, Isolated): tiktoken's pre-tokenizer. */
fr_status fr_pretok_from_regex(const char *pcre2_pattern, const char *what, fr_pretok **out, fr_error *err);
void fr_pretok_free(fr_pretok *p);
/* Split arena[0..len) (the text of one section) into pieces. The arena may grow
 * (steps that rewrite text append the new text); spans index into it. */
fr_status fr_pretok_run(const fr_pretok *p, fr_regex_scratch *sc, fr_buf *arena, size_t len, bool first,
                        fr_spans *out, fr_spans *tmp, fr_error *err);

/* ------------------------------------------------------------------ decoders */

typedef struct fr_decoder fr_decoder;

fr_status fr_decoder_parse(const cJSON *j, const char *path, fr_decoder **out, fr_error *err);
void fr_decoder_free(fr_decoder *d);
/* True when the chain is exactly ByteLevel (decode = concatenated token bytes). */
bool fr_decoder_is_bytelevel(const fr_decoder *d);

/* ------------------------------------------------------------------ the tokenizer */

enum { FR_TOKF_EXISTS = 1, FR_TOKF_ADDED = 2, FR_TOKF_SPECIAL = 4 };

typedef struct {
    int32_t id;
    uint32_t off, len; /* content in tokenizer's added_text */
    bool special, lstrip, rstrip, single_word, normalized;
} fr_added_token;

/* Byte trie over added-token contents, for leftmost-longest matching. */
typedef struct {
    struct fr_trie_node {
        int32_t child, sibling; /* node indices, -1 none */
        int32_t token;          /* index into added[], -1 none */
        uint8_t byte;
    } *nodes;
    int32_t n, cap;
    int32_t root[256]; /* first-level node per byte, -1 none */
} fr_trie;

typedef struct fr_bpe_cache fr_bpe_cache;

struct fr_tokenizer {
    bool tiktoken;   /* ranks by merged bytes (tiktoken) instead of merges */
    bool byte_level; /* BPE symbols are bytes, vocabulary keyed by raw bytes */
    int64_t n_ids;   /* largest id + 1 */

    /* Per id: the token as tokenizer.json spells it, and the bytes it decodes to under
     * a ByteLevel decoder (or tiktoken). */
    uint32_t *disp_off, *disp_len, *dec_off, *dec_len; /* [n_ids] */
    uint8_t *flags;                                    /* [n_ids] FR_TOKF_* */
    fr_buf disp_text, dec_text;
    fr_strmap disp_map;  /* token string -> id (vocabulary and added tokens) */
    fr_strmap model_map; /* BPE symbol (raw bytes when byte_level, else UTF-8) -> id */

    /* BPE */
    fr_pairmap merges;
    bool ignore_merges, byte_fallback, fuse_unk;
    int32_t unk_id;
    int32_t byte_id[256];     /* byte_level: id of each single byte */
    int32_t fallback_id[256]; /* byte_fallback: id of "<0xXX>" */
    char *cont_prefix, *eow_suffix; /* continuing_subword_prefix, end_of_word_suffix (NULL = none) */
    fr_bpe_cache *cache;
    atomic_flag *cache_busy;

    /* pipeline */
    fr_normalizer *normalizer; /* NULL = none */
    fr_pretok *pretok;         /* NULL = whole section is one piece */
    fr_decoder *decoder;       /* NULL = tokens joined by " " */
    bool decode_bytes;         /* decoder is ByteLevel or tiktoken: concatenate dec bytes */
    bool kimi_chunks;          /* tiktoken: Kimi's 400k-char / 25k-run chunking */

    /* added tokens: raw (matched before normalization) and normalized */
    fr_added_token *added;
    int32_t n_added;
    fr_buf added_text;
    fr_trie trie_raw, trie_norm;
    bool any_single_word;

    /* post-processor: ids around the sequence when FR_TOK_ADD_SPECIAL */
    int32_t *pp_prefix, *pp_suffix;
    int32_t n_prefix, n_suffix;

    /* tokenizer_config.json */
    int32_t bos_id, eos_id;
    char *bos_token, *eos_token;
};

/* Shared load helpers (tokenizer.c). */
fr_status fr_tok_alloc_ids(fr_tokenizer *t, int64_t n_ids, fr_error *err);
fr_status fr_tok_set_token(fr_tokenizer *t, int32_t id, const uint8_t *disp, size_t disp_len, const uint8_t *dec,
                           size_t dec_len, uint8_t flags, fr_error *err);
fr_status fr_tok_add_added(fr_tokenizer *t, const fr_added_token *a, const uint8_t *content, size_t len,
                           fr_error *err);
fr_status fr_tok_finish_added(fr_tokenizer *t, fr_error *err);
/* Read tokenizer_config.json from dir (absent file = empty object); *out owned by caller. */
fr_status fr_tok_read_config(const char *dir, cJSON **out, fr_error *err);
/* BOS/EOS names and ids, add_bos_token/add_eos_token override of the post-processor. */
fr_status fr_tok_apply_config(fr_tokenizer *t, const cJSON *cfg, const char *path, const char *default_bos,
                              const char *default_eos, fr_error *err);

/* tiktoken.c */
extern const char fr_kimi_pattern[];     /* hand translation to PCRE2 */
extern const char fr_kimi_pattern_onig[]; /* as tokenization_kimi.py writes it */
fr_status fr_tiktoken_load(fr_tokenizer *t, const char *dir, fr_error *err);

/* added.c */
fr_status fr_trie_insert(fr_trie *tr, const uint8_t *s, size_t n, int32_t token, fr_error *err);
void fr_trie_release(fr_trie *tr);
/* Split s[0..n) on added tokens (leftmost-longest, honouring single_word, lstrip,
 * rstrip). Pieces go to cb in order: token >= 0 for an added token (index in added[]),
 * -1 for text between. skip_special: special tokens are not matched. */
typedef fr_status (*fr_added_cb)(void *ctx, const uint8_t *s, size_t n, int32_t token, size_t off, fr_error *err);
fr_status fr_added_split(const fr_tokenizer *t, const fr_trie *tr, const uint8_t *s, size_t n, bool skip_special,
                         fr_added_cb cb, void *ctx, fr_error *err);

/* bpe.c */
typedef struct fr_bpe_scratch fr_bpe_scratch;
fr_status fr_bpe_scratch_create(fr_bpe_scratch **out, fr_error *err);
void fr_bpe_scratch_free(fr_bpe_scratch *s);
/* Encode one pre-token piece, appending ids; use_cache: this call holds the cache. */
fr_status fr_bpe_encode(const fr_tokenizer *t, fr_bpe_scratch *s, bool use_cache, const uint8_t *p, size_t n,
                        fr_tok_ids *out, fr_error *err);
fr_status fr_bpe_cache_create(fr_bpe_cache **out, fr_error *err);
void fr_bpe_cache_free(fr_bpe_cache *c);

/* detok.c: decode ids[0..n) to raw bytes (no UTF-8 filtering), appending to out. */
fr_status fr_decode_raw(const fr_tokenizer *t, const int32_t *ids, int64_t n, bool skip_special, fr_tok_text *out,
                        fr_error *err);

#endif
