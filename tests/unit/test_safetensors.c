/* test_safetensors.c - safetensors reader, writer, sharded directories, in-memory sets.
 *
 * Files are written into a fresh mkdtemp directory under /tmp (removed at the end):
 * round trips through fr_st_write, sharded and single-file directories, and one
 * handcrafted file (8-byte length + JSON text + data) per malformed case, each
 * checked for the exact status and a message naming the file (and tensor). A
 * seeded fuzz loop mutates a valid header and checks opening never crashes. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "io/safetensors.h"

static char tmp[64];

static const char *tp(char *buf, size_t n, const char *name) {
    snprintf(buf, n, "%s/%s", tmp, name);
    return buf;
}

/* ---- handcrafted files ---- */

static int write_bytes(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = n ? fwrite(p, 1, n, f) : 0;
    return fclose(f) == 0 && w == n ? 0 : -1;
}

/* 8-byte little-endian `hlen`, then `json`, then `data_len` bytes 0, 1, 2, ... */
static void write_raw_len(const char *path, uint64_t hlen, const char *json, size_t json_len, size_t data_len) {
    size_t n = 8 + json_len + data_len;
    uint8_t *b = malloc(n);
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(hlen >> (8 * i));
    memcpy(b + 8, json, json_len);
    for (size_t i = 0; i < data_len; i++) b[8 + json_len + i] = (uint8_t)i;
    CHECK(write_bytes(path, b, n) == 0);
    free(b);
}

static void write_raw(const char *path, const char *json, size_t data_len) {
    write_raw_len(path, strlen(json), json, strlen(json), data_len);
}

/* Open `name` (in tmp) and expect `code`, a message naming the file and, when
 * given, the tensor. */
static void expect_fail_at(int line, const char *name, fr_status code, const char *tensor) {
    char path[256];
    fr_st_set *set = (fr_st_set *)(uintptr_t)1;
    fr_error err = {0};
    fr_status s = fr_st_open_file(tp(path, sizeof path, name), &set, &err);
    CHECK_MSG(s == code, "line %d: %s: status %d, want %d (%s)", line, name, s, code, err.msg);
    CHECK_MSG(set == NULL, "line %d: %s: set not NULL", line, name);
    CHECK_MSG(err.code == code, "line %d: %s: err.code %d", line, name, err.code);
    CHECK_MSG(strstr(err.msg, name) != NULL, "line %d: message lacks file name: %s", line, err.msg);
    if (tensor) CHECK_MSG(strstr(err.msg, tensor) != NULL, "line %d: message lacks '%s': %s", line, tensor, err.msg);
    CHECK_MSG(!strchr(err.msg, '\n'), "line %d: message not one line: %s", line, err.msg);
    if (s == FR_OK) fr_st_close(set);
}
#define EXPECT_FAIL(name, code, tensor) expect_fail_at(__LINE__, name, code, tensor)

/* Write json (+ data) to `name` and expect a format error naming `tensor`. */
static void bad_at(int line, const char *name, const char *json, size_t data_len, const char *tensor) {
    char path[256];
    write_raw(tp(path, sizeof path, name), json, data_len);
    expect_fail_at(line, name, FR_ERR_FORMAT, tensor);
}
#define BAD(name, json, data_len, tensor) bad_at(__LINE__, name, json, data_len, tensor)

static fr_st_set *open_ok_at(int line, const char *name, size_t want_count) {
    char path[256];
    fr_st_set *set = NULL;
    fr_error err = {0};
    fr_status s = fr_st_open_file(tp(path, sizeof path, name), &set, &err);
    CHECK_MSG(s == FR_OK && set, "line %d: %s: %s", line, name, err.msg);
    if (set) CHECK_MSG(fr_st_count(set) == want_count, "line %d: count %zu", line, fr_st_count(set));
    return set;
}
#define OPEN_OK(name, n) open_ok_at(__LINE__, name, n)

/* ---- writer fill ---- */

static uint8_t pattern(size_t index, size_t j) { return (uint8_t)(index * 31 + j * 7 + 1); }

static fr_status fill_pattern(void *ctx, size_t index, uint8_t *buf, size_t nbytes, fr_error *err) {
    (void)err;
    size_t base = ctx ? *(const size_t *)ctx : 0; /* distinct bytes per shard */
    for (size_t j = 0; j < nbytes; j++) buf[j] = pattern(base + index, j);
    return FR_OK;
}

static fr_status fill_fail(void *ctx, size_t index, uint8_t *buf, size_t nbytes, fr_error *err) {
    (void)ctx, (void)buf, (void)nbytes;
    if (index == 1) return fr_fail(err, FR_ERR_INVALID, "fill refused");
    return FR_OK;
}

static int bytes_match(const fr_st_tensor *t, size_t index) {
    for (size_t j = 0; j < t->nbytes; j++)
        if (t->data[j] != pattern(index, j)) return 0;
    return 1;
}

static fr_st_spec spec(const char *name, fr_dtype dt, int ndim, int64_t d0, int64_t d1, int64_t d2) {
    fr_st_spec s = {.name = name, .dtype = dt, .ndim = ndim};
    int64_t d[3] = {d0, d1, d2};
    for (int i = 0; i < ndim && i < 3; i++) s.shape[i] = d[i];
    return s;
}

static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* ---- tests ---- */

static void test_round_trip(void) {
    fr_st_spec specs[] = {
        spec("model.embed.weight", FR_DTYPE_BF16, 2, 4, 8, 0),
        spec("f32.vec", FR_DTYPE_F32, 1, 5, 0, 0),
        spec("fp8.w", FR_DTYPE_F8_E4M3, 2, 3, 3, 0),
        spec("i32.ids", FR_DTYPE_I32, 2, 2, 3, 0),
        spec("u8.mask", FR_DTYPE_U8, 1, 7, 0, 0),
        spec("i8.q", FR_DTYPE_I8, 3, 2, 2, 2),
        spec("i64.pos", FR_DTYPE_I64, 1, 3, 0, 0),
        spec("f16.h", FR_DTYPE_F16, 3, 1, 1, 2),
        spec("scalar", FR_DTYPE_F32, 0, 0, 0, 0),
        spec("empty", FR_DTYPE_BF16, 2, 0, 16, 0),
        spec("we\"ird\\na\nme/\xc3\xbc", FR_DTYPE_U8, 1, 3, 0, 0),
    };
    size_t n = sizeof specs / sizeof specs[0];
    size_t want_bytes[] = {64, 20, 9, 24, 7, 8, 24, 4, 4, 0, 3};
    char path[256];
    fr_error err = {0};
    tp(path, sizeof path, "rt.safetensors");
    fr_status s = fr_st_write(path, specs, n, fill_pattern, NULL, "{\"format\":\"pt\"}", &err);
    CHECK_MSG(s == FR_OK, "%s", err.msg);

    /* Header: length a multiple of 8, JSON padded with spaces, data consecutive. */
    FILE *f = fopen(path, "rb");
    uint8_t len8[8] = {0};
    CHECK(f && fread(len8, 1, 8, f) == 8);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | len8[i];
    CHECK(hlen % 8 == 0 && hlen > 0 && hlen < 4096);
    char hdr[4096] = {0};
    CHECK(f && fread(hdr, 1, (size_t)hlen, f) == hlen);
    if (f) fclose(f);
    size_t last = (size_t)hlen;
    while (last > 0 && hdr[last - 1] == ' ') last--;
    CHECK(last > 0 && hdr[last - 1] == '}' && (size_t)hlen - last < 8);
    CHECK(strstr(hdr, "\"__metadata__\":{\"format\":\"pt\"}") != NULL);
    struct stat st;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) total += want_bytes[i];
    CHECK(stat(path, &st) == 0 && (uint64_t)st.st_size == 8 + hlen + total);

    fr_st_set *set = OPEN_OK("rt.safetensors", n);
    if (!set) return;
    for (size_t i = 0; i < n; i++) {
        const fr_st_tensor *t = fr_st_at(set, i);
        CHECK(t && strcmp(t->name, specs[i].name) == 0);
        if (!t) continue;
        CHECK(t->dtype == specs[i].dtype && t->ndim == specs[i].ndim);
        for (int d = 0; d < t->ndim; d++) CHECK(t->shape[d] == specs[i].shape[d]);
        CHECK_MSG(t->nbytes == want_bytes[i], "%s: %zu bytes", t->name, t->nbytes);
        CHECK(t->nbytes ? t->data != NULL : t->data == NULL);
        CHECK_MSG(bytes_match(t, i), "%s: bytes differ", t->name);
        CHECK(strcmp(t->file, path) == 0);
        CHECK(fr_st_find(set, specs[i].name) == t);
    }
    CHECK(fr_st_at(set, n) == NULL);
    CHECK(fr_st_find(set, "nope") == NULL);
    CHECK(fr_st_find(set, "model.embed") == NULL);
    CHECK(fr_st_find(NULL, "scalar") == NULL);
    CHECK(fr_st_count(NULL) == 0 && fr_st_at(NULL, 0) == NULL);
    fr_st_close(set);
    fr_st_close(NULL);

    /* Empty file: "{}" header, zero tensors. */
    CHECK(fr_st_write(tp(path, sizeof path, "none.safetensors"), NULL, 0, NULL, NULL, NULL, &err) == FR_OK);
    set = OPEN_OK("none.safetensors", 0);
    fr_st_close(set);

    /* NULL fill writes zeros. */
    fr_st_spec z = spec("z", FR_DTYPE_F32, 1, 3, 0, 0);
    CHECK(fr_st_write(tp(path, sizeof path, "zero.safetensors"), &z, 1, NULL, NULL, NULL, &err) == FR_OK);
    set = OPEN_OK("zero.safetensors", 1);
    if (set) {
        const fr_st_tensor *t = fr_st_find(set, "z");
        CHECK(t && t->nbytes == 12 && t->data[0] == 0 && t->data[11] == 0);
    }
    fr_st_close(set);
}

static void test_write_errors(void) {
    char path[256];
    fr_error err = {0};
    fr_st_spec specs[] = {spec("a", FR_DTYPE_F32, 1, 2, 0, 0), spec("b", FR_DTYPE_F32, 1, 2, 0, 0)};

    /* fill() failing: its status comes back, the partial file is gone. */
    tp(path, sizeof path, "fillfail.safetensors");
    CHECK(fr_st_write(path, specs, 2, fill_fail, NULL, NULL, &err) == FR_ERR_INVALID);
    CHECK(strstr(err.msg, "fill refused") && strstr(err.msg, "fillfail.safetensors"));
    CHECK(access(path, F_OK) != 0);

    CHECK(fr_st_write("/nonexistent-dir-fr/x.safetensors", specs, 2, fill_pattern, NULL, NULL, &err) ==
          FR_ERR_IO);

    fr_st_spec dup[] = {spec("a", FR_DTYPE_F32, 1, 2, 0, 0), spec("a", FR_DTYPE_U8, 1, 1, 0, 0)};
    CHECK(fr_st_write(tp(path, sizeof path, "dup.safetensors"), dup, 2, NULL, NULL, NULL, &err) == FR_ERR_INVALID);
    CHECK(strstr(err.msg, "duplicate") != NULL);
    fr_st_spec bad = spec("x", FR_DTYPE_F32, 1, -1, 0, 0);
    CHECK(fr_st_write(path, &bad, 1, NULL, NULL, NULL, &err) == FR_ERR_INVALID);
    bad = spec("x", FR_DTYPE_F32, 1, 1, 0, 0);
    bad.ndim = FR_ST_MAX_DIMS + 1;
    CHECK(fr_st_write(path, &bad, 1, NULL, NULL, NULL, &err) == FR_ERR_INVALID);
    bad = spec("", FR_DTYPE_F32, 1, 1, 0, 0);
    CHECK(fr_st_write(path, &bad, 1, NULL, NULL, NULL, &err) == FR_ERR_INVALID);
    bad = spec("__metadata__", FR_DTYPE_F32, 1, 1, 0, 0);
    CHECK(fr_st_write(path, &bad, 1, NULL, NULL, NULL, &err) == FR_ERR_INVALID);
    bad = spec("big", FR_DTYPE_F32, 3, INT64_C(1) << 31, INT64_C(1) << 31, 4);
    CHECK(fr_st_write(path, &bad, 1, NULL, NULL, NULL, &err) == FR_ERR_INVALID);
    CHECK(fr_st_write(path, specs, 2, NULL, NULL, "[1]", &err) == FR_ERR_INVALID);
    CHECK(fr_st_write(path, specs, 2, NULL, NULL, "{\"a\": 1}", &err) == FR_ERR_INVALID);
    CHECK(access(path, F_OK) != 0);

    const char *names[] = {"a", "b"}, *files[] = {"x.safetensors", "../y.safetensors"};
    CHECK(fr_st_write_index(tmp, names, files, 2, 0, &err) == FR_ERR_INVALID);
    const char *names2[] = {"a", "a"}, *files2[] = {"x.safetensors", "x.safetensors"};
    CHECK(fr_st_write_index(tmp, names2, files2, 2, 0, &err) == FR_ERR_INVALID);
    CHECK(access(tp(path, sizeof path, "model.safetensors.index.json"), F_OK) != 0);
}

static void mkdir_in(char *buf, size_t n, const char *name) {
    tp(buf, n, name);
    CHECK(mkdir(buf, 0700) == 0);
}

static void file_in(char *buf, size_t n, const char *dir, const char *name) { snprintf(buf, n, "%s/%s", dir, name); }

static void test_sharded(void) {
    char dir[256], path[320];
    fr_error err = {0};
    mkdir_in(dir, sizeof dir, "sharded");
    fr_st_spec s1[] = {spec("model.layers.0.w", FR_DTYPE_BF16, 2, 2, 3, 0),
                       spec("model.norm", FR_DTYPE_F32, 1, 4, 0, 0)};
    fr_st_spec s2[] = {spec("model.layers.1.w", FR_DTYPE_BF16, 2, 2, 3, 0),
                       spec("lm_head", FR_DTYPE_F8_E4M3, 2, 3, 5, 0),
                       spec("lm_head.scale", FR_DTYPE_F32, 0, 0, 0, 0)};
    size_t base1 = 0, base2 = 2;
    file_in(path, sizeof path, dir, "model-00001-of-00002.safetensors");
    CHECK(fr_st_write(path, s1, 2, fill_pattern, &base1, NULL, &err) == FR_OK);
    file_in(path, sizeof path, dir, "model-00002-of-00002.safetensors");
    CHECK(fr_st_write(path, s2, 3, fill_pattern, &base2, NULL, &err) == FR_OK);
    /* Index lists shard 2 first: file order is still by name. */
    const char *names[] = {"lm_head", "lm_head.scale", "model.layers.0.w", "model.layers.1.w", "model.norm"};
    const char *files[] = {"model-00002-of-00002.safetensors", "model-00002-of-00002.safetensors",
                           "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                           "model-00001-of-00002.safetensors"};
    CHECK(fr_st_write_index(dir, names, files, 5, 12 + 16 + 12 + 15 + 4, &err) == FR_OK);
    /* A stray file next to an index is ignored. */
    file_in(path, sizeof path, dir, "zz-junk.safetensors");
    CHECK(write_bytes(path, "junk", 4) == 0);

    /* mapped, and read into memory (--no-mmap): the same tensors and bytes */
    for (int how = FR_ST_MAP; how <= FR_ST_READ; how++) {
        fr_st_set *set = NULL;
        fr_status s = fr_st_open_dir_how(dir, (fr_st_load)how, &set, &err);
        CHECK_MSG(s == FR_OK, "%s", err.msg);
        if (!set) return;
        CHECK(fr_st_count(set) == 5);
        const char *order[] = {"model.layers.0.w", "model.norm", "model.layers.1.w", "lm_head", "lm_head.scale"};
        for (size_t i = 0; i < 5; i++) {
            const fr_st_tensor *t = fr_st_at(set, i);
            CHECK(t && strcmp(t->name, order[i]) == 0);
            if (!t) continue;
            CHECK(fr_st_find(set, order[i]) == t);
            CHECK_MSG(bytes_match(t, i), "%s: bytes differ", t->name);
            CHECK(ends_with(t->file, i < 2 ? "/model-00001-of-00002.safetensors" : "/model-00002-of-00002.safetensors"));
        }
        const fr_st_tensor *lm = fr_st_find(set, "lm_head");
        CHECK(lm && lm->dtype == FR_DTYPE_F8_E4M3 && lm->nbytes == 15 && lm->shape[1] == 5);
        fr_st_close(set);
    }

    /* Index text itself. */
    char *text = NULL;
    file_in(path, sizeof path, dir, "model.safetensors.index.json");
    FILE *f = fopen(path, "rb");
    if (f) {
        text = calloc(1, 4096);
        CHECK(fread(text, 1, 4095, f) > 0);
        fclose(f);
        CHECK(strstr(text, "\"total_size\":\t59") || strstr(text, "\"total_size\": 59") ||
              strstr(text, "\"total_size\":59"));
        CHECK(strstr(text, "\"weight_map\"") != NULL);
        free(text);
    }
}

static void test_single_and_glob(void) {
    char dir[256], path[320];
    fr_error err = {0};
    fr_st_set *set = NULL;
    size_t base0 = 0;
    fr_st_spec one[] = {spec("a", FR_DTYPE_F32, 1, 2, 0, 0), spec("b", FR_DTYPE_I8, 1, 3, 0, 0)};

    /* A directory holding only model.safetensors. */
    mkdir_in(dir, sizeof dir, "single");
    file_in(path, sizeof path, dir, "model.safetensors");
    CHECK(fr_st_write(path, one, 2, fill_pattern, &base0, NULL, &err) == FR_OK);
    CHECK_MSG(fr_st_open_dir(dir, &set, &err) == FR_OK, "%s", err.msg);
    CHECK(set && fr_st_count(set) == 2 && fr_st_find(set, "a") && bytes_match(fr_st_find(set, "a"), 0));
    fr_st_close(set);
    /* model.safetensors wins over other *.safetensors files. */
    file_in(path, sizeof path, dir, "aaa.safetensors");
    CHECK(write_bytes(path, "junk", 4) == 0);
    CHECK_MSG(fr_st_open_dir(dir, &set, &err) == FR_OK, "%s", err.msg);
    CHECK(set && fr_st_count(set) == 2 && fr_st_find(set, "b") && bytes_match(fr_st_find(set, "b"), 1));
    CHECK(set && ends_with(fr_st_at(set, 0)->file, "/model.safetensors"));
    fr_st_close(set);

    /* No index, no model.safetensors: all *.safetensors by name. */
    mkdir_in(dir, sizeof dir, "glob");
    size_t b1 = 0, b2 = 1;
    file_in(path, sizeof path, dir, "b.safetensors");
    CHECK(fr_st_write(path, &one[1], 1, fill_pattern, &b2, NULL, &err) == FR_OK);
    file_in(path, sizeof path, dir, "a.safetensors");
    CHECK(fr_st_write(path, &one[0], 1, fill_pattern, &b1, NULL, &err) == FR_OK);
    file_in(path, sizeof path, dir, "notes.txt");
    CHECK(write_bytes(path, "x", 1) == 0);
    set = NULL;
    CHECK_MSG(fr_st_open_dir(dir, &set, &err) == FR_OK, "%s", err.msg);
    CHECK(set && fr_st_count(set) == 2);
    if (set) {
        CHECK(strcmp(fr_st_at(set, 0)->name, "a") == 0 && strcmp(fr_st_at(set, 1)->name, "b") == 0);
        CHECK(ends_with(fr_st_at(set, 1)->file, "/b.safetensors") && bytes_match(fr_st_at(set, 1), 1));
    }
    fr_st_close(set);

    /* The same tensor in two files (no index). */
    mkdir_in(dir, sizeof dir, "twice");
    file_in(path, sizeof path, dir, "x-1.safetensors");
    CHECK(fr_st_write(path, one, 2, NULL, NULL, NULL, &err) == FR_OK);
    file_in(path, sizeof path, dir, "x-2.safetensors");
    CHECK(fr_st_write(path, &one[1], 1, NULL, NULL, NULL, &err) == FR_OK);
    set = (fr_st_set *)(uintptr_t)1;
    CHECK(fr_st_open_dir(dir, &set, &err) == FR_ERR_FORMAT && set == NULL);
    CHECK_MSG(strstr(err.msg, "x-1.safetensors") && strstr(err.msg, "x-2.safetensors") && strstr(err.msg, "'b'"),
              "%s", err.msg);

    /* Empty and missing directories. */
    mkdir_in(dir, sizeof dir, "empty");
    CHECK(fr_st_open_dir(dir, &set, &err) == FR_ERR_IO && set == NULL);
    CHECK_MSG(strstr(err.msg, "empty") && strstr(err.msg, "safetensors"), "%s", err.msg);
    tp(dir, sizeof dir, "does-not-exist");
    CHECK(fr_st_open_dir(dir, &set, &err) == FR_ERR_IO && set == NULL);
    CHECK(strstr(err.msg, "does-not-exist") != NULL);
}

/* A directory with two good shards (t1 in s1, t2 in s2) and the given index text. */
static void index_case_at(int line, const char *name, const char *index_json, fr_status want, const char *needle) {
    char dir[256], path[320];
    fr_error err = {0};
    fr_st_spec a = spec("t1", FR_DTYPE_F32, 1, 2, 0, 0), b = spec("t2", FR_DTYPE_U8, 1, 3, 0, 0);
    mkdir_in(dir, sizeof dir, name);
    file_in(path, sizeof path, dir, "s1.safetensors");
    CHECK(fr_st_write(path, &a, 1, NULL, NULL, NULL, &err) == FR_OK);
    file_in(path, sizeof path, dir, "s2.safetensors");
    CHECK(fr_st_write(path, &b, 1, NULL, NULL, NULL, &err) == FR_OK);
    file_in(path, sizeof path, dir, "model.safetensors.index.json");
    CHECK(write_bytes(path, index_json, strlen(index_json)) == 0);
    fr_st_set *set = (fr_st_set *)(uintptr_t)1;
    fr_status s = fr_st_open_dir(dir, &set, &err);
    CHECK_MSG(s == want, "line %d: %s: status %d want %d: %s", line, name, s, want, err.msg);
    CHECK_MSG(want == FR_OK ? set != NULL : set == NULL, "line %d: set", line);
    if (needle) CHECK_MSG(strstr(err.msg, needle) != NULL, "line %d: '%s' not in: %s", line, needle, err.msg);
    if (want != FR_OK) CHECK_MSG(strstr(err.msg, name) != NULL, "line %d: dir not in: %s", line, err.msg);
    if (s == FR_OK) fr_st_close(set);
}
#define INDEX_CASE(name, json, want, needle) index_case_at(__LINE__, name, json, want, needle)

static void test_index_errors(void) {
    INDEX_CASE("ix_ok",
               "{\"metadata\":{\"total_size\":11},"
               "\"weight_map\":{\"t1\":\"s1.safetensors\",\"t2\":\"s2.safetensors\"}}",
               FR_OK, NULL);
    INDEX_CASE("ix_missing_shard", "{\"weight_map\":{\"t1\":\"s1.safetensors\",\"t2\":\"s3.safetensors\"}}", FR_ERR_IO,
               "s3.safetensors");
    INDEX_CASE("ix_absent_tensor", "{\"weight_map\":{\"t1\":\"s1.safetensors\",\"t9\":\"s2.safetensors\"}}",
               FR_ERR_FORMAT, "t9");
    INDEX_CASE("ix_wrong_shard", "{\"weight_map\":{\"t1\":\"s2.safetensors\",\"t2\":\"s1.safetensors\"}}",
               FR_ERR_FORMAT, "is in");
    INDEX_CASE("ix_one_shard", "{\"weight_map\":{\"t1\":\"s2.safetensors\",\"t2\":\"s2.safetensors\"}}",
               FR_ERR_FORMAT, "t1");
    INDEX_CASE("ix_slash", "{\"weight_map\":{\"t1\":\"sub/s1.safetensors\"}}", FR_ERR_FORMAT, "t1");
    INDEX_CASE("ix_dotdot", "{\"weight_map\":{\"t1\":\"..\"}}", FR_ERR_FORMAT, "t1");
    INDEX_CASE("ix_parent", "{\"weight_map\":{\"t1\":\"../ix_ok/s1.safetensors\"}}", FR_ERR_FORMAT, "t1");
    INDEX_CASE("ix_empty_file", "{\"weight_map\":{\"t1\":\"\"}}", FR_ERR_FORMAT, "t1");
    INDEX_CASE("ix_not_string", "{\"weight_map\":{\"t1\":1}}", FR_ERR_FORMAT, "t1");
    INDEX_CASE("ix_no_map", "{\"metadata\":{}}", FR_ERR_FORMAT, "weight_map");
    INDEX_CASE("ix_map_array", "{\"weight_map\":[\"s1.safetensors\"]}", FR_ERR_FORMAT, "weight_map");
    INDEX_CASE("ix_empty_map", "{\"weight_map\":{}}", FR_ERR_FORMAT, "empty");
    INDEX_CASE("ix_bad_json", "{\"weight_map\":{\"t1\":", FR_ERR_FORMAT, "JSON");
    INDEX_CASE("ix_nul", "{\"weight_map\":{\"t1\\u0000x\":\"s1.safetensors\"}}", FR_ERR_FORMAT, "NUL");
}

static void test_malformed(void) {
    char path[256];
    /* Length field and file size. */
    CHECK(write_bytes(tp(path, sizeof path, "short.safetensors"), "\x02\0\0\0\0", 5) == 0);
    EXPECT_FAIL("short.safetensors", FR_ERR_FORMAT, NULL);
    CHECK(write_bytes(tp(path, sizeof path, "empty0.safetensors"), "", 0) == 0);
    EXPECT_FAIL("empty0.safetensors", FR_ERR_FORMAT, NULL);
    write_raw_len(tp(path, sizeof path, "hlen0.safetensors"), 0, "{}", 2, 0);
    EXPECT_FAIL("hlen0.safetensors", FR_ERR_FORMAT, NULL);
    write_raw_len(tp(path, sizeof path, "hlenbig.safetensors"), 3, "{}", 2, 0);
    EXPECT_FAIL("hlenbig.safetensors", FR_ERR_FORMAT, NULL);
    write_raw_len(tp(path, sizeof path, "hlenhuge.safetensors"), UINT64_MAX, "{}", 2, 0);
    EXPECT_FAIL("hlenhuge.safetensors", FR_ERR_FORMAT, NULL);
    {   /* Header length over FR_ST_MAX_HEADER in a (sparse) file large enough to hold it. */
        tp(path, sizeof path, "hlenmax.safetensors");
        write_raw_len(path, (uint64_t)FR_ST_MAX_HEADER + 1, "{}", 2, 0);
        CHECK(truncate(path, (off_t)FR_ST_MAX_HEADER + 64) == 0);
        EXPECT_FAIL("hlenmax.safetensors", FR_ERR_FORMAT, "limit");
        unlink(path);
    }
    EXPECT_FAIL("no-such-file.safetensors", FR_ERR_IO, NULL);
    CHECK(mkdir(tp(path, sizeof path, "adir.safetensors"), 0700) == 0);
    EXPECT_FAIL("adir.safetensors", FR_ERR_IO, NULL);

    /* JSON shape. */
    BAD("badjson.safetensors", "{\"t\": ", 0, NULL);
    BAD("trailing.safetensors", "{} x", 0, NULL);
    BAD("toparray.safetensors", "[]", 0, NULL);
    BAD("topnum.safetensors", "42", 0, NULL);
    BAD("notobj.safetensors", "{\"tname\": 5}", 0, "tname");
    BAD("meta_arr.safetensors", "{\"__metadata__\": []}", 0, "__metadata__");
    BAD("meta_num.safetensors", "{\"__metadata__\": {\"k\": 1}}", 0, "__metadata__");
    BAD("meta_twice.safetensors", "{\"__metadata__\": {}, \"__metadata__\": {}}", 0, "__metadata__");

    /* One tensor "tname" with the given dtype, shape and data_offsets texts. */
#define ONE(dt, shape, off) "{\"tname\": {\"dtype\": \"" dt "\", \"shape\": " shape ", \"data_offsets\": " off "}}"
    /* dtype. */
    BAD("nodtype.safetensors", "{\"tname\": {\"shape\": [1], \"data_offsets\": [0, 1]}}", 1, "tname");
    BAD("dtypenum.safetensors", "{\"tname\": {\"dtype\": 3, \"shape\": [1], \"data_offsets\": [0, 1]}}", 1, "tname");
    BAD("dtypeunk.safetensors", ONE("Q4", "[1]", "[0, 1]"), 1, "Q4");
    BAD("dtypecase.safetensors", ONE("bf16", "[1]", "[0, 2]"), 2, "tname");
    BAD("dtypetwice.safetensors",
        "{\"tname\": {\"dtype\": \"U8\", \"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 1]}}", 4, "tname");

    /* shape. */
    BAD("noshape.safetensors", "{\"tname\": {\"dtype\": \"U8\", \"data_offsets\": [0, 1]}}", 1, "tname");
    BAD("shapeobj.safetensors", ONE("U8", "{}", "[0, 1]"), 1, "tname");
    BAD("shapefrac.safetensors", ONE("U8", "[1.5]", "[0, 1]"), 1, "tname");
    BAD("shapeneg.safetensors", ONE("U8", "[-1]", "[0, 1]"), 1, "tname");
    BAD("shapestr.safetensors", ONE("U8", "[\"1\"]", "[0, 1]"), 1, "tname");
    BAD("shape2p53.safetensors", ONE("U8", "[9007199254740994]", "[0, 1]"), 1, "tname");
    BAD("shapeinf.safetensors", ONE("U8", "[1e999]", "[0, 1]"), 1, "tname");
    BAD("shape9.safetensors", ONE("U8", "[1,1,1,1,1,1,1,1,1]", "[0, 1]"), 1, "tname");
    /* Products that wrap to 0 in 64 bits must not pass as empty tensors. */
    BAD("shapewrap.safetensors", ONE("U8", "[4294967296, 4294967296]", "[0, 0]"), 0, "tname");
    BAD("shapewrap2.safetensors", ONE("F32", "[2147483648, 2147483648, 2]", "[0, 0]"), 0, "tname");

    /* data_offsets. */
    BAD("nooff.safetensors", "{\"tname\": {\"dtype\": \"U8\", \"shape\": [1]}}", 1, "tname");
    BAD("off1.safetensors", ONE("U8", "[1]", "[1]"), 1, "tname");
    BAD("off3.safetensors", ONE("U8", "[1]", "[0, 1, 2]"), 2, "tname");
    BAD("offneg.safetensors", ONE("U8", "[1]", "[-1, 0]"), 1, "tname");
    BAD("offfrac.safetensors", ONE("U8", "[1]", "[0, 1.5]"), 2, "tname");
    BAD("offnull.safetensors", ONE("U8", "[1]", "[0, null]"), 2, "tname");
    BAD("offrev.safetensors", ONE("U8", "[0]", "[2, 1]"), 2, "tname");
    BAD("offend.safetensors", ONE("F32", "[2]", "[0, 8]"), 7, "tname");
    BAD("offhuge.safetensors", ONE("U8", "[1]", "[18446744073709551615, 0]"), 1, "tname");
    BAD("sizemis.safetensors", ONE("F32", "[2, 2]", "[0, 8]"), 16, "tname");
    BAD("sizescalar.safetensors", ONE("F32", "[]", "[0, 0]"), 4, "tname");

    /* Overlaps, duplicates, names. */
    BAD("overlap.safetensors",
        "{\"t_one\": {\"dtype\": \"U8\", \"shape\": [8], \"data_offsets\": [0, 8]},"
        " \"t_two\": {\"dtype\": \"U8\", \"shape\": [8], \"data_offsets\": [4, 12]}}", 12, "t_one");
    BAD("overlap2.safetensors", /* out of order in the header, one range inside another */
        "{\"t_in\": {\"dtype\": \"U8\", \"shape\": [2], \"data_offsets\": [10, 12]},"
        " \"t_mid\": {\"dtype\": \"U8\", \"shape\": [4], \"data_offsets\": [16, 20]},"
        " \"t_out\": {\"dtype\": \"U8\", \"shape\": [16], \"data_offsets\": [0, 16]}}", 20, "t_in");
    BAD("dupname.safetensors",
        "{\"tdup\": {\"dtype\": \"U8\", \"shape\": [1], \"data_offsets\": [0, 1]},"
        " \"tdup\": {\"dtype\": \"U8\", \"shape\": [1], \"data_offsets\": [1, 2]}}", 2, "tdup");
    BAD("emptyname.safetensors", "{\"\": {\"dtype\": \"U8\", \"shape\": [1], \"data_offsets\": [0, 1]}}", 1, NULL);
    BAD("nulname.safetensors", "{\"a\\u0000b\": {\"dtype\": \"U8\", \"shape\": [1], \"data_offsets\": [0, 1]},"
        " \"a\": {\"dtype\": \"U8\", \"shape\": [1], \"data_offsets\": [1, 2]}}", 2, NULL);
    {   /* A raw NUL byte in the header. */
        const char j[] = "{\"a\0b\": {\"dtype\": \"U8\", \"shape\": [1], \"data_offsets\": [0, 1]}}";
        write_raw_len(tp(path, sizeof path, "rawnul.safetensors"), sizeof j - 1, j, sizeof j - 1, 1);
        EXPECT_FAIL("rawnul.safetensors", FR_ERR_FORMAT, NULL);
    }
    {   /* Control characters in a bad name do not break the one-line message. */
        BAD("ctrlname.safetensors", "{\"bad\\nname\": 5}", 0, "bad?name");
    }
}

static void test_valid_edge_cases(void) {
    char path[256];
    fr_st_set *set;
    /* Padded header, escaped "\u0041" names, a zero-size tensor inside another's range,
     * the scalar, unknown extra keys, metadata, integral-valued numbers written as 2.0. */
    const char *j = "{\"__metadata__\": {\"format\": \"pt\"}, "
                    "\"s\": {\"dtype\": \"F32\", \"shape\": [], \"data_offsets\": [0, 4]}, "
                    "\"z\": {\"dtype\": \"BF16\", \"shape\": [3, 0], \"data_offsets\": [2, 2]}, "
                    "\"\\u0041x\": {\"dtype\": \"I16\", \"shape\": [2.0], \"data_offsets\": [4, 8], \"extra\": 1}}"
                    "        ";
    write_raw(tp(path, sizeof path, "edge.safetensors"), j, 10);
    set = OPEN_OK("edge.safetensors", 3);
    if (set) {
        const fr_st_tensor *s = fr_st_find(set, "s"), *z = fr_st_find(set, "z"), *a = fr_st_find(set, "Ax");
        CHECK(s && s->ndim == 0 && s->nbytes == 4 && s->data && s->data[0] == 0 && s->data[3] == 3);
        CHECK(z && z->ndim == 2 && z->nbytes == 0 && z->data == NULL);
        CHECK(a && a->dtype == FR_DTYPE_I16 && a->shape[0] == 2 && a->data && a->data[0] == 4);
        CHECK(fr_st_at(set, 0) == s && fr_st_at(set, 1) == z && fr_st_at(set, 2) == a);
    }
    fr_st_close(set);
    write_raw(tp(path, sizeof path, "emptyobj.safetensors"), "{}", 0);
    fr_st_close(OPEN_OK("emptyobj.safetensors", 0));
    /* Every dtype name parses. */
    for (int d = 0; d < FR_DTYPE_COUNT; d++) {
        char json[256];
        if (!fr_dtype_size((fr_dtype)d)) continue; /* weight formats (MXFP4, INT4) are not safetensors dtypes */
        snprintf(json, sizeof json, "{\"t\": {\"dtype\": \"%s\", \"shape\": [3], \"data_offsets\": [0, %zu]}}",
                 fr_dtype_name((fr_dtype)d), 3 * fr_dtype_size((fr_dtype)d));
        write_raw(tp(path, sizeof path, "dt.safetensors"), json, 24);
        set = OPEN_OK("dt.safetensors", 1);
        CHECK(set && fr_st_at(set, 0)->dtype == (fr_dtype)d);
        fr_st_close(set);
    }
}

static void test_memory(void) {
    fr_st_spec specs[] = {
        spec("m.u8", FR_DTYPE_U8, 1, 3, 0, 0),     spec("m.bf16", FR_DTYPE_BF16, 2, 5, 7, 0),
        spec("m.empty", FR_DTYPE_F32, 1, 0, 0, 0), spec("m.scalar", FR_DTYPE_F32, 0, 0, 0, 0),
        spec("m.fp8", FR_DTYPE_F8_E4M3, 3, 2, 3, 4),
    };
    size_t n = 5, want[] = {3, 70, 0, 4, 24};
    fr_st_set *set = NULL;
    fr_error err = {0};
    CHECK_MSG(fr_st_open_memory(specs, n, fill_pattern, NULL, &set, &err) == FR_OK, "%s", err.msg);
    CHECK(fr_st_count(set) == n);
    for (size_t i = 0; set && i < n; i++) {
        const fr_st_tensor *t = fr_st_at(set, i);
        CHECK(t && fr_st_find(set, specs[i].name) == t && strcmp(t->file, "<memory>") == 0);
        CHECK(t->nbytes == want[i] && t->dtype == specs[i].dtype && t->ndim == specs[i].ndim);
        CHECK(t->nbytes ? t->data && (uintptr_t)t->data % 64 == 0 : t->data == NULL);
        CHECK(bytes_match(t, i));
    }
    fr_st_close(set);

    /* fill() failing, duplicate names: error, no set, nothing leaked. */
    set = (fr_st_set *)(uintptr_t)1;
    CHECK(fr_st_open_memory(specs, n, fill_fail, NULL, &set, &err) == FR_ERR_INVALID && set == NULL);
    CHECK(strstr(err.msg, "fill refused") != NULL);
    fr_st_spec dup[] = {spec("d", FR_DTYPE_U8, 1, 1, 0, 0), spec("d", FR_DTYPE_U8, 1, 1, 0, 0)};
    set = (fr_st_set *)(uintptr_t)1;
    CHECK(fr_st_open_memory(dup, 2, NULL, NULL, &set, &err) == FR_ERR_INVALID && set == NULL);
    CHECK(fr_st_open_memory(NULL, 0, NULL, NULL, &set, &err) == FR_OK && fr_st_count(set) == 0);
    fr_st_close(set);

    /* Many tensors: every one found through the hash table, zero-filled. */
    enum { MANY = 5000 };
    fr_st_spec *many = calloc(MANY, sizeof *many);
    char (*names)[16] = calloc(MANY, sizeof *names);
    for (int i = 0; i < MANY; i++) {
        snprintf(names[i], sizeof names[i], "t.%d", i);
        many[i] = spec(names[i], FR_DTYPE_U8, 1, i % 3, 0, 0);
    }
    CHECK(fr_st_open_memory(many, MANY, NULL, NULL, &set, &err) == FR_OK);
    int found = 0;
    for (int i = 0; set && i < MANY; i++) {
        const fr_st_tensor *t = fr_st_find(set, names[i]);
        found += t && t == fr_st_at(set, (size_t)i) && (t->nbytes == 0 || t->data[t->nbytes - 1] == 0);
    }
    CHECK(found == MANY);
    CHECK(fr_st_find(set, "t.5000") == NULL);
    fr_st_close(set);
    free(many);
    free(names);
}

static uint64_t rng_state = 0x9e3779b97f4a7c15u;
static uint64_t rnd(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static void test_fuzz(void) {
    char path[256];
    fr_error err = {0};
    fr_st_spec specs[] = {spec("a.w", FR_DTYPE_BF16, 2, 3, 4, 0), spec("b", FR_DTYPE_F32, 0, 0, 0, 0),
                          spec("c", FR_DTYPE_U8, 1, 0, 0, 0), spec("d.scale", FR_DTYPE_F8_E4M3, 3, 2, 2, 2)};
    tp(path, sizeof path, "fuzzbase.safetensors");
    CHECK(fr_st_write(path, specs, 4, fill_pattern, NULL, NULL, &err) == FR_OK);
    FILE *f = fopen(path, "rb");
    uint8_t good[4096];
    size_t n = f ? fread(good, 1, sizeof good, f) : 0;
    if (f) fclose(f);
    CHECK(n > 8 && n < sizeof good);
    size_t hend = 8 + (size_t)good[0] + ((size_t)good[1] << 8);
    static const char alphabet[] = "{}[]\":,0123456789-.eE \\u";
    int ok = 0, bad = 0, other = 0;
    /* odd iterations: the same file as a directory's model.safetensors, read into memory */
    char dir[256], dpath[320];
    mkdir_in(dir, sizeof dir, "fuzzdir");
    file_in(dpath, sizeof dpath, dir, "model.safetensors");
    tp(path, sizeof path, "fuzz.safetensors");
    for (int it = 0; it < 2000; it++) {
        uint8_t b[4096];
        size_t len = n;
        memcpy(b, good, n);
        int k = 1 + (int)(rnd() % 4);
        for (int m = 0; m < k; m++) {
            size_t at = (size_t)(rnd() % hend); /* anywhere in the length field or the JSON */
            switch (rnd() % 3) {
            case 0: b[at] ^= (uint8_t)(1u << (rnd() % 8)); break;
            case 1: b[at] = (uint8_t)alphabet[rnd() % (sizeof alphabet - 1)]; break;
            default: b[at] = (uint8_t)rnd(); break;
            }
        }
        if (rnd() % 4 == 0) len = (size_t)(rnd() % (n + 1));
        const int read = it & 1;
        CHECK(write_bytes(read ? dpath : path, b, len) == 0);
        fr_st_set *set = NULL;
        fr_status s = read ? fr_st_open_dir_how(dir, FR_ST_READ, &set, &err) : fr_st_open_file(path, &set, &err);
        if (s == FR_OK) {
            ok++;
            unsigned sum = 0; /* touch every byte handed out */
            for (size_t i = 0; i < fr_st_count(set); i++) {
                const fr_st_tensor *t = fr_st_at(set, i);
                for (size_t j = 0; j < t->nbytes; j++) sum += t->data[j];
                if (fr_st_find(set, t->name) != t) other++;
            }
            (void)sum;
            fr_st_close(set);
        } else if (s == FR_ERR_FORMAT || s == FR_ERR_IO) {
            bad++;
            if (set != NULL || !strstr(err.msg, read ? "model.safetensors" : "fuzz.safetensors")) other++;
        } else {
            other++;
        }
    }
    CHECK_MSG(other == 0, "%d unexpected outcomes", other);
    CHECK(ok + bad == 2000 && bad > 0);
}

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

int main(void) {
    snprintf(tmp, sizeof tmp, "/tmp/fr_st_test_XXXXXX");
    if (!mkdtemp(tmp)) {
        perror("mkdtemp");
        return 1;
    }
    test_round_trip();
    test_write_errors();
    test_sharded();
    test_single_and_glob();
    test_index_errors();
    test_malformed();
    test_valid_edge_cases();
    test_memory();
    test_fuzz();
    CHECK(nftw(tmp, rm_one, 16, FTW_DEPTH | FTW_PHYS) == 0);
    return check_report("safetensors");
}
