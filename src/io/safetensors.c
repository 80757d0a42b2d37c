/* placeholder: being written */
typedef int fr_placeholder_src_io_safetensors_c;
