/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The agent's events thread (agent/telemetry.c) while an apply holds the model: it keeps draining the
 * ring buffer into its backlog, names those events once the model is free, in order, and drops (and counts)
 * only what is beyond the backlog's room. The datapath is a stand-in: a ring of the real one's room (7,710
 * events of 136 bytes in 1 MiB) that a producer fills, and that drops what does not fit, as the kernel's.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>

#include "agent/netns_open.h"
#include "agent/telemetry.h"
#include "datapath/datapath.h"
#include "helpers.h"
#include "log_stub.h"
#include "netns/netns.h"

#define RING_EVENTS (SM_CONN_EVENTS_BYTES / (sizeof(struct sm_conn_event) + 8))

/* ---- the datapath's ring, as the events thread sees it ---- */

static struct {
	pthread_mutex_t lock;
	pthread_cond_t changed;
	struct sm_conn_event *events; /* RING_EVENTS of them, n from head */
	size_t head, n;
	unsigned long long dropped; /* no room, as the kernel counts SM_COUNTER_CONN_EVENTS_LOST */
	int (*fn)(void *ctx, const struct sm_conn_event *ev);
	void *ctx;
} ring = { .lock = PTHREAD_MUTEX_INITIALIZER, .changed = PTHREAD_COND_INITIALIZER };

int sm_datapath_conn_events_open(struct sm_datapath *dp, int (*fn)(void *ctx, const struct sm_conn_event *ev),
				 void *ctx, struct sm_conn_events **out)
{
	(void)dp;
	ring.fn = fn;
	ring.ctx = ctx;
	*out = (struct sm_conn_events *)&ring;
	return 0;
}

/* Hands every event in the ring to the callback, as libbpf's ring_buffer__poll does; waits up to timeout_ms
 * for one. */
int sm_conn_events_poll(struct sm_conn_events *e, int timeout_ms)
{
	struct timespec deadline;
	int n = 0;

	(void)e;
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_nsec += (long)timeout_ms * 1000000;
	deadline.tv_sec += deadline.tv_nsec / 1000000000;
	deadline.tv_nsec %= 1000000000;
	pthread_mutex_lock(&ring.lock);
	while (!ring.n && pthread_cond_timedwait(&ring.changed, &ring.lock, &deadline) != ETIMEDOUT)
		;
	while (ring.n) {
		struct sm_conn_event ev = ring.events[ring.head];

		ring.head = (ring.head + 1) % RING_EVENTS;
		ring.n--;
		pthread_mutex_unlock(&ring.lock);
		ring.fn(ring.ctx, &ev);
		n++;
		pthread_mutex_lock(&ring.lock);
		pthread_cond_broadcast(&ring.changed);
	}
	pthread_mutex_unlock(&ring.lock);
	return n;
}

void sm_conn_events_close(struct sm_conn_events *e)
{
	(void)e;
}

int sm_datapath_for_each_guard(const struct sm_datapath *dp, int (*fn)(void *ctx, uint64_t cookie), void *ctx)
{
	(void)dp, (void)fn, (void)ctx;
	return 0;
}

int sm_datapath_conn_started(struct sm_datapath *dp, uint64_t netns_cookie, uint64_t *started)
{
	(void)dp, (void)netns_cookie, (void)started;
	return -ENOENT;
}

int sm_datapath_conn_started_sweep(struct sm_datapath *dp, bool (*keep)(void *ctx, uint64_t netns_cookie), void *ctx)
{
	(void)dp, (void)keep, (void)ctx;
	return 0;
}

int sm_datapath_conn_flush(struct sm_datapath *dp, int netns_fd, size_t *followed, char *err, size_t size)
{
	(void)dp, (void)netns_fd, (void)err, (void)size;
	*followed = 0;
	return 0;
}

int sm_netns_cookie_here(uint64_t *cookie)
{
	*cookie = 1;
	return 0;
}

int agent_netns_open(uint64_t cookie, int *fd)
{
	(void)cookie, (void)fd;
	return -ENOENT;
}

/* ---- the producer: connections of 10.0.0.1 (a workload of this node) ending ---- */

static uint64_t next_cookie = 1;

/* count more connection ends into the ring, a chunk at a time, each chunk once the ring has room for it
 * (false when it did not within 5 s: nothing drained it); the kernel would drop them instead. */
static bool produce(size_t count)
{
	while (count) {
		size_t chunk = count < 1000 ? count : 1000;
		struct timespec deadline;

		clock_gettime(CLOCK_REALTIME, &deadline);
		deadline.tv_sec += 5;
		pthread_mutex_lock(&ring.lock);
		while (ring.n + chunk > RING_EVENTS &&
		       pthread_cond_timedwait(&ring.changed, &ring.lock, &deadline) != ETIMEDOUT)
			;
		if (ring.n + chunk > RING_EVENTS) {
			ring.dropped += count;
			pthread_mutex_unlock(&ring.lock);
			return false;
		}
		for (size_t i = 0; i < chunk; i++) {
			struct sm_conn_event *ev = &ring.events[(ring.head + ring.n++) % RING_EVENTS];

			*ev = (struct sm_conn_event){ .socket_cookie = next_cookie++, .kind = SM_CONN_CLOSED,
						      .direction = SM_CONN_OUTBOUND, .bytes_sent = 64, .bytes_received = 64,
						      .local_port = htons(40000), .remote_port = htons(80),
						      .orig_port = htons(80) };
			inet_pton(AF_INET6, "::ffff:10.0.0.1", ev->local_addr);
			inet_pton(AF_INET6, "::ffff:10.0.0.2", ev->remote_addr);
			memcpy(ev->orig_addr, ev->remote_addr, 16);
		}
		pthread_cond_broadcast(&ring.changed);
		pthread_mutex_unlock(&ring.lock);
		count -= chunk;
	}
	return true;
}

/* The sum of a counter's samples in the istio_tcp_* text. */
static unsigned long long istio_sum(struct agent_telemetry *t, const char *name)
{
	size_t len;
	char *text = agent_telemetry_istio_metrics(t, &len), *at = text;
	unsigned long long sum = 0;

	assert_non_null(text);
	while ((at = strstr(at, name))) {
		at += strlen(name);
		if (*at == '{' && (at = strchr(at, '}')))
			sum += strtoull(at + 1, NULL, 10);
	}
	free(text);
	return sum;
}

static unsigned long long admin_value(struct agent_telemetry *t, const char *name)
{
	char *text = agent_telemetry_admin_metrics(t, NULL), line[128], *at;
	unsigned long long value = 0;

	assert_non_null(text);
	snprintf(line, sizeof(line), "\n%s ", name);
	at = strstr(text, line);
	assert_non_null(at);
	value = strtoull(at + strlen(line), NULL, 10);
	free(text);
	return value;
}

static bool closed_reach(struct agent_telemetry *t, unsigned long long want)
{
	for (int i = 0; i < 500 && istio_sum(t, "istio_tcp_connections_closed_total") < want; i++)
		usleep(10000);
	return istio_sum(t, "istio_tcp_connections_closed_total") == want;
}

/* Until the backlog has been offered want events, for at most 5 s. */
static void wait_offered(struct agent_telemetry *t, unsigned long long want)
{
	for (int ms = 0; admin_value(t, "sockmesh_telemetry_events_waited_total") < want && ms < 5000; ms++)
		usleep(1000);
}

/* Each test's ring, an empty model and its gate. */
struct fixture {
	struct sm_model *model;
	struct model_gate gate;
};

static int fixture_up(void **state)
{
	struct sm_model_options options = { .node_name = "node-a" };
	struct fixture *f = calloc(1, sizeof(*f));

	ring.events = calloc(RING_EVENTS, sizeof(*ring.events));
	if (!f || !ring.events || sm_model_new(&options, &f->model))
		return -1;
	f->gate = (struct model_gate)MODEL_GATE_INITIALIZER;
	*state = f;
	return 0;
}

static int fixture_down(void **state)
{
	struct fixture *f = *state;

	sm_model_free(f->model);
	free(f);
	free(ring.events);
	return 0;
}

/* The events thread started on the fixture's model (not synced yet). */
static struct agent_telemetry *telemetry_started(struct fixture *f)
{
	struct agent_telemetry *t;
	char err[256];

	assert_int_equal(agent_telemetry_new(false, SM_TEL_LOG_PLAIN, &t, err, sizeof(err)), 0);
	assert_int_equal(agent_telemetry_start(t, NULL, f->model, &f->gate, err, sizeof(err)), 0);
	return t;
}

/* While an apply holds the model for as long as 3.5 ring buffers of connections take to end, the ring keeps
 * draining; once it is free, every connection is counted, in order, none dropped. Beyond the backlog's room
 * (65,536 events), the rest are dropped and counted. A split lets the backlog in between two runs. */
static void events_wait_while_the_model_is_busy(void **state)
{
	struct fixture *f = *state;
	struct model_gate *gate = &f->gate;
	struct agent_telemetry *t = telemetry_started(f);

	agent_telemetry_model_synced(t);

	pthread_mutex_lock(&gate->lock); /* an apply */
	if (!produce(27000))
		fail_msg("the ring was not drained while the model was busy (%llu events dropped)", ring.dropped);
	assert_int_equal(istio_sum(t, "istio_tcp_connections_closed_total"), 0);
	pthread_mutex_unlock(&gate->lock);
	if (!closed_reach(t, 27000))
		fail_msg("%llu of 27000 connections counted", istio_sum(t, "istio_tcp_connections_closed_total"));
	assert_int_equal(admin_value(t, "sockmesh_telemetry_events_waited_total"), 27000);
	assert_int_equal(admin_value(t, "sockmesh_telemetry_events_dropped_total"), 0);

	pthread_mutex_lock(&gate->lock); /* a longer one: past the backlog's room */
	assert_true(produce(70000));
	pthread_mutex_unlock(&gate->lock);
	if (!closed_reach(t, 27000 + 65536))
		fail_msg("%llu counted, not 27000 + 65536", istio_sum(t, "istio_tcp_connections_closed_total"));
	assert_int_equal(admin_value(t, "sockmesh_telemetry_events_dropped_total"), 70000 - 65536);

	produce(10); /* the model free: named at once, not waiting */
	assert_true(closed_reach(t, 27000 + 65536 + 10));
	assert_int_equal(admin_value(t, "sockmesh_telemetry_events_waited_total"), 27000 + 70000);

	/* a split: between two runs its thread lets the backlog in, and holds the model again once it is empty */
	pthread_mutex_lock(&gate->lock);
	assert_true(produce(20000));
	wait_offered(t, 27000 + 70000 + 20000); /* all of them in the backlog */
	assert_int_equal(admin_value(t, "sockmesh_telemetry_events_waited_total"), 27000 + 70000 + 20000);
	assert_int_equal(atomic_load(&gate->waiting), 1);
	model_gate_yield(gate, 5000);
	assert_int_equal(atomic_load(&gate->waiting), 0);
	assert_int_equal(istio_sum(t, "istio_tcp_connections_closed_total"), 27000 + 65536 + 10 + 20000);
	pthread_mutex_unlock(&gate->lock);

	agent_telemetry_free(t);
}

/* Before the first Address response, events are read (the ring drains: more than it holds end meanwhile) but
 * named only once the model is synced, all of them; meanwhile the backlog does not hold up an apply. An agent
 * that stops before the response names none. */
static void events_wait_for_the_first_response(void **state)
{
	struct fixture *f = *state;
	struct agent_telemetry *t = telemetry_started(f);

	if (!produce(3 * RING_EVENTS))
		fail_msg("the ring was not drained before the first response (%llu events dropped)", ring.dropped);
	wait_offered(t, 3 * RING_EVENTS);
	assert_int_equal(admin_value(t, "sockmesh_telemetry_events_waited_total"), 3 * RING_EVENTS);
	assert_int_equal(istio_sum(t, "istio_tcp_connections_closed_total"), 0);
	assert_int_equal(atomic_load(&f->gate.waiting), 0); /* an apply meanwhile is not asked to let it in */
	agent_telemetry_model_synced(t);
	if (!closed_reach(t, 3 * RING_EVENTS))
		fail_msg("%llu of %zu connections counted", istio_sum(t, "istio_tcp_connections_closed_total"),
			 3 * RING_EVENTS);
	assert_int_equal(admin_value(t, "sockmesh_telemetry_events_dropped_total"), 0);
	assert_int_equal(atomic_load(&f->gate.waiting), 0);
	agent_telemetry_free(t);

	t = telemetry_started(f);
	assert_true(produce(100));
	wait_offered(t, 100);
	assert_int_equal(istio_sum(t, "istio_tcp_connections_closed_total"), 0);
	agent_telemetry_free(t); /* stops before the response: nothing named, the gate as it was */
	assert_int_equal(atomic_load(&f->gate.waiting), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(events_wait_while_the_model_is_busy, fixture_up, fixture_down),
		cmocka_unit_test_setup_teardown(events_wait_for_the_first_response, fixture_up, fixture_down),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
