/* test_tokenizer.c - the tokenizer's pieces on hand-checked inputs: regex translation and
 * Kimi's split pattern, Split behaviours (the examples of HF's documentation), Digits,
 * Metaspace, normalizers, added tokens (single_word, lstrip, rstrip, normalized, longest
 * match), BPE options, tiktoken loading and Kimi's chunking, decode flags, the streaming
 * detokenizer on split characters, and a fuzz pass that must never crash and must
 * round-trip bytes. Tokenizers are written to a temporary directory; kjv-tiny is used
 * when the repository has it. The oracle comparison is tests/tokenizer/. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "io/json_util.h"
#include "tokenizer/tok_impl.h"
#include "tokenizer/tokenizer.h"

static char tmpdir[64];

/* ------------------------------------------------------------------ helpers */

static void write_file(const char *dir, const char *name, const char *data, size_t n) {
    char path[512];
    mkdir(dir, 0755);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) abort();
    fwrite(data, 1, n, f);
    fclose(f);
}

static void write_str(const char *dir, const char *name, const char *s) { write_file(dir, name, s, strlen(s)); }

/* Pre-tokenize text with the pre_tokenizer JSON pj; pieces joined by '|'. */
static char *pretok_pieces(const char *pj, const char *text, size_t len) {
    fr_error err = {0};
    cJSON *j = cJSON_Parse(pj);
    fr_pretok *p = NULL;
    bool bl;
    static char out[4096];
    out[0] = 0;
    if (!j || fr_pretok_parse(j, "test", &p, &bl, &err)) {
        snprintf(out, sizeof out, "ERROR %s", err.msg);
        cJSON_Delete(j);
        return out;
    }
    fr_regex_scratch sc;
    fr_buf arena = {0};
    fr_spans a = {0}, b = {0};
    fr_regex_scratch_init(&sc, &err);
    fr_buf_add(&arena, text, len, &err);
    if (fr_pretok_run(p, &sc, &arena, len, true, &a, &b, &err) == FR_OK) {
        size_t o = 0;
        for (size_t i = 0; i < a.n && o + a.v[i].len + 2 < sizeof out; i++) {
            if (i) out[o++] = '|';
            memcpy(out + o, arena.p + a.v[i].off, a.v[i].len);
            o += a.v[i].len;
        }
        out[o] = 0;
    } else
        snprintf(out, sizeof out, "ERROR %s", err.msg);
    fr_regex_scratch_release(&sc);
    fr_buf_release(&arena);
    free(a.v);
    free(b.v);
    fr_pretok_free(p);
    cJSON_Delete(j);
    return out;
}

static char *split_with(const char *pcre2_pattern, const char *text) {
    static char pj[2048];
    cJSON *o = cJSON_CreateObject(), *pat = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", "Split");
    cJSON_AddStringToObject(pat, "Regex", pcre2_pattern);
    cJSON_AddItemToObject(o, "pattern", pat);
    cJSON_AddStringToObject(o, "behavior", "Isolated");
    char *s = cJSON_PrintUnformatted(o);
    snprintf(pj, sizeof pj, "%s", s);
    free(s);
    cJSON_Delete(o);
    return pretok_pieces(pj, text, strlen(text));
}

/* Kimi's pattern (hand translation, compiled without further translation). */
static char *kimi_pieces(const char *text) {
    fr_error err = {0};
    fr_pretok *p = NULL;
    static char out[4096];
    if (fr_pretok_from_regex(fr_kimi_pattern, "kimi", &p, &err)) return strcpy(out, "ERROR");
    fr_regex_scratch sc;
    fr_buf arena = {0};
    fr_spans a = {0}, b = {0};
    size_t len = strlen(text), o = 0;
    fr_regex_scratch_init(&sc, &err);
    fr_buf_add(&arena, text, len, &err);
    out[0] = 0;
    if (!fr_pretok_run(p, &sc, &arena, len, true, &a, &b, &err)) {
        for (size_t i = 0; i < a.n && o + a.v[i].len + 2 < sizeof out; i++) {
            if (i) out[o++] = '|';
            memcpy(out + o, arena.p + a.v[i].off, a.v[i].len);
            o += a.v[i].len;
        }
        out[o] = 0;
    }
    fr_regex_scratch_release(&sc);
    fr_buf_release(&arena);
    free(a.v);
    free(b.v);
    fr_pretok_free(p);
    return out;
}

static char *normalize(const char *nj, const char *text, size_t len) {
    fr_error err = {0};
    cJSON *j = cJSON_Parse(nj);
    fr_normalizer *n = NULL;
    static char out[1024];
    fr_buf o = {0};
    fr_regex_scratch sc;
    fr_regex_scratch_init(&sc, &err);
    if (!j || fr_normalizer_parse(j, "test", &n, &err) || !n || fr_normalizer_run(n, &sc, (const uint8_t *)text, len, &o, &err))
        snprintf(out, sizeof out, "ERROR %s", err.msg);
    else
        snprintf(out, sizeof out, "%.*s", (int)o.n, (const char *)o.p);
    fr_buf_release(&o);
    fr_regex_scratch_release(&sc);
    fr_normalizer_free(n);
    cJSON_Delete(j);
    return out;
}

static fr_tokenizer *load(const char *dir) {
    fr_error err = {0};
    fr_tokenizer *t = NULL;
    if (fr_tokenizer_load(dir, &t, &err)) fprintf(stderr, "load %s: %s\n", dir, err.msg);
    return t;
}

/* Encode and render ids as "1,2,3". */
static char *enc(const fr_tokenizer *t, const char *text, size_t len, unsigned flags) {
    static char out[1 << 18];
    fr_error err = {0};
    fr_tok_ids ids = {0};
    out[0] = 0;
    if (fr_tokenizer_encode(t, text, len, flags, &ids, &err)) {
        snprintf(out, sizeof out, "ERROR %s", err.msg);
    } else {
        size_t o = 0;
        for (int64_t i = 0; i < ids.n && o + 16 < sizeof out; i++) o += (size_t)snprintf(out + o, 16, i ? ",%d" : "%d", ids.ids[i]);
    }
    fr_tok_ids_release(&ids);
    return out;
}

/* ------------------------------------------------------------------ tests */

static void test_regex_translation(void) {
    fr_error err = {0};
    char *t = NULL;
    CHECK(fr_regex_translate("a\\sb\\S", 7, &t, "t", &err) == FR_OK && t && !strcmp(t, "a\\p{White_Space}b\\P{White_Space}"));
    free(t);
    CHECK(fr_regex_translate("[\\p{Han}\\p{L}]", 14, &t, "t", &err) == FR_OK && t && !strcmp(t, "[\\p{sc:Han}\\p{L}]"));
    free(t);
    CHECK(fr_regex_translate("[a-z&&[^aeiou]]+", 16, &t, "t", &err) == FR_OK && t &&
          !strcmp(t, "(?:(?=[^aeiou])[a-z])+"));
    free(t);
    CHECK(fr_regex_translate("[a", 2, &t, "t", &err) == FR_ERR_UNSUPPORTED);
    /* the intersection means what it says */
    CHECK(!strcmp(split_with("[a-z&&[^aeiou]]+", "strength"), "str|e|ngth"));
    /* the translated original and the hand translation split alike */
    char *kimi_t = NULL;
    CHECK(fr_regex_translate(fr_kimi_pattern_onig, strlen(fr_kimi_pattern_onig), &kimi_t, "kimi", &err) == FR_OK);
    const char *samples[] = {"Hello世界HELLOworld I'm  DON'T 1234567", "中文English混合Text。カタカナ、ひらがな",
                             "  x\n\n\ty \r\n z!!  ", "Ǆemal ǅemal ǆemal naïve Ωmega", "a1b22c333d4444"};
    for (int i = 0; i < 5 && kimi_t; i++) {
        char a[4096];
        snprintf(a, sizeof a, "%s", split_with(kimi_t, samples[i]));
        CHECK_MSG(!strcmp(a, kimi_pieces(samples[i])), "%s vs %s", a, kimi_pieces(samples[i]));
    }
    free(kimi_t);
}

static void test_kimi_pattern(void) {
    /* Han runs stand alone; Script=Han keeps 。 and ー (Script_Extensions Han) out */
    CHECK(!strcmp(kimi_pieces("你好世界Hello"), "你好世界|Hello"));
    CHECK(!strcmp(kimi_pieces("东京。"), "东京|。"));
    CHECK(!strcmp(kimi_pieces("东京。ラーメン"), "东京|。ラーメン")); /* a non-letter may lead a word */
    CHECK(!strcmp(kimi_pieces("中文English混合"), "中文|English|混合"));
    /* case splits: camelCase breaks before the capital; an all-caps run takes a trailing word */
    CHECK(!strcmp(kimi_pieces("helloWorld"), "hello|World"));
    CHECK(!strcmp(kimi_pieces("getHTTPResponse"), "get|HTTPResponse"));
    CHECK(!strcmp(kimi_pieces("HELLO world"), "HELLO| world"));
    /* contractions, either case */
    CHECK(!strcmp(kimi_pieces("DON'T don't He'S we'VE"), "DON'T| don't| He'S| we'VE"));
    /* digits in threes, apart from letters */
    CHECK(!strcmp(kimi_pieces("1234567 x12"), "123|456|7| x|12"));
    /* whitespace: the last space goes with the next word; newlines group */
    CHECK(!strcmp(kimi_pieces("a   b\n\n c"), "a|  | b|\n\n| c"));
    CHECK(!strcmp(kimi_pieces("x!!!\n\ny"), "x|!!!\n\n|y"));
}

static void test_split_behaviors(void) {
    /* HF's documented example: "the-final--countdown" split on "-" */
    const char *text = "the-final--countdown";
    struct {
        const char *behavior, *want;
    } cases[] = {
        {"Removed", "the|final|countdown"},
        {"Isolated", "the|-|final|-|-|countdown"},
        {"MergedWithPrevious", "the-|final-|-|countdown"},
        {"MergedWithNext", "the|-final|-|-countdown"},
        {"Contiguous", "the|-|final|--|countdown"},
    };
    for (int i = 0; i < 5; i++) {
        char pj[256];
        snprintf(pj, sizeof pj, "{\"type\":\"Split\",\"pattern\":{\"String\":\"-\"},\"behavior\":\"%s\",\"invert\":false}",
                 cases[i].behavior);
        char *got = pretok_pieces(pj, text, strlen(text));
        CHECK_MSG(!strcmp(got, cases[i].want), "%s: %s", cases[i].behavior, got);
    }
    /* invert: the letters are the pieces, the rest is removed */
    CHECK(!strcmp(pretok_pieces("{\"type\":\"Split\",\"pattern\":{\"Regex\":\"\\\\p{L}+\"},\"behavior\":\"Removed\",\"invert\":true}",
                                "ab, cd!", 7), "ab|cd"));
    /* a literal with regex metacharacters */
    CHECK(!strcmp(pretok_pieces("{\"type\":\"Split\",\"pattern\":{\"String\":\".*\"},\"behavior\":\"Removed\"}", "a.*b.c", 6),
                  "a|b.c"));
    /* Digits: char::is_numeric, so Arabic-Indic digits count */
    CHECK(!strcmp(pretok_pieces("{\"type\":\"Digits\",\"individual_digits\":true}", "a12b\xd9\xa3", 6), "a|1|2|b|\xd9\xa3"));
    CHECK(!strcmp(pretok_pieces("{\"type\":\"Digits\",\"individual_digits\":false}", "a123b\xd9\xa3\xd9\xa4", 9),
                  "a|123|b|\xd9\xa3\xd9\xa4"));
    /* Metaspace (HF's own tests) */
    const char *ms = "{\"type\":\"Metaspace\",\"replacement\":\"\xe2\x96\x81\",\"prepend_scheme\":\"always\",\"split\":true}";
    CHECK(!strcmp(pretok_pieces(ms, "Hey friend!", 11), "\xe2\x96\x81Hey|\xe2\x96\x81" "friend!"));
    CHECK(!strcmp(pretok_pieces(ms, "Hey   friend!", 13),
                  "\xe2\x96\x81Hey|\xe2\x96\x81|\xe2\x96\x81|\xe2\x96\x81" "friend!"));
    /* ByteLevel: prefix space, GPT-2 split */
    CHECK(!strcmp(pretok_pieces("{\"type\":\"ByteLevel\",\"add_prefix_space\":true,\"use_regex\":true}", "hello  world's", 14),
                  " hello| | world|'s"));
    /* invalid UTF-8 stays in the pieces (between matches) */
    CHECK(!strcmp(pretok_pieces("{\"type\":\"ByteLevel\",\"add_prefix_space\":false}", "ab\xff\xfe" "cd", 6), "ab|\xff\xfe|cd"));
}

static void test_normalizers(void) {
    CHECK(!strcmp(normalize("{\"type\":\"NFC\"}", "Cafe\xcc\x81!", 7), "Caf\xc3\xa9!"));
    CHECK(!strcmp(normalize("{\"type\":\"NFC\"}", "a\xff" "e\xcc\x81", 5), "a\xff\xc3\xa9")); /* invalid byte kept */
    CHECK(!strcmp(normalize("{\"type\":\"NFKC\"}", "\xef\xac\x81 \xe2\x91\xa0 \xef\xbc\xa1", 11), "fi 1 A"));
    CHECK(!strcmp(normalize("{\"type\":\"NFD\"}", "\xc3\xa9", 2), "e\xcc\x81"));
    CHECK(!strcmp(normalize("{\"type\":\"Lowercase\"}", "ABC \xc4\xb0", 6), "abc i\xcc\x87"));
    CHECK(!strcmp(normalize("{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"NFD\"},{\"type\":\"StripAccents\"}]}",
                            "r\xc3\xa9sum\xc3\xa9", 8), "resume"));
    CHECK(!strcmp(normalize("{\"type\":\"Strip\",\"strip_left\":true,\"strip_right\":true}", " \t x y \xe3\x80\x80", 10), "x y"));
    CHECK(!strcmp(normalize("{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Prepend\",\"prepend\":\"_\"},"
                            "{\"type\":\"Replace\",\"pattern\":{\"Regex\":\"\\\\s+\"},\"content\":\"_\"}]}", "a  b\tc", 6),
                  "_a_b_c"));
    CHECK(!strcmp(normalize("{\"type\":\"Prepend\",\"prepend\":\"_\"}", "", 0), "")); /* nothing to prepend to */
}

/* A small char-level tokenizer: every printable ASCII character, a few merges, and added
 * tokens with each option. */
static void write_charlevel(const char *dir, const char *normalizer, const char *extra_model) {
    cJSON *root = cJSON_CreateObject(), *model = cJSON_CreateObject(), *vocab = cJSON_CreateObject();
    int id = 0;
    char s[2] = {0};
    cJSON_AddNumberToObject(vocab, "<unk>", id++);
    for (int c = 32; c < 127; c++) s[0] = (char)c, cJSON_AddNumberToObject(vocab, s, id++);
    const char *merged[] = {"ab", "abc", "he", "hel", "hell", "hello"};
    for (int i = 0; i < 6; i++) cJSON_AddNumberToObject(vocab, merged[i], id++);
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        cJSON_AddNumberToObject(vocab, name, id++);
    }
    cJSON *merges = cJSON_Parse("[\"a b\", \"ab c\", \"h e\", \"he l\", \"hel l\", \"hell o\"]");
    cJSON_AddStringToObject(model, "type", "BPE");
    cJSON_AddItemToObject(model, "vocab", vocab);
    cJSON_AddItemToObject(model, "merges", merges);
    cJSON *ex = cJSON_Parse(extra_model ? extra_model : "{}");
    for (cJSON *e = ex->child; e; e = e->next) cJSON_AddItemToObject(model, e->string, cJSON_Duplicate(e, 1));
    cJSON_Delete(ex);
    cJSON_AddItemToObject(root, "model", model);
    char added[2048];
    snprintf(added, sizeof added,
             "[{\"id\":%d,\"content\":\"<s>\",\"special\":true,\"normalized\":false},"
             "{\"id\":%d,\"content\":\"WORD\",\"special\":false,\"single_word\":true,\"normalized\":false},"
             "{\"id\":%d,\"content\":\"<L>\",\"special\":false,\"lstrip\":true,\"normalized\":false},"
             "{\"id\":%d,\"content\":\"<R>\",\"special\":false,\"rstrip\":true,\"normalized\":false},"
             "{\"id\":%d,\"content\":\"<a>\",\"special\":true,\"normalized\":false},"
             "{\"id\":%d,\"content\":\"<a><b>\",\"special\":true,\"normalized\":false},"
             "{\"id\":%d,\"content\":\"SHOUT\",\"special\":false,\"normalized\":true}]",
             id, id + 1, id + 2, id + 3, id + 4, id + 5, id + 6);
    cJSON_AddItemToObject(root, "added_tokens", cJSON_Parse(added));
    cJSON_AddItemToObject(root, "normalizer", normalizer ? cJSON_Parse(normalizer) : cJSON_CreateNull());
    cJSON_AddItemToObject(root, "pre_tokenizer", cJSON_CreateNull());
    cJSON_AddItemToObject(root, "decoder", cJSON_Parse("{\"type\":\"Fuse\"}"));
    char *txt = cJSON_PrintUnformatted(root);
    write_str(dir, "tokenizer.json", txt);
    write_str(dir, "tokenizer_config.json", "{\"bos_token\":\"<s>\",\"add_bos_token\":true}");
    free(txt);
    cJSON_Delete(root);
}

/* ids: <unk> 0, ASCII c -> c - 31, ab 96, abc 97, he 98, hel 99, hell 100, hello 101,
 * <0xXX> 102 + X, added <s> 358, WORD 359, <L> 360, <R> 361, <a> 362, <a><b> 363, SHOUT 364 */
static void test_added_tokens(void) {
    char dir[128];
    snprintf(dir, sizeof dir, "%s/charlevel", tmpdir);
    write_charlevel(dir, "{\"type\":\"Lowercase\"}", "{\"unk_token\":\"<unk>\"}");
    fr_tokenizer *t = load(dir);
    CHECK(t != NULL);
    if (!t) return;
    CHECK(!strcmp(enc(t, "hello", 5, 0), "101"));
    CHECK(!strcmp(enc(t, "hello", 5, FR_TOK_ADD_SPECIAL), "358,101")); /* add_bos_token */
    CHECK(!strcmp(enc(t, "abcab", 5, 0), "97,96"));
    /* single_word: only where no word character touches it */
    CHECK(!strcmp(enc(t, "WORD xWORD WORD.", 16, 0), "359,1,89,88,80,83,69,1,359,15")); /* the rest is lowercased */
    /* lstrip / rstrip swallow the whitespace beside the token */
    CHECK(!strcmp(enc(t, "x  <L>y", 7, 0), "89,360,90"));
    CHECK(!strcmp(enc(t, "x<R>  \ty", 8, 0), "89,361,90"));
    /* longest match wins */
    CHECK(!strcmp(enc(t, "<a><b><a>", 9, 0), "363,362"));
    /* a normalized token matches the normalized (lowercased) text: its content too is lowercased */
    CHECK(!strcmp(enc(t, "say Shout", 9, 0), "84,66,90,1,364"));
    /* special-token strings in text are matched, unless FR_TOK_SPLIT_SPECIAL */
    CHECK(!strcmp(enc(t, "<s>", 3, 0), "358"));
    CHECK(!strcmp(enc(t, "<s>", 3, FR_TOK_SPLIT_SPECIAL), "29,84,31"));
    /* characters outside the vocabulary: <unk> (no byte fallback here) */
    CHECK(!strcmp(enc(t, "a\xc3\xa9" "b", 4, 0), "66,0,67"));
    /* lookups */
    size_t len;
    const char *s = fr_tokenizer_id_to_token(t, 363, &len);
    CHECK(s && len == 6 && !memcmp(s, "<a><b>", 6));
    CHECK(fr_tokenizer_token_to_id(t, "hell", 4) == 100);
    CHECK(fr_tokenizer_token_to_id(t, "nope", 4) == -1);
    CHECK(fr_tokenizer_bos_id(t) == 358 && fr_tokenizer_eos_id(t) == -1);
    CHECK(fr_tokenizer_is_special(t, 362) && !fr_tokenizer_is_special(t, 359));
    CHECK(fr_tokenizer_vocab_size(t) == 365);
    fr_tokenizer_free(t);

    /* byte fallback and fused unknowns */
    write_charlevel(dir, NULL, "{\"byte_fallback\":true}");
    t = load(dir);
    CHECK(t && !strcmp(enc(t, "a\xc3\xa9" "b", 4, 0), "66,297,271,67"));
    fr_tokenizer_free(t);
    write_charlevel(dir, NULL, "{\"unk_token\":\"<unk>\",\"fuse_unk\":true}");
    t = load(dir);
    CHECK(t && !strcmp(enc(t, "a\xc3\xa9\xc3\xa9" "b", 6, 0), "66,0,67"));
    fr_tokenizer_free(t);
    /* no unk, no fallback: unknown characters disappear before merging, as in HF's
     * merge_word, so a and b meet and merge (transformers.js would give 66,67) */
    write_charlevel(dir, NULL, NULL);
    t = load(dir);
    CHECK(t && !strcmp(enc(t, "a\xc3\xa9" "b", 4, 0), "96"));
    fr_tokenizer_free(t);
}

static void test_bpe_order(void) {
    /* merges by rank, ties to the leftmost; ignore_merges takes whole words */
    char dir[128];
    snprintf(dir, sizeof dir, "%s/order", tmpdir);
    write_str(dir, "tokenizer.json",
              "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"aa\":2,\"ab\":3,\"aab\":4,\"ba\":5},"
              "\"merges\":[[\"a\",\"a\"],[\"b\",\"a\"],[\"a\",\"b\"],[\"aa\",\"b\"]]},\"added_tokens\":[]}");
    fr_tokenizer *t = load(dir);
    CHECK(t && !strcmp(enc(t, "aaa", 3, 0), "2,0"));     /* (a,a) leftmost first */
    CHECK(t && !strcmp(enc(t, "aab", 3, 0), "4"));       /* aa + b */
    CHECK(t && !strcmp(enc(t, "abab", 4, 0), "0,5,1"));  /* (b,a) outranks (a,b) */
    fr_tokenizer_free(t);
    write_str(dir, "tokenizer.json",
              "{\"model\":{\"type\":\"BPE\",\"ignore_merges\":true,\"vocab\":{\"a\":0,\"b\":1,\"ab\":2,\"ba\":3,\"bab\":4},"
              "\"merges\":[\"a b\"]},\"added_tokens\":[]}");
    t = load(dir);
    CHECK(t && !strcmp(enc(t, "bab", 3, 0), "4")); /* in the vocabulary: taken whole */
    CHECK(t && !strcmp(enc(t, "babb", 4, 0), "1,2,1"));
    fr_tokenizer_free(t);
    /* continuing_subword_prefix / end_of_word_suffix as HF applies them */
    write_str(dir, "tokenizer.json",
              "{\"model\":{\"type\":\"BPE\",\"continuing_subword_prefix\":\"##\",\"end_of_word_suffix\":\"</w>\","
              "\"vocab\":{\"a\":0,\"##b\":1,\"##c</w>\":2,\"a##b\":3,\"ab\":4},\"merges\":[\"a ##b\"]},\"added_tokens\":[]}");
    t = load(dir);
    CHECK(t && !strcmp(enc(t, "abc", 3, 0), "4,2"));
    fr_tokenizer_free(t);
}

static void test_tiktoken(void) {
    char dir[128];
    snprintf(dir, sizeof dir, "%s/tt", tmpdir);
    /* all 256 bytes (rank = byte), then "aa" 256, "aaa" 257, "ab" 258 */
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *model = malloc(65536);
    size_t o = 0;
    for (int b = 0; b < 256; b++)
        o += (size_t)sprintf(model + o, "%c%c== %d\n", b64[b >> 2], b64[(b & 3) << 4], b);
    o += (size_t)sprintf(model + o, "YWE= 256\nYWFh 257\nYWI= 258\n");
    write_file(dir, "tiktoken.model", model, o);
    free(model);
    write_str(dir, "tokenizer_config.json",
              "{\"added_tokens_decoder\":{\"259\":{\"content\":\"[BOS]\",\"special\":true},"
              "\"260\":{\"content\":\"[EOS]\",\"special\":true},\"262\":{\"content\":\"<|im_end|>\",\"special\":true}}}");
    fr_tokenizer *t = load(dir);
    CHECK(t != NULL);
    if (!t) return;
    CHECK(fr_tokenizer_vocab_size(t) == 259 + 258);
    CHECK(fr_tokenizer_bos_id(t) == 259 && fr_tokenizer_eos_id(t) == 260);
    CHECK(!strcmp(enc(t, "aaaa ab", 7, 0), "256,256,32,258")); /* aa+aa (never aaa+a); " ab" -> " " + ab */
    CHECK(!strcmp(enc(t, "aaaaa<|im_end|>[EOS]", 20, 0), "256,257,262,260"));
    /* unnamed reserved slots are special tokens too */
    CHECK(fr_tokenizer_token_to_id(t, "<|reserved_token_261|>", 22) == 261);
    CHECK(!strcmp(enc(t, "<|reserved_token_261|>", 22, 0), "261"));
    /* Kimi's chunking: a run of 25001 non-space characters is cut after 25000, so the last
     * 'a' stays alone (one piece of 25001 would end in aa + aaa) */
    char *text = malloc(25002);
    memset(text, 'a', 25001);
    text[25001] = 0;
    fr_tok_ids v = {0};
    fr_error e2 = {0};
    CHECK(fr_tokenizer_encode(t, text, 25001, 0, &v, &e2) == FR_OK && v.n == 12501 && v.ids[12499] == 256 &&
          v.ids[12500] == 'a');
    CHECK(fr_tokenizer_encode(t, text, 24999, 0, &v, &e2) == FR_OK && v.n == 12499 && v.ids[12498] == 257);
    memset(text, ' ', 25001); /* whitespace runs too */
    CHECK(fr_tokenizer_encode(t, text, 25001, 0, &v, &e2) == FR_OK && v.n == 25001);
    fr_tok_ids_release(&v);
    free(text);
    /* decode: bytes concatenated, specials skipped on request */
    int32_t ids[] = {259, 256, 32, 258, 262};
    fr_tok_text out = {0};
    fr_error err = {0};
    CHECK(fr_tokenizer_decode(t, ids, 5, 0, &out, &err) == FR_OK && !strcmp(out.data, "[BOS]aa ab<|im_end|>"));
    CHECK(fr_tokenizer_decode(t, ids, 5, FR_TOK_SKIP_SPECIAL, &out, &err) == FR_OK && !strcmp(out.data, "aa ab"));
    fr_tok_text_release(&out);
    fr_tokenizer_free(t);
}

static void test_decode_and_stream(const char *kjv) {
    fr_tokenizer *t = load(kjv);
    CHECK(t != NULL);
    if (!t) return;
    fr_error err = {0};
    fr_tok_ids ids = {0};
    fr_tok_text out = {0}, piece = {0};
    CHECK(fr_tokenizer_bos_id(t) == 0 && fr_tokenizer_eos_id(t) == 1 && fr_tokenizer_vocab_size(t) == 4096);
    /* add_bos_token: BOS first with special tokens on */
    CHECK(fr_tokenizer_encode(t, "In the beginning", 16, FR_TOK_ADD_SPECIAL, &ids, &err) == FR_OK && ids.n > 1 &&
          ids.ids[0] == 0);
    /* a 4-byte character split over byte tokens comes out only when complete */
    const char *emoji = "a\xf0\x9f\x98\x80" "b";
    CHECK(fr_tokenizer_encode(t, emoji, 6, 0, &ids, &err) == FR_OK && ids.n >= 3);
    fr_detok *d = NULL;
    CHECK(fr_detok_create(t, 0, &d, &err) == FR_OK);
    int emitted = 0, nonempty = 0;
    for (int64_t i = 0; i < ids.n; i++) {
        piece.len = 0;
        CHECK(fr_detok_push(d, ids.ids[i], &piece, &err) == FR_OK);
        for (size_t k = 0; k < piece.len; k++) CHECK(!(piece.data[k] == '\xf0' && k + 4 > piece.len)); /* never a cut emoji */
        emitted += (int)piece.len;
        nonempty += piece.len > 0;
    }
    piece.len = 0;
    CHECK(fr_detok_finish(d, &piece, &err) == FR_OK && piece.len == 0);
    CHECK(emitted == 6 && nonempty < ids.n);
    /* invalid bytes: raw mode passes them as soon as they are known bad; lossy gives U+FFFD */
    const char *bad = "x\xe4\xb8y\xff";
    CHECK(fr_tokenizer_encode(t, bad, 5, 0, &ids, &err) == FR_OK);
    CHECK(fr_tokenizer_decode(t, ids.ids, ids.n, 0, &out, &err) == FR_OK && out.len == 5 && !memcmp(out.data, bad, 5));
    CHECK(fr_tokenizer_decode(t, ids.ids, ids.n, FR_TOK_LOSSY, &out, &err) == FR_OK &&
          !strcmp(out.data, "x\xef\xbf\xbdy\xef\xbf\xbd"));
    fr_detok_destroy(d);
    d = NULL;
    CHECK(fr_detok_create(t, FR_TOK_LOSSY, &d, &err) == FR_OK);
    fr_tok_text all = {0};
    for (int64_t i = 0; i <= ids.n; i++) {
        piece.len = 0;
        CHECK((i < ids.n ? fr_detok_push(d, ids.ids[i], &piece, &err) : fr_detok_finish(d, &piece, &err)) == FR_OK);
        fr_text_add(&all, piece.data, piece.len, &err);
    }
    CHECK(all.len == out.len && !memcmp(all.data, out.data, out.len));
    /* a truncated character at the very end is flushed by finish */
    const char *cut = "ok\xe4\xb8";
    CHECK(fr_tokenizer_encode(t, cut, 4, 0, &ids, &err) == FR_OK);
    fr_detok_reset(d);
    all.len = 0;
    for (int64_t i = 0; i < ids.n; i++) {
        piece.len = 0;
        fr_detok_push(d, ids.ids[i], &piece, &err);
        fr_text_add(&all, piece.data, piece.len, &err);
    }
    CHECK(all.len == 2);
    piece.len = 0;
    CHECK(fr_detok_finish(d, &piece, &err) == FR_OK && !strcmp(piece.data, "\xef\xbf\xbd"));
    /* skip special; unknown ids are skipped */
    int32_t sp[] = {0, 1138, 1, 999999, -5};
    CHECK(fr_tokenizer_decode(t, sp, 5, FR_TOK_SKIP_SPECIAL, &out, &err) == FR_OK && !strcmp(out.data, "In"));
    CHECK(fr_tokenizer_decode(t, sp, 5, 0, &out, &err) == FR_OK && strstr(out.data, "In<") != NULL);
    fr_tok_text_release(&all);
    fr_tok_text_release(&piece);
    fr_tok_text_release(&out);
    fr_tok_ids_release(&ids);
    fr_detok_destroy(d);
    fr_tokenizer_free(t);
}

/* Random bytes and random ids: no crash, and byte-level round trips stay exact. */
static void test_fuzz(const char *kjv) {
    char dir[128];
    snprintf(dir, sizeof dir, "%s/charlevel", tmpdir);
    write_charlevel(dir, "{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"NFKC\"},{\"type\":\"Lowercase\"}]}",
                    "{\"byte_fallback\":true,\"unk_token\":\"<unk>\"}");
    fr_tokenizer *tk[2] = {kjv ? load(kjv) : NULL, load(dir)};
    fr_error err = {0};
    fr_tok_ids ids = {0};
    fr_tok_text out = {0}, piece = {0}, all = {0};
    uint64_t s = 0x9e3779b97f4a7c15ull;
    static const char *frags[] = {"<s>", "WORD", "<a><b>", " ", "\n", "\xe2\x96\x81", "\xf0\x9f\x98\x80", "\xc3", "\xff",
                                  "\xe4\xb8", "hello", "'s", "123", "\xd9\xa3", "\xe3\x80\x82", "<|endoftext|>", "\t\r\n"};
    int bad_roundtrip = 0, bad_stream = 0, errors = 0;
    for (int iter = 0; iter < 3000; iter++) {
        char text[512];
        size_t n = 0;
        int parts = (int)(s % 24);
        for (int p = 0; p < parts; p++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            if (s >> 60 < 6) {
                const char *f = frags[(s >> 33) % (sizeof frags / sizeof *frags)];
                size_t k = strlen(f);
                if (n + k < sizeof text) memcpy(text + n, f, k), n += k;
            } else if (n < sizeof text)
                text[n++] = (char)(s >> 40);
        }
        for (int k = 0; k < 2; k++) {
            fr_tokenizer *t = tk[k];
            if (!t) continue;
            if (fr_tokenizer_encode(t, text, n, iter & 1 ? FR_TOK_ADD_SPECIAL : 0, &ids, &err)) {
                errors++;
                continue;
            }
            if (k == 0 && !(iter & 1) &&
                (fr_tokenizer_decode(t, ids.ids, ids.n, 0, &out, &err) || out.len != n || memcmp(out.data, text, n)))
                bad_roundtrip++;
            /* random ids through the stream must equal the full decode */
            for (int64_t i = 0; i < ids.n; i++)
                if ((s >> (i % 50)) % 7 == 0) ids.ids[i] = (int32_t)((s >> 20) % 5000) - 100;
            unsigned fl = (iter & 1 ? FR_TOK_SKIP_SPECIAL : 0) | (iter & 2 ? FR_TOK_LOSSY : 0);
            fr_detok *d = NULL;
            if (fr_tokenizer_decode(t, ids.ids, ids.n, fl, &out, &err) || fr_detok_create(t, fl, &d, &err)) {
                errors++;
                continue;
            }
            all.len = 0;
            for (int64_t i = 0; i <= ids.n; i++) {
                piece.len = 0;
                if (i < ids.n ? fr_detok_push(d, ids.ids[i], &piece, &err) : fr_detok_finish(d, &piece, &err)) errors++;
                fr_text_add(&all, piece.data ? piece.data : "", piece.len, &err);
            }
            if (all.len != out.len || (out.len && memcmp(all.data, out.data, out.len))) bad_stream++;
            fr_detok_destroy(d);
        }
    }
    CHECK_MSG(errors == 0, "%d errors", errors);
    CHECK_MSG(bad_roundtrip == 0, "%d byte-level round trips failed", bad_roundtrip);
    CHECK_MSG(bad_stream == 0, "%d streams differ from the full decode", bad_stream);
    fr_tok_ids_release(&ids);
    fr_tok_text_release(&out);
    fr_tok_text_release(&piece);
    fr_tok_text_release(&all);
    fr_tokenizer_free(tk[0]);
    fr_tokenizer_free(tk[1]);
}

/* One tokenizer, several threads encoding at once: the shared word cache is taken by one
 * of them at a time, and every thread must get the single-threaded answer. */
typedef struct {
    const fr_tokenizer *t;
    const char *text;
    size_t len;
    const fr_tok_ids *want;
    int bad;
} thread_job;

static void *encode_many(void *arg) {
    thread_job *j = arg;
    fr_tok_ids ids = {0};
    fr_error err = {0};
    for (int r = 0; r < 40; r++)
        if (fr_tokenizer_encode(j->t, j->text + (r % 7), j->len - (size_t)(r % 7), 0, &ids, &err) ||
            (r % 7 == 0 && (ids.n != j->want->n || memcmp(ids.ids, j->want->ids, (size_t)ids.n * sizeof *ids.ids))))
            j->bad++;
    fr_tok_ids_release(&ids);
    return NULL;
}

static void test_threads(const char *kjv) {
    fr_tokenizer *t = load(kjv);
    if (!t) return;
    static char text[20000];
    for (size_t i = 0; i + 1 < sizeof text; i++) text[i] = "In the beginning God created the heaven and the earth.\n"[i % 56];
    fr_tok_ids want = {0};
    fr_error err = {0};
    CHECK(fr_tokenizer_encode(t, text, strlen(text), 0, &want, &err) == FR_OK);
    pthread_t th[4];
    thread_job jobs[4];
    for (int i = 0; i < 4; i++) {
        jobs[i] = (thread_job){t, text, strlen(text), &want, 0};
        CHECK(pthread_create(&th[i], NULL, encode_many, &jobs[i]) == 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CHECK_MSG(jobs[i].bad == 0, "thread %d: %d wrong encodes", i, jobs[i].bad);
    }
    fr_tok_ids_release(&want);
    fr_tokenizer_free(t);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/fr_tok_XXXXXX");
    if (!mkdtemp(tmpdir)) return perror("mkdtemp"), 1;
    /* models/kjv-tiny, found from this file's path (CMake compiles it by absolute path) */
    char kjv[1024];
    snprintf(kjv, sizeof kjv, "%s", __FILE__);
    char *cut = strstr(kjv, "/tests/unit/");
    bool have_kjv = false;
    if (cut) {
        strcpy(cut, "/models/kjv-tiny");
        char p[1100];
        snprintf(p, sizeof p, "%s/tokenizer.json", kjv);
        have_kjv = access(p, R_OK) == 0;
    }
    test_regex_translation();
    test_kimi_pattern();
    test_split_behaviors();
    test_normalizers();
    test_added_tokens();
    test_bpe_order();
    test_tiktoken();
    if (have_kjv) test_decode_and_stream(kjv), test_threads(kjv);
    else printf("models/kjv-tiny not found: skipping its checks\n");
    test_fuzz(have_kjv ? kjv : NULL);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    return check_report("unit_tokenizer");
}
