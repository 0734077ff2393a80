/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The Delta ADS client against the mock server, over real gRPC on 127.0.0.1: what it sends (node,
 * subscriptions, versions, ACK and NACK), what it accepts, TLS, tokens, reconnects and resumes.
 */
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <sys/socket.h>

#include "builders.h"
#include "google/protobuf/duration.pb-c.h"
#include "xds_env.h"

#define FIXTURE_STREAM SM_FIXTURES_DIR "/wire/stream.xds"

static json_t *request_of(json_t *requests, const char *type_url, const char *nonce)
{
	size_t i;
	json_t *request;

	json_array_foreach(requests, i, request) {
		const char *t = json_string_value(json_object_get(request, "typeUrl"));
		const char *n = json_string_value(json_object_get(request, "responseNonce"));
		if (t && strcmp(t, type_url) == 0 && strcmp(n ? n : "", nonce ? nonce : "") == 0)
			return request;
	}
	return NULL;
}

/* Until the server has logged the request that answers nonce, for at most 10 s: the client counts a NACK
 * as it sends it, and a stop right after may cancel the stream before the server reads it. */
static bool server_answered(const struct server *server, const char *type_url, const char *nonce)
{
	bool seen = false;

	for (int ms = 0; !seen && ms < 10000; ms += 10) {
		json_t *requests = server_events(server, "request");

		seen = request_of(requests, type_url, nonce);
		json_decref(requests);
		if (!seen)
			sleep_ms(10);
	}
	return seen;
}

static void fixtures_served_and_acked(void **state)
{
	(void)state;
	struct server server;
	struct client c;

	server_start(&server, (const char *[]){ "--stream", FIXTURE_STREAM, NULL });
	client_start(&c, &(struct sm_xds_options){ .address = server.address, .plaintext = true });
	WAIT_FOR(&c, 10, stats.acks == 3 && stats.ready);
	/* The third response removed the first's service and workload. */
	assert_int_equal(model_count(&c, SM_MAP_BACKENDS), 0);
	struct sm_model_stats model;
	sm_model_stats(c.model, &model);
	assert_int_equal(model.authorizations, 1);
	client_stop(&c);
	server_stop(&server);

	json_t *requests = server_events(&server, "request");
	const char *nonces[] = { "n-1", "n-2", "n-3" };
	const char *types[] = { SM_TYPE_URL_ADDRESS, SM_TYPE_URL_AUTHORIZATION, SM_TYPE_URL_ADDRESS };
	for (int i = 0; i < 3; i++) {
		json_t *ack = request_of(requests, types[i], nonces[i]);
		if (!ack)
			fail_msg("no answer to %s", nonces[i]);
		assert_true(json_is_true(json_object_get(ack, "ack")));
		assert_null(json_object_get(ack, "errorDetail"));
	}
	json_decref(requests);
	unlink(server.log);
}

static void node_identity_as_istiod_reads_it(void **state)
{
	(void)state;
	struct server server;
	struct client c;

	server_start(&server, (const char *[]){ "--stream", FIXTURE_STREAM, NULL });
	client_start(&c, &(struct sm_xds_options){ .address = server.address, .plaintext = true });
	WAIT_FOR(&c, 10, stats.acks == 3);
	client_stop(&c);
	server_stop(&server);

	json_t *streams = server_events(&server, "stream"), *requests = server_events(&server, "request");
	json_t *stream = json_array_get(streams, 0);
	assert_string_equal(json_string_value(json_object_get(stream, "method")), SM_DELTA_ADS_METHOD);
	assert_string_equal(json_string_value(json_object_get(stream, "clusterid")), "cluster-1");
	assert_false(json_is_string(json_object_get(stream, "authorization"))); /* no token: no header */

	json_t *first = request_of(requests, SM_TYPE_URL_ADDRESS, NULL);
	json_t *node = json_object_get(first, "node");
	assert_non_null(node);
	assert_string_equal(json_string_value(json_object_get(node, "id")),
			    "ztunnel~10.0.0.5~ztunnel-abc.istio-system~istio-system.svc.cluster.local");
	json_t *expected = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "NAME", "ztunnel-abc", "NAMESPACE", "istio-system",
				     "INSTANCE_IPS", "10.0.0.5", "NODE_NAME", "worker-2", "CLUSTER_ID", "cluster-1",
				     "MESH_ID", "mesh-1");
	assert_true(json_equal(json_object_get(node, "metadata"), expected));
	assert_null(json_object_get(node, "buildVersion"));
	/* a wildcard subscription: no names */
	assert_null(json_object_get(first, "resourceNamesSubscribe"));
	/* the node goes with the first request of each type only */
	assert_non_null(json_object_get(request_of(requests, SM_TYPE_URL_AUTHORIZATION, NULL), "node"));
	assert_null(json_object_get(request_of(requests, SM_TYPE_URL_ADDRESS, "n-1"), "node"));
	json_decref(expected);
	json_decref(streams);
	json_decref(requests);
	unlink(server.log);
}

static void nack_names_every_rejection(void **state)
{
	(void)state;
	char stream_path[128];
	struct response r[1];
	struct server server;
	struct client c;
	struct workload_spec good = { .uid = "w/good", .addresses = { "10.0.0.1" } };
	static const uint8_t garbage[] = { 0xde, 0xad, 0xbe, 0xef };

	temp_path(stream_path, sizeof(stream_path), "stream");
	response_init(&r[0], SM_TYPE_URL_ADDRESS);
	r[0].msg.nonce = "bad-1";
	Istio__Workload__Workload *bad = workload_from(&r[0], &(struct workload_spec){ .uid = "w/bad", .addresses = { "10.0.0.2" } });
	bad->addresses[0].len = 5;
	response_add_workload_msg(&r[0], bad, "v1");
	response_add_workload(&r[0], &good, "v1");
	response_add_raw(&r[0], "garbage", "v1", SM_TYPE_URL_ADDRESS, garbage, sizeof(garbage));
	response_add_raw(&r[0], "alien", "v1", "type.googleapis.com/example.Alien", garbage, 0);
	response_add_workload(&r[0], &good, "v2");
	write_stream(stream_path, r, 1);

	server_start(&server, (const char *[]){ "--stream", stream_path, NULL });
	client_start(&c, &(struct sm_xds_options){ .address = server.address, .plaintext = true });
	WAIT_FOR(&c, 10, stats.nacks == 1);
	assert_int_equal(model_count(&c, SM_MAP_BACKENDS), 1); /* the good one is applied */
	assert_true(server_answered(&server, SM_TYPE_URL_ADDRESS, "bad-1"));
	client_stop(&c);
	server_stop(&server);

	json_t *requests = server_events(&server, "request");
	json_t *nack = request_of(requests, SM_TYPE_URL_ADDRESS, "bad-1");
	assert_non_null(nack);
	assert_true(json_is_false(json_object_get(nack, "ack")));
	json_t *detail = json_object_get(nack, "errorDetail");
	const char *message = json_string_value(json_object_get(detail, "message"));
	assert_int_equal(json_integer_value(json_object_get(detail, "code")), 3);
	assert_non_null(strstr(message, "w/bad: address 0 has 5 bytes"));
	assert_non_null(strstr(message, "garbage: does not decode"));
	assert_non_null(strstr(message, "alien: unknown type type.googleapis.com/example.Alien"));
	assert_non_null(strstr(message, "w/good: appears more than once"));
	json_decref(requests);
	unlink(server.log);
	unlink(stream_path);
}

static void unknown_type_url_is_nacked(void **state)
{
	(void)state;
	char stream_path[128];
	struct response r[2];
	struct server server;
	struct client c;

	temp_path(stream_path, sizeof(stream_path), "stream");
	response_init(&r[0], "type.googleapis.com/envoy.config.cluster.v3.Cluster");
	r[0].msg.nonce = "cds-1";
	response_init(&r[1], SM_TYPE_URL_ADDRESS);
	r[1].msg.nonce = "eds-1";
	response_add_workload(&r[1], &(struct workload_spec){ .uid = "w/a", .addresses = { "10.0.0.1" } }, "v1");
	write_stream(stream_path, r, 2);

	server_start(&server, (const char *[]){ "--stream", stream_path, NULL });
	client_start(&c, &(struct sm_xds_options){ .address = server.address, .plaintext = true });
	WAIT_FOR(&c, 10, stats.nacks == 1 && stats.acks == 1);
	client_stop(&c);
	server_stop(&server);
	json_t *requests = server_events(&server, "request");
	json_t *nack = request_of(requests, "type.googleapis.com/envoy.config.cluster.v3.Cluster", "cds-1");
	assert_non_null(nack);
	assert_non_null(strstr(json_string_value(json_object_get(json_object_get(nack, "errorDetail"), "message")),
			       "unknown type URL"));
	json_decref(requests);
	unlink(server.log);
	unlink(stream_path);
}

/* A Resource with a ttl: a form the client's in-place reader leaves to protobuf-c, applied all the same. */
static void response_in_a_form_left_to_protobuf_c_is_applied(void **state)
{
	(void)state;
	char stream_path[128];
	struct response r[1];
	struct server server;
	struct client c;
	Google__Protobuf__Duration ttl = GOOGLE__PROTOBUF__DURATION__INIT;

	temp_path(stream_path, sizeof(stream_path), "stream");
	response_init(&r[0], SM_TYPE_URL_ADDRESS);
	r[0].msg.nonce = "ttl-1";
	response_add_workload(&r[0], &(struct workload_spec){ .uid = "w/ttl", .addresses = { "10.0.0.3" } }, "v1");
	ttl.seconds = 30;
	r[0].msg.resources[0]->ttl = &ttl;
	write_stream(stream_path, r, 1);

	server_start(&server, (const char *[]){ "--stream", stream_path, NULL });
	client_start(&c, &(struct sm_xds_options){ .address = server.address, .plaintext = true });
	WAIT_FOR(&c, 10, stats.acks == 1);
	assert_int_equal(model_count(&c, SM_MAP_BACKENDS), 1);
	assert_int_equal(client_stats(&c).nacks, 0);
	client_stop(&c);
	server_stop(&server);
	unlink(server.log);
	unlink(stream_path);
}

static void write_text(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static void token_sent_and_reread(void **state)
{
	(void)state;
	char token_path[128];
	struct server server;
	struct client c;

	temp_path(token_path, sizeof(token_path), "token");
	write_text(token_path, "old-token\n");
	server_start(&server, (const char *[]){ "--stream", FIXTURE_STREAM, "--require-token", "new-token", NULL });
	client_start(&c, &(struct sm_xds_options){ .address = server.address, .plaintext = true, .token_path = token_path });
	WAIT_FOR(&c, 10, stats.streams >= 2 && strstr(stats.last_error, "bearer token"));
	assert_int_equal(client_stats(&c).responses, 0);

	/* The kubelet rotates the token: the next stream carries the new one. */
	write_text(token_path, "new-token\n");
	WAIT_FOR(&c, 20, stats.acks == 3);
	client_stop(&c);
	server_stop(&server);

	json_t *streams = server_events(&server, "stream");
	size_t n = json_array_size(streams);
	assert_true(n >= 3);
	assert_string_equal(json_string_value(json_object_get(json_array_get(streams, 0), "authorization")),
			    "Bearer old-token");
	assert_string_equal(json_string_value(json_object_get(json_array_get(streams, n - 1), "authorization")),
			    "Bearer new-token");
	json_decref(streams);
	unlink(server.log);
	unlink(token_path);
}

/* A CA and a server certificate for istiod.istio-system.svc, made with openssl in dir. */
static void make_certificates(const char *dir)
{
	char command[2048];

	snprintf(command, sizeof(command),
		 "set -e; cd %s;"
		 "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 1 -subj /CN=test-mesh-root 2>/dev/null;"
		 "openssl req -x509 -newkey rsa:2048 -nodes -keyout other-ca.key -out other-ca.pem -days 1 -subj /CN=other-root 2>/dev/null;"
		 "openssl req -newkey rsa:2048 -nodes -keyout istiod.key -out istiod.csr -subj /CN=istiod 2>/dev/null;"
		 "printf 'subjectAltName=DNS:istiod.istio-system.svc\\n' > san.ext;"
		 "openssl x509 -req -in istiod.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out istiod.pem -days 1 -extfile san.ext 2>/dev/null",
		 dir);
	if (system(command) != 0)
		fail_msg("openssl could not make the test certificates");
}

static void tls(void **state)
{
	(void)state;
	char dir[128], cert[160], key[160], ca[160], other_ca[160];
	struct server server;
	struct client c;

	temp_path(dir, sizeof(dir), "tls");
	mkdir(dir, 0700);
	make_certificates(dir);
	snprintf(cert, sizeof(cert), "%s/istiod.pem", dir);
	snprintf(key, sizeof(key), "%s/istiod.key", dir);
	snprintf(ca, sizeof(ca), "%s/ca.pem", dir);
	snprintf(other_ca, sizeof(other_ca), "%s/other-ca.pem", dir);
	server_start(&server, (const char *[]){ "--stream", FIXTURE_STREAM, "--tls-cert", cert, "--tls-key", key, NULL });

	/* The right CA and name. */
	client_start(&c, &(struct sm_xds_options){ .address = server.address, .root_cert = ca,
						    .server_name = "istiod.istio-system.svc" });
	WAIT_FOR(&c, 10, stats.acks == 3);
	client_stop(&c);

	/* Another CA: refused, and the error says why. */
	client_start(&c, &(struct sm_xds_options){ .address = server.address, .root_cert = other_ca,
						    .server_name = "istiod.istio-system.svc" });
	WAIT_FOR(&c, 10, stats.streams >= 1 && stats.last_error[0]);
	assert_int_equal(client_stats(&c).responses, 0);
	print_message("# wrong CA: %s\n", client_stats(&c).last_error);
	assert_non_null(strcasestr(client_stats(&c).last_error, "handshake"));
	client_stop(&c);

	/* The right CA, the wrong name. */
	client_start(&c, &(struct sm_xds_options){ .address = server.address, .root_cert = ca,
						    .server_name = "evil.example.com" });
	WAIT_FOR(&c, 10, stats.streams >= 1 && stats.last_error[0]);
	assert_int_equal(client_stats(&c).responses, 0);
	print_message("# wrong name: %s\n", client_stats(&c).last_error);
	assert_non_null(strstr(client_stats(&c).last_error, "evil.example.com"));
	client_stop(&c);
	server_stop(&server);

	char command[256];
	snprintf(command, sizeof(command), "rm -rf %s", dir);
	assert_int_equal(system(command), 0);
	unlink(server.log);
}

/* The first request of type_url on the server's stream number stream, or NULL. */
static json_t *first_request_on(json_t *requests, json_int_t stream, const char *type_url)
{
	size_t i;
	json_t *request;

	json_array_foreach(requests, i, request) {
		if (json_integer_value(json_object_get(request, "stream")) == stream &&
		    strcmp(json_string_value(json_object_get(request, "typeUrl")), type_url) == 0)
			return request;
	}
	return NULL;
}

#define STREAM_PATH_MAX 128

/* Two services and a workload, then a state where the workload and one service are gone: two stream files
 * made here, their paths written to first and second. */
static void resumable_streams(char first[STREAM_PATH_MAX], char second[STREAM_PATH_MAX])
{
	struct response r[2];
	struct service_spec a = { .namespace = "ns", .hostname = "a", .vips = { "10.96.0.1" }, .ports = { { 80 } } };
	struct service_spec b = { .namespace = "ns", .hostname = "b", .vips = { "10.96.0.2" }, .ports = { { 80 } } };
	struct workload_spec w = { .uid = "w/1", .addresses = { "10.0.0.1" }, .services = { { "ns/a" } } };

	temp_path(first, STREAM_PATH_MAX, "first");
	temp_path(second, STREAM_PATH_MAX, "second");

	response_init(&r[0], SM_TYPE_URL_ADDRESS);
	r[0].msg.nonce = "full";
	response_add_service(&r[0], &a, "a1");
	response_add_service(&r[0], &b, "b1");
	response_add_workload(&r[0], &w, "w1");
	response_init(&r[1], SM_TYPE_URL_AUTHORIZATION);
	r[1].msg.nonce = "authz";
	write_stream(first, r, 2);

	response_init(&r[0], SM_TYPE_URL_ADDRESS);
	r[0].msg.nonce = "later";
	a.vips[0] = "10.96.0.11"; /* changed */
	response_add_service(&r[0], &a, "a2");
	response_init(&r[1], SM_TYPE_URL_AUTHORIZATION);
	write_stream(second, r, 2);
}

static void reconnect_resumes_and_removes_stale(void **state)
{
	(void)state;
	char first[STREAM_PATH_MAX], second[STREAM_PATH_MAX];
	struct server server;
	struct client c;

	resumable_streams(first, second);
	server_start(&server, (const char *[]){ "--stream", first, "--stream", second, "--close-after", "2", NULL });
	client_start(&c, &(struct sm_xds_options){ .address = server.address, .plaintext = true });
	WAIT_FOR(&c, 10, stats.ready && stats.streams >= 2);
	/* the second stream resumed: ns/b and w/1 were removed, ns/a moved */
	WAIT_FOR(&c, 10, model_count(&c, SM_MAP_SERVICES) == 1 && model_count(&c, SM_MAP_BACKENDS) == 0);
	client_stop(&c);
	server_stop(&server);

	json_t *requests = server_events(&server, "request");
	json_t *resumed = first_request_on(requests, 2, SM_TYPE_URL_ADDRESS);
	assert_non_null(resumed);
	json_t *expected = json_pack("{s:s, s:s, s:s}", "ns/a", "a1", "ns/b", "b1", "w/1", "w1");
	assert_true(json_equal(json_object_get(resumed, "initialResourceVersions"), expected));
	json_decref(expected);
	json_decref(requests);

	json_t *statuses = server_events(&server, "status");
	assert_true(json_array_size(statuses) >= 1);
	json_decref(statuses);
	unlink(server.log);
	unlink(first);
	unlink(second);
}

/* The authorization check of the split below: more than room policies in force do not fit. At call hold_at it
 * waits for the test, which stops the splits there, as the agent does on SIGTERM before it frees the client. */
struct held_check {
	size_t room;
	unsigned calls, hold_at;
	sem_t reached, released;
};

/* 0 once sem is posted, -1 when seconds pass first */
static int wait_posted(sem_t *sem, int seconds)
{
	struct timespec deadline;

	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += seconds;
	while (sem_timedwait(sem, &deadline))
		if (errno != EINTR)
			return -1;
	return 0;
}

static size_t policies_held(const struct sm_model *model)
{
	struct sm_model_stats stats;

	sm_model_stats(model, &stats);
	return stats.authorizations;
}

static int check_held_once(void *ctx, const struct sm_model *model, char *reason, size_t size)
{
	struct held_check *check = ctx;
	size_t n = policies_held(model);

	if (++check->calls == check->hold_at) {
		sem_post(&check->reached);
		sem_wait(&check->released);
	}
	if (n <= check->room)
		return 0;
	snprintf(reason, size, "verdicts: %zu policies, room for %zu", n, check->room);
	return -ENOSPC;
}

/* A response being split when the agent stops: the split ends after the run under way, what it took stays, and
 * the response is neither ACKed nor NACKed (part of it was taken, the rest never tried). */
static void split_stopped_with_the_agent_is_not_answered(void **state)
{
	(void)state;
	char stream_path[128], name[16];
	struct response r[1];
	struct held_check check = { .room = 120, .hold_at = 2 };
	struct server server;
	struct client c;

	temp_path(stream_path, sizeof(stream_path), "stream");
	response_init(&r[0], SM_TYPE_URL_AUTHORIZATION);
	r[0].msg.nonce = "policies";
	for (int i = 0; i < 200; i++) {
		snprintf(name, sizeof(name), "p%03d", i);
		response_add_allow_from_namespace(&r[0], "ns", name, "ns");
	}
	write_stream(stream_path, r, 1);
	sem_init(&check.reached, 0, 0);
	sem_init(&check.released, 0, 0);

	server_start(&server, (const char *[]){ "--stream", stream_path, NULL });
	client_open(&c, &(struct sm_xds_options){ .address = server.address, .plaintext = true });
	sm_model_set_authz_check(c.model, check_held_once, &check);
	assert_int_equal(sm_xds_client_start(c.xds), 0);
	/* 200 policies do not fit whole (call 1): the split's first run, of 100, is checked at call 2 */
	assert_int_equal(wait_posted(&check.reached, 20), 0);
	sm_model_stop_splits(c.model);
	sem_post(&check.released);
	WAIT_FOR(&c, 10, stats.apply.count >= 1);
	pthread_mutex_lock(&c.lock);
	assert_int_equal(policies_held(c.model), 100);
	pthread_mutex_unlock(&c.lock);
	assert_int_equal(check.calls, 2);
	assert_int_equal(client_stats(&c).nacks, 0);
	client_stop(&c);
	server_stop(&server);

	json_t *requests = server_events(&server, "request");
	assert_null(request_of(requests, SM_TYPE_URL_AUTHORIZATION, "policies"));
	json_decref(requests);
	sem_destroy(&check.reached);
	sem_destroy(&check.released);
	unlink(server.log);
	unlink(stream_path);
}

/* The maps' writer runs short once: the response is NACKed, the stream ends, and the next one's resume
 * brings what the failed response carried. */
static void memory_short_applying_resumes_on_a_new_stream(void **state)
{
	(void)state;
	char first[STREAM_PATH_MAX], second[STREAM_PATH_MAX];
	struct server server;
	struct client c;

	resumable_streams(first, second);
	server_start(&server, (const char *[]){ "--stream", first, NULL });
	client_open(&c, &(struct sm_xds_options){ .address = server.address, .plaintext = true });
	c.writer.fail_after = 1;
	c.writer.fail_error = -ENOMEM;
	assert_int_equal(sm_xds_client_start(c.xds), 0);
	WAIT_FOR(&c, 10, stats.streams >= 2 && stats.ready && model_count(&c, SM_MAP_SERVICES) == 2 &&
				 model_count(&c, SM_MAP_BACKENDS) == 1);
	assert_int_equal(client_stats(&c).nacks, 1);
	assert_int_equal(client_stats(&c).apply_failures, 1);
	client_stop(&c);
	server_stop(&server);

	json_t *requests = server_events(&server, "request");
	json_t *nack = request_of(requests, SM_TYPE_URL_ADDRESS, "full");
	assert_non_null(nack);
	assert_true(json_is_false(json_object_get(nack, "ack")));
	const char *message = json_string_value(json_object_get(json_object_get(nack, "errorDetail"), "message"));
	assert_non_null(strstr(message, "Cannot allocate memory"));
	assert_non_null(first_request_on(requests, 2, SM_TYPE_URL_ADDRESS)); /* subscribed again */
	json_decref(requests);
	/* the first stream was half-closed and ended by the server, which read the NACK first; a cancellation
	 * could reach it before the NACK was read */
	json_t *cancelled = server_events(&server, "cancelled");
	size_t i;
	json_t *event;
	json_array_foreach(cancelled, i, event)
		if (json_integer_value(json_object_get(event, "stream")) == 1)
			fail_msg("the first stream was cancelled, not closed");
	json_decref(cancelled);
	unlink(server.log);
	unlink(first);
	unlink(second);
}

/* A writer that stops taking writes after its first ok ones: a failed write, then a failed undo. */
struct broken_writer {
	struct sm_map_writer writer;
	struct sm_map_writer *maps;
	size_t ok;
};

static int broken_apply(struct sm_map_writer *base, const struct sm_map_op *ops, size_t n, size_t *applied)
{
	struct broken_writer *broken = (struct broken_writer *)base;
	size_t take = n < broken->ok ? n : broken->ok;
	int err = broken->maps->apply(broken->maps, ops, take, applied);

	broken->ok -= *applied;
	return err ? err : take < n ? -ENOSPC : 0;
}

static void record_failure(void *ctx, int err)
{
	*(int *)ctx = err;
}

/* A write fails and so does its undo: the apply says -EIO to apply_failed, and the response is NACKed. */
static void undo_that_fails_is_reported(void **state)
{
	(void)state;
	struct broken_writer broken = { .writer = { .apply = broken_apply }, .ok = 1 };
	struct server server;
	struct client c;
	int failure = 0;

	server_start(&server, (const char *[]){ "--stream", FIXTURE_STREAM, NULL });
	client_open(&c, &(struct sm_xds_options){ .address = server.address, .plaintext = true, .writer = &broken.writer,
						  .apply_failed = record_failure, .apply_failed_ctx = &failure });
	broken.maps = &c.writer.writer;
	assert_int_equal(sm_xds_client_start(c.xds), 0);
	WAIT_FOR(&c, 10, stats.nacks >= 1);
	assert_true(client_stats(&c).apply_failures >= 1);
	client_stop(&c);
	server_stop(&server);
	assert_int_equal(failure, -EIO);
	unlink(server.log);
}

static void server_killed_and_back(void **state)
{
	(void)state;
	struct server server;
	struct client c;
	char listen[32];

	server_start(&server, (const char *[]){ "--stream", FIXTURE_STREAM, NULL });
	client_start(&c, &(struct sm_xds_options){ .address = server.address, .plaintext = true });
	WAIT_FOR(&c, 10, stats.acks == 3);
	kill(server.pid, SIGKILL);
	waitpid(server.pid, NULL, 0);
	unlink(server.log);

	/* Down: the client backs off (doubling) and keeps its state. */
	WAIT_FOR(&c, 20, !stats.connected && stats.backoff_ms >= 1000);
	struct sm_model_stats model;
	sm_model_stats(c.model, &model);
	assert_int_equal(model.authorizations, 1);
	uint64_t streams_before = client_stats(&c).streams;
	WAIT_FOR(&c, 10, stats.streams > streams_before && stats.backoff_ms >= 1500); /* a wait of 1.5-2.5 s began */

	/* Back on the same port: the client resumes with what it holds as soon as the server answers, not at
	 * the end of its wait (gRPC's own backoff had made every stream started in the meantime fail at once
	 * with the last attempt's error: up to 20 s in all after a restart of istiod). */
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", server.port);
	streams_before = client_stats(&c).streams;
	double back = now_seconds();
	server_start(&server, (const char *[]){ "--stream", FIXTURE_STREAM, "--listen", listen, NULL });
	WAIT_FOR(&c, 30, stats.connected && stats.streams >= 3 && stats.acks >= 5);
	double took = now_seconds() - back;
	uint64_t streams_after = client_stats(&c).streams - streams_before;
	if (took > 1.2 || streams_after > 2)
		fail_msg("resumed %.2f s after the server was back, in %llu streams (expected within 1.2 s, before "
			 "the wait ended, in 2 at most)", took, (unsigned long long)streams_after);
	printf("# resumed %.2f s after the server was back, in %llu streams\n", took, (unsigned long long)streams_after);
	client_stop(&c);
	server_stop(&server);
	json_t *requests = server_events(&server, "request");
	json_t *resume = request_of(requests, SM_TYPE_URL_AUTHORIZATION, NULL);
	assert_non_null(json_object_get(json_object_get(resume, "initialResourceVersions"), "bookinfo/allow-frontend"));
	json_decref(requests);
	unlink(server.log);
}

static void large_response_accepted(void **state)
{
	(void)state;
	enum { SIZE = 100 << 20 };
	char stream_path[128];
	struct response r[1];
	struct server server;
	struct client c;
	Google__Protobuf__Any config = GOOGLE__PROTOBUF__ANY__INIT;
	Istio__Workload__Extension extension = ISTIO__WORKLOAD__EXTENSION__INIT;
	Istio__Workload__Extension *extensions[] = { &extension };

	temp_path(stream_path, sizeof(stream_path), "large");
	response_init(&r[0], SM_TYPE_URL_ADDRESS);
	r[0].msg.nonce = "large";
	Istio__Workload__Workload *w = workload_from(&r[0], &(struct workload_spec){ .uid = "w/large", .addresses = { "10.0.0.1" } });
	config.type_url = "type.googleapis.com/example.Blob";
	config.value.len = SIZE;
	config.value.data = response_alloc(&r[0], SIZE);
	extension.name = "blob";
	extension.config = &config;
	w->extensions = extensions;
	w->n_extensions = 1;
	response_add_workload_msg(&r[0], w, "v1");
	write_stream(stream_path, r, 1);

	server_start(&server, (const char *[]){ "--stream", stream_path, NULL });
	client_start(&c, &(struct sm_xds_options){ .address = server.address, .plaintext = true });
	WAIT_FOR(&c, 60, stats.acks == 1);
	assert_int_equal(model_count(&c, SM_MAP_BACKENDS), 1);
	client_stop(&c);
	server_stop(&server);
	unlink(server.log);
	unlink(stream_path);
}

/*
 * A push of megabytes in many resources: the client gives the message's pages back as the model reads
 * them (xds_message_drop_before), some before the release. Had it given back a page still to be read, the
 * push would fault or come out wrong (its names, and so the model, would not be what was sent).
 */
static void many_resources_read_as_their_pages_go(void **state)
{
	(void)state;
	enum { WORKLOADS = 40000 };
	char stream_path[128];
	struct response r[1];
	struct server server;
	struct client c;

	temp_path(stream_path, sizeof(stream_path), "many");
	response_init(&r[0], SM_TYPE_URL_ADDRESS);
	r[0].msg.nonce = "many";
	for (int i = 0; i < WORKLOADS; i++) {
		char *uid = response_alloc(&r[0], 32), *ip = response_alloc(&r[0], 16);
		snprintf(uid, 32, "ns/workload-%05d", i);
		snprintf(ip, 16, "10.%d.%d.%d", i >> 16, (i >> 8) & 0xff, i & 0xff);
		response_add_workload(&r[0], &(struct workload_spec){ .uid = uid, .addresses = { ip } }, "v1");
	}
	write_stream(stream_path, r, 1);

	server_start(&server, (const char *[]){ "--stream", stream_path, NULL });
	client_start(&c, &(struct sm_xds_options){ .address = server.address, .plaintext = true });
	WAIT_FOR(&c, 60, stats.acks == 1);
	assert_int_equal(client_stats(&c).nacks, 0);
	assert_true(client_stats(&c).bytes_given_back >= 2u << 20); /* a whole huge page at least, early */
	assert_int_equal(model_count(&c, SM_MAP_BACKENDS), WORKLOADS);
	client_stop(&c);
	server_stop(&server);
	unlink(server.log);
	unlink(stream_path);
}

static void record_replays_what_came(void **state)
{
	(void)state;
	char record[128];
	struct server server;
	struct client c;
	size_t recorded_len, fixture_len;

	temp_path(record, sizeof(record), "record");
	server_start(&server, (const char *[]){ "--stream", FIXTURE_STREAM, NULL });
	client_start(&c, &(struct sm_xds_options){ .address = server.address, .plaintext = true, .record_path = record });
	WAIT_FOR(&c, 10, stats.acks == 3);
	client_stop(&c);
	server_stop(&server);
	uint8_t *recorded = test_read_file(record, &recorded_len);
	uint8_t *fixture = test_read_fixture("wire/stream.xds", &fixture_len);
	assert_int_equal(recorded_len, fixture_len);
	assert_memory_equal(recorded, fixture, fixture_len);
	free(recorded);
	free(fixture);
	unlink(record);
	unlink(server.log);
}

static void backoff_doubles_to_its_cap(void **state)
{
	(void)state;
	uint64_t backoff = 0;

	for (int i = 0; i < 20; i++)
		backoff = sm_xds_backoff_next(backoff);
	assert_int_equal(backoff, SM_XDS_BACKOFF_MAX_MS);
	assert_int_equal(sm_xds_backoff_next(0), 10);
	assert_int_equal(sm_xds_backoff_next(10), 20);
	for (uint64_t r = 0; r < 2000; r += 7) {
		uint64_t jittered = sm_xds_backoff_jittered(1000, r);
		assert_true(jittered >= 750 && jittered <= 1250);
	}
}

/* A shutdown frees everything: checked by valgrind, or by LeakSanitizer in the ASan build (which
 * valgrind cannot run). */
static void shutdown_frees_everything(void **state)
{
	(void)state;
	struct server server;
	char command[512];

	server_start(&server, (const char *[]){ "--stream", FIXTURE_STREAM, NULL });
#ifdef __SANITIZE_ADDRESS__
	snprintf(command, sizeof(command), "ASAN_OPTIONS=detect_leaks=1 %s %s 3 2>&1", XDS_SHUTDOWN_PROBE, server.address);
#else
	snprintf(command, sizeof(command),
		 "valgrind -q --leak-check=full --show-possibly-lost=no --errors-for-leak-kinds=definite,indirect "
		 "--error-exitcode=9 %s %s 3 2>&1",
		 XDS_SHUTDOWN_PROBE, server.address);
#endif
	int status = system(command);
	server_stop(&server);
	unlink(server.log);
	assert_int_equal(status, 0); /* a signal (a crash under valgrind) is not an exit status of 0 */
}

/* A TCP relay that holds each accepted connection for delay_ms before it connects it to the server:
 * a server that is slow to answer (a loaded node, a distant istiod, a TLS handshake under ASan). */
struct slow_relay {
	int listen_fd;
	int delay_ms;
	int target_port;
	atomic_int accepted;
	atomic_bool stop;
	pthread_t thread;
	char address[32];
};

static void relay_pair(int a, int b)
{
	struct pollfd fds[2] = { { .fd = a, .events = POLLIN }, { .fd = b, .events = POLLIN } };
	char buf[16384];

	while (poll(fds, 2, 100) >= 0) {
		for (int i = 0; i < 2; i++) {
			if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			ssize_t n = read(fds[i].fd, buf, sizeof(buf));
			if (n <= 0 || write(fds[1 - i].fd, buf, (size_t)n) != n)
				return;
		}
	}
}

static void *slow_relay_run(void *arg)
{
	struct slow_relay *relay = arg;

	while (!relay->stop) {
		struct pollfd pfd = { .fd = relay->listen_fd, .events = POLLIN };
		if (poll(&pfd, 1, 50) <= 0)
			continue;
		int client = accept(relay->listen_fd, NULL, NULL);
		if (client < 0)
			continue;
		relay->accepted++;
		sleep_ms(relay->delay_ms);
		struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons((uint16_t)relay->target_port),
					  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
		int server = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (server >= 0 && connect(server, (struct sockaddr *)&to, sizeof(to)) == 0)
			relay_pair(client, server); /* one connection at a time is all the test needs */
		if (server >= 0)
			close(server);
		close(client);
	}
	return NULL;
}

static void slow_relay_start(struct slow_relay *relay, const char *target, int delay_ms)
{
	struct sockaddr_in addr = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(addr);

	memset(relay, 0, sizeof(*relay));
	relay->delay_ms = delay_ms;
	relay->target_port = atoi(strrchr(target, ':') + 1);
	relay->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(relay->listen_fd >= 0);
	assert_int_equal(bind(relay->listen_fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
	assert_int_equal(listen(relay->listen_fd, 16), 0);
	assert_int_equal(getsockname(relay->listen_fd, (struct sockaddr *)&addr, &len), 0);
	snprintf(relay->address, sizeof(relay->address), "127.0.0.1:%d", ntohs(addr.sin_port));
	assert_int_equal(pthread_create(&relay->thread, NULL, slow_relay_run, relay), 0);
}

static void slow_relay_stop(struct slow_relay *relay)
{
	relay->stop = true;
	pthread_join(relay->thread, NULL);
	close(relay->listen_fd);
}

/* gRPC gives a connection attempt max(backoff, min connect timeout) to complete: a server that takes
 * 300 ms to answer must be reached on the first attempt, not after a string of cancelled ones. */
static void slow_server_connected_on_first_attempt(void **state)
{
	(void)state;
	struct server server;
	struct slow_relay relay;
	struct client c;

	server_start(&server, (const char *[]){ "--stream", FIXTURE_STREAM, NULL });
	slow_relay_start(&relay, server.address, 300);
	client_start(&c, &(struct sm_xds_options){ .address = relay.address, .plaintext = true });
	WAIT_FOR(&c, 20, stats.acks == 3);
	int accepted = relay.accepted;
	client_stop(&c);
	slow_relay_stop(&relay);
	server_stop(&server);
	unlink(server.log);
	if (accepted != 1)
		fail_msg("%d connection attempts to a server that answers in 300 ms (expected 1)", accepted);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(backoff_doubles_to_its_cap),
		cmocka_unit_test(fixtures_served_and_acked),
		cmocka_unit_test(node_identity_as_istiod_reads_it),
		cmocka_unit_test(nack_names_every_rejection),
		cmocka_unit_test(unknown_type_url_is_nacked),
		cmocka_unit_test(response_in_a_form_left_to_protobuf_c_is_applied),
		cmocka_unit_test(token_sent_and_reread),
		cmocka_unit_test(tls),
		cmocka_unit_test(slow_server_connected_on_first_attempt),
		cmocka_unit_test(reconnect_resumes_and_removes_stale),
		cmocka_unit_test(memory_short_applying_resumes_on_a_new_stream),
		cmocka_unit_test(split_stopped_with_the_agent_is_not_answered),
		cmocka_unit_test(undo_that_fails_is_reported),
		cmocka_unit_test(server_killed_and_back),
		cmocka_unit_test(large_response_accepted),
		cmocka_unit_test(many_resources_read_as_their_pages_go),
		cmocka_unit_test(record_replays_what_came),
		cmocka_unit_test(shutdown_frees_everything),
	};

	srand((unsigned)getpid());
	return cmocka_run_group_tests_name("xds", tests, NULL, NULL);
}
