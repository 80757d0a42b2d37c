/* frontier.c - the `frontier` command: dispatch to a subcommand.
 * Each subcommand parses its own options and returns the process exit status:
 * 0 success, 1 a runtime error (one line on stderr), 2 a usage error. */
#include <stdio.h>
#include <string.h>

int fr_cmd_run(int argc, char **argv);
int fr_cmd_logits(int argc, char **argv);
int fr_cmd_info(int argc, char **argv);
int fr_cmd_synth(int argc, char **argv);
int fr_cmd_bench(int argc, char **argv);
int fr_cmd_tokenize(int argc, char **argv);
int fr_cmd_detokenize(int argc, char **argv);
int fr_cmd_template(int argc, char **argv);
int fr_cmd_quantize(int argc, char **argv);
int fr_cmd_serve(int argc, char **argv);
int fr_cmd_bench_serve(int argc, char **argv);

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *help;
} commands[] = {
    {"run", fr_cmd_run, "generate tokens from a prompt of ids"},
    {"logits", fr_cmd_logits, "write float32 logits of every position (conformance interface)"},
    {"info", fr_cmd_info, "describe a checkpoint: architecture, parameters, bytes, KV cost"},
    {"synth", fr_cmd_synth, "write a random-weight checkpoint in the released layout"},
    {"bench", fr_cmd_bench, "measure prefill and decode speed against memory bandwidth"},
    {"tokenize", fr_cmd_tokenize, "text to token ids with the checkpoint's tokenizer"},
    {"detokenize", fr_cmd_detokenize, "token ids to text"},
    {"template", fr_cmd_template, "render chat messages through the checkpoint's chat template"},
    {"quantize", fr_cmd_quantize, "rewrite a checkpoint with 4-bit (MXFP4) experts"},
    {"serve", fr_cmd_serve, "OpenAI-compatible HTTP server with continuous batching"},
    {"bench-serve", fr_cmd_bench_serve, "load benchmark against a running server (TTFT, TPOT, ITL, tok/s)"},
};

static int usage(FILE *f) {
    fprintf(f, "usage: frontier COMMAND [ARGS]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        fprintf(f, "  %-12s %s\n", commands[i].name, commands[i].help);
    fprintf(f, "\nRun `frontier COMMAND` without arguments for its options.\n");
    return f == stdout ? 0 : 2;
}

int main(int argc, char **argv) {
    if (argc < 2) return usage(stderr);
    if (!strcmp(argv[1], "help") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) return usage(stdout);
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "frontier: unknown command \"%s\" (run `frontier help` for the list)\n", argv[1]);
    return 2;
}
