/* gpu_emu.cpp - the fiber scheduler behind gpu_emu.h (see its header comment).
 *
 * One block at a time: each of its threads gets a fiber (a stack and saved registers);
 * the scheduler resumes every runnable thread in turn until it blocks or exits, then
 * releases whichever barrier every live participant has reached: a warp's shuffle (all
 * live lanes of the warp waiting in a shuffle) or the block barrier (all live threads
 * waiting in fr_sync_threads). Nothing releasable with threads still alive is a deadlock
 * and aborts. Odd-numbered blocks resume their threads in reverse order (see run_block). Context switches are a few instructions on x86-64 (saved callee-saved
 * registers and the stack pointer); elsewhere ucontext does the same more slowly. */
#include "gpu_compat.h"

#include <stdio.h>
#include <stdlib.h>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define FR_EMU_ASAN 1
#endif

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

namespace {

enum State { RUNNABLE, AT_SYNC, AT_SHFL, DONE };

struct Fiber {
    void *sp = nullptr; /* saved stack pointer while switched out */
#if !defined(__x86_64__)
    ucontext_t uc;
#endif
    char *stack = nullptr;
    State state = RUNNABLE;
    uint3 tid{0, 0, 0};
    int lane = 0, warp = 0;
    float shfl_val = 0.0f, shfl_out = 0.0f;
    int shfl_src = 0;
};

const size_t STACK = 256 * 1024;

struct Emu {
    std::vector<Fiber> fibers;
    Fiber *cur = nullptr;
    void *sched_sp = nullptr;
#if !defined(__x86_64__)
    ucontext_t sched_uc;
#endif
    const std::function<void()> *body = nullptr;
    uint3 bid{0, 0, 0};
    dim3 bdim, gdim;
    std::vector<unsigned char> dyn;
#if defined(FR_EMU_ASAN)
    const void *main_stack_bottom = nullptr;
    size_t main_stack_size = 0;
#endif
    ~Emu() {
        for (Fiber &f : fibers) free(f.stack);
    }
};

thread_local Emu emu;

} // namespace

#if defined(__x86_64__)
/* fr_emu_swap(save, to): push the callee-saved registers, store rsp in *save, load `to`,
 * pop, return into the other context. A fresh fiber's stack is laid out so that the pops
 * and the ret land in fr_emu_entry. */
extern "C" void fr_emu_swap(void **save, void *to);
__asm__(".text\n"
        ".globl fr_emu_swap\n"
        ".type fr_emu_swap,@function\n"
        "fr_emu_swap:\n"
        "  pushq %rbp\n  pushq %rbx\n  pushq %r12\n  pushq %r13\n  pushq %r14\n  pushq %r15\n"
        "  movq %rsp, (%rdi)\n"
        "  movq %rsi, %rsp\n"
        "  popq %r15\n  popq %r14\n  popq %r13\n  popq %r12\n  popq %rbx\n  popq %rbp\n"
        "  ret\n"
        ".size fr_emu_swap,.-fr_emu_swap\n");
#endif

static void to_scheduler(void) {
    Fiber *f = emu.cur;
#if defined(FR_EMU_ASAN)
    void *fake = nullptr;
    __sanitizer_start_switch_fiber(f->state == DONE ? nullptr : &fake, emu.main_stack_bottom, emu.main_stack_size);
#endif
#if defined(__x86_64__)
    fr_emu_swap(&f->sp, emu.sched_sp);
#else
    swapcontext(&f->uc, &emu.sched_uc);
#endif
#if defined(FR_EMU_ASAN)
    __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
}

static void fiber_main(void) {
#if defined(FR_EMU_ASAN)
    __sanitizer_finish_switch_fiber(nullptr, &emu.main_stack_bottom, &emu.main_stack_size);
#endif
    (*emu.body)();
    emu.cur->state = DONE;
    to_scheduler();
    abort(); /* a finished fiber is never resumed */
}

#if defined(__x86_64__)
extern "C" void fr_emu_entry(void) { fiber_main(); }
#endif

static void fiber_start(Fiber *f) {
    if (!f->stack) {
        f->stack = (char *)malloc(STACK);
        if (!f->stack) {
            fprintf(stderr, "gpu emulator: out of memory for a fiber stack\n");
            abort();
        }
    }
#if defined(FR_EMU_ASAN)
    /* a reused stack still carries the poison of the frames its last thread left */
    __asan_unpoison_memory_region(f->stack, STACK);
#endif
#if defined(__x86_64__)
    /* top: [r15 r14 r13 r12 rbx rbp] [ret -> fr_emu_entry] [pad]; 16-byte aligned so that
     * fr_emu_entry starts with rsp = 8 mod 16, as after a call */
    uintptr_t top = ((uintptr_t)(f->stack + STACK) & ~(uintptr_t)15) - 64;
    void **sp = (void **)top;
    for (int i = 0; i < 6; i++) sp[i] = nullptr;
    sp[6] = (void *)fr_emu_entry;
    sp[7] = nullptr;
    f->sp = sp;
#else
    getcontext(&f->uc);
    f->uc.uc_stack.ss_sp = f->stack;
    f->uc.uc_stack.ss_size = STACK;
    f->uc.uc_link = nullptr;
    makecontext(&f->uc, fiber_main, 0);
#endif
}

static void resume(Fiber *f) {
    emu.cur = f;
#if defined(FR_EMU_ASAN)
    void *fake = nullptr;
    __sanitizer_start_switch_fiber(&fake, f->stack, STACK);
#endif
#if defined(__x86_64__)
    fr_emu_swap(&emu.sched_sp, f->sp);
#else
    swapcontext(&emu.sched_uc, &f->uc);
#endif
#if defined(FR_EMU_ASAN)
    __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
    emu.cur = nullptr;
}

[[noreturn]] static void deadlock(const char *why) {
    fprintf(stderr, "gpu emulator: %s in block (%u,%u,%u) of a %ux%ux%u-thread launch\n", why, emu.bid.x, emu.bid.y,
            emu.bid.z, emu.bdim.x, emu.bdim.y, emu.bdim.z);
    abort();
}

/* Release every barrier whose participants have all arrived; false if none could be. */
static bool release(int n) {
    bool any = false;
    const int nwarps = (n + FR_WARP - 1) / FR_WARP;
    for (int w = 0; w < nwarps; w++) {
        int lo = w * FR_WARP, hi = lo + FR_WARP < n ? lo + FR_WARP : n;
        int waiting = 0, done = 0;
        for (int i = lo; i < hi; i++) {
            waiting += emu.fibers[i].state == AT_SHFL;
            done += emu.fibers[i].state == DONE;
        }
        if (!waiting || waiting + done < hi - lo) continue;
        if (done) deadlock("a warp shuffle with lanes that have exited");
        if (hi - lo != FR_WARP) deadlock("a warp shuffle in a partial warp (block size not a multiple of the warp)");
        for (int i = lo; i < hi; i++) {
            Fiber &f = emu.fibers[i];
            f.shfl_out = emu.fibers[lo + f.shfl_src].shfl_val;
        }
        for (int i = lo; i < hi; i++) emu.fibers[i].state = RUNNABLE;
        any = true;
    }
    if (any) return true;
    int at_sync = 0, done = 0;
    for (int i = 0; i < n; i++) {
        at_sync += emu.fibers[i].state == AT_SYNC;
        done += emu.fibers[i].state == DONE;
    }
    if (at_sync && at_sync + done == n) {
        for (int i = 0; i < n; i++)
            if (emu.fibers[i].state == AT_SYNC) emu.fibers[i].state = RUNNABLE;
        return true;
    }
    return false;
}

static void run_block(int n) {
    for (int i = 0; i < n; i++) {
        Fiber &f = emu.fibers[i];
        f.state = RUNNABLE;
        f.tid = uint3{(unsigned)i % emu.bdim.x, (unsigned)i / emu.bdim.x % emu.bdim.y,
                      (unsigned)i / (emu.bdim.x * emu.bdim.y)};
        f.lane = i % FR_WARP;
        f.warp = i / FR_WARP;
        fiber_start(&f);
    }
    /* Odd blocks run their threads last to first: a thread that reads another's shared
     * memory without a barrier between sees the write in one order and not in the other,
     * so a missing fr_sync_threads shows up as a wrong result in some block. */
    const bool reverse = (emu.bid.x + emu.bid.y + emu.bid.z) & 1;
    int live = n;
    while (live) {
        for (int k = 0; k < n; k++) {
            const int i = reverse ? n - 1 - k : k;
            if (emu.fibers[i].state == RUNNABLE) resume(&emu.fibers[i]);
        }
        live = 0;
        for (int i = 0; i < n; i++) live += emu.fibers[i].state != DONE;
        if (live && !release(n)) deadlock("a barrier that can never be released (fr_sync_threads in divergent code?)");
    }
}

/* A recorded stream: launches and copies in order (graphs replay them). */
struct fr_emu_graph {
    std::vector<std::function<void()>> ops;
};
static thread_local fr_emu_graph *capturing = nullptr;

static void run_launch(dim3 grid, dim3 block, size_t smem, const std::function<void()> &body);

void fr_emu_launch(dim3 grid, dim3 block, size_t smem, std::function<void()> body) {
    if (capturing) {
        capturing->ops.push_back([=]() { run_launch(grid, block, smem, body); });
        return;
    }
    run_launch(grid, block, smem, body);
}

static void run_launch(dim3 grid, dim3 block, size_t smem, const std::function<void()> &body) {
    const long n = (long)block.x * block.y * block.z;
    if (n < 1 || n > 1024 || grid.x < 1 || grid.y < 1 || grid.z < 1 || grid.y > 65535 || grid.z > 65535) {
        fprintf(stderr, "gpu emulator: invalid launch %ux%ux%u blocks of %ux%ux%u\n", grid.x, grid.y, grid.z, block.x,
                block.y, block.z);
        abort();
    }
    if (smem > 48 * 1024) { /* more needs cudaFuncSetAttribute, which no kernel here asks for */
        fprintf(stderr, "gpu emulator: %zu bytes of dynamic shared memory (a launch may ask 48 KB)\n", smem);
        abort();
    }
    if (emu.cur) deadlock("a launch from inside a kernel");
    if ((long)emu.fibers.size() < n) emu.fibers.resize((size_t)n);
    emu.dyn.assign(smem + 16, 0xff);
    emu.body = &body;
    emu.bdim = block;
    emu.gdim = grid;
    for (unsigned z = 0; z < grid.z; z++)
        for (unsigned y = 0; y < grid.y; y++)
            for (unsigned x = 0; x < grid.x; x++) {
                emu.bid = uint3{x, y, z};
                run_block((int)n);
            }
    emu.body = nullptr;
}

const uint3 &fr_emu_thread_idx(void) { return emu.cur->tid; }
const uint3 &fr_emu_block_idx(void) { return emu.bid; }
const dim3 &fr_emu_block_dim(void) { return emu.bdim; }
const dim3 &fr_emu_grid_dim(void) { return emu.gdim; }
void *fr_emu_dyn_shared(void) {
    uintptr_t p = ((uintptr_t)emu.dyn.data() + 15) & ~(uintptr_t)15;
    return (void *)p;
}

void fr_emu_sync_threads(void) {
    emu.cur->state = AT_SYNC;
    to_scheduler();
}

float fr_emu_shfl_xor(float v, int mask) {
    Fiber *f = emu.cur;
    f->shfl_val = v;
    f->shfl_src = (f->lane ^ mask) & (FR_WARP - 1);
    f->state = AT_SHFL;
    to_scheduler();
    return f->shfl_out;
}

/* ---- runtime */
fr_gpu_err fr_gpu_device_count(int *n) {
    *n = 1;
    return 0;
}
const char *fr_gpu_device_name(void) { return "CPU emulator (FR_GPU_EMU)"; }
fr_gpu_err fr_gpu_sm_count(int *n) { /* launch sizing as on an H100/H200 (132 SMs) */
    *n = 132;
    return 0;
}
fr_gpu_err fr_gpu_malloc(void **p, size_t bytes) {
    *p = malloc(bytes ? bytes : 1);
    if (!*p) return 2;
    memset(*p, 0xff, bytes);
    return 0;
}
fr_gpu_err fr_gpu_free(void *p) {
    free(p);
    return 0;
}
/* A stream operation: run now, or record it while capturing. */
static fr_gpu_err stream_op(std::function<void()> op) {
    if (capturing) capturing->ops.push_back(op);
    else op();
    return 0;
}
fr_gpu_err fr_gpu_memcpy_h2d(void *d, const void *s, size_t n, fr_gpu_stream) {
    if (!n) return 0;
    return stream_op([=]() { memmove(d, s, n); });
}
fr_gpu_err fr_gpu_memcpy_d2h(void *d, const void *s, size_t n, fr_gpu_stream) {
    if (capturing) return 3; /* a synchronous copy cannot be captured */
    if (n) memmove(d, s, n);
    return 0;
}
fr_gpu_err fr_gpu_memcpy_d2d(void *d, const void *s, size_t n, fr_gpu_stream) {
    fr_gpu_launches++;
    if (fr_gpu_skip || !n) return 0;
    return stream_op([=]() { memmove(d, s, n); });
}
fr_gpu_err fr_gpu_memset(void *p, int v, size_t n, fr_gpu_stream) {
    fr_gpu_launches++;
    if (fr_gpu_skip || !n) return 0;
    return stream_op([=]() { memset(p, v, n); });
}
fr_gpu_err fr_gpu_stream_create(fr_gpu_stream *s) {
    *s = nullptr;
    return 0;
}
fr_gpu_err fr_gpu_stream_destroy(fr_gpu_stream) { return 0; }
fr_gpu_err fr_gpu_stream_sync(fr_gpu_stream) { return capturing ? 3 : 0; } /* illegal while capturing */
fr_gpu_err fr_gpu_last_error(void) { return 0; }
const char *fr_gpu_error_string(fr_gpu_err e) {
    return e == 2 ? "out of memory" : e == 3 ? "operation not permitted when stream is capturing" : e ? "error" : "no error";
}
fr_gpu_err fr_gpu_mem_info(size_t *f, size_t *t) {
    *f = (size_t)8 << 30;
    *t = (size_t)8 << 30;
    return 0;
}

fr_gpu_err fr_gpu_host_alloc(void **p, size_t bytes) { return fr_gpu_malloc(p, bytes); }
fr_gpu_err fr_gpu_host_free(void *p) { return fr_gpu_free(p); }

fr_gpu_err fr_gpu_capture_begin(fr_gpu_stream) {
    if (capturing) return 3;
    capturing = new fr_emu_graph;
    return 0;
}
fr_gpu_err fr_gpu_capture_end(fr_gpu_stream, fr_gpu_graph *g) {
    *g = capturing;
    capturing = nullptr;
    return *g ? 0 : 1;
}
fr_gpu_err fr_gpu_graph_instantiate(fr_gpu_graph_exec *e, fr_gpu_graph g) {
    *e = new fr_emu_graph(*g);
    return 0;
}
fr_gpu_err fr_gpu_graph_launch(fr_gpu_graph_exec e, fr_gpu_stream) {
    if (capturing) return 3;
    for (auto &op : e->ops) op();
    return 0;
}
fr_gpu_err fr_gpu_graph_destroy(fr_gpu_graph g) {
    delete g;
    return 0;
}
fr_gpu_err fr_gpu_graph_exec_destroy(fr_gpu_graph_exec e) {
    delete e;
    return 0;
}
