/* safetensors.h - read (mmap) and write safetensors files, single or sharded.
 *
 * Format: 8-byte little-endian header length N, N bytes of JSON mapping tensor
 * name -> {"dtype", "shape", "data_offsets": [begin, end]} (plus an optional
 * "__metadata__" object of strings), then the data area; offsets are relative
 * to the start of the data area.
 *
 * Reading is strict because the files are attack surface: the header length is
 * bounded by the file size (and by FR_ST_MAX_HEADER), the JSON must parse, every
 * offset must lie inside the data area, byte ranges must equal shape x dtype size,
 * tensors must not overlap, names must be unique, ranks are bounded by FR_ST_MAX_DIMS.
 * Errors name the file and the tensor. A bad file yields FR_ERR_FORMAT, never a crash.
 *
 * A set is one or more mmapped files seen as one name -> tensor map. It owns the
 * mappings; tensor data pointers stay valid until fr_st_close(). */
#ifndef FR_SAFETENSORS_H
#define FR_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "../core/dtype.h"
#include "../core/status.h"

#define FR_ST_MAX_DIMS 8
#define FR_ST_MAX_HEADER (256u << 20) /* 256 MiB of JSON is far beyond any real checkpoint */
#define FR_ST_MAX_FILES 4096          /* shards in one index */

typedef struct {
    const char *name;        /* owned by the set */
    fr_dtype dtype;
    int ndim;
    int64_t shape[FR_ST_MAX_DIMS];
    const uint8_t *data;     /* borrowed from the set's mapping or copy; NULL when nbytes == 0 */
    size_t nbytes;
    const char *file;        /* path of the file holding it, owned by the set */
} fr_st_tensor;

typedef struct fr_st_set fr_st_set;

/* Open one safetensors file. */
fr_status fr_st_open_file(const char *path, fr_st_set **out, fr_error *err);

/* Open a checkpoint directory: model.safetensors.index.json when present (its
 * weight_map says which shard holds each tensor; every listed tensor must exist
 * in the shard named for it), otherwise model.safetensors, otherwise every
 * *.safetensors file in the directory (sorted by name). A name present in two
 * files is an error. */
fr_status fr_st_open_dir(const char *dir, fr_st_set **out, fr_error *err);

/* How a checkpoint's files reach memory: mapped (the page cache's 4 KiB pages, loaded on
 * first touch, nothing copied), or read whole into anonymous memory offered 2 MiB pages
 * (core/bigmem.h: CPU decode streams it 6-9% faster; costs the read at open and RAM for
 * every file). */
typedef enum { FR_ST_MAP = 0, FR_ST_READ = 1 } fr_st_load;

/* fr_st_open_dir, with the files mapped or read as `how` says. */
fr_status fr_st_open_dir_how(const char *dir, fr_st_load how, fr_st_set **out, fr_error *err);

/* Tensor by exact name, or NULL. O(1) average. */
const fr_st_tensor *fr_st_find(const fr_st_set *set, const char *name);

size_t fr_st_count(const fr_st_set *set);
/* i-th tensor in a stable order (file order, then header order). */
const fr_st_tensor *fr_st_at(const fr_st_set *set, size_t i);

/* Release the mappings and all names. Accepts NULL. */
void fr_st_close(fr_st_set *set);

/* ---- writing ---- */

typedef struct {
    const char *name;
    fr_dtype dtype;
    int ndim;
    int64_t shape[FR_ST_MAX_DIMS];
} fr_st_spec;

/* Fills `nbytes` bytes of tensor `index` into buf (the exact stored bytes). */
typedef fr_status (*fr_st_fill_fn)(void *ctx, size_t index, uint8_t *buf, size_t nbytes,
                                   fr_error *err);

/* Write a safetensors file holding specs[0..n) in that order, asking fill() for the
 * bytes of one tensor at a time (so a file larger than memory can be written).
 * metadata_json, if not NULL, is the JSON text of the "__metadata__" object
 * (e.g. "{\"format\":\"pt\"}"). The header is padded with spaces to a multiple of 8. */
fr_status fr_st_write(const char *path, const fr_st_spec *specs, size_t n, fr_st_fill_fn fill,
                      void *ctx, const char *metadata_json, fr_error *err);

/* Write model.safetensors.index.json in dir: {"metadata": {"total_size": total},
 * "weight_map": {name: file, ...}} for names[i] -> files[i]. */
fr_status fr_st_write_index(const char *dir, const char *const *names, const char *const *files,
                            size_t n, uint64_t total_size, fr_error *err);

/* Build a set in anonymous memory (no file): one allocation holding specs[0..n)
 * back to back (each tensor 64-byte aligned), filled by fill(). Used by
 * `--load-format dummy` to get real shapes without files. Same lookup rules. */
fr_status fr_st_open_memory(const fr_st_spec *specs, size_t n, fr_st_fill_fn fill, void *ctx,
                            fr_st_set **out, fr_error *err);

#endif
