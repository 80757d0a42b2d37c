/* tiktoken.c - Kimi K2's tokenizer: tiktoken.model plus tokenizer_config.json.
 *
 * tiktoken.model is one "base64(bytes) rank" per line; the rank is the id, and BPE
 * merges whichever adjacent pair concatenates to the lowest-ranked token. Kimi's
 * tokenization_kimi.py adds 256 + 2 special ids right after the last rank, named by
 * added_tokens_decoder in tokenizer_config.json (the unnamed ones become
 * "<|reserved_token_ID|>"), and splits text with its own pattern (ARCH 8.2), which
 * uses Oniguruma / regex-crate class intersection, [A&&[^\p{Han}]] ("letters except
 * Han"). PCRE2 has no intersection, so fr_kimi_pattern below is the hand translation:
 * each intersected class becomes (?:(?!\p{sc:Han})[A]). Script=Han, not PCRE2's
 * default Script_Extensions (which would pull 。 and ー into Han runs); \s is Unicode
 * White_Space, as in the regex crate. fr_kimi_pattern_onig is the original, kept so
 * tests can check the translation against fr_regex_translate's.
 *
 * Encoding then follows Kimi's encode(): added tokens are split out first, the rest is
 * cut into Kimi's chunks (tokenizer.c), split by the pattern and merged by rank. */
#include "tok_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../io/json_util.h"

const char fr_kimi_pattern_onig[] =
    "[\\p{Han}]+"
    "|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}&&[^\\p{Han}]]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}&&[^\\p{Han}]]+"
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    "|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}&&[^\\p{Han}]]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}&&[^\\p{Han}]]*"
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    "|\\p{N}{1,3}"
    "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
    "|\\s*[\\r\\n]+"
    "|\\s+(?!\\S)"
    "|\\s+";

#define HAN "\\p{sc:Han}"
#define WS "\\p{White_Space}"
#define UPPER_NOT_HAN "(?:(?!" HAN ")[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}])"
#define LOWER_NOT_HAN "(?:(?!" HAN ")[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}])"
#define CONTRACTION "(?i:'s|'t|'re|'ve|'m|'ll|'d)?"

const char fr_kimi_pattern[] =
    "[" HAN "]+"                                                          /* 1. Han runs */
    "|[^\\r\\n\\p{L}\\p{N}]?" UPPER_NOT_HAN "*" LOWER_NOT_HAN "+" CONTRACTION /* 2. Word, word, camelCase */
    "|[^\\r\\n\\p{L}\\p{N}]?" UPPER_NOT_HAN "+" LOWER_NOT_HAN "*" CONTRACTION /* 3. UPPER */
    "|\\p{N}{1,3}"                                                        /* 4. digits in threes */
    "| ?[^" WS "\\p{L}\\p{N}]+[\\r\\n]*"                                   /* 5. punctuation */
    "|" WS "*[\\r\\n]+"                                                    /* 6. newlines */
    "|" WS "+(?!\\P{White_Space})"                                         /* 7. spaces before a space */
    "|" WS "+";                                                            /* 8. other spaces */

#define N_RESERVED (256 + 2) /* tokenization_kimi.py: num_reserved_special_tokens + 2 */

static int b64_value(uint8_t c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

/* Standard base64 with padding; false on anything else. */
static bool b64_decode(const uint8_t *s, size_t n, uint8_t *out, size_t *out_len) {
    if (n == 0 || n % 4) return false;
    size_t o = 0;
    for (size_t i = 0; i < n; i += 4) {
        int v[4], pad = 0;
        for (int k = 0; k < 4; k++) {
            if (s[i + k] == '=' && i + 4 == n && k >= 2) {
                v[k] = 0;
                pad++;
            } else if (pad || (v[k] = b64_value(s[i + k])) < 0)
                return false;
        }
        uint32_t x = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
        out[o++] = (uint8_t)(x >> 16);
        if (pad < 2) out[o++] = (uint8_t)(x >> 8);
        if (pad < 1) out[o++] = (uint8_t)x;
    }
    *out_len = o;
    return true;
}

typedef struct {
    uint32_t off, len; /* bytes in the entries buffer */
    int64_t rank;
} entry;

/* Parse every line; entries' bytes go to buf. */
static fr_status parse_model(const char *file, const char *text, size_t len, entry **out, int64_t *n_out, fr_buf *buf,
                             fr_error *err) {
    entry *v = NULL;
    int64_t n = 0, cap = 0, line = 0;
    uint8_t tok[FR_TOK_MAX_TOKEN_BYTES];
    fr_status rc = FR_OK;
    for (size_t i = 0; i < len && !rc;) {
        size_t e = i;
        while (e < len && text[e] != '\n') e++;
        line++;
        size_t le = e > i && text[e - 1] == '\r' ? e - 1 : e;
        if (le > i) {
            const char *sp = memchr(text + i, ' ', le - i);
            size_t blen = sp ? (size_t)(sp - (text + i)) : 0, tlen;
            char *end = NULL;
            long long r = -1;
            if (sp && sp + 1 < text + le && sp[1] >= '0' && sp[1] <= '9') r = strtoll(sp + 1, &end, 10);
            if (!sp || blen == 0 || blen > (FR_TOK_MAX_TOKEN_BYTES / 3) * 4 || r < 0 || end != text + le ||
                r >= FR_TOK_MAX_VOCAB) {
                rc = fr_fail(err, FR_ERR_FORMAT, "%s: line %lld: expected \"BASE64 RANK\" with a rank below %d", file,
                             (long long)line, FR_TOK_MAX_VOCAB);
                break;
            }
            if (!b64_decode((const uint8_t *)text + i, blen, tok, &tlen) || tlen == 0) {
                rc = fr_fail(err, FR_ERR_FORMAT, "%s: line %lld: invalid base64 \"%.*s\"", file, (long long)line,
                             (int)(blen > 40 ? 40 : blen), text + i);
                break;
            }
            if (n == cap) {
                cap = cap ? cap * 2 : 1024;
                entry *nv = realloc(v, (size_t)cap * sizeof *nv);
                if (!nv) {
                    rc = fr_fail(err, FR_ERR_NOMEM, "out of memory");
                    break;
                }
                v = nv;
            }
            v[n++] = (entry){(uint32_t)buf->n, (uint32_t)tlen, r};
            rc = fr_buf_add(buf, tok, tlen, err);
        }
        i = e + 1;
    }
    if (!rc && n == 0) rc = fr_fail(err, FR_ERR_FORMAT, "%s: no tokens", file);
    if (rc) {
        free(v);
        return rc;
    }
    *out = v;
    *n_out = n;
    return FR_OK;
}

/* added_tokens_decoder: {"163584": {"content": "[BOS]", "special": true, ...}, ...} */
static fr_status load_specials(fr_tokenizer *t, const cJSON *atd, int64_t n_base, const char *cfg_path, fr_error *err) {
    fr_status rc = FR_OK;
    if (atd && !cJSON_IsObject(atd))
        return fr_fail(err, FR_ERR_FORMAT, "%s: added_tokens_decoder: expected an object", cfg_path);
    /* first the named ones (any id), then names for the unnamed reserved slots */
    for (const cJSON *e = atd ? atd->child : NULL; e && !rc; e = e->next) {
        char *end;
        long long id = strtoll(e->string, &end, 10);
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(e, "content");
        if (!*e->string || *end || id < 0 || id >= t->n_ids)
            return fr_fail(err, FR_ERR_FORMAT, "%s: added_tokens_decoder[\"%.20s\"]: expected an id below %lld", cfg_path,
                           e->string, (long long)t->n_ids);
        size_t n = cJSON_IsString(c) ? strlen(c->valuestring) : 0;
        if (n == 0 || n > FR_TOK_MAX_TOKEN_BYTES)
            return fr_fail(err, FR_ERR_FORMAT, "%s: added_tokens_decoder[\"%s\"].content: expected a non-empty string",
                           cfg_path, e->string);
        fr_added_token a = {.id = (int32_t)id};
        const cJSON *sp = cJSON_GetObjectItemCaseSensitive(e, "special");
        a.special = !cJSON_IsBool(sp) || cJSON_IsTrue(sp);
        a.lstrip = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "lstrip"));
        a.rstrip = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "rstrip"));
        a.single_word = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "single_word"));
        const uint8_t *s = (const uint8_t *)c->valuestring;
        uint8_t fl = FR_TOKF_ADDED | (a.special ? FR_TOKF_SPECIAL : 0);
        if (!(rc = fr_tok_set_token(t, a.id, s, n, s, n, fl, err))) rc = fr_tok_add_added(t, &a, s, n, err);
    }
    for (int64_t id = n_base; id < n_base + N_RESERVED && !rc; id++) {
        if (t->flags[id] & FR_TOKF_ADDED) continue;
        char name[48];
        int n = snprintf(name, sizeof name, "<|reserved_token_%lld|>", (long long)id);
        fr_added_token a = {.id = (int32_t)id, .special = true};
        const uint8_t *s = (const uint8_t *)name;
        if (!(rc = fr_tok_set_token(t, a.id, s, (size_t)n, s, (size_t)n, FR_TOKF_ADDED | FR_TOKF_SPECIAL, err)))
            rc = fr_tok_add_added(t, &a, s, (size_t)n, err);
    }
    return rc;
}

fr_status fr_tiktoken_load(fr_tokenizer *t, const char *dir, fr_error *err) {
    char file[4096], cfg_path[4096];
    snprintf(file, sizeof file, "%s/tiktoken.model", dir);
    snprintf(cfg_path, sizeof cfg_path, "%s/tokenizer_config.json", dir);
    char *text = NULL;
    size_t len;
    entry *ents = NULL;
    int64_t n = 0;
    fr_buf bytes = {0}, disp = {0};
    cJSON *cfg = NULL;
    fr_status rc = fr_read_file(file, FR_TOK_MAX_JSON, &text, &len, err);
    if (rc) return rc;
    if ((rc = parse_model(file, text, len, &ents, &n, &bytes, err))) goto out;
    if ((rc = fr_tok_read_config(dir, &cfg, err))) goto out;

    /* Kimi numbers the specials from len(ranks): the ranks must be exactly 0..n-1 */
    int64_t n_ids = n + N_RESERVED;
    const cJSON *atd = cJSON_GetObjectItemCaseSensitive(cfg, "added_tokens_decoder");
    for (const cJSON *e = cJSON_IsObject(atd) ? atd->child : NULL; e; e = e->next) {
        long long id = strtoll(e->string, NULL, 10);
        if (id >= n_ids && id < FR_TOK_MAX_VOCAB) n_ids = id + 1;
    }
    t->tiktoken = t->byte_level = t->decode_bytes = t->kimi_chunks = true;
    if ((rc = fr_tok_alloc_ids(t, n_ids, err)) || (rc = fr_strmap_reserve(&t->model_map, (uint32_t)n, err)) ||
        (rc = fr_strmap_reserve(&t->disp_map, (uint32_t)n_ids, err)))
        goto out;
    for (int64_t i = 0; i < n && !rc; i++) {
        const entry *x = &ents[i];
        const uint8_t *b = bytes.p + x->off;
        if (x->rank >= n) {
            rc = fr_fail(err, FR_ERR_FORMAT, "%s: rank %lld: ranks must be 0..%lld (one per line)", file,
                         (long long)x->rank, (long long)n - 1);
            break;
        }
        if (t->flags[x->rank] & FR_TOKF_EXISTS) {
            rc = fr_fail(err, FR_ERR_FORMAT, "%s: rank %lld appears twice", file, (long long)x->rank);
            break;
        }
        if (fr_strmap_get(&t->model_map, b, x->len) >= 0) {
            rc = fr_fail(err, FR_ERR_FORMAT, "%s: rank %lld: the same bytes already have rank %d", file,
                         (long long)x->rank, fr_strmap_get(&t->model_map, b, x->len));
            break;
        }
        if ((rc = fr_strmap_put(&t->model_map, b, x->len, (int32_t)x->rank, err))) break;
        if ((rc = fr_bytes_to_bytelevel(b, x->len, &disp, err))) break;
        rc = fr_tok_set_token(t, (int32_t)x->rank, disp.p, disp.n, b, x->len, 0, err);
    }
    for (int b = 0; b < 256 && !rc; b++) {
        uint8_t byte = (uint8_t)b;
        if ((t->byte_id[b] = fr_strmap_get(&t->model_map, &byte, 1)) < 0)
            rc = fr_fail(err, FR_ERR_FORMAT, "%s: no token for the single byte 0x%02x", file, b);
    }
    if (rc) goto out;
    if ((rc = load_specials(t, atd, n, cfg_path, err))) goto out;
    if ((rc = fr_pretok_from_regex(fr_kimi_pattern, "tiktoken split pattern", &t->pretok, err))) goto out;
    if ((rc = fr_tok_finish_added(t, err))) goto out;
    rc = fr_tok_apply_config(t, cfg, cfg_path, "[BOS]", "[EOS]", err);
out:
    free(text);
    free(ents);
    fr_buf_release(&bytes);
    fr_buf_release(&disp);
    cJSON_Delete(cfg);
    return rc;
}
