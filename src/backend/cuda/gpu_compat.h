/* gpu_compat.h - the one header that differs between CUDA, HIP and the CPU emulator.
 *
 * Kernels in src/backend/cuda are written in the subset of CUDA C this header names, so
 * that a HIP build is a port of this file and the emulator (gpu_emu.h, FR_GPU_EMU) can
 * run every kernel on the CPU in CI, where no GPU is lent:
 *   - qualifiers: __global__ __device__ __host__ __forceinline__ __restrict__ __shared__
 *     (static arrays only; dynamic shared memory through FR_DYN_SHARED), __launch_bounds__;
 *   - threadIdx blockIdx blockDim gridDim (x, y, z);
 *   - fr_sync_threads() (never in divergent code: the emulator reports the deadlock);
 *   - warp collectives only through fr_shfl_xor / fr_warp_sum / fr_warp_max, over the
 *     whole warp (all FR_WARP lanes present and converged);
 *   - atomicAdd on float / int / unsigned / unsigned long long, atomicMax on int / unsigned,
 *     in global or shared memory;
 *   - plain loads, 16-byte loads through uint4 / float4 casts of aligned pointers;
 *   - launches only through FR_LAUNCH; runtime calls only through the fr_gpu_* shim;
 *   - an op's launches read every per-step value (positions, lengths, block tables) from
 *     device memory, never from a scalar argument: a recorded step (CUDA graph) replays
 *     its launches with the arguments they were recorded with.
 * No warp size is hard-coded outside this file: use FR_WARP. */
#ifndef FR_GPU_COMPAT_H
#define FR_GPU_COMPAT_H

#include <stddef.h>
#include <stdint.h>

#if defined(FR_GPU_EMU)
#include "gpu_emu.h"
#define FR_WARP 32
#elif defined(__HIPCC__)
#include <hip/hip_runtime.h>
#define FR_WARP 64
#else
#include <cuda_runtime.h>
#define FR_WARP 32
#endif

/* ---- kernel-side collectives */
#if defined(FR_GPU_EMU)
#define fr_sync_threads() fr_emu_sync_threads()
static inline float fr_shfl_xor(float v, int mask) { return fr_emu_shfl_xor(v, mask); }
#elif defined(__HIPCC__)
#define fr_sync_threads() __syncthreads()
__device__ __forceinline__ float fr_shfl_xor(float v, int mask) { return __shfl_xor(v, mask); }
#else
#define fr_sync_threads() __syncthreads()
__device__ __forceinline__ float fr_shfl_xor(float v, int mask) { return __shfl_xor_sync(0xffffffffu, v, mask); }
#endif

/* Sum / max over the warp; every lane gets the result. */
__device__ __forceinline__ float fr_warp_sum(float v) {
    for (int m = FR_WARP / 2; m > 0; m >>= 1) v += fr_shfl_xor(v, m);
    return v;
}
__device__ __forceinline__ float fr_warp_max(float v) {
    for (int m = FR_WARP / 2; m > 0; m >>= 1) v = fmaxf(v, fr_shfl_xor(v, m));
    return v;
}

/* Sum over the block (blockDim.x a multiple of FR_WARP, at most 1024 threads); every
 * thread gets the result. Two barriers: the scratch may be reused right after. */
__device__ __forceinline__ float fr_block_sum(float v) {
    __shared__ float part[1024 / FR_WARP];
    const int lane = (int)threadIdx.x % FR_WARP, warp = (int)threadIdx.x / FR_WARP;
    const int nw = (int)blockDim.x / FR_WARP;
    v = fr_warp_sum(v);
    fr_sync_threads();
    if (lane == 0) part[warp] = v;
    fr_sync_threads();
    float s = 0.0f;
    for (int i = 0; i < nw; i++) s += part[i];
    return s;
}
__device__ __forceinline__ float fr_block_max(float v) {
    __shared__ float part[1024 / FR_WARP];
    const int lane = (int)threadIdx.x % FR_WARP, warp = (int)threadIdx.x / FR_WARP;
    const int nw = (int)blockDim.x / FR_WARP;
    v = fr_warp_max(v);
    fr_sync_threads();
    if (lane == 0) part[warp] = v;
    fr_sync_threads();
    float s = part[0];
    for (int i = 1; i < nw; i++) s = fmaxf(s, part[i]);
    return s;
}

/* Dynamic shared memory as a typed pointer named `name`. */
#if defined(FR_GPU_EMU)
#define FR_DYN_SHARED(type, name) type *name = (type *)fr_emu_dyn_shared()
#else
#define FR_DYN_SHARED(type, name)                                                                  \
    extern __shared__ uint4 fr_dyn_shared_[];                                                      \
    type *name = (type *)(void *)fr_dyn_shared_
#endif

/* While a backend prepares the replay of a recorded step (CUDA graphs), its ops run only
 * for their host-side effects (staging the step's host arrays): launches and the stream
 * operations below are skipped, and counted, so the backend can check that the step made
 * the same calls as the recorded one. Set by the backend between step_begin and step_end;
 * process-wide, as one thread at a time drives the GPU backends (the engine's step thread,
 * or a tool's main thread). */
extern bool fr_gpu_skip;
extern unsigned long fr_gpu_launches;

/* Launch kernel(args...) on grid x block threads with smem bytes of dynamic shared memory.
 * Arguments are taken by value, as a CUDA launch (and a graph node) takes them. */
#if defined(FR_GPU_EMU)
/* The arguments are evaluated at the launch, as CUDA does, and kept by value. */
template <typename Kernel, typename... Args>
static inline void fr_emu_launch_args(dim3 grid, dim3 block, size_t smem, Kernel kernel, Args... args) {
    fr_emu_launch(grid, block, smem, [=]() { kernel(args...); });
}
#define FR_LAUNCH(kernel, grid, block, smem, stream, ...)                                          \
    do {                                                                                           \
        fr_gpu_launches++;                                                                         \
        if (!fr_gpu_skip) fr_emu_launch_args(dim3(grid), dim3(block), (size_t)(smem), kernel, __VA_ARGS__); \
    } while (0)
#else
#define FR_LAUNCH(kernel, grid, block, smem, stream, ...)                                          \
    do {                                                                                           \
        fr_gpu_launches++;                                                                         \
        if (!fr_gpu_skip) kernel<<<(grid), (block), (smem), (stream)>>>(__VA_ARGS__);              \
    } while (0)
#endif

/* ---- host-side runtime shim: 0 on success, else an error the caller reports through
 * fr_gpu_error_string. */
#if defined(FR_GPU_EMU)
typedef int fr_gpu_err;
typedef void *fr_gpu_stream;
#define FR_GPU_SUCCESS 0
#elif defined(__HIPCC__)
typedef hipError_t fr_gpu_err;
typedef hipStream_t fr_gpu_stream;
#define FR_GPU_SUCCESS hipSuccess
#else
typedef cudaError_t fr_gpu_err;
typedef cudaStream_t fr_gpu_stream;
#define FR_GPU_SUCCESS cudaSuccess
#endif

#if defined(FR_GPU_EMU)
fr_gpu_err fr_gpu_device_count(int *n);
const char *fr_gpu_device_name(void);
fr_gpu_err fr_gpu_sm_count(int *n);
fr_gpu_err fr_gpu_malloc(void **p, size_t bytes);
fr_gpu_err fr_gpu_free(void *p);
fr_gpu_err fr_gpu_memcpy_h2d(void *dst, const void *src, size_t bytes, fr_gpu_stream s);
fr_gpu_err fr_gpu_memcpy_d2h(void *dst, const void *src, size_t bytes, fr_gpu_stream s);
fr_gpu_err fr_gpu_memcpy_d2d(void *dst, const void *src, size_t bytes, fr_gpu_stream s);
fr_gpu_err fr_gpu_memset(void *p, int v, size_t bytes, fr_gpu_stream s);
fr_gpu_err fr_gpu_stream_create(fr_gpu_stream *s);
fr_gpu_err fr_gpu_stream_destroy(fr_gpu_stream s);
fr_gpu_err fr_gpu_stream_sync(fr_gpu_stream s);
fr_gpu_err fr_gpu_last_error(void);
const char *fr_gpu_error_string(fr_gpu_err e);
fr_gpu_err fr_gpu_mem_info(size_t *free_bytes, size_t *total_bytes);
fr_gpu_err fr_gpu_host_alloc(void **p, size_t bytes);
fr_gpu_err fr_gpu_host_free(void *p);
/* Graphs: the emulator records launches and stream operations between capture_begin and
 * capture_end, and replays them in order. */
typedef struct fr_emu_graph *fr_gpu_graph;
typedef struct fr_emu_graph *fr_gpu_graph_exec;
fr_gpu_err fr_gpu_capture_begin(fr_gpu_stream s);
fr_gpu_err fr_gpu_capture_end(fr_gpu_stream s, fr_gpu_graph *g);
fr_gpu_err fr_gpu_graph_instantiate(fr_gpu_graph_exec *e, fr_gpu_graph g);
fr_gpu_err fr_gpu_graph_launch(fr_gpu_graph_exec e, fr_gpu_stream s);
fr_gpu_err fr_gpu_graph_destroy(fr_gpu_graph g);
fr_gpu_err fr_gpu_graph_exec_destroy(fr_gpu_graph_exec e);
#else
#if defined(__HIPCC__)
#define FR_GPU_(name) hip##name
#else
#define FR_GPU_(name) cuda##name
#endif
static inline fr_gpu_err fr_gpu_device_count(int *n) { return FR_GPU_(GetDeviceCount)(n); }
/* Multiprocessors (CUs on AMD) of the current device: launch sizing wants a few blocks each. */
static inline fr_gpu_err fr_gpu_sm_count(int *n) {
    int dev = 0;
    fr_gpu_err e = FR_GPU_(GetDevice)(&dev);
    if (e != FR_GPU_SUCCESS) return e;
#if defined(__HIPCC__)
    return hipDeviceGetAttribute(n, hipDeviceAttributeMultiprocessorCount, dev);
#else
    return cudaDeviceGetAttribute(n, cudaDevAttrMultiProcessorCount, dev);
#endif
}
static inline fr_gpu_err fr_gpu_malloc(void **p, size_t bytes) { return FR_GPU_(Malloc)(p, bytes); }
static inline fr_gpu_err fr_gpu_free(void *p) { return FR_GPU_(Free)(p); }
static inline fr_gpu_err fr_gpu_memcpy_h2d(void *d, const void *s, size_t n, fr_gpu_stream st) {
    return FR_GPU_(MemcpyAsync)(d, s, n, FR_GPU_(MemcpyHostToDevice), st);
}
static inline fr_gpu_err fr_gpu_memcpy_d2h(void *d, const void *s, size_t n, fr_gpu_stream st) {
    fr_gpu_err e = FR_GPU_(MemcpyAsync)(d, s, n, FR_GPU_(MemcpyDeviceToHost), st);
    return e ? e : FR_GPU_(StreamSynchronize)(st);
}
static inline fr_gpu_err fr_gpu_memcpy_d2d(void *d, const void *s, size_t n, fr_gpu_stream st) {
    fr_gpu_launches++;
    return fr_gpu_skip ? FR_GPU_SUCCESS : FR_GPU_(MemcpyAsync)(d, s, n, FR_GPU_(MemcpyDeviceToDevice), st);
}
static inline fr_gpu_err fr_gpu_memset(void *p, int v, size_t n, fr_gpu_stream st) {
    fr_gpu_launches++;
    return fr_gpu_skip ? FR_GPU_SUCCESS : FR_GPU_(MemsetAsync)(p, v, n, st);
}
static inline fr_gpu_err fr_gpu_host_alloc(void **p, size_t bytes) { return FR_GPU_(HostAlloc)(p, bytes, 0); }
static inline fr_gpu_err fr_gpu_host_free(void *p) { return FR_GPU_(FreeHost)(p); }
typedef FR_GPU_(Graph_t) fr_gpu_graph;
typedef FR_GPU_(GraphExec_t) fr_gpu_graph_exec;
static inline fr_gpu_err fr_gpu_capture_begin(fr_gpu_stream s) {
    return FR_GPU_(StreamBeginCapture)(s, FR_GPU_(StreamCaptureModeThreadLocal));
}
static inline fr_gpu_err fr_gpu_capture_end(fr_gpu_stream s, fr_gpu_graph *g) { return FR_GPU_(StreamEndCapture)(s, g); }
static inline fr_gpu_err fr_gpu_graph_instantiate(fr_gpu_graph_exec *e, fr_gpu_graph g) {
    return FR_GPU_(GraphInstantiate)(e, g, 0);
}
static inline fr_gpu_err fr_gpu_graph_launch(fr_gpu_graph_exec e, fr_gpu_stream s) { return FR_GPU_(GraphLaunch)(e, s); }
static inline fr_gpu_err fr_gpu_graph_destroy(fr_gpu_graph g) { return FR_GPU_(GraphDestroy)(g); }
static inline fr_gpu_err fr_gpu_graph_exec_destroy(fr_gpu_graph_exec e) { return FR_GPU_(GraphExecDestroy)(e); }
static inline fr_gpu_err fr_gpu_stream_create(fr_gpu_stream *s) { return FR_GPU_(StreamCreate)(s); }
static inline fr_gpu_err fr_gpu_stream_destroy(fr_gpu_stream s) { return FR_GPU_(StreamDestroy)(s); }
static inline fr_gpu_err fr_gpu_stream_sync(fr_gpu_stream s) { return FR_GPU_(StreamSynchronize)(s); }
static inline fr_gpu_err fr_gpu_last_error(void) { return FR_GPU_(GetLastError)(); }
static inline const char *fr_gpu_error_string(fr_gpu_err e) { return FR_GPU_(GetErrorString)(e); }
static inline fr_gpu_err fr_gpu_mem_info(size_t *f, size_t *t) { return FR_GPU_(MemGetInfo)(f, t); }
#endif

#endif
