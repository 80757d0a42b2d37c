/* placeholder: being written */
typedef int fr_placeholder_tools_cmd_bench_c;
