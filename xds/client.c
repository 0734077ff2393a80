/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The Delta ADS client on gRPC C core. One thread owns the completion queue and runs one stream at a
 * time: it subscribes to Address and Authorization (wildcard, with the versions the model holds),
 * applies each response to the model, answers it with an ACK or a NACK that names every rejected
 * resource, and after the stream ends reconnects with exponential backoff. The model keeps its state
 * while disconnected; on the next stream istiod sends what changed and removes what is gone.
 */
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include "xds/message.h"
#include "xds/response.h"
#include "xds/xds.h"

#define MAX_MESSAGE_BYTES (256u << 20)
#define TICK_MS 200
#define CLOSE_GRACE_MS 2000 /* for istiod's status after the client's half-close */
#define TOKEN_MAX_BYTES 65536
#define TRIM_AFTER_BYTES (1u << 20)
/* INVALID_ARGUMENT, as istiod reads a NACK's error_detail.code */
#define NACK_CODE 3

enum tag {
	TAG_SEND_INITIAL_METADATA = 1,
	TAG_RECV_INITIAL_METADATA,
	TAG_SEND,
	TAG_RECV,
	TAG_STATUS,
	TAG_CLOSE_SENDING, /* the client's half-close, before a restart */
	TAG_CHANNEL_STATE, /* a watch of the channel's connectivity, between streams */
};

enum type_index {
	TYPE_ADDRESS,
	TYPE_AUTHORIZATION,
	TYPE_COUNT,
};

static const char *const type_urls[TYPE_COUNT] = { SM_TYPE_URL_ADDRESS, SM_TYPE_URL_AUTHORIZATION };

struct outgoing {
	grpc_byte_buffer *buffer;
	int answers_type; /* the first answer to this type makes it ready; -1 otherwise */
	struct outgoing *next;
};

struct stream {
	grpc_call *call;
	grpc_metadata metadata[2];
	char *authorization;
	grpc_metadata_array initial_metadata;
	grpc_metadata_array trailing_metadata;
	grpc_status_code status;
	grpc_slice details;
	const char *error_string;
	grpc_byte_buffer *received;
	struct outgoing *sending; /* in flight */
	struct outgoing *queue, *queue_tail;
	int outstanding; /* batches started and not completed */
	bool status_received;
	bool cancelled;
	/* A response could not be applied for want of memory: the stream ends once its answers are sent, and
	 * the next one's resume (what the model holds) has istiod send again what the failed response carried. */
	bool restart;
	/* Then the client half-closes, so that istiod reads every answer before it ends the stream; a
	 * cancellation may reach it before the last answer is read. Cancelled when no status comes in time. */
	bool closing;
	gpr_timespec close_deadline;
	uint64_t responses;
};

struct sm_xds_client {
	struct sm_xds_options options;
	grpc_channel *channel;
	grpc_completion_queue *cq;
	pthread_t thread;
	bool started;
	int record_fd;
	struct sm_pb_arena arena; /* the response being applied */

	pthread_mutex_t lock; /* guards what other threads read or set below */
	bool stopping;
	grpc_call *current_call;
	struct sm_xds_stats stats;
	bool answered[TYPE_COUNT];
};

/* ---- logging and stats ---- */

static void xds_log(struct sm_xds_client *client, enum sm_xds_log_level level, const char *fmt, ...)
{
	char line[1024];
	va_list ap;

	if (!client->options.log)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	client->options.log(level, line);
}

void sm_xds_client_stats(struct sm_xds_client *client, struct sm_xds_stats *stats)
{
	pthread_mutex_lock(&client->lock);
	*stats = client->stats;
	pthread_mutex_unlock(&client->lock);
}

#define WITH_STATS(client, statement)                    \
	do {                                             \
		pthread_mutex_lock(&(client)->lock);     \
		statement;                               \
		pthread_mutex_unlock(&(client)->lock);   \
	} while (0)

const double sm_latency_bounds[SM_LATENCY_BUCKETS] = { 0.0001, 0.0005, 0.001, 0.005, 0.01,
							  0.05,	  0.1,	  0.5,	 1,	5 };

void sm_latency_record(struct sm_latency *latency, double seconds)
{
	int bucket = 0;

	while (bucket < SM_LATENCY_BUCKETS && seconds > sm_latency_bounds[bucket])
		bucket++;
	latency->buckets[bucket]++;
	latency->count++;
	latency->sum += seconds;
}

static double monotonic_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ---- backoff ---- */

uint64_t sm_xds_backoff_next(uint64_t current_ms)
{
	if (current_ms < SM_XDS_BACKOFF_MIN_MS)
		return SM_XDS_BACKOFF_MIN_MS;
	return current_ms * 2 > SM_XDS_BACKOFF_MAX_MS ? SM_XDS_BACKOFF_MAX_MS : current_ms * 2;
}

uint64_t sm_xds_backoff_jittered(uint64_t base_ms, uint64_t random)
{
	/* 75% to 125% of the base, so that agents restarted together do not reconnect together. */
	return base_ms * (750 + random % 501) / 1000;
}

/* ---- requests ---- */

struct versions_ctx {
	Envoy__Service__Discovery__V3__DeltaDiscoveryRequest__InitialResourceVersionsEntry **entries;
	size_t n, capacity;
};

static int add_version(void *ctx, const char *name, const char *version)
{
	struct versions_ctx *versions = ctx;

	if (versions->n == versions->capacity) {
		size_t capacity = versions->capacity ? versions->capacity * 2 : 64;
		void *entries = realloc(versions->entries, capacity * sizeof(*versions->entries));
		if (!entries)
			return -ENOMEM;
		versions->entries = entries;
		versions->capacity = capacity;
	}
	Envoy__Service__Discovery__V3__DeltaDiscoveryRequest__InitialResourceVersionsEntry *entry = malloc(sizeof(*entry));
	if (!entry)
		return -ENOMEM;
	envoy__service__discovery__v3__delta_discovery_request__initial_resource_versions_entry__init(entry);
	/* the model outlives the request: its strings are borrowed */
	entry->key = (char *)name;
	entry->value = (char *)version;
	versions->entries[versions->n++] = entry;
	return 0;
}

static grpc_byte_buffer *pack_request(const Envoy__Service__Discovery__V3__DeltaDiscoveryRequest *request)
{
	size_t len = envoy__service__discovery__v3__delta_discovery_request__get_packed_size(request);
	uint8_t *bytes = malloc(len ? len : 1);

	if (!bytes)
		return NULL;
	envoy__service__discovery__v3__delta_discovery_request__pack(request, bytes);
	grpc_slice slice = grpc_slice_new(bytes, len, free);
	grpc_byte_buffer *buffer = grpc_raw_byte_buffer_create(&slice, 1);
	grpc_slice_unref(slice);
	return buffer;
}

/* Queues a message to send; takes the buffer, also on failure. */
static int enqueue(struct stream *stream, grpc_byte_buffer *buffer, int answers_type)
{
	struct outgoing *out = calloc(1, sizeof(*out));

	if (!out) {
		grpc_byte_buffer_destroy(buffer);
		return -ENOMEM;
	}
	out->buffer = buffer;
	out->answers_type = answers_type;
	if (stream->queue_tail)
		stream->queue_tail->next = out;
	else
		stream->queue = out;
	stream->queue_tail = out;
	return 0;
}

/* The first request of a type on a stream: node, wildcard subscription, the versions held. */
static int subscribe(struct sm_xds_client *client, struct stream *stream, int type)
{
	Envoy__Service__Discovery__V3__DeltaDiscoveryRequest request = ENVOY__SERVICE__DISCOVERY__V3__DELTA_DISCOVERY_REQUEST__INIT;
	struct versions_ctx versions = { 0 };
	grpc_byte_buffer *buffer = NULL;
	int err;

	request.type_url = (char *)type_urls[type];
	request.node = sm_xds_node_message(client->options.node);
	if (!request.node)
		return -ENOMEM;
	if (client->options.model_lock)
		pthread_mutex_lock(client->options.model_lock);
	err = sm_model_for_each_version(client->options.model, type_urls[type], add_version, &versions);
	if (!err) {
		request.n_initial_resource_versions = versions.n;
		request.initial_resource_versions = versions.entries;
		buffer = pack_request(&request);
		err = buffer ? 0 : -ENOMEM;
	}
	if (client->options.model_lock)
		pthread_mutex_unlock(client->options.model_lock);
	for (size_t i = 0; i < versions.n; i++)
		free(versions.entries[i]);
	free(versions.entries);
	sm_xds_node_message_free(request.node);
	if (!err)
		err = enqueue(stream, buffer, -1);
	if (!err && versions.n)
		xds_log(client, SM_XDS_LOG_INFO, "subscribing to %s, resuming from %zu resources", type_urls[type], versions.n);
	return err;
}

/*
 * Queues the ACK (error NULL) or NACK of a response. istiod sends nothing more of a type until its last
 * response is answered, so an answer that cannot be queued ends the stream instead: the next stream
 * resumes from the versions held, and a rejected response comes again and is NACKed again.
 */
static void answer(struct sm_xds_client *client, struct stream *stream, const char *type_url, const char *nonce,
		   const char *error, int type)
{
	Envoy__Service__Discovery__V3__DeltaDiscoveryRequest request = ENVOY__SERVICE__DISCOVERY__V3__DELTA_DISCOVERY_REQUEST__INIT;
	Envoy__Service__Discovery__V3__Status status = ENVOY__SERVICE__DISCOVERY__V3__STATUS__INIT;

	request.type_url = (char *)type_url;
	request.response_nonce = (char *)nonce;
	if (error) {
		status.code = NACK_CODE;
		status.message = (char *)error;
		request.error_detail = &status;
	}
	grpc_byte_buffer *buffer = pack_request(&request);
	if (buffer && enqueue(stream, buffer, type) == 0)
		return;
	xds_log(client, SM_XDS_LOG_ERROR, "the %s of %s response %s could not be queued: out of memory; ending the stream",
		error ? "NACK" : "ACK", type_url, nonce);
	WITH_STATS(client, snprintf(client->stats.last_error, sizeof(client->stats.last_error),
				    "an answer could not be queued: out of memory"));
	if (!stream->cancelled) {
		grpc_call_cancel(stream->call, NULL);
		stream->cancelled = true;
	}
}

/* ---- responses ---- */

static int type_index(const char *type_url)
{
	for (int type = 0; type < TYPE_COUNT; type++) {
		if (strcmp(type_url, type_urls[type]) == 0)
			return type;
	}
	return -1;
}

static void record(struct sm_xds_client *client, const uint8_t *bytes, size_t len)
{
	if (client->record_fd < 0)
		return;
	int err = sm_stream_append(client->record_fd, bytes, len);
	if (err)
		xds_log(client, SM_XDS_LOG_ERROR, "recording to %s: %s", client->options.record_path, strerror(-err));
}

/* What holds a decoded response's bytes: the received message, and the structs in the arena. */
struct held_response {
	struct xds_message message;
	struct sm_pb_arena *arena;
	const Envoy__Service__Discovery__V3__DeltaDiscoveryResponse *response;
	size_t given_back; /* of the message, before its release */
	bool released;
};

/* Lowers *lowest to at when at is a byte of the message (a string may also be a copy, or a constant). */
static void lower_in(const struct xds_message *message, const void *at, const uint8_t **lowest)
{
	uintptr_t byte = (uintptr_t)at, start = (uintptr_t)message->bytes;

	if (byte >= start && byte - start < message->len && (!*lowest || byte < (uintptr_t)*lowest))
		*lowest = message->bytes + (byte - start);
}

/* The first byte of the message that a resource still reads (its strings and value are read in place),
 * or NULL when it reads none there (they were copied, or are empty). */
static const uint8_t *first_byte_of(const struct xds_message *message,
				    const Envoy__Service__Discovery__V3__Resource *resource)
{
	const uint8_t *lowest = NULL;

	lower_in(message, resource->name, &lowest);
	lower_in(message, resource->version, &lowest);
	for (size_t i = 0; i < resource->n_aliases; i++)
		lower_in(message, resource->aliases[i], &lowest);
	if (resource->resource) {
		lower_in(message, resource->resource->type_url, &lowest);
		lower_in(message, resource->resource->value.data, &lowest);
	}
	return lowest;
}

/*
 * The model has read the first n resources: what lies before the next one goes back to the system. A
 * repeated field's elements come in the message's order, so the resources after it lie after it too;
 * what else the message holds (its type, nonce and removed names) is copied or read before the resources.
 * A full push's message is then given back as the model takes it in, and is not held beside the
 * model's new state at the end of its reading (the apply's peak, a restarted agent's most of all).
 */
static void response_read_up_to(void *ctx, size_t n)
{
	struct held_response *held = ctx;
	const uint8_t *bound;

	if (n < held->response->n_resources && (bound = first_byte_of(&held->message, held->response->resources[n])))
		held->given_back += xds_message_drop_before(&held->message, bound);
}

/* Frees a response as soon as the model has read it: a full push's are tens of MB, held otherwise
 * through the whole apply, at its peak. */
static void release_response(void *ctx)
{
	struct held_response *held = ctx;

	if (held->released)
		return;
	held->released = true;
	sm_pb_arena_reset(held->arena);
	xds_message_free(&held->message);
}

/* Memory ran short for a response (what names it): the stream ends once its answers are sent, and the next
 * one asks for what the response carried. */
static void restart_for_memory(struct sm_xds_client *client, struct stream *stream, const char *what)
{
	if (stream->restart)
		return;
	stream->restart = true;
	xds_log(client, SM_XDS_LOG_WARN, "%s: memory ran short; a new stream will ask for what it carried", what);
}

/* A NACK for a response whose type and nonce are not known (it could not be read or decoded). */
static void nack_unnamed(struct sm_xds_client *client, struct stream *stream, const char *detail)
{
	answer(client, stream, "", "", detail, -1);
	WITH_STATS(client, client->stats.nacks++);
}

/* Says how a response was applied (err, rejections) in the log and the stats, and answers it: ACK or NACK. */
static void answer_applied(struct sm_xds_client *client, struct stream *stream, const char *type_url, const char *nonce,
			   int type, int err, const struct sm_rejections *rejections, size_t n_resources,
			   size_t n_removed)
{
	char *error = NULL;

	if (err) {
		if (asprintf(&error, "the response could not be applied: %s", strerror(-err)) < 0)
			error = NULL;
		xds_log(client, SM_XDS_LOG_ERROR, "%s response %s: %s", type_url, nonce, error ? error : strerror(-err));
	} else if (rejections->count) {
		error = sm_rejections_format(rejections);
		xds_log(client, SM_XDS_LOG_WARN, "NACK %s response %s: %zu rejected: %s", type_url, nonce,
			rejections->count, error ? error : "(out of memory)");
	} else {
		xds_log(client, SM_XDS_LOG_DEBUG, "ACK %s response %s: %zu resources, %zu removed", type_url, nonce,
			n_resources, n_removed);
	}
	WITH_STATS(client, {
		client->stats.rejected_resources += rejections->count;
		client->stats.apply_failures += err != 0;
		if (err || rejections->count)
			client->stats.nacks++;
		else
			client->stats.acks++;
	});
	answer(client, stream, type_url, nonce, err || rejections->count ? (error ? error : "rejected") : NULL, type);
	if (err && client->options.apply_failed)
		client->options.apply_failed(client->options.apply_failed_ctx, err);
	if (err == -ENOMEM) {
		char what[512];
		snprintf(what, sizeof(what), "%s response %s", type_url, nonce);
		restart_for_memory(client, stream, what);
	}
	free(error);
}

/* start: when the response's bytes were in hand (the apply histogram covers decoding too). */
static void apply_response(struct sm_xds_client *client, struct stream *stream,
			   const Envoy__Service__Discovery__V3__DeltaDiscoveryResponse *response,
			   struct held_response *held, double start)
{
	struct sm_rejections rejections = { 0 };
	int type = type_index(response->type_url);
	/* What the answer needs once the response is released; without copies, it is kept to the end. */
	char *type_url_copy = strdup(response->type_url), *nonce_copy = strdup(response->nonce);
	bool copied = type_url_copy && nonce_copy;
	const char *type_url = copied ? type_url_copy : response->type_url;
	const char *nonce = copied ? nonce_copy : response->nonce;
	size_t n_resources = response->n_resources, n_removed = response->n_removed_resources;

	if (client->options.model_lock)
		pthread_mutex_lock(client->options.model_lock);
	held->response = response;
	int err = sm_model_apply_releasing(client->options.model, response,
					   copied ? &(struct sm_response_release){ .read_up_to = response_read_up_to,
										  .release = release_response,
										  .ctx = held }
						  : NULL,
					   client->options.writer, &rejections);
	if (!err && client->options.after_apply)
		client->options.after_apply(client->options.after_apply_ctx, type_url);
	if (client->options.model_lock)
		pthread_mutex_unlock(client->options.model_lock);
	WITH_STATS(client, {
		sm_latency_record(&client->stats.apply, monotonic_seconds() - start);
		client->stats.bytes_given_back += held->given_back;
	});

	if (err == -ECANCELED) /* the agent stops (sm_model_stop_splits): part was taken, the rest never tried */
		xds_log(client, SM_XDS_LOG_INFO, "%s response %s: its split stopped with the agent; not answered (the "
			"next stream asks for the state afresh)", type_url, nonce);
	else
		answer_applied(client, stream, type_url, nonce, type, err, &rejections, n_resources, n_removed);
	sm_rejections_clear(&rejections);
	free(type_url_copy);
	free(nonce_copy);
}

/* A response whose bytes could not be put in one buffer: NACKed as one that does not decode is; one that found
 * memory short is asked for again by a new stream, as answer_applied does. */
static void answer_unread(struct sm_xds_client *client, struct stream *stream, int err)
{
	const char *detail = err == -ENOMEM ? "response could not be read: out of memory"
					    : "response could not be read: gRPC's byte buffer reader refused it";

	xds_log(client, SM_XDS_LOG_ERROR, "a %s", detail);
	nack_unnamed(client, stream, detail);
	if (err == -ENOMEM)
		restart_for_memory(client, stream, "a response that could not be read");
}

/*
 * Takes the buffer: it is freed as soon as its bytes are in one buffer of ours (a full push is tens of MB),
 * which the decoded response points into until the model has read it.
 */
static void handle_message(struct sm_xds_client *client, struct stream *stream, grpc_byte_buffer *buffer)
{
	Envoy__Service__Discovery__V3__DeltaDiscoveryResponse *response;
	struct held_response held = { .arena = &client->arena };
	char err[512];
	double start = monotonic_seconds();
	int join_err = xds_message_join(buffer, &held.message);

	grpc_byte_buffer_destroy(buffer);
	stream->responses++;
	WITH_STATS(client, client->stats.responses++);
	if (join_err) {
		answer_unread(client, stream, join_err);
		return;
	}
	uint8_t *bytes = held.message.bytes; /* ours to write */
	size_t len = held.message.len;

	record(client, bytes, len);
	int decode_err = sm_xds_response_read(&client->arena, bytes, len, &response);
	if (decode_err == -EBADMSG || decode_err == -ENOTSUP) {
		/* What the reader leaves to protobuf-c: forms it does not read, and saying why bytes do not decode. */
		ProtobufCMessage *decoded = NULL;
		decode_err = sm_pb_decode_in(&client->arena,
					     &envoy__service__discovery__v3__delta_discovery_response__descriptor, bytes,
					     len, &decoded, err, sizeof(err));
		response = (Envoy__Service__Discovery__V3__DeltaDiscoveryResponse *)decoded;
	} else if (decode_err) {
		snprintf(err, sizeof(err), "%s", strerror(-decode_err));
	}
	if (decode_err) {
		/* Without its type and nonce it cannot be answered as such; say so in a NACK all the same. */
		char *detail = NULL;
		xds_log(client, SM_XDS_LOG_ERROR, "a %zu-byte response does not decode: %s", len, err);
		if (asprintf(&detail, "response does not decode: %s", err) < 0)
			detail = NULL;
		nack_unnamed(client, stream, detail ? detail : "response does not decode");
		free(detail);
	} else {
		apply_response(client, stream, response, &held, start);
	}
	release_response(&held);
	/* A full push leaves the heap at its peak; give what it freed back to the system. */
	if (len >= TRIM_AFTER_BYTES)
		malloc_trim(0);
}

/* ---- the stream ---- */

static int start_batch(struct stream *stream, const grpc_op *ops, size_t n, enum tag tag)
{
	grpc_call_error err = grpc_call_start_batch(stream->call, ops, n, (void *)(intptr_t)tag, NULL);

	if (err != GRPC_CALL_OK)
		return -EIO;
	stream->outstanding++;
	return 0;
}

static void pump_sends(struct stream *stream)
{
	if (stream->sending || !stream->queue || stream->status_received || stream->cancelled)
		return;
	struct outgoing *out = stream->queue;
	grpc_op op = { .op = GRPC_OP_SEND_MESSAGE, .data.send_message.send_message = out->buffer };

	stream->queue = out->next;
	if (!stream->queue)
		stream->queue_tail = NULL;
	stream->sending = out;
	if (start_batch(stream, &op, 1, TAG_SEND)) {
		stream->sending = NULL;
		grpc_byte_buffer_destroy(out->buffer);
		free(out);
	}
}

static void receive_next(struct stream *stream)
{
	grpc_op op = { .op = GRPC_OP_RECV_MESSAGE, .data.recv_message.recv_message = &stream->received };

	if (!stream->status_received && !stream->cancelled)
		start_batch(stream, &op, 1, TAG_RECV);
}

static char *read_token(struct sm_xds_client *client)
{
	char buf[TOKEN_MAX_BYTES];
	int fd = open(client->options.token_path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0) {
		xds_log(client, SM_XDS_LOG_ERROR, "reading the token %s: %s", client->options.token_path, strerror(errno));
		return NULL;
	}
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n < 0)
		return NULL;
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
		n--;
	buf[n] = '\0';
	char *header = NULL;
	return asprintf(&header, "Bearer %s", buf) < 0 ? NULL : header;
}

static int open_stream(struct sm_xds_client *client, struct stream *stream)
{
	grpc_op start[2] = { 0 };
	size_t n_metadata = 0;

	grpc_metadata_array_init(&stream->initial_metadata);
	grpc_metadata_array_init(&stream->trailing_metadata);
	if (client->options.token_path && (stream->authorization = read_token(client)))
		stream->metadata[n_metadata++] = (grpc_metadata){
			.key = grpc_slice_from_static_string("authorization"),
			.value = grpc_slice_from_static_string(stream->authorization),
		};
	stream->metadata[n_metadata++] = (grpc_metadata){
		.key = grpc_slice_from_static_string("clusterid"),
		.value = grpc_slice_from_static_string(client->options.node->cluster_id),
	};

	stream->call = grpc_channel_create_call(client->channel, NULL, GRPC_PROPAGATE_DEFAULTS, client->cq,
						grpc_slice_from_static_string(SM_DELTA_ADS_METHOD), NULL,
						gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
	if (!stream->call)
		return -ENOMEM;
	WITH_STATS(client, {
		client->current_call = stream->call;
		client->stats.streams++;
	});

	grpc_op status = { .op = GRPC_OP_RECV_STATUS_ON_CLIENT };
	status.data.recv_status_on_client.trailing_metadata = &stream->trailing_metadata;
	status.data.recv_status_on_client.status = &stream->status;
	status.data.recv_status_on_client.status_details = &stream->details;
	status.data.recv_status_on_client.error_string = &stream->error_string;
	start[0] = (grpc_op){ .op = GRPC_OP_SEND_INITIAL_METADATA };
	start[0].data.send_initial_metadata.count = n_metadata;
	start[0].data.send_initial_metadata.metadata = stream->metadata;
	start[1] = (grpc_op){ .op = GRPC_OP_RECV_INITIAL_METADATA };
	start[1].data.recv_initial_metadata.recv_initial_metadata = &stream->initial_metadata;
	if (start_batch(stream, &status, 1, TAG_STATUS) || start_batch(stream, &start[0], 1, TAG_SEND_INITIAL_METADATA) ||
	    start_batch(stream, &start[1], 1, TAG_RECV_INITIAL_METADATA))
		return -EIO;
	for (int type = 0; type < TYPE_COUNT; type++) {
		int err = subscribe(client, stream, type);
		if (err)
			return err;
	}
	receive_next(stream);
	pump_sends(stream);
	return 0;
}

static void close_stream(struct sm_xds_client *client, struct stream *stream)
{
	WITH_STATS(client, client->current_call = NULL);
	for (struct outgoing *out = stream->queue, *next; out; out = next) {
		next = out->next;
		grpc_byte_buffer_destroy(out->buffer);
		free(out);
	}
	if (stream->call)
		grpc_call_unref(stream->call);
	grpc_metadata_array_destroy(&stream->initial_metadata);
	grpc_metadata_array_destroy(&stream->trailing_metadata);
	grpc_slice_unref(stream->details);
	gpr_free((void *)stream->error_string);
	free(stream->authorization);
}

static bool stopping(struct sm_xds_client *client)
{
	bool stop;

	pthread_mutex_lock(&client->lock);
	stop = client->stopping;
	pthread_mutex_unlock(&client->lock);
	return stop;
}

static void mark_answered(struct sm_xds_client *client, int type)
{
	WITH_STATS(client, {
		client->answered[type] = true;
		client->stats.ready = client->answered[TYPE_ADDRESS] && client->answered[TYPE_AUTHORIZATION];
	});
}

static void on_event(struct sm_xds_client *client, struct stream *stream, const grpc_event *event)
{
	stream->outstanding--;
	switch ((enum tag)(intptr_t)event->tag) {
	case TAG_SEND: {
		struct outgoing *sent = stream->sending;
		stream->sending = NULL;
		if (event->success && sent->answers_type >= 0)
			mark_answered(client, sent->answers_type);
		grpc_byte_buffer_destroy(sent->buffer);
		free(sent);
		pump_sends(stream);
		break;
	}
	case TAG_RECV:
		if (!event->success || !stream->received)
			break; /* the stream is ending; its status says how */
		WITH_STATS(client, client->stats.connected = true);
		handle_message(client, stream, stream->received);
		stream->received = NULL;
		if (!stream->restart)
			receive_next(stream);
		pump_sends(stream);
		break;
	case TAG_STATUS:
		stream->status_received = true;
		break;
	case TAG_RECV_INITIAL_METADATA:
		if (event->success)
			WITH_STATS(client, client->stats.connected = true);
		break;
	default:
		break;
	}
}

/* ms from now, on gRPC's monotonic clock. */
static gpr_timespec after_ms(uint64_t ms)
{
	return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis((int64_t)ms, GPR_TIMESPAN));
}

/* Half-closes the stream before a restart: istiod reads the answers sent, then ends it (cancelled at once when
 * the half-close cannot be started, else when no status came by the deadline). */
static void close_sending(struct stream *stream)
{
	grpc_op op = { .op = GRPC_OP_SEND_CLOSE_FROM_CLIENT };

	stream->closing = true;
	stream->close_deadline = start_batch(stream, &op, 1, TAG_CLOSE_SENDING) ? gpr_inf_past(GPR_CLOCK_MONOTONIC)
										: after_ms(CLOSE_GRACE_MS);
}

/* Runs one stream to its end; returns its status and whether it carried any response. */
static grpc_status_code run_stream(struct sm_xds_client *client, bool *healthy)
{
	struct stream stream = { .details = grpc_empty_slice() };
	grpc_status_code status = GRPC_STATUS_UNAVAILABLE;

	if (open_stream(client, &stream)) {
		WITH_STATS(client, snprintf(client->stats.last_error, sizeof(client->stats.last_error),
					    "the stream could not be started"));
		if (stream.call) {
			grpc_call_cancel(stream.call, NULL);
			stream.cancelled = true;
		}
	}
	while (stream.outstanding > 0) {
		gpr_timespec tick = after_ms(TICK_MS);
		grpc_event event = grpc_completion_queue_next(client->cq, tick, NULL);
		if (event.type == GRPC_OP_COMPLETE)
			on_event(client, &stream, &event);
		bool answered_before_restart = stream.restart && !stream.sending && !stream.queue;
		if (answered_before_restart && !stream.closing && !stream.cancelled && !stream.status_received)
			close_sending(&stream);
		bool close_overdue = stream.closing &&
				     gpr_time_cmp(gpr_now(GPR_CLOCK_MONOTONIC), stream.close_deadline) > 0;
		if (stream.call && !stream.cancelled &&
		    (stopping(client) || (stream.status_received && stream.outstanding) || close_overdue)) {
			grpc_call_cancel(stream.call, NULL);
			stream.cancelled = true;
		}
	}
	if (stream.status_received) {
		status = stream.status;
		char *details = grpc_slice_to_c_string(stream.details);
		WITH_STATS(client, {
			if (status != GRPC_STATUS_OK)
				snprintf(client->stats.last_error, sizeof(client->stats.last_error), "%s (%d)%s%s", details,
					 (int)status, stream.error_string ? ": " : "",
					 stream.error_string ? stream.error_string : "");
		});
		if (!stopping(client))
			xds_log(client, status == GRPC_STATUS_OK ? SM_XDS_LOG_INFO : SM_XDS_LOG_WARN,
				"xDS stream to %s ended after %llu responses: status %d: %s", client->options.address,
				(unsigned long long)stream.responses, (int)status, details);
		gpr_free(details);
	}
	*healthy = stream.responses > 0 && !stream.restart; /* memory still short next time: the backoff doubles */
	WITH_STATS(client, client->stats.connected = false);
	close_stream(client, &stream);
	return status;
}

static uint64_t random_u64(void)
{
	uint64_t value = 0;

	if (getrandom(&value, sizeof(value), 0) != sizeof(value))
		value = (uint64_t)time(NULL);
	return value;
}

/*
 * Waits ms before the next stream, ending early when the channel is connected (or the client stops). gRPC
 * keeps a backoff of its own between connection attempts, and a stream started while it waits fails at
 * once with the last attempt's error: after a restart of istiod, streams kept failing with "connection
 * refused" for up to 20 s while it listened again. So the channel is told to connect now, and the stream
 * starts as soon as it is connected.
 */
static void wait_for_channel(struct sm_xds_client *client, uint64_t ms)
{
	gpr_timespec deadline = after_ms(ms);
	grpc_connectivity_state state;

	grpc_channel_reset_connect_backoff(client->channel);
	state = grpc_channel_check_connectivity_state(client->channel, 1);
	while (state != GRPC_CHANNEL_READY && !stopping(client) &&
	       gpr_time_cmp(gpr_now(GPR_CLOCK_MONOTONIC), deadline) < 0) {
		gpr_timespec tick = after_ms(TICK_MS);

		/* completes on a change of state or at its deadline: nothing is left on the queue */
		grpc_channel_watch_connectivity_state(client->channel, state,
						      gpr_time_cmp(tick, deadline) < 0 ? tick : deadline, client->cq,
						      (void *)TAG_CHANNEL_STATE);
		grpc_completion_queue_next(client->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
		state = grpc_channel_check_connectivity_state(client->channel, 1);
	}
}

static void *stream_thread(void *arg)
{
	struct sm_xds_client *client = arg;
	uint64_t backoff = 0;

	while (!stopping(client)) {
		bool healthy = false;
		grpc_status_code status = run_stream(client, &healthy);
		if (stopping(client))
			break;
		/* A clean end of a stream that worked (istiod's max connection age) reconnects at once; any
		 * other end of a stream that worked starts the backoff over; the rest double it (a server
		 * that ends every stream cleanly before answering must not get a tight loop). */
		if (healthy)
			backoff = status == GRPC_STATUS_OK ? 0 : SM_XDS_BACKOFF_MIN_MS;
		else
			backoff = sm_xds_backoff_next(backoff);
		uint64_t wait = backoff ? sm_xds_backoff_jittered(backoff, random_u64()) : 0;
		WITH_STATS(client, client->stats.backoff_ms = wait);
		if (wait)
			xds_log(client, SM_XDS_LOG_INFO, "reconnecting to %s once it answers, within %llu ms",
				client->options.address, (unsigned long long)wait);
		wait_for_channel(client, wait);
	}
	return NULL;
}

/* ---- life ---- */

static char *read_file(const char *path, char *err, size_t size)
{
	FILE *f = fopen(path, "rb");
	char *text = NULL;
	long len;

	if (!f) {
		snprintf(err, size, "%s: %s", path, strerror(errno));
		return NULL;
	}
	if (fseek(f, 0, SEEK_END) == 0 && (len = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
	    (text = malloc((size_t)len + 1)) && fread(text, 1, (size_t)len, f) == (size_t)len) {
		text[len] = '\0';
	} else {
		snprintf(err, size, "%s: cannot read it", path);
		free(text);
		text = NULL;
	}
	fclose(f);
	return text;
}

static grpc_channel_credentials *credentials(const struct sm_xds_options *options, char *err, size_t size)
{
	if (options->plaintext)
		return grpc_insecure_credentials_create();

	char *roots = NULL;
	if (options->root_cert && !(roots = read_file(options->root_cert, err, size)))
		return NULL;
	grpc_channel_credentials *creds = grpc_ssl_credentials_create(roots, NULL, NULL, NULL);
	free(roots);
	if (!creds)
		snprintf(err, size, "TLS credentials from %s could not be made", options->root_cert ? options->root_cert : "the system roots");
	return creds;
}

static grpc_channel *make_channel(const struct sm_xds_options *options, char *err, size_t size)
{
	size_t max_bytes = MAX_MESSAGE_BYTES;
	grpc_arg args[] = {
		{ GRPC_ARG_INTEGER, GRPC_ARG_KEEPALIVE_TIME_MS, { .integer = 30000 } },
		{ GRPC_ARG_INTEGER, GRPC_ARG_KEEPALIVE_TIMEOUT_MS, { .integer = 10000 } },
		{ GRPC_ARG_INTEGER, GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, { .integer = 1 } },
		{ GRPC_ARG_INTEGER, GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, { .integer = 0 } },
		{ GRPC_ARG_INTEGER, GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, { .integer = (int)max_bytes } },
		{ GRPC_ARG_INTEGER, GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, { .integer = SM_XDS_BACKOFF_MIN_MS } },
		/* despite its name, gRPC's floor for one connection attempt's deadline (not a backoff):
		 * at 10 ms a handshake slower than that was cancelled and retried until backoff outgrew it */
		{ GRPC_ARG_INTEGER, GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, { .integer = SM_XDS_CONNECT_TIMEOUT_MS } },
		{ GRPC_ARG_INTEGER, GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, { .integer = SM_XDS_BACKOFF_MAX_MS } },
		{ GRPC_ARG_STRING, GRPC_ARG_PRIMARY_USER_AGENT_STRING, { .string = "sockmesh/" SOCKMESH_VERSION } },
		{ GRPC_ARG_STRING, GRPC_SSL_TARGET_NAME_OVERRIDE_ARG, { .string = (char *)options->server_name } },
	};
	grpc_channel_args channel_args = { .num_args = sizeof(args) / sizeof(args[0]) - (options->server_name ? 0 : 1),
					   .args = args };
	grpc_channel_credentials *creds = credentials(options, err, size);

	if (!creds)
		return NULL;
	grpc_channel *channel = grpc_channel_create(options->address, creds, &channel_args);
	grpc_channel_credentials_release(creds);
	if (!channel)
		snprintf(err, size, "a channel to %s could not be made", options->address);
	return channel;
}

int sm_xds_client_new(const struct sm_xds_options *options, struct sm_xds_client **out, char *err, size_t size)
{
	struct sm_xds_client *client;

	if (!options->address || !options->node || !options->model || !options->writer) {
		snprintf(err, size, "the xDS client needs an address, a node, a model and a map writer");
		return -EINVAL;
	}
	client = calloc(1, sizeof(*client));
	if (!client) {
		snprintf(err, size, "out of memory");
		return -ENOMEM;
	}
	client->options = *options;
	client->record_fd = -1;
	sm_pb_arena_init(&client->arena);
	pthread_mutex_init(&client->lock, NULL);
	grpc_init();
	if (options->record_path) {
		client->record_fd = open(options->record_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
		if (client->record_fd < 0) {
			int ret = -errno;
			snprintf(err, size, "%s: %s", options->record_path, strerror(-ret));
			sm_xds_client_free(client);
			return ret;
		}
	}
	client->channel = make_channel(options, err, size);
	if (!client->channel) {
		sm_xds_client_free(client);
		return -EINVAL;
	}
	client->cq = grpc_completion_queue_create_for_next(NULL);
	*out = client;
	return 0;
}

int sm_xds_client_start(struct sm_xds_client *client)
{
	int err = pthread_create(&client->thread, NULL, stream_thread, client);

	if (err)
		return -err;
	client->started = true;
	return 0;
}

void sm_xds_client_free(struct sm_xds_client *client)
{
	if (!client)
		return;
	pthread_mutex_lock(&client->lock);
	client->stopping = true;
	if (client->current_call)
		grpc_call_cancel(client->current_call, NULL);
	pthread_mutex_unlock(&client->lock);
	if (client->started)
		pthread_join(client->thread, NULL);
	if (client->channel)
		grpc_channel_destroy(client->channel);
	if (client->cq) {
		grpc_completion_queue_shutdown(client->cq);
		while (grpc_completion_queue_next(client->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
		       GRPC_QUEUE_SHUTDOWN)
			;
		grpc_completion_queue_destroy(client->cq);
	}
	if (client->record_fd >= 0)
		close(client->record_fd);
	sm_pb_arena_release(&client->arena);
	grpc_shutdown();
	pthread_mutex_destroy(&client->lock);
	free(client);
}
