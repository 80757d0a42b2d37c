/* cmd_tokenize.c - `frontier tokenize` (text to ids) and `frontier detokenize` (ids to
 * text) with a checkpoint's own tokenizer.
 *
 * tokenize prints, per input, either one line "id,id,..." (--ids-only) or one line per
 * token "id<TAB>token" with the token as tokenizer.json spells it (control bytes and
 * backslash escaped as \n \t \r \\ \xNN); inputs are separated by an empty line.
 * Several --text / --file options may be given (the oracle tests pass many files to
 * one process). --no-special means add_special_tokens=False: no BOS/EOS from the
 * post-processor; special-token strings inside the text are still matched, as HF does.
 * --bench N times N encodes in-process and prints throughput instead of ids.
 *
 * detokenize writes the decoded bytes exactly, with no newline added; --stream decodes
 * through the streaming detokenizer one id at a time (same bytes, flushed per piece). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "io/json_util.h"
#include "tokenizer/tokenizer.h"

#define MAX_INPUTS 4096

typedef struct {
    char *data;
    size_t len;
    bool owned;
} input;

static void print_token(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\n') fputs("\\n", stdout);
        else if (c == '\t') fputs("\\t", stdout);
        else if (c == '\r') fputs("\\r", stdout);
        else if (c == '\\') fputs("\\\\", stdout);
        else if (c < 0x20 || c == 0x7f) printf("\\x%02x", c);
        else putchar(c);
    }
}

static int tokenize_usage(void) {
    fprintf(stderr, "usage: frontier tokenize DIR (--text T | --file F)... [--ids-only] [--no-special] [--bench N]\n");
    return 2;
}

int fr_cmd_tokenize(int argc, char **argv) {
    if (argc < 2) return tokenize_usage();
    fr_error err = {0};
    const char *dir = NULL;
    bool ids_only = false, no_special = false;
    int64_t bench = 0;
    input *in = calloc(MAX_INPUTS, sizeof *in);
    int n_in = 0, status = 0;
    fr_tokenizer *tok = NULL;
    fr_tok_ids ids = {0};
    if (!in) return fprintf(stderr, "frontier tokenize: out of memory\n"), 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        if (a[0] != '-') {
            if (dir) {
                fr_fail(&err, FR_ERR_INVALID, "unexpected argument \"%s\"", a);
                goto usage;
            }
            dir = a;
        } else if (!strcmp(a, "--ids-only")) ids_only = true;
        else if (!strcmp(a, "--no-special")) no_special = true;
        else if (!strcmp(a, "--bench")) {
            if (!(v = fr_arg_value(argc, argv, &i, &err)) || fr_arg_i64(a, v, 1, 1000000, &bench, &err)) goto usage;
        } else if (!strcmp(a, "--text") || !strcmp(a, "--file")) {
            if (!(v = fr_arg_value(argc, argv, &i, &err))) goto usage;
            if (n_in == MAX_INPUTS) {
                fr_fail(&err, FR_ERR_INVALID, "more than %d inputs", MAX_INPUTS);
                goto usage;
            }
            if (a[2] == 't') in[n_in++] = (input){(char *)v, strlen(v), false};
            else {
                size_t len;
                char *data;
                if (fr_read_file(v, FR_TOK_MAX_TEXT, &data, &len, &err)) goto fail;
                in[n_in++] = (input){data, len, true};
            }
        } else {
            fr_fail(&err, FR_ERR_INVALID, "unknown option \"%s\"", a);
            goto usage;
        }
    }
    if (!dir || !n_in) {
        fr_fail(&err, FR_ERR_INVALID, !dir ? "missing the checkpoint directory" : "missing --text or --file");
        goto usage;
    }
    if (fr_tokenizer_load(dir, &tok, &err)) goto fail;
    unsigned flags = no_special ? 0 : FR_TOK_ADD_SPECIAL;
    if (bench) {
        size_t bytes = 0;
        int64_t tokens = 0;
        double best = 1e30;
        for (int k = 0; k < n_in; k++) bytes += in[k].len;
        for (int64_t r = 0; r < bench; r++) {
            double t0 = fr_now_s();
            tokens = 0;
            for (int k = 0; k < n_in; k++) {
                if (fr_tokenizer_encode(tok, in[k].data, in[k].len, flags, &ids, &err)) goto fail;
                tokens += ids.n;
            }
            double dt = fr_now_s() - t0;
            if (dt < best) best = dt;
        }
        printf("bench: %zu bytes, %lld tokens, best of %lld runs %.3f ms, %.2f MB/s\n", bytes, (long long)tokens,
               (long long)bench, best * 1e3, best > 0 ? (double)bytes / best / 1e6 : 0.0);
        goto out;
    }
    for (int k = 0; k < n_in; k++) {
        if (fr_tokenizer_encode(tok, in[k].data, in[k].len, flags, &ids, &err)) goto fail;
        if (ids_only) {
            for (int64_t j = 0; j < ids.n; j++) printf(j ? ",%d" : "%d", ids.ids[j]);
            putchar('\n');
            continue;
        }
        if (k) putchar('\n');
        for (int64_t j = 0; j < ids.n; j++) {
            size_t len = 0;
            const char *s = fr_tokenizer_id_to_token(tok, ids.ids[j], &len);
            printf("%d\t", ids.ids[j]);
            print_token(s ? s : "", s ? len : 0);
            putchar('\n');
        }
    }
    goto out;
usage:
    fprintf(stderr, "frontier tokenize: %s\n", err.msg);
    status = 2;
    goto out;
fail:
    status = fr_cli_error("tokenize", &err);
out:
    if (fflush(stdout) != 0 && !status) status = 1;
    for (int k = 0; k < n_in; k++)
        if (in[k].owned) free(in[k].data);
    free(in);
    fr_tok_ids_release(&ids);
    fr_tokenizer_free(tok);
    return status;
}

int fr_cmd_detokenize(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: frontier detokenize DIR --ids 1,2,3 [--skip-special] [--lossy] [--stream]\n");
        return 2;
    }
    fr_error err = {0};
    const char *dir = NULL, *ids_arg = NULL;
    bool stream = false;
    unsigned flags = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (a[0] != '-') {
            if (dir) return fprintf(stderr, "frontier detokenize: unexpected argument \"%s\"\n", a), 2;
            dir = a;
        } else if (!strcmp(a, "--ids")) {
            if (!(ids_arg = fr_arg_value(argc, argv, &i, &err))) return fr_cli_error("detokenize", &err), 2;
        } else if (!strcmp(a, "--skip-special")) flags |= FR_TOK_SKIP_SPECIAL;
        else if (!strcmp(a, "--lossy")) flags |= FR_TOK_LOSSY;
        else if (!strcmp(a, "--stream")) stream = true;
        else return fprintf(stderr, "frontier detokenize: unknown option \"%s\"\n", a), 2;
    }
    if (!dir || !ids_arg) {
        fprintf(stderr, "frontier detokenize: %s\n", !dir ? "missing the checkpoint directory" : "missing --ids");
        return 2;
    }
    int32_t *ids = NULL;
    int64_t n = 0;
    if (fr_arg_ids(ids_arg, &ids, &n, &err)) return fr_cli_error("detokenize", &err), 2;
    fr_tokenizer *tok = NULL;
    fr_detok *d = NULL;
    fr_tok_text text = {0};
    int status = 0;
    if (fr_tokenizer_load(dir, &tok, &err)) goto fail;
    if (!stream) {
        if (fr_tokenizer_decode(tok, ids, n, flags, &text, &err)) goto fail;
        fwrite(text.data, 1, text.len, stdout);
    } else {
        if (fr_detok_create(tok, flags, &d, &err)) goto fail;
        for (int64_t i = 0; i <= n; i++) {
            text.len = 0;
            if (i < n ? fr_detok_push(d, ids[i], &text, &err) : fr_detok_finish(d, &text, &err)) goto fail;
            if (text.len) {
                fwrite(text.data, 1, text.len, stdout);
                fflush(stdout);
            }
        }
    }
    goto out;
fail:
    status = fr_cli_error("detokenize", &err);
out:
    if (fflush(stdout) != 0 && !status) status = 1;
    fr_detok_destroy(d);
    fr_tok_text_release(&text);
    fr_tokenizer_free(tok);
    free(ids);
    return status;
}
