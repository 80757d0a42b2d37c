/* json_util.h - bounded file reading and small cJSON helpers shared by io/. */
#ifndef FR_JSON_UTIL_H
#define FR_JSON_UTIL_H

#include <stddef.h>

#include <cjson/cJSON.h>

#include "../core/status.h"

/* Read the whole file at path into a NUL-terminated malloc'd buffer (caller frees).
 * Files larger than max_bytes are an FR_ERR_FORMAT error. *len may be NULL. */
fr_status fr_read_file(const char *path, size_t max_bytes, char **out, size_t *len, fr_error *err);

/* Parse JSON text; on failure the message names `what` and the byte offset. */
fr_status fr_json_parse(const char *text, size_t len, const char *what, cJSON **out, fr_error *err);

#endif
