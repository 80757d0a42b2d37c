/* buf.c - growable byte buffer (see buf.h). */
#include "buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool reserve(srv_buf *b, size_t extra) {
    if (extra > ((size_t)-1) / 2 - b->len) return false;
    size_t need = b->len + extra + 1; /* + NUL */
    if (need <= b->cap) return true;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need) cap *= 2;
    char *p = realloc(b->data, cap);
    if (!p) return false;
    b->data = p;
    b->cap = cap;
    return true;
}

bool srv_buf_append(srv_buf *b, const char *s, size_t n) {
    if (!reserve(b, n)) return false;
    if (n) memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
    return true;
}

bool srv_buf_puts(srv_buf *b, const char *s) { return srv_buf_append(b, s, strlen(s)); }

bool srv_buf_printf(srv_buf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || !reserve(b, (size_t)n)) return false;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return true;
}

void srv_buf_consume(srv_buf *b, size_t n) {
    if (n >= b->len) {
        srv_buf_clear(b);
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
    b->data[b->len] = '\0';
}

void srv_buf_clear(srv_buf *b) {
    b->len = 0;
    if (b->data) b->data[0] = '\0';
}

void srv_buf_release(srv_buf *b) {
    free(b->data);
    *b = (srv_buf){0};
}

size_t srv_utf8_complete_prefix(const char *s, size_t n) {
    /* Walk back over at most 3 continuation bytes to the lead byte of the last character. */
    size_t i = n, back = 0;
    while (i > 0 && back < 4 && ((unsigned char)s[i - 1] & 0xC0) == 0x80) i--, back++;
    if (i == 0) return n; /* only continuation bytes: nothing to align to, pass them through */
    unsigned char lead = (unsigned char)s[i - 1];
    size_t want = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
    if (lead < 0x80 || lead >= 0xF8) return n; /* ASCII or not a lead byte: complete as is */
    return back + 1 >= want ? n : i - 1;
}
