/* SPDX-License-Identifier: Apache-2.0 */
/* A CLOCK_MONOTONIC deadline some time from now, for the agent's timed waits (condition variables made with
 * that clock, pthread_mutex_clocklock). */
#ifndef SOCKMESH_AGENT_DEADLINE_H
#define SOCKMESH_AGENT_DEADLINE_H

#include <stdint.h>
#include <time.h>

static inline struct timespec deadline_in_ns(uint64_t ns)
{
	struct timespec at;

	clock_gettime(CLOCK_MONOTONIC, &at);
	ns += (uint64_t)at.tv_nsec;
	at.tv_sec += (time_t)(ns / 1000000000u);
	at.tv_nsec = (long)(ns % 1000000000u);
	return at;
}

#endif
