/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Connection events → telemetry: each event's ends are named from the model (under its lock, two hash
 * lookups each), counted by telemetry/ and, at a connection's end, written to the access log
 * (agent/telemetry_event.c). Series of workloads that are gone are evicted every EVICT_SECONDS.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "agent/access_log.h"
#include "agent/agent.h"
#include "agent/event_backlog.h"
#include "agent/flush_memo.h"
#include "agent/log.h"
#include "agent/netns_open.h"
#include "agent/telemetry.h"
#include "agent/telemetry_event.h"
#include "netns/netns.h"

#define EVICT_SECONDS 5
/* How often each enrolled namespace's open connections are flushed (sm_conn_flush). Longer than the kernel's
 * SM_CONN_REPORT_NS (1 s), so that a connection reported at one flush is due at the next: bytes are counted
 * within one interval (+ the ring's 200 ms) of passing, a connection open within 1 s + one interval. */
#define FLUSH_INTERVAL_MS 2500
/* A gone workload's sockets are reported closed at once: one silent this long after lost its CLOSED. */
#define STALE_SECONDS 300
#define LINE_MAX_BYTES 8192 /* a longer line (names are at most a few hundred bytes) is not written */
/* Events read while the model is busy: 9 MiB at most, 6.5 s of 10,000 connections a second. */
#define BACKLOG_EVENTS 65536
/* Named at a time once the model is free, so that an apply waiting for it waits little. */
#define BACKLOG_CHUNK 4096
#define BACKLOG_POLL_MS 20 /* how soon, while events wait, the model is tried again */

struct agent_telemetry {
	struct sm_telemetry *counters;
	struct access_log *log; /* NULL with --access-log off */
	struct sm_tel_log_cache *log_cache; /* its lines' names, NULL with it off */
	struct tel_event_sink sink; /* the counters, and whether and how a line is formatted */
	const struct sm_model *model;
	struct model_gate *model_gate;
	struct sm_conn_events *events;
	struct sm_datapath *dp;
	struct event_backlog backlog; /* events read while the model was busy (the events thread's) */
	struct flush_memo *flushed; /* what each enrolled namespace's last walk found */
	bool flush_swept;	    /* counts left by earlier agents removed (the first round) */
	uint64_t own_netns_cookie;
	pthread_t thread;
	bool running;
	atomic_bool stop;
	atomic_bool model_synced; /* the first Address response (or the local config) applied */
	atomic_uint_least64_t events_read, record_failures, flushes, flushes_skipped;
};

int agent_telemetry_new(bool access_log, enum sm_tel_log_format format, struct agent_telemetry **out, char *err,
			size_t size)
{
	struct agent_telemetry *t = calloc(1, sizeof(*t));
	int ret = t ? sm_telemetry_new(&t->counters) : -ENOMEM;

	if (!ret && access_log)
		ret = access_log_new(AGENT_ACCESS_LOG_BUFFER, STDOUT_FILENO, &t->log);
	if (!ret && access_log)
		ret = sm_tel_log_cache_new(&t->log_cache);
	if (!ret)
		ret = flush_memo_new(&t->flushed);
	if (ret) {
		snprintf(err, size, "telemetry: %s", strerror(-ret));
		agent_telemetry_free(t);
		return ret;
	}
	t->sink = (struct tel_event_sink){
		.counters = t->counters, .access_log = access_log, .format = format, .log_cache = t->log_cache,
	};
	*out = t;
	return 0;
}

/* ---- events (counted and formatted by agent/telemetry_event.c, under the model lock) ---- */

/* After an event: a failure to count it counted, its access log line queued. */
static void finish(struct agent_telemetry *t, int ret, const char *line, size_t len, size_t size)
{
	if (ret)
		atomic_fetch_add(&t->record_failures, 1);
	if (len && len < size)
		access_log_write(t->log, line, len);
}

/* One event, read at *read_at, named and counted under the model lock (event_backlog_fn). */
static void record(void *ctx, const void *event, const struct timespec *read_at)
{
	struct agent_telemetry *t = ctx;
	char line[LINE_MAX_BYTES];
	size_t len;
	int ret = tel_event_conn(&t->sink, t->model, event, read_at, line, sizeof(line), &len);

	finish(t, ret, line, len, sizeof(line));
}

/* Named at once when the model is free; else it waits in the backlog, behind any before it, so that the
 * ring keeps draining while an apply holds the model. */
static int on_conn_event(void *ctx, const struct sm_conn_event *ev)
{
	struct agent_telemetry *t = ctx;
	struct timespec now;

	atomic_fetch_add(&t->events_read, 1);
	clock_gettime(CLOCK_REALTIME, &now);
	event_backlog_offer(&t->backlog, ev, &now, record, t);
	return 0;
}

void agent_telemetry_denied(void *ctx, const struct sm_authz_event *ev, const char *error, const struct timespec *at)
{
	struct agent_telemetry *t = ctx;
	char line[LINE_MAX_BYTES];
	size_t len;
	int ret;

	if (!t || !t->model)
		return;
	ret = tel_event_denied(&t->sink, t->model, ev, error, at, line, sizeof(line), &len);
	finish(t, ret, line, len, sizeof(line));
}

/* ---- the events thread ---- */

static bool workload_exists(void *ctx, const char *uid)
{
	return sm_model_workload_exists(ctx, uid);
}

static void evict(struct agent_telemetry *t, time_t *next)
{
	time_t now = time(NULL);
	size_t removed;

	if (now < *next)
		return;
	*next = now + EVICT_SECONDS;
	/* the model lock first, then telemetry's: the order record() takes them in */
	if (!model_gate_trylock(t->model_gate)) {
		*next = now; /* the model is busy: the events first, eviction at the next round */
		return;
	}
	removed = sm_telemetry_evict(t->counters, workload_exists, (void *)t->model, STALE_SECONDS);
	model_gate_unlock(t->model_gate);
	if (removed)
		log_msg(LOG_DEBUG, "telemetry: %zu series of workloads that are gone removed", removed);
}

static uint64_t now_ms(void)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (uint64_t)now.tv_sec * 1000 + (uint64_t)now.tv_nsec / 1000000;
}

/*
 * One enrolled (guarded) namespace's open connections that have not reported lately report now, unless it
 * has nothing to report (agent/flush_memo.h): its walk costs a pass over every bucket of its TCP table,
 * which namespaces share with the host's unless the node says otherwise (docs/kubernetes.md).
 */
static int flush_one(void *ctx, uint64_t cookie)
{
	struct agent_telemetry *t = ctx;
	uint64_t started = 0;
	size_t followed;
	char err[256];
	int fd = -1, ret;
	bool counted;

	ret = sm_datapath_conn_started(t->dp, cookie, &started);
	if (ret && ret != -ENOENT)
		log_msg(LOG_DEBUG, "telemetry: no count of the connections started in network namespace %llu: %s",
			(unsigned long long)cookie, strerror(-ret));
	counted = !ret;
	if (!flush_memo_due(t->flushed, cookie, counted, started)) {
		atomic_fetch_add(&t->flushes_skipped, 1);
		return 0;
	}
	if (cookie != t->own_netns_cookie && (ret = agent_netns_open(cookie, &fd))) {
		log_msg(LOG_DEBUG, "telemetry: no way into enrolled network namespace %llu to flush it: %s",
			(unsigned long long)cookie, strerror(-ret));
		return 0;
	}
	ret = sm_datapath_conn_flush(t->dp, fd, &followed, err, sizeof(err));
	if (fd >= 0)
		close(fd);
	atomic_fetch_add(&t->flushes, 1);
	if (ret)
		log_msg(LOG_WARN, "telemetry: flushing network namespace %llu: %s", (unsigned long long)cookie, err);
	else if (flush_memo_walked(t->flushed, cookie, counted, started, followed))
		log_msg(LOG_DEBUG, "telemetry: out of memory remembering network namespace %llu's flush",
			(unsigned long long)cookie);
	return 0;
}

static bool flush_remembers(void *ctx, uint64_t cookie)
{
	return flush_memo_knows(ctx, cookie);
}

static void flush(struct agent_telemetry *t, uint64_t *next)
{
	uint64_t now = now_ms();
	int swept;

	if (now < *next)
		return;
	*next = now + FLUSH_INTERVAL_MS;
	sm_datapath_for_each_guard(t->dp, flush_one, t);
	/* the counts of namespaces no longer enrolled go, and at the first round those earlier agents left */
	if (!flush_memo_end_round(t->flushed) && t->flush_swept)
		return;
	swept = sm_datapath_conn_started_sweep(t->dp, flush_remembers, t->flushed);
	if (swept < 0)
		log_msg(LOG_WARN, "telemetry: removing the connection counts of namespaces no longer enrolled: %s",
			strerror(-swept));
	t->flush_swept = swept >= 0;
}

/*
 * Until the model holds every workload and service, events are read but held in the backlog: named before,
 * their workloads would all be unknown; left in the ring, a late first response would let it fill (7,710
 * events) and the kernel drop the rest. Whether the model got there (else the agent stops, or the ring
 * cannot be read).
 */
static bool hold_until_synced(struct agent_telemetry *t)
{
	while (!atomic_load(&t->stop) && !atomic_load(&t->model_synced)) {
		int ret = sm_conn_events_poll(t->events, 50);
		if (ret < 0 && ret != -EINTR) {
			log_msg(LOG_WARN, "telemetry: reading the connection events: %s", strerror(-ret));
			return false;
		}
	}
	if (!atomic_load(&t->model_synced)) {
		if (t->backlog.n)
			log_msg(LOG_WARN, "telemetry: %zu connection events read before the first Address response "
					  "go unreported: the agent stops before it", t->backlog.n);
		return false;
	}
	event_backlog_release(&t->backlog);
	return true;
}

static void *events_main(void *arg)
{
	struct agent_telemetry *t = arg;
	time_t next_evict = time(NULL) + EVICT_SECONDS;
	uint64_t next_flush = 0;

	if (!hold_until_synced(t))
		return NULL;
	while (!atomic_load(&t->stop)) {
		int ret = sm_conn_events_poll(t->events, t->backlog.n ? BACKLOG_POLL_MS : 200);
		if (ret < 0 && ret != -EINTR) {
			log_msg(LOG_WARN, "telemetry: reading the connection events: %s", strerror(-ret));
			break;
		}
		event_backlog_drain(&t->backlog, false, BACKLOG_CHUNK, record, t);
		flush(t, &next_flush);
		evict(t, &next_evict);
	}
	/* stopping: those that waited are named (the model goes after this thread) */
	event_backlog_drain(&t->backlog, true, BACKLOG_CHUNK, record, t);
	return NULL;
}

int agent_telemetry_start(struct agent_telemetry *t, struct sm_datapath *dp, const struct sm_model *model,
			  struct model_gate *model_gate, char *err, size_t size)
{
	int ret;

	t->model_gate = model_gate;
	event_backlog_init(&t->backlog, model_gate, sizeof(struct sm_conn_event), BACKLOG_EVENTS);
	event_backlog_hold(&t->backlog); /* until the model is synced (events_main) */
	t->dp = dp;
	sm_netns_cookie_here(&t->own_netns_cookie); /* 0 if it fails: the own namespace is then opened like others */
	ret = sm_datapath_conn_events_open(dp, on_conn_event, t, &t->events);
	if (ret) {
		snprintf(err, size, "opening the connection events: %s", strerror(-ret));
		return ret;
	}
	t->model = model; /* from here on the denial hook records too */
	ret = -pthread_create(&t->thread, NULL, events_main, t);
	if (ret) {
		snprintf(err, size, "starting the telemetry thread: %s", strerror(-ret));
		return ret;
	}
	t->running = true;
	return 0;
}

void agent_telemetry_model_synced(struct agent_telemetry *t)
{
	if (t)
		atomic_store(&t->model_synced, true);
}

void agent_telemetry_free(struct agent_telemetry *t)
{
	if (!t)
		return;
	atomic_store(&t->stop, true);
	if (t->running)
		pthread_join(t->thread, NULL);
	sm_conn_events_close(t->events);
	event_backlog_free(&t->backlog);
	access_log_free(t->log);
	sm_tel_log_cache_free(t->log_cache);
	flush_memo_free(t->flushed);
	sm_telemetry_free(t->counters);
	free(t);
}

/* ---- metrics ---- */

char *agent_telemetry_istio_metrics(struct agent_telemetry *t, size_t *len)
{
	return sm_telemetry_render(t->counters, len);
}

char *agent_telemetry_admin_metrics(struct agent_telemetry *t, const uint64_t *counters)
{
	struct sm_telemetry_counts counts;
	char *text = NULL;

	sm_telemetry_counts(t->counters, &counts);
	if (asprintf(&text,
		     "# HELP sockmesh_telemetry_events_dropped_total connection events the ring buffer had no room for, "
		     "or the backlog of those read while the model was busy\n"
		     "# TYPE sockmesh_telemetry_events_dropped_total counter\n"
		     "sockmesh_telemetry_events_dropped_total %llu\n"
		     "# HELP sockmesh_telemetry_events_total connection events read\n"
		     "# TYPE sockmesh_telemetry_events_total counter\n"
		     "sockmesh_telemetry_events_total %llu\n"
		     "# HELP sockmesh_telemetry_events_waited_total connection events read while an apply held the model, "
		     "named after it\n"
		     "# TYPE sockmesh_telemetry_events_waited_total counter\n"
		     "sockmesh_telemetry_events_waited_total %llu\n"
		     "# HELP sockmesh_telemetry_series label sets held by the istio_tcp_* counters\n"
		     "# TYPE sockmesh_telemetry_series gauge\n"
		     "sockmesh_telemetry_series %zu\n"
		     "# HELP sockmesh_telemetry_open_connections connections followed that have not ended\n"
		     "# TYPE sockmesh_telemetry_open_connections gauge\n"
		     "sockmesh_telemetry_open_connections %zu\n"
		     "# HELP sockmesh_telemetry_stale_connections_total connections of gone workloads forgotten (their end was lost)\n"
		     "# TYPE sockmesh_telemetry_stale_connections_total counter\n"
		     "sockmesh_telemetry_stale_connections_total %llu\n"
		     "# HELP sockmesh_telemetry_record_failures_total events not counted (out of memory)\n"
		     "# TYPE sockmesh_telemetry_record_failures_total counter\n"
		     "sockmesh_telemetry_record_failures_total %llu\n"
		     "# HELP sockmesh_telemetry_flushes_total walks of an enrolled namespace's TCP sockets for long connections\n"
		     "# TYPE sockmesh_telemetry_flushes_total counter\n"
		     "sockmesh_telemetry_flushes_total %llu\n"
		     "# HELP sockmesh_telemetry_flushes_skipped_total walks not needed: nothing followed in the namespace\n"
		     "# TYPE sockmesh_telemetry_flushes_skipped_total counter\n"
		     "sockmesh_telemetry_flushes_skipped_total %llu\n"
		     "# HELP sockmesh_access_log_dropped_total access log lines dropped because stdout fell behind\n"
		     "# TYPE sockmesh_access_log_dropped_total counter\n"
		     "sockmesh_access_log_dropped_total %llu\n",
		     (counters ? (unsigned long long)counters[SM_COUNTER_CONN_EVENTS_LOST] : 0ULL) +
			     (unsigned long long)atomic_load(&t->backlog.dropped),
		     (unsigned long long)atomic_load(&t->events_read), (unsigned long long)atomic_load(&t->backlog.waited),
		     counts.series, counts.open,
		     (unsigned long long)counts.forgotten, (unsigned long long)atomic_load(&t->record_failures),
		     (unsigned long long)atomic_load(&t->flushes), (unsigned long long)atomic_load(&t->flushes_skipped),
		     (unsigned long long)access_log_dropped(t->log)) < 0)
		return NULL;
	return text;
}
