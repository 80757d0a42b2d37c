/* args.c - strict parsing of numbers and id lists from the command line. */
#include "args.h"

#include "backend/backend.h"
#include "backend/cuda/cuda_backend.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

fr_status fr_arg_i64(const char *what, const char *s, int64_t lo, int64_t hi, int64_t *out, fr_error *err) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (!*s || *end || errno)
        return fr_fail(err, FR_ERR_INVALID, "%s: \"%s\" is not an integer", what, s);
    if (v < lo || v > hi)
        return fr_fail(err, FR_ERR_INVALID, "%s: %lld is outside [%lld, %lld]", what, v, (long long)lo, (long long)hi);
    *out = v;
    return FR_OK;
}

fr_status fr_arg_u64(const char *what, const char *s, uint64_t *out, fr_error *err) {
    char *end;
    errno = 0;
    if (!*s || *s == '-') return fr_fail(err, FR_ERR_INVALID, "%s: \"%s\" is not a non-negative integer", what, s);
    unsigned long long v = strtoull(s, &end, 10);
    if (*end || errno) return fr_fail(err, FR_ERR_INVALID, "%s: \"%s\" is not a non-negative integer", what, s);
    *out = v;
    return FR_OK;
}

fr_status fr_arg_f32(const char *what, const char *s, float lo, float hi, float *out, fr_error *err) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (!*s || *end || errno || !isfinite(v))
        return fr_fail(err, FR_ERR_INVALID, "%s: \"%s\" is not a number", what, s);
    if (v < lo || v > hi) return fr_fail(err, FR_ERR_INVALID, "%s: %g is outside [%g, %g]", what, v, lo, hi);
    *out = (float)v;
    return FR_OK;
}

fr_status fr_arg_ids(const char *s, int32_t **ids, int64_t *n, fr_error *err) {
    *ids = NULL;
    *n = 0;
    int64_t cap = 1;
    for (const char *p = s; *p; p++) cap += *p == ',';
    if (cap > FR_MAX_PROMPT_IDS) return fr_fail(err, FR_ERR_INVALID, "--ids: more than %d ids", FR_MAX_PROMPT_IDS);
    int32_t *v = malloc((size_t)cap * sizeof *v);
    if (!v) return fr_fail(err, FR_ERR_NOMEM, "--ids: out of memory");
    const char *p = s;
    int64_t k = 0;
    for (;;) {
        char *end;
        errno = 0;
        if (*p < '0' || *p > '9') goto bad;
        long long x = strtoll(p, &end, 10);
        if (errno || x > INT32_MAX) goto bad;
        v[k++] = (int32_t)x;
        if (*end == 0) break;
        if (*end != ',') goto bad;
        p = end + 1;
    }
    *ids = v;
    *n = k;
    return FR_OK;
bad:
    free(v);
    return fr_fail(err, FR_ERR_INVALID, "--ids: expected comma-separated token ids like 1,2,3 (bad item %lld)",
                   (long long)k + 1);
}

const char *fr_arg_value(int argc, char **argv, int *i, fr_error *err) {
    if (*i + 1 >= argc) {
        fr_fail(err, FR_ERR_INVALID, "option %s needs a value", argv[*i]);
        return NULL;
    }
    return argv[++*i];
}

int fr_cli_error(const char *cmd, const fr_error *err) {
    fprintf(stderr, "frontier %s: %s\n", cmd, err->msg);
    return 1;
}

fr_status fr_arg_list_i64(const char *what, const char *s, int64_t lo, int64_t hi, int64_t *out, int cap, int *n,
                          fr_error *err) {
    *n = 0;
    for (const char *p = s;;) {
        const char *comma = strchr(p, ',');
        char one[32];
        const size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (*n == cap || len == 0 || len >= sizeof one)
            return fr_fail(err, FR_ERR_INVALID, "%s wants a list of at most %d numbers like 1,4,16", what, cap);
        memcpy(one, p, len);
        one[len] = 0;
        fr_status rc = fr_arg_i64(what, one, lo, hi, &out[(*n)++], err);
        if (rc) return rc;
        if (!comma) return FR_OK;
        p = comma + 1;
    }
}

double fr_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int fr_cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* "cpu", "cuda", "cuda:N": the GPU index, -1 for cpu; -2 if malformed. */
static int device_index(const char *s) {
    if (!s || !strcmp(s, "cpu")) return -1;
    if (!strcmp(s, "cuda")) return 0;
    if (strncmp(s, "cuda:", 5) != 0 || !s[5]) return -2;
    int64_t v = 0;
    for (const char *p = s + 5; *p; p++) {
        if (*p < '0' || *p > '9' || v > 1000) return -2;
        v = v * 10 + (*p - '0');
    }
    return v > 1000 ? -2 : (int)v;
}

fr_status fr_arg_device(const char *s, fr_error *err) {
    if (device_index(s) == -2)
        return fr_fail(err, FR_ERR_INVALID, "--device \"%s\" is not a device (cpu, cuda, cuda:N)", s);
    return FR_OK;
}

fr_status fr_backend_open(const char *device, int threads, fr_backend **out, fr_error *err) {
    const int idx = device_index(device);
    if (idx == -2) return fr_arg_device(device, err);
    if (idx == -1) return fr_cpu_backend_create(threads, out, err);
    fr_status rc = fr_cuda_backend_create(idx, out, err);
    if (!rc) fprintf(stderr, "device: %s\n", fr_cuda_backend_device_name());
    return rc;
}
