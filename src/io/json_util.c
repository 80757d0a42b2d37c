/* json_util.c - bounded file reading and JSON parsing with positioned errors. */
#include "json_util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

fr_status fr_read_file(const char *path, size_t max_bytes, char **out, size_t *len, fr_error *err) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return fr_fail(err, FR_ERR_IO, "open %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return fr_fail(err, FR_ERR_IO, "%s: not a regular file", path);
    }
    if ((size_t)st.st_size > max_bytes) {
        fclose(f);
        return fr_fail(err, FR_ERR_FORMAT, "%s: %lld bytes, more than the %zu allowed", path,
                       (long long)st.st_size, max_bytes);
    }
    size_t n = (size_t)st.st_size;
    char *buf = malloc(n + 1);
    if (!buf) {
        fclose(f);
        return fr_fail(err, FR_ERR_NOMEM, "%s: cannot allocate %zu bytes", path, n + 1);
    }
    size_t got = fread(buf, 1, n, f);
    fclose(f);
    if (got != n) {
        free(buf);
        return fr_fail(err, FR_ERR_IO, "read %s: short read (%zu of %zu bytes)", path, got, n);
    }
    buf[n] = 0;
    *out = buf;
    if (len) *len = n;
    return FR_OK;
}

fr_status fr_json_parse(const char *text, size_t len, const char *what, cJSON **out, fr_error *err) {
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!j) {
        size_t off = end && end >= text ? (size_t)(end - text) : 0;
        return fr_fail(err, FR_ERR_FORMAT, "%s: invalid JSON near byte %zu", what, off);
    }
    *out = j;
    return FR_OK;
}
