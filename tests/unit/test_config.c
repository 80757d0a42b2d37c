/* test_config.c - config.json parsing: released layouts, defaults, and strict errors.
 * Expected softmax scales and YaRN ramp bounds are the values shared/docs/ARCH.md
 * computes from the published configs (4.7, 4.8). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "io/config.h"

/* DeepSeek-V3's released config.json, reduced to the fields that matter. */
static const char *DSV3 =
    "{\"architectures\":[\"DeepseekV3ForCausalLM\"],\"model_type\":\"deepseek_v3\",\"vocab_size\":129280,"
    "\"hidden_size\":7168,\"intermediate_size\":18432,\"moe_intermediate_size\":2048,\"num_hidden_layers\":61,"
    "\"num_attention_heads\":128,\"num_key_value_heads\":128,\"n_shared_experts\":1,\"n_routed_experts\":256,"
    "\"routed_scaling_factor\":2.5,\"kv_lora_rank\":512,\"q_lora_rank\":1536,\"qk_rope_head_dim\":64,"
    "\"v_head_dim\":128,\"qk_nope_head_dim\":128,\"topk_method\":\"noaux_tc\",\"n_group\":8,\"topk_group\":4,"
    "\"num_experts_per_tok\":8,\"moe_layer_freq\":1,\"first_k_dense_replace\":3,\"norm_topk_prob\":true,"
    "\"scoring_func\":\"sigmoid\",\"rms_norm_eps\":1e-06,\"rope_theta\":10000,\"max_position_embeddings\":163840,"
    "\"rope_scaling\":{\"beta_fast\":32,\"beta_slow\":1,\"factor\":40,\"mscale\":1.0,\"mscale_all_dim\":1.0,"
    "\"original_max_position_embeddings\":4096,\"type\":\"yarn\"},\"bos_token_id\":0,\"eos_token_id\":1,"
    "\"tie_word_embeddings\":false,\"num_nextn_predict_layers\":1,"
    "\"quantization_config\":{\"activation_scheme\":\"dynamic\",\"fmt\":\"e4m3\",\"quant_method\":\"fp8\","
    "\"weight_block_size\":[128,128]}}";

static char *replace(const char *s, const char *from, const char *to) {
    const char *p = strstr(s, from);
    if (!p) return NULL;
    size_t n = strlen(s) - strlen(from) + strlen(to) + 1;
    char *out = malloc(n);
    snprintf(out, n, "%.*s%s%s", (int)(p - s), s, to, p + strlen(from));
    return out;
}

/* Parse a variant of DSV3 with one substring replaced; return the status. */
static fr_status variant(const char *from, const char *to, fr_config *cfg, fr_error *err) {
    char *j = replace(DSV3, from, to);
    if (!j) {
        fprintf(stderr, "test bug: \"%s\" not in the base config\n", from);
        return FR_ERR_INVALID;
    }
    fr_status rc = fr_config_parse(j, NULL, "config.json", cfg, err);
    free(j);
    return rc;
}

int main(void) {
    fr_config c;
    fr_error err = {0};
    CHECK(fr_config_parse(DSV3, NULL, "config.json", &c, &err) == FR_OK);
    CHECK(c.n_layers == 61 && c.n_routed_experts == 256 && c.n_group == 8 && c.topk_group == 4);
    CHECK(c.q_lora_rank == 1536 && c.kv_lora_rank == 512 && fr_config_qk_head_dim(&c) == 192);
    CHECK(c.quant.fp8 && c.quant.block_rows == 128 && c.quant.block_cols == 128 && !c.quant.ue8m0);
    CHECK(c.rope_scaling.yarn && c.rope_scaling.factor == 40.0);
    CHECK(!fr_config_layer_is_moe(&c, 2) && fr_config_layer_is_moe(&c, 3));
    CHECK(c.n_eos == 1 && c.eos_token_ids[0] == 1 && c.bos_token_id == 0);
    CHECK_NEAR(fr_config_softmax_scale(&c), 0.135234, 5e-7); /* ARCH 4.7 */
    /* ARCH 4.8: DeepSeek ramp low = 10, high = 23 (d = 64) */
    double f[32];
    fr_config_rope_freqs(&c, f);
    CHECK_NEAR(f[10], pow(10000.0, -20.0 / 64), 1e-15);        /* i <= low: unchanged */
    CHECK_NEAR(f[23], pow(10000.0, -46.0 / 64) / 40.0, 1e-15); /* i >= high: fully interpolated */
    CHECK(f[16] < pow(10000.0, -32.0 / 64) && f[16] > pow(10000.0, -32.0 / 64) / 40.0);

    /* generation_config.json overrides the stop ids */
    CHECK(fr_config_parse(DSV3, "{\"eos_token_id\":[1,7],\"bos_token_id\":0}", "config.json", &c, &err) == FR_OK);
    CHECK(c.n_eos == 2 && c.eos_token_ids[1] == 7);

    /* q_lora_rank null -> direct q_proj; ue8m0 scales; rope_parameters spelling; kimi_k2 type */
    CHECK(variant("\"q_lora_rank\":1536", "\"q_lora_rank\":null", &c, &err) == FR_OK && c.q_lora_rank == 0);
    CHECK(variant("\"weight_block_size\"", "\"scale_fmt\":\"ue8m0\",\"weight_block_size\"", &c, &err) == FR_OK &&
          c.quant.ue8m0);
    CHECK(variant("\"model_type\":\"deepseek_v3\"", "\"model_type\":\"kimi_k2\"", &c, &err) == FR_OK);
    CHECK(variant("\"rope_theta\":10000,", "", &c, &err) == FR_OK && c.rope_theta == 10000.0); /* default */
    /* the rope_parameters form as newer transformers writes it */
    CHECK(variant("\"rope_theta\":10000,", "", &c, &err) == FR_OK);
    {
        char *j = replace(DSV3, "\"rope_theta\":10000,", "");
        char *k = replace(j, "\"rope_scaling\":{", "\"rope_parameters\":{\"rope_theta\":50000,\"rope_type\":\"yarn\",");
        char *l = replace(k, "\"type\":\"yarn\"", "\"x\":1");
        CHECK(fr_config_parse(l, NULL, "config.json", &c, &err) == FR_OK);
        CHECK(c.rope_theta == 50000.0 && c.rope_scaling.yarn && c.rope_scaling.factor == 40.0);
        free(j), free(k), free(l);
    }
    /* Kimi K2 (factor 32, beta 1/1): scale 0.130861; K2.5 (factor 64): 0.144680 (ARCH 4.7) */
    {
        char *j = replace(DSV3, "\"factor\":40", "\"factor\":32");
        CHECK(fr_config_parse(j, NULL, "config.json", &c, &err) == FR_OK);
        CHECK_NEAR(fr_config_softmax_scale(&c), 0.130861, 5e-7);
        free(j);
        j = replace(DSV3, "\"factor\":40", "\"factor\":64");
        CHECK(fr_config_parse(j, NULL, "config.json", &c, &err) == FR_OK);
        CHECK_NEAR(fr_config_softmax_scale(&c), 0.144680, 5e-7);
        free(j);
    }
    /* Kimi K2.5 wrapper: text model in text_config, weights under language_model. */
    {
        char *inner = replace(DSV3, "\"architectures\":[\"DeepseekV3ForCausalLM\"],", "");
        size_t n = strlen(inner) + 256;
        char *w = malloc(n);
        snprintf(w, n, "{\"architectures\":[\"KimiK25ForConditionalGeneration\"],\"model_type\":\"kimi_k25\",\"text_config\":%s}", inner);
        CHECK(fr_config_parse(w, NULL, "config.json", &c, &err) == FR_OK);
        CHECK(!strcmp(c.weight_prefix, "language_model.") && c.n_layers == 61 && c.quant.fp8);
        free(inner), free(w);
    }

    /* errors: each a clear message naming the field */
    CHECK(variant("DeepseekV3ForCausalLM", "LlamaForCausalLM", &c, &err) == FR_ERR_UNSUPPORTED &&
          strstr(err.msg, "LlamaForCausalLM"));
    CHECK(variant("\"hidden_size\":7168,", "", &c, &err) == FR_ERR_FORMAT && strstr(err.msg, "hidden_size"));
    CHECK(variant("\"kv_lora_rank\":512", "\"kv_lora_rank\":\"512\"", &c, &err) == FR_ERR_FORMAT && strstr(err.msg, "kv_lora_rank"));
    CHECK(variant("\"qk_rope_head_dim\":64", "\"qk_rope_head_dim\":63", &c, &err) == FR_ERR_FORMAT);
    CHECK(variant("\"n_group\":8", "\"n_group\":7", &c, &err) == FR_ERR_FORMAT && strstr(err.msg, "n_group"));
    CHECK(variant("\"num_experts_per_tok\":8", "\"num_experts_per_tok\":300", &c, &err) == FR_ERR_FORMAT);
    CHECK(variant("\"num_hidden_layers\":61", "\"num_hidden_layers\":-1", &c, &err) == FR_ERR_FORMAT);
    CHECK(variant("\"num_hidden_layers\":61", "\"num_hidden_layers\":1e300", &c, &err) == FR_ERR_FORMAT);
    CHECK(variant("\"hidden_size\":7168", "\"hidden_size\":7168.5", &c, &err) == FR_ERR_FORMAT);
    CHECK(variant("\"type\":\"yarn\"", "\"type\":\"longrope\"", &c, &err) == FR_ERR_UNSUPPORTED);
    CHECK(variant("\"quant_method\":\"fp8\"", "\"quant_method\":\"gptq\"", &c, &err) == FR_ERR_UNSUPPORTED);
    CHECK(variant("\"weight_block_size\":[128,128]", "\"weight_block_size\":[0,128]", &c, &err) == FR_ERR_FORMAT);
    CHECK(variant("\"scoring_func\":\"sigmoid\"", "\"scoring_func\":\"softmax\"", &c, &err) == FR_ERR_UNSUPPORTED);
    CHECK(variant("\"eos_token_id\":1", "\"eos_token_id\":999999", &c, &err) == FR_ERR_FORMAT);
    /* quantization_config of 4-bit checkpoints: compressed-tensors INT4 (Kimi K2.5, ARCH 7.3)
     * and frontier's format_by_group; every group's format, and strict errors naming the value. */
    {
        static const char *FP8Q =
            "\"quantization_config\":{\"activation_scheme\":\"dynamic\",\"fmt\":\"e4m3\","
            "\"quant_method\":\"fp8\",\"weight_block_size\":[128,128]}";
        const char *ct =
            "\"quantization_config\":{\"quant_method\":\"compressed-tensors\",\"format\":\"pack-quantized\","
            "\"quantization_status\":\"compressed\",\"kv_cache_scheme\":null,\"config_groups\":{\"group_0\":"
            "{\"targets\":[\"Linear\"],\"input_activations\":null,\"weights\":{\"num_bits\":4,\"type\":\"int\","
            "\"symmetric\":true,\"strategy\":\"group\",\"group_size\":32,\"dynamic\":false,\"actorder\":null}}}}";
        CHECK(variant(FP8Q, ct, &c, &err) == FR_OK && !c.quant.fp8 &&
              c.quant.group[FR_QGROUP_EXPERTS] == FR_QFMT_INT4 &&
              c.quant.group[FR_QGROUP_ATTENTION] == FR_QFMT_BF16 && c.quant.group_size == 32 &&
              !strcmp(c.quant.method, "compressed-tensors"));
        CHECK(c.quant.group[FR_QGROUP_DENSE] == FR_QFMT_BF16 &&
              c.quant.group[FR_QGROUP_SHARED] == FR_QFMT_BF16);
        char *bad = replace(ct, "\"num_bits\":4", "\"num_bits\":8");
        CHECK(variant(FP8Q, bad, &c, &err) == FR_ERR_UNSUPPORTED && strstr(err.msg, "num_bits 8"));
        free(bad);
        bad = replace(ct, "\"group_size\":32", "\"group_size\":128");
        CHECK(variant(FP8Q, bad, &c, &err) == FR_ERR_UNSUPPORTED && strstr(err.msg, "group_size 128"));
        free(bad);
        bad = replace(ct, "pack-quantized", "float-quantized");
        CHECK(variant(FP8Q, bad, &c, &err) == FR_ERR_UNSUPPORTED && strstr(err.msg, "float-quantized"));
        free(bad);

        const char *fq =
            "\"quantization_config\":{\"quant_method\":\"frontier\",\"format_by_group\":{\"attention\":\"fp8\","
            "\"dense\":\"mxfp4\",\"experts\":\"mxfp4\"},\"group_size\":32,\"weight_block_size\":[64,128]}";
        CHECK(variant(FP8Q, fq, &c, &err) == FR_OK && c.quant.fp8 && !c.quant.fp8_lenient &&
              c.quant.block_rows == 64 && c.quant.group[FR_QGROUP_ATTENTION] == FR_QFMT_FP8 &&
              c.quant.group[FR_QGROUP_DENSE] == FR_QFMT_MXFP4 &&
              c.quant.group[FR_QGROUP_SHARED] == FR_QFMT_BF16 &&
              c.quant.group[FR_QGROUP_EXPERTS] == FR_QFMT_MXFP4);
        bad = replace(fq, "\"experts\":\"mxfp4\"", "\"experts\":\"nf4\"");
        CHECK(variant(FP8Q, bad, &c, &err) == FR_ERR_UNSUPPORTED && strstr(err.msg, "nf4") &&
              strstr(err.msg, "experts"));
        free(bad);
        bad = replace(fq, "\"experts\":", "\"expert\":");
        CHECK(variant(FP8Q, bad, &c, &err) == FR_ERR_FORMAT && strstr(err.msg, "\"expert\""));
        free(bad);
        bad = replace(fq, "\"attention\":\"fp8\"", "\"attention\":\"mxfp4\"");
        CHECK(variant(FP8Q, bad, &c, &err) == FR_ERR_UNSUPPORTED && strstr(err.msg, "attention"));
        free(bad);
        bad = replace(fq, ",\"weight_block_size\":[64,128]", "");
        CHECK(variant(FP8Q, bad, &c, &err) == FR_ERR_FORMAT && strstr(err.msg, "weight_block_size"));
        free(bad);
        bad = replace(fq, "\"group_size\":32", "\"group_size\":16");
        CHECK(variant(FP8Q, bad, &c, &err) == FR_ERR_UNSUPPORTED && strstr(err.msg, "group_size"));
        free(bad);
        /* legacy fp8: every group fp8, unquantized tensors tolerated */
        CHECK(fr_config_parse(DSV3, NULL, "config.json", &c, &err) == FR_OK && c.quant.fp8_lenient &&
              c.quant.group[FR_QGROUP_EXPERTS] == FR_QFMT_FP8 && !strcmp(c.quant.method, "fp8"));
        fr_qformat f;
        CHECK(fr_qformat_parse("mxfp4", &f) == 0 && f == FR_QFMT_MXFP4 && fr_qformat_parse("MXFP4", &f) != 0);
        CHECK(!strcmp(fr_qgroup_name(FR_QGROUP_SHARED), "shared_experts") &&
              !strcmp(fr_qformat_name(FR_QFMT_INT4), "int4"));
    }
    CHECK(fr_config_parse("{\"architectures\":", NULL, "config.json", &c, &err) == FR_ERR_FORMAT &&
          strstr(err.msg, "config.json"));
    CHECK(fr_config_parse("[]", NULL, "config.json", &c, &err) == FR_ERR_FORMAT);
    CHECK(fr_config_load("/nonexistent-dir", &c, &err) == FR_ERR_IO && strstr(err.msg, "/nonexistent-dir/config.json"));
    return check_report("config");
}
