/* placeholder: `frontier tokenize` / `detokenize` are being written (issue #3) */
#include <stdio.h>
int fr_cmd_tokenize(int argc, char **argv) { (void)argc; (void)argv; fprintf(stderr, "frontier tokenize: not built yet\n"); return 1; }
int fr_cmd_detokenize(int argc, char **argv) { (void)argc; (void)argv; fprintf(stderr, "frontier detokenize: not built yet\n"); return 1; }
