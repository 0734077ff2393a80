/* SPDX-License-Identifier: Apache-2.0 */
#include <time.h>

#include "agent/deadline.h"
#include "agent/model_gate.h"

/* How often the yielding thread looks whether readers still wait: about what one read of the model takes
 * (a request, a chunk of events), so that it neither spins nor leaves the model idle for long. */
#define YIELD_POLL_NS (500 * 1000)

void model_gate_lock(struct model_gate *gate)
{
	atomic_fetch_add(&gate->waiting, 1);
	pthread_mutex_lock(&gate->lock);
	atomic_fetch_sub(&gate->waiting, 1);
}

bool model_gate_trylock(struct model_gate *gate)
{
	return pthread_mutex_trylock(&gate->lock) == 0;
}

bool model_gate_lock_within(struct model_gate *gate, unsigned max_ms)
{
	struct timespec deadline = deadline_in_ns((uint64_t)max_ms * 1000000u);

	atomic_fetch_add(&gate->waiting, 1);
	int ret = pthread_mutex_clocklock(&gate->lock, CLOCK_MONOTONIC, &deadline);
	atomic_fetch_sub(&gate->waiting, 1);
	return ret == 0;
}

void model_gate_unlock(struct model_gate *gate)
{
	pthread_mutex_unlock(&gate->lock);
}

void model_gate_wait_begin(struct model_gate *gate)
{
	atomic_fetch_add(&gate->waiting, 1);
}

void model_gate_wait_end(struct model_gate *gate)
{
	atomic_fetch_sub(&gate->waiting, 1);
}

static long long monotonic_ns(void)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return now.tv_sec * 1000000000LL + now.tv_nsec;
}

void model_gate_yield(struct model_gate *gate, unsigned max_ms)
{
	if (!atomic_load(&gate->waiting))
		return;
	long long deadline = monotonic_ns() + max_ms * 1000000LL;
	pthread_mutex_unlock(&gate->lock);
	/* A reader that has the lock no longer counts: this waits for the others, then for the lock. */
	while (atomic_load(&gate->waiting) && monotonic_ns() < deadline)
		nanosleep(&(struct timespec){ .tv_nsec = YIELD_POLL_NS }, NULL);
	pthread_mutex_lock(&gate->lock);
}
