/* SPDX-License-Identifier: Apache-2.0 */
/*
 * xds/: the Delta ADS client that talks to istiod (gRPC C core, one stream on its own thread), the
 * node identity istiod expects of an ambient node agent, and ztunnel's local config as an xDS source.
 * It knows nothing of BPF: responses go to the workload model, whose rejections make the NACKs.
 */
#ifndef SOCKMESH_XDS_H
#define SOCKMESH_XDS_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "workload/workload.h"

/* ---- node identity ---- */

struct sm_xds_metadata {
	char *key;
	char *value;
};

/* Who this agent is to istiod (ztunnel's node type and metadata). */
struct sm_xds_node {
	char *instance_ip;
	char *pod_name;
	char *pod_namespace;
	char *node_name;
	char *cluster_id;
	struct sm_xds_metadata *extra; /* ISTIO_META_* with the prefix stripped */
	size_t n_extra;
};

/* Reads INSTANCE_IP, POD_NAME, POD_NAMESPACE, NODE_NAME, CLUSTER_ID and ISTIO_META_* from envp. */
int sm_xds_node_from_env(struct sm_xds_node *node, char *const *envp);
void sm_xds_node_clear(struct sm_xds_node *node);
/*
 * The environment variables this node lacks (unset or empty) among INSTANCE_IP, POD_NAME, POD_NAMESPACE
 * (the parts of the node id) and NODE_NAME (locality, acceleration): their names, comma-separated, into
 * out ("" when none is missing); returns how many are missing. For the caller to warn: without them the
 * id degenerates to "ztunnel~~.~.svc.cluster.local" and istiod cannot tell which pod this is.
 */
size_t sm_xds_node_missing(const struct sm_xds_node *node, char *out, size_t size);
/* "ztunnel~<ip>~<pod>.<namespace>~<namespace>.svc.cluster.local" into out; returns its length. */
size_t sm_xds_node_id(const struct sm_xds_node *node, char *out, size_t size);
/* The Node message of the first request of each type; free with sm_xds_node_message_free. */
Envoy__Service__Discovery__V3__Node *sm_xds_node_message(const struct sm_xds_node *node);
void sm_xds_node_message_free(Envoy__Service__Discovery__V3__Node *message);

/* ---- the client ---- */

enum sm_xds_log_level {
	SM_XDS_LOG_ERROR,
	SM_XDS_LOG_WARN,
	SM_XDS_LOG_INFO,
	SM_XDS_LOG_DEBUG,
};

struct sm_xds_options {
	const char *address;	 /* "host:port" */
	bool plaintext;		 /* no TLS (istiod's port 15010, tests) */
	const char *root_cert;	 /* PEM file of the CA that signs istiod's certificate */
	const char *server_name; /* the name the certificate must carry, when address is not it */
	const char *token_path;	 /* bearer token file, read again for each new stream; NULL: none */
	const char *record_path; /* append every response received to this recorded stream */
	const struct sm_xds_node *node;

	/* Where responses go: applied under model_lock (NULL: no lock) with writer. */
	struct sm_model *model;
	struct sm_map_writer *writer;
	pthread_mutex_t *model_lock;
	/* Called after each response is applied without error (under the lock), before its ACK or NACK
	 * is sent. */
	void (*after_apply)(void *ctx, const char *type_url);
	void *after_apply_ctx;
	/* Called with a response's error when it could not be applied (no lock held), after its NACK is
	 * queued: -ENOMEM (the client itself resumes on a new stream), -EIO (a failed write could not be undone:
	 * the maps differ from the model, and no later response repairs that). NULL: none. */
	void (*apply_failed)(void *ctx, int err);
	void *apply_failed_ctx;
	/* Log lines (one per event); NULL: none. */
	void (*log)(enum sm_xds_log_level level, const char *line);
};

/* Apply latencies, for a Prometheus histogram: counts per bucket (the last is +Inf), their sum. */
#define SM_LATENCY_BUCKETS 10
extern const double sm_latency_bounds[SM_LATENCY_BUCKETS]; /* seconds */

struct sm_latency {
	uint64_t buckets[SM_LATENCY_BUCKETS + 1];
	uint64_t count;
	double sum;
};

void sm_latency_record(struct sm_latency *latency, double seconds);

struct sm_xds_stats {
	bool connected;		/* a stream is up */
	bool ready;		/* the first response of each type has been applied and answered */
	uint64_t streams;	/* streams started */
	uint64_t responses;	/* responses received */
	uint64_t acks;
	uint64_t nacks;
	uint64_t rejected_resources;
	uint64_t apply_failures; /* responses that could not be applied at all (out of memory, -EIO): NACKed whole */
	uint64_t bytes_given_back; /* of received messages, unmapped while the model still read the rest */
	uint64_t backoff_ms;	/* the longest wait before the next stream, if disconnected */
	char last_error[256];	/* the last stream's end, when it was an error */
	struct sm_latency apply; /* decode, apply and plan of each response */
};

struct sm_xds_client;

/* Creates the client (and its channel); nothing is sent before start. Returns 0 or -errno (err says why). */
int sm_xds_client_new(const struct sm_xds_options *options, struct sm_xds_client **out, char *err, size_t err_size);
/* Starts the stream thread: connect, subscribe, apply, answer, reconnect. */
int sm_xds_client_start(struct sm_xds_client *client);
/* Ends the stream (cancelling the call), joins the thread and frees everything. */
void sm_xds_client_free(struct sm_xds_client *client);
void sm_xds_client_stats(struct sm_xds_client *client, struct sm_xds_stats *stats);

/* The reconnect backoff: 10 ms doubling to 15 s, with up to 25% jitter either way. */
#define SM_XDS_BACKOFF_MIN_MS 10
#define SM_XDS_BACKOFF_MAX_MS 15000
/* How long one connection attempt (TCP, TLS, HTTP/2) may take: gRPC's own default. */
#define SM_XDS_CONNECT_TIMEOUT_MS 20000
uint64_t sm_xds_backoff_next(uint64_t current_ms);
uint64_t sm_xds_backoff_jittered(uint64_t base_ms, uint64_t random);

/* ---- ztunnel's local config (LOCAL_XDS_PATH) ---- */

/*
 * Reads ztunnel's local config (YAML or JSON: workloads, services, policies), or the workloads and
 * services of a ztunnel config dump, into two responses: Address and Authorization, each holding the
 * whole file's resources of its type (the full desired state; no removals). Each is packed into bytes
 * (free with free()). Strict: an unknown key, a value of the wrong shape, a duplicate key, service,
 * workload or policy, a file with neither `workloads` nor `services` is refused. Returns 0, or -errno
 * (-EINVAL, -EISDIR, -ENOENT, ...) with the file, line and reason in err and both outputs NULL.
 */
int sm_local_config_read(const char *path, uint8_t **address_response, size_t *address_len,
			 uint8_t **authorization_response, size_t *authorization_len, char *err, size_t err_size);

#endif
