/* stop.c - stop-string matcher with hold-back (see stop.h). */
#include "stop.h"

#include <stdlib.h>
#include <string.h>

fr_status srv_stop_init(srv_stop *m, const char *const *stops, int n, fr_error *err) {
    memset(m, 0, sizeof *m);
    if (n > SRV_MAX_STOP) return fr_fail(err, FR_ERR_INVALID, "at most %d stop strings are allowed", SRV_MAX_STOP);
    for (int i = 0; i < n; i++) {
        size_t len = strlen(stops[i]);
        if (len == 0) continue;
        if (len > SRV_MAX_STOP_BYTES) {
            srv_stop_release(m);
            return fr_fail(err, FR_ERR_INVALID, "stop strings are limited to %d bytes", SRV_MAX_STOP_BYTES);
        }
        if (!(m->stop[m->n] = malloc(len + 1))) {
            srv_stop_release(m);
            return fr_fail(err, FR_ERR_NOMEM, "out of memory");
        }
        memcpy(m->stop[m->n], stops[i], len + 1);
        m->len[m->n++] = len;
    }
    return FR_OK;
}

void srv_stop_release(srv_stop *m) {
    for (int i = 0; i < m->n; i++) free(m->stop[i]);
    srv_buf_release(&m->pending);
    memset(m, 0, sizeof *m);
}

/* Earliest position of any stop string in s[0..n), or n when none occurs. */
static size_t find_first(const srv_stop *m, const char *s, size_t n) {
    size_t best = n;
    for (int i = 0; i < m->n; i++) {
        const char *p = memmem(s, n, m->stop[i], m->len[i]);
        if (p && (size_t)(p - s) < best) best = (size_t)(p - s);
    }
    return best;
}

/* Length of the longest tail of s[0..n) that is a proper prefix of some stop string. */
static size_t tail_to_hold(const srv_stop *m, const char *s, size_t n) {
    size_t hold = 0;
    for (int i = 0; i < m->n; i++) {
        size_t k = m->len[i] - 1 < n ? m->len[i] - 1 : n;
        for (; k > hold; k--)
            if (s[n - k] == m->stop[i][0] && memcmp(s + n - k, m->stop[i], k) == 0) break;
        if (k > hold) hold = k;
    }
    return hold;
}

bool srv_stop_push(srv_stop *m, const char *s, size_t n, srv_buf *out, bool *oom) {
    if (m->matched) return true;
    if (m->n == 0) {
        if (!srv_buf_append(out, s, n)) *oom = true;
        return false;
    }
    if (!srv_buf_append(&m->pending, s, n)) {
        *oom = true;
        return false;
    }
    size_t at = find_first(m, m->pending.data, m->pending.len);
    if (at < m->pending.len) {
        if (!srv_buf_append(out, m->pending.data, at)) *oom = true;
        srv_buf_clear(&m->pending);
        m->matched = true;
        return true;
    }
    size_t release = m->pending.len - tail_to_hold(m, m->pending.data, m->pending.len);
    /* A held tail starts with a stop string's first byte, so it starts a character when the
     * stop strings are valid UTF-8; align anyway in case one is not. */
    release = srv_utf8_complete_prefix(m->pending.data, release);
    if (release) {
        if (!srv_buf_append(out, m->pending.data, release)) {
            *oom = true;
            return false;
        }
        srv_buf_consume(&m->pending, release);
    }
    return false;
}

void srv_stop_flush(srv_stop *m, srv_buf *out, bool *oom) {
    if (!m->matched && m->pending.len && !srv_buf_append(out, m->pending.data, m->pending.len)) *oom = true;
    srv_buf_clear(&m->pending);
}
