/* SPDX-License-Identifier: Apache-2.0 */
/*
 * k8s/'s client and watcher against test/mock_kube_api.py on 127.0.0.1 (plain HTTP, or TLS with a CA
 * made by openssl in this program's temporary directory): list then watch, the field selector, bookmark
 * resume, 410 relists that drop vanished pods, 401 token rotation, TLS and a wrong CA, bad JSON, events the
 * consumer or jansson has no memory for (asked again, nothing lost), the merge-PATCH body, prompt stop, the
 * in-cluster configuration.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "clock.h"
#include "helpers.h"
#include "k8s/k8s.h"
#include "test_tmpdir.h"

#define NODE "node-a"

/* ---- the mock server ---- */

struct mock {
	pid_t pid;
	FILE *to, *from;
	char url[64];
};

static void mock_start(struct mock *m, const char *cert, const char *key)
{
	int in[2], out[2];
	char line[256];

	assert_int_equal(pipe2(in, O_CLOEXEC), 0);
	assert_int_equal(pipe2(out, O_CLOEXEC), 0);
	m->pid = fork();
	assert_true(m->pid >= 0);
	if (m->pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		dup2(in[0], 0);
		dup2(out[1], 1);
		if (cert)
			execl(PYTHON3, "python3", MOCK_KUBE_API, "--node", NODE, "--cert", cert, "--key", key, (char *)NULL);
		else
			execl(PYTHON3, "python3", MOCK_KUBE_API, "--node", NODE, (char *)NULL);
		_exit(127);
	}
	close(in[0]);
	close(out[1]);
	m->to = fdopen(in[1], "w");
	m->from = fdopen(out[0], "r");
	assert_non_null(m->to);
	assert_non_null(m->from);
	if (!fgets(line, sizeof(line), m->from))
		fail_msg("the mock Kubernetes API server did not start (" PYTHON3 " missing?)");
	json_t *j = json_loads(line, 0, NULL);
	assert_non_null(j);
	snprintf(m->url, sizeof(m->url), "%s://127.0.0.1:%d", cert ? "https" : "http",
		 (int)json_integer_value(json_object_get(j, "port")));
	json_decref(j);
}

/* Sends one command (a JSON object built by json_pack) and returns the answer. */
static json_t *mock_cmd(struct mock *m, json_t *cmd)
{
	char line[1 << 16];
	char *text = json_dumps(cmd, JSON_COMPACT);
	json_t *answer;

	assert_non_null(text);
	fprintf(m->to, "%s\n", text);
	fflush(m->to);
	free(text);
	json_decref(cmd);
	if (!fgets(line, sizeof(line), m->from))
		fail_msg("the mock Kubernetes API server died");
	answer = json_loads(line, 0, NULL);
	assert_non_null(answer);
	return answer;
}

static void mock_do(struct mock *m, json_t *cmd)
{
	json_decref(mock_cmd(m, cmd));
}

static void mock_stop(struct mock *m)
{
	/* It keeps no state worth a clean exit. */
	kill(m->pid, SIGKILL);
	waitpid(m->pid, NULL, 0);
	fclose(m->to);
	fclose(m->from);
}

static json_t *pod_obj(const char *name, const char *node, const char *ip)
{
	return json_pack("{s:{s:s, s:s, s:s, s:{s:s}, s:{s:s}}, s:{s:s}, s:{s:s, s:[{s:s}]}}",
			 "metadata", "name", name, "namespace", "demo", "uid", name, "labels", "app", name,
			 "annotations", "note", "x",
			 "spec", "nodeName", node,
			 "status", "phase", "Running", "podIPs", "ip", ip);
}

static void put_pod(struct mock *m, json_t *obj)
{
	mock_do(m, json_pack("{s:s, s:s, s:o}", "op", "put", "kind", "pods", "obj", obj));
}

/* The last rv the mock handed out for a command. */
static long mock_rv(json_t *answer)
{
	long rv = atol(json_string_value(json_object_get(answer, "rv")));

	json_decref(answer);
	return rv;
}

/* The requests the mock recorded, as a JSON array (the caller frees the answer object). */
static json_t *mock_requests(struct mock *m, json_t **answer)
{
	*answer = mock_cmd(m, json_pack("{s:s}", "op", "requests"));
	return json_object_get(*answer, "requests");
}

/* ---- a consumer, as the agent's would be: the current objects, by key ---- */

struct view {
	pthread_mutex_t lock;
	json_t *objects; /* key -> summary of the object */
	json_t *seen;    /* keys seen since SYNC_BEGIN, NULL outside a sync */
	json_t *log;     /* "ADDED demo/a", ... (the events taken in) */
	int syncs;
	const char *refuse; /* refuse the next event of this key once (-ENOMEM), as a consumer short of memory */
	bool refuse_again;  /* ... and every one after it, until cleared */
	int refusals;
};

static void view_init(struct view *v)
{
	pthread_mutex_init(&v->lock, NULL);
	v->objects = json_object();
	v->log = json_array();
	v->seen = NULL;
	v->syncs = 0;
}

static void view_clear(struct view *v)
{
	json_decref(v->objects);
	json_decref(v->log);
	json_decref(v->seen);
	pthread_mutex_destroy(&v->lock);
}

static json_t *pod_summary(const struct sm_k8s_pod *p)
{
	json_t *ips = json_array();

	for (size_t i = 0; i < p->n_pod_ips; i++)
		json_array_append_new(ips, json_string(p->pod_ips[i]));
	return json_pack("{s:s, s:O, s:O, s:b, s:s, s:o, s:b}", "uid", p->uid, "labels", p->labels,
			 "annotations", p->annotations, "host_network", p->host_network, "phase", p->phase,
			 "ips", ips, "deleting", p->deleting);
}

static int on_event(const struct sm_k8s_event *ev, void *ctx)
{
	static const char *const names[] = { "SYNC_BEGIN", "ADDED", "MODIFIED", "DELETED", "SYNC_END" };
	struct view *v = ctx;
	char key[256] = "";
	const char *k;
	json_t *val;
	void *tmp;

	pthread_mutex_lock(&v->lock);
	if (ev->pod)
		snprintf(key, sizeof(key), "%s/%s", ev->pod->namespace, ev->pod->name);
	else if (ev->namespace)
		snprintf(key, sizeof(key), "%s", ev->namespace->name);
	if (v->refuse && !strcmp(v->refuse, key)) {
		if (!v->refuse_again)
			v->refuse = NULL;
		v->refusals++;
		pthread_mutex_unlock(&v->lock);
		return -ENOMEM;
	}
	switch (ev->type) {
	case SM_K8S_SYNC_BEGIN:
		json_decref(v->seen);
		v->seen = json_object();
		break;
	case SM_K8S_SYNC_END:
		json_object_foreach_safe(v->objects, tmp, k, val)
			if (!json_object_get(v->seen, k))
				json_object_del(v->objects, k);
		json_decref(v->seen);
		v->seen = NULL;
		v->syncs++;
		break;
	case SM_K8S_ADDED:
	case SM_K8S_MODIFIED:
		if (v->seen)
			json_object_set_new(v->seen, key, json_true());
		json_object_set_new(v->objects, key, ev->pod ? pod_summary(ev->pod) :
				    json_pack("{s:O}", "labels", ev->namespace->labels));
		break;
	case SM_K8S_DELETED:
		json_object_del(v->objects, key);
		break;
	}
	json_array_append_new(v->log, json_sprintf("%s %s", names[ev->type], key));
	pthread_mutex_unlock(&v->lock);
	return 0;
}

static void view_refuse(struct view *v, const char *key, bool again)
{
	pthread_mutex_lock(&v->lock);
	v->refuse = key;
	v->refuse_again = again;
	pthread_mutex_unlock(&v->lock);
}

static int view_refusals(struct view *v)
{
	pthread_mutex_lock(&v->lock);
	int n = v->refusals;
	pthread_mutex_unlock(&v->lock);
	return n;
}

/* How many events of the log read entry ("SYNC_END ", "ADDED demo/b", ...). */
static size_t view_logged(struct view *v, const char *entry)
{
	size_t i, n = 0;
	json_t *e;

	pthread_mutex_lock(&v->lock);
	json_array_foreach(v->log, i, e)
		n += !strcmp(json_string_value(e), entry);
	pthread_mutex_unlock(&v->lock);
	return n;
}

static bool view_has(struct view *v, const char *key)
{
	pthread_mutex_lock(&v->lock);
	bool has = json_object_get(v->objects, key) != NULL;
	pthread_mutex_unlock(&v->lock);
	return has;
}

static int view_syncs(struct view *v)
{
	pthread_mutex_lock(&v->lock);
	int n = v->syncs;
	pthread_mutex_unlock(&v->lock);
	return n;
}

/* A copy of one object's summary (the caller frees it), NULL when absent. */
static json_t *view_get(struct view *v, const char *key)
{
	pthread_mutex_lock(&v->lock);
	json_t *o = json_deep_copy(json_object_get(v->objects, key));
	pthread_mutex_unlock(&v->lock);
	return o;
}

#define WAIT_FOR(cond, seconds)                                                                       \
	do {                                                                                          \
		double until_ = now_seconds() + (seconds);                                            \
		while (!(cond) && now_seconds() < until_)                                             \
			sleep_ms(10);                                                                 \
		if (!(cond))                                                                          \
			fail_msg("timed out waiting for %s", #cond);                                  \
	} while (0)

/* ---- fixtures ---- */

struct fixture {
	struct mock mock;
	struct view view;
	char token[256];
	struct sm_k8s_client *client;
	struct sm_k8s_watch *watch;
};

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	fputs(text, f);
	assert_int_equal(fclose(f), 0);
}

static struct sm_k8s_client *new_client(const char *url, const char *token, const char *ca)
{
	struct sm_k8s_options o = {
		.api_url = url, .token_file = token, .ca_file = ca,
		.backoff_initial_ms = 40, .backoff_max_ms = 200,
	};
	struct sm_k8s_client *c = NULL;
	char err[256];

	assert_int_equal(sm_k8s_client_new(&o, &c, err, sizeof(err)), 0);
	return c;
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	view_init(&f->view);
	temp_path(f->token, sizeof(f->token), "token");
	write_file(f->token, "tok1\n");
	mock_start(&f->mock, NULL, NULL);
	mock_do(&f->mock, json_pack("{s:s, s:s}", "op", "token", "value", "tok1"));
	f->client = new_client(f->mock.url, f->token, NULL);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	sm_k8s_watch_stop(f->watch);
	json_set_alloc_funcs(malloc, free); /* as jansson_short_of_memory left it, also when it failed */
	sm_k8s_client_free(f->client);
	mock_stop(&f->mock);
	view_clear(&f->view);
	free(f);
	return 0;
}

static void start_pods(struct fixture *f)
{
	assert_int_equal(sm_k8s_watch_start(f->client, SM_K8S_PODS, NODE, on_event, &f->view, &f->watch), 0);
}

static struct sm_k8s_watch_stats stats_of(struct sm_k8s_watch *w)
{
	struct sm_k8s_watch_stats s;

	sm_k8s_watch_get_stats(w, &s);
	return s;
}

/* ---- tests ---- */

static void list_then_watch(void **state)
{
	struct fixture *f = *state;
	json_t *answer, *reqs, *req, *a;
	size_t i, lists = 0, watches = 0;

	put_pod(&f->mock, pod_obj("a", NODE, "10.1.0.1"));
	put_pod(&f->mock, pod_obj("other-node", "node-b", "10.1.0.9"));
	start_pods(f);
	WAIT_FOR(view_syncs(&f->view) == 1, 5);
	assert_true(view_has(&f->view, "demo/a"));
	assert_false(view_has(&f->view, "demo/other-node"));

	/* Watch events: an added pod, a relabel (and deletion started), a deletion. */
	put_pod(&f->mock, pod_obj("b", NODE, "10.1.0.2"));
	WAIT_FOR(view_has(&f->view, "demo/b"), 5);
	a = pod_obj("a", NODE, "10.1.0.1");
	json_object_set_new(json_object_get(json_object_get(a, "metadata"), "labels"), SM_K8S_DATAPLANE_LABEL,
			    json_string("sockmesh"));
	json_object_set_new(json_object_get(a, "metadata"), "deletionTimestamp", json_string("2026-12-03T18:00:00Z"));
	put_pod(&f->mock, a);
	mock_do(&f->mock, json_pack("{s:s, s:s, s:s}", "op", "delete", "kind", "pods", "name", "demo/b"));
	WAIT_FOR(!view_has(&f->view, "demo/b"), 5);

	json_t *got = view_get(&f->view, "demo/a");
	assert_non_null(got);
	assert_string_equal(json_string_value(json_object_get(json_object_get(got, "labels"), SM_K8S_DATAPLANE_LABEL)),
			    "sockmesh");
	assert_string_equal(json_string_value(json_object_get(json_object_get(got, "annotations"), "note")), "x");
	assert_true(json_is_true(json_object_get(got, "deleting")));
	assert_string_equal(json_string_value(json_object_get(got, "phase")), "Running");
	assert_string_equal(json_string_value(json_array_get(json_object_get(got, "ips"), 0)), "10.1.0.1");
	json_decref(got);
	pthread_mutex_lock(&f->view.lock);
	char *log = json_dumps(f->view.log, JSON_COMPACT);
	pthread_mutex_unlock(&f->view.lock);
	assert_non_null(strstr(log, "\"ADDED demo/b\""));
	assert_non_null(strstr(log, "\"MODIFIED demo/a\""));
	assert_non_null(strstr(log, "\"DELETED demo/b\""));
	free(log);

	/* The requests: the node's field selector, the token, a watch from the list's resourceVersion. */
	reqs = mock_requests(&f->mock, &answer);
	json_array_foreach(reqs, i, req) {
		json_t *q = json_object_get(req, "query");

		assert_string_equal(json_string_value(json_object_get(q, "fieldSelector")), "spec.nodeName=" NODE);
		assert_string_equal(json_string_value(json_object_get(req, "auth")), "Bearer tok1");
		if (!json_object_get(q, "watch")) {
			lists++;
			continue;
		}
		watches++;
		assert_string_equal(json_string_value(json_object_get(q, "allowWatchBookmarks")), "true");
		/* The mock's counter starts at 100; two puts made the list's resourceVersion 102. */
		assert_string_equal(json_string_value(json_object_get(q, "resourceVersion")), "102");
	}
	assert_int_equal(lists, 1);
	assert_int_equal(watches, 1);
	json_decref(answer);

	struct sm_k8s_watch_stats s = stats_of(f->watch);
	assert_int_equal(s.lists, 1);
	assert_true(s.events >= 3);
	assert_true(s.synced);
}

static void pod_fields(void **state)
{
	struct fixture *f = *state;
	json_t *b = pod_obj("b", NODE, "10.1.0.2"), *got;

	json_array_append_new(json_object_get(json_object_get(b, "status"), "podIPs"), json_pack("{s:s}", "ip", "fd00::2"));
	json_object_set_new(json_object_get(b, "spec"), "hostNetwork", json_true());
	json_object_del(json_object_get(b, "metadata"), "labels");
	put_pod(&f->mock, b);
	start_pods(f);
	WAIT_FOR(view_has(&f->view, "demo/b"), 5);
	got = view_get(&f->view, "demo/b");
	assert_true(json_is_true(json_object_get(got, "host_network")));
	assert_int_equal(json_array_size(json_object_get(got, "ips")), 2);
	assert_string_equal(json_string_value(json_array_get(json_object_get(got, "ips"), 1)), "fd00::2");
	assert_int_equal(json_object_size(json_object_get(got, "labels")), 0); /* none: an empty object */
	assert_false(json_is_true(json_object_get(got, "deleting")));
	json_decref(got);
}

static void namespaces_relabel(void **state)
{
	struct fixture *f = *state;
	struct sm_k8s_watch *w;
	json_t *got;

	mock_do(&f->mock, json_pack("{s:s, s:s, s:{s:{s:s}}}", "op", "put", "kind", "namespaces", "obj",
				    "metadata", "name", "demo"));
	assert_int_equal(sm_k8s_watch_start(f->client, SM_K8S_NAMESPACES, NULL, on_event, &f->view, &w), 0);
	WAIT_FOR(view_has(&f->view, "demo"), 5);
	mock_do(&f->mock, json_pack("{s:s, s:s, s:{s:{s:s, s:{s:s}}}}", "op", "put", "kind", "namespaces", "obj",
				    "metadata", "name", "demo", "labels", SM_K8S_DATAPLANE_LABEL, "sockmesh"));
	double until = now_seconds() + 5;
	for (;;) {
		got = view_get(&f->view, "demo");
		if (json_object_get(json_object_get(got, "labels"), SM_K8S_DATAPLANE_LABEL) || now_seconds() > until)
			break;
		json_decref(got);
		sleep_ms(10);
	}
	assert_string_equal(json_string_value(json_object_get(json_object_get(got, "labels"), SM_K8S_DATAPLANE_LABEL)),
			    "sockmesh");
	json_decref(got);
	sm_k8s_watch_stop(w);
}

static void bookmark_resume(void **state)
{
	struct fixture *f = *state;
	json_t *answer, *reqs, *req;
	char bookmark[32];
	size_t i, resumed = 0;

	put_pod(&f->mock, pod_obj("a", NODE, "10.1.0.1"));
	start_pods(f);
	WAIT_FOR(stats_of(f->watch).watches == 1, 5);
	snprintf(bookmark, sizeof(bookmark), "%ld", mock_rv(mock_cmd(&f->mock, json_pack("{s:s}", "op", "bookmark"))));
	WAIT_FOR(stats_of(f->watch).bookmarks == 1, 5);
	assert_string_equal(stats_of(f->watch).resource_version, bookmark);
	mock_do(&f->mock, json_pack("{s:s}", "op", "close"));
	WAIT_FOR(stats_of(f->watch).watches == 2, 5);

	reqs = mock_requests(&f->mock, &answer);
	json_array_foreach(reqs, i, req) {
		const char *rv = json_string_value(json_object_get(json_object_get(req, "query"), "resourceVersion"));

		resumed += rv && !strcmp(rv, bookmark);
	}
	json_decref(answer);
	assert_int_equal(resumed, 1);
	assert_int_equal(stats_of(f->watch).lists, 1); /* resumed, not relisted */
	assert_int_equal(view_syncs(&f->view), 1);
}

static void gone_relist(struct fixture *f, bool as_event)
{
	put_pod(&f->mock, pod_obj("a", NODE, "10.1.0.1"));
	put_pod(&f->mock, pod_obj("b", NODE, "10.1.0.2"));
	start_pods(f);
	WAIT_FOR(stats_of(f->watch).watches == 1, 5);
	assert_true(view_has(&f->view, "demo/b"));
	/* b vanishes with its DELETED event lost to the compaction: only the relist can tell. */
	mock_do(&f->mock, json_pack("{s:s, s:s, s:s, s:b}", "op", "delete", "kind", "pods", "name", "demo/b",
				    "silent", 1));
	mock_do(&f->mock, json_pack("{s:s, s:b}", "op", "compact", "as_event", as_event));
	WAIT_FOR(view_syncs(&f->view) == 2, 5);
	assert_false(view_has(&f->view, "demo/b"));
	assert_true(view_has(&f->view, "demo/a"));
	struct sm_k8s_watch_stats s = stats_of(f->watch);
	assert_int_equal(s.gone, 1);
	assert_int_equal(s.lists, 2);
	assert_int_equal(s.errors, 0);
}

static void gone_status_relists(void **state)
{
	gone_relist(*state, false);
}

static void gone_event_relists(void **state)
{
	gone_relist(*state, true);
}

static void token_rotation(void **state)
{
	struct fixture *f = *state;

	put_pod(&f->mock, pod_obj("a", NODE, "10.1.0.1"));
	mock_do(&f->mock, json_pack("{s:s, s:s}", "op", "token", "value", "tok2"));
	start_pods(f);
	WAIT_FOR(stats_of(f->watch).token_reloads >= 2, 5);
	assert_false(stats_of(f->watch).synced);
	assert_int_equal(stats_of(f->watch).last_error, -EACCES);
	write_file(f->token, "tok2\n");
	WAIT_FOR(view_syncs(&f->view) == 1, 5);

	/* Rotated again while watching: the resumed watch gets a 401, re-reads the token and goes on. */
	WAIT_FOR(stats_of(f->watch).watches == 1, 5);
	uint64_t reloads = stats_of(f->watch).token_reloads;
	write_file(f->token, "tok3\n");
	mock_do(&f->mock, json_pack("{s:s, s:s}", "op", "token", "value", "tok3"));
	mock_do(&f->mock, json_pack("{s:s}", "op", "close"));
	WAIT_FOR(stats_of(f->watch).watches == 2, 5);
	assert_int_equal(stats_of(f->watch).token_reloads, reloads + 1);
	assert_int_equal(stats_of(f->watch).lists, 1);
	put_pod(&f->mock, pod_obj("c", NODE, "10.1.0.3"));
	WAIT_FOR(view_has(&f->view, "demo/c"), 5);
}

static void bad_json_relists(void **state)
{
	struct fixture *f = *state;

	put_pod(&f->mock, pod_obj("a", NODE, "10.1.0.1"));
	start_pods(f);
	WAIT_FOR(stats_of(f->watch).watches == 1, 5);
	mock_do(&f->mock, json_pack("{s:s}", "op", "garbage"));
	WAIT_FOR(stats_of(f->watch).lists == 2, 5);
	assert_int_equal(stats_of(f->watch).last_error, -EBADMSG);
	assert_non_null(strstr(stats_of(f->watch).last_error_msg, "not JSON"));
	put_pod(&f->mock, pod_obj("b", NODE, "10.1.0.2"));
	WAIT_FOR(view_has(&f->view, "demo/b"), 5);
}

/* A consumer that cannot take a watch event in gets it again: the stream resumes before it, no relist. */
static void refused_event_is_asked_again(void **state)
{
	struct fixture *f = *state;

	put_pod(&f->mock, pod_obj("a", NODE, "10.1.0.1"));
	start_pods(f);
	WAIT_FOR(stats_of(f->watch).watches == 1, 5);
	view_refuse(&f->view, "demo/b", false);
	put_pod(&f->mock, pod_obj("b", NODE, "10.1.0.2"));
	WAIT_FOR(view_has(&f->view, "demo/b"), 5);
	assert_int_equal(f->view.refusals, 1);
	assert_int_equal(view_logged(&f->view, "ADDED demo/b"), 1);
	struct sm_k8s_watch_stats stats = stats_of(f->watch);
	assert_int_equal(stats.lists, 1);
	assert_int_equal(stats.errors, 1);
	assert_int_equal(stats.last_error, -ENOMEM);
	assert_non_null(strstr(stats.last_error_msg, "the pods ADDED event of demo/b was not taken in"));
	assert_true(stats.watches >= 2);
}

/* A consumer that keeps refusing: the watcher backs off (a refusal after HTTP 200 does not reset it). */
static void refusals_back_off(void **state)
{
	struct fixture *f = *state;

	put_pod(&f->mock, pod_obj("a", NODE, "10.1.0.1"));
	start_pods(f);
	WAIT_FOR(stats_of(f->watch).watches == 1, 5);
	view_refuse(&f->view, "demo/b", true);
	put_pod(&f->mock, pod_obj("b", NODE, "10.1.0.2"));
	WAIT_FOR(view_refusals(&f->view) >= 1, 5);
	sleep_ms(1000);
	/* Back-off 40 ms doubling to 200 ms: about 7 tries in a second; reset each time, about 25. */
	int n = view_refusals(&f->view);
	if (n > 12)
		fail_msg("%d refusals in about a second: the back-off was reset", n);
	view_refuse(&f->view, NULL, false);
	WAIT_FOR(view_has(&f->view, "demo/b"), 5);
	assert_int_equal(stats_of(f->watch).lists, 1);
}

/* An object of a list that is not taken in: the list gets no SYNC_END (which would drop the object) and is
 * asked for again whole. */
static void refused_list_item_relists(void **state)
{
	struct fixture *f = *state;

	put_pod(&f->mock, pod_obj("a", NODE, "10.1.0.1"));
	put_pod(&f->mock, pod_obj("b", NODE, "10.1.0.2"));
	view_refuse(&f->view, "demo/b", false);
	start_pods(f);
	WAIT_FOR(view_syncs(&f->view) == 1, 5);
	assert_true(view_has(&f->view, "demo/a"));
	assert_true(view_has(&f->view, "demo/b"));
	assert_int_equal(view_logged(&f->view, "SYNC_BEGIN "), 2);
	assert_int_equal(view_logged(&f->view, "SYNC_END "), 1);
	struct sm_k8s_watch_stats stats = stats_of(f->watch);
	assert_int_equal(stats.lists, 1);
	assert_int_equal(stats.errors, 1);
	assert_non_null(strstr(stats.last_error_msg, "the pods listed object of demo/b was not taken in"));
}

/* jansson's allocations on the watcher's thread fail while this is set (the test's own thread's never do). */
static bool jansson_short;
static pthread_t test_thread;

static void *jansson_malloc(size_t size)
{
	return __atomic_load_n(&jansson_short, __ATOMIC_SEQ_CST) && !pthread_equal(pthread_self(), test_thread) ?
		       NULL : malloc(size);
}

static void set_jansson_short(bool short_of_memory)
{
	__atomic_store_n(&jansson_short, short_of_memory, __ATOMIC_SEQ_CST);
}

/*
 * A list or an event that jansson has no memory to parse: jansson 2.14 reports it as a syntax error, so the
 * watcher lists again and loses nothing.
 */
static void jansson_short_of_memory(void **state)
{
	struct fixture *f = *state;

	test_thread = pthread_self();
	json_set_alloc_funcs(jansson_malloc, free);
	put_pod(&f->mock, pod_obj("a", NODE, "10.1.0.1"));
	set_jansson_short(true);
	start_pods(f);
	WAIT_FOR(stats_of(f->watch).errors >= 1, 5);
	set_jansson_short(false);
	WAIT_FOR(stats_of(f->watch).watches == 1, 5);
	uint64_t errors = stats_of(f->watch).errors;
	set_jansson_short(true);
	put_pod(&f->mock, pod_obj("b", NODE, "10.1.0.2"));
	WAIT_FOR(stats_of(f->watch).errors > errors, 5);
	set_jansson_short(false);
	WAIT_FOR(view_has(&f->view, "demo/b"), 5);
	assert_true(view_has(&f->view, "demo/a"));
}

/* A server that ends every watch at once, empty: the watcher backs off instead of spinning. */
static void empty_watches_back_off(void **state)
{
	struct fixture *f = *state;

	put_pod(&f->mock, pod_obj("a", NODE, "10.1.0.1"));
	mock_do(&f->mock, json_pack("{s:s, s:b}", "op", "flap", "on", 1));
	start_pods(f);
	WAIT_FOR(stats_of(f->watch).watches >= 1, 5);
	sleep_ms(1000);
	/* Back-off 40 ms doubling to 200 ms: about 7 in a second; a busy loop makes hundreds. */
	uint64_t n = stats_of(f->watch).watches;
	assert_true(n <= 15);
	assert_int_equal(stats_of(f->watch).errors, 0);
	mock_do(&f->mock, json_pack("{s:s, s:b}", "op", "flap", "on", 0));
	put_pod(&f->mock, pod_obj("b", NODE, "10.1.0.2"));
	WAIT_FOR(view_has(&f->view, "demo/b"), 5);
	assert_int_equal(stats_of(f->watch).lists, 1);
}

static void patch_annotation(void **state)
{
	struct fixture *f = *state;
	json_t *answer, *reqs, *req, *body;
	char err[256];

	put_pod(&f->mock, pod_obj("a", NODE, "10.1.0.1"));
	assert_int_equal(sm_k8s_patch_pod_annotation(f->client, "demo", "a", SM_K8S_STATUS_ANNOTATION, "enabled",
						     err, sizeof(err)), 0);
	assert_int_equal(sm_k8s_patch_pod_annotation(f->client, "demo", "a", SM_K8S_STATUS_ANNOTATION, NULL,
						     err, sizeof(err)), 0);
	assert_int_equal(sm_k8s_patch_pod_annotation(f->client, "demo", "a", "ambient.istio.io/redirection",
						     "enabled", err, sizeof(err)), -EPERM);
	assert_int_equal(sm_k8s_patch_pod_annotation(f->client, "demo", "nope", SM_K8S_STATUS_ANNOTATION, "enabled",
						     err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "404"));
	/* A rotated token: one 401, a re-read, success. */
	write_file(f->token, "tok9");
	mock_do(&f->mock, json_pack("{s:s, s:s}", "op", "token", "value", "tok9"));
	assert_int_equal(sm_k8s_patch_pod_annotation(f->client, "demo", "a", SM_K8S_STATUS_ANNOTATION, "enabled",
						     err, sizeof(err)), 0);

	reqs = mock_requests(&f->mock, &answer);
	assert_int_equal(json_array_size(reqs), 5); /* the refused one sent nothing */
	req = json_array_get(reqs, 0);
	assert_string_equal(json_string_value(json_object_get(req, "method")), "PATCH");
	assert_string_equal(json_string_value(json_object_get(req, "path")), "/api/v1/namespaces/demo/pods/a");
	assert_string_equal(json_string_value(json_object_get(req, "content_type")), "application/merge-patch+json");
	body = json_loads(json_string_value(json_object_get(req, "body")), 0, NULL);
	json_t *want = json_pack("{s:{s:{s:s}}}", "metadata", "annotations", SM_K8S_STATUS_ANNOTATION, "enabled");
	assert_true(json_equal(body, want));
	json_decref(body);
	json_decref(want);
	body = json_loads(json_string_value(json_object_get(json_array_get(reqs, 1), "body")), 0, NULL);
	assert_true(json_is_null(json_object_get(json_object_get(json_object_get(body, "metadata"), "annotations"),
						 SM_K8S_STATUS_ANNOTATION)));
	json_decref(body);
	assert_string_equal(json_string_value(json_object_get(json_array_get(reqs, 4), "auth")), "Bearer tok9");
	json_decref(answer);
}

static void stops_promptly(void **state)
{
	struct fixture *f = *state;
	struct sm_k8s_client *c = new_client("http://127.0.0.1:1", "", NULL);
	struct sm_k8s_watch *w;
	double t;

	/* In a watch stream that is idle. */
	start_pods(f);
	WAIT_FOR(stats_of(f->watch).watches == 1, 5);
	sleep_ms(100);
	t = now_seconds();
	sm_k8s_watch_stop(f->watch);
	f->watch = NULL;
	assert_true(now_seconds() - t < 0.5);

	/* In a back-off, nothing listening (port 1 refuses). */
	assert_int_equal(sm_k8s_watch_start(c, SM_K8S_NAMESPACES, NULL, on_event, &f->view, &w), 0);
	WAIT_FOR(stats_of(w).errors >= 2, 5);
	assert_int_equal(stats_of(w).last_error, -ECONNREFUSED);
	t = now_seconds();
	sm_k8s_watch_stop(w);
	assert_true(now_seconds() - t < 0.5);
	sm_k8s_client_free(c);
}

/* openssl, quietly; fails the test if it fails. */
static void run_openssl(const char *args)
{
	char cmd[4096];

	snprintf(cmd, sizeof(cmd), "openssl %s >/dev/null 2>&1", args);
	if (system(cmd) != 0)
		fail_msg("openssl %s failed", args);
}

static void make_ca(const char *dir, const char *name)
{
	char args[1024];

	snprintf(args, sizeof(args), "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=%s -keyout %s/%s.key -out %s/%s.crt",
		 name, dir, name, dir, name);
	run_openssl(args);
}

static void tls(void **state)
{
	struct fixture *f = *state;
	char dir[256], cert[300], key[300], ca[300], wrong[300], ext[300], args[2048];
	struct sm_k8s_client *good, *bad;
	struct sm_k8s_watch *wg, *wb;
	struct view other;
	struct mock m;

	(void)f;
	temp_path(dir, sizeof(dir), "tls");
	assert_int_equal(mkdir(dir, 0700), 0);
	make_ca(dir, "ca");
	make_ca(dir, "wrong");
	snprintf(args, sizeof(args), "req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=kubernetes -keyout %s/server.key -out %s/server.csr",
		 dir, dir);
	run_openssl(args);
	/* The server certificate names 127.0.0.1, which libcurl checks. */
	snprintf(ext, sizeof(ext), "%s/san.ext", dir);
	write_file(ext, "subjectAltName=IP:127.0.0.1\n");
	snprintf(args, sizeof(args), "x509 -req -in %s/server.csr -CA %s/ca.crt -CAkey %s/ca.key -CAcreateserial -days 1 "
		 "-extfile %s -out %s/server.crt", dir, dir, dir, ext, dir);
	run_openssl(args);
	snprintf(cert, sizeof(cert), "%s/server.crt", dir);
	snprintf(key, sizeof(key), "%s/server.key", dir);
	snprintf(ca, sizeof(ca), "%s/ca.crt", dir);
	snprintf(wrong, sizeof(wrong), "%s/wrong.crt", dir);

	mock_start(&m, cert, key);
	mock_do(&m, json_pack("{s:s, s:s, s:{s:{s:s}}}", "op", "put", "kind", "namespaces", "obj", "metadata", "name",
			      "demo"));
	good = new_client(m.url, "", ca);
	bad = new_client(m.url, "", wrong);
	view_init(&other);
	assert_int_equal(sm_k8s_watch_start(good, SM_K8S_NAMESPACES, NULL, on_event, &f->view, &wg), 0);
	assert_int_equal(sm_k8s_watch_start(bad, SM_K8S_NAMESPACES, NULL, on_event, &other, &wb), 0);
	WAIT_FOR(view_has(&f->view, "demo"), 10);
	WAIT_FOR(stats_of(wb).errors >= 1, 10);
	struct sm_k8s_watch_stats s = stats_of(wb);
	assert_false(s.synced);
	assert_int_equal(s.last_error, -EPROTO);
	assert_int_equal(view_syncs(&other), 0);
	sm_k8s_watch_stop(wg);
	sm_k8s_watch_stop(wb);
	sm_k8s_client_free(good);
	sm_k8s_client_free(bad);
	view_clear(&other);
	mock_stop(&m);
}

static void in_cluster_config(void **state)
{
	struct sm_k8s_client *c = NULL;
	char err[256];

	(void)state;
	unsetenv("KUBERNETES_SERVICE_HOST");
	unsetenv("KUBERNETES_SERVICE_PORT");
	assert_int_equal(sm_k8s_client_new(NULL, &c, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "KUBERNETES_SERVICE_HOST"));
	setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1", 1);
	setenv("KUBERNETES_SERVICE_PORT", "443", 1);
	assert_int_equal(sm_k8s_client_new(NULL, &c, err, sizeof(err)), 0);
	assert_string_equal(sm_k8s_client_url(c), "https://10.96.0.1:443");
	sm_k8s_client_free(c);
	setenv("KUBERNETES_SERVICE_HOST", "fd00::1", 1);
	assert_int_equal(sm_k8s_client_new(NULL, &c, err, sizeof(err)), 0);
	assert_string_equal(sm_k8s_client_url(c), "https://[fd00::1]:443");
	sm_k8s_client_free(c);
	/* An override wins; a trailing slash is dropped. */
	struct sm_k8s_options o = { .api_url = "http://127.0.0.1:8080/" };
	assert_int_equal(sm_k8s_client_new(&o, &c, err, sizeof(err)), 0);
	assert_string_equal(sm_k8s_client_url(c), "http://127.0.0.1:8080");
	sm_k8s_client_free(c);
	unsetenv("KUBERNETES_SERVICE_HOST");
	unsetenv("KUBERNETES_SERVICE_PORT");
	/* A pod watcher needs its node. */
	assert_int_equal(sm_k8s_client_new(&o, &c, err, sizeof(err)), 0);
	struct sm_k8s_watch *w;
	assert_int_equal(sm_k8s_watch_start(c, SM_K8S_PODS, NULL, on_event, NULL, &w), -EINVAL);
	sm_k8s_client_free(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(list_then_watch, setup, teardown),
		cmocka_unit_test_setup_teardown(pod_fields, setup, teardown),
		cmocka_unit_test_setup_teardown(namespaces_relabel, setup, teardown),
		cmocka_unit_test_setup_teardown(bookmark_resume, setup, teardown),
		cmocka_unit_test_setup_teardown(gone_status_relists, setup, teardown),
		cmocka_unit_test_setup_teardown(gone_event_relists, setup, teardown),
		cmocka_unit_test_setup_teardown(token_rotation, setup, teardown),
		cmocka_unit_test_setup_teardown(bad_json_relists, setup, teardown),
		cmocka_unit_test_setup_teardown(refused_event_is_asked_again, setup, teardown),
		cmocka_unit_test_setup_teardown(refused_list_item_relists, setup, teardown),
		cmocka_unit_test_setup_teardown(refusals_back_off, setup, teardown),
		cmocka_unit_test_setup_teardown(jansson_short_of_memory, setup, teardown),
		cmocka_unit_test_setup_teardown(empty_watches_back_off, setup, teardown),
		cmocka_unit_test_setup_teardown(patch_annotation, setup, teardown),
		cmocka_unit_test_setup_teardown(stops_promptly, setup, teardown),
		cmocka_unit_test_setup_teardown(tls, setup, teardown),
		cmocka_unit_test(in_cluster_config),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
