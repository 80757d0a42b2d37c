/* cuda_stub.c - the CUDA backend's entry points in a build without nvcc. */
#include "cuda_backend.h"

fr_status fr_cuda_backend_create(int device, fr_backend **out, fr_error *err) {
    (void)device;
    *out = NULL;
    return fr_fail(err, FR_ERR_UNSUPPORTED,
                   "this frontier was built without CUDA (no nvcc found at build time); rebuild with the CUDA toolkit");
}

uint64_t fr_cuda_backend_uploaded_bytes(const fr_backend *be) {
    (void)be;
    return 0;
}

const char *fr_cuda_backend_device_name(void) { return "none (built without CUDA)"; }

double fr_cuda_copy_bandwidth(fr_backend *be, size_t bytes) {
    (void)be, (void)bytes;
    return 0.0;
}
