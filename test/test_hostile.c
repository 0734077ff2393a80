/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A hostile control plane: the mock server scripted to send what a broken (or malicious) istiod
 * could. In every case: no crash, memory bounded, clear NACKs, valid resources applied, and the maps
 * (an image checked after every single write) consistent with the model.
 *
 * SM_HOSTILE_FLOOD_SECONDS (default 5) sets how long the response-every-millisecond case lasts; the
 * robustness script runs it for a minute.
 */
#include <fcntl.h>
#include <malloc.h>

#include "builders.h"
#include "xds_env.h"

/* The maps the client wrote are what its model says, and no write ever left a dangling reference. */
static void assert_consistent(struct client *c)
{
	char err[256], diff[256];

	pthread_mutex_lock(&c->lock);
	if (c->writer.check_error[0])
		fail_msg("a write left a dangling reference: %s", c->writer.check_error);
	if (sm_image_check(c->image, err, sizeof(err)))
		fail_msg("the maps: %s", err);
	if (!sm_image_equivalent(c->image, sm_model_image(c->model), diff, sizeof(diff)))
		fail_msg("the maps and the model differ: %s", diff);
	pthread_mutex_unlock(&c->lock);
}

static size_t heap_in_use(void)
{
	malloc_trim(0);
	return mallinfo2().uordblks;
}

struct run {
	struct server server;
	struct client client;
	char stream[256];
	bool stream_written; /* by this run (not a fixture): the teardown removes it */
	size_t heap_before;
	bool client_running;
};

/* One run at a time, outside the test's frame: a failed assertion leaves it to the teardown. */
static struct run run;

static void run_begin(const char *const *server_args)
{
	run.heap_before = heap_in_use();
	server_start(&run.server, server_args);
	client_start(&run.client, &(struct sm_xds_options){ .address = run.server.address, .plaintext = true });
	run.client_running = true;
}

static void run_end(void)
{
	if (getenv("SM_KEEP_LOG"))
		fprintf(stderr, "# mock server log kept: %s\n", run.server.log);
	if (run.client_running)
		client_stop(&run.client);
	run.client_running = false;
	server_stop(&run.server);
	if (!getenv("SM_KEEP_LOG"))
		unlink(run.server.log);
}

static int teardown(void **state)
{
	(void)state;
	run_end();
	if (run.stream_written)
		unlink(run.stream);
	memset(&run, 0, sizeof(run));
	return 0;
}

/* Serves responses (with extra mock options) to a client; the caller waits for what it expects. */
static void run_start(struct response *responses, size_t n, const char *const *server_options)
{
	const char *args[16] = { "--stream", run.stream };
	size_t argc = 2;

	temp_path(run.stream, sizeof(run.stream), "stream");
	run.stream_written = true;
	write_stream(run.stream, responses, n);
	for (size_t i = 0; server_options && server_options[i] && argc < 15; i++)
		args[argc++] = server_options[i];
	args[argc] = NULL;
	run_begin(args);
}

/* Stops everything; what the client held is all freed again. */
static void run_stop(void)
{
	assert_consistent(&run.client);
	run_end();
	size_t after = heap_in_use();
	if (after > run.heap_before + (1u << 20))
		fail_msg("the heap grew by %zu bytes across the run", after - run.heap_before);
}

/* The error_detail the server received for nonce: the client counts its NACK before the server logs it. */
static const char *nack_message(const char *nonce)
{
	static char message[16384];
	double deadline = now_seconds() + 10;

	message[0] = '\0';
	while (!message[0] && now_seconds() < deadline) {
		json_t *requests = server_events(&run.server, "request");
		size_t i;
		json_t *request;
		json_array_foreach(requests, i, request) {
			const char *n = json_string_value(json_object_get(request, "responseNonce"));
			const char *m = json_string_value(json_object_get(json_object_get(request, "errorDetail"), "message"));
			if (n && m && strcmp(n, nonce) == 0)
				snprintf(message, sizeof(message), "%s", m);
		}
		json_decref(requests);
		if (!message[0])
			sleep_ms(20);
	}
	return message;
}

static void assert_says(const char *message, const char *text)
{
	if (message && strstr(message, text))
		return;
	print_error("the NACK does not say '%s': %.600s\n", text, message ? message : "(none)");
	fail();
}

static void valid_workloads(struct response *r, int n)
{
	for (int i = 0; i < n; i++) {
		char *uid = response_alloc(r, 32), *ip = response_alloc(r, 20);
		snprintf(uid, 32, "w/good-%d", i);
		snprintf(ip, 20, "10.1.0.%d", i + 1);
		response_add_workload(r, &(struct workload_spec){ .uid = uid, .addresses = { ip } }, "v1");
	}
}

static void hundred_thousand_invalid(void **state)
{
	(void)state;
	struct response r[1];

	response_init(&r[0], SM_TYPE_URL_ADDRESS);
	r[0].msg.nonce = "invalid";
	for (int i = 0; i < 100000; i++) {
		char *uid = response_alloc(&r[0], 32);
		snprintf(uid, 32, "w/bad-%d", i);
		Istio__Workload__Workload *w = workload_from(&r[0], &(struct workload_spec){ .uid = uid, .addresses = { "10.0.0.1" } });
		w->addresses[0].len = 5;
		response_add_workload_msg(&r[0], w, "v1");
	}
	valid_workloads(&r[0], 3);
	run_start(r, 1, NULL);
	WAIT_FOR(&run.client, 120, stats.nacks == 1);
	assert_int_equal(client_stats(&run.client).rejected_resources, 100000);
	assert_int_equal(model_count(&run.client, SM_MAP_BACKENDS), 3);
	const char *message = nack_message("invalid");
	assert_says(message, "w/bad-0: address 0 has 5 bytes, not 4 or 16");
	assert_says(message, "; and 99900 more");
	run_stop();
}

static void same_name_ten_thousand_times(void **state)
{
	(void)state;
	struct response r[1];

	response_init(&r[0], SM_TYPE_URL_ADDRESS);
	r[0].msg.nonce = "dup";
	for (int i = 0; i < 10000; i++) {
		char *version = response_alloc(&r[0], 16);
		snprintf(version, 16, "v%d", i);
		response_add_workload(&r[0], &(struct workload_spec){ .uid = "w/dup", .addresses = { "10.0.0.1" } }, version);
	}
	run_start(r, 1, NULL);
	WAIT_FOR(&run.client, 30, stats.nacks == 1);
	assert_int_equal(client_stats(&run.client).rejected_resources, 9999);
	assert_int_equal(model_count(&run.client, SM_MAP_BACKENDS), 1);
	assert_says(nack_message("dup"), "w/dup: appears more than once in this response");
	run_stop();
}

static void removals_of_names_never_sent(void **state)
{
	(void)state;
	struct response r[2];

	response_init(&r[0], SM_TYPE_URL_ADDRESS);
	valid_workloads(&r[0], 2);
	response_init(&r[1], SM_TYPE_URL_ADDRESS);
	r[1].msg.nonce = "ghosts";
	for (int i = 0; i < 1000; i++) {
		char name[32];
		snprintf(name, sizeof(name), "w/ghost-%d", i);
		response_remove(&r[1], name);
	}
	run_start(r, 2, NULL);
	WAIT_FOR(&run.client, 30, stats.acks == 2);
	assert_int_equal(model_count(&run.client, SM_MAP_BACKENDS), 2);
	run_stop();
}

static void any_inside_any(void **state)
{
	(void)state;
	struct response r[1];
	Istio__Workload__Address address = ISTIO__WORKLOAD__ADDRESS__INIT;
	Google__Protobuf__Any inner = GOOGLE__PROTOBUF__ANY__INIT;

	response_init(&r[0], SM_TYPE_URL_ADDRESS);
	r[0].msg.nonce = "nested";
	address.type_case = ISTIO__WORKLOAD__ADDRESS__TYPE_WORKLOAD;
	address.workload = workload_from(&r[0], &(struct workload_spec){ .uid = "w/wrapped", .addresses = { "10.0.0.1" } });
	inner.type_url = SM_TYPE_URL_ADDRESS;
	inner.value.len = protobuf_c_message_get_packed_size(&address.base);
	inner.value.data = response_alloc(&r[0], inner.value.len);
	protobuf_c_message_pack(&address.base, inner.value.data);
	response_add_message(&r[0], "w/wrapped", "v1", "type.googleapis.com/google.protobuf.Any", &inner.base);
	valid_workloads(&r[0], 1);
	run_start(r, 1, NULL);
	WAIT_FOR(&run.client, 30, stats.nacks == 1);
	assert_says(nack_message("nested"), "w/wrapped: a type.googleapis.com/google.protobuf.Any in a type.googleapis.com/istio.workload.Address response");
	assert_int_equal(model_count(&run.client, SM_MAP_BACKENDS), 1);
	run_stop();
}

static void ten_megabyte_strings(void **state)
{
	(void)state;
	enum { HUGE = 10 << 20 };
	struct response r[1];

	response_init(&r[0], SM_TYPE_URL_ADDRESS);
	char *huge = response_alloc(&r[0], HUGE + 1);
	memset(huge, 'x', HUGE);
	r[0].msg.nonce = "huge";
	Istio__Workload__Workload *named = workload_from(&r[0], &(struct workload_spec){ .uid = "w/named", .addresses = { "10.0.0.1" } });
	named->name = huge;
	response_add_workload_msg(&r[0], named, "v1");
	Istio__Workload__Workload *long_uid = workload_from(&r[0], &(struct workload_spec){ .uid = "w/x", .addresses = { "10.0.0.2" } });
	long_uid->uid = huge;
	response_add_workload_msg(&r[0], long_uid, "v1");
	Istio__Workload__Service *service = service_from(&r[0], &(struct service_spec){ .namespace = "ns", .hostname = "h" });
	service->hostname = huge;
	response_add_service_msg(&r[0], service, "v1");
	valid_workloads(&r[0], 1);
	run_start(r, 1, NULL);
	WAIT_FOR(&run.client, 60, stats.nacks == 1);
	const char *message = nack_message("huge");
	assert_says(message, "w/named: name is 10485760 bytes long, at most 4096 are accepted");
	assert_says(message, "workload uid is 10485760 bytes long");
	assert_says(message, "service key is longer than");
	assert_true(strlen(message) < 4096); /* the NACK does not echo the strings */
	assert_int_equal(model_count(&run.client, SM_MAP_BACKENDS), 1);
	run_stop();
}

static void addresses_of_every_wrong_length(void **state)
{
	(void)state;
	struct response r[1];
	int rejected = 0;

	response_init(&r[0], SM_TYPE_URL_ADDRESS);
	r[0].msg.nonce = "lengths";
	for (size_t len = 0; len <= 32; len++) {
		if (len == 4 || len == 16)
			continue;
		char *uid = response_alloc(&r[0], 32), *host = response_alloc(&r[0], 32), *wuid = response_alloc(&r[0], 32);
		snprintf(uid, 32, "w/len-%zu", len);
		snprintf(host, 32, "len-%zu", len);
		snprintf(wuid, 32, "w/waypoint-len-%zu", len);
		uint8_t *bytes = response_alloc(&r[0], 32);
		Istio__Workload__Workload *w = workload_from(&r[0], &(struct workload_spec){ .uid = uid, .addresses = { "10.0.0.1" } });
		w->addresses[0] = (ProtobufCBinaryData){ .len = len, .data = bytes };
		response_add_workload_msg(&r[0], w, "v1");
		Istio__Workload__Service *s = service_from(&r[0], &(struct service_spec){ .namespace = "ns", .hostname = host,
											  .vips = { "10.96.0.1" } });
		s->addresses[0]->address = (ProtobufCBinaryData){ .len = len, .data = bytes };
		response_add_service_msg(&r[0], s, "v1");
		Istio__Workload__Workload *wp = workload_from(&r[0], &(struct workload_spec){ .uid = wuid, .addresses = { "10.0.0.2" },
											    .waypoint_ip = "10.0.0.9" });
		wp->waypoint->address->address = (ProtobufCBinaryData){ .len = len, .data = bytes };
		response_add_workload_msg(&r[0], wp, "v1");
		rejected += 3;
	}
	valid_workloads(&r[0], 1);
	run_start(r, 1, NULL);
	WAIT_FOR(&run.client, 30, stats.nacks == 1);
	assert_int_equal(client_stats(&run.client).rejected_resources, (uint64_t)rejected);
	const char *message = nack_message("lengths");
	assert_says(message, "w/len-0: address 0 has 0 bytes, not 4 or 16");
	assert_says(message, "ns/len-17: address 0 has 17 bytes, not 4 or 16");
	assert_says(message, "w/waypoint-len-5: waypoint address has 5 bytes, not 4 or 16");
	assert_int_equal(model_count(&run.client, SM_MAP_BACKENDS), 1);
	run_stop();
}

static void a_response_every_millisecond(void **state)
{
	(void)state;
	const char *seconds_env = getenv("SM_HOSTILE_FLOOD_SECONDS");
	int seconds = seconds_env ? atoi(seconds_env) : 5;
	size_t n = (size_t)(seconds > 0 ? seconds : 0) * 1000;
	struct response *r;
	size_t peak = 0;

	if (!n)
		fail_msg("SM_HOSTILE_FLOOD_SECONDS='%s' is not a number of seconds above 0", seconds_env);
	r = calloc(n, sizeof(*r));

	for (size_t i = 0; i < n; i++) {
		char *version = NULL;
		response_init(&r[i], SM_TYPE_URL_ADDRESS);
		version = response_alloc(&r[i], 24);
		snprintf(version, 24, "v%zu", i);
		response_add_workload(&r[i], &(struct workload_spec){ .uid = "w/flood", .addresses = { "10.0.0.1" },
								     .capacity = 1 + (uint32_t)(i % 3) },
				      version);
	}
	run_start(r, n, (const char *[]){ "--delay-ms", "1", NULL });
	free(r);
	double deadline = now_seconds() + (double)n / 1000 * 3 + 30;
	while (client_stats(&run.client).acks < n) {
		if (now_seconds() > deadline)
			fail_msg("only %llu of %zu answered", (unsigned long long)client_stats(&run.client).acks, n);
		size_t heap = mallinfo2().uordblks;
		peak = heap > peak ? heap : peak;
		sleep_ms(50);
	}
	print_message("# %zu responses, one a millisecond: all ACKed; heap at most %.1f MiB above its level before\n", n,
		      (double)(peak > run.heap_before ? peak - run.heap_before : 0) / (1 << 20));
	assert_true(peak < run.heap_before + (16u << 20));
	run_stop();
}

static void a_server_that_never_answers(void **state)
{
	(void)state;
	struct response r[1];

	response_init(&r[0], SM_TYPE_URL_ADDRESS);
	valid_workloads(&r[0], 1);
	run_start(r, 1, (const char *[]){ "--silent", NULL });
	WAIT_FOR(&run.client, 10, stats.connected);
	sleep_ms(1000);
	struct sm_xds_stats stats = client_stats(&run.client);
	assert_false(stats.ready);
	assert_int_equal(stats.responses, 0);
	assert_int_equal(stats.streams, 1); /* a quiet stream is not a broken one */
	run_stop();
}

static void a_response_before_any_request(void **state)
{
	(void)state;

	/* the fixtures, sent before the client asks */
	snprintf(run.stream, sizeof(run.stream), "%s", SM_FIXTURES_DIR "/wire/stream.xds");
	run_begin((const char *[]){ "--stream", run.stream, "--eager", NULL });
	WAIT_FOR(&run.client, 10, stats.acks == 3 && stats.ready);
	assert_consistent(&run.client);
	run_end();
}

static void a_reset_after_every_response(void **state)
{
	(void)state;

	snprintf(run.stream, sizeof(run.stream), "%s", SM_FIXTURES_DIR "/wire/stream.xds");
	run_begin((const char *[]){ "--stream", run.stream, "--close-after", "1", NULL });
	/*
	 * Each stream carries one response, then ends UNAVAILABLE. The client resumes every time with what
	 * it holds, ACKs every response, and the backoff restarts from its minimum after a stream that
	 * carried a response: such a server is slow, not broken.
	 */
	WAIT_FOR(&run.client, 30, stats.streams >= 8);
	struct sm_xds_stats stats = client_stats(&run.client);
	assert_int_equal(stats.nacks, 0);
	assert_true(stats.acks + 1 >= stats.responses);
	assert_true(stats.responses + 1 >= stats.streams);
	assert_true(stats.backoff_ms <= 2 * SM_XDS_BACKOFF_MIN_MS);
	json_t *requests = server_events(&run.server, "request");
	size_t i, resumed = 0;
	json_t *request;
	json_array_foreach(requests, i, request)
		resumed += json_object_get(request, "initialResourceVersions") != NULL;
	json_decref(requests);
	assert_true(resumed >= 3);
	run_stop();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(hundred_thousand_invalid, teardown),
		cmocka_unit_test_teardown(same_name_ten_thousand_times, teardown),
		cmocka_unit_test_teardown(removals_of_names_never_sent, teardown),
		cmocka_unit_test_teardown(any_inside_any, teardown),
		cmocka_unit_test_teardown(ten_megabyte_strings, teardown),
		cmocka_unit_test_teardown(addresses_of_every_wrong_length, teardown),
		cmocka_unit_test_teardown(a_response_every_millisecond, teardown),
		cmocka_unit_test_teardown(a_server_that_never_answers, teardown),
		cmocka_unit_test_teardown(a_response_before_any_request, teardown),
		cmocka_unit_test_teardown(a_reset_after_every_response, teardown),
	};

	srand((unsigned)getpid());
	if (getenv("SM_TEST_FILTER"))
		cmocka_set_test_filter(getenv("SM_TEST_FILTER"));
	return cmocka_run_group_tests_name("hostile", tests, NULL, NULL);
}
