/* safetensors.c - strict safetensors reader (mmap), writer, and in-memory sets.
 *
 * A set owns everything it hands out: one read-only private mapping per file,
 * one malloc'd copy of every tensor name, the tensor table (in file order, then
 * header order) and an open-addressing hash table over the names. Each file is
 * loaded straight into the set, so any failure half way leaves a consistent set
 * that fr_st_close() frees completely. Headers are untrusted input: the JSON is
 * parsed from a NUL-terminated copy (never out of the mapping), every number must
 * be an exact non-negative integer, every size is computed in uint64 with
 * overflow checks, and only after a tensor's byte range has been proven to lie
 * inside the data area is a pointer into the mapping formed. Writing builds the
 * header with cJSON (so names are escaped), prints integers as raw text (exact
 * for any size), and streams one tensor at a time from the caller's fill(). A
 * NULL fill() means zero-filled tensors. */
#include "safetensors.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../core/bigmem.h"
#include "json_util.h"

#define INDEX_NAME "model.safetensors.index.json"
#define SINGLE_NAME "model.safetensors"
#define SUFFIX ".safetensors"
#define INDEX_MAX_BYTES ((size_t)64 << 20)
#define MAX_EXACT (UINT64_C(1) << 53) /* above this a JSON number (a double) is not exact */
#define MEM_ALIGN 64
#define MEMORY_FILE "<memory>"

typedef struct {
    void *base;
    size_t len;
    char *path; /* the tensors' `file` points here */
    bool owned; /* base is fr_big_alloc'd (FR_ST_READ), not mmap'd */
} st_map;

struct fr_st_set {
    fr_st_tensor *t;
    size_t n, cap;
    st_map *maps;
    size_t nmaps, mapcap;
    size_t *slots; /* hash table of tensor index + 1; 0 is an empty slot */
    size_t nslots; /* power of two */
    void *mem;     /* fr_st_open_memory's single allocation */
    fr_st_load how;
};

/* ---- small helpers ---- */

/* Names come from the file: show a bounded prefix with control bytes replaced,
 * so an error message stays one line. */
typedef struct {
    char s[84];
} shown;

static shown show(const char *name) {
    shown r;
    size_t i = 0;
    for (; name[i] && i < sizeof r.s - 4; i++)
        r.s[i] = (unsigned char)name[i] < 0x20 || name[i] == 0x7f ? '?' : name[i];
    memcpy(r.s + i, name[i] ? "..." : "", name[i] ? 4 : 1);
    return r;
}

/* Grow an array to hold `need` elements; NULL (old array intact) on failure. */
static void *grow(void *p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return p;
    size_t c = *cap ? *cap : 16;
    while (c < need) {
        if (c > SIZE_MAX / 2 / elem) return NULL;
        c *= 2;
    }
    void *q = realloc(p, c * elem);
    if (q) *cap = c;
    return q;
}

static char *join(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    int slash = a == 0 || dir[a - 1] == '/'; /* "" stays relative */
    char *p = malloc(a + b + 2);
    if (p) snprintf(p, a + b + 2, "%s%s%s", dir, slash ? "" : "/", name);
    return p;
}

/* A shard named by an index must be a plain file inside the directory. */
static int plain_name(const char *s) {
    return s[0] && !strchr(s, '/') && strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

/* Position of a raw NUL or a \u0000 escape inside a string, or -1. cJSON would
 * silently cut a name at that point, making two different names look equal. */
static long find_nul(const char *s, size_t n) {
    int in_str = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == 0) return (long)i;
        if (!in_str) {
            in_str = s[i] == '"';
        } else if (s[i] == '\\') {
            if (i + 5 < n && s[i + 1] == 'u' && memcmp(s + i + 2, "0000", 4) == 0) return (long)i;
            i++; /* skip the escaped character, which may be a quote */
        } else if (s[i] == '"') {
            in_str = 0;
        }
    }
    return -1;
}

/* An exact non-negative integer (JSON numbers are doubles: bound by 2^53). */
static int as_count(const cJSON *j, uint64_t *out) {
    if (!cJSON_IsNumber(j)) return 0;
    double d = j->valuedouble;
    if (!(d >= 0.0) || d > (double)MAX_EXACT) return 0; /* also rejects NaN */
    uint64_t v = (uint64_t)d;
    if ((double)v != d) return 0;
    *out = v;
    return 1;
}

/* Member `key` of obj; -1 when the key is repeated (cJSON keeps both, and another
 * parser might take the other one). */
static int member(const cJSON *obj, const char *key, const cJSON **out) {
    *out = NULL;
    for (const cJSON *c = obj->child; c; c = c->next) {
        if (c->string && strcmp(c->string, key) == 0) {
            if (*out) return -1;
            *out = c;
        }
    }
    return 0;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Sorts names in place; returns a name that occurs twice, or NULL. */
static const char *sorted_dup(const char **names, size_t n) {
    if (n > 1) qsort(names, n, sizeof *names, cmp_str);
    for (size_t i = 1; i < n; i++)
        if (strcmp(names[i - 1], names[i]) == 0) return names[i];
    return NULL;
}

/* Bytes of ndim dims of `size`-byte elements; 0 on overflow (with *ok = 0). A zero
 * dimension makes the product 0 whatever the others are. */
static uint64_t shape_bytes(const int64_t *shape, int ndim, size_t size, int *ok) {
    uint64_t p = size;
    *ok = 1;
    for (int i = 0; i < ndim; i++)
        if (shape[i] == 0) return 0;
    for (int i = 0; i < ndim && *ok; i++) {
        *ok = p <= UINT64_MAX / (uint64_t)shape[i];
        p *= (uint64_t)shape[i]; /* unsigned: wraps harmlessly when !*ok */
    }
    *ok = *ok && p <= SIZE_MAX;
    return *ok ? p : 0;
}

static uint64_t fnv1a(const char *s) {
    uint64_t h = UINT64_C(14695981039346656037);
    for (; *s; s++) h = (h ^ (unsigned char)*s) * UINT64_C(1099511628211);
    return h;
}

/* ---- the set ---- */

/* Hand the set out, or free everything on failure. */
static fr_status finish(fr_st_set *set, fr_status s, fr_st_set **out) {
    if (s != FR_OK) fr_st_close(set);
    else *out = set;
    return s;
}

static fr_status push_tensor(fr_st_set *set, fr_st_tensor t, const char *name, fr_error *err) {
    fr_st_tensor *a = grow(set->t, &set->cap, set->n + 1, sizeof *a);
    char *copy = strdup(name);
    if (a) set->t = a;
    if (!a || !copy) {
        free(copy);
        return fr_fail(err, FR_ERR_NOMEM, "%s: out of memory for tensor '%s'", t.file, show(name).s);
    }
    t.name = copy;
    set->t[set->n++] = t;
    return FR_OK;
}

/* Hash every name; a name seen twice is an error naming both files. */
static fr_status build_index(fr_st_set *set, fr_error *err) {
    size_t cap = 16;
    while (cap / 2 < set->n) {
        if (cap > SIZE_MAX / 4 / sizeof(size_t)) return fr_fail(err, FR_ERR_NOMEM, "too many tensors");
        cap *= 2;
    }
    free(set->slots);
    set->slots = calloc(cap, sizeof(size_t));
    set->nslots = set->slots ? cap : 0;
    if (!set->slots) return fr_fail(err, FR_ERR_NOMEM, "out of memory for the tensor index");
    for (size_t i = 0; i < set->n; i++) {
        size_t h = (size_t)fnv1a(set->t[i].name) & (cap - 1);
        for (; set->slots[h]; h = (h + 1) & (cap - 1)) {
            const fr_st_tensor *o = &set->t[set->slots[h] - 1];
            if (strcmp(o->name, set->t[i].name) != 0) continue;
            if (o->file == set->t[i].file)
                return fr_fail(err, FR_ERR_FORMAT, "%s: duplicate tensor name '%s'", o->file,
                               show(o->name).s);
            return fr_fail(err, FR_ERR_FORMAT, "tensor '%s' is in both %s and %s", show(o->name).s,
                           o->file, set->t[i].file);
        }
        set->slots[h] = i + 1;
    }
    return FR_OK;
}

typedef struct {
    uint64_t b, e;
    size_t i;
} range;

static int cmp_range(const void *x, const void *y) {
    const range *a = x, *b = y;
    if (a->b != b->b) return a->b < b->b ? -1 : 1;
    return a->e < b->e ? -1 : a->e > b->e;
}

/* Tensors [first, n) of one file: after sorting by begin, each non-empty range must
 * start at or after the end of the one before. */
static fr_status check_overlap(fr_st_set *set, size_t first, const uint8_t *data, const char *path,
                               fr_error *err) {
    size_t cnt = set->n - first, k = 0;
    if (cnt < 2) return FR_OK;
    range *r = cnt <= SIZE_MAX / sizeof *r ? malloc(cnt * sizeof *r) : NULL;
    if (!r) return fr_fail(err, FR_ERR_NOMEM, "%s: out of memory checking overlaps", path);
    for (size_t i = first; i < set->n; i++) {
        if (!set->t[i].nbytes) continue; /* an empty tensor occupies no bytes */
        uint64_t b = (uint64_t)(set->t[i].data - data);
        r[k++] = (range){b, b + set->t[i].nbytes, i};
    }
    qsort(r, k, sizeof *r, cmp_range);
    fr_status s = FR_OK;
    for (size_t j = 1; j < k && s == FR_OK; j++) {
        if (r[j].b >= r[j - 1].e) continue;
        s = fr_fail(err, FR_ERR_FORMAT,
                    "%s: tensors '%s' [%" PRIu64 ", %" PRIu64 ") and '%s' [%" PRIu64 ", %" PRIu64 ") overlap",
                    path, show(set->t[r[j - 1].i].name).s, r[j - 1].b, r[j - 1].e,
                    show(set->t[r[j].i].name).s, r[j].b, r[j].e);
    }
    free(r);
    return s;
}

/* One header entry -> t (all but name/file/data) and its begin offset. */
static fr_status parse_entry(const char *path, const char *name, const cJSON *e, uint64_t data_len,
                             fr_st_tensor *t, uint64_t *begin, fr_error *err) {
    const cJSON *dt, *sh, *off;
    shown nm = show(name);
    if (!cJSON_IsObject(e))
        return fr_fail(err, FR_ERR_FORMAT, "%s: tensor '%s': entry is not an object", path, nm.s);
    if (member(e, "dtype", &dt) || member(e, "shape", &sh) || member(e, "data_offsets", &off))
        return fr_fail(err, FR_ERR_FORMAT, "%s: tensor '%s': repeated key", path, nm.s);
    if (!cJSON_IsString(dt))
        return fr_fail(err, FR_ERR_FORMAT, "%s: tensor '%s': dtype missing or not a string", path, nm.s);
    if (fr_dtype_parse(dt->valuestring, &t->dtype) != 0)
        return fr_fail(err, FR_ERR_FORMAT, "%s: tensor '%s': unknown dtype '%s'", path, nm.s,
                       show(dt->valuestring).s);
    if (!cJSON_IsArray(sh))
        return fr_fail(err, FR_ERR_FORMAT, "%s: tensor '%s': shape missing or not an array", path, nm.s);
    t->ndim = 0;
    for (const cJSON *d = sh->child; d; d = d->next) {
        uint64_t v;
        if (t->ndim == FR_ST_MAX_DIMS)
            return fr_fail(err, FR_ERR_FORMAT, "%s: tensor '%s': more than %d dimensions", path, nm.s,
                           FR_ST_MAX_DIMS);
        if (!as_count(d, &v))
            return fr_fail(err, FR_ERR_FORMAT, "%s: tensor '%s': shape[%d] is not an integer in [0, 2^53]",
                           path, nm.s, t->ndim);
        t->shape[t->ndim++] = (int64_t)v;
    }
    uint64_t b, en;
    if (!cJSON_IsArray(off) || !off->child || !off->child->next || off->child->next->next ||
        !as_count(off->child, &b) || !as_count(off->child->next, &en))
        return fr_fail(err, FR_ERR_FORMAT,
                       "%s: tensor '%s': data_offsets must be two non-negative integers", path, nm.s);
    if (b > en)
        return fr_fail(err, FR_ERR_FORMAT, "%s: tensor '%s': data_offsets begin %" PRIu64 " > end %" PRIu64,
                       path, nm.s, b, en);
    if (en > data_len)
        return fr_fail(err, FR_ERR_FORMAT,
                       "%s: tensor '%s': data_offsets end %" PRIu64 " beyond the %" PRIu64 "-byte data area",
                       path, nm.s, en, data_len);
    int ok;
    uint64_t want = shape_bytes(t->shape, t->ndim, fr_dtype_size(t->dtype), &ok);
    if (!ok)
        return fr_fail(err, FR_ERR_FORMAT, "%s: tensor '%s': shape size overflows", path, nm.s);
    if (en - b != want)
        return fr_fail(err, FR_ERR_FORMAT,
                       "%s: tensor '%s': data_offsets span %" PRIu64 " bytes but the %s shape needs %" PRIu64,
                       path, nm.s, en - b, fr_dtype_name(t->dtype), want);
    t->nbytes = (size_t)want;
    *begin = b;
    return FR_OK;
}

static fr_status parse_entries(fr_st_set *set, const st_map *m, const cJSON *root, uint64_t data_start,
                               fr_error *err) {
    const char *path = m->path;
    const uint8_t *data = (const uint8_t *)m->base + data_start;
    uint64_t data_len = (uint64_t)m->len - data_start;
    size_t first = set->n;
    int seen_meta = 0;
    if (!cJSON_IsObject(root)) return fr_fail(err, FR_ERR_FORMAT, "%s: header is not a JSON object", path);
    for (const cJSON *e = root->child; e; e = e->next) {
        if (strcmp(e->string, "__metadata__") == 0) {
            if (seen_meta++ || !cJSON_IsObject(e))
                return fr_fail(err, FR_ERR_FORMAT, "%s: __metadata__ is repeated or not an object", path);
            for (const cJSON *v = e->child; v; v = v->next)
                if (!cJSON_IsString(v))
                    return fr_fail(err, FR_ERR_FORMAT, "%s: __metadata__ value '%s' is not a string", path,
                                   show(v->string).s);
            continue;
        }
        if (!e->string[0]) return fr_fail(err, FR_ERR_FORMAT, "%s: empty tensor name", path);
        fr_st_tensor t = {0};
        uint64_t begin = 0;
        fr_status s = parse_entry(path, e->string, e, data_len, &t, &begin, err);
        if (s != FR_OK) return s;
        t.data = t.nbytes ? data + begin : NULL; /* in range: parse_entry checked end <= data_len */
        t.file = path;
        if ((s = push_tensor(set, t, e->string, err)) != FR_OK) return s;
    }
    return check_overlap(set, first, data, path, err);
}

/* Parse and validate the header of a mapped file, appending its tensors. */
static fr_status parse_header(fr_st_set *set, const st_map *m, fr_error *err) {
    const uint8_t *b = m->base;
    const char *path = m->path;
    uint64_t hlen = 0, avail = (uint64_t)m->len - 8;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | b[i];
    if (hlen == 0) return fr_fail(err, FR_ERR_FORMAT, "%s: header length is 0", path);
    if (hlen > avail)
        return fr_fail(err, FR_ERR_FORMAT, "%s: header length %" PRIu64 " exceeds the %" PRIu64 " bytes after it",
                       path, hlen, avail);
    if (hlen > FR_ST_MAX_HEADER)
        return fr_fail(err, FR_ERR_FORMAT, "%s: header length %" PRIu64 " is over the %u-byte limit", path,
                       hlen, FR_ST_MAX_HEADER);
    /* Parse a NUL-terminated copy: cJSON before 1.7.18 can read a byte past a string
     * that ends in a backslash (CVE-2023-53154), which must not leave the mapping. */
    char *text = malloc((size_t)hlen + 1);
    if (!text) return fr_fail(err, FR_ERR_NOMEM, "%s: cannot allocate the %" PRIu64 "-byte header", path, hlen);
    memcpy(text, b + 8, (size_t)hlen);
    text[hlen] = 0;
    /* The length covers the NUL and termination is required, so trailing garbage
     * (anything but whitespace padding) is rejected too. */
    long nul = find_nul(text, (size_t)hlen);
    const char *end = NULL;
    cJSON *root = nul < 0 ? cJSON_ParseWithLengthOpts(text, (size_t)hlen + 1, &end, 1) : NULL;
    size_t at = end && end >= text ? (size_t)(end - text) : 0;
    free(text);
    if (nul >= 0) return fr_fail(err, FR_ERR_FORMAT, "%s: NUL character in the header at byte %ld", path, nul);
    if (!root) return fr_fail(err, FR_ERR_FORMAT, "%s: invalid JSON header near byte %zu", path, at);
    fr_status s = parse_entries(set, m, root, 8 + hlen, err);
    cJSON_Delete(root);
    return s;
}

/* Map one file into the set (registered before parsing, so close frees it). */
/* The whole file into fr_big_alloc memory (2 MiB pages: core/bigmem.h). */
static fr_status read_whole(int fd, const char *path, size_t len, void **out, fr_error *err) {
    uint8_t *mem = fr_big_alloc(len);
    if (!mem) return fr_fail(err, FR_ERR_NOMEM, "%s: cannot allocate %zu bytes to read it into", path, len);
    for (size_t at = 0; at < len;) {
        const size_t want = len - at < ((size_t)1 << 30) ? len - at : ((size_t)1 << 30);
        const ssize_t got = pread(fd, mem + at, want, (off_t)at);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) {
            const int e = errno;
            free(mem);
            return got < 0 ? fr_fail(err, FR_ERR_IO, "read %s: %s", path, strerror(e))
                           : fr_fail(err, FR_ERR_IO, "read %s: file shrank to %zu bytes while read", path, at);
        }
        at += (size_t)got;
    }
    *out = mem;
    return FR_OK;
}

static fr_status load_file(fr_st_set *set, const char *path, fr_error *err) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return fr_fail(err, FR_ERR_IO, "open %s: %s", path, strerror(errno));
    struct stat st;
    fr_status s = FR_OK;
    if (fstat(fd, &st) != 0) s = fr_fail(err, FR_ERR_IO, "stat %s: %s", path, strerror(errno));
    else if (!S_ISREG(st.st_mode)) s = fr_fail(err, FR_ERR_IO, "%s: not a regular file", path);
    else if (st.st_size < 8)
        s = fr_fail(err, FR_ERR_FORMAT, "%s: %lld bytes, too short for the 8-byte header length", path,
                    (long long)st.st_size);
    else if ((uint64_t)st.st_size > SIZE_MAX) s = fr_fail(err, FR_ERR_IO, "%s: too large to map", path);
    st_map *maps = s == FR_OK ? grow(set->maps, &set->mapcap, set->nmaps + 1, sizeof *maps) : NULL;
    char *copy = maps ? strdup(path) : NULL;
    if (maps) set->maps = maps;
    if (s == FR_OK && !copy) s = fr_fail(err, FR_ERR_NOMEM, "%s: out of memory", path);
    if (s != FR_OK) {
        close(fd);
        free(copy);
        return s;
    }
    size_t len = (size_t)st.st_size;
    if (set->how == FR_ST_READ) {
        void *mem = NULL;
        s = read_whole(fd, path, len, &mem, err);
        close(fd);
        if (s != FR_OK) {
            free(copy);
            return s;
        }
        set->maps[set->nmaps++] = (st_map){mem, len, copy, true};
        return parse_header(set, &set->maps[set->nmaps - 1], err);
    }
    void *base = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd); /* the mapping keeps the file */
    if (base == MAP_FAILED) {
        free(copy);
        return fr_fail(err, FR_ERR_IO, "mmap %s: %s", path, strerror(e));
    }
    set->maps[set->nmaps++] = (st_map){base, len, copy, false};
    return parse_header(set, &set->maps[set->nmaps - 1], err);
}

/* Every shard of an index, each opened once, then every weight_map entry checked
 * against the shard that actually holds the tensor. */
static fr_status open_index(fr_st_set *set, const char *dir, const char *ipath, fr_error *err) {
    char *text = NULL;
    size_t len = 0;
    cJSON *root = NULL;
    const char **files = NULL;
    const cJSON *wm = NULL;
    size_t n = 0, nf = 0, map0 = set->nmaps;
    fr_status s = fr_read_file(ipath, INDEX_MAX_BYTES, &text, &len, err);
    if (s != FR_OK) return s;
    long nul = find_nul(text, len);
    if (nul >= 0) s = fr_fail(err, FR_ERR_FORMAT, "%s: NUL character at byte %ld", ipath, nul);
    else s = fr_json_parse(text, len, ipath, &root, err);
    free(text);
    if (s != FR_OK) return s;
    if (!cJSON_IsObject(root) || member(root, "weight_map", &wm) || !cJSON_IsObject(wm)) {
        s = fr_fail(err, FR_ERR_FORMAT, "%s: no weight_map object", ipath);
        goto done;
    }
    for (const cJSON *e = wm->child; e; e = e->next) {
        if (!e->string[0] || !cJSON_IsString(e) || !plain_name(e->valuestring)) {
            s = fr_fail(err, FR_ERR_FORMAT, "%s: weight_map entry '%s' must map a name to a file name in %s",
                        ipath, show(e->string).s, dir);
            goto done;
        }
        n++;
    }
    if (n == 0 || !(files = malloc(n * sizeof *files))) { /* n is bounded by the 64 MiB file */
        s = n ? fr_fail(err, FR_ERR_NOMEM, "%s: out of memory", ipath)
              : fr_fail(err, FR_ERR_FORMAT, "%s: weight_map is empty", ipath);
        goto done;
    }
    n = 0;
    for (const cJSON *e = wm->child; e; e = e->next) files[n++] = e->valuestring;
    qsort(files, n, sizeof *files, cmp_str);
    for (size_t i = 0; i < n; i++)
        if (nf == 0 || strcmp(files[nf - 1], files[i]) != 0) files[nf++] = files[i];
    if (nf > FR_ST_MAX_FILES) {
        s = fr_fail(err, FR_ERR_FORMAT, "%s: %zu shard files, more than %d", ipath, nf, FR_ST_MAX_FILES);
        goto done;
    }
    for (size_t i = 0; i < nf && s == FR_OK; i++) {
        char *p = join(dir, files[i]);
        s = p ? load_file(set, p, err) : fr_fail(err, FR_ERR_NOMEM, "%s: out of memory", ipath);
        free(p);
    }
    if (s == FR_OK) s = build_index(set, err);
    for (const cJSON *e = wm->child; e && s == FR_OK; e = e->next) {
        const fr_st_tensor *t = fr_st_find(set, e->string);
        const char **f = bsearch(&e->valuestring, files, nf, sizeof *files, cmp_str);
        const char *want = set->maps[map0 + (size_t)(f - files)].path;
        if (!t)
            s = fr_fail(err, FR_ERR_FORMAT, "%s: tensor '%s' is listed in %s, which does not contain it",
                        ipath, show(e->string).s, want);
        else if (t->file != want)
            s = fr_fail(err, FR_ERR_FORMAT, "%s: tensor '%s' is listed in %s but is in %s", ipath,
                        show(e->string).s, want, t->file);
    }
done:
    free(files);
    cJSON_Delete(root);
    return s;
}

/* No index and no model.safetensors: every *.safetensors in the directory, by name. */
static fr_status open_glob(fr_st_set *set, const char *dir, fr_error *err) {
    DIR *d = opendir(dir);
    if (!d) return fr_fail(err, FR_ERR_IO, "open %s: %s", dir, strerror(errno));
    char **names = NULL;
    size_t n = 0, cap = 0, sl = strlen(SUFFIX);
    fr_status s = FR_OK;
    struct dirent *de;
    while (s == FR_OK && (de = readdir(d))) {
        size_t l = strlen(de->d_name);
        if (l <= sl || strcmp(de->d_name + l - sl, SUFFIX) != 0) continue;
        if (n == FR_ST_MAX_FILES) {
            s = fr_fail(err, FR_ERR_FORMAT, "%s: more than %d safetensors files", dir, FR_ST_MAX_FILES);
            break;
        }
        char **a = grow(names, &cap, n + 1, sizeof *a);
        if (a) names = a;
        if (!a || !(names[n] = join(dir, de->d_name))) s = fr_fail(err, FR_ERR_NOMEM, "%s: out of memory", dir);
        else n++;
    }
    closedir(d);
    if (s == FR_OK && n == 0)
        s = fr_fail(err, FR_ERR_IO, "%s: no %s, %s or *%s files", dir, INDEX_NAME, SINGLE_NAME, SUFFIX);
    if (s == FR_OK) qsort(names, n, sizeof *names, cmp_str);
    for (size_t i = 0; i < n && s == FR_OK; i++) s = load_file(set, names[i], err);
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
    return s == FR_OK ? build_index(set, err) : s;
}

fr_status fr_st_open_file(const char *path, fr_st_set **out, fr_error *err) {
    *out = NULL;
    fr_st_set *set = calloc(1, sizeof *set);
    if (!set) return fr_fail(err, FR_ERR_NOMEM, "%s: out of memory", path);
    fr_status s = load_file(set, path, err);
    if (s == FR_OK) s = build_index(set, err);
    return finish(set, s, out);
}

fr_status fr_st_open_dir(const char *dir, fr_st_set **out, fr_error *err) {
    return fr_st_open_dir_how(dir, FR_ST_MAP, out, err);
}

fr_status fr_st_open_dir_how(const char *dir, fr_st_load how, fr_st_set **out, fr_error *err) {
    *out = NULL;
    fr_st_set *set = calloc(1, sizeof *set);
    char *ipath = join(dir, INDEX_NAME), *spath = join(dir, SINGLE_NAME);
    fr_status s = FR_OK;
    struct stat st;
    if (set) set->how = how;
    if (!set || !ipath || !spath) s = fr_fail(err, FR_ERR_NOMEM, "%s: out of memory", dir);
    else if (stat(ipath, &st) == 0) s = open_index(set, dir, ipath, err);
    else if (errno != ENOENT) s = fr_fail(err, FR_ERR_IO, "stat %s: %s", ipath, strerror(errno));
    else if (stat(spath, &st) == 0) {
        s = load_file(set, spath, err);
        if (s == FR_OK) s = build_index(set, err);
    } else if (errno != ENOENT) s = fr_fail(err, FR_ERR_IO, "stat %s: %s", spath, strerror(errno));
    else s = open_glob(set, dir, err);
    free(ipath);
    free(spath);
    return finish(set, s, out);
}

const fr_st_tensor *fr_st_find(const fr_st_set *set, const char *name) {
    if (!set || !name || !set->nslots) return NULL;
    size_t mask = set->nslots - 1;
    for (size_t h = (size_t)fnv1a(name) & mask; set->slots[h]; h = (h + 1) & mask) {
        const fr_st_tensor *t = &set->t[set->slots[h] - 1];
        if (strcmp(t->name, name) == 0) return t;
    }
    return NULL;
}

size_t fr_st_count(const fr_st_set *set) { return set ? set->n : 0; }

const fr_st_tensor *fr_st_at(const fr_st_set *set, size_t i) {
    return set && i < set->n ? &set->t[i] : NULL;
}

void fr_st_close(fr_st_set *set) {
    if (!set) return;
    for (size_t i = 0; i < set->nmaps; i++) {
        if (set->maps[i].owned) free(set->maps[i].base);
        else munmap(set->maps[i].base, set->maps[i].len);
        free(set->maps[i].path);
    }
    for (size_t i = 0; i < set->n; i++) free((char *)set->t[i].name);
    free(set->maps);
    free(set->t);
    free(set->slots);
    free(set->mem);
    free(set);
}

/* ---- writing ---- */

/* Validate caller specs (what a reader would refuse is refused here) and return
 * each tensor's byte count in a malloc'd array. */
static fr_status check_specs(const char *what, const fr_st_spec *specs, size_t n, uint64_t **bytes,
                             fr_error *err) {
    *bytes = NULL;
    if (n && !specs) return fr_fail(err, FR_ERR_INVALID, "%s: no tensor specs", what);
    uint64_t *b = n <= SIZE_MAX / sizeof *b / 2 ? malloc((n ? n : 1) * sizeof *b) : NULL;
    const char **names = b ? malloc((n ? n : 1) * sizeof *names) : NULL;
    if (!names) {
        free(b);
        return fr_fail(err, FR_ERR_NOMEM, "%s: out of memory for %zu specs", what, n);
    }
    fr_status s = FR_OK;
    for (size_t i = 0; i < n && s == FR_OK; i++) {
        const fr_st_spec *p = &specs[i];
        int ok = p->name && p->name[0] && strcmp(p->name, "__metadata__") != 0 &&
                 (unsigned)p->dtype < FR_DTYPE_COUNT && fr_dtype_size(p->dtype) && p->ndim >= 0 &&
                 p->ndim <= FR_ST_MAX_DIMS; /* size 0: a weight format, not a safetensors dtype */
        for (int d = 0; ok && d < p->ndim; d++) ok = p->shape[d] >= 0 && (uint64_t)p->shape[d] <= MAX_EXACT;
        if (ok) b[i] = shape_bytes(p->shape, p->ndim, fr_dtype_size(p->dtype), &ok);
        if (!ok)
            s = fr_fail(err, FR_ERR_INVALID, "%s: tensor %zu ('%s'): bad name, dtype or shape", what, i,
                        p->name ? show(p->name).s : "(null)");
        names[i] = p->name;
    }
    const char *dup = s == FR_OK ? sorted_dup(names, n) : NULL;
    if (dup) s = fr_fail(err, FR_ERR_INVALID, "%s: duplicate tensor name '%s'", what, show(dup).s);
    free(names);
    if (s != FR_OK) free(b);
    else *bytes = b;
    return s;
}

static int add_u64(cJSON *arr, uint64_t v) {
    char buf[24];
    snprintf(buf, sizeof buf, "%" PRIu64, v);
    cJSON *r = cJSON_CreateRaw(buf); /* raw text: exact, never "1e+15" */
    if (r && cJSON_AddItemToArray(arr, r)) return 1;
    cJSON_Delete(r);
    return 0;
}

static int add_entry(cJSON *root, const fr_st_spec *p, uint64_t begin, uint64_t end) {
    cJSON *e = cJSON_CreateObject();
    if (!e || !cJSON_AddItemToObject(root, p->name, e)) {
        cJSON_Delete(e);
        return 0;
    }
    cJSON *shape, *off;
    if (!cJSON_AddStringToObject(e, "dtype", fr_dtype_name(p->dtype)) ||
        !(shape = cJSON_AddArrayToObject(e, "shape")) || !(off = cJSON_AddArrayToObject(e, "data_offsets")))
        return 0;
    for (int d = 0; d < p->ndim; d++)
        if (!add_u64(shape, (uint64_t)p->shape[d])) return 0;
    return add_u64(off, begin) && add_u64(off, end);
}

/* The whole header JSON, not yet padded. */
static fr_status build_header(const char *path, const fr_st_spec *specs, size_t n, const uint64_t *bytes,
                              const uint64_t *begin, const char *metadata_json, char **out, fr_error *err) {
    *out = NULL;
    cJSON *root = cJSON_CreateObject();
    if (!root) return fr_fail(err, FR_ERR_NOMEM, "%s: out of memory", path);
    fr_status s = FR_OK;
    if (metadata_json) {
        cJSON *m = cJSON_Parse(metadata_json);
        int ok = cJSON_IsObject(m);
        for (const cJSON *v = ok ? m->child : NULL; v; v = v->next) ok &= cJSON_IsString(v);
        if (!ok || !cJSON_AddItemToObject(root, "__metadata__", m)) {
            cJSON_Delete(m);
            s = fr_fail(err, FR_ERR_INVALID, "%s: metadata must be a JSON object of strings", path);
        }
    }
    for (size_t i = 0; i < n && s == FR_OK; i++) {
        if (bytes[i] > MAX_EXACT - begin[i])
            s = fr_fail(err, FR_ERR_INVALID, "%s: data area over 2^53 bytes", path);
        else if (!add_entry(root, &specs[i], begin[i], begin[i] + bytes[i]))
            s = fr_fail(err, FR_ERR_NOMEM, "%s: out of memory building the header", path);
    }
    if (s == FR_OK && !(*out = cJSON_PrintUnformatted(root)))
        s = fr_fail(err, FR_ERR_NOMEM, "%s: out of memory printing the header", path);
    cJSON_Delete(root);
    return s;
}

/* Where each tensor's bytes go. The header keeps the caller's order, but the data area
 * holds tensors of wider elements first (stable within a width), as the reference
 * safetensors writer does: every tensor then starts at a multiple of its element size,
 * so readers may load F32 scales and BF16 weights in place without misaligned access. */
static int data_order(const fr_st_spec *specs, size_t n, const uint64_t *bytes, size_t **order, uint64_t **begin) {
    *order = malloc((n ? n : 1) * sizeof **order);
    *begin = malloc((n ? n : 1) * sizeof **begin);
    if (!*order || !*begin) return 0;
    size_t k = 0;
    uint64_t off = 0;
    for (size_t width = 8; width >= 1; width /= 2)
        for (size_t i = 0; i < n; i++)
            if (fr_dtype_size(specs[i].dtype) == width) {
                (*order)[k++] = i;
                (*begin)[i] = off;
                off += bytes[i];
            }
    return k == n; /* every dtype has a width of 1, 2, 4 or 8 bytes */
}

static int write_all(FILE *f, const void *p, size_t n) { return n == 0 || fwrite(p, 1, n, f) == n; }

fr_status fr_st_write(const char *path, const fr_st_spec *specs, size_t n, fr_st_fill_fn fill, void *ctx,
                      const char *metadata_json, fr_error *err) {
    uint64_t *bytes = NULL, *begin = NULL, maxb = 0;
    size_t *order = NULL;
    char *hdr = NULL;
    uint8_t *buf = NULL;
    FILE *f = NULL;
    fr_status s = check_specs(path, specs, n, &bytes, err);
    if (s == FR_OK && !data_order(specs, n, bytes, &order, &begin))
        s = fr_fail(err, FR_ERR_NOMEM, "%s: out of memory", path);
    if (s == FR_OK) s = build_header(path, specs, n, bytes, begin, metadata_json, &hdr, err);
    if (s != FR_OK) goto done;
    size_t hl = strlen(hdr), padded = (hl + 7) & ~(size_t)7;
    if (padded > FR_ST_MAX_HEADER) {
        s = fr_fail(err, FR_ERR_INVALID, "%s: %zu-byte header is over the limit", path, padded);
        goto done;
    }
    for (size_t i = 0; i < n; i++) maxb = bytes[i] > maxb ? bytes[i] : maxb;
    if (!(buf = malloc(maxb ? (size_t)maxb : 1))) {
        s = fr_fail(err, FR_ERR_NOMEM, "%s: cannot allocate %" PRIu64 " bytes", path, maxb);
        goto done;
    }
    if (!(f = fopen(path, "wb"))) {
        s = fr_fail(err, FR_ERR_IO, "create %s: %s", path, strerror(errno));
        goto done;
    }
    uint8_t len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    int ok = write_all(f, len8, 8) && write_all(f, hdr, hl) && write_all(f, "       ", padded - hl);
    for (size_t k = 0; k < n && ok; k++) {
        size_t i = order[k];
        if (!bytes[i]) continue;
        if (fill) s = fill(ctx, i, buf, (size_t)bytes[i], err);
        else memset(buf, 0, (size_t)bytes[i]);
        if (s != FR_OK) {
            if (err) fr_error_prefix(err, "write %s: tensor '%s'", path, show(specs[i].name).s);
            break;
        }
        ok = write_all(f, buf, (size_t)bytes[i]);
    }
    if (!ok && s == FR_OK) s = fr_fail(err, FR_ERR_IO, "write %s: %s", path, strerror(errno));
    if (fclose(f) != 0 && s == FR_OK) s = fr_fail(err, FR_ERR_IO, "close %s: %s", path, strerror(errno));
    if (s != FR_OK) remove(path); /* never leave a truncated file behind */
done:
    free(buf);
    free(hdr);
    free(bytes);
    free(begin);
    free(order);
    return s;
}

fr_status fr_st_write_index(const char *dir, const char *const *names, const char *const *files, size_t n,
                            uint64_t total_size, fr_error *err) {
    char *path = join(dir, INDEX_NAME), *text = NULL;
    cJSON *root = cJSON_CreateObject(), *meta = NULL, *wm = NULL;
    const char **sorted = malloc((n ? n : 1) * sizeof *sorted);
    fr_status s = FR_OK;
    if (n && (!names || !files)) {
        s = fr_fail(err, FR_ERR_INVALID, "%s: no index entries given", dir);
        goto done;
    }
    if (!path || !root || !sorted || !(meta = cJSON_AddObjectToObject(root, "metadata")) ||
        !(wm = cJSON_AddObjectToObject(root, "weight_map"))) {
        s = fr_fail(err, FR_ERR_NOMEM, "%s: out of memory", dir);
        goto done;
    }
    for (size_t i = 0; i < n && s == FR_OK; i++) {
        if (!names[i] || !names[i][0] || !files[i] || !plain_name(files[i]))
            s = fr_fail(err, FR_ERR_INVALID, "%s: index entry %zu needs a name and a plain file name", dir, i);
        else if (!cJSON_AddStringToObject(wm, names[i], files[i]))
            s = fr_fail(err, FR_ERR_NOMEM, "%s: out of memory", dir);
        sorted[i] = names[i];
    }
    const char *dup = s == FR_OK ? sorted_dup(sorted, n) : NULL;
    if (dup) s = fr_fail(err, FR_ERR_INVALID, "%s: tensor '%s' listed twice", dir, show(dup).s);
    char tot[24];
    snprintf(tot, sizeof tot, "%" PRIu64, total_size);
    if (s == FR_OK && !cJSON_AddRawToObject(meta, "total_size", tot))
        s = fr_fail(err, FR_ERR_NOMEM, "%s: out of memory", dir);
    if (s == FR_OK && !(text = cJSON_Print(root))) s = fr_fail(err, FR_ERR_NOMEM, "%s: out of memory", dir);
    if (s != FR_OK) goto done;
    FILE *f = fopen(path, "wb");
    if (!f) {
        s = fr_fail(err, FR_ERR_IO, "create %s: %s", path, strerror(errno));
        goto done;
    }
    int ok = write_all(f, text, strlen(text)) && write_all(f, "\n", 1);
    if (!ok) s = fr_fail(err, FR_ERR_IO, "write %s: %s", path, strerror(errno));
    if (fclose(f) != 0 && s == FR_OK) s = fr_fail(err, FR_ERR_IO, "close %s: %s", path, strerror(errno));
    if (s != FR_OK) remove(path);
done:
    free(text);
    free(sorted);
    cJSON_Delete(root);
    free(path);
    return s;
}

fr_status fr_st_open_memory(const fr_st_spec *specs, size_t n, fr_st_fill_fn fill, void *ctx,
                            fr_st_set **out, fr_error *err) {
    *out = NULL;
    uint64_t *bytes = NULL, total = 0;
    fr_status s = check_specs(MEMORY_FILE, specs, n, &bytes, err);
    if (s != FR_OK) return s;
    fr_st_set *set = calloc(1, sizeof *set);
    if (!set) {
        free(bytes);
        return fr_fail(err, FR_ERR_NOMEM, "%s: out of memory", MEMORY_FILE);
    }
    /* First pass: the 64-byte aligned layout and its total size. */
    for (size_t i = 0; i < n && s == FR_OK; i++) {
        uint64_t at = (total + MEM_ALIGN - 1) & ~(uint64_t)(MEM_ALIGN - 1);
        if (at < total || bytes[i] > UINT64_MAX - at || at + bytes[i] > SIZE_MAX)
            s = fr_fail(err, FR_ERR_NOMEM, "%s: tensors total more than the address space", MEMORY_FILE);
        total = at + bytes[i];
    }
    if (s == FR_OK && total && !(set->mem = fr_big_alloc((size_t)total))) {
        s = fr_fail(err, FR_ERR_NOMEM, "%s: cannot allocate %" PRIu64 " bytes", MEMORY_FILE, total);
    }
    uint64_t at = 0;
    for (size_t i = 0; i < n && s == FR_OK; i++) {
        at = (at + MEM_ALIGN - 1) & ~(uint64_t)(MEM_ALIGN - 1);
        uint8_t *p = bytes[i] ? (uint8_t *)set->mem + at : NULL;
        fr_st_tensor t = {.dtype = specs[i].dtype, .ndim = specs[i].ndim, .data = p,
                          .nbytes = (size_t)bytes[i], .file = MEMORY_FILE};
        for (int d = 0; d < t.ndim; d++) t.shape[d] = specs[i].shape[d];
        at += bytes[i];
        if ((s = push_tensor(set, t, specs[i].name, err)) != FR_OK) break;
        if (p && fill) s = fill(ctx, i, p, (size_t)bytes[i], err);
        else if (p) memset(p, 0, (size_t)bytes[i]);
        if (s != FR_OK && err) fr_error_prefix(err, "%s: tensor '%s'", MEMORY_FILE, show(specs[i].name).s);
    }
    if (s == FR_OK) s = build_index(set, err);
    free(bytes);
    return finish(set, s, out);
}
