/* placeholder: being written */
typedef int fr_placeholder_src_io_json_util_c;
