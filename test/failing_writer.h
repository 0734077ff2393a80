/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The maps' stand-in written with the failing allocator disarmed: the kernel's memory is not the agent's, so
 * a test that makes every allocation fail from some point on still lets the map writes (and their undo)
 * through. A single failing allocation reaches them by the plain writer.
 */
#ifndef SOCKMESH_TEST_FAILING_WRITER_H
#define SOCKMESH_TEST_FAILING_WRITER_H

#include "failing_alloc.h"
#include "workload/workload.h"

struct shielded_writer {
	struct sm_map_writer writer;
	struct sm_map_writer *maps;
};

static int shielded_apply(struct sm_map_writer *base, const struct sm_map_op *ops, size_t n, size_t *applied)
{
	struct shielded_writer *shielded = (struct shielded_writer *)base;
	bool armed = oom.armed;
	int err;

	oom.armed = false;
	err = shielded->maps->apply(shielded->maps, ops, n, applied);
	oom.armed = armed;
	return err;
}

static inline struct shielded_writer shielded_writer(struct sm_map_writer *maps)
{
	return (struct shielded_writer){ .writer = { .apply = shielded_apply }, .maps = maps };
}

#endif
