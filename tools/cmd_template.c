/* placeholder: `frontier template` is being written (issue #3) */
#include <stdio.h>
int fr_cmd_template(int argc, char **argv) { (void)argc; (void)argv; fprintf(stderr, "frontier template: not built yet\n"); return 1; }
