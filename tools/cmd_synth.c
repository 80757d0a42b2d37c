/* cmd_synth.c - `frontier synth`: write a random-weight checkpoint.
 *
 *   frontier synth PRESET|CONFIG.json OUT_DIR [--seed S] [--layers N] [--experts E]
 *                  [--fp8-blocks] [--single-file]
 *   frontier synth PRESET|CONFIG.json --print-config [--layers N] [--experts E] [--fp8-blocks]
 *   ... [--tokenizer TOKDIR]: copy TOKDIR's tokenizer files into OUT_DIR and size the
 *   vocabulary (and BOS/EOS ids) to that tokenizer, so the checkpoint runs text end to end.
 *
 * --print-config writes the config.json the checkpoint would get to stdout and no
 * weights (tests read a real-shaped preset's config this way without writing GBs).
 * PRESET is one of src/model/synth.c's released configs (tiny, moonlight,
 * deepseek-v3, kimi-k2.5, deepseek-v3.2, glm-5, and the small DSA variants
 * deepseek-v3.2-tiny, glm-5-tiny); an argument ending in .json, or naming an existing
 * file, is read as a config.json instead. The work is fr_synth_write's; this file
 * only parses the command line strictly (usage errors exit 2, failures 1) and
 * reports one line on success: the directory, tensor count and data bytes, read
 * back from what was written so the line also proves the files open. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "args.h"
#include "tokenizer/tokenizer.h"
#include "io/json_util.h"
#include "model/synth.h"

#define USAGE                                                                              \
    "usage: frontier synth PRESET|CONFIG.json OUT_DIR [--seed S] [--layers N] [--experts E]" \
    " [--fp8-blocks] [--single-file] [--tokenizer TOKDIR] | PRESET|CONFIG.json --print-config [...]"
#define MAX_CONFIG_BYTES (16u << 20)

int fr_cmd_synth(int argc, char **argv);

/* Files a checkpoint's tokenizer and chat template live in (those present are copied). */
static const char *const TOKENIZER_FILES[] = {"tokenizer.json", "tokenizer_config.json", "tiktoken.model",
                                               "special_tokens_map.json", "chat_template.jinja"};

static fr_status copy_file(const char *from, const char *to, fr_error *err) {
    char *buf = NULL;
    size_t len = 0;
    fr_status rc = fr_read_file(from, FR_TOK_MAX_JSON, &buf, &len, err);
    if (rc) return rc;
    FILE *f = fopen(to, "wb");
    if (!f) {
        free(buf);
        return fr_fail(err, FR_ERR_IO, "create %s", to);
    }
    size_t w = fwrite(buf, 1, len, f);
    free(buf);
    if (fclose(f) != 0 || w != len) return fr_fail(err, FR_ERR_IO, "write %s", to);
    return FR_OK;
}

/* Set vocab_size (and the BOS/EOS ids the tokenizer names) in the config text. */
static fr_status size_to_tokenizer(char **json, const char *tokdir, fr_error *err) {
    fr_tokenizer *tok = NULL;
    fr_status rc = fr_tokenizer_load(tokdir, &tok, err);
    if (rc) return rc;
    cJSON *root = cJSON_Parse(*json);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        fr_tokenizer_free(tok);
        return fr_fail(err, FR_ERR_FORMAT, "config is not a JSON object");
    }
    cJSON *text = cJSON_GetObjectItemCaseSensitive(root, "text_config");
    if (!cJSON_IsObject(text)) text = root;
    struct { const char *key; double v; } set[] = {
        {"vocab_size", (double)fr_tokenizer_vocab_size(tok)},
        {"bos_token_id", (double)fr_tokenizer_bos_id(tok)},
        {"eos_token_id", (double)fr_tokenizer_eos_id(tok)},
    };
    for (size_t i = 0; i < sizeof set / sizeof *set; i++) {
        if (set[i].v < 0) continue; /* the tokenizer names no such token: keep the config's */
        cJSON_DeleteItemFromObjectCaseSensitive(text, set[i].key);
        cJSON_AddNumberToObject(text, set[i].key, set[i].v);
    }
    char *out = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    fr_tokenizer_free(tok);
    if (!out) return fr_fail(err, FR_ERR_NOMEM, "out of memory");
    free(*json);
    *json = out;
    return FR_OK;
}

/* Library messages name their module ("synth: ..."); the CLI prefix already does. */
static const char *msg_of(const fr_error *err) {
    return strncmp(err->msg, "synth: ", 7) == 0 ? err->msg + 7 : err->msg;
}

static int usage_error(const fr_error *err) {
    fprintf(stderr, "frontier synth: %s (%s)\n", msg_of(err), USAGE);
    return 2;
}

/* Is the source argument a config file rather than a preset name? */
static bool is_config_path(const char *s) {
    size_t n = strlen(s);
    struct stat st;
    return (n >= 5 && strcmp(s + n - 5, ".json") == 0) ||
           (stat(s, &st) == 0 && S_ISREG(st.st_mode));
}

int fr_cmd_synth(int argc, char **argv) {
    fr_synth_opts opts = {0};
    const char *src = NULL, *out = NULL, *tokdir = NULL;
    bool seen_seed = false, seen_layers = false, seen_experts = false, print_config = false;
    fr_error err = {0};

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        int64_t x;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            printf("%s\n", USAGE);
            return 0;
        } else if (strcmp(a, "--seed") == 0) {
            if (seen_seed) return usage_error(&(fr_error){.msg = "--seed given twice"});
            if (!(v = fr_arg_value(argc, argv, &i, &err)) ||
                fr_arg_u64("--seed", v, &opts.seed, &err))
                return usage_error(&err);
            seen_seed = true;
        } else if (strcmp(a, "--layers") == 0) {
            if (seen_layers) return usage_error(&(fr_error){.msg = "--layers given twice"});
            if (!(v = fr_arg_value(argc, argv, &i, &err)) ||
                fr_arg_i64("--layers", v, 1, FR_MAX_LAYERS, &x, &err))
                return usage_error(&err);
            opts.layers = (int)x;
            seen_layers = true;
        } else if (strcmp(a, "--experts") == 0) {
            if (seen_experts) return usage_error(&(fr_error){.msg = "--experts given twice"});
            if (!(v = fr_arg_value(argc, argv, &i, &err)) ||
                fr_arg_i64("--experts", v, 1, FR_MAX_EXPERTS, &x, &err))
                return usage_error(&err);
            opts.experts = (int)x;
            seen_experts = true;
        } else if (strcmp(a, "--fp8-blocks") == 0) {
            opts.fp8_blocks = true;
        } else if (strcmp(a, "--tokenizer") == 0) {
            if (!(tokdir = fr_arg_value(argc, argv, &i, &err))) return usage_error(&err);
        } else if (strcmp(a, "--print-config") == 0) {
            print_config = true;
        } else if (strcmp(a, "--single-file") == 0) {
            opts.single_file = true;
        } else if (a[0] == '-' && a[1] != 0) {
            fr_fail(&err, FR_ERR_INVALID, "unknown option '%s'", a);
            return usage_error(&err);
        } else if (!src) {
            src = a;
        } else if (!out) {
            out = a;
        } else {
            fr_fail(&err, FR_ERR_INVALID, "unexpected argument '%s'", a);
            return usage_error(&err);
        }
    }
    if (!src || (!out && !print_config)) {
        fr_fail(&err, FR_ERR_INVALID, "%s",
                !src ? "missing PRESET or CONFIG.json" : "missing OUT_DIR");
        return usage_error(&err);
    }

    char *json = NULL, *edited = NULL;
    fr_st_set *set = NULL;
    fr_status rc = is_config_path(src) ? fr_read_file(src, MAX_CONFIG_BYTES, &json, NULL, &err)
                                       : fr_synth_preset_json(src, &json, &err);
    if (rc == FR_ERR_INVALID) { /* unknown preset: a usage error; the message lists presets */
        fprintf(stderr, "frontier synth: %s\n", msg_of(&err));
        return 2;
    }
    if (!rc && tokdir) rc = size_to_tokenizer(&json, tokdir, &err);
    if (!rc) rc = fr_synth_edit_json(json, &opts, &edited, &err);
    if (!rc && print_config) {
        printf("%s\n", edited);
        free(json);
        free(edited);
        return 0;
    }
    if (!rc) rc = fr_synth_write(edited, &opts, out, &err);
    for (size_t i = 0; !rc && tokdir && i < sizeof TOKENIZER_FILES / sizeof *TOKENIZER_FILES; i++) {
        char from[4096], to[4096];
        snprintf(from, sizeof from, "%s/%s", tokdir, TOKENIZER_FILES[i]);
        snprintf(to, sizeof to, "%s/%s", out, TOKENIZER_FILES[i]);
        struct stat st;
        if (stat(from, &st) == 0) rc = copy_file(from, to, &err);
    }
    if (!rc) rc = fr_st_open_dir(out, &set, &err);
    free(json);
    free(edited);
    if (rc) {
        fprintf(stderr, "frontier synth: %s\n", msg_of(&err));
        return 1;
    }

    uint64_t total = 0;
    size_t n = fr_st_count(set);
    for (size_t i = 0; i < n; i++) total += fr_st_at(set, i)->nbytes;
    fr_st_close(set);
    printf("%s: %zu tensors, %llu bytes\n", out, n, (unsigned long long)total);
    return 0;
}
