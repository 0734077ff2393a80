/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The admin endpoint (agent/admin.c) on 127.0.0.1: a request that waits (for the model, which an apply
 * holds for seconds) holds up no other, so the kubelet's /healthz/ready is answered meanwhile. What the
 * handlers call is stubbed here: /explain's stub waits until the test lets it go.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "agent/agent.h"
#include "agent/authz.h"
#include "agent/enroller.h"
#include "agent/explain.h"
#include "agent/telemetry.h"
#include "helpers.h"
#include "log_stub.h"
#include "model_harness.h"

/* ---- stubs of what the handlers call ---- */

static pthread_mutex_t explain_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t explain_cond = PTHREAD_COND_INITIALIZER;
static int explains_waiting;
static bool explains_released;

/* Waits, as a request waiting for the model does, until the test releases it. */
json_t *agent_explain(struct agent *agent, const char *from, const char *to, char *err, size_t err_size)
{
	(void)agent, (void)from, (void)to;
	pthread_mutex_lock(&explain_lock);
	explains_waiting++;
	pthread_cond_broadcast(&explain_cond);
	while (!explains_released)
		pthread_cond_wait(&explain_cond, &explain_lock);
	explains_waiting--;
	pthread_mutex_unlock(&explain_lock);
	snprintf(err, err_size, "explained nothing");
	return NULL;
}

bool agent_ready(struct agent *agent, char *why, size_t size)
{
	(void)agent;
	snprintf(why, size, "ready");
	return true;
}

const double sm_latency_bounds[SM_LATENCY_BUCKETS] = { 0.001, 0.01, 0.1, 1 };

void sm_xds_client_stats(struct sm_xds_client *client, struct sm_xds_stats *stats)
{
	(void)client;
	memset(stats, 0, sizeof(*stats));
}

int sm_datapath_counters(const struct sm_datapath *dp, uint64_t counters[SM_COUNTER_MAX])
{
	(void)dp;
	memset(counters, 0, SM_COUNTER_MAX * sizeof(*counters));
	return 0;
}

const char *sm_counter_name(enum sm_counter counter)
{
	(void)counter;
	return "stub";
}

size_t enroller_enrolled_pods(struct enroller *enroller)
{
	(void)enroller;
	return 0;
}

char *agent_authz_metrics(struct agent_authz *authz)
{
	(void)authz;
	return strdup("");
}

char *agent_telemetry_istio_metrics(struct agent_telemetry *t, size_t *len)
{
	(void)t;
	*len = 0;
	return strdup("");
}

char *agent_telemetry_admin_metrics(struct agent_telemetry *t, const uint64_t *counters)
{
	(void)t, (void)counters;
	return strdup("");
}

/* ---- a client ---- */

static int listen_loopback(uint16_t *port)
{
	struct sockaddr_in addr = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(addr);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
	assert_int_equal(listen(fd, 16), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&addr, &len), 0);
	*port = ntohs(addr.sin_port);
	return fd;
}

/* Sends GET path (HTTP/1.0: the server closes once it has answered) and returns the connection. */
static int send_get(uint16_t port, const char *path)
{
	struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons(port),
				    .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	char request[256];
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), n;

	assert_true(fd >= 0);
	assert_int_equal(connect(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
	n = snprintf(request, sizeof(request), "GET %s HTTP/1.0\r\n\r\n", path);
	assert_int_equal(write(fd, request, (size_t)n), n);
	return fd;
}

/* The whole answer on fd into buf, or false when none came within timeout_ms. */
static bool read_answer(int fd, char *buf, size_t size, int timeout_ms)
{
	size_t len = 0;

	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ssize_t n;

		if (poll(&p, 1, timeout_ms) != 1)
			return false;
		n = read(fd, buf + len, size - 1 - len);
		assert_true(n >= 0);
		if (n == 0 || (len += (size_t)n) == size - 1)
			break;
	}
	buf[len] = '\0';
	return true;
}

/* A request that waits (for the model: here /explain's stub, until released) holds up neither
 * /healthz/ready nor /config_dump, which the kubelet and operators ask for meanwhile. */
static void a_waiting_request_holds_up_no_other(void **state)
{
	struct sm_model_options options = { .node_name = "node-a" };
	struct agent agent = { .admin_fd = -1, .metrics_fd = -1 };
	struct admin *admin;
	char err[256], answer[4096];
	uint16_t port;
	int fd = listen_loopback(&port), waiting[2];

	(void)state;
	assert_int_equal(sm_model_new(&options, &agent.model), 0);
	agent.model_gate = (struct model_gate)MODEL_GATE_INITIALIZER;
	assert_int_equal(admin_start(&agent, fd, &admin, err, sizeof(err)), 0);

	for (int i = 0; i < 2; i++)
		waiting[i] = send_get(port, "/explain?from=10.0.0.1&to=10.0.0.2:80");
	struct timespec deadline;
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += 5;
	pthread_mutex_lock(&explain_lock);
	while (explains_waiting < 2 && pthread_cond_timedwait(&explain_cond, &explain_lock, &deadline) != ETIMEDOUT)
		;
	int taken = explains_waiting;
	pthread_mutex_unlock(&explain_lock);
	if (taken < 2)
		fail_msg("the second request was not taken while the first waited (%d waiting)", taken);

	int ready = send_get(port, "/healthz/ready");
	if (!read_answer(ready, answer, sizeof(answer), 5000))
		fail_msg("/healthz/ready was not answered while two requests waited");
	assert_non_null(strstr(answer, "200 OK"));
	assert_non_null(strstr(answer, "ready"));
	close(ready);
	int dump = send_get(port, "/config_dump");
	if (!read_answer(dump, answer, sizeof(answer), 5000))
		fail_msg("/config_dump was not answered while two requests waited");
	assert_non_null(strstr(answer, "200 OK"));
	close(dump);

	pthread_mutex_lock(&explain_lock);
	explains_released = true;
	pthread_cond_broadcast(&explain_cond);
	pthread_mutex_unlock(&explain_lock);
	for (int i = 0; i < 2; i++) {
		assert_true(read_answer(waiting[i], answer, sizeof(answer), 5000));
		assert_non_null(strstr(answer, "explained nothing"));
		close(waiting[i]);
	}
	admin_stop(admin);
	sm_model_free(agent.model);
}

/* While an apply holds the model, /metrics (for a second at most, below) and /config_dump wait; between two runs
 * of a split the applying thread lets them in (model_gate_yield) and takes the model back once they have had
 * it. */
static void requests_that_wait_for_the_model_go_in_between_a_splits_runs(void **state)
{
	struct sm_model_options options = { .node_name = "node-a" };
	struct agent agent = { .admin_fd = -1, .metrics_fd = -1, .model_gate = MODEL_GATE_INITIALIZER };
	struct admin *admin;
	char err[256], answer[8192];
	uint16_t port;
	int fd = listen_loopback(&port);

	(void)state;
	assert_int_equal(sm_model_new(&options, &agent.model), 0);
	assert_int_equal(admin_start(&agent, fd, &admin, err, sizeof(err)), 0);

	pthread_mutex_lock(&agent.model_gate.lock); /* an apply */
	int metrics = send_get(port, "/metrics"), dump = send_get(port, "/config_dump");
	for (int ms = 0; atomic_load(&agent.model_gate.waiting) < 2 && ms < 5000; ms++)
		usleep(1000);
	assert_int_equal(atomic_load(&agent.model_gate.waiting), 2);
	if (read_answer(metrics, answer, sizeof(answer), 200))
		fail_msg("/metrics was answered while the apply held the model");
	model_gate_yield(&agent.model_gate, 5000); /* between two runs */
	assert_int_equal(atomic_load(&agent.model_gate.waiting), 0);
	if (!read_answer(metrics, answer, sizeof(answer), 5000) || !strstr(answer, "sockmesh_resources"))
		fail_msg("/metrics was not answered between the runs");
	if (!read_answer(dump, answer, sizeof(answer), 5000) || !strstr(answer, "\"workloads\""))
		fail_msg("/config_dump was not answered between the runs");
	pthread_mutex_unlock(&agent.model_gate.lock);
	close(metrics);
	close(dump);
	admin_stop(admin);
	sm_model_free(agent.model);
}

/* The number a metric's line gives, or -1 when the page has no such line. */
static long metric_value(const char *page, const char *line_start)
{
	const char *at = strstr(page, line_start);

	return at ? strtol(at + strlen(line_start), NULL, 10) : -1;
}

/* The workloads a /metrics answer on fd counts, -1 when none came within 5 s. */
static long scraped_workloads(int fd)
{
	char answer[8192];
	bool answered = read_answer(fd, answer, sizeof(answer), 5000);

	close(fd);
	return answered ? metric_value(answer, "sockmesh_resources{type=\"workload\"} ") : -1;
}

/* An apply that holds the model past the second a scrape waits for it (a full push of 1M workloads holds it
 * for 5-10 s, against a scraper's 10 s): /metrics, counted as waiting meanwhile (so that a split would let
 * it in), answers with the figures it read last, then the new ones once the model is free. */
static void metrics_do_not_wait_a_long_apply_out(void **state)
{
	struct harness h;
	struct agent agent = { .admin_fd = -1, .metrics_fd = -1, .model_gate = MODEL_GATE_INITIALIZER };
	struct workload_spec pod = { .uid = "ns/pod", .addresses = { "10.0.0.1" }, .node = "node-a" };
	struct admin *admin;
	struct response r;
	char err[256];
	uint16_t port;
	int fd = listen_loopback(&port);

	(void)state;
	harness_open(&h, "node-a", NULL);
	agent.model = h.model;
	assert_int_equal(admin_start(&agent, fd, &admin, err, sizeof(err)), 0);
	assert_int_equal(scraped_workloads(send_get(port, "/metrics")), 0);

	pthread_mutex_lock(&agent.model_gate.lock); /* an apply, which takes a workload in */
	response_init(&r, SM_TYPE_URL_ADDRESS);
	response_add_workload(&r, &pod, "1");
	assert_int_equal(sm_model_apply(h.model, &r.msg, &h.writer.writer, &h.rejections), 0);
	response_free(&r);
	int metrics = send_get(port, "/metrics");
	for (int ms = 0; atomic_load(&agent.model_gate.waiting) < 1 && ms < 5000; ms++)
		usleep(1000);
	assert_int_equal(atomic_load(&agent.model_gate.waiting), 1);
	long seen = scraped_workloads(metrics);
	if (seen != 0)
		fail_msg("/metrics during the apply gave %ld workloads, not the 0 it read last", seen);
	assert_int_equal(atomic_load(&agent.model_gate.waiting), 0);
	pthread_mutex_unlock(&agent.model_gate.lock);

	assert_int_equal(scraped_workloads(send_get(port, "/metrics")), 1);
	admin_stop(admin);
	harness_close(&h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(a_waiting_request_holds_up_no_other),
		cmocka_unit_test(requests_that_wait_for_the_model_go_in_between_a_splits_runs),
		cmocka_unit_test(metrics_do_not_wait_a_long_apply_out),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
