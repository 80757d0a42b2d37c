/* placeholder: `frontier quantize` is being written (issue #4) */
#include <stdio.h>
int fr_cmd_quantize(int argc, char **argv) { (void)argc; (void)argv; fprintf(stderr, "frontier quantize: not built yet\n"); return 1; }
