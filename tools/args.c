/* placeholder: being written */
typedef int fr_placeholder_tools_args_c;
