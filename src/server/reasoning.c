/* reasoning.c - reasoning / content splitter (see reasoning.h). */
#include "reasoning.h"

#include <string.h>

void srv_reasoning_init(srv_reasoning *r, bool start_inside) {
    memset(r, 0, sizeof *r);
    r->state = start_inside ? SRV_RSN_REASONING : SRV_RSN_START;
    r->trim_newlines = start_inside;
}

void srv_reasoning_release(srv_reasoning *r) { srv_buf_release(&r->hold); }

/* Append to dst, dropping leading newlines while r->trim_newlines. */
static bool emit(srv_reasoning *r, srv_buf *dst, const char *s, size_t n) {
    if (r->trim_newlines) {
        while (n && (*s == '\n' || *s == '\r')) s++, n--;
        if (!n) return true;
        r->trim_newlines = false;
    }
    return srv_buf_append(dst, s, n);
}

/* Longest tail of s[0..n) that is a proper prefix of tag. */
static size_t tag_tail(const char *s, size_t n, const char *tag) {
    size_t t = strlen(tag);
    for (size_t k = (t - 1 < n ? t - 1 : n); k > 0; k--)
        if (memcmp(s + n - k, tag, k) == 0) return k;
    return 0;
}

bool srv_reasoning_push(srv_reasoning *r, const char *s, size_t n, srv_buf *reasoning, srv_buf *content) {
    if (r->state == SRV_RSN_CONTENT && r->hold.len == 0) return emit(r, content, s, n);
    if (!srv_buf_append(&r->hold, s, n)) return false;
    bool ok = true;
    for (;;) {
        const char *h = r->hold.data;
        size_t len = r->hold.len;
        if (r->state == SRV_RSN_START) {
            const size_t t = strlen(SRV_THINK_OPEN);
            if (len >= t && memcmp(h, SRV_THINK_OPEN, t) == 0) {
                srv_buf_consume(&r->hold, t);
                r->state = SRV_RSN_REASONING;
                r->trim_newlines = true;
                continue;
            }
            if (len < t && memcmp(h, SRV_THINK_OPEN, len) == 0) return true; /* undecided */
            r->state = SRV_RSN_CONTENT;
            continue;
        }
        if (r->state == SRV_RSN_CONTENT) {
            ok = emit(r, content, h, len);
            srv_buf_clear(&r->hold);
            return ok;
        }
        /* inside the reasoning: look for the closing tag */
        const char *end = memmem(h, len, SRV_THINK_CLOSE, strlen(SRV_THINK_CLOSE));
        if (end) {
            size_t before = (size_t)(end - h);
            ok = emit(r, reasoning, h, before);
            srv_buf_consume(&r->hold, before + strlen(SRV_THINK_CLOSE));
            r->state = SRV_RSN_CONTENT;
            r->trim_newlines = true;
            if (!ok) return false;
            continue;
        }
        size_t keep = tag_tail(h, len, SRV_THINK_CLOSE);
        ok = emit(r, reasoning, h, len - keep);
        srv_buf_consume(&r->hold, len - keep);
        return ok;
    }
}

bool srv_reasoning_flush(srv_reasoning *r, srv_buf *reasoning, srv_buf *content) {
    bool ok = true;
    if (r->hold.len) ok = emit(r, r->state == SRV_RSN_REASONING ? reasoning : content, r->hold.data, r->hold.len);
    srv_buf_clear(&r->hold);
    return ok;
}

bool srv_prompt_opens_reasoning(const char *prompt, size_t len) {
    while (len && (prompt[len - 1] == '\n' || prompt[len - 1] == ' ' || prompt[len - 1] == '\r')) len--;
    const size_t t = strlen(SRV_THINK_OPEN);
    return len >= t && memcmp(prompt + len - t, SRV_THINK_OPEN, t) == 0;
}
