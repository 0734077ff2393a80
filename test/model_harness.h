/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A workload model writing into an image that stands in for the kernel's maps. The image writer checks
 * the reader's invariants after every single write; after each response, the kernel image, the model's
 * image and an image built from scratch must agree.
 */
#ifndef SOCKMESH_TEST_MODEL_HARNESS_H
#define SOCKMESH_TEST_MODEL_HARNESS_H

#include <string.h>

#include "builders.h"
#include "helpers.h"
#include "workload/workload.h"

/* The responses of a recorded-stream fixture: exactly n frames, each decoding, then a clean end. */
static inline void fixture_responses(const char *relative, ProtobufCMessage **out, size_t n)
{
	size_t len, msg_len;
	uint8_t *stream = test_read_fixture(relative, &len);
	struct sm_stream_reader reader;
	const uint8_t *msg;
	char err[256];

	sm_stream_init(&reader, stream, len);
	for (size_t i = 0; i < n; i++) {
		if (sm_stream_next(&reader, &msg, &msg_len, err, sizeof(err)) || !msg)
			fail_msg("%s: frame %zu: %s", relative, i, msg ? err : "the stream ended");
		if (sm_pb_decode(&envoy__service__discovery__v3__delta_discovery_response__descriptor, msg, msg_len,
				 &out[i], err, sizeof(err)))
			fail_msg("%s: frame %zu: %s", relative, i, err);
	}
	assert_int_equal(sm_stream_next(&reader, &msg, &msg_len, err, sizeof(err)), 0);
	assert_null(msg);
	free(stream);
}

struct harness {
	struct sm_model *model;
	struct sm_image *kernel;
	struct sm_image_writer writer;
	struct sm_rejections rejections;
};

/* Whether the last response rejected name with a reason containing reason_part ("" for any). */
static inline bool has_rejection(const struct harness *h, const char *name, const char *reason_part)
{
	for (size_t i = 0; i < h->rejections.count; i++) {
		if (strcmp(h->rejections.items[i].name, name) == 0 && strstr(h->rejections.items[i].reason, reason_part))
			return true;
	}
	return false;
}

static inline void harness_open(struct harness *h, const char *node, const uint32_t *capacity)
{
	struct sm_model_options options = { .node_name = node };

	if (capacity)
		memcpy(options.capacity, capacity, sizeof(options.capacity));
	*h = (struct harness){ 0 };
	assert_int_equal(sm_model_new(&options, &h->model), 0);
	assert_int_equal(sm_image_new(&h->kernel), 0);
	sm_image_writer_init(&h->writer, h->kernel);
	h->writer.check_each_write = true;
}

static inline void harness_close(struct harness *h)
{
	sm_rejections_clear(&h->rejections);
	sm_model_free(h->model);
	sm_image_free(h->kernel);
}

/* The kernel's maps, the model's image and a from-scratch image must all agree. */
static inline void assert_consistent(struct harness *h)
{
	struct sm_image *scratch;
	char diff[256], err[256];

	if (h->writer.check_error[0])
		fail_msg("a write left a dangling reference: %s", h->writer.check_error);
	if (sm_image_check(h->kernel, err, sizeof(err)))
		fail_msg("kernel maps: %s", err);
	if (!sm_image_equivalent(h->kernel, sm_model_image(h->model), diff, sizeof(diff)))
		fail_msg("kernel maps and the model's image differ: %s", diff);
	assert_int_equal(sm_model_build_image(h->model, &scratch), 0);
	if (!sm_image_equivalent(scratch, sm_model_image(h->model), diff, sizeof(diff)))
		fail_msg("incremental and from-scratch images differ: %s", diff);
	sm_image_free(scratch);
}

static inline void apply(struct harness *h, struct response *r)
{
	sm_rejections_clear(&h->rejections);
	assert_int_equal(sm_model_apply(h->model, &r->msg, &h->writer.writer, &h->rejections), 0);
	assert_consistent(h);
	response_free(r);
}

static inline void apply_ok(struct harness *h, struct response *r)
{
	apply(h, r);
	if (h->rejections.count) {
		char *text = sm_rejections_format(&h->rejections);
		fail_msg("unexpected rejections: %s", text);
	}
}

static inline void apply_workloads(struct harness *h, const struct workload_spec *specs, size_t n)
{
	struct response r;

	response_init(&r, SM_TYPE_URL_ADDRESS);
	for (size_t i = 0; i < n; i++)
		response_add_workload(&r, &specs[i], "v1");
	apply_ok(h, &r);
}

static inline void apply_service(struct harness *h, const struct service_spec *spec)
{
	struct response r;

	response_init(&r, SM_TYPE_URL_ADDRESS);
	response_add_service(&r, spec, "v1");
	apply_ok(h, &r);
}

static inline void remove_names(struct harness *h, const char *const *names, size_t n)
{
	struct response r;

	response_init(&r, SM_TYPE_URL_ADDRESS);
	for (size_t i = 0; i < n; i++)
		response_remove(&r, names[i]);
	apply_ok(h, &r);
}

#endif
