/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The wire layer against fixtures encoded by an independent encoder: every field decodes and prints as
 * protobuf's canonical JSON; the recorded stream frames; and no cut or flipped byte crashes anything.
 */
#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <unistd.h>

#include "google/protobuf/duration.pb-c.h"
#include "google/protobuf/struct.pb-c.h"
#include "google/protobuf/wrappers.pb-c.h"
#include "helpers.h"
#include "proto/proto.h"

static const char *const fixture_names[] = {
	"wire/001-address-service-and-workload",
	"wire/002-authorization",
	"wire/003-address-removals",
};

static ProtobufCMessage *decode_response(const uint8_t *buf, size_t len, char *err, size_t err_size)
{
	ProtobufCMessage *msg = NULL;

	if (sm_pb_decode(&envoy__service__discovery__v3__delta_discovery_response__descriptor, buf, len,
			 &msg, err, err_size))
		return NULL;
	return msg;
}

static void fixture_prints_its_json(void **state)
{
	const char *name = *state;
	char path[256], err[256];
	size_t len;

	snprintf(path, sizeof(path), "%s.bin", name);
	uint8_t *bin = test_read_fixture(path, &len);
	ProtobufCMessage *msg = decode_response(bin, len, err, sizeof(err));
	if (!msg)
		fail_msg("%s: %s", path, err);

	snprintf(path, sizeof(path), "%s/%s.json", SM_FIXTURES_DIR, name);
	json_error_t json_err;
	json_t *expected = json_load_file(path, 0, &json_err);
	if (!expected)
		fail_msg("%s: %s", path, json_err.text);
	json_t *actual = sm_pb_to_json(msg);
	assert_non_null(actual);
	if (!json_equal(expected, actual)) {
		char *text = json_dumps(actual, JSON_INDENT(1) | JSON_SORT_KEYS);
		fail_msg("%s: printed JSON differs from the fixture:\n%s", name, text);
	}

	json_decref(actual);
	json_decref(expected);
	protobuf_c_message_free_unpacked(msg, NULL);
	free(bin);
}

static void stream_holds_the_three_fixtures(void **state)
{
	(void)state;
	char err[256];
	size_t len;
	uint8_t *stream = test_read_fixture("wire/stream.xds", &len);
	struct sm_stream_reader reader;
	const uint8_t *msg;
	size_t msg_len;

	sm_stream_init(&reader, stream, len);
	for (size_t i = 0; i < TEST_ARRAY_SIZE(fixture_names); i++) {
		char path[256];
		size_t bin_len;
		snprintf(path, sizeof(path), "%s.bin", fixture_names[i]);
		uint8_t *bin = test_read_fixture(path, &bin_len);

		assert_int_equal(sm_stream_next(&reader, &msg, &msg_len, err, sizeof(err)), 0);
		assert_non_null(msg);
		assert_int_equal(msg_len, bin_len);
		assert_memory_equal(msg, bin, bin_len);
		free(bin);
	}
	assert_int_equal(sm_stream_next(&reader, &msg, &msg_len, err, sizeof(err)), 0);
	assert_null(msg);
	free(stream);
}

static void stream_file_round_trips(void **state)
{
	(void)state;
	char path[] = "/tmp/sm-test-stream-XXXXXX";
	char err[256];
	size_t len;
	uint8_t *stream = test_read_fixture("wire/stream.xds", &len);
	int fd = mkstemp(path);
	struct sm_stream_reader in, out;
	const uint8_t *msg;
	size_t msg_len;

	assert_true(fd >= 0);
	sm_stream_init(&in, stream, len);
	while (sm_stream_next(&in, &msg, &msg_len, err, sizeof(err)) == 0 && msg)
		assert_int_equal(sm_stream_append(fd, msg, msg_len), 0);
	close(fd);

	assert_int_equal(sm_stream_open(&out, path, err, sizeof(err)), 0);
	assert_int_equal(out.size, len);
	assert_memory_equal(out.data, stream, len);
	sm_stream_close(&out);
	unlink(path);
	free(stream);

	assert_int_equal(sm_stream_open(&out, "/nonexistent/stream.xds", err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "/nonexistent/stream.xds"));
}

/* Decodes, prints (which decodes every Any inside) and frees; a failure must say why. */
static void decode_and_print_or_explain(const uint8_t *buf, size_t len)
{
	char err[256] = "";
	ProtobufCMessage *msg = decode_response(buf, len, err, sizeof(err));

	if (!msg) {
		assert_true(strlen(err) > 0);
		return;
	}
	json_t *json = sm_pb_to_json(msg);
	assert_non_null(json);
	json_decref(json);
	protobuf_c_message_free_unpacked(msg, NULL);
}

static void every_cut_decodes_or_explains(void **state)
{
	(void)state;
	for (size_t f = 0; f < TEST_ARRAY_SIZE(fixture_names); f++) {
		char path[256];
		size_t len;
		snprintf(path, sizeof(path), "%s.bin", fixture_names[f]);
		uint8_t *bin = test_read_fixture(path, &len);

		for (size_t cut = 0; cut < len; cut++) {
			/* A copy of exactly cut bytes, so ASan sees any read past the end. */
			uint8_t *prefix = malloc(cut ? cut : 1);
			memcpy(prefix, bin, cut);
			decode_and_print_or_explain(prefix, cut);
			free(prefix);
		}
		free(bin);
	}
}

static void every_stream_cut_is_reported(void **state)
{
	(void)state;
	size_t len;
	uint8_t *stream = test_read_fixture("wire/stream.xds", &len);
	size_t boundaries[8], n_boundaries = 0;
	struct sm_stream_reader reader;
	const uint8_t *msg;
	size_t msg_len;
	char err[256];

	sm_stream_init(&reader, stream, len);
	boundaries[n_boundaries++] = 0;
	while (sm_stream_next(&reader, &msg, &msg_len, err, sizeof(err)) == 0 && msg)
		boundaries[n_boundaries++] = reader.offset;

	for (size_t cut = 0; cut < len; cut++) {
		uint8_t *prefix = malloc(cut ? cut : 1);
		bool at_boundary = false;
		int ret;

		memcpy(prefix, stream, cut);
		for (size_t b = 0; b < n_boundaries; b++)
			at_boundary |= boundaries[b] == cut;
		sm_stream_init(&reader, prefix, cut);
		err[0] = 0;
		while ((ret = sm_stream_next(&reader, &msg, &msg_len, err, sizeof(err))) == 0 && msg)
			decode_and_print_or_explain(msg, msg_len);
		if (at_boundary) {
			assert_int_equal(ret, 0);
		} else {
			assert_int_equal(ret, -EBADMSG);
			assert_non_null(strstr(err, "at byte"));
		}
		free(prefix);
	}
	free(stream);
}

static void every_flipped_byte_decodes_or_explains(void **state)
{
	(void)state;
	static const uint8_t masks[] = { 0xff, 0x80, 0x7f, 0x01, 0x40 };

	for (size_t f = 0; f < TEST_ARRAY_SIZE(fixture_names); f++) {
		char path[256];
		size_t len;
		snprintf(path, sizeof(path), "%s.bin", fixture_names[f]);
		uint8_t *bin = test_read_fixture(path, &len);

		for (size_t pos = 0; pos < len; pos++) {
			for (size_t m = 0; m < TEST_ARRAY_SIZE(masks); m++) {
				uint8_t *copy = malloc(len);
				memcpy(copy, bin, len);
				copy[pos] ^= masks[m];
				decode_and_print_or_explain(copy, len);
				free(copy);
			}
		}
		free(bin);
	}
}

static void decode_errors_name_field_and_offset(void **state)
{
	(void)state;
	char err[256];
	/* resources (field 2) claims 100 bytes but 2 follow. */
	static const uint8_t overrun[] = { 0x12, 0x64, 0x0a, 0x00 };
	/* type_url (field 4) with the varint wire type. */
	static const uint8_t wrong_wire[] = { 0x20, 0x01 };
	/* A resource whose name (field 3) is cut short, nested inside resources. */
	static const uint8_t nested[] = { 0x12, 0x03, 0x1a, 0x05, 0x61 };

	assert_null(decode_response(overrun, sizeof(overrun), err, sizeof(err)));
	assert_string_equal(err,
			    "DeltaDiscoveryResponse.resources: length 100 at byte 0 runs past the end (2 bytes left)");
	assert_null(decode_response(wrong_wire, sizeof(wrong_wire), err, sizeof(err)));
	assert_string_equal(err, "DeltaDiscoveryResponse.type_url: wire type 0 does not fit the field's type, at byte 0");
	assert_null(decode_response(nested, sizeof(nested), err, sizeof(err)));
	assert_string_equal(err, "DeltaDiscoveryResponse.resources.name: length 5 at byte 2 runs past the end (1 bytes left)");
}

static void method_path_matches_descriptor(void **state)
{
	(void)state;
	const ProtobufCServiceDescriptor *ads =
		&envoy__service__discovery__v3__aggregated_discovery_service__descriptor;
	const ProtobufCMethodDescriptor *delta =
		protobuf_c_service_descriptor_get_method_by_name(ads, "DeltaAggregatedResources");
	char path[256];

	assert_non_null(delta);
	snprintf(path, sizeof(path), "/%s/%s", ads->name, delta->name);
	assert_string_equal(path, SM_DELTA_ADS_METHOD);
	assert_ptr_equal(sm_pb_find_type(SM_TYPE_URL_ADDRESS), &istio__workload__address__descriptor);
	assert_ptr_equal(sm_pb_find_type(SM_TYPE_URL_AUTHORIZATION), &istio__security__authorization__descriptor);
	assert_null(sm_pb_find_type("type.googleapis.com/istio.workload.Nope"));
}

static void assert_json_text(json_t *json, const char *expected_text)
{
	json_error_t err;
	json_t *expected = json_loads(expected_text, JSON_DECODE_ANY, &err);

	assert_non_null(expected);
	assert_non_null(json);
	if (!json_equal(json, expected)) {
		char *text = json_dumps(json, JSON_ENCODE_ANY | JSON_SORT_KEYS);
		fail_msg("got %s, want %s", text, expected_text);
	}
	json_decref(expected);
	json_decref(json);
}

static void well_known_types_print_in_their_json_forms(void **state)
{
	(void)state;
	Google__Protobuf__Value number = GOOGLE__PROTOBUF__VALUE__INIT, text = GOOGLE__PROTOBUF__VALUE__INIT,
				null_value = GOOGLE__PROTOBUF__VALUE__INIT, list_value = GOOGLE__PROTOBUF__VALUE__INIT;
	Google__Protobuf__ListValue list = GOOGLE__PROTOBUF__LIST_VALUE__INIT;
	Google__Protobuf__Struct__FieldsEntry entries[3] = {
		GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT, GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT,
		GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT
	};
	Google__Protobuf__Struct__FieldsEntry *entry_ptrs[3] = { &entries[0], &entries[1], &entries[2] };
	Google__Protobuf__Value *items[2] = { &number, &null_value };
	Google__Protobuf__Struct metadata = GOOGLE__PROTOBUF__STRUCT__INIT;
	Envoy__Service__Discovery__V3__Node node = ENVOY__SERVICE__DISCOVERY__V3__NODE__INIT;

	number.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE;
	number.number_value = 2.5;
	text.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
	text.string_value = "ztunnel";
	null_value.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NULL_VALUE;
	list.n_values = 2;
	list.values = items;
	list_value.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE;
	list_value.list_value = &list;
	entries[0].key = "NAME", entries[0].value = &text;
	entries[1].key = "RATIO", entries[1].value = &number;
	entries[2].key = "LIST", entries[2].value = &list_value;
	metadata.n_fields = 3;
	metadata.fields = entry_ptrs;
	node.id = "ztunnel~10.0.0.1~a.b~b.svc.cluster.local";
	node.metadata = &metadata;
	assert_json_text(sm_pb_to_json(&node.base),
			 "{\"id\":\"ztunnel~10.0.0.1~a.b~b.svc.cluster.local\","
			 "\"metadata\":{\"NAME\":\"ztunnel\",\"RATIO\":2.5,\"LIST\":[2.5,null]}}");

	Google__Protobuf__Duration ttl = GOOGLE__PROTOBUF__DURATION__INIT;
	Envoy__Service__Discovery__V3__Resource resource = ENVOY__SERVICE__DISCOVERY__V3__RESOURCE__INIT;
	ttl.seconds = 3;
	ttl.nanos = 500000000;
	resource.ttl = &ttl;
	resource.name = "bad\xff\xfename";
	assert_json_text(sm_pb_to_json(&resource.base), "{\"ttl\":\"3.500s\",\"name\":\"bad\\ufffd\\ufffdname\"}");

	Google__Protobuf__UInt32Value zero = GOOGLE__PROTOBUF__UINT32_VALUE__INIT;
	Istio__Workload__Workload workload = ISTIO__WORKLOAD__WORKLOAD__INIT;
	workload.capacity = &zero;
	workload.status = 7; /* not a known WorkloadStatus: printed as its number */
	assert_json_text(sm_pb_to_json(&workload.base), "{\"capacity\":0,\"status\":7}");

	Istio__Workload__NetworkAddress address = ISTIO__WORKLOAD__NETWORK_ADDRESS__INIT;
	address.optional_length_case = ISTIO__WORKLOAD__NETWORK_ADDRESS__OPTIONAL_LENGTH_LENGTH;
	assert_json_text(sm_pb_to_json(&address.base), "{\"length\":0}");
}

static void any_of_unknown_type_keeps_its_bytes(void **state)
{
	(void)state;
	uint8_t raw[] = { 1, 2, 3 };
	Google__Protobuf__Any config = GOOGLE__PROTOBUF__ANY__INIT;
	Istio__Workload__Extension extension = ISTIO__WORKLOAD__EXTENSION__INIT;

	config.type_url = "type.googleapis.com/example.Unknown";
	config.value = (ProtobufCBinaryData){ .len = sizeof(raw), .data = raw };
	extension.name = "x";
	extension.config = &config;
	assert_json_text(sm_pb_to_json(&extension.base),
			 "{\"name\":\"x\",\"config\":{\"@type\":\"type.googleapis.com/example.Unknown\","
			 "\"value\":\"AQID\"}}");
}

static void any_nested_deeply_stays_bounded(void **state)
{
	(void)state;
	/* Extension{config: Any{Extension{config: Any{...}}}} nested 2,000 deep. */
	size_t depth = 2000;
	uint8_t *packed = NULL;
	size_t packed_len = 0;

	for (size_t i = 0; i < depth; i++) {
		Google__Protobuf__Any any = GOOGLE__PROTOBUF__ANY__INIT;
		Istio__Workload__Extension extension = ISTIO__WORKLOAD__EXTENSION__INIT;
		any.type_url = "type.googleapis.com/istio.workload.Extension";
		any.value = (ProtobufCBinaryData){ .len = packed_len, .data = packed };
		extension.name = "e";
		extension.config = i ? &any : NULL;
		size_t len = protobuf_c_message_get_packed_size(&extension.base);
		uint8_t *next = malloc(len);
		protobuf_c_message_pack(&extension.base, next);
		free(packed);
		packed = next;
		packed_len = len;
	}
	ProtobufCMessage *msg = NULL;
	char err[256];
	assert_int_equal(sm_pb_decode(&istio__workload__extension__descriptor, packed, packed_len, &msg,
				      err, sizeof(err)), 0);
	json_t *json = sm_pb_to_json(msg);
	assert_non_null(json);
	json_decref(json);
	protobuf_c_message_free_unpacked(msg, NULL);
	free(packed);
}

int main(void)
{
	struct CMUnitTest tests[] = {
		{ "fixture 001 prints its JSON", fixture_prints_its_json, NULL, NULL, (void *)fixture_names[0] },
		{ "fixture 002 prints its JSON", fixture_prints_its_json, NULL, NULL, (void *)fixture_names[1] },
		{ "fixture 003 prints its JSON", fixture_prints_its_json, NULL, NULL, (void *)fixture_names[2] },
		cmocka_unit_test(stream_holds_the_three_fixtures),
		cmocka_unit_test(stream_file_round_trips),
		cmocka_unit_test(every_cut_decodes_or_explains),
		cmocka_unit_test(every_stream_cut_is_reported),
		cmocka_unit_test(every_flipped_byte_decodes_or_explains),
		cmocka_unit_test(decode_errors_name_field_and_offset),
		cmocka_unit_test(method_path_matches_descriptor),
		cmocka_unit_test(well_known_types_print_in_their_json_forms),
		cmocka_unit_test(any_of_unknown_type_keeps_its_bytes),
		cmocka_unit_test(any_nested_deeply_stays_bounded),
	};

	return cmocka_run_group_tests_name("wire", tests, NULL, NULL);
}
