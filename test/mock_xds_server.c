/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A mock istiod for tests, the demo and benchmarks, on gRPC C core. It serves recorded streams (the
 * varint-delimited DeltaDiscoveryResponse format) over DeltaAggregatedResources and writes every
 * request it receives to a log, one JSON object per line.
 *
 * Each new stream gets the next --stream file (the last one repeats). A type whose first request
 * carries no initial_resource_versions gets the file's responses of that type as recorded; one that
 * carries versions gets what istiod would send on a resume: one response with every resource whose
 * version differs and the removal of every name the file's final state lacks.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
/* the project builds uthash non-fatal (it never exits a library); this test server may */
#define uthash_nonfatal_oom(obj) (fputs("mock_xds_server: out of memory\n", stderr), exit(1))
#include <uthash.h>
#include <utlist.h>

#include "clock.h"
#include "proto/proto.h"

#define TYPES 2
static const char *const type_urls[TYPES] = { SM_TYPE_URL_ADDRESS, SM_TYPE_URL_AUTHORIZATION };

struct options {
	const char *listen;
	const char **streams;
	size_t n_streams;
	const char *log_path;
	const char *port_file;
	unsigned close_after;
	unsigned delay_ms;
	const char *token;
	const char *tls_cert, *tls_key;
	bool silent; /* accept streams but never send anything */
	bool eager;  /* send responses before any request asks for them */
	bool live;   /* the first stream file is a timeline paced by delay_ms, shared by every stream */
};

/* One recorded response, as bytes and decoded (for its type and for resume state). */
struct recorded {
	uint8_t *bytes;
	size_t len;
	int type;
	char *nonce;
};

struct resource_state {
	UT_hash_handle hh;
	char *name;
	char *version;
	uint8_t *resource; /* the packed Resource */
	size_t len;
};

struct recording {
	struct recorded *responses;
	size_t n;
	struct resource_state *final[TYPES];
};

enum tag_kind {
	TAG_NEW_CALL,
	TAG_CLOSE,
	TAG_INITIAL,
	TAG_RECV,
	TAG_SEND,
	TAG_STATUS,
	TAG_SHUTDOWN,
};

struct call;

struct tag {
	enum tag_kind kind;
	struct call *call;
};

struct call {
	struct tag tags[TAG_SHUTDOWN];
	grpc_call *call;
	grpc_call_details details;
	grpc_metadata_array metadata;
	int stream;
	const struct recording *recording;
	int cancelled;
	int outstanding;
	bool status_started;
	grpc_byte_buffer *received;
	grpc_byte_buffer *sending;
	grpc_slice status_details;
	bool subscribed[TYPES];
	bool resume[TYPES];
	uint8_t *resume_response[TYPES];
	size_t resume_len[TYPES];
	char resume_nonce[TYPES][64];
	const char *sending_nonce;
	size_t next; /* next recorded response to consider */
	unsigned sent;
	struct timespec next_send;
	struct call *next_live, *prev_live;
};

static struct options opts;
static struct recording *recordings;
static grpc_server *server;
static grpc_completion_queue *cq;
static FILE *log_file;
static int streams_started;
static struct call *live_calls; /* every call past request_call, ticked for due sends */
static volatile sig_atomic_t stop_requested;

/*
 * --live: the first recording is what happens to the config over time, one response every delay_ms
 * from the server's start, whether or not anyone listens. A stream that subscribes gets the state of
 * that moment (like istiod after a restart of either side), then each later response as it happens.
 */
static struct {
	struct timespec start;
	size_t position; /* responses that have happened */
	struct resource_state *state[TYPES];
} live;

/* ---- the log ---- */

/* Every event carries CLOCK_MONOTONIC seconds, comparable with the tests' own clocks. */
static void log_event(json_t *event)
{
	json_object_set_new(event, "time", json_real(now_seconds()));
	char *line = json_dumps(event, JSON_COMPACT);

	if (line && log_file) {
		fprintf(log_file, "%s\n", line);
		fflush(log_file);
	}
	free(line);
	json_decref(event);
}

static char *metadata_value(const grpc_metadata_array *md, const char *key)
{
	for (size_t i = 0; i < md->count; i++) {
		if (grpc_slice_str_cmp(md->metadata[i].key, key) == 0)
			return grpc_slice_to_c_string(md->metadata[i].value);
	}
	return NULL;
}

/* ---- recordings ---- */

/* The resources a client holds after a response, by type and name. */
static void apply_to_state(struct resource_state **state_by_type,
			   const Envoy__Service__Discovery__V3__DeltaDiscoveryResponse *response)
{
	int type = strcmp(response->type_url, SM_TYPE_URL_AUTHORIZATION) == 0;

	for (size_t i = 0; i < response->n_resources; i++) {
		const Envoy__Service__Discovery__V3__Resource *resource = response->resources[i];
		struct resource_state *state;
		HASH_FIND_STR(state_by_type[type], resource->name, state);
		if (!state) {
			state = calloc(1, sizeof(*state));
			state->name = strdup(resource->name);
			HASH_ADD_KEYPTR(hh, state_by_type[type], state->name, strlen(state->name), state);
		}
		free(state->version);
		free(state->resource);
		state->version = strdup(resource->version);
		state->len = protobuf_c_message_get_packed_size(&resource->base);
		state->resource = malloc(state->len ? state->len : 1);
		protobuf_c_message_pack(&resource->base, state->resource);
	}
	for (size_t i = 0; i < response->n_removed_resources; i++) {
		struct resource_state *state;
		HASH_FIND_STR(state_by_type[type], response->removed_resources[i], state);
		if (state) {
			HASH_DEL(state_by_type[type], state);
			free(state->name);
			free(state->version);
			free(state->resource);
			free(state);
		}
	}
}

static int load_recording(const char *path, struct recording *out)
{
	struct sm_stream_reader reader;
	const uint8_t *msg;
	size_t len;
	char err[512];

	if (sm_stream_open(&reader, path, err, sizeof(err))) {
		fprintf(stderr, "mock_xds_server: %s\n", err);
		return -1;
	}
	while (sm_stream_next(&reader, &msg, &len, err, sizeof(err)) == 0 && msg) {
		ProtobufCMessage *decoded;
		if (sm_pb_decode(&envoy__service__discovery__v3__delta_discovery_response__descriptor, msg, len, &decoded,
				 err, sizeof(err))) {
			fprintf(stderr, "mock_xds_server: %s: message %zu: %s\n", path, out->n, err);
			return -1;
		}
		const Envoy__Service__Discovery__V3__DeltaDiscoveryResponse *response = (void *)decoded;
		int type = strcmp(response->type_url, SM_TYPE_URL_AUTHORIZATION) == 0;
		out->responses = realloc(out->responses, (out->n + 1) * sizeof(*out->responses));
		out->responses[out->n] = (struct recorded){ .bytes = malloc(len ? len : 1), .len = len, .type = type,
							    .nonce = strdup(response->nonce) };
		memcpy(out->responses[out->n].bytes, msg, len);
		out->n++;
		/* the final state, for resumes */
		apply_to_state(out->final, response);
		protobuf_c_message_free_unpacked(decoded, NULL);
	}
	sm_stream_close(&reader);
	return 0;
}

/*
 * What istiod sends a client that resumes with versions: what differs from state, and what state
 * lacks. The state is the recording's final one, or in --live mode that of the moment.
 */
/* The versions a resuming client holds, by name (a client may hold hundreds of thousands). */
struct held_version {
	const char *name;
	const char *version;
	UT_hash_handle hh;
};

static struct held_version *index_held_versions(const Envoy__Service__Discovery__V3__DeltaDiscoveryRequest *request,
						struct held_version *storage)
{
	struct held_version *held = NULL;

	for (size_t i = 0; i < request->n_initial_resource_versions; i++) {
		struct held_version *entry = &storage[i];
		entry->name = request->initial_resource_versions[i]->key;
		entry->version = request->initial_resource_versions[i]->value;
		HASH_ADD_KEYPTR(hh, held, entry->name, strlen(entry->name), entry);
	}
	return held;
}

static void build_resume(struct call *call, int type, const Envoy__Service__Discovery__V3__DeltaDiscoveryRequest *request)
{
	Envoy__Service__Discovery__V3__DeltaDiscoveryResponse response = ENVOY__SERVICE__DISCOVERY__V3__DELTA_DISCOVERY_RESPONSE__INIT;
	struct resource_state *const *table = opts.live ? &live.state[type] : &call->recording->final[type];
	size_t n_state = HASH_COUNT(*table);
	Envoy__Service__Discovery__V3__Resource **resources = calloc(n_state + 1, sizeof(void *));
	char **removed = calloc(request->n_initial_resource_versions + 1, sizeof(char *));
	struct held_version *storage = calloc(request->n_initial_resource_versions + 1, sizeof(*storage));
	struct held_version *held = index_held_versions(request, storage);

	for (struct resource_state *state = *table; state; state = state->hh.next) {
		struct held_version *entry;
		HASH_FIND_STR(held, state->name, entry);
		if (!entry || strcmp(entry->version, state->version) != 0)
			resources[response.n_resources++] =
				envoy__service__discovery__v3__resource__unpack(NULL, state->len, state->resource);
	}
	for (size_t i = 0; i < request->n_initial_resource_versions; i++) {
		struct resource_state *state;
		HASH_FIND_STR(*table, request->initial_resource_versions[i]->key, state);
		if (!state)
			removed[response.n_removed_resources++] = request->initial_resource_versions[i]->key;
	}
	HASH_CLEAR(hh, held);
	free(storage);
	if (opts.live)
		snprintf(call->resume_nonce[type], sizeof(call->resume_nonce[type]), "live-%zu-%d-%d", live.position,
			 call->stream, type);
	else
		snprintf(call->resume_nonce[type], sizeof(call->resume_nonce[type]), "resume-%d-%d", call->stream, type);
	response.type_url = (char *)type_urls[type];
	response.nonce = call->resume_nonce[type];
	response.resources = resources;
	response.removed_resources = removed;
	call->resume_len[type] = protobuf_c_message_get_packed_size(&response.base);
	call->resume_response[type] = malloc(call->resume_len[type] ? call->resume_len[type] : 1);
	protobuf_c_message_pack(&response.base, call->resume_response[type]);
	for (size_t i = 0; i < response.n_resources; i++)
		envoy__service__discovery__v3__resource__free_unpacked(resources[i], NULL);
	free(resources);
	free(removed);
}

/* ---- calls ---- */

static void *tag_of(struct call *call, enum tag_kind kind)
{
	call->tags[kind] = (struct tag){ .kind = kind, .call = call };
	return &call->tags[kind];
}

static void start(struct call *call, const grpc_op *ops, size_t n, enum tag_kind kind)
{
	if (grpc_call_start_batch(call->call, ops, n, tag_of(call, kind), NULL) == GRPC_CALL_OK)
		call->outstanding++;
}

static struct call *new_call(void)
{
	struct call *call = calloc(1, sizeof(*call));

	grpc_call_details_init(&call->details);
	grpc_metadata_array_init(&call->metadata);
	call->status_details = grpc_empty_slice();
	grpc_server_request_call(server, &call->call, &call->details, &call->metadata, cq, cq, tag_of(call, TAG_NEW_CALL));
	return call;
}

static void free_call(struct call *call)
{
	if (call->stream)
		DL_DELETE2(live_calls, call, prev_live, next_live);
	if (call->call)
		grpc_call_unref(call->call);
	grpc_call_details_destroy(&call->details);
	grpc_metadata_array_destroy(&call->metadata);
	grpc_slice_unref(call->status_details);
	for (int type = 0; type < TYPES; type++)
		free(call->resume_response[type]);
	free(call);
}

static void send_status(struct call *call, grpc_status_code code, const char *message)
{
	grpc_op op = { .op = GRPC_OP_SEND_STATUS_FROM_SERVER };

	if (call->status_started || call->cancelled)
		return;
	call->status_started = true;
	grpc_slice_unref(call->status_details);
	call->status_details = grpc_slice_from_copied_string(message);
	op.data.send_status_from_server.status = code;
	op.data.send_status_from_server.status_details = &call->status_details;
	start(call, &op, 1, TAG_STATUS);
	log_event(json_pack("{s:i, s:s, s:i, s:s}", "stream", call->stream, "event", "status", "code", code, "message",
			    message));
}

static void receive(struct call *call)
{
	grpc_op op = { .op = GRPC_OP_RECV_MESSAGE, .data.recv_message.recv_message = &call->received };

	if (!call->cancelled && !call->status_started)
		start(call, &op, 1, TAG_RECV);
}

static void now(struct timespec *ts)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
}

static bool due(const struct timespec *at)
{
	struct timespec t;

	now(&t);
	return t.tv_sec > at->tv_sec || (t.tv_sec == at->tv_sec && t.tv_nsec >= at->tv_nsec);
}

static bool owes_response(const struct call *call)
{
	for (int type = 0; type < TYPES; type++)
		if (call->resume_response[type])
			return true;
	if (opts.live)
		return call->next < live.position;
	if (call->next >= call->recording->n)
		return false;
	return opts.eager || call->subscribed[call->recording->responses[call->next].type];
}

/* Sleep until the soonest delayed response is due (or 10 ms): --delay-ms 1 must mean one a millisecond. */
static gpr_timespec next_wakeup(void)
{
	struct timespec t;
	long wait_us = 10000;
	struct call *call;

	now(&t);
	if (opts.live && live.position < recordings[0].n && opts.delay_ms) {
		double next_ms = (double)live.position * opts.delay_ms;
		double elapsed_ms = (double)(t.tv_sec - live.start.tv_sec) * 1e3 +
				    (double)(t.tv_nsec - live.start.tv_nsec) / 1e6;
		long until_us = (long)((next_ms - elapsed_ms) * 1e3);
		wait_us = until_us < wait_us ? (until_us > 0 ? until_us : 0) : wait_us;
	}
	DL_FOREACH2(live_calls, call, next_live) {
		if (call->sending || call->status_started || call->cancelled || !owes_response(call))
			continue;
		long until_us = (long)(call->next_send.tv_sec - t.tv_sec) * 1000000 +
				(call->next_send.tv_nsec - t.tv_nsec) / 1000;
		if (until_us < wait_us)
			wait_us = until_us > 0 ? until_us : 0;
	}
	return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_micros(wait_us, GPR_TIMESPAN));
}

static void send_bytes(struct call *call, const uint8_t *bytes, size_t len, const char *nonce)
{
	/* "sending" is logged before the client can have it; "sent" (on completion) may come after its ACK */
	log_event(json_pack("{s:i, s:s, s:s?}", "stream", call->stream, "event", "sending", "nonce", nonce));
	call->sending_nonce = nonce;
	grpc_slice slice = grpc_slice_from_copied_buffer((const char *)bytes, len);
	grpc_op op = { .op = GRPC_OP_SEND_MESSAGE };

	call->sending = grpc_raw_byte_buffer_create(&slice, 1);
	grpc_slice_unref(slice);
	op.data.send_message.send_message = call->sending;
	start(call, &op, 1, TAG_SEND);
}

static size_t live_due(void)
{
	struct timespec t;

	now(&t);
	if (!opts.delay_ms)
		return recordings[0].n;
	double elapsed_ms = (double)(t.tv_sec - live.start.tv_sec) * 1e3 + (double)(t.tv_nsec - live.start.tv_nsec) / 1e6;
	size_t due = (size_t)(elapsed_ms / opts.delay_ms) + 1;
	return due < recordings[0].n ? due : recordings[0].n;
}

static void live_advance(void)
{
	char err[256];

	for (size_t due = live_due(); live.position < due; live.position++) {
		const struct recorded *recorded = &recordings[0].responses[live.position];
		ProtobufCMessage *decoded;
		if (sm_pb_decode(&envoy__service__discovery__v3__delta_discovery_response__descriptor, recorded->bytes,
				 recorded->len, &decoded, err, sizeof(err)) == 0) {
			apply_to_state(live.state, (const Envoy__Service__Discovery__V3__DeltaDiscoveryResponse *)decoded);
			protobuf_c_message_free_unpacked(decoded, NULL);
		}
	}
}

/* Sends the next response this stream owes, if it is time. */
static void send_next(struct call *call)
{
	if (opts.silent || call->sending || call->status_started || call->cancelled)
		return;
	if (opts.live)
		live_advance();
	else if (!due(&call->next_send))
		return;
	for (int type = 0; type < TYPES; type++) {
		if (call->resume_response[type]) {
			send_bytes(call, call->resume_response[type], call->resume_len[type], call->resume_nonce[type]);
			free(call->resume_response[type]);
			call->resume_response[type] = NULL;
			return;
		}
	}
	while (opts.live && call->next < live.position) {
		const struct recorded *response = &call->recording->responses[call->next++];
		if (!call->subscribed[response->type])
			continue; /* in the state it gets when it subscribes */
		send_bytes(call, response->bytes, response->len, response->nonce);
		return;
	}
	while (!opts.live && call->next < call->recording->n) {
		const struct recorded *response = &call->recording->responses[call->next];
		if (!call->subscribed[response->type] && !opts.eager)
			return; /* in order: wait for the subscription */
		call->next++;
		if (call->resume[response->type])
			continue;
		send_bytes(call, response->bytes, response->len, response->nonce);
		return;
	}
}

static void on_request(struct call *call, const uint8_t *bytes, size_t len)
{
	ProtobufCMessage *decoded;
	char err[512];

	if (sm_pb_decode(&envoy__service__discovery__v3__delta_discovery_request__descriptor, bytes, len, &decoded, err,
			 sizeof(err))) {
		log_event(json_pack("{s:i, s:s, s:s}", "stream", call->stream, "event", "bad-request", "error", err));
		return;
	}
	const Envoy__Service__Discovery__V3__DeltaDiscoveryRequest *request = (void *)decoded;
	json_t *event = sm_pb_to_json(decoded);
	json_object_set_new(event, "stream", json_integer(call->stream));
	json_object_set_new(event, "event", json_string("request"));
	if (request->response_nonce[0])
		json_object_set_new(event, "ack", json_boolean(request->error_detail == NULL));
	log_event(event);

	for (int type = 0; type < TYPES; type++) {
		if (strcmp(request->type_url, type_urls[type]) != 0 || call->subscribed[type])
			continue;
		if (opts.live) {
			/*
			 * The first subscription starts the stream's place in the timeline. A later one gets
			 * the state of its moment; responses between the two places are sent all the same
			 * (the client has them already, which is harmless) rather than skipped.
			 */
			bool first = !call->subscribed[0] && !call->subscribed[1];
			live_advance();
			build_resume(call, type, request);
			if (first)
				call->next = live.position;
		} else if (request->n_initial_resource_versions) {
			call->resume[type] = true;
			build_resume(call, type, request);
		}
		call->subscribed[type] = true;
	}
	protobuf_c_message_free_unpacked(decoded, NULL);
}

static void on_new_call(struct call *call)
{
	char *method = grpc_slice_to_c_string(call->details.method);
	char *authorization = metadata_value(&call->metadata, "authorization");
	char *cluster = metadata_value(&call->metadata, "clusterid");
	grpc_op close_op = { .op = GRPC_OP_RECV_CLOSE_ON_SERVER, .data.recv_close_on_server.cancelled = &call->cancelled };
	grpc_op initial = { .op = GRPC_OP_SEND_INITIAL_METADATA };

	call->stream = ++streams_started;
	DL_APPEND2(live_calls, call, prev_live, next_live);
	call->recording = &recordings[(size_t)(call->stream - 1) < opts.n_streams ? call->stream - 1 : (int)opts.n_streams - 1];
	log_event(json_pack("{s:i, s:s, s:s, s:s?, s:s?}", "stream", call->stream, "event", "stream", "method", method,
			    "authorization", authorization, "clusterid", cluster));
	start(call, &close_op, 1, TAG_CLOSE);
	start(call, &initial, 1, TAG_INITIAL);

	char expected[1024];
	snprintf(expected, sizeof(expected), "Bearer %s", opts.token ? opts.token : "");
	if (strcmp(method, SM_DELTA_ADS_METHOD) != 0)
		send_status(call, GRPC_STATUS_UNIMPLEMENTED, "mock_xds_server serves DeltaAggregatedResources only");
	else if (opts.token && (!authorization || strcmp(authorization, expected) != 0))
		send_status(call, GRPC_STATUS_UNAUTHENTICATED, "mock_xds_server: missing or wrong bearer token");
	else
		receive(call);
	gpr_free(method);
	gpr_free(authorization);
	gpr_free(cluster);
}

static void on_event(struct tag *tag, int success)
{
	struct call *call = tag->call;

	if (tag->kind == TAG_NEW_CALL) {
		if (!success) {
			free_call(call);
			return;
		}
		if (!stop_requested)
			new_call();
		on_new_call(call);
		return;
	}
	call->outstanding--;
	switch (tag->kind) {
	case TAG_RECV:
		if (!success || !call->received) {
			send_status(call, GRPC_STATUS_OK, "");
			break;
		}
		grpc_byte_buffer_reader reader;
		if (grpc_byte_buffer_reader_init(&reader, call->received)) {
			grpc_slice slice = grpc_byte_buffer_reader_readall(&reader);
			on_request(call, GRPC_SLICE_START_PTR(slice), GRPC_SLICE_LENGTH(slice));
			grpc_slice_unref(slice);
			grpc_byte_buffer_reader_destroy(&reader);
		}
		grpc_byte_buffer_destroy(call->received);
		call->received = NULL;
		receive(call);
		break;
	case TAG_SEND:
		grpc_byte_buffer_destroy(call->sending);
		call->sending = NULL;
		if (success) {
			call->sent++;
			log_event(json_pack("{s:i, s:s, s:i, s:s?}", "stream", call->stream, "event", "sent", "count", call->sent,
					    "nonce", call->sending_nonce));
		}
		now(&call->next_send);
		call->next_send.tv_nsec += (long)opts.delay_ms * 1000000;
		call->next_send.tv_sec += call->next_send.tv_nsec / 1000000000;
		call->next_send.tv_nsec %= 1000000000;
		if (opts.close_after && call->sent >= opts.close_after) {
			char message[96];
			snprintf(message, sizeof(message), "mock_xds_server: closing after %u responses", call->sent);
			send_status(call, GRPC_STATUS_UNAVAILABLE, message);
		}
		break;
	case TAG_CLOSE:
		if (call->cancelled)
			log_event(json_pack("{s:i, s:s}", "stream", call->stream, "event", "cancelled"));
		call->cancelled = call->cancelled || call->status_started;
		break;
	default:
		break;
	}
	if (call->outstanding == 0)
		free_call(call);
	else
		send_next(call);
}

/* ---- the server ---- */

static char *read_text(const char *path)
{
	FILE *f = fopen(path, "rb");
	char *text = NULL;
	long len;

	if (!f)
		return NULL;
	if (fseek(f, 0, SEEK_END) == 0 && (len = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
	    (text = calloc(1, (size_t)len + 1)))
		if (fread(text, 1, (size_t)len, f) != (size_t)len) {
			free(text);
			text = NULL;
		}
	fclose(f);
	return text;
}

static grpc_server_credentials *server_credentials(void)
{
	if (!opts.tls_cert)
		return grpc_insecure_server_credentials_create();

	grpc_ssl_pem_key_cert_pair pair = { .private_key = read_text(opts.tls_key), .cert_chain = read_text(opts.tls_cert) };
	if (!pair.private_key || !pair.cert_chain) {
		fprintf(stderr, "mock_xds_server: cannot read %s or %s\n", opts.tls_cert, opts.tls_key);
		exit(1);
	}
	grpc_server_credentials *creds =
		grpc_ssl_server_credentials_create_ex(NULL, &pair, 1, GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE, NULL);
	free((void *)pair.private_key);
	free((void *)pair.cert_chain);
	return creds;
}

static void on_signal(int sig)
{
	(void)sig;
	stop_requested = 1;
}

static void usage(FILE *out)
{
	fprintf(out,
		"Usage: mock_xds_server --stream FILE [--stream FILE]... [options]\n\n"
		"Serves recorded DeltaDiscoveryResponse streams over DeltaAggregatedResources.\n\n"
		"  --listen ADDR        address to listen on (default 127.0.0.1:0); the port is printed\n"
		"  --port-file FILE     also write the port to FILE\n"
		"  --stream FILE        a recorded stream; stream N gets the Nth (the last repeats)\n"
		"  --log FILE           write every request received as a JSON line\n"
		"  --close-after N      end each stream (UNAVAILABLE) after N responses\n"
		"  --delay-ms N         wait N ms between responses\n"
		"  --require-token T    refuse streams without 'authorization: Bearer T'\n"
		"  --tls-cert FILE      serve TLS with this certificate chain...\n"
		"  --tls-key FILE       ...and this key\n"
		"  --silent             accept streams, never respond\n"
		"  --eager              respond before any request (as a broken server would)\n"
		"  --live               the (first) stream is a timeline: one response every --delay-ms from\n"
		"                       the start, shared by all streams; a subscriber gets the state of the\n"
		"                       moment, then each response as it happens\n");
}

static int parse_options(int argc, char **argv)
{
	static const struct option long_options[] = {
		{ "listen", required_argument, NULL, 'l' },   { "port-file", required_argument, NULL, 'p' },
		{ "stream", required_argument, NULL, 's' },   { "log", required_argument, NULL, 'L' },
		{ "close-after", required_argument, NULL, 'c' }, { "delay-ms", required_argument, NULL, 'd' },
		{ "require-token", required_argument, NULL, 't' }, { "tls-cert", required_argument, NULL, 'C' },
		{ "tls-key", required_argument, NULL, 'K' },  { "silent", no_argument, NULL, 'S' },
		{ "eager", no_argument, NULL, 'E' },	      { "live", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },	      { 0 },
	};
	int opt;

	opts.listen = "127.0.0.1:0";
	while ((opt = getopt_long(argc, argv, "h", long_options, NULL)) != -1) {
		switch (opt) {
		case 'l': opts.listen = optarg; break;
		case 'p': opts.port_file = optarg; break;
		case 's':
			opts.streams = realloc(opts.streams, (opts.n_streams + 1) * sizeof(char *));
			opts.streams[opts.n_streams++] = optarg;
			break;
		case 'L': opts.log_path = optarg; break;
		case 'c': opts.close_after = (unsigned)atoi(optarg); break;
		case 'd': opts.delay_ms = (unsigned)atoi(optarg); break;
		case 't': opts.token = optarg; break;
		case 'C': opts.tls_cert = optarg; break;
		case 'K': opts.tls_key = optarg; break;
		case 'S': opts.silent = true; break;
		case 'E': opts.eager = true; break;
		case 'V': opts.live = true; break;
		case 'h': usage(stdout); exit(0);
		default: usage(stderr); return -1;
		}
	}
	if (!opts.n_streams || (!opts.tls_cert != !opts.tls_key)) {
		usage(stderr);
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (parse_options(argc, argv))
		return 2;
	recordings = calloc(opts.n_streams, sizeof(*recordings));
	for (size_t i = 0; i < opts.n_streams; i++) {
		if (load_recording(opts.streams[i], &recordings[i]))
			return 1;
	}
	now(&live.start);
	if (opts.log_path && !(log_file = fopen(opts.log_path, "a"))) {
		fprintf(stderr, "mock_xds_server: %s: %s\n", opts.log_path, strerror(errno));
		return 1;
	}
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);
	signal(SIGPIPE, SIG_IGN);

	grpc_init();
	grpc_arg args[] = {
		{ GRPC_ARG_INTEGER, GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, { .integer = 512 << 20 } },
		{ GRPC_ARG_INTEGER, GRPC_ARG_MAX_SEND_MESSAGE_LENGTH, { .integer = -1 } },
		/* istiod lets clients ping every 15 s (half its 30 s keepalive); gRPC's default of 5 min sent the
		 * agent's 30 s pings a GOAWAY "too_many_pings" within three minutes of an idle stream */
		{ GRPC_ARG_INTEGER, GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, { .integer = 15000 } },
	};
	grpc_channel_args server_args = { .num_args = sizeof(args) / sizeof(args[0]), .args = args };
	server = grpc_server_create(&server_args, NULL);
	cq = grpc_completion_queue_create_for_next(NULL);
	grpc_server_register_completion_queue(server, cq, NULL);
	grpc_server_credentials *creds = server_credentials();
	int port = grpc_server_add_http2_port(server, opts.listen, creds);
	grpc_server_credentials_release(creds);
	if (!port) {
		fprintf(stderr, "mock_xds_server: cannot listen on %s\n", opts.listen);
		return 1;
	}
	grpc_server_start(server);
	printf("listening on port %d\n", port);
	fflush(stdout);
	if (opts.port_file) {
		FILE *f = fopen(opts.port_file, "w");
		if (f) {
			fprintf(f, "%d\n", port);
			fclose(f);
		}
	}
	new_call();

	bool shutting_down = false, shut = false;
	static struct tag shutdown_tag = { .kind = TAG_SHUTDOWN };
	while (!shut) {
		if (stop_requested && !shutting_down) {
			shutting_down = true;
			grpc_server_shutdown_and_notify(server, cq, &shutdown_tag);
			grpc_server_cancel_all_calls(server);
		}
		grpc_event event = grpc_completion_queue_next(cq, next_wakeup(), NULL);
		if (event.type == GRPC_OP_COMPLETE) {
			struct tag *tag = event.tag;
			if (tag->kind == TAG_SHUTDOWN)
				shut = true;
			else
				on_event(tag, event.success);
		}
		struct call *call;
		DL_FOREACH2(live_calls, call, next_live)
			send_next(call);
	}
	grpc_server_destroy(server);
	grpc_completion_queue_shutdown(cq);
	while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type != GRPC_QUEUE_SHUTDOWN)
		;
	grpc_completion_queue_destroy(cq);
	grpc_shutdown();
	if (log_file)
		fclose(log_file);
	return 0;
}
