/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Reading a map of the contract whole (sm_map_for_each): an agent that restarts adopts what its pinned
 * maps hold, 225,000 entries at 100k workloads. Batch lookups read them in one bpf() call per 1,024
 * entries, where a walk by keys made two per entry. Every kernel the datapath loads on has them for hash
 * maps (5.6; its cgroup/getpeername4 hook needs 5.8).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <bpf/bpf.h>

#include "datapath/internal.h"

#define LOOKUP_BATCH 1024

typedef int entry_fn(void *ctx, const void *key, const void *value);

/* The largest key and value of the contract: each entry is copied into these, aligned for fn. */
struct entry {
	union sm_map_key key;
	struct sm_service_value value;
};

/* The entries of one batch, each copied out of the packed arrays the kernel filled. */
static int deliver(const struct bpf_map_info *info, const unsigned char *keys, const unsigned char *values,
		   __u32 count, entry_fn *fn, void *ctx)
{
	struct entry entry;
	int ret;

	for (__u32 i = 0; i < count; i++) {
		memcpy(&entry.key, keys + (size_t)i * info->key_size, info->key_size);
		memcpy(&entry.value, values + (size_t)i * info->value_size, info->value_size);
		if ((ret = fn(ctx, &entry.key, &entry.value)))
			return ret;
	}
	return 0;
}

/* -ENOENT from the kernel marks the last batch, which may still hold entries. */
static int walk_in_batches(int fd, const struct bpf_map_info *info, entry_fn *fn, void *ctx)
{
	union sm_map_key cursor = { 0 }, next_cursor = { 0 }; /* opaque: a bucket for hash maps, a key for arrays */
	/* zeroed: valgrind does not model what a batch lookup writes, and would call them uninitialised */
	unsigned char *keys = calloc(LOOKUP_BATCH, info->key_size);
	unsigned char *values = calloc(LOOKUP_BATCH, info->value_size);
	bool started = false, last = false;
	int ret = keys && values ? 0 : -ENOMEM;

	while (!ret && !last) {
		__u32 count = LOOKUP_BATCH;
		ret = bpf_map_lookup_batch(fd, started ? &cursor : NULL, &next_cursor, keys, values, &count, NULL);
		last = ret == -ENOENT;
		if (ret && !last)
			break; /* such as -ENOSPC: one hash bucket holding more entries than a batch takes */
		ret = deliver(info, keys, values, count, fn, ctx);
		cursor = next_cursor;
		started = true;
	}
	free(keys);
	free(values);
	return ret;
}

int sm_map_for_each(int fd, entry_fn *fn, void *ctx)
{
	struct bpf_map_info info = {};
	__u32 len = sizeof(info);

	if (bpf_obj_get_info_by_fd(fd, &info, &len))
		return -errno;
	if (info.key_size > sizeof(union sm_map_key) || info.value_size > sizeof(struct sm_service_value) ||
	    !info.key_size || !info.value_size)
		return -EINVAL; /* not a map of the contract */
	return walk_in_batches(fd, &info, fn, ctx);
}
