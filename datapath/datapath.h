/* SPDX-License-Identifier: Apache-2.0 */
/*
 * datapath/: the libbpf side. It loads, pins and attaches the BPF programs, and writes their maps
 * through the map-writer interface below, which the workload model plans against. Nothing here knows
 * protobuf; the keys and values are those of the contract, bpf/sockmesh.h.
 */
#ifndef SOCKMESH_DATAPATH_H
#define SOCKMESH_DATAPATH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bpf/sockmesh.h"

/* The maps the workload model writes, in the order a reader follows them. */
enum sm_map_id {
	SM_MAP_FRONTENDS,
	SM_MAP_SERVICES,
	SM_MAP_ENDPOINTS,
	SM_MAP_BACKENDS,
	SM_MAP_COUNT,
};

enum sm_map_op_kind {
	SM_OP_UPDATE,
	SM_OP_DELETE,
};

union sm_map_key {
	struct sm_frontend_key frontend;
	__u32 id; /* services, backends */
	struct sm_endpoint_key endpoint;
};

/* One write: an update (value points at the map's value type) or a delete (value is NULL). */
struct sm_map_op {
	uint8_t map;  /* enum sm_map_id */
	uint8_t kind; /* enum sm_map_op_kind */
	union sm_map_key key;
	const void *value;
};

/*
 * Applies ops in order. Consecutive ops on one map may be grouped into batch calls, never reordered.
 * Returns 0, or -errno with *applied set to how many ops took effect before the failure.
 */
struct sm_map_writer {
	int (*apply)(struct sm_map_writer *writer, const struct sm_map_op *ops, size_t n, size_t *applied);
};

static inline const char *sm_map_name(enum sm_map_id map)
{
	static const char *const names[SM_MAP_COUNT] = { "frontends", "services", "endpoints", "backends" };
	return names[map];
}

static inline size_t sm_map_key_size(enum sm_map_id map)
{
	static const size_t sizes[SM_MAP_COUNT] = {
		sizeof(struct sm_frontend_key), sizeof(__u32), sizeof(struct sm_endpoint_key), sizeof(__u32),
	};
	return sizes[map];
}

static inline size_t sm_map_value_size(enum sm_map_id map)
{
	static const size_t sizes[SM_MAP_COUNT] = {
		sizeof(struct sm_frontend_value), sizeof(struct sm_service_value),
		sizeof(struct sm_endpoint_value), sizeof(struct sm_backend_value),
	};
	return sizes[map];
}

/*
 * The map writer over BPF map fds: consecutive ops on one map go in one batch call (the kernel's
 * bpf_map_*_batch), falling back to single calls where batches are not supported. Deleting an entry
 * that is already gone counts as done.
 */
struct sm_bpf_writer {
	struct sm_map_writer writer;
	int fds[SM_MAP_COUNT];
	bool single_calls; /* set when the kernel refused a batch call */
	size_t batch_capacity;
	void *keys;
	void *values;
	size_t calls; /* bpf() calls issued, for benchmarks */
};

void sm_bpf_writer_init(struct sm_bpf_writer *writer, const int fds[SM_MAP_COUNT]);
void sm_bpf_writer_release(struct sm_bpf_writer *writer);

/* Calls fn for each entry of a map fd (keys and values of map's contract types); stops on non-zero. */
int sm_map_for_each(int fd, enum sm_map_id map, int (*fn)(void *ctx, const void *key, const void *value),
		    void *ctx);

#endif
