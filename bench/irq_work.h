/* SPDX-License-Identifier: Apache-2.0 */
/*
 * How many IRQ work interrupts the calling thread took: the kernel's tracepoint
 * irq_vectors:irq_work_entry, counted by perf for this thread only. A map write into a hash map
 * without preallocation raises one when the BPF allocator's per-CPU cache of elements crosses a
 * watermark, and the refill (or trim) runs in it, on the writer's time: the benchmarks tell those
 * writes apart from the others with it.
 */
#ifndef SOCKMESH_BENCH_IRQ_WORK_H
#define SOCKMESH_BENCH_IRQ_WORK_H

#include <stdbool.h>
#include <stdint.h>

struct irq_work_counter {
	int fd;
	bool mounted; /* tracefs was mounted for this counter, and is unmounted with it */
};

/* Opens the counter, mounting tracefs at its kernel-made mount point if it is not mounted. 0 or -errno. */
int irq_work_counter_open(struct irq_work_counter *counter);
/* The interrupts counted so far. */
uint64_t irq_work_counter_read(const struct irq_work_counter *counter);
/* Closes it and unmounts what open mounted. */
void irq_work_counter_close(struct irq_work_counter *counter);

#endif
