/* tok_check.c - decode-side checks of one tokenizer over the whole corpus, in process:
 *   - the streaming detokenizer's pieces concatenate to the full decode, for every flag
 *     combination (raw / lossy, with / without special tokens), and in lossy mode no
 *     piece holds a broken UTF-8 sequence;
 *   - decode of transformers.js's ids matches its decode (ORACLE.json from oracle.mjs),
 *     with and without skip_special_tokens;
 *   - with --exact (byte-level tokenizers): decode(encode(bytes)) gives the bytes back,
 *     also for the cases that are not valid UTF-8 (the oracle cannot take those).
 * usage: tok_check DIR CORPUS_DIR [--exact] [--oracle ORACLE.json NAME]
 * Prints one line per case and "N passed, M failed"; exits 1 on any failure. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "io/json_util.h"
#include "tokenizer/tokenizer.h"

static int passed, failed;

static bool valid_utf8(const char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        int len = c < 0x80 ? 1 : c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
        if (!len || i + (size_t)len > n) return false;
        for (int k = 1; k < len; k++)
            if (((unsigned char)s[i + k] & 0xc0) != 0x80) return false;
        unsigned char d = (unsigned char)s[i + 1];
        if ((c == 0xe0 && d < 0xa0) || (c == 0xed && d > 0x9f) || (c == 0xf0 && d < 0x90) || (c == 0xf4 && d > 0x8f))
            return false;
        i += (size_t)len;
    }
    return true;
}

static int cmpstr(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Stream ids through a detokenizer; 0 if the pieces concatenate to want. */
static const char *check_stream(const fr_tokenizer *t, const fr_tok_ids *ids, unsigned flags, const fr_tok_text *want) {
    static char why[700];
    fr_error err = {0};
    fr_detok *d = NULL;
    fr_tok_text all = {0}, piece = {0};
    const char *res = NULL;
    if (fr_detok_create(t, flags, &d, &err)) return "detok_create failed";
    for (int64_t i = 0; i <= ids->n && !res; i++) {
        piece.len = 0;
        fr_status rc = i < ids->n ? fr_detok_push(d, ids->ids[i], &piece, &err) : fr_detok_finish(d, &piece, &err);
        if (rc) {
            snprintf(why, sizeof why, "stream error at id %lld: %s", (long long)i, err.msg);
            res = why;
            break;
        }
        if ((flags & FR_TOK_LOSSY) && !valid_utf8(piece.data, piece.len)) {
            snprintf(why, sizeof why, "stream piece %lld is not valid UTF-8 in lossy mode", (long long)i);
            res = why;
        }
        if (piece.len) {
            char *p = realloc(all.data, all.len + piece.len + 1);
            if (!p) return "out of memory";
            all.data = p;
            memcpy(all.data + all.len, piece.data, piece.len);
            all.len += piece.len;
        }
    }
    if (!res && (all.len != want->len || (all.len && memcmp(all.data, want->data, all.len)))) {
        snprintf(why, sizeof why, "stream (flags %u) gave %zu bytes, full decode %zu", flags, all.len, want->len);
        res = why;
    }
    free(all.data);
    fr_tok_text_release(&piece);
    fr_detok_destroy(d);
    return res;
}

static void report(const char *name, const char *problem) {
    if (problem) {
        failed++;
        printf("FAIL %-22s %s\n", name, problem);
    } else
        passed++;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: tok_check DIR CORPUS_DIR [--exact] [--oracle ORACLE.json NAME]\n");
        return 2;
    }
    const char *dir = argv[1], *corpus = argv[2], *oracle_path = NULL, *name = NULL;
    bool exact = false;
    for (int i = 3; i < argc; i++) {
        if (!strcmp(argv[i], "--exact")) exact = true;
        else if (!strcmp(argv[i], "--oracle") && i + 2 < argc) oracle_path = argv[++i], name = argv[++i];
        else return fprintf(stderr, "tok_check: bad argument %s\n", argv[i]), 2;
    }
    fr_error err = {0};
    fr_tokenizer *t = NULL;
    if (fr_tokenizer_load(dir, &t, &err)) return fprintf(stderr, "tok_check: %s\n", err.msg), 1;
    cJSON *oracle = NULL;
    const cJSON *mine = NULL;
    if (oracle_path) {
        char *text;
        size_t len;
        if (fr_read_file(oracle_path, (size_t)1 << 30, &text, &len, &err) || fr_json_parse(text, len, oracle_path, &oracle, &err))
            return fprintf(stderr, "tok_check: %s\n", err.msg), 1;
        free(text);
        mine = cJSON_GetObjectItemCaseSensitive(oracle, name);
        if (!mine) return fprintf(stderr, "tok_check: %s has no entry %s\n", oracle_path, name), 1;
    }
    DIR *dd = opendir(corpus);
    if (!dd) return fprintf(stderr, "tok_check: cannot open %s\n", corpus), 1;
    char *names[512];
    int n = 0;
    for (struct dirent *e; (e = readdir(dd)) && n < 512;)
        if (e->d_name[0] != '.') names[n++] = strdup(e->d_name);
    closedir(dd);
    qsort(names, (size_t)n, sizeof *names, cmpstr);

    fr_tok_ids ids = {0};
    fr_tok_text dec = {0};
    for (int c = 0; c < n; c++) {
        char path[4096], label[900];
        snprintf(path, sizeof path, "%s/%s", corpus, names[c]);
        char *text;
        size_t len;
        if (fr_read_file(path, (size_t)64 << 20, &text, &len, &err)) return fprintf(stderr, "tok_check: %s\n", err.msg), 1;
        if (fr_tokenizer_encode(t, text, len, 0, &ids, &err)) {
            snprintf(label, sizeof label, "encode: %s", err.msg);
            report(names[c], label);
            free(text);
            continue;
        }
        const cJSON *ref = mine ? cJSON_GetObjectItemCaseSensitive(mine, names[c]) : NULL;
        static const unsigned flag_sets[4] = {0, FR_TOK_SKIP_SPECIAL, FR_TOK_LOSSY, FR_TOK_LOSSY | FR_TOK_SKIP_SPECIAL};
        for (int f = 0; f < 4; f++) {
            unsigned fl = flag_sets[f];
            snprintf(label, sizeof label, "%s/%s%s", names[c], fl & FR_TOK_LOSSY ? "lossy" : "raw",
                     fl & FR_TOK_SKIP_SPECIAL ? "+skip" : "");
            if (fr_tokenizer_decode(t, ids.ids, ids.n, fl, &dec, &err)) {
                report(label, err.msg);
                continue;
            }
            report(label, check_stream(t, &ids, fl, &dec));
            if (fl == 0 && exact && !ref)
                report(label, dec.len == len && !memcmp(dec.data, text, len) ? NULL : "decode(encode(x)) != x");
            if ((fl & FR_TOK_LOSSY) && ref) { /* the oracle's ids, so encode differences do not show here */
                const cJSON *rids = cJSON_GetObjectItemCaseSensitive(ref, "ids");
                int64_t k = 0, nr = cJSON_GetArraySize(rids);
                int32_t *rv = malloc((size_t)(nr + 1) * sizeof *rv);
                for (const cJSON *x = rids ? rids->child : NULL; rv && x; x = x->next) rv[k++] = (int32_t)x->valuedouble;
                const cJSON *want = cJSON_GetObjectItemCaseSensitive(ref, fl & FR_TOK_SKIP_SPECIAL ? "decoded_skip" : "decoded");
                bool ok = rv && !fr_tokenizer_decode(t, rv, k, fl, &dec, &err) && cJSON_IsString(want) &&
                          strlen(want->valuestring) == 2 * dec.len;
                for (size_t i = 0; ok && i < dec.len; i++) { /* the oracle gives UTF-8 as hex */
                    char hx[3];
                    snprintf(hx, sizeof hx, "%02x", (unsigned char)dec.data[i]);
                    ok = want->valuestring[2 * i] == hx[0] && want->valuestring[2 * i + 1] == hx[1];
                }
                free(rv);
                report(label, ok ? NULL : "decode of the oracle's ids differs from transformers.js");
            }
        }
        free(text);
    }
    for (int c = 0; c < n; c++) free(names[c]);
    printf("%d passed, %d failed\n", passed, failed);
    fr_tok_ids_release(&ids);
    fr_tok_text_release(&dec);
    fr_tokenizer_free(t);
    cJSON_Delete(oracle);
    return failed ? 1 : 0;
}
