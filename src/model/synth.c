/* placeholder: being written */
typedef int fr_placeholder_src_model_synth_c;
