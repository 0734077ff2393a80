/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The agent's work per connection event for L4 telemetry, in one process: a model of WORKLOADS pods
 * (ten per Deployment) behind SERVICES services, all on this node, and synthetic connection ends fed
 * through what the agent runs for each event: the ends named from the model, sm_telemetry_record, the
 * access log line (plain, or JSON) and its queueing to the writer (which writes to /dev/null). The mix: nine in ten
 * connections between two pods through a service VIP, each reported by both ends (reporter=source and
 * reporter=destination), one in twenty to an address outside the mesh, one in twenty from one.
 *
 * Prints ns per event for each round and their median, and digests of the access log lines (at a fixed
 * clock) and of the metrics text, so that two builds can be checked to give the same output byte for byte.
 *
 * To compare with an older agent, build this file in a tree of that commit (its digests must match).
 *
 * Usage: telemetry_bench [EVENTS [WORKLOADS [SERVICES [ROUNDS [plain|json]]]]]
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "agent/access_log.h"
#include "agent/agent.h"
#include "bench/snapshot.h"
#include "bpf/sockmesh.h"
#include "telemetry/telemetry.h"

#include "agent/telemetry_event.h"

#define LINE_MAX_BYTES 8192 /* as agent/telemetry.c */

static int null_apply(struct sm_map_writer *writer, const struct sm_map_op *ops, size_t n, size_t *applied)
{
	(void)writer;
	(void)ops;
	*applied = n;
	return 0;
}

static struct sm_map_writer null_writer = { .apply = null_apply };

static void workload_ip(int i, char *out, size_t size)
{
	snprintf(out, size, "10.64.%d.%d", i / 256, i % 256);
}

static void make_pod(struct response *r, int i, int n_services)
{
	char *uid = response_alloc(r, 64), *ip = response_alloc(r, 20), *service = response_alloc(r, 64);
	char *app = response_alloc(r, 32), *sa = response_alloc(r, 32), *ns = response_alloc(r, 16);

	int service_of = (i / 10) % n_services; /* a Deployment's pods back one service, in its namespace */

	snprintf(ns, 16, "ns%d", service_of % 10);
	snprintf(uid, 64, "Kubernetes//Pod/%s/app-%d-7d9f8b6c5-%05d", ns, i / 10, i);
	workload_ip(i, ip, 20);
	snprintf(service, 64, "%s/svc-%d.%s.svc.cluster.local", ns, service_of, ns);
	snprintf(app, 32, "app-%d", i / 10);
	snprintf(sa, 32, "sa-%d", i / 10);
	struct workload_spec spec = {
		.uid = uid, .addresses = { ip }, .node = "bench-node", .region = "region-1", .zone = "zone-a",
		.namespace = ns, .services = { { service, { { 80, 8080 } } } },
	};
	Istio__Workload__Workload *w = workload_from(r, &spec);
	w->name = uid + strlen("Kubernetes//Pod/") + strlen(ns) + 1;
	w->workload_name = app;
	w->canonical_name = app;
	w->canonical_revision = "v1";
	w->service_account = sa;
	w->trust_domain = "cluster.local";
	response_add_workload_msg(r, w, "v1");
}

static void make_svc(struct response *r, int s)
{
	char *ns = response_alloc(r, 16), *host = response_alloc(r, 64), *vip = response_alloc(r, 20);

	snprintf(ns, 16, "ns%d", s % 10);
	snprintf(host, 64, "svc-%d.%s.svc.cluster.local", s, ns);
	snprintf(vip, 20, "10.96.0.%d", s);
	struct service_spec spec = { .namespace = ns, .hostname = host, .vips = { vip }, .ports = { { 80, 8080 } } };
	response_add_service(r, &spec, "v1");
}

static struct sm_model *make_model(int n_workloads, int n_services)
{
	struct sm_model_options options = { .node_name = "bench-node" };
	struct sm_rejections rejections = { 0 };
	struct sm_model *model;
	ProtobufCMessage *msg;
	struct response r;
	size_t len;
	char err[256];

	response_init(&r, SM_TYPE_URL_ADDRESS);
	for (int s = 0; s < n_services; s++)
		make_svc(&r, s);
	for (int i = 0; i < n_workloads; i++)
		make_pod(&r, i, n_services);
	uint8_t *bytes = response_pack(&r, &len);
	if (sm_model_new(&options, &model) ||
	    sm_pb_decode(&envoy__service__discovery__v3__delta_discovery_response__descriptor, bytes, len, &msg, err,
			 sizeof(err)) ||
	    sm_model_apply(model, (void *)msg, &null_writer, &rejections) || rejections.count) {
		fprintf(stderr, "telemetry_bench: the model: %s\n", rejections.count ? rejections.items[0].reason : err);
		exit(1);
	}
	protobuf_c_message_free_unpacked(msg, NULL);
	response_free(&r);
	free(bytes);
	return model;
}

static void mapped(const char *text, uint8_t out[16])
{
	memset(out, 0, 16);
	out[10] = out[11] = 0xff;
	inet_pton(AF_INET, text, out + 12);
}

/* xorshift: the same events in every build */
static uint32_t next_random(uint64_t *state)
{
	*state ^= *state << 13;
	*state ^= *state >> 7;
	*state ^= *state << 17;
	return (uint32_t)(*state >> 16);
}

/* n connection ends, in the order the ring buffer would hold them */
static struct sm_conn_event *make_events(size_t n, int n_workloads, int n_services)
{
	struct sm_conn_event *events = calloc(n, sizeof(*events));
	uint64_t random = 88172645463325252ULL, cookie = 1;
	char ip[20];

	for (size_t k = 0; k < n;) {
		uint32_t kind = next_random(&random) % 20;
		int client = (int)(next_random(&random) % (uint32_t)n_workloads);
		int s = (int)(next_random(&random) % (uint32_t)n_services);
		/* a pod of one of the Deployments behind service s */
		int server = 10 * (s + n_services * (int)(next_random(&random) % (uint32_t)(n_workloads / 10 / n_services))) +
			     (int)(next_random(&random) % 10);
		uint16_t port = (uint16_t)(32768 + next_random(&random) % 28000);
		struct sm_conn_event out = {
			.kind = SM_CONN_CLOSED, .start_ns = 1000000, .now_ns = 1000000 + 150000 + k,
			.bytes_sent = 64, .bytes_received = 64, .srtt_us = 40, .min_rtt_us = 20,
		}, in = out;

		workload_ip(client, ip, sizeof(ip));
		mapped(ip, out.local_addr);
		workload_ip(server, ip, sizeof(ip));
		mapped(ip, out.remote_addr);
		snprintf(ip, sizeof(ip), "10.96.0.%d", s);
		mapped(ip, out.orig_addr);
		if (kind == 0) { /* to the outside: nothing translated */
			snprintf(ip, sizeof(ip), "192.0.2.%d", s);
			mapped(ip, out.remote_addr);
			memcpy(out.orig_addr, out.remote_addr, 16);
		}
		out.direction = SM_CONN_OUTBOUND;
		out.local_port = htons(port);
		out.remote_port = out.orig_port = htons(kind == 0 ? 443 : 8080);
		out.socket_cookie = cookie++;
		in.direction = SM_CONN_INBOUND;
		memcpy(in.local_addr, out.remote_addr, 16);
		memcpy(in.remote_addr, out.local_addr, 16);
		in.local_port = out.remote_port;
		in.remote_port = out.local_port;
		in.socket_cookie = cookie++;
		if (kind == 1) { /* from the outside */
			snprintf(ip, sizeof(ip), "198.51.100.%d", s);
			mapped(ip, in.remote_addr);
		}
		if (kind != 1)
			events[k++] = out;
		if (kind != 0 && k < n)
			events[k++] = in;
	}
	return events;
}

/* FNV-1a, to compare two builds' output */
static uint64_t digest(uint64_t h, const char *bytes, size_t len)
{
	for (size_t i = 0; i < len; i++)
		h = (h ^ (uint8_t)bytes[i]) * 1099511628211ULL;
	return h;
}

struct bench {
	const struct sm_model *model;
	struct sm_telemetry *counters;
	struct access_log *log;
	struct sm_tel_log_cache *log_cache;
	enum sm_tel_log_format format;
	uint64_t log_digest;
	size_t log_bytes;
	struct tel_event_sink sink;
};

static size_t event_line(struct bench *b, const struct sm_conn_event *ev, const struct timespec *now, char *line,
			 size_t size)
{
	size_t len;

	tel_event_conn(&b->sink, b->model, ev, now, line, size, &len);
	return len;
}

/* One pass over the events, as the agent's events thread runs it (the model lock is not contended). */
static double run(struct bench *b, const struct sm_conn_event *events, size_t n, bool keep_digest)
{
	static pthread_mutex_t model_lock = PTHREAD_MUTEX_INITIALIZER;
	struct timespec now = { .tv_sec = 1764812400, .tv_nsec = 0 };
	char line[LINE_MAX_BYTES];
	double start = now_seconds();

	for (size_t k = 0; k < n; k++) {
		/* a fixed clock that moves 10 µs an event: the same lines in every build */
		now.tv_nsec += 10000;
		if (now.tv_nsec >= 1000000000L) {
			now.tv_sec++;
			now.tv_nsec -= 1000000000L;
		}
		pthread_mutex_lock(&model_lock);
		size_t len = event_line(b, &events[k], &now, line, sizeof(line));
		pthread_mutex_unlock(&model_lock);
		if (len && len < sizeof(line)) {
			access_log_write(b->log, line, len);
			if (keep_digest) {
				b->log_digest = digest(b->log_digest, line, len);
				b->log_bytes += len;
			}
		}
	}
	return now_seconds() - start;
}

static int compare_doubles(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	size_t n = argc > 1 ? strtoul(argv[1], NULL, 10) : 200000;
	int n_workloads = argc > 2 ? atoi(argv[2]) : 300;
	int n_services = argc > 3 ? atoi(argv[3]) : 6;
	int rounds = argc > 4 ? atoi(argv[4]) : 5;
	bool json = argc > 5 && strcmp(argv[5], "json") == 0;
	struct bench b = { .log_digest = 14695981039346656037ULL,
			   .format = json ? SM_TEL_LOG_JSON : SM_TEL_LOG_PLAIN };
	int null_fd = open("/dev/null", O_WRONLY);
	double *ns = calloc((size_t)rounds, sizeof(double));

	if (n_workloads < 10 * n_services || n_workloads % 10 || n_services < 1 || n_services > 250 || n_workloads > 65536 || rounds < 1 ||
	    null_fd < 0) {
		fprintf(stderr, "usage: telemetry_bench [EVENTS [WORKLOADS [SERVICES [ROUNDS [plain|json]]]]]\n");
		return 2;
	}
	b.model = make_model(n_workloads, n_services);
	struct sm_conn_event *events = make_events(n, n_workloads, n_services);
	if (access_log_new(4u << 20, null_fd, &b.log)) {
		fprintf(stderr, "telemetry_bench: the access log\n");
		return 1;
	}
	if (sm_telemetry_new(&b.counters) || sm_tel_log_cache_new(&b.log_cache))
		return 1;
	b.sink = (struct tel_event_sink){
		.counters = b.counters, .access_log = true, .format = b.format, .log_cache = b.log_cache,
	};
	/* a first pass creates the series (and digests the lines); the rounds measure the steady state */
	double first = run(&b, events, n, true) * 1e9 / (double)n;
	printf("%zu connection ends of %d workloads behind %d services; the first pass %.0f ns per event; %d rounds:",
	       n, n_workloads, n_services, first, rounds);
	for (int r = 0; r < rounds; r++) {
		ns[r] = run(&b, events, n, false) * 1e9 / (double)n;
		printf(" %.0f", ns[r]);
		fflush(stdout);
	}
	size_t len;
	char *metrics = sm_telemetry_render(b.counters, &len);
	struct sm_telemetry_counts counts;
	sm_telemetry_counts(b.counters, &counts);
	qsort(ns, (size_t)rounds, sizeof(double), compare_doubles);
	printf(" ns per event\nmedian %.0f ns per event (min %.0f, max %.0f); %zu series\n", ns[rounds / 2], ns[0],
	       ns[rounds - 1], counts.series);
	printf("access log: %zu bytes, digest %016llx; metrics: %zu bytes, digest %016llx\n", b.log_bytes,
	       (unsigned long long)b.log_digest, len,
	       (unsigned long long)digest(14695981039346656037ULL, metrics, len));
	free(metrics);
	access_log_free(b.log);
	sm_tel_log_cache_free(b.log_cache);
	sm_telemetry_free(b.counters);
	sm_model_free((struct sm_model *)b.model);
	free(events);
	free(ns);
	return 0;
}
