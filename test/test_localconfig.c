/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ztunnel's local config and config dump as xDS sources: the real files read, applied to the model,
 * and (for the dump) shown back in the same shape, every field of the original.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include "model_harness.h"
#include "xds/xds.h"

static void apply_bytes(struct harness *h, const uint8_t *bytes, size_t len)
{
	ProtobufCMessage *response;
	char err[256];

	if (sm_pb_decode(&envoy__service__discovery__v3__delta_discovery_response__descriptor, bytes, len, &response, err,
			 sizeof(err)))
		fail_msg("%s", err);
	sm_rejections_clear(&h->rejections);
	assert_int_equal(sm_model_apply(h->model, (void *)response, &h->writer.writer, &h->rejections), 0);
	if (h->rejections.count)
		fail_msg("rejected: %s", sm_rejections_format(&h->rejections));
	assert_consistent(h);
	protobuf_c_message_free_unpacked(response, NULL);
}

static void apply_file(struct harness *h, const char *path)
{
	uint8_t *address, *authorization;
	size_t address_len, authorization_len;
	char err[512];

	if (sm_local_config_read(path, &address, &address_len, &authorization, &authorization_len, err, sizeof(err)))
		fail_msg("%s", err);
	apply_bytes(h, address, address_len);
	apply_bytes(h, authorization, authorization_len);
	free(address);
	free(authorization);
}

/* The config dump of a model on node "local" that applied text (written to a file of its own, removed after). */
static json_t *dump_of_text(const char *text)
{
	char path[] = "/tmp/sm-local-config-XXXXXX";
	int fd = mkstemp(path);
	struct harness h;
	json_t *dump;

	assert_true(fd >= 0);
	assert_true(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
	close(fd);
	harness_open(&h, "local", NULL);
	apply_file(&h, path);
	unlink(path);
	dump = sm_model_config_dump(h.model);
	harness_close(&h);
	return dump;
}

static void ztunnel_local_config(void **state)
{
	(void)state;
	struct harness h;

	harness_open(&h, "local", NULL);
	apply_file(&h, SM_FIXTURES_DIR "/real/ztunnel-local-config.yaml");
	struct sm_model_stats stats;
	sm_model_stats(h.model, &stats);
	assert_int_equal(stats.workloads, 2);
	assert_int_equal(stats.services, 2);
	assert_int_equal(stats.authorizations, 1);

	json_t *dump = sm_model_config_dump(h.model);
	json_t *service = json_object_get(json_object_get(dump, "services"), "/127.10.0.1");
	assert_string_equal(json_string_value(json_object_get(service, "hostname")), "example.com");
	assert_int_equal(json_integer_value(json_object_get(json_object_get(service, "ports"), "80")), 8080);
	assert_int_equal(json_object_size(json_object_get(service, "endpoints")), 2);
	assert_non_null(json_object_get(json_object_get(dump, "services"), "remote/127.10.0.2"));
	json_t *local = json_object_get(json_object_get(dump, "workloads"), "/127.0.0.1");
	assert_string_equal(json_string_value(json_object_get(local, "protocol")), "HBONE");
	assert_string_equal(json_string_value(json_object_get(local, "uid")), "cluster1//v1/Pod/default/local");
	json_t *policy = json_array_get(json_object_get(dump, "policies"), 0);
	assert_string_equal(json_string_value(json_object_get(policy, "name")), "deny-9999");
	assert_string_equal(json_string_value(json_object_get(policy, "scope")), "Namespace");
	json_t *match = json_array_get(json_array_get(json_array_get(json_object_get(policy, "rules"), 0), 0), 0);
	assert_int_equal(json_integer_value(json_array_get(json_object_get(match, "notDestinationPorts"), 0)), 9999);
	/* the namespace-scoped policy selects the workloads of its namespace */
	assert_int_equal(json_array_size(json_object_get(local, "authorizationPolicies")), 1);
	json_decref(dump);
	harness_close(&h);
}

/* Every field of expected is in actual with the same value (objects may have more fields). */
static bool json_covers(const json_t *actual, const json_t *expected, char *where, size_t size)
{
	if (json_is_object(expected)) {
		const char *key;
		json_t *value;
		if (!json_is_object(actual))
			return false;
		json_object_foreach((json_t *)expected, key, value) {
			size_t len = strlen(where);
			snprintf(where + len, size - len, ".%s", key);
			if (!json_covers(json_object_get(actual, key), value, where, size))
				return false;
			where[len] = '\0';
		}
		return true;
	}
	if (json_is_array(expected)) {
		size_t i;
		json_t *value;
		if (!json_is_array(actual) || json_array_size(actual) != json_array_size(expected))
			return false;
		json_array_foreach((json_t *)expected, i, value) {
			if (!json_covers(json_array_get(actual, i), value, where, size))
				return false;
		}
		return true;
	}
	return json_equal(actual, expected);
}

static void bookinfo_dump_round_trip(void **state)
{
	(void)state;
	struct harness h;
	json_error_t error;
	char where[512] = "";

	harness_open(&h, "ambient-worker2", NULL);
	apply_file(&h, SM_FIXTURES_DIR "/real/bookinfo-ztunnel-config-dump.json");
	json_t *original = json_load_file(SM_FIXTURES_DIR "/real/bookinfo-ztunnel-config-dump.json", 0, &error);
	json_t *ours = sm_model_config_dump(h.model);
	assert_non_null(original);
	assert_non_null(ours);
	assert_int_equal(json_object_size(json_object_get(ours, "workloads")),
			 json_object_size(json_object_get(original, "workloads")));
	assert_int_equal(json_object_size(json_object_get(ours, "services")),
			 json_object_size(json_object_get(original, "services")));
	if (!json_covers(json_object_get(ours, "workloads"), json_object_get(original, "workloads"), where, sizeof(where)))
		fail_msg("workloads differ at %s", where);
	where[0] = '\0';
	if (!json_covers(json_object_get(ours, "services"), json_object_get(original, "services"), where, sizeof(where)))
		fail_msg("services differ at %s", where);
	json_decref(original);
	json_decref(ours);
	harness_close(&h);
}

/* A dump lists a dual-stack workload once per address; its endpoints land on the listing the model takes (the
 * first), whichever comes first among the workloads' uids. */
static void dump_endpoints_reach_a_workload_listed_twice(void **state)
{
	(void)state;
	const char *text =
		"{\"workloads\": {\n"
		"  \"n/10.0.0.1\": {\"uid\": \"z\", \"name\": \"z\", \"namespace\": \"ns\", \"workloadIps\": [\"10.0.0.1\", \"fd00::1\"]},\n"
		"  \"n/10.0.0.2\": {\"uid\": \"a\", \"name\": \"a\", \"namespace\": \"ns\", \"workloadIps\": [\"10.0.0.2\"]},\n"
		"  \"n/fd00::1\": {\"uid\": \"z\", \"name\": \"z\", \"namespace\": \"ns\", \"workloadIps\": [\"10.0.0.1\", \"fd00::1\"]}},\n"
		" \"services\": {\"/10.96.0.1\": {\"name\": \"s\", \"namespace\": \"ns\", \"hostname\": \"s.ns.svc\",\n"
		"  \"vips\": [\"/10.96.0.1\"], \"ports\": {\"80\": 8080}, \"endpoints\": {\n"
		"   \"z:/10.0.0.1\": {\"workloadUid\": \"z\", \"service\": \"ns/s.ns.svc\", \"address\": \"/10.0.0.1\", \"port\": {\"80\": 8080}},\n"
		"   \"a:/10.0.0.2\": {\"workloadUid\": \"a\", \"service\": \"ns/s.ns.svc\", \"address\": \"/10.0.0.2\", \"port\": {\"80\": 8080}}}}}}\n";
	json_t *dump = dump_of_text(text);
	json_t *service = json_object_get(json_object_get(dump, "services"), "/10.96.0.1");
	assert_non_null(service);
	assert_int_equal(json_object_size(json_object_get(service, "endpoints")), 2);
	json_decref(dump);
}

/* A policy's addresses read back as CIDR text in the dump, as ztunnel shows them. */
static void policy_cidrs_in_the_dump(void **state)
{
	(void)state;
	const char *text = "workloads: []\npolicies:\n- name: p\n  namespace: ns\n  rules:\n"
			   "  - - - sourceIps: [\"10.0.0.0/8\", \"fd00::/64\"]\n"
			   "        notDestinationIps: [\"10.1.2.3\"]\n";
	json_t *dump = dump_of_text(text);
	json_t *policy = json_array_get(json_object_get(dump, "policies"), 0);
	json_t *match = json_array_get(json_array_get(json_array_get(json_object_get(policy, "rules"), 0), 0), 0);
	json_t *sources = json_object_get(match, "sourceIps");
	assert_int_equal(json_array_size(sources), 2);
	assert_string_equal(json_string_value(json_array_get(sources, 0)), "10.0.0.0/8");
	assert_string_equal(json_string_value(json_array_get(sources, 1)), "fd00::/64");
	assert_string_equal(json_string_value(json_array_get(json_object_get(match, "notDestinationIps"), 0)), "10.1.2.3/32");
	assert_null(json_object_get(match, "destinationIps"));
	json_decref(dump);
}

static void errors_name_file_and_line(void **state)
{
	(void)state;
	char path[] = "/tmp/sm-local-config-XXXXXX";
	int fd = mkstemp(path);
	uint8_t *a, *b;
	size_t a_len, b_len;
	char err[512];
	const char *text = "workloads:\n- uid: a\n  workloadIps: [\"10.0.0.1\"]\n- uid: b\n  workloadIps: [\"not-an-ip\"]\n";

	assert_true(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
	close(fd);
	assert_int_equal(sm_local_config_read(path, &a, &a_len, &b, &b_len, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, ":5: 'not-an-ip' is not an address"));
	/* a CIDR whose prefix is not a number would otherwise match every address */
	static const char *const bad_cidrs[] = { "10.0.0.0/", "10.0.0.0/abc", "10.0.0.0/8x", "10.0.0.0/33", "::/129" };
	for (size_t i = 0; i < sizeof(bad_cidrs) / sizeof(bad_cidrs[0]); i++) {
		char policy[256], expected[64];
		snprintf(policy, sizeof(policy),
			 "workloads: []\npolicies:\n- name: p\n  namespace: ns\n  rules:\n  - - - sourceIps: [\"%s\"]\n",
			 bad_cidrs[i]);
		fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		assert_true(write(fd, policy, strlen(policy)) == (ssize_t)strlen(policy));
		close(fd);
		assert_int_equal(sm_local_config_read(path, &a, &a_len, &b, &b_len, err, sizeof(err)), -EINVAL);
		snprintf(expected, sizeof(expected), "'%s' has no valid prefix length", bad_cidrs[i]);
		assert_non_null(strstr(err, expected));
	}
	unlink(path);
	assert_int_equal(sm_local_config_read("/nonexistent.yaml", &a, &a_len, &b, &b_len, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "/nonexistent.yaml"));
}

/* Writes text to a new temporary file and reads it; the responses are freed. */
static int read_text(const char *text, char *err, size_t err_size, size_t *n_addresses)
{
	char path[] = "/tmp/sm-local-config-XXXXXX";
	int fd = mkstemp(path);
	uint8_t *a = NULL, *b = NULL;
	size_t a_len, b_len;

	assert_true(fd >= 0);
	assert_true(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
	close(fd);
	int ret = sm_local_config_read(path, &a, &a_len, &b, &b_len, err, err_size);
	unlink(path);
	if (!ret && n_addresses) {
		Envoy__Service__Discovery__V3__DeltaDiscoveryResponse *response =
			envoy__service__discovery__v3__delta_discovery_response__unpack(NULL, a_len, a);
		assert_non_null(response);
		*n_addresses = response->n_resources;
		protobuf_c_message_free_unpacked(&response->base, NULL);
	}
	free(a);
	free(b);
	return ret;
}

#define SVC "- {name: s, namespace: ns, hostname: h, vips: [\"/10.9.0.1\"], ports: {80: 8080}}\n"

/*
 * Every shape the reader does not model is an error with its line, never a field quietly dropped:
 * each of these was accepted before (the first emptied a running datapath) or gave no line.
 */
static void strict_errors_name_the_line(void **state)
{
	(void)state;
	static const struct {
		const char *text;
		const char *expected; /* ":LINE: reason" */
	} cases[] = {
		{ "workloadz:\n- uid: a\n", ":1: unknown top-level key 'workloadz'" },
		{ "workloads: 5\n", ":1: 'workloads' must be a list (or a config dump's mapping), not '5'" },
		{ "workloads:\nservices: []\n", ":1: 'workloads' must be a list (or a config dump's mapping), not empty" },
		{ "workloads: []\npolicies: {a: 1}\n", ":2: 'policies' must be a list, not a mapping" },
		{ "workloads:\n- uid: a\n  workloadIps: \"10.0.0.1\"\n", ":3: 'workloadIps' must be a list, not '10.0.0.1'" },
		{ "workloads:\n- uid: a\n  workloadIP: [\"10.0.0.1\"]\n", ":3: unknown field 'workloadIP' in a workload" },
		{ "workloads:\n- uid: a\n  name: [x]\n", ":3: name must be a string, not a list" },
		{ "workloads:\n- uid: a\n  services: [\"ns/h\"]\n", ":3: 'services' must be a mapping, not a list" },
		{ "workloads:\n- uid: a\n  services: {\"ns/h\": 80}\n", ":3: ports must be a mapping, not '80'" },
		{ "workloads:\n- uid: a\n  locality: {region: r, zon: z}\n", ":3: unknown field 'zon' in a locality" },
		{ "workloads:\n- uid: a\n  waypoint: {destination: \"/10.0.0.9\", prot: 15008}\n",
		  ":3: unknown field 'prot' in a waypoint" },
		{ "workloads:\n- uid: a\n  nativeTunnel: ture\n", ":3: nativeTunnel must be true or false, not 'ture'" },
		{ "workloads:\n- uid: a\n  protocol: [HBONE]\n", ":3: protocol must be a string, not a list" },
		{ "workloads:\n- 5\n", ":2: a workload must be a mapping, not '5'" },
		{ "workloads:\n- uid: a\n- uid: b\n- uid: a\n", ":4: workload 'a' is defined twice (also at line 2)" },
		{ "services:\n" SVC "- {name: t, namespace: ns, hostname: h}\n",
		  ":3: service 'ns/h' is defined twice (also at line 2)" },
		{ "services:\n- name: s\n  namespace: ns\n  hostname: h\n  vip: [\"/10.9.0.1\"]\n",
		  ":5: unknown field 'vip' in a service" },
		{ "services:\n- name: s\n  namespace: ns\n  hostname: h\n  canonical: 1\n",
		  ":5: canonical must be true or false, not '1'" },
		{ "services:\n- {name: s, namespace: ns, hostname: h, loadBalancer: {mode: Failover, routing: [Zone]}}\n",
		  ":2: unknown field 'routing' in a loadBalancer" },
		{ "workloads: []\npolicies:\n- {name: p, namespace: ns}\n- {name: p, namespace: ns}\n",
		  ":4: policy 'ns/p' is defined twice (also at line 3)" },
		{ "workloads: []\npolicies:\n- name: p\n  namespace: ns\n  rule: []\n", ":5: unknown field 'rule' in a policy" },
		{ "workloads: []\npolicies:\n- name: p\n  namespace: ns\n  rules:\n  - - - notDestinationPort: [9999]\n",
		  ":6: unknown field 'notDestinationPort' in a match" },
		{ "workloads: []\npolicies:\n- name: p\n  namespace: ns\n  rules:\n  - namespaces: [a]\n",
		  ":6: a rule (a list of clauses) must be a list, not a mapping" },
		{ "workloads: []\npolicies:\n- name: p\n  namespace: ns\n  rules:\n  - - - principals: [{prefx: spiffe}]\n",
		  ":6: a match is a string or {exact|prefix|suffix|presence: value}" },
		{ "workloads: []\npolicies:\n- name: p\n  namespace: ns\n  rules:\n  - - - principals: [{prefix: a, suffix: b}]\n",
		  ":6: a match is a string or {exact|prefix|suffix|presence: value}" },
		{ "workloads: []\npolicies:\n- name: p\n  namespace: ns\n  rules:\n  - - - sourceIps: [[10.0.0.1]]\n",
		  ":6: an address must be a string, not a list" },
		{ "workloads: []\npolicies:\n- name: p\n  namespace: ns\n  rules:\n  - - - serviceAccounts: [{namespace: a, sa: b}]\n",
		  ":6: unknown field 'sa' in a service account match" },
		{ "workloads: []\npolicies:\n- name: p\n  namespace: ns\n  dryRun: maybe\n", ":5: dryRun must be true or false, not 'maybe'" },
		{ "workloads: []\nservices: []\nworkloads:\n- uid: a\n", ":3: duplicate key 'workloads' (also at line 1)" },
		{ "workloads:\n- uid: a\n  uid: b\n", ":3: duplicate key 'uid' (also at line 2)" },
		{ "{}\n", ":1: neither workloads nor services: write 'workloads: []'" },
		{ "policies: []\n", ":1: neither workloads nor services" },
		{ "# nothing\n", ": expected a mapping of workloads, services and policies" },
	};
	char err[512];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		err[0] = '\0';
		int ret = read_text(cases[i].text, err, sizeof(err), NULL);
		if (ret != -EINVAL || !strstr(err, cases[i].expected))
			fail_msg("case %zu: %d '%s', expected '%s'", i, ret, err, cases[i].expected);
	}
}

/* An empty config is one that says so. */
static void explicitly_empty_config(void **state)
{
	(void)state;
	char err[512];
	size_t n = 99;

	assert_int_equal(read_text("workloads: []\n", err, sizeof(err), &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(read_text("services: []\npolicies: []\n", err, sizeof(err), &n), 0);
	assert_int_equal(n, 0);
	/* null string fields read as empty; the top-level keys of a config dump that are not config too */
	assert_int_equal(read_text("workloads:\n- uid: a\n  network:\ncertificates: []\nworkloadState: {}\n", err,
				   sizeof(err), &n), 0);
	assert_int_equal(n, 1);
}

static void a_directory_says_so(void **state)
{
	(void)state;
	char dir[] = "/tmp/sm-local-config-dir-XXXXXX";
	uint8_t *a = NULL, *b = NULL;
	size_t a_len, b_len;
	char err[512];

	assert_non_null(mkdtemp(dir));
	assert_int_equal(sm_local_config_read(dir, &a, &a_len, &b, &b_len, err, sizeof(err)), -EISDIR);
	rmdir(dir);
	assert_non_null(strstr(err, "is a directory"));
	assert_non_null(strstr(err, dir));
	assert_null(a);
	assert_null(b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(ztunnel_local_config),
		cmocka_unit_test(bookinfo_dump_round_trip),
		cmocka_unit_test(dump_endpoints_reach_a_workload_listed_twice),
		cmocka_unit_test(policy_cidrs_in_the_dump),
		cmocka_unit_test(errors_name_file_and_line),
		cmocka_unit_test(strict_errors_name_the_line),
		cmocka_unit_test(explicitly_empty_config),
		cmocka_unit_test(a_directory_says_so),
	};

	return cmocka_run_group_tests_name("localconfig", tests, NULL, NULL);
}
