/* bigmem.h - allocations for weights and other large arrays that are streamed whole.
 *
 * Decode reads every weight byte once per token in short runs (a 1 KiB expert row, 8
 * rows side by side), so with 4 KiB pages it takes a TLB miss every few rows of every
 * stream, and the hardware prefetchers stop at each 4 KiB boundary. 2 MiB pages remove
 * most of that: on the 2-core Sapphire Rapids target a MoE layer's expert products went
 * from 79% to 85% of read bandwidth, and with the BF16 shared expert from 83% to 92%.
 * Linux gives anonymous memory huge pages when the range is madvise'd MADV_HUGEPAGE
 * (transparent_hugepage "madvise" or "always"); elsewhere this is an aligned allocation. */
#ifndef FR_BIGMEM_H
#define FR_BIGMEM_H

#include <stddef.h>

/* bytes (> 0) of uninitialized memory, 2 MiB aligned, released with free(); NULL when out
 * of memory. */
void *fr_big_alloc(size_t bytes);

#endif
