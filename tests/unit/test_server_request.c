/* test_server_request.c - OpenAI request validation: types, ranges, defaults, the shapes
 * of prompt and stop, chat_template_kwargs merging, unknown fields. */
#include <string.h>

#include "check.h"
#include "server/request.h"

static fr_gen_params defaults(void) {
    fr_gen_params p = fr_gen_params_default();
    p.temperature = 0.7f;
    p.top_p = 0.95f;
    return p;
}

/* Parse JSON text; returns the status, fills r (released by the caller) and param. */
static fr_status parse(const char *json, srv_api api, srv_request *r, const char **param, cJSON **body) {
    fr_error err = {0};
    fr_gen_params d = defaults();
    *body = cJSON_Parse(json);
    CHECK_MSG(*body != NULL, "bad test JSON: %s", json);
    return srv_request_parse(*body, api, &d, r, param, &err);
}

/* Expect a 400 on `param`. */
static void bad(const char *json, srv_api api, const char *param) {
    srv_request r;
    const char *p = NULL;
    cJSON *body;
    fr_status rc = parse(json, api, &r, &p, &body);
    CHECK_MSG(rc == FR_ERR_INVALID, "accepted: %s", json);
    CHECK_MSG(p && !strcmp(p, param), "%s: param \"%s\", want \"%s\"", json, p ? p : "(null)", param);
    if (!rc) srv_request_release(&r);
    cJSON_Delete(body);
}

static void test_completions(void) {
    srv_request r;
    const char *p;
    cJSON *body;
    CHECK(parse("{\"prompt\":\"hi\"}", SRV_API_COMPLETIONS, &r, &p, &body) == FR_OK);
    CHECK(r.prompt_text && !strcmp(r.prompt_text, "hi") && !r.prompt_ids);
    CHECK(!r.max_tokens_set && !r.stream && !r.seed_set && !r.logprobs && r.gen.top_logprobs == -1);
    CHECK_NEAR(r.gen.temperature, 0.7, 1e-6); /* the checkpoint's default */
    CHECK_NEAR(r.gen.top_p, 0.95, 1e-6);
    srv_request_release(&r);
    cJSON_Delete(body);

    CHECK(parse("{\"prompt\":[1,2,3],\"max_tokens\":5,\"temperature\":0,\"top_k\":-1,\"seed\":-1,\"logprobs\":3,"
                "\"stop\":[\"a\",\"bc\"],\"stop_token_ids\":[7],\"ignore_eos\":true,\"stream\":true,"
                "\"stream_options\":{\"include_usage\":true,\"whatever\":1},\"foo\":1,\"bar\":null}",
                SRV_API_COMPLETIONS, &r, &p, &body) == FR_OK);
    CHECK(r.prompt_ids && cJSON_GetArraySize(r.prompt_ids) == 3 && !r.prompt_text);
    CHECK(r.max_tokens_set && r.max_tokens == 5);
    CHECK(r.gen.temperature == 0.0f && r.gen.top_k == 0 && r.gen.ignore_eos);
    CHECK(r.seed_set && r.gen.seed == UINT64_MAX);
    CHECK(r.logprobs && r.gen.top_logprobs == 3);
    CHECK(r.n_stop == 2 && !strcmp(r.stop[1], "bc"));
    CHECK(r.n_stop_token_ids == 1 && r.stop_token_ids[0] == 7);
    CHECK(r.stream && r.include_usage && !r.continuous_usage);
    CHECK(!strcmp(r.unknown, "foo,bar"));
    srv_request_release(&r);
    cJSON_Delete(body);

    /* a batch of one prompt is one prompt */
    CHECK(parse("{\"prompt\":[\"x\"]}", SRV_API_COMPLETIONS, &r, &p, &body) == FR_OK && r.prompt_text);
    srv_request_release(&r);
    cJSON_Delete(body);
    CHECK(parse("{\"prompt\":[[4,5]]}", SRV_API_COMPLETIONS, &r, &p, &body) == FR_OK && r.prompt_ids);
    srv_request_release(&r);
    cJSON_Delete(body);

    bad("{}", SRV_API_COMPLETIONS, "prompt");
    bad("{\"prompt\":[]}", SRV_API_COMPLETIONS, "prompt");
    bad("{\"prompt\":[\"a\",\"b\"]}", SRV_API_COMPLETIONS, "prompt");
    bad("{\"prompt\":[1,-2]}", SRV_API_COMPLETIONS, "prompt");
    bad("{\"prompt\":[1,2.5]}", SRV_API_COMPLETIONS, "prompt");
    bad("{\"prompt\":5}", SRV_API_COMPLETIONS, "prompt");
    bad("{\"prompt\":\"a\",\"n\":2}", SRV_API_COMPLETIONS, "n");
    bad("{\"prompt\":\"a\",\"best_of\":3}", SRV_API_COMPLETIONS, "best_of");
    bad("{\"prompt\":\"a\",\"echo\":true}", SRV_API_COMPLETIONS, "echo");
    bad("{\"prompt\":\"a\",\"max_tokens\":0}", SRV_API_COMPLETIONS, "max_tokens");
    bad("{\"prompt\":\"a\",\"max_tokens\":1.5}", SRV_API_COMPLETIONS, "max_tokens");
    bad("{\"prompt\":\"a\",\"max_tokens\":\"9\"}", SRV_API_COMPLETIONS, "max_tokens");
    /* 2^63 and beyond: refused before any conversion to int64 could overflow */
    bad("{\"prompt\":\"a\",\"max_tokens\":9223372036854775808}", SRV_API_COMPLETIONS, "max_tokens");
    bad("{\"prompt\":\"a\",\"max_tokens\":1e300}", SRV_API_COMPLETIONS, "max_tokens");
    bad("{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_completion_tokens\":9223372036854775808}",
        SRV_API_CHAT, "max_completion_tokens");
    bad("{\"prompt\":\"a\",\"temperature\":2.5}", SRV_API_COMPLETIONS, "temperature");
    bad("{\"prompt\":\"a\",\"temperature\":-0.1}", SRV_API_COMPLETIONS, "temperature");
    bad("{\"prompt\":\"a\",\"top_p\":0}", SRV_API_COMPLETIONS, "top_p");
    bad("{\"prompt\":\"a\",\"min_p\":1.5}", SRV_API_COMPLETIONS, "min_p");
    bad("{\"prompt\":\"a\",\"top_k\":-2}", SRV_API_COMPLETIONS, "top_k");
    bad("{\"prompt\":\"a\",\"presence_penalty\":3}", SRV_API_COMPLETIONS, "presence_penalty");
    bad("{\"prompt\":\"a\",\"frequency_penalty\":-3}", SRV_API_COMPLETIONS, "frequency_penalty");
    bad("{\"prompt\":\"a\",\"logprobs\":21}", SRV_API_COMPLETIONS, "logprobs");
    bad("{\"prompt\":\"a\",\"stop\":5}", SRV_API_COMPLETIONS, "stop");
    bad("{\"prompt\":\"a\",\"stop\":[\"a\",1]}", SRV_API_COMPLETIONS, "stop");
    bad("{\"prompt\":\"a\",\"stop\":[\"1\",\"2\",\"3\",\"4\",\"5\",\"6\",\"7\",\"8\",\"9\",\"10\",\"11\",\"12\",\"13\","
        "\"14\",\"15\",\"16\",\"17\"]}", SRV_API_COMPLETIONS, "stop");
    bad("{\"prompt\":\"a\",\"stop_token_ids\":[-1]}", SRV_API_COMPLETIONS, "stop_token_ids");
    bad("{\"prompt\":\"a\",\"stream\":1}", SRV_API_COMPLETIONS, "stream");
    bad("{\"prompt\":\"a\",\"stream_options\":[]}", SRV_API_COMPLETIONS, "stream_options");
    bad("{\"prompt\":\"a\",\"ignore_eos\":\"yes\"}", SRV_API_COMPLETIONS, "ignore_eos");
    bad("{\"prompt\":\"a\",\"model\":3}", SRV_API_COMPLETIONS, "model");
    bad("{\"prompt\":\"a\",\"seed\":1.5}", SRV_API_COMPLETIONS, "seed");
}

static void test_chat(void) {
    srv_request r;
    const char *p;
    cJSON *body;
    CHECK(parse("{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":9,\"max_completion_tokens\":4,"
                "\"logprobs\":true,\"top_logprobs\":2,\"chat_template_kwargs\":{\"thinking\":true},"
                "\"extra_body\":{\"chat_template_kwargs\":{\"thinking\":false,\"x\":1},\"top_k\":5}}",
                SRV_API_CHAT, &r, &p, &body) == FR_OK);
    CHECK(r.messages && cJSON_GetArraySize(r.messages) == 1 && r.add_generation_prompt && !r.tools);
    CHECK(r.max_tokens_set && r.max_tokens == 4); /* max_completion_tokens supersedes max_tokens */
    CHECK(r.logprobs && r.gen.top_logprobs == 2);
    CHECK(r.gen.top_k == 5); /* from extra_body */
    CHECK(r.kwargs && cJSON_IsTrue(cJSON_GetObjectItem(r.kwargs, "thinking"))); /* top level wins */
    CHECK(cJSON_GetObjectItem(r.kwargs, "x") != NULL);
    CHECK(r.unknown[0] == '\0');
    srv_request_release(&r);
    cJSON_Delete(body);

    /* logprobs without top_logprobs is fine (0 alternatives) */
    CHECK(parse("{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"logprobs\":true}", SRV_API_CHAT, &r, &p,
                &body) == FR_OK && r.gen.top_logprobs == 0);
    srv_request_release(&r);
    cJSON_Delete(body);

    bad("{}", SRV_API_CHAT, "messages");
    bad("{\"messages\":[]}", SRV_API_CHAT, "messages");
    bad("{\"messages\":[{\"content\":\"x\"}]}", SRV_API_CHAT, "messages");
    bad("{\"messages\":\"hi\"}", SRV_API_CHAT, "messages");
    bad("{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"top_logprobs\":2}", SRV_API_CHAT, "top_logprobs");
    bad("{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"logprobs\":true,\"top_logprobs\":21}", SRV_API_CHAT,
        "top_logprobs");
    bad("{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"logprobs\":1}", SRV_API_CHAT, "logprobs");
    bad("{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"tools\":{}}", SRV_API_CHAT, "tools");
    bad("{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"chat_template_kwargs\":[1]}", SRV_API_CHAT,
        "chat_template_kwargs");
    bad("{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"response_format\":{\"type\":\"xml\"}}", SRV_API_CHAT,
        "response_format");
    bad("{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"response_format\":{\"type\":\"json_schema\"}}",
        SRV_API_CHAT, "response_format");
    bad("{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_completion_tokens\":-1}", SRV_API_CHAT,
        "max_completion_tokens");

    /* a body that is not an object */
    fr_error err;
    fr_gen_params d = defaults();
    cJSON *arr = cJSON_Parse("[1]");
    CHECK(srv_request_parse(arr, SRV_API_CHAT, &d, &r, &p, &err) == FR_ERR_INVALID);
    cJSON_Delete(arr);
}

int main(void) {
    test_completions();
    test_chat();
    return check_report("server_request");
}
