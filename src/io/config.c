/* placeholder: being written */
typedef int fr_placeholder_src_io_config_c;
