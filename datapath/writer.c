/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Writing the workload model's plan into BPF maps. The plan is already ordered so that a reader never
 * meets a dangling reference; the writer keeps that order and only groups consecutive ops on one map
 * into batch calls, which cost a third of single updates per element on this kernel. A long run of such
 * ops (a full push writes 100,000 backends in a row) is split between two threads when the process may
 * use two CPUs: the kernel takes concurrent inserts into one hash map under per-bucket locks, and the
 * run's ops touch distinct keys, so their order within the run is no reader's concern.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include <bpf/bpf.h>

#include "datapath/internal.h"

/* Past a hundred or so elements a batch call gains nothing more; this bounds the scratch buffers. */
#define BATCH_MAX 1024
/* A run this long is split: each half is at least a full batch call, next to which starting a thread
 * (tens of microseconds) is small. */
#define SPLIT_MIN (2 * BATCH_MAX)

/* One thread's part of a run: what it writes with, what it found, how far it got. */
struct lane_run {
	const int *fds;
	struct sm_bpf_lane *lane;
	bool single_calls; /* the writer's at the start; set when the kernel refuses a batch call */
	size_t calls;
	const struct sm_map_op *ops;
	size_t n, done;
	int err;
};

static int single_op(struct lane_run *run, const struct sm_map_op *op)
{
	int fd = run->fds[op->map];
	int err;

	run->calls++;
	if (op->kind == SM_OP_UPDATE)
		err = bpf_map_update_elem(fd, &op->key, op->value, BPF_ANY);
	else
		err = bpf_map_delete_elem(fd, &op->key);
	if (err && op->kind == SM_OP_DELETE && errno == ENOENT)
		return 0;
	return err ? -errno : 0;
}

/* Buffers for the first n lanes (1 or 2). */
static int reserve(struct sm_bpf_writer *writer, int n)
{
	for (; writer->lanes_ready < n; writer->lanes_ready++) {
		struct sm_bpf_lane *lane = &writer->lanes[writer->lanes_ready];
		lane->keys = malloc(BATCH_MAX * sizeof(union sm_map_key));
		lane->values = malloc(BATCH_MAX * sizeof(struct sm_service_value));
		if (!lane->keys || !lane->values) {
			free(lane->keys);
			free(lane->values);
			*lane = (struct sm_bpf_lane){ 0 };
			return -ENOMEM;
		}
	}
	return 0;
}

/* One batch call for ops[0..n) (same map, same kind, n <= BATCH_MAX). Returns 0 or -errno with *done set. */
static int batch_op(struct lane_run *run, const struct sm_map_op *ops, size_t n, size_t *done)
{
	enum sm_map_id map = ops[0].map;
	size_t key_size = sm_map_key_size(map), value_size = sm_map_value_size(map);
	LIBBPF_OPTS(bpf_map_batch_opts, opts, .elem_flags = BPF_ANY);
	__u32 count = (__u32)n;
	int err;

	for (size_t i = 0; i < n; i++) {
		memcpy((char *)run->lane->keys + i * key_size, &ops[i].key, key_size);
		if (ops[i].kind == SM_OP_UPDATE)
			memcpy((char *)run->lane->values + i * value_size, ops[i].value, value_size);
	}
	run->calls++;
	if (ops[0].kind == SM_OP_UPDATE)
		err = bpf_map_update_batch(run->fds[map], run->lane->keys, run->lane->values, &count, &opts);
	else
		err = bpf_map_delete_batch(run->fds[map], run->lane->keys, &count, &opts);
	*done = err ? count : n;
	return err ? -errno : 0;
}

/* ops[0..n) (same map, same kind), n <= BATCH_MAX: one batch call, or single calls where the kernel has none. */
static int apply_batch(struct lane_run *run, const struct sm_map_op *ops, size_t n, size_t *done)
{
	*done = 0;
	if (n == 1 || run->single_calls || !run->lane) {
		for (; *done < n; (*done)++) {
			int err = single_op(run, &ops[*done]);
			if (err)
				return err;
		}
		return 0;
	}
	while (*done < n) {
		size_t batch_done;
		int err = batch_op(run, ops + *done, n - *done, &batch_done);
		*done += batch_done;
		if (!err)
			continue;
		if ((err == -EINVAL || err == -EOPNOTSUPP || err == -ENOTSUPP) && batch_done == 0) {
			run->single_calls = true; /* an older kernel: no batch ops for this map type */
			size_t rest;
			err = apply_batch(run, ops + *done, n - *done, &rest);
			*done += rest;
			return err;
		}
		if (err != -ENOENT || ops[*done].kind != SM_OP_DELETE)
			return err;
		(*done)++; /* already gone: as good as deleted */
	}
	return 0;
}

/* run->ops[0..n) (same map, same kind) in batches on this thread; sets run->done and run->err. */
static void *apply_lane(void *arg)
{
	struct lane_run *run = arg;

	run->done = 0;
	run->err = 0;
	while (run->done < run->n && !run->err) {
		size_t len = run->n - run->done < BATCH_MAX ? run->n - run->done : BATCH_MAX, done;
		run->err = apply_batch(run, run->ops + run->done, len, &done);
		run->done += done;
	}
	return NULL;
}

/* Writes back what the map held before ops[0..n), last first (they took effect past a failure). */
static int put_back(struct lane_run *run, const struct sm_map_op *ops, size_t n)
{
	for (size_t i = n; i-- > 0;) {
		struct sm_map_op undo = { .map = ops[i].map, .kind = ops[i].before ? SM_OP_UPDATE : SM_OP_DELETE,
					  .key = ops[i].key, .value = ops[i].before };
		int err = single_op(run, &undo);
		if (err)
			return err;
	}
	return 0;
}

static size_t run_length(const struct sm_map_op *ops, size_t n)
{
	size_t len = 1;

	while (len < n && ops[len].map == ops[0].map && ops[len].kind == ops[0].kind)
		len++;
	return len;
}

/*
 * A run of ops on one map, of one kind, as if in order: a long one in two halves on two threads. When the
 * first half fails, what the second wrote is put back, so that only ops before *done took effect; -EIO when
 * that fails.
 */
static int apply_run(struct sm_bpf_writer *writer, const struct sm_map_op *ops, size_t n, size_t *done)
{
	bool batches = !writer->single_calls && !reserve(writer, 1);
	struct lane_run first = { .fds = writer->fds, .lane = batches ? &writer->lanes[0] : NULL,
				  .single_calls = writer->single_calls, .ops = ops, .n = n };
	struct lane_run second;
	pthread_t thread;
	bool split = batches && writer->two_lanes && n >= SPLIT_MIN && !reserve(writer, 2);

	if (split) {
		first.n = n / 2;
		second = (struct lane_run){ .fds = writer->fds, .lane = &writer->lanes[1], .ops = ops + first.n,
					    .n = n - first.n };
		split = pthread_create(&thread, NULL, apply_lane, &second) == 0;
		if (!split)
			first.n = n; /* no thread to be had: all of it here */
	}
	apply_lane(&first);
	*done = first.done;
	int err = first.err;
	if (split) {
		pthread_join(thread, NULL);
		if (!err) {
			*done += second.done;
			err = second.err;
		} else if (second.done && put_back(&first, second.ops, second.done)) {
			err = -EIO;
		}
	}
	writer->calls += first.calls + (split ? second.calls : 0);
	writer->single_calls = first.single_calls || (split && second.single_calls);
	return err;
}

static int bpf_writer_apply(struct sm_map_writer *base, const struct sm_map_op *ops, size_t n, size_t *applied)
{
	struct sm_bpf_writer *writer = (struct sm_bpf_writer *)base;

	for (*applied = 0; *applied < n;) {
		size_t len = run_length(ops + *applied, n - *applied), done;
		int err = apply_run(writer, ops + *applied, len, &done);
		*applied += done;
		if (err)
			return err;
	}
	return 0;
}

static bool may_use_two_cpus(void)
{
	cpu_set_t cpus;

	return sched_getaffinity(0, sizeof(cpus), &cpus) == 0 && CPU_COUNT(&cpus) >= 2;
}

void sm_bpf_writer_init(struct sm_bpf_writer *writer, const int fds[SM_MAP_COUNT])
{
	*writer = (struct sm_bpf_writer){ .writer = { .apply = bpf_writer_apply }, .two_lanes = may_use_two_cpus() };
	memcpy(writer->fds, fds, sizeof(writer->fds));
}

void sm_bpf_writer_release(struct sm_bpf_writer *writer)
{
	for (int i = 0; i < writer->lanes_ready; i++) {
		free(writer->lanes[i].keys);
		free(writer->lanes[i].values);
		writer->lanes[i] = (struct sm_bpf_lane){ 0 };
	}
	writer->lanes_ready = 0;
}
