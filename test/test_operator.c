/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What an operator reads, without a kernel: the node variables reported missing, the IP-text addresses
 * of 'sockmesh print' (and the exact proto3 JSON beside them), and the names 'sockmesh dump' takes from a
 * /config_dump, checked against the name hashes the model really writes into the maps.
 */
#include <string.h>

#include "agent/dump_names.h"
#include "helpers.h"
#include "proto/proto.h"
#include "workload/workload.h"
#include "xds/xds.h"

/* ---- node identity ---- */

static void missing_variables_are_named(void **state)
{
	(void)state;
	struct sm_xds_node node = { 0 };
	char out[128];

	assert_int_equal(sm_xds_node_from_env(&node, (char *[]){ "CLUSTER_ID=c1", NULL }), 0);
	assert_int_equal(sm_xds_node_missing(&node, out, sizeof(out)), 4);
	assert_string_equal(out, "INSTANCE_IP, POD_NAME, POD_NAMESPACE, NODE_NAME");
	sm_xds_node_clear(&node);

	/* an empty value is as good as none: the id would still degenerate */
	assert_int_equal(sm_xds_node_from_env(&node, (char *[]){ "POD_NAME=p", "POD_NAMESPACE=", "INSTANCE_IP=10.0.0.1",
							      "NODE_NAME=n", NULL }),
			 0);
	assert_int_equal(sm_xds_node_missing(&node, out, sizeof(out)), 1);
	assert_string_equal(out, "POD_NAMESPACE");
	sm_xds_node_clear(&node);

	assert_int_equal(sm_xds_node_from_env(&node, (char *[]){ "POD_NAME=p", "POD_NAMESPACE=ns", "INSTANCE_IP=10.0.0.1",
							      "NODE_NAME=n", NULL }),
			 0);
	assert_int_equal(sm_xds_node_missing(&node, out, sizeof(out)), 0);
	assert_string_equal(out, "");
	sm_xds_node_clear(&node);
}

static void missing_variables_fit_a_short_buffer(void **state)
{
	(void)state;
	struct sm_xds_node node = { 0 };
	char out[10];

	assert_int_equal(sm_xds_node_missing(&node, out, sizeof(out)), 4);
	assert_string_equal(out, "INSTANCE_");
	assert_int_equal(sm_xds_node_missing(&node, NULL, 0), 4);
}

/* ---- addresses as IP text ---- */

static json_t *workload_json(const char *const *ip_fields)
{
	uint8_t v4[4] = { 10, 0, 0, 1 }, v6[16] = { 0xfd, 0, [15] = 2 }, odd[3] = { 1, 2, 3 };
	ProtobufCBinaryData addresses[] = { { 4, v4 }, { 16, v6 }, { 3, odd } };
	Istio__Workload__NetworkAddress waypoint_address = ISTIO__WORKLOAD__NETWORK_ADDRESS__INIT;
	Istio__Workload__GatewayAddress waypoint = ISTIO__WORKLOAD__GATEWAY_ADDRESS__INIT;
	Istio__Workload__Workload workload = ISTIO__WORKLOAD__WORKLOAD__INIT;

	waypoint_address.address = (ProtobufCBinaryData){ 16, v6 };
	waypoint.destination_case = ISTIO__WORKLOAD__GATEWAY_ADDRESS__DESTINATION_ADDRESS;
	waypoint.address = &waypoint_address;
	workload.uid = "u";
	workload.n_addresses = 3;
	workload.addresses = addresses;
	workload.waypoint = &waypoint;
	return sm_pb_to_json_ips(&workload.base, ip_fields);
}

static void print_shows_addresses_as_ip_text(void **state)
{
	(void)state;
	json_t *json = workload_json(sm_pb_ip_fields);
	char *text = json_dumps(json, JSON_COMPACT | JSON_PRESERVE_ORDER);

	assert_string_equal(text, "{\"addresses\":[\"10.0.0.1\",\"fd00::2\",\"AQID\"],"
				  "\"waypoint\":{\"address\":{\"address\":\"fd00::2\"}},\"uid\":\"u\"}");
	free(text);
	json_decref(json);
}

static void proto3_json_keeps_base64(void **state)
{
	(void)state;
	json_t *ips = workload_json(NULL);
	char *text = json_dumps(ips, JSON_COMPACT | JSON_PRESERVE_ORDER);

	assert_string_equal(text, "{\"addresses\":[\"CgAAAQ==\",\"/QAAAAAAAAAAAAAAAAAAAg==\",\"AQID\"],"
				  "\"waypoint\":{\"address\":{\"address\":\"/QAAAAAAAAAAAAAAAAAAAg==\"}},\"uid\":\"u\"}");
	free(text);
	json_decref(ips);
}

static void cidr_addresses_inside_any_are_ip_text(void **state)
{
	(void)state;
	uint8_t v4[4] = { 192, 168, 0, 0 };
	Istio__Security__Address cidr = ISTIO__SECURITY__ADDRESS__INIT;
	Istio__Security__Match match = ISTIO__SECURITY__MATCH__INIT;
	Istio__Security__Address *cidrs[] = { &cidr };
	Istio__Security__Match *matches[] = { &match };
	Istio__Security__Clause clause = ISTIO__SECURITY__CLAUSE__INIT;
	Istio__Security__Clause *clauses[] = { &clause };
	Istio__Security__Rule rule = ISTIO__SECURITY__RULE__INIT;
	Istio__Security__Rule *rules[] = { &rule };
	Istio__Security__Authorization authz = ISTIO__SECURITY__AUTHORIZATION__INIT;
	Google__Protobuf__Any any = GOOGLE__PROTOBUF__ANY__INIT;

	cidr.address = (ProtobufCBinaryData){ 4, v4 };
	cidr.length = 16;
	match.n_source_ips = 1;
	match.source_ips = cidrs;
	clause.n_matches = 1;
	clause.matches = matches;
	rule.n_clauses = 1;
	rule.clauses = clauses;
	authz.name = "p";
	authz.n_rules = 1;
	authz.rules = rules;
	any.type_url = SM_TYPE_URL_AUTHORIZATION;
	any.value.len = protobuf_c_message_get_packed_size(&authz.base);
	any.value.data = malloc(any.value.len);
	assert_non_null(any.value.data);
	protobuf_c_message_pack(&authz.base, any.value.data);

	json_t *json = sm_pb_to_json_ips(&any.base, sm_pb_ip_fields);
	json_t *address = json_object_get(json_array_get(json_object_get(json_array_get(json_object_get(json_array_get(
		json_object_get(json_array_get(json_object_get(json, "rules"), 0), "clauses"), 0), "matches"), 0),
		"sourceIps"), 0), "address");
	assert_string_equal(json_string_value(address), "192.168.0.0");
	json_decref(json);
	free(any.value.data);
}

/* ---- dump names ---- */

struct names_check {
	const struct dump_names *names;
	size_t named, total;
};

static int service_named(void *ctx, const void *key, const void *value)
{
	struct names_check *check = ctx;
	const struct sm_service_value *svc = value;
	(void)key;

	check->total++;
	check->named += dump_names_service(check->names, svc->name_hash) != NULL;
	return 0;
}

static int backend_named(void *ctx, const void *key, const void *value)
{
	struct names_check *check = ctx;
	const struct sm_backend_value *backend = value;
	(void)key;

	check->total++;
	check->named += dump_names_workload(check->names, backend->name_hash) != NULL;
	return 0;
}

/* The model's own maps and /config_dump: every service and backend id finds its name by hash. */
static void dump_names_match_the_model_hashes(void **state)
{
	(void)state;
	uint8_t *address, *authorization;
	size_t address_len, authorization_len;
	char err[512], path[4096];
	struct sm_model *model;
	struct sm_image *image;
	struct sm_image_writer writer;
	struct sm_rejections rejections = { 0 };
	ProtobufCMessage *response;
	struct dump_names names;

	snprintf(path, sizeof(path), "%s/real/bookinfo-ztunnel-config-dump.json", SM_FIXTURES_DIR);
	assert_int_equal(sm_local_config_read(path, &address, &address_len, &authorization, &authorization_len, err,
					      sizeof(err)), 0);
	assert_int_equal(sm_pb_decode(&envoy__service__discovery__v3__delta_discovery_response__descriptor, address,
				      address_len, &response, err, sizeof(err)), 0);
	assert_int_equal(sm_image_new(&image), 0);
	sm_image_writer_init(&writer, image);
	assert_int_equal(sm_model_new(&(struct sm_model_options){ 0 }, &model), 0);
	assert_int_equal(sm_model_apply(model, (void *)response, &writer.writer, &rejections), 0);
	assert_int_equal(rejections.count, 0);

	json_t *dump = sm_model_config_dump(model);
	assert_non_null(dump);
	assert_int_equal(dump_names_index(dump, &names), 0);
	struct names_check services = { .names = &names }, backends = { .names = &names };
	sm_image_for_each(sm_model_image(model), SM_MAP_SERVICES, service_named, &services);
	sm_image_for_each(sm_model_image(model), SM_MAP_BACKENDS, backend_named, &backends);
	assert_true(services.total > 3);
	assert_int_equal(services.named, services.total);
	assert_true(backends.total > 3);
	assert_int_equal(backends.named, backends.total);

	/* and the name is the one people know the service by */
	json_t *first = json_object_iter_value(json_object_iter(json_object_get(dump, "services")));
	char *key;
	assert_true(asprintf(&key, "%s/%s", json_string_value(json_object_get(first, "namespace")),
			     json_string_value(json_object_get(first, "hostname"))) > 0);
	bool found = false;
	for (size_t i = 0; i < names.n_services; i++)
		found = found || strcmp(names.services[i].name, key) == 0;
	assert_true(found);
	free(key);

	dump_names_clear(&names);
	json_decref(dump);
	sm_model_free(model);
	sm_image_free(image);
	protobuf_c_message_free_unpacked(response, NULL);
	free(address);
	free(authorization);
}

static void dump_names_skip_entries_without_names(void **state)
{
	(void)state;
	json_t *dump = json_pack("{s:{s:{s:s}, s:{s:s, s:s}}, s:{s:{s:s}}}", "services", "net/10.0.0.1", "namespace", "ns",
				 "net/10.0.0.2", "namespace", "ns", "hostname", "h", "workloads", "net/10.0.0.3", "name", "w");
	struct dump_names names;

	assert_int_equal(dump_names_index(dump, &names), 0);
	assert_int_equal(names.n_services, 1);
	assert_string_equal(names.services[0].name, "ns/h");
	assert_int_equal(names.n_workloads, 0);
	assert_null(dump_names_workload(&names, 42));
	dump_names_clear(&names);
	assert_int_equal(dump_names_index(json_object_get(dump, "nothing"), &names), 0);
	assert_null(dump_names_service(&names, 42));
	dump_names_clear(&names);
	json_decref(dump);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(missing_variables_are_named),
		cmocka_unit_test(missing_variables_fit_a_short_buffer),
		cmocka_unit_test(print_shows_addresses_as_ip_text),
		cmocka_unit_test(proto3_json_keeps_base64),
		cmocka_unit_test(cidr_addresses_inside_any_are_ip_text),
		cmocka_unit_test(dump_names_match_the_model_hashes),
		cmocka_unit_test(dump_names_skip_entries_without_names),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
