/* gpu_check.h - the harness of the CUDA op tests: every op against the CPU backend.
 *
 * A test builds random inputs on the host, runs the op on the CPU backend (the reference)
 * and on the CUDA backend (a real GPU, or the CPU emulator in the _emu builds) into
 * outputs poisoned with NaN, and compares. Everything gc_* allocates is owned by the
 * context and freed by gc_done. */
#ifndef FR_GPU_CHECK_H
#define FR_GPU_CHECK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"

typedef struct {
    fr_backend *cpu, *gpu;
    int checks, failures;
    void **host_allocs, **dev_allocs;
    size_t n_host, n_dev, cap_host, cap_dev;
    fr_weight **weights; /* host views handed out (their bytes are in host_allocs) */
} gc_ctx;

/* 0, or 77 (the test is skipped: no GPU) after printing why, or 1. */
int gc_init(gc_ctx *g);
/* Print the summary and free everything; the test's exit status (0 pass, 1 fail). */
int gc_done(gc_ctx *g);

/* Random weight [rows, cols] in format dt (F32, F16, BF16, F8_E4M3 without a scale grid,
 * MXFP4, INT4: cols a multiple of 32), values of about unit scale, registered with g->gpu. */
fr_weight gc_weight(gc_ctx *g, fr_dtype dt, int64_t rows, int64_t cols, uint64_t seed);
/* F8_E4M3 with a [ceil(rows / br), ceil(cols / bc)] grid of scale_inv multipliers. */
fr_weight gc_weight_fp8(gc_ctx *g, int64_t rows, int64_t cols, int br, int bc, uint64_t seed);

/* Host buffer of n values ~ N(0, scale^2) (deterministic in seed). */
float *gc_randn(gc_ctx *g, size_t n, uint64_t seed, float scale);
/* Host buffer of `bytes` zero bytes. */
void *gc_host(gc_ctx *g, size_t bytes);
/* Device copy of n host floats / of `bytes` host bytes. */
float *gc_to_dev(gc_ctx *g, const float *host, size_t n);
void *gc_to_dev_bytes(gc_ctx *g, const void *host, size_t bytes);
/* Device buffer of n floats, every one NaN. */
float *gc_dev_poison(gc_ctx *g, size_t n);
/* Host copy of n device floats / of `bytes` device bytes. */
float *gc_from_dev(gc_ctx *g, const float *dev, size_t n);
void *gc_from_dev_bytes(gc_ctx *g, const void *dev, size_t bytes);

/* Relative L2 error of got against want, NaN if got has a NaN or Inf. */
double gc_rel_l2(const float *got, const float *want, size_t n);
/* Check rel L2 <= tol (and no NaN); prints one line on failure (and with GC_VERBOSE=1). */
bool gc_close(gc_ctx *g, const char *name, const float *got, const float *want, size_t n, double tol);
/* GC_QUICK=1 (set for the sanitizer pass, where the emulator runs ~10x slower): tests keep
 * every code path but drop their largest shapes. */
bool gc_quick(void);
/* Check that the `width` values at row, the output row after the last token, are all
 * still NaN (the op wrote nothing past its output). */
bool gc_row_poisoned(gc_ctx *g, const char *name, const float *row, int64_t width);
/* Plain check. */
bool gc_check(gc_ctx *g, const char *name, bool ok);
/* Check that a status is FR_OK. */
bool gc_ok(gc_ctx *g, const char *name, fr_status rc);

#endif
