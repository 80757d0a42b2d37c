/* placeholder: being written */
typedef int fr_placeholder_src_engine_sampler_c;
