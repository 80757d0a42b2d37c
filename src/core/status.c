/* status.c - the error record (see status.h). */
#include "status.h"

#include <stdio.h>
#include <string.h>

fr_status fr_fail(fr_error *err, fr_status code, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        err->code = code;
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return code;
}

fr_status fr_error_prefix(fr_error *err, const char *fmt, ...) {
    if (!err) return FR_ERR_INVALID;
    char head[256], old[sizeof err->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(head, sizeof head, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    size_t h = strlen(head), o = strnlen(old, sizeof old - 1), cap = sizeof err->msg - 1;
    if (h > cap - 2) h = cap - 2;
    memcpy(err->msg, head, h);
    memcpy(err->msg + h, ": ", 2);
    if (o > cap - h - 2) o = cap - h - 2;
    memcpy(err->msg + h + 2, old, o);
    err->msg[h + 2 + o] = 0;
    return err->code;
}

const char *fr_status_name(fr_status s) {
    switch (s) {
    case FR_OK: return "ok";
    case FR_ERR_NOMEM: return "out of memory";
    case FR_ERR_IO: return "i/o error";
    case FR_ERR_FORMAT: return "format error";
    case FR_ERR_UNSUPPORTED: return "unsupported";
    case FR_ERR_INVALID: return "invalid argument";
    case FR_ERR_DEVICE: return "device error";
    case FR_ERR_CAPACITY: return "capacity exceeded";
    case FR_ERR_BUSY: return "busy";
    case FR_ERR_RETRY: return "retry";
    }
    return "unknown error";
}
