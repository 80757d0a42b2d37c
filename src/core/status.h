/* status.h - error codes and the error record every fallible call fills.
 *
 * Convention (git's error(), SQLite's out-parameter): a function that can fail
 * returns an fr_status and, on failure, writes one human-readable line into
 * the caller's fr_error. fr_fail() does both in one expression:
 *
 *     return fr_fail(err, FR_ERR_IO, "open %s: %s", path, strerror(errno));
 *
 * Messages name the module, the object (file, tensor, field) and what was
 * expected versus found. Nothing below main() calls exit(). */
#ifndef FR_STATUS_H
#define FR_STATUS_H

#include <stdarg.h>

typedef enum {
    FR_OK = 0,
    FR_ERR_NOMEM = -1,       /* allocation failed */
    FR_ERR_IO = -2,          /* open/read/mmap/write failed */
    FR_ERR_FORMAT = -3,      /* malformed file or request */
    FR_ERR_UNSUPPORTED = -4, /* valid but not implemented (dtype, architecture, op) */
    FR_ERR_INVALID = -5,     /* bad argument from the caller (id out of range, ...) */
    FR_ERR_DEVICE = -6,      /* accelerator error */
    FR_ERR_CAPACITY = -7,    /* out of KV cache or another bounded resource */
    FR_ERR_BUSY = -8,        /* a queue is full: retry later */
    FR_ERR_RETRY = -9,       /* nothing was done; do it again (a backend declined a recorded step) */
} fr_status;

typedef struct {
    fr_status code;
    char msg[512];
} fr_error;

/* Record code and a formatted message in err (which may be NULL); return code. */
#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
fr_status fr_fail(fr_error *err, fr_status code, const char *fmt, ...);

/* Prefix an existing message: "ctx: old message". Returns err->code. */
#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
fr_status fr_error_prefix(fr_error *err, const char *fmt, ...);

const char *fr_status_name(fr_status s);

#endif
