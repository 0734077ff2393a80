/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <linux/perf_event.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "bench/irq_work.h"

/* The kernel makes this directory for tracefs whether or not it is mounted. */
#define TRACEFS "/sys/kernel/tracing"
#define TRACEPOINT_ID TRACEFS "/events/irq_vectors/irq_work_entry/id"

static int read_tracepoint_id(__u64 *id)
{
	FILE *f = fopen(TRACEPOINT_ID, "re");
	int ret = f && fscanf(f, "%llu", id) == 1 ? 0 : -ENOENT;

	if (f)
		fclose(f);
	return ret;
}

int irq_work_counter_open(struct irq_work_counter *counter)
{
	struct perf_event_attr attr = { .type = PERF_TYPE_TRACEPOINT, .size = sizeof(attr) };
	int ret;

	counter->fd = -1;
	counter->mounted = false;
	if (read_tracepoint_id(&attr.config)) {
		if (mount("tracefs", TRACEFS, "tracefs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL))
			return -errno;
		counter->mounted = true;
		if ((ret = read_tracepoint_id(&attr.config)))
			goto fail;
	}
	/* this thread, on whichever CPU it runs */
	counter->fd = (int)syscall(SYS_perf_event_open, &attr, 0, -1, -1, PERF_FLAG_FD_CLOEXEC);
	if (counter->fd >= 0)
		return 0;
	ret = -errno;
fail:
	irq_work_counter_close(counter);
	return ret;
}

uint64_t irq_work_counter_read(const struct irq_work_counter *counter)
{
	uint64_t count = 0;

	if (counter->fd >= 0 && read(counter->fd, &count, sizeof(count)) != sizeof(count))
		count = 0;
	return count;
}

void irq_work_counter_close(struct irq_work_counter *counter)
{
	if (counter->fd >= 0)
		close(counter->fd);
	counter->fd = -1;
	if (counter->mounted)
		umount2(TRACEFS, MNT_DETACH);
	counter->mounted = false;
}
