/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Writing the workload model's plan into BPF maps. The plan is already ordered so that a reader never
 * meets a dangling reference; the writer keeps that order and only groups consecutive ops on one map
 * into batch calls, which cost a third of single updates per element on this kernel.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <bpf/bpf.h>

#include "datapath/internal.h"

/* Past a hundred or so elements a batch call gains nothing more; this bounds the scratch buffers. */
#define BATCH_MAX 1024

static int single_op(struct sm_bpf_writer *writer, const struct sm_map_op *op)
{
	int fd = writer->fds[op->map];
	int err;

	writer->calls++;
	if (op->kind == SM_OP_UPDATE)
		err = bpf_map_update_elem(fd, &op->key, op->value, BPF_ANY);
	else
		err = bpf_map_delete_elem(fd, &op->key);
	if (err && op->kind == SM_OP_DELETE && errno == ENOENT)
		return 0;
	return err ? -errno : 0;
}

static int reserve(struct sm_bpf_writer *writer)
{
	if (writer->batch_capacity)
		return 0;
	writer->keys = malloc(BATCH_MAX * sizeof(union sm_map_key));
	writer->values = malloc(BATCH_MAX * sizeof(struct sm_service_value));
	if (!writer->keys || !writer->values) {
		free(writer->keys);
		free(writer->values);
		writer->keys = NULL;
		writer->values = NULL;
		return -ENOMEM;
	}
	writer->batch_capacity = BATCH_MAX;
	return 0;
}

/* One batch call for ops[0..n) (same map, same kind). Returns 0 or -errno with *done set. */
static int batch_op(struct sm_bpf_writer *writer, const struct sm_map_op *ops, size_t n, size_t *done)
{
	enum sm_map_id map = ops[0].map;
	size_t key_size = sm_map_key_size(map), value_size = sm_map_value_size(map);
	LIBBPF_OPTS(bpf_map_batch_opts, opts, .elem_flags = BPF_ANY);
	__u32 count = (__u32)n;
	int err;

	for (size_t i = 0; i < n; i++) {
		memcpy((char *)writer->keys + i * key_size, &ops[i].key, key_size);
		if (ops[i].kind == SM_OP_UPDATE)
			memcpy((char *)writer->values + i * value_size, ops[i].value, value_size);
	}
	writer->calls++;
	if (ops[0].kind == SM_OP_UPDATE)
		err = bpf_map_update_batch(writer->fds[map], writer->keys, writer->values, &count, &opts);
	else
		err = bpf_map_delete_batch(writer->fds[map], writer->keys, &count, &opts);
	*done = err ? count : n;
	return err ? -errno : 0;
}

static size_t run_length(const struct sm_map_op *ops, size_t n)
{
	size_t len = 1;

	while (len < n && len < BATCH_MAX && ops[len].map == ops[0].map && ops[len].kind == ops[0].kind)
		len++;
	return len;
}

static int apply_run(struct sm_bpf_writer *writer, const struct sm_map_op *ops, size_t n, size_t *done)
{
	*done = 0;
	if (n == 1 || writer->single_calls || reserve(writer)) {
		for (; *done < n; (*done)++) {
			int err = single_op(writer, &ops[*done]);
			if (err)
				return err;
		}
		return 0;
	}
	while (*done < n) {
		size_t batch_done;
		int err = batch_op(writer, ops + *done, n - *done, &batch_done);
		*done += batch_done;
		if (!err)
			continue;
		if ((err == -EINVAL || err == -EOPNOTSUPP || err == -ENOTSUPP) && batch_done == 0) {
			writer->single_calls = true; /* an older kernel: no batch ops for this map type */
			size_t rest;
			err = apply_run(writer, ops + *done, n - *done, &rest);
			*done += rest;
			return err;
		}
		if (err != -ENOENT || ops[*done].kind != SM_OP_DELETE)
			return err;
		(*done)++; /* already gone: as good as deleted */
	}
	return 0;
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

void sm_bpf_writer_init(struct sm_bpf_writer *writer, const int fds[SM_MAP_COUNT])
{
	*writer = (struct sm_bpf_writer){ .writer = { .apply = bpf_writer_apply } };
	memcpy(writer->fds, fds, sizeof(writer->fds));
}

void sm_bpf_writer_release(struct sm_bpf_writer *writer)
{
	free(writer->keys);
	free(writer->values);
	writer->keys = writer->values = NULL;
	writer->batch_capacity = 0;
}
