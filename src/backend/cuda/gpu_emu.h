/* gpu_emu.h - run the CUDA backend's kernels on the CPU (FR_GPU_EMU builds, C++).
 *
 * No GPU is lent to most machines this project is built on, and CI must still test every
 * kernel. With FR_GPU_EMU the .cu files compile as C++ and a launch runs each block's
 * threads as fibers on the calling OS thread: a thread runs until it reaches a barrier
 * (fr_sync_threads, or a warp shuffle), and a barrier releases once every live thread it
 * waits for has reached it. So indexing, bounds, reductions and barrier placement are
 * tested for real; the memory model, timing and anything racy are not (tests/gpu/check.sh
 * on a real GPU covers those). A barrier that can never release (one reached in divergent
 * code, a shuffle with lanes that exited) aborts with a message instead of hanging.
 *
 * Device memory is host memory; allocations are filled with 0xFF bytes (float NaN), so a
 * kernel that reads what nobody wrote shows up as NaN in a test's output. */
#ifndef FR_GPU_EMU_H
#define FR_GPU_EMU_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <functional>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __constant__ static
#define __launch_bounds__(...)

struct uint3 { unsigned x, y, z; };
struct dim3 {
    unsigned x, y, z;
    dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct alignas(16) uint4 { unsigned x, y, z, w; };
struct alignas(16) int4 { int x, y, z, w; };
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(8) uint2 { unsigned x, y; };
struct alignas(8) float2 { float x, y; };

const uint3 &fr_emu_thread_idx(void);
const uint3 &fr_emu_block_idx(void);
const dim3 &fr_emu_block_dim(void);
const dim3 &fr_emu_grid_dim(void);
#define threadIdx (fr_emu_thread_idx())
#define blockIdx (fr_emu_block_idx())
#define blockDim (fr_emu_block_dim())
#define gridDim (fr_emu_grid_dim())

void fr_emu_sync_threads(void);
float fr_emu_shfl_xor(float v, int mask);
void *fr_emu_dyn_shared(void);
/* Run a launch, or record it while a stream capture is open. */
void fr_emu_launch(dim3 grid, dim3 block, size_t smem, std::function<void()> body);

/* Fibers switch only at barriers, so read-modify-write is atomic as written. */
template <typename T> static inline T atomicAdd(T *p, T v) { T o = *p; *p = o + v; return o; }
template <typename T> static inline T atomicMax(T *p, T v) { T o = *p; if (v > o) *p = v; return o; }
template <typename T> static inline T atomicMin(T *p, T v) { T o = *p; if (v < o) *p = v; return o; }
template <typename T> static inline T atomicExch(T *p, T v) { T o = *p; *p = v; return o; }
template <typename T> static inline T atomicCAS(T *p, T cmp, T v) { T o = *p; if (o == cmp) *p = v; return o; }

static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
/* __expf and __logf: glibc declares both (as expf and logf). */
static inline float __fdividef(float a, float b) { return a / b; }
static inline float __saturatef(float x) { return x < 0.0f ? 0.0f : x > 1.0f ? 1.0f : x; }
static inline unsigned __float_as_uint(float f) { unsigned u; memcpy(&u, &f, 4); return u; }
static inline float __uint_as_float(unsigned u) { float f; memcpy(&f, &u, 4); return f; }
static inline int __float_as_int(float f) { int u; memcpy(&u, &f, 4); return u; }
static inline float __int_as_float(int u) { float f; memcpy(&f, &u, 4); return f; }
static inline int __popc(unsigned v) { return __builtin_popcount(v); }
static inline int __clz(int v) { return v ? __builtin_clz((unsigned)v) : 32; }
static inline int __ffs(int v) { return __builtin_ffs(v); }
/* CUDA's integer and float min/max overloads. */
static inline int min(int a, int b) { return a < b ? a : b; }
static inline int max(int a, int b) { return a > b ? a : b; }
static inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
static inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
static inline long long min(long long a, long long b) { return a < b ? a : b; }
static inline long long max(long long a, long long b) { return a > b ? a : b; }
static inline long min(long a, long b) { return a < b ? a : b; }
static inline long max(long a, long b) { return a > b ? a : b; }
static inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
static inline unsigned long long max(unsigned long long a, unsigned long long b) { return a > b ? a : b; }
static inline unsigned long min(unsigned long a, unsigned long b) { return a < b ? a : b; }
static inline unsigned long max(unsigned long a, unsigned long b) { return a > b ? a : b; }
static inline float min(float a, float b) { return fminf(a, b); }
static inline float max(float a, float b) { return fmaxf(a, b); }

#endif
