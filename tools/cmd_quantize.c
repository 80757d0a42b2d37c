/* cmd_quantize.c - `frontier quantize`: rewrite a checkpoint with 4-bit (MXFP4) experts.
 *
 *   frontier quantize IN_DIR OUT_DIR --experts mxfp4 [--dense bf16|fp8|mxfp4]
 *                     [--attention bf16|fp8] [-t THREADS] [--quiet]
 *
 * --experts sets the routed experts' format, --dense that of the dense-layer MLPs and
 * the shared experts, --attention that of the attention projections; a group not
 * named keeps its stored format. The work is fr_quantize_checkpoint's (model/quantize.c);
 * this file parses the command line strictly (usage errors exit 2, failures 1) and
 * prints one summary line on stdout, read back from the written directory so that the
 * line also proves the result loads. Progress goes to stderr unless --quiet. */
#include <omp.h>
#include <stdio.h>
#include <string.h>

#include "args.h"
#include "model/quantize.h"

#define USAGE                                                                                                 \
    "usage: frontier quantize IN_DIR OUT_DIR --experts mxfp4 [--dense bf16|fp8|mxfp4] [--attention bf16|fp8]" \
    " [-t THREADS] [--quiet]"

int fr_cmd_quantize(int argc, char **argv);

static int usage_error(const char *fmt, const char *arg) {
    fprintf(stderr, "frontier quantize: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, " (%s)\n", USAGE);
    return 2;
}

/* A format name allowed for an option. */
static int parse_format(const char *opt, const char *v, const char *allowed, int *out) {
    fr_qformat f;
    char list[64];
    snprintf(list, sizeof list, "|%s|", allowed);
    char key[24];
    snprintf(key, sizeof key, "|%.16s|", v);
    if (fr_qformat_parse(v, &f) != 0 || !strstr(list, key)) {
        fprintf(stderr, "frontier quantize: %s \"%s\" is not one of %s (%s)\n", opt, v, allowed, USAGE);
        return -1;
    }
    *out = (int)f;
    return 0;
}

int fr_cmd_quantize(int argc, char **argv) {
    const char *in = NULL, *out = NULL;
    fr_quantize_opts o = {.progress = true};
    for (int g = 0; g < FR_QGROUP_COUNT; g++) o.target[g] = FR_QUANT_KEEP;
    bool have_experts = false;
    int64_t threads = 0;
    fr_error err = {0};
    if (argc < 2) return fprintf(stderr, "%s\n", USAGE), 2;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            printf("%s\n", USAGE);
            return 0;
        }
        if (a[0] != '-') {
            if (!in)
                in = a;
            else if (!out)
                out = a;
            else
                return usage_error("unexpected argument \"%s\"", a);
            continue;
        }
        if (!strcmp(a, "--quiet")) {
            o.progress = false;
            continue;
        }
        if (strcmp(a, "--experts") && strcmp(a, "--dense") && strcmp(a, "--attention") && strcmp(a, "-t") &&
            strcmp(a, "--threads"))
            return usage_error("unknown option \"%s\"", a);
        if (!(v = fr_arg_value(argc, argv, &i, &err))) return usage_error("%s", err.msg);
        if (!strcmp(a, "--experts")) {
            if (parse_format(a, v, "mxfp4|bf16|fp8", &o.target[FR_QGROUP_EXPERTS])) return 2;
            have_experts = true;
        } else if (!strcmp(a, "--dense")) {
            if (parse_format(a, v, "bf16|fp8|mxfp4", &o.target[FR_QGROUP_DENSE])) return 2;
            o.target[FR_QGROUP_SHARED] = o.target[FR_QGROUP_DENSE];
        } else if (!strcmp(a, "--attention")) {
            if (parse_format(a, v, "bf16|fp8", &o.target[FR_QGROUP_ATTENTION])) return 2;
        } else { /* -t, --threads */
            if (fr_arg_i64(a, v, 1, 1024, &threads, &err)) return usage_error("%s", err.msg);
        }
    }
    if (!in || !out) return usage_error("%s", !in ? "missing IN_DIR" : "missing OUT_DIR");
    if (!have_experts) return usage_error("%s", "missing --experts mxfp4");
    if (threads > 0) omp_set_num_threads((int)threads);

    fr_status rc = fr_quantize_checkpoint(in, out, &o, &err);
    fr_model *m = NULL;
    if (!rc) rc = fr_model_load(out, &m, &err);
    if (rc) { /* library messages name their module; the prefix already does */
        const char *msg = strncmp(err.msg, "quantize: ", 10) == 0 ? err.msg + 10 : err.msg;
        fprintf(stderr, "frontier quantize: %s\n", msg);
        return 1;
    }
    fr_model_stats s;
    fr_model_stats_compute(m, &s);
    printf("%s:", out);
    for (int g = 0; g < FR_QGROUP_COUNT; g++)
        if (s.format_by_group[g] >= 0)
            printf(" %s %s %.1f MB;", fr_qgroup_name((fr_qgroup)g),
                   fr_qformat_name((fr_qformat)s.format_by_group[g]), (double)s.bytes_by_group[g] / 1e6);
    printf(" other %.1f MB\n", (double)s.bytes_other / 1e6);
    fr_model_free(m);
    return 0;
}
