/* buf.h - a growable byte buffer for the server's text and JSON assembly.
 *
 * Zero-initialize, append, release. data is NUL-terminated whenever it is non-NULL, so it
 * can be handed to string functions (the bytes themselves may contain NUL). */
#ifndef FR_SRV_BUF_H
#define FR_SRV_BUF_H

#include <stdbool.h>
#include <stddef.h>

typedef struct {
    char *data;
    size_t len, cap;
} srv_buf;

/* Append n bytes; false when out of memory (the buffer is unchanged then). */
bool srv_buf_append(srv_buf *b, const char *s, size_t n);
bool srv_buf_puts(srv_buf *b, const char *s);
#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
bool srv_buf_printf(srv_buf *b, const char *fmt, ...);
/* Drop the first n bytes (n <= len). */
void srv_buf_consume(srv_buf *b, size_t n);
void srv_buf_clear(srv_buf *b);
void srv_buf_release(srv_buf *b);

/* Length of the longest prefix of s[0..n) that does not end inside a UTF-8 character:
 * n itself unless the last bytes are an incomplete lead + continuation sequence. */
size_t srv_utf8_complete_prefix(const char *s, size_t n);

#endif
