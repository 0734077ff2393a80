/* SPDX-License-Identifier: Apache-2.0 */
/*
 * sm_local_addrs, the addresses of this node's workloads (whose sockets may be accelerated), kept in step
 * with the model. A write walks the map, a syscall an address (0.4 ms for 100 pods): it is made only when
 * a batch changed this node's workloads, and a write that failed is made again after a back-off (1 s,
 * doubling to 30 s), also when no response comes to prompt it.
 */
#ifndef SOCKMESH_AGENT_LOCAL_ADDRS_H
#define SOCKMESH_AGENT_LOCAL_ADDRS_H

#include <stdbool.h>
#include <stdint.h>

struct sm_datapath;
struct sm_model;

struct local_addrs {
	bool written;	      /* the map holds the addresses of generation */
	uint64_t generation;  /* sm_model_local_generation at the last write */
	unsigned retry_ms;    /* the back-off after the last failed write; 0: the last write was taken */
	uint64_t retry_at_ms; /* when the next try is due (CLOCK_MONOTONIC) */
	unsigned failures;    /* failed writes in a row */
};

/*
 * Under the model lock: writes the model's local addresses unless the map holds them already. 0 when it
 * holds them, or the write's -errno (its next try scheduled; now_ms: CLOCK_MONOTONIC).
 */
int local_addrs_sync(struct local_addrs *la, const struct sm_model *model, struct sm_datapath *dp, uint64_t now_ms);
/* Milliseconds until a failed write is due again (at least 1); 0: none is waiting. */
unsigned local_addrs_retry_in_ms(const struct local_addrs *la, uint64_t now_ms);
/* Whether a failed write is due again: local_addrs_sync makes it. */
bool local_addrs_retry_due(const struct local_addrs *la, uint64_t now_ms);

#endif
