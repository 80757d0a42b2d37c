/* placeholder: being written */
typedef int fr_placeholder_tools_cmd_info_c;
