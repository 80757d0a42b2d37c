/* cuda_backend.h - creating the CUDA backend (C interface).
 *
 * Builds without nvcc provide the same functions as stubs that fail with a clear error
 * (cuda_stub.c), so callers need no #ifdef. The FR_GPU_EMU build of the backend runs
 * every kernel on the CPU: tests use it where no GPU is lent. */
#ifndef FR_CUDA_BACKEND_H
#define FR_CUDA_BACKEND_H

#include <stdint.h>

#include "../backend.h"

/* The backend on GPU `device` (0: the first). FR_ERR_DEVICE when there is no GPU. */
fr_status fr_cuda_backend_create(int device, fr_backend **out, fr_error *err);
/* Bytes of weights uploaded so far. */
uint64_t fr_cuda_backend_uploaded_bytes(const fr_backend *be);
/* The device's name and size, for logs and benchmark tables. */
const char *fr_cuda_backend_device_name(void);

/* Device-to-device copy bandwidth in bytes/s (read + written) over `bytes`: the
 * ceiling benchmarks report their ratio to. */
double fr_cuda_copy_bandwidth(fr_backend *be, size_t bytes);

#endif
