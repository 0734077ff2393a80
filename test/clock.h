/* SPDX-License-Identifier: Apache-2.0 */
/* Time for the tests, the test tools and the benchmarks: a monotonic clock in seconds, and sleeps. */
#ifndef SOCKMESH_TEST_CLOCK_H
#define SOCKMESH_TEST_CLOCK_H

#include <time.h>

static inline double now_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static inline void sleep_ms(int ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000 };

	nanosleep(&ts, NULL);
}

#endif
