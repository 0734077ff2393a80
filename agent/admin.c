/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The admin endpoint (libmicrohttpd, a thread per connection): /config_dump in the shape of ztunnel's,
 * /healthz/ready, and /metrics in Prometheus text. It only reads: the model under its lock, the xDS
 * client's and datapath's counters. /metrics waits for the model a second at most: past that it gives the
 * model's figures it read last.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <microhttpd.h>

#include "agent/agent.h"
#include "agent/authz.h"
#include "agent/explain.h"
#include "agent/enroller.h"
#include "agent/log.h"
#include "agent/telemetry.h"

/* What /metrics last read of the model, for a scrape that finds it held too long. */
struct model_memo {
	pthread_mutex_t lock;
	struct sm_model_stats stats;
	uint64_t local_apply_failures;
};

struct admin {
	struct MHD_Daemon *daemon;
	struct agent *agent;
	struct model_memo memo;
};

enum { ENDPOINT_CONNECTIONS = 32, ENDPOINT_IDLE_SECONDS = 60 };

/* How long /metrics waits for the model: a full push of 1M workloads holds it for 5-10 s, and a scraper
 * gives up after 10 s (Prometheus' default scrape_timeout); a split lets it in between two runs sooner. */
enum { METRICS_MODEL_WAIT_MS = 1000 };

/* A growing text buffer for the metrics page. */
struct text {
	char *data;
	size_t len, capacity;
	bool failed;
};

static void append(struct text *text, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (text->failed)
		return;
	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(text->data ? text->data + text->len : NULL, text->capacity - text->len, fmt, ap);
		va_end(ap);
		if (n < 0) {
			text->failed = true;
			return;
		}
		if (text->len + (size_t)n < text->capacity) {
			text->len += (size_t)n;
			return;
		}
		size_t capacity = (text->capacity ? text->capacity * 2 : 4096) + (size_t)n;
		char *data = realloc(text->data, capacity);
		if (!data) {
			text->failed = true;
			return;
		}
		text->data = data;
		text->capacity = capacity;
	}
}

static void histogram(struct text *text, const char *name, const char *help, const struct sm_latency *latency)
{
	uint64_t cumulative = 0;

	append(text, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
	for (int b = 0; b < SM_LATENCY_BUCKETS; b++) {
		cumulative += latency->buckets[b];
		append(text, "%s_bucket{le=\"%g\"} %llu\n", name, sm_latency_bounds[b], (unsigned long long)cumulative);
	}
	cumulative += latency->buckets[SM_LATENCY_BUCKETS];
	append(text, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.9f\n%s_count %llu\n", name, (unsigned long long)cumulative,
	       name, latency->sum, name, (unsigned long long)latency->count);
}

static void metric(struct text *text, const char *name, const char *type, const char *help, unsigned long long value)
{
	append(text, "# HELP %s %s\n# TYPE %s %s\n%s %llu\n", name, help, name, type, name, value);
}

/* The model's figures for /metrics: read now when the model is free within METRICS_MODEL_WAIT_MS, else the
 * last ones read (by a scrape, or at the endpoint's start, before any config was applied). */
static void model_figures(struct admin *admin, struct sm_model_stats *stats, uint64_t *local_apply_failures)
{
	struct agent *agent = admin->agent;
	struct model_memo *memo = &admin->memo;
	bool fresh = model_gate_lock_within(&agent->model_gate, METRICS_MODEL_WAIT_MS);

	if (fresh) {
		sm_model_stats(agent->model, stats);
		*local_apply_failures = agent->local_apply_failures;
		model_gate_unlock(&agent->model_gate);
	}
	pthread_mutex_lock(&memo->lock);
	if (fresh) {
		memo->stats = *stats;
		memo->local_apply_failures = *local_apply_failures;
	} else {
		*stats = memo->stats;
		*local_apply_failures = memo->local_apply_failures;
	}
	pthread_mutex_unlock(&memo->lock);
}

static char *metrics(struct admin *admin, size_t *len)
{
	struct agent *agent = admin->agent;
	struct text text = { 0 };
	struct sm_xds_stats xds = { 0 };
	struct sm_model_stats model;
	uint64_t counters[SM_COUNTER_MAX], local_apply_failures;
	char why[128];

	if (agent->xds)
		sm_xds_client_stats(agent->xds, &xds);
	else
		xds.apply = agent->local_apply;
	model_figures(admin, &model, &local_apply_failures);
	if (!agent->xds)
		xds.apply_failures = local_apply_failures;

	metric(&text, "sockmesh_ready", "gauge", "1 once config is applied and the datapath attached",
	       agent_ready(agent, why, sizeof(why)));
	if (agent->options.kube_watch)
		metric(&text, "sockmesh_enrolled_pods", "gauge", "pods of this node whose network namespace is enrolled",
		       enroller_enrolled_pods(atomic_load(&agent->enroller)));
	metric(&text, "sockmesh_xds_connected", "gauge", "1 while an xDS stream is up", xds.connected);
	metric(&text, "sockmesh_xds_streams_total", "counter", "xDS streams started", xds.streams);
	metric(&text, "sockmesh_xds_responses_total", "counter", "xDS responses received", xds.responses);
	metric(&text, "sockmesh_xds_acks_total", "counter", "responses answered with an ACK", xds.acks);
	metric(&text, "sockmesh_xds_nacks_total", "counter", "responses answered with a NACK", xds.nacks);
	metric(&text, "sockmesh_xds_rejected_resources_total", "counter", "resources rejected in NACKs",
	       xds.rejected_resources);
	metric(&text, "sockmesh_xds_apply_failures_total", "counter",
	       "responses that could not be applied at all (out of memory; maps unlike the model), NACKed whole",
	       xds.apply_failures);
	histogram(&text, "sockmesh_apply_duration_seconds", "time to decode, apply and write one response", &xds.apply);

	append(&text, "# HELP sockmesh_resources resources held, by type\n# TYPE sockmesh_resources gauge\n");
	append(&text, "sockmesh_resources{type=\"workload\"} %zu\n", model.workloads);
	append(&text, "sockmesh_resources{type=\"service\"} %zu\n", model.services);
	append(&text, "sockmesh_resources{type=\"authorization\"} %zu\n", model.authorizations);
	append(&text, "# HELP sockmesh_map_entries entries in each datapath map\n# TYPE sockmesh_map_entries gauge\n");
	for (int m = 0; m < SM_MAP_COUNT; m++)
		append(&text, "sockmesh_map_entries{map=\"%s\"} %zu\n", sm_map_name(m), model.map_entries[m]);
	append(&text, "# HELP sockmesh_map_capacity capacity of each datapath map\n# TYPE sockmesh_map_capacity gauge\n");
	for (int m = 0; m < SM_MAP_COUNT; m++)
		append(&text, "sockmesh_map_capacity{map=\"%s\"} %zu\n", sm_map_name(m), model.map_capacity[m]);
	append(&text, "# HELP sockmesh_map_overflows_total resources rejected because a map was full\n"
		      "# TYPE sockmesh_map_overflows_total counter\n");
	for (int m = 0; m < SM_MAP_COUNT; m++)
		append(&text, "sockmesh_map_overflows_total{map=\"%s\"} %llu\n", sm_map_name(m),
		       (unsigned long long)model.map_overflows[m]);
	bool have_counters = sm_datapath_counters(agent->dp, counters) == 0;
	if (have_counters) {
		append(&text, "# HELP sockmesh_datapath_total connections and messages by outcome\n"
			      "# TYPE sockmesh_datapath_total counter\n");
		for (int c = 0; c < SM_COUNTER_MAX; c++)
			append(&text, "sockmesh_datapath_total{outcome=\"%s\"} %llu\n", sm_counter_name(c),
			       (unsigned long long)counters[c]);
	}
	if (agent->telemetry) {
		char *telemetry = agent_telemetry_admin_metrics(agent->telemetry, have_counters ? counters : NULL);
		if (telemetry)
			append(&text, "%s", telemetry);
		text.failed |= !telemetry;
		free(telemetry);
	}
	char *authz = agent_authz_metrics(agent->authz);
	if (authz)
		append(&text, "%s", authz);
	text.failed |= !authz;
	free(authz);
	if (text.failed) {
		free(text.data);
		return NULL;
	}
	*len = text.len;
	return text.data;
}

static enum MHD_Result respond(struct MHD_Connection *connection, unsigned int status, char *body, size_t len,
			       const char *type)
{
	struct MHD_Response *response = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
	enum MHD_Result ret;

	if (!response) {
		free(body);
		return MHD_NO;
	}
	MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, type);
	ret = MHD_queue_response(connection, status, response);
	MHD_destroy_response(response);
	return ret;
}

static enum MHD_Result respond_text(struct MHD_Connection *connection, unsigned int status, const char *message)
{
	char *body = strdup(message);

	return body ? respond(connection, status, body, strlen(body), "text/plain; charset=utf-8") : MHD_NO;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *connection, const char *url, const char *method,
			      const char *version, const char *upload_data, size_t *upload_data_size, void **state)
{
	struct admin *admin = cls;
	struct agent *agent = admin->agent;
	char why[256];

	(void)version;
	(void)upload_data;
	(void)upload_data_size;
	(void)state;
	if (strcmp(method, "GET") != 0)
		return respond_text(connection, MHD_HTTP_METHOD_NOT_ALLOWED, "only GET\n");

	if (strcmp(url, "/healthz/ready") == 0) {
		bool ready = agent_ready(agent, why, sizeof(why));
		char body[300];
		snprintf(body, sizeof(body), "%s\n", ready ? "ready" : why);
		return respond_text(connection, ready ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE, body);
	}
	if (strcmp(url, "/config_dump") == 0) {
		model_gate_lock(&agent->model_gate);
		json_t *dump = sm_model_config_dump(agent->model);
		model_gate_unlock(&agent->model_gate);
		char *text = dump ? json_dumps(dump, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;
		json_decref(dump);
		if (!text)
			return respond_text(connection, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
		return respond(connection, MHD_HTTP_OK, text, strlen(text), "application/json");
	}
	if (strcmp(url, "/explain") == 0) {
		const char *from = MHD_lookup_connection_value(connection, MHD_GET_ARGUMENT_KIND, "from");
		const char *to = MHD_lookup_connection_value(connection, MHD_GET_ARGUMENT_KIND, "to");
		json_t *answer = agent_explain(agent, from, to, why, sizeof(why));
		char *text = answer ? json_dumps(answer, JSON_INDENT(2)) : NULL;
		json_decref(answer);
		if (!answer) {
			char body[300];
			snprintf(body, sizeof(body), "%s\n", why);
			return respond_text(connection, MHD_HTTP_BAD_REQUEST, body);
		}
		if (!text)
			return respond_text(connection, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
		return respond(connection, MHD_HTTP_OK, text, strlen(text), "application/json");
	}
	if (strcmp(url, "/metrics") == 0) {
		size_t len;
		char *text = metrics(admin, &len);
		if (!text)
			return respond_text(connection, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
		return respond(connection, MHD_HTTP_OK, text, len, "text/plain; version=0.0.4");
	}
	return respond_text(connection, MHD_HTTP_NOT_FOUND, "sockmesh serves /config_dump, /explain?from=IP&to=IP:PORT, /healthz/ready and /metrics\n");
}

int admin_bind(const char *what, const char *address, int *fd_out, char *bound, size_t bound_size, char *err,
	       size_t size)
{
	struct sockaddr_storage addr;
	socklen_t len;
	char host[INET6_ADDRSTRLEN];
	int fd, ret = parse_ip_port(address, &addr);

	if (ret) {
		snprintf(err, size, "%s address '%s' is not IP:PORT or [IPv6]:PORT", what, address);
		return ret;
	}
	len = addr.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
	fd = socket(addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(err, size, "%s address %s: socket: %s", what, address, strerror(errno));
		return -errno;
	}
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &(int){ 1 }, sizeof(int)) || bind(fd, (struct sockaddr *)&addr, len) ||
	    listen(fd, 64) || getsockname(fd, (struct sockaddr *)&addr, &len)) {
		ret = -errno;
		snprintf(err, size, "cannot serve the %s endpoint on %s: %s", what, address, strerror(-ret));
		close(fd);
		return ret;
	}
	if (addr.ss_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&addr;
		inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
		snprintf(bound, bound_size, "[%s]:%u", host, ntohs(in6->sin6_port));
	} else {
		const struct sockaddr_in *in = (const struct sockaddr_in *)&addr;
		inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
		snprintf(bound, bound_size, "%s:%u", host, ntohs(in->sin_port));
	}
	*fd_out = fd;
	return 0;
}

/* libmicrohttpd's own messages, in the agent's log format. */
static void mhd_log(void *cls, const char *fmt, va_list ap)
{
	char line[512];
	size_t len;

	(void)cls;
	vsnprintf(line, sizeof(line), fmt, ap);
	len = strlen(line);
	while (len && line[len - 1] == '\n')
		line[--len] = '\0';
	log_msg(LOG_WARN, "admin endpoint: %s", line);
}

/* The metrics endpoint (--metrics-address): the istio_tcp_* counters, at ztunnel's two paths. */
static enum MHD_Result handle_metrics(void *cls, struct MHD_Connection *connection, const char *url,
				      const char *method, const char *version, const char *upload_data,
				      size_t *upload_data_size, void **state)
{
	struct admin *admin = cls;
	size_t len;

	(void)version;
	(void)upload_data;
	(void)upload_data_size;
	(void)state;
	if (strcmp(method, "GET") != 0)
		return respond_text(connection, MHD_HTTP_METHOD_NOT_ALLOWED, "only GET\n");
	if (strcmp(url, "/metrics") != 0 && strcmp(url, "/stats/prometheus") != 0)
		return respond_text(connection, MHD_HTTP_NOT_FOUND, "sockmesh serves /metrics and /stats/prometheus here\n");
	char *text = agent_telemetry_istio_metrics(admin->agent->telemetry, &len);
	if (!text)
		return respond_text(connection, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
	return respond(connection, MHD_HTTP_OK, text, len, "text/plain; version=0.0.4; charset=utf-8");
}

static int start_daemon(struct agent *agent, int fd, MHD_AccessHandlerCallback handler, const char *what,
			struct admin **out, char *err, size_t size)
{
	struct admin *admin = calloc(1, sizeof(*admin));

	if (!admin) {
		snprintf(err, size, "%s endpoint: out of memory", what);
		return -ENOMEM;
	}
	admin->agent = agent;
	pthread_mutex_init(&admin->memo.lock, NULL);
	/* A thread per connection: a request that waits for the model (an apply holds it: a full push for
	 * seconds, a split for longer) must not hold up the kubelet's /healthz/ready behind it. Bounded, and
	 * idle connections dropped, so that kept-alive ones cannot take every thread. The logger first:
	 * libmicrohttpd prints on stderr what comes before it. */
	admin->daemon = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
						 MHD_USE_ERROR_LOG,
					 0, NULL, NULL, handler, admin, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
					 MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_CONNECTION_LIMIT, (unsigned)ENDPOINT_CONNECTIONS,
					 MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)ENDPOINT_IDLE_SECONDS, MHD_OPTION_END);
	if (!admin->daemon) {
		snprintf(err, size, "cannot start the %s endpoint (libmicrohttpd's message above says why)", what);
		pthread_mutex_destroy(&admin->memo.lock);
		free(admin);
		return -EIO;
	}
	*out = admin;
	return 0;
}

int admin_start(struct agent *agent, int fd, struct admin **out, char *err, size_t size)
{
	struct model_memo *memo;
	int ret = start_daemon(agent, fd, handle, "admin", out, err, size);

	if (ret)
		return ret;
	/* before any config is applied: the figures a scrape gives while the first one is */
	memo = &(*out)->memo;
	model_gate_lock(&agent->model_gate);
	pthread_mutex_lock(&memo->lock);
	sm_model_stats(agent->model, &memo->stats);
	memo->local_apply_failures = agent->local_apply_failures;
	pthread_mutex_unlock(&memo->lock);
	model_gate_unlock(&agent->model_gate);
	return 0;
}

int metrics_start(struct agent *agent, int fd, struct admin **out, char *err, size_t size)
{
	return start_daemon(agent, fd, handle_metrics, "metrics", out, err, size);
}

void admin_stop(struct admin *admin)
{
	if (!admin)
		return;
	MHD_stop_daemon(admin->daemon);
	pthread_mutex_destroy(&admin->memo.lock);
	free(admin);
}
