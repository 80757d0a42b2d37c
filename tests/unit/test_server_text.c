/* test_server_text.c - the server's text pipeline pieces: stop strings with hold-back across
 * chunk boundaries (UTF-8 included), the reasoning / content splitter, UTF-8 prefix helper. */
#include <string.h>

#include "check.h"
#include "server/reasoning.h"
#include "server/stop.h"

/* Push pieces one by one; return everything released (plus the flush unless matched). */
static void run_stop(const char *const *stops, int n_stops, const char *const *pieces, int n, srv_buf *out,
                     bool *matched) {
    srv_stop m;
    fr_error err;
    CHECK(srv_stop_init(&m, stops, n_stops, &err) == FR_OK);
    bool oom = false;
    *matched = false;
    for (int i = 0; i < n && !*matched; i++) *matched = srv_stop_push(&m, pieces[i], strlen(pieces[i]), out, &oom);
    srv_stop_flush(&m, out, &oom);
    CHECK(!oom);
    srv_stop_release(&m);
}

static void test_stop(void) {
    srv_buf out = {0};
    bool matched;
    const char *end[] = {"END"};

    /* split across three pieces; nothing of the stop string is ever released */
    {
        srv_stop m;
        fr_error err;
        bool oom = false;
        CHECK(srv_stop_init(&m, end, 1, &err) == FR_OK);
        CHECK(!srv_stop_push(&m, "abcE", 4, &out, &oom));
        CHECK(out.len == 3 && !memcmp(out.data, "abc", 3));
        CHECK(!srv_stop_push(&m, "N", 1, &out, &oom));
        CHECK(out.len == 3);
        CHECK(srv_stop_push(&m, "Dxyz", 4, &out, &oom));
        CHECK(out.len == 3);
        CHECK(srv_stop_push(&m, "more", 4, &out, &oom)); /* later input is ignored */
        CHECK(out.len == 3);
        srv_stop_release(&m);
    }
    /* a held prefix that does not complete is released with what follows */
    srv_buf_clear(&out);
    run_stop(end, 1, (const char *[]){"abE", "Nx", "y"}, 3, &out, &matched);
    CHECK(!matched && !strcmp(out.data, "abENxy"));
    /* the tail held at the end comes out on flush */
    srv_buf_clear(&out);
    run_stop(end, 1, (const char *[]){"xE"}, 1, &out, &matched);
    CHECK(!matched && !strcmp(out.data, "xE"));
    /* earliest occurrence among several stops wins */
    srv_buf_clear(&out);
    run_stop((const char *[]){"cd", "bcde"}, 2, (const char *[]){"abcdef"}, 1, &out, &matched);
    CHECK(matched && !strcmp(out.data, "a"));
    /* the stop string at the very start: empty output */
    srv_buf_clear(&out);
    run_stop(end, 1, (const char *[]){"EN", "D"}, 2, &out, &matched);
    CHECK(matched && out.len == 0);
    /* no stops: pass-through; empty stop strings are ignored */
    srv_buf_clear(&out);
    run_stop((const char *[]){""}, 1, (const char *[]){"a", "b"}, 2, &out, &matched);
    CHECK(!matched && !strcmp(out.data, "ab"));
    /* UTF-8: "é" (C3 A9) as a stop, and a stop beginning with a multi-byte character */
    srv_buf_clear(&out);
    run_stop((const char *[]){"\xC3\xA9"}, 1, (const char *[]){"caf", "\xC3\xA9", "!"}, 3, &out, &matched);
    CHECK(matched && !strcmp(out.data, "caf"));
    {
        srv_stop m;
        fr_error err;
        bool oom = false;
        const char *st[] = {"\xE2\x82\xACx"}; /* "€x" */
        srv_buf_clear(&out);
        CHECK(srv_stop_init(&m, st, 1, &err) == FR_OK);
        CHECK(!srv_stop_push(&m, "ab\xE2\x82\xAC", 5, &out, &oom));
        CHECK(!strcmp(out.data, "ab")); /* the whole character is held, not half of it */
        CHECK(!srv_stop_push(&m, "y", 1, &out, &oom));
        CHECK(!strcmp(out.data, "ab\xE2\x82\xACy"));
        srv_stop_release(&m);
    }
    /* limits */
    {
        srv_stop m;
        fr_error err;
        const char *many[SRV_MAX_STOP + 1];
        for (int i = 0; i <= SRV_MAX_STOP; i++) many[i] = "x";
        CHECK(srv_stop_init(&m, many, SRV_MAX_STOP + 1, &err) == FR_ERR_INVALID);
        static char big[SRV_MAX_STOP_BYTES + 2];
        memset(big, 'a', SRV_MAX_STOP_BYTES + 1);
        const char *one[] = {big};
        CHECK(srv_stop_init(&m, one, 1, &err) == FR_ERR_INVALID);
    }
    srv_buf_release(&out);
}

static void split(bool inside, const char *const *pieces, int n, const char *want_r, const char *want_c) {
    srv_reasoning r;
    srv_buf rs = {0}, ct = {0};
    srv_reasoning_init(&r, inside);
    for (int i = 0; i < n; i++) CHECK(srv_reasoning_push(&r, pieces[i], strlen(pieces[i]), &rs, &ct));
    CHECK(srv_reasoning_flush(&r, &rs, &ct));
    CHECK_MSG(!strcmp(rs.data ? rs.data : "", want_r), "reasoning \"%s\" vs \"%s\"", rs.data ? rs.data : "", want_r);
    CHECK_MSG(!strcmp(ct.data ? ct.data : "", want_c), "content \"%s\" vs \"%s\"", ct.data ? ct.data : "", want_c);
    srv_reasoning_release(&r);
    srv_buf_release(&rs);
    srv_buf_release(&ct);
}

static void test_reasoning(void) {
    /* prompt ended in <think>: only </think> comes, split over pieces, newlines trimmed */
    split(true, (const char *[]){"\nthinking", " hard</thi", "nk>\n\nThe answer"}, 3, "thinking hard", "The answer");
    /* the model opens the reasoning itself at the very start */
    split(false, (const char *[]){"<th", "ink>\nfoo</think>", "bar"}, 3, "foo", "bar");
    /* a tag later in the text is just text */
    split(false, (const char *[]){"Hello <think>x</think>"}, 1, "", "Hello <think>x</think>");
    /* a prefix of <think> that turns out to be other text */
    split(false, (const char *[]){"<th", "e end"}, 2, "", "<the end");
    /* output cut inside the reasoning: everything (held tail too) is reasoning */
    split(true, (const char *[]){"abc</th"}, 1, "abc</th", "");
    /* thinking off: no tags at all */
    split(false, (const char *[]){"plain answer"}, 1, "", "plain answer");
    /* each piece's reasoning appears as soon as it is decided */
    {
        srv_reasoning r;
        srv_buf rs = {0}, ct = {0};
        srv_reasoning_init(&r, true);
        CHECK(srv_reasoning_push(&r, "ab</", 4, &rs, &ct));
        CHECK(rs.len == 2 && ct.len == 0);
        CHECK(srv_reasoning_push(&r, "think>c", 7, &rs, &ct));
        CHECK(!strcmp(ct.data, "c"));
        srv_reasoning_release(&r);
        srv_buf_release(&rs);
        srv_buf_release(&ct);
    }
    CHECK(srv_prompt_opens_reasoning("<｜User｜>hi<｜Assistant｜><think>\n", strlen("<｜User｜>hi<｜Assistant｜><think>\n")));
    CHECK(!srv_prompt_opens_reasoning("<｜Assistant｜></think>", strlen("<｜Assistant｜></think>")));
    CHECK(!srv_prompt_opens_reasoning("", 0));
}

static void test_utf8(void) {
    CHECK(srv_utf8_complete_prefix("abc", 3) == 3);
    CHECK(srv_utf8_complete_prefix("a\xE2\x82", 3) == 1);
    CHECK(srv_utf8_complete_prefix("a\xE2\x82\xAC", 4) == 4);
    CHECK(srv_utf8_complete_prefix("a\xC3", 2) == 1);
    CHECK(srv_utf8_complete_prefix("\xF0\x9F\x98", 3) == 0);
    CHECK(srv_utf8_complete_prefix("", 0) == 0);
}

int main(void) {
    test_stop();
    test_reasoning();
    test_utf8();
    return check_report("server_text");
}
