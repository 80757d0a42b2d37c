/* placeholder: being written */
typedef int fr_placeholder_src_backend_cpu_matmul_c;
