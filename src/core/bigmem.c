/* bigmem.c - 2 MiB-aligned allocations offered to transparent huge pages (see bigmem.h). */
#include "bigmem.h"

#include <stdint.h>
#include <stdlib.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#define BIG_PAGE ((size_t)2 << 20)

void *fr_big_alloc(size_t bytes) {
    if (bytes == 0 || bytes > SIZE_MAX - BIG_PAGE) return NULL;
    const size_t len = (bytes + BIG_PAGE - 1) & ~(BIG_PAGE - 1); /* whole huge pages */
    void *p = NULL;
    if (posix_memalign(&p, BIG_PAGE, len) != 0) return NULL;
#if defined(MADV_HUGEPAGE)
    /* Before the first touch, so the faults allocate huge pages. A kernel without THP
     * refuses (EINVAL): the memory is then ordinary pages, which is only slower. */
    (void)madvise(p, len, MADV_HUGEPAGE);
#endif
    return p;
}
