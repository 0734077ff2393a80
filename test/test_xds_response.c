/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The in-place response reader against protobuf-c: the independent encoder's fixtures, a generated
 * mesh (the benchmarks' snapshot) and hand-made edge cases decode to the same fields, every cut and
 * flipped byte of a response gets the same verdict, and a model fed either decoding holds the same maps.
 */
#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "../bench/snapshot.h"
#include "helpers.h"
#include "wire_writer.h"
#include "response_diff.h"

/* Decodes bytes both ways; the reader must return want and agree with protobuf-c. */
static void assert_agrees(const uint8_t *bytes, size_t len, int want)
{
	char diff[512];
	int ret = diff_decode(bytes, len, diff, sizeof(diff));

	if (diff[0])
		fail_msg("%zu bytes: %s", len, diff);
	if (ret != want)
		fail_msg("%zu bytes: the reader returned %d, not %d", len, ret, want);
}

static void fixtures_agree(void **state)
{
	static const char *const names[] = {
		"wire/001-address-service-and-workload.bin",
		"wire/002-authorization.bin",
		"wire/003-address-removals.bin",
	};
	struct sm_stream_reader stream;
	const uint8_t *msg;
	char err[256];
	size_t len, frames = 0;

	(void)state;
	for (size_t i = 0; i < TEST_ARRAY_SIZE(names); i++) {
		uint8_t *bin = test_read_fixture(names[i], &len);
		assert_agrees(bin, len, 0);
		free(bin);
	}
	uint8_t *bytes = test_read_fixture("wire/stream.xds", &len);
	sm_stream_init(&stream, bytes, len);
	while (sm_stream_next(&stream, &msg, &len, err, sizeof(err)) == 0 && msg) {
		assert_agrees(msg, len, 0);
		frames++;
	}
	assert_int_equal(frames, 3);
	free(bytes);
}

/* ---- a response with every field of ours ---- */

static uint8_t *full_response(size_t *len)
{
	struct response r;
	static char *aliases[] = { "alias-a", "", "alias-c" };

	response_init(&r, SM_TYPE_URL_ADDRESS);
	r.msg.system_version_info = "sys-1";
	make_service(&r, 0);
	make_workload(&r, 0, 1, "v7", 3);
	response_add_raw(&r, "empty", "", SM_TYPE_URL_ADDRESS, "", 0);
	r.msg.resources[1]->n_aliases = TEST_ARRAY_SIZE(aliases);
	r.msg.resources[1]->aliases = aliases;
	response_remove(&r, "ns0/gone.ns0.svc.cluster.local");
	response_remove(&r, "");
	uint8_t *bytes = response_pack(&r, len);
	response_free(&r);
	return bytes;
}

static void full_response_agrees(void **state)
{
	size_t len;
	uint8_t *bytes = full_response(&len);

	(void)state;
	assert_agrees(bytes, len, 0);
	free(bytes);
}

/* ---- hand-made encodings ---- */

/* Unknown fields of every wire type protobuf-c skips. */
static void put_unknowns(struct wire *w)
{
	put_tag(w, 99, 0);
	put_varint(w, UINT64_MAX);
	put_tag(w, 98, 1);
	memset(w->b + w->n, 0xab, 8);
	w->n += 8;
	put_tag(w, 97, 5);
	memset(w->b + w->n, 0xcd, 4);
	w->n += 4;
	put_string(w, 96, "ignored");
}

static struct wire any_of(const char *type_url, const char *value)
{
	struct wire any = { .n = 0 };

	put_unknowns(&any);
	put_string(&any, 1, type_url);
	put_string(&any, 2, value);
	return any;
}

/* Strings given twice, empty ones, unknown fields at every level, a string that ends the buffer. */
static struct wire unusual_response(void)
{
	struct wire any = any_of("type.googleapis.com/x", "\x0a\x01y"), resource = { .n = 0 }, w = { .n = 0 };

	put_string(&resource, 3, "first-name");
	put_unknowns(&resource);
	put_message(&resource, 2, &any);
	put_string(&resource, 3, "last-name wins");
	put_string(&resource, 4, "");
	put_string(&resource, 1, "");
	put_string(&w, 5, "first nonce");
	put_unknowns(&w);
	put_message(&w, 2, &resource);
	put_string(&w, 6, "gone");
	put_message(&w, 2, &(struct wire){ .n = 0 }); /* a Resource with nothing in it */
	put_string(&w, 4, "");
	put_string(&w, 5, "a nonce at the very end"); /* no byte after it to terminate it in place */
	return w;
}

static void unusual_but_valid_forms_agree(void **state)
{
	struct wire w = unusual_response();

	(void)state;
	assert_agrees(w.b, 0, 0); /* the empty response */
	assert_agrees(w.b, w.n, 0);

	struct wire empty_value = any_of("t", ""), r2 = { .n = 0 }, w2 = { .n = 0 };
	put_message(&r2, 2, &empty_value);
	put_message(&w2, 2, &r2);
	assert_agrees(w2.b, w2.n, 0);
}

/* Every prefix, and every byte flipped in a few ways: the same verdict both ways. */
static void assert_cuts_and_flips_agree(uint8_t *bytes, size_t len)
{
	static const uint8_t masks[] = { 0x01, 0x02, 0x07, 0x80, 0xff };
	char diff[512];

	for (size_t cut = 0; cut < len; cut++) {
		diff_decode(bytes, cut, diff, sizeof(diff));
		if (diff[0])
			fail_msg("the first %zu of %zu bytes: %s", cut, len, diff);
	}
	for (size_t at = 0; at < len; at++) {
		for (size_t m = 0; m < TEST_ARRAY_SIZE(masks); m++) {
			bytes[at] ^= masks[m];
			diff_decode(bytes, len, diff, sizeof(diff));
			bytes[at] ^= masks[m];
			if (diff[0])
				fail_msg("byte %zu ^ 0x%02x: %s", at, masks[m], diff);
		}
	}
}

static void cut_and_flipped_bytes_agree(void **state)
{
	size_t len;
	uint8_t *bytes = full_response(&len);
	struct wire unusual = unusual_response();

	(void)state;
	assert_cuts_and_flips_agree(bytes, len);
	assert_cuts_and_flips_agree(unusual.b, unusual.n);
	free(bytes);
}

static void forms_left_to_protobuf_c(void **state)
{
	struct wire any = any_of("t", "v"), twice = { .n = 0 }, ttl = { .n = 0 }, cache = { .n = 0 }, w;

	(void)state;
	put_message(&twice, 2, &any);
	put_message(&twice, 2, &any);
	put_message(&ttl, 6, &(struct wire){ .b = { 0x08, 0x01 }, .n = 2 });
	put_message(&cache, 7, &(struct wire){ .b = { 0x08, 0x01 }, .n = 2 });
	const struct wire *resources[] = { &twice, &ttl, &cache };
	for (size_t i = 0; i < TEST_ARRAY_SIZE(resources); i++) {
		w = (struct wire){ .n = 0 };
		put_message(&w, 2, resources[i]);
		assert_agrees(w.b, w.n, -ENOTSUP);
	}
	/* field number 0, and a field number of five bytes (1 << 25) */
	assert_agrees((const uint8_t[]){ 0x00, 0x01 }, 2, -ENOTSUP);
	w = (struct wire){ .n = 0 };
	put_tag(&w, 1u << 25, 0);
	put_varint(&w, 1);
	assert_agrees(w.b, w.n, -ENOTSUP);
	/* a length of five bytes */
	assert_agrees((const uint8_t[]){ 0x2a, 0x81, 0x80, 0x80, 0x80, 0x00, 'x' }, 7, -ENOTSUP);
}

static void what_protobuf_c_refuses(void **state)
{
	struct wire w;

	(void)state;
	assert_agrees((const uint8_t[]){ 0x2b }, 1, -EBADMSG);		  /* wire type 3 (a group) */
	assert_agrees((const uint8_t[]){ 0x2e, 0x00 }, 2, -EBADMSG);	  /* wire type 6 */
	assert_agrees((const uint8_t[]){ 0x28, 0x01 }, 2, -EBADMSG);	  /* nonce as a varint */
	assert_agrees((const uint8_t[]){ 0x15, 0, 0, 0, 0 }, 5, -EBADMSG); /* resources as fixed32 */
	assert_agrees((const uint8_t[]){ 0x2a, 0x05, 'x' }, 3, -EBADMSG);  /* a length past the end */
	assert_agrees((const uint8_t[]){ 0xa8, 0x80 }, 2, -EBADMSG);	  /* a cut tag */
	assert_agrees((const uint8_t[]){ 0x98, 0x06, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01 },
		      13, -EBADMSG); /* an unknown varint of 11 bytes */
	assert_agrees((const uint8_t[]){ 0x99, 0x06, 1, 2, 3, 4, 5, 6, 7 }, 9, -EBADMSG); /* a fixed64 a byte short */
	assert_agrees((const uint8_t[]){ 0x9d, 0x06, 1, 2, 3 }, 5, -EBADMSG);		/* a fixed32 a byte short */
	/* inside a Resource and its Any */
	w = (struct wire){ .n = 0 };
	put_message(&w, 2, &(struct wire){ .b = { 0x10, 0x01 }, .n = 2 }); /* the Any as a varint */
	assert_agrees(w.b, w.n, -EBADMSG);
	w = (struct wire){ .n = 0 };
	struct wire bad_any = { .b = { 0x11, 0, 0, 0, 0, 0, 0, 0, 0 }, .n = 9 }, resource = { .n = 0 }; /* value as fixed64 */
	put_message(&resource, 2, &bad_any);
	put_message(&w, 2, &resource);
	assert_agrees(w.b, w.n, -EBADMSG);
	w = (struct wire){ .n = 0 };
	put_message(&w, 2, &(struct wire){ .b = { 0x3d, 0, 0, 0, 0 }, .n = 5 }); /* cache_control as fixed32 */
	assert_agrees(w.b, w.n, -EBADMSG);
}

/* ---- a generated mesh, and what a model makes of it ---- */

static int null_apply(struct sm_map_writer *writer, const struct sm_map_op *ops, size_t n, size_t *applied)
{
	(void)writer;
	(void)ops;
	*applied = n;
	return 0;
}

static struct sm_model *model_of(const diff_response *response, size_t *rejected)
{
	struct sm_map_writer writer = { .apply = null_apply };
	struct sm_model_options options = { .node_name = "node-7" };
	struct sm_rejections rejections = { 0 };
	struct sm_model *model;

	assert_int_equal(sm_model_new(&options, &model), 0);
	assert_int_equal(sm_model_apply(model, response, &writer, &rejections), 0);
	*rejected = rejections.count;
	sm_rejections_clear(&rejections);
	return model;
}

static void generated_mesh_agrees_and_models_alike(void **state)
{
	struct sm_pb_arena arena;
	ProtobufCMessage *expected;
	diff_response *got;
	char err[256], diff[512];
	size_t len, rejected_got, rejected_expected;
	uint8_t *bytes = make_snapshot(2000, 200, &len);

	(void)state;
	assert_agrees(bytes, len, 0);
	assert_int_equal(sm_pb_decode(&envoy__service__discovery__v3__delta_discovery_response__descriptor, bytes, len,
				      &expected, err, sizeof(err)), 0);
	sm_pb_arena_init(&arena);
	assert_int_equal(sm_xds_response_read(&arena, bytes, len, &got), 0);
	struct sm_model *a = model_of(got, &rejected_got), *b = model_of((const diff_response *)expected, &rejected_expected);
	assert_int_equal(rejected_got, 0);
	assert_int_equal(rejected_expected, 0);
	if (!sm_image_equivalent(sm_model_image(a), sm_model_image(b), diff, sizeof(diff)))
		fail_msg("the models' maps differ: %s", diff);
	sm_model_free(a);
	sm_model_free(b);
	sm_pb_arena_release(&arena);
	protobuf_c_message_free_unpacked(expected, NULL);
	free(bytes);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(fixtures_agree),
		cmocka_unit_test(full_response_agrees),
		cmocka_unit_test(cut_and_flipped_bytes_agree),
		cmocka_unit_test(unusual_but_valid_forms_agree),
		cmocka_unit_test(forms_left_to_protobuf_c),
		cmocka_unit_test(what_protobuf_c_refuses),
		cmocka_unit_test(generated_mesh_agrees_and_models_alike),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
