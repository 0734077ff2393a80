/* SPDX-License-Identifier: Apache-2.0 */
/*
 * telemetry/ and the model's lookups by address, case by case: ztunnel's label set in its order with
 * `unknown`, escaping, the byte directions per reporter, deltas across UPDATE and CLOSED, the failed and
 * DENY flags, eviction of series whose workloads are gone, and the access log line, plain and JSON.
 */
#include <arpa/inet.h>
#include <string.h>

#include "authz/authz.h"
#include "bpf/sockmesh.h"
#include "model_harness.h"
#include "telemetry/telemetry.h"
#include "workload/workload.h"

static const struct sm_tel_workload client = {
	.uid = "Kubernetes//Pod/shop/sleep-7d9",
	.workload = "sleep",
	.pod = "sleep-7d9",
	.namespace = "shop",
	.canonical_service = "sleep",
	.canonical_revision = "v1",
	.cluster = "Kubernetes",
	.trust_domain = "cluster.local",
	.service_account = "sleep",
	.region = "eu",
	.zone = "eu-1",
};

static const struct sm_tel_workload server = {
	.uid = "Kubernetes//Pod/shop/echo-5c4",
	.workload = "echo",
	.pod = "echo-5c4",
	.namespace = "shop",
	.canonical_service = "echo",
	.canonical_revision = "latest",
	.cluster = "Kubernetes",
	.trust_domain = "cluster.local",
	.service_account = "default",
};

static const struct sm_tel_service echo_service = {
	.hostname = "echo.shop.svc.cluster.local", .name = "echo", .namespace = "shop",
};

/* The full label text of client → echo_service/server as the source reporter, response_flags flags. */
#define CLIENT_TO_SERVER(reporter, flags)                                                                        \
	"reporter=\"" reporter "\",source_workload=\"sleep\",source_canonical_service=\"sleep\","                   \
	"source_canonical_revision=\"v1\",source_workload_namespace=\"shop\","                                      \
	"source_principal=\"spiffe://cluster.local/ns/shop/sa/sleep\",source_app=\"sleep\",source_version=\"v1\","    \
	"source_cluster=\"Kubernetes\",destination_service=\"echo.shop.svc.cluster.local\","                        \
	"destination_service_namespace=\"shop\",destination_service_name=\"echo\",destination_workload=\"echo\","    \
	"destination_canonical_service=\"echo\",destination_canonical_revision=\"latest\","                          \
	"destination_workload_namespace=\"shop\",destination_principal=\"spiffe://cluster.local/ns/shop/sa/default\"," \
	"destination_app=\"echo\",destination_version=\"latest\",destination_cluster=\"Kubernetes\","                \
	"request_protocol=\"tcp\",response_flags=\"" flags "\",connection_security_policy=\"none\","                 \
	"source_region=\"eu\",source_zone=\"eu-1\",destination_region=\"unknown\",destination_zone=\"unknown\""

static struct sm_tel_conn conn_of(uint64_t id, uint8_t kind, uint8_t direction, uint64_t sent, uint64_t received)
{
	return (struct sm_tel_conn){
		.id = id, .kind = kind, .direction = direction, .bytes_sent = sent, .bytes_received = received,
		.src_addr = "10.0.0.1:40000", .dst_addr = "10.0.0.2:8080",
		.src = client, .dst = server, .service = echo_service,
	};
}

/* The value of metric{labels}; -1 when the series is not there. */
static long long value_of(struct sm_telemetry *t, const char *metric, const char *labels)
{
	size_t len, want_len = strlen(metric) + strlen(labels) + 4;
	char *text = sm_telemetry_render(t, &len);
	char *want = malloc(want_len);
	long long value = -1;

	assert_non_null(text);
	snprintf(want, want_len, "%s{%s} ", metric, labels);
	for (char *line = text; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
		if (strncmp(line, want, strlen(want)) == 0) {
			value = strtoll(line + strlen(want), NULL, 10);
			break;
		}
	}
	free(want);
	free(text);
	return value;
}

static void record_ok(struct sm_telemetry *t, struct sm_tel_conn c)
{
	assert_int_equal(sm_telemetry_record(t, &c), 0);
}

/* ---- labels ---- */

static void labels_in_ztunnel_order(void **state)
{
	struct sm_telemetry *t;
	size_t len;

	(void)state;
	assert_int_equal(sm_telemetry_new(&t), 0);
	record_ok(t, conn_of(1, SM_CONN_OPENED, SM_CONN_OUTBOUND, 0, 0));
	assert_int_equal(value_of(t, "istio_tcp_connections_opened_total", CLIENT_TO_SERVER("source", "-")), 1);
	assert_int_equal(value_of(t, "istio_tcp_connections_closed_total", CLIENT_TO_SERVER("source", "-")), 0);
	char *text = sm_telemetry_render(t, &len);
	assert_non_null(strstr(text, "# HELP istio_tcp_connections_opened_total The total number of TCP connections opened.\n"
				     "# TYPE istio_tcp_connections_opened_total counter\n"));
	const char *names[] = { "istio_tcp_connections_opened_total", "istio_tcp_connections_closed_total",
				"istio_tcp_received_bytes_total", "istio_tcp_sent_bytes_total",
				"istio_tcp_connections_failed_total" };
	for (size_t i = 0; i < TEST_ARRAY_SIZE(names); i++) {
		char type[128];
		snprintf(type, sizeof(type), "# TYPE %s counter\n", names[i]);
		assert_non_null(strstr(text, type));
	}
	free(text);
	sm_telemetry_free(t);
}

static void missing_values_are_unknown(void **state)
{
	struct sm_telemetry *t;
	struct sm_tel_conn c = conn_of(1, SM_CONN_OPENED, SM_CONN_INBOUND, 0, 0);

	(void)state;
	c.src = (struct sm_tel_workload){ 0 }; /* an address outside the mesh */
	c.service = (struct sm_tel_service){ 0 };
	c.dst.namespace = "";
	assert_int_equal(sm_telemetry_new(&t), 0);
	record_ok(t, c);
	assert_int_equal(
		value_of(t, "istio_tcp_connections_opened_total",
			 "reporter=\"destination\",source_workload=\"unknown\",source_canonical_service=\"unknown\","
			 "source_canonical_revision=\"unknown\",source_workload_namespace=\"unknown\","
			 "source_principal=\"unknown\",source_app=\"unknown\",source_version=\"unknown\","
			 "source_cluster=\"unknown\",destination_service=\"unknown\","
			 "destination_service_namespace=\"unknown\",destination_service_name=\"unknown\","
			 "destination_workload=\"echo\",destination_canonical_service=\"echo\","
			 "destination_canonical_revision=\"latest\",destination_workload_namespace=\"unknown\","
			 "destination_principal=\"unknown\",destination_app=\"echo\",destination_version=\"latest\","
			 "destination_cluster=\"Kubernetes\",request_protocol=\"tcp\",response_flags=\"-\","
			 "connection_security_policy=\"none\",source_region=\"unknown\",source_zone=\"unknown\","
			 "destination_region=\"unknown\",destination_zone=\"unknown\""),
		1);
	sm_telemetry_free(t);
}

static void label_values_escaped(void **state)
{
	struct sm_telemetry *t;
	struct sm_tel_conn c = conn_of(1, SM_CONN_OPENED, SM_CONN_OUTBOUND, 0, 0);
	size_t len;

	(void)state;
	c.src.workload = "a\"b\\c\nd";
	assert_int_equal(sm_telemetry_new(&t), 0);
	record_ok(t, c);
	char *text = sm_telemetry_render(t, &len);
	assert_non_null(strstr(text, "source_workload=\"a\\\"b\\\\c\\nd\""));
	/* every sample stays on one line */
	for (char *line = text; *line; line = strchr(line, '\n') + 1)
		assert_true(line[0] == '#' || strncmp(line, "istio_tcp_", 10) == 0);
	free(text);
	sm_telemetry_free(t);
}

/* ---- counting ---- */

static void bytes_follow_the_request_direction(void **state)
{
	struct sm_telemetry *t;

	(void)state;
	assert_int_equal(sm_telemetry_new(&t), 0);
	/* the client sent 100 (the request) and received 200 (the response) */
	record_ok(t, conn_of(1, SM_CONN_CLOSED, SM_CONN_OUTBOUND, 100, 200));
	/* the server received 100 (the request) and sent 200 */
	record_ok(t, conn_of(2, SM_CONN_CLOSED, SM_CONN_INBOUND, 200, 100));
	for (int i = 0; i < 2; i++) {
		const char *labels = i ? CLIENT_TO_SERVER("destination", "-") : CLIENT_TO_SERVER("source", "-");
		assert_int_equal(value_of(t, "istio_tcp_received_bytes_total", labels), 100);
		assert_int_equal(value_of(t, "istio_tcp_sent_bytes_total", labels), 200);
		assert_int_equal(value_of(t, "istio_tcp_connections_opened_total", labels), 1);
		assert_int_equal(value_of(t, "istio_tcp_connections_closed_total", labels), 1);
		assert_int_equal(value_of(t, "istio_tcp_connections_failed_total", labels), 0);
	}
	sm_telemetry_free(t);
}

static void deltas_across_updates(void **state)
{
	const char *labels = CLIENT_TO_SERVER("source", "-");
	struct sm_telemetry *t;
	struct sm_telemetry_counts counts;

	(void)state;
	assert_int_equal(sm_telemetry_new(&t), 0);
	record_ok(t, conn_of(7, SM_CONN_OPENED, SM_CONN_OUTBOUND, 0, 0));
	record_ok(t, conn_of(7, SM_CONN_UPDATE, SM_CONN_OUTBOUND, 10, 20));
	/* a long connection's counters move while it is open */
	assert_int_equal(value_of(t, "istio_tcp_received_bytes_total", labels), 10);
	assert_int_equal(value_of(t, "istio_tcp_sent_bytes_total", labels), 20);
	record_ok(t, conn_of(7, SM_CONN_UPDATE, SM_CONN_OUTBOUND, 30, 20));
	/* an idle connection's report once a minute (SM_CONN_IDLE_REPORT_S) repeats its bytes: it adds nothing */
	record_ok(t, conn_of(7, SM_CONN_UPDATE, SM_CONN_OUTBOUND, 30, 20));
	assert_int_equal(value_of(t, "istio_tcp_received_bytes_total", labels), 30);
	assert_int_equal(value_of(t, "istio_tcp_connections_opened_total", labels), 1);
	/* another connection of the same labels adds to the same series */
	record_ok(t, conn_of(8, SM_CONN_UPDATE, SM_CONN_OUTBOUND, 5, 5));
	sm_telemetry_counts(t, &counts);
	assert_int_equal(counts.series, 1);
	assert_int_equal(counts.open, 2);
	record_ok(t, conn_of(7, SM_CONN_CLOSED, SM_CONN_OUTBOUND, 50, 70));
	assert_int_equal(value_of(t, "istio_tcp_received_bytes_total", labels), 55);
	assert_int_equal(value_of(t, "istio_tcp_sent_bytes_total", labels), 75);
	assert_int_equal(value_of(t, "istio_tcp_connections_opened_total", labels), 2);
	assert_int_equal(value_of(t, "istio_tcp_connections_closed_total", labels), 1);
	/* a closed connection is forgotten: its id again is a new connection */
	record_ok(t, conn_of(7, SM_CONN_CLOSED, SM_CONN_OUTBOUND, 1, 1));
	assert_int_equal(value_of(t, "istio_tcp_connections_opened_total", labels), 3);
	assert_int_equal(value_of(t, "istio_tcp_received_bytes_total", labels), 56);
	sm_telemetry_counts(t, &counts);
	assert_int_equal(counts.open, 1);
	sm_telemetry_free(t); /* with connection 8 still open */
}

static void failures_and_denials(void **state)
{
	struct sm_telemetry *t;
	struct sm_tel_conn refused = conn_of(3, SM_CONN_OPENED, SM_CONN_OUTBOUND, 0, 0);
	struct sm_tel_conn denied = conn_of(0, SM_CONN_FAILED, SM_CONN_INBOUND, 0, 0);

	(void)state;
	assert_int_equal(sm_telemetry_new(&t), 0);
	/* a connect refused: opened under "-" at its OPENED, closed and failed under CONNECT */
	record_ok(t, refused);
	refused.kind = SM_CONN_FAILED;
	refused.response = SM_TEL_RESPONSE_CONNECT;
	record_ok(t, refused);
	assert_int_equal(value_of(t, "istio_tcp_connections_opened_total", CLIENT_TO_SERVER("source", "-")), 1);
	assert_int_equal(value_of(t, "istio_tcp_connections_closed_total", CLIENT_TO_SERVER("source", "-")), 0);
	assert_int_equal(value_of(t, "istio_tcp_connections_closed_total", CLIENT_TO_SERVER("source", "CONNECT")), 1);
	assert_int_equal(value_of(t, "istio_tcp_connections_failed_total", CLIENT_TO_SERVER("source", "CONNECT")), 1);
	/* a FAILED without an OPENED (a timeout whose OPENED was lost) is opened too */
	refused.id = 4;
	record_ok(t, refused);
	assert_int_equal(value_of(t, "istio_tcp_connections_opened_total", CLIENT_TO_SERVER("source", "-")), 2);
	assert_int_equal(value_of(t, "istio_tcp_connections_failed_total", CLIENT_TO_SERVER("source", "CONNECT")), 2);
	/* a policy denial: one event, opened, closed and failed, reporter destination */
	denied.response = SM_TEL_RESPONSE_DENY;
	record_ok(t, denied);
	assert_int_equal(value_of(t, "istio_tcp_connections_opened_total", CLIENT_TO_SERVER("destination", "-")), 1);
	assert_int_equal(value_of(t, "istio_tcp_connections_closed_total", CLIENT_TO_SERVER("destination", "DENY")), 1);
	assert_int_equal(value_of(t, "istio_tcp_connections_failed_total", CLIENT_TO_SERVER("destination", "DENY")), 1);
	struct sm_telemetry_counts counts;
	sm_telemetry_counts(t, &counts);
	assert_int_equal(counts.open, 0);
	sm_telemetry_free(t);
}

/* ---- eviction ---- */

struct uids {
	const char *items[4];
};

static bool listed(void *ctx, const char *uid)
{
	const struct uids *live = ctx;

	for (size_t i = 0; i < TEST_ARRAY_SIZE(live->items) && live->items[i]; i++) {
		if (strcmp(live->items[i], uid) == 0)
			return true;
	}
	return false;
}

static void series_of_gone_workloads_evicted(void **state)
{
	struct sm_telemetry *t;
	struct sm_tel_conn other = conn_of(2, SM_CONN_OPENED, SM_CONN_OUTBOUND, 0, 0);
	struct sm_tel_conn external = conn_of(3, SM_CONN_CLOSED, SM_CONN_OUTBOUND, 1, 1);
	struct uids all = { { client.uid, server.uid, "Kubernetes//Pod/shop/sleep-other" } };
	struct uids replica_gone = { { "Kubernetes//Pod/shop/sleep-other", server.uid } };
	struct uids none = { { NULL } };
	struct sm_telemetry_counts counts;

	(void)state;
	assert_int_equal(sm_telemetry_new(&t), 0);
	record_ok(t, conn_of(1, SM_CONN_OPENED, SM_CONN_OUTBOUND, 0, 0));
	/* another pod of the same Deployment: the same labels, the same series */
	other.src.uid = "Kubernetes//Pod/shop/sleep-other";
	other.src.pod = "sleep-other";
	record_ok(t, other);
	/* to and from nothing the model knows: never evicted for a workload */
	external.src = (struct sm_tel_workload){ 0 };
	external.dst = (struct sm_tel_workload){ 0 };
	record_ok(t, external);
	sm_telemetry_counts(t, &counts);
	assert_int_equal(counts.series, 2);

	assert_int_equal(sm_telemetry_evict(t, listed, &all, 3600), 0);
	/* everything gone, but connections are open on it */
	assert_int_equal(sm_telemetry_evict(t, listed, &none, 3600), 0);
	record_ok(t, conn_of(1, SM_CONN_CLOSED, SM_CONN_OUTBOUND, 0, 0));
	/* one pod of the Deployment is gone, the other is not; a connection is still open */
	assert_int_equal(sm_telemetry_evict(t, listed, &replica_gone, 3600), 0);
	other.kind = SM_CONN_CLOSED;
	record_ok(t, other);
	assert_int_equal(sm_telemetry_evict(t, listed, &replica_gone, 3600), 0);
	assert_int_equal(value_of(t, "istio_tcp_connections_closed_total", CLIENT_TO_SERVER("source", "-")), 2);
	/* now the last pod goes (it went while its connection was open: that closed since) */
	assert_int_equal(sm_telemetry_evict(t, listed, &none, 3600), 1);
	assert_int_equal(value_of(t, "istio_tcp_connections_closed_total", CLIENT_TO_SERVER("source", "-")), -1);
	sm_telemetry_counts(t, &counts);
	assert_int_equal(counts.series, 1);

	/* a connection whose CLOSED was lost: kept while it may be alive, forgotten once stale */
	record_ok(t, conn_of(9, SM_CONN_OPENED, SM_CONN_OUTBOUND, 0, 0));
	assert_int_equal(sm_telemetry_evict(t, listed, &none, 3600), 0);
	sm_telemetry_counts(t, &counts);
	assert_int_equal(counts.open, 1);
	assert_int_equal(sm_telemetry_evict(t, listed, &none, 0), 1);
	sm_telemetry_counts(t, &counts);
	assert_int_equal(counts.open, 0);
	assert_int_equal(counts.forgotten, 1);
	assert_int_equal(counts.series, 1);
	/* a workload that exists keeps its idle connection, stale or not */
	record_ok(t, conn_of(10, SM_CONN_OPENED, SM_CONN_OUTBOUND, 0, 0));
	assert_int_equal(sm_telemetry_evict(t, listed, &all, 0), 0);
	sm_telemetry_counts(t, &counts);
	assert_int_equal(counts.open, 1);
	sm_telemetry_free(t);
}

/* A uid that eviction dropped from its series and that comes back within the same names_generation is on the
 * series again: what the cache of names remembered was dropped with it. */
static void uids_dropped_by_eviction_come_back(void **state)
{
	const char *replica = "Kubernetes//Pod/shop/sleep-other";
	struct uids first_gone = { { replica, server.uid } }, second_gone = { { client.uid, server.uid } };
	struct sm_tel_conn c = conn_of(0, SM_CONN_CLOSED, SM_CONN_OUTBOUND, 0, 0);
	struct sm_telemetry *t;

	(void)state;
	assert_int_equal(sm_telemetry_new(&t), 0);
	c.names_generation = 1;
	record_ok(t, c);
	c.src.uid = replica;
	record_ok(t, c);
	assert_int_equal(sm_telemetry_evict(t, listed, &first_gone, 3600), 0);
	c.src.uid = client.uid;
	record_ok(t, c);
	/* the first pod is back on the series: the replica going leaves it */
	assert_int_equal(sm_telemetry_evict(t, listed, &second_gone, 3600), 0);
	assert_int_equal(value_of(t, "istio_tcp_connections_closed_total", CLIENT_TO_SERVER("source", "-")), 3);
	sm_telemetry_free(t);
}

/* ---- the access log ---- */

static const struct timespec log_time = { .tv_sec = 1712849922, .tv_nsec = 123456789 }; /* 2024-04-11T15:38:42 */

static void access_log_plain(void **state)
{
	struct sm_tel_conn c = conn_of(1, SM_CONN_CLOSED, SM_CONN_OUTBOUND, 67, 490);
	char line[2048];
	size_t len;

	(void)state;
	c.duration_ns = 13999999;
	c.srtt_us = 41;
	c.min_rtt_us = 30;
	c.retransmits = 2;
	c.flags = SM_CONN_ACCELERATED;
	len = sm_telemetry_access_log(&c, SM_TEL_LOG_PLAIN, NULL, &log_time, line, sizeof(line));
	assert_string_equal(line,
			    "2024-04-11T15:38:42.123456Z\tinfo\taccess\tconnection complete\t"
			    "src.addr=10.0.0.1:40000 src.workload=\"sleep-7d9\" src.namespace=\"shop\" "
			    "src.identity=\"spiffe://cluster.local/ns/shop/sa/sleep\" dst.addr=10.0.0.2:8080 "
			    "dst.service=\"echo.shop.svc.cluster.local\" dst.workload=\"echo-5c4\" dst.namespace=\"shop\" "
			    "dst.identity=\"spiffe://cluster.local/ns/shop/sa/default\" direction=\"outbound\" "
			    "bytes_sent=67 bytes_recv=490 duration=\"13ms\" rtt_us=41 min_rtt_us=30 retransmits=2 "
			    "accelerated=true waypoint=false\n");
	assert_int_equal(len, strlen(line));

	/* inbound, failed, from outside the mesh; bytes stay the local workload's view; quotes escaped */
	c = conn_of(2, SM_CONN_FAILED, SM_CONN_INBOUND, 5, 7);
	c.src = (struct sm_tel_workload){ 0 };
	c.service = (struct sm_tel_service){ 0 };
	c.response = SM_TEL_RESPONSE_DENY;
	c.error = "denied by \"ns/p\"";
	c.flags = SM_CONN_WAYPOINT;
	sm_telemetry_access_log(&c, SM_TEL_LOG_PLAIN, NULL, &log_time, line, sizeof(line));
	assert_string_equal(line,
			    "2024-04-11T15:38:42.123456Z\terror\taccess\tconnection complete\t"
			    "src.addr=10.0.0.1:40000 dst.addr=10.0.0.2:8080 dst.workload=\"echo-5c4\" "
			    "dst.namespace=\"shop\" dst.identity=\"spiffe://cluster.local/ns/shop/sa/default\" "
			    "direction=\"inbound\" bytes_sent=5 bytes_recv=7 duration=\"0ms\" "
			    "error=\"denied by \\\"ns/p\\\"\" rtt_us=0 min_rtt_us=0 retransmits=0 accelerated=false "
			    "waypoint=true\n");

	/* a short buffer: cut, the length needed returned */
	char small[16];
	len = sm_telemetry_access_log(&c, SM_TEL_LOG_PLAIN, NULL, &log_time, small, sizeof(small));
	assert_int_equal(len, strlen(line));
	assert_int_equal(strlen(small), sizeof(small) - 1);
}

static void access_log_json(void **state)
{
	struct sm_tel_conn c = conn_of(1, SM_CONN_FAILED, SM_CONN_OUTBOUND, 0, 0);
	char line[2048];

	(void)state;
	c.response = SM_TEL_RESPONSE_CONNECT;
	c.error = "connection refused";
	c.dst = (struct sm_tel_workload){ 0 };
	c.src.pod = NULL; /* falls back to the canonical service, as ztunnel */
	c.src.namespace = "sh\top";
	c.duration_ns = 2500000;
	sm_telemetry_access_log(&c, SM_TEL_LOG_JSON, NULL, &log_time, line, sizeof(line));
	assert_string_equal(line,
			    "{\"level\":\"error\",\"time\":\"2024-04-11T15:38:42.123456Z\",\"scope\":\"access\","
			    "\"message\":\"connection complete\",\"src.addr\":\"10.0.0.1:40000\",\"src.workload\":\"sleep\","
			    "\"src.namespace\":\"sh\\top\",\"src.identity\":\"spiffe://cluster.local/ns/sh\\top/sa/sleep\","
			    "\"dst.addr\":\"10.0.0.2:8080\",\"dst.service\":\"echo.shop.svc.cluster.local\","
			    "\"direction\":\"outbound\",\"bytes_sent\":0,\"bytes_recv\":0,\"duration\":\"2ms\","
			    "\"error\":\"connection refused\",\"rtt_us\":0,\"min_rtt_us\":0,\"retransmits\":0,"
			    "\"accelerated\":false,\"waypoint\":false}\n");
	/* a control character becomes \u00XX */
	c.error = "x\001y";
	sm_telemetry_access_log(&c, SM_TEL_LOG_JSON, NULL, &log_time, line, sizeof(line));
	assert_non_null(strstr(line, "\"error\":\"x\\u0001y\""));
}

/* ---- the model's lookups ---- */

static void address16(const char *text, uint8_t out[16])
{
	memset(out, 0, 16);
	if (inet_pton(AF_INET6, text, out) == 1)
		return;
	out[10] = out[11] = 0xff;
	assert_int_equal(inet_pton(AF_INET, text, out + 12), 1);
}

static void model_lookups_by_address(void **state)
{
	struct harness h;
	struct response r;
	struct workload_spec spec = { .uid = "Kubernetes//Pod/shop/echo-5c4", .addresses = { "10.1.0.7", "fd00::7" },
				      .namespace = "shop", .region = "eu", .zone = "eu-1",
				      .services = { { "shop/echo.shop.svc.cluster.local", { { 80, 8080 } } } } };
	struct service_spec svc = { .namespace = "shop", .hostname = "echo.shop.svc.cluster.local",
				    .vips = { "10.96.0.10" }, .ports = { { 80, 8080 } } };
	struct sm_workload_labels w;
	struct sm_service_labels s;
	struct sm_authz_identity id;
	uint8_t addr[16];

	(void)state;
	harness_open(&h, "node-a", NULL);
	response_init(&r, SM_TYPE_URL_ADDRESS);
	Istio__Workload__Workload *msg = workload_from(&r, &spec);
	msg->workload_name = "echo";
	msg->canonical_name = "echo-svc";
	msg->canonical_revision = "v2";
	response_add_workload_msg(&r, msg, "v1");
	response_add_service(&r, &svc, "v1");
	apply_ok(&h, &r);

	address16("10.1.0.7", addr);
	assert_true(sm_model_workload_at(h.model, addr, &w));
	assert_string_equal(w.uid, spec.uid);
	assert_string_equal(w.workload_name, "echo");
	assert_string_equal(w.name, spec.uid); /* the builders name a pod by its uid */
	assert_string_equal(w.namespace, "shop");
	assert_string_equal(w.canonical_name, "echo-svc");
	assert_string_equal(w.canonical_revision, "v2");
	assert_string_equal(w.cluster_id, "Kubernetes");
	assert_string_equal(w.trust_domain, "cluster.local"); /* the defaults, as authorization's identity */
	assert_string_equal(w.service_account, "default");
	assert_string_equal(w.region, "eu");
	assert_string_equal(w.zone, "eu-1");
	assert_true(sm_model_authz_identity(h.model, addr, &id));
	assert_string_equal(id.namespace, "shop");
	/* ztunnel's guess for an inbound connection: the workload's service whose target is the port */
	assert_true(sm_model_service_of_port(h.model, addr, 8080, &s));
	assert_string_equal(s.hostname, "echo.shop.svc.cluster.local");
	assert_false(sm_model_service_of_port(h.model, addr, 80, &s));
	address16("fd00::7", addr);
	assert_true(sm_model_workload_at(h.model, addr, &w));
	assert_false(sm_model_service_at(h.model, addr, &s));
	address16("10.96.0.10", addr);
	assert_false(sm_model_workload_at(h.model, addr, &w));
	assert_true(sm_model_service_at(h.model, addr, &s));
	assert_string_equal(s.hostname, "echo.shop.svc.cluster.local");
	assert_string_equal(s.name, "echo.shop.svc.cluster.local"); /* the builders name a service by its hostname */
	assert_string_equal(s.namespace, "shop");
	assert_true(sm_model_workload_exists(h.model, spec.uid));

	/* an address that moves: the index follows */
	spec.addresses[0] = "10.1.0.8";
	spec.addresses[1] = NULL;
	apply_workloads(&h, &spec, 1);
	address16("10.1.0.7", addr);
	assert_false(sm_model_workload_at(h.model, addr, &w));
	address16("10.1.0.8", addr);
	assert_true(sm_model_workload_at(h.model, addr, &w));
	remove_names(&h, (const char *[]){ spec.uid }, 1);
	assert_false(sm_model_workload_at(h.model, addr, &w));
	assert_false(sm_model_authz_identity(h.model, addr, &id));
	assert_false(sm_model_workload_exists(h.model, spec.uid));
	harness_close(&h);
}

/* Workloads that share an address (the index holds the first owner inline, more in an array). */
static void model_lookups_by_shared_address(void **state)
{
	struct workload_spec specs[] = {
		{ .uid = "w/a", .addresses = { "10.2.0.1" } },
		{ .uid = "w/b", .addresses = { "10.2.0.1" } },
		{ .uid = "w/c", .addresses = { "10.2.0.1" } },
	};
	struct sm_workload_labels w;
	struct harness h;
	uint8_t addr[16];

	(void)state;
	harness_open(&h, "node-a", NULL);
	address16("10.2.0.1", addr);
	for (size_t i = 3; i-- > 0;) {
		apply_workloads(&h, &specs[i], 1);
		assert_true(sm_model_workload_at(h.model, addr, &w));
		assert_string_equal(w.uid, specs[i].uid); /* of several owners, the smallest uid, whatever the order */
	}
	const char *const removals[] = { "w/a", "w/c", "w/b" }, *const next[] = { "w/b", "w/b", NULL };
	for (size_t i = 0; i < 3; i++) {
		remove_names(&h, &removals[i], 1);
		if (!next[i]) {
			assert_false(sm_model_workload_at(h.model, addr, &w));
			continue;
		}
		assert_true(sm_model_workload_at(h.model, addr, &w));
		assert_string_equal(w.uid, next[i]);
	}
	/* with owners on this node, the one of them with the smallest uid, whatever the order they came in */
	struct workload_spec mixed[] = {
		{ .uid = "w/d", .addresses = { "10.2.0.1" }, .node = "node-a" },
		{ .uid = "w/a", .addresses = { "10.2.0.1" } },
		{ .uid = "w/c", .addresses = { "10.2.0.1" }, .node = "node-a" },
	};
	const char *const after_each[] = { "w/d", "w/d", "w/c" };
	for (size_t i = 0; i < 3; i++) {
		apply_workloads(&h, &mixed[i], 1);
		assert_true(sm_model_workload_at(h.model, addr, &w));
		assert_string_equal(w.uid, after_each[i]);
	}
	remove_names(&h, (const char *[]){ "w/c" }, 1);
	assert_true(sm_model_workload_at(h.model, addr, &w));
	assert_string_equal(w.uid, "w/d");
	remove_names(&h, (const char *[]){ "w/d" }, 1);
	assert_true(sm_model_workload_at(h.model, addr, &w));
	assert_string_equal(w.uid, "w/a");
	harness_close(&h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(labels_in_ztunnel_order),
		cmocka_unit_test(missing_values_are_unknown),
		cmocka_unit_test(label_values_escaped),
		cmocka_unit_test(bytes_follow_the_request_direction),
		cmocka_unit_test(deltas_across_updates),
		cmocka_unit_test(failures_and_denials),
		cmocka_unit_test(series_of_gone_workloads_evicted),
		cmocka_unit_test(uids_dropped_by_eviction_come_back),
		cmocka_unit_test(access_log_plain),
		cmocka_unit_test(access_log_json),
		cmocka_unit_test(model_lookups_by_address),
		cmocka_unit_test(model_lookups_by_shared_address),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
