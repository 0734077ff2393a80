/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The list-then-watch loop of one resource, on its own thread, as client-go's reflector does it:
 * list (SYNC_BEGIN, ADDED..., SYNC_END), watch from the list's resourceVersion with bookmarks, resume
 * from the last resourceVersion seen when a stream ends, relist on 410 Gone, re-read the token on 401,
 * back off (bounded, jittered) on every other error. Requests run through a curl multi handle so that
 * stopping can wake the thread out of a request in flight.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "k8s/internal.h"

#define LIST_MAX_BYTES (64u << 20)  /* a node's pods or a cluster's namespaces: far below */
#define LINE_MAX_BYTES (16u << 20)  /* one watch event */
#define ERROR_BODY_MAX 4096u

struct sm_k8s_watch {
	struct sm_k8s_client *client;
	enum sm_k8s_kind kind;
	char *selector; /* "fieldSelector=spec.nodeName%3D<node>" or "" */
	sm_k8s_event_fn fn;
	void *ctx;
	json_t *empty; /* the labels and annotations of objects that have none */
	pthread_t thread;
	CURLM *multi;

	pthread_mutex_t lock; /* guards stopping and stats */
	pthread_cond_t wake;
	bool stopping;
	struct sm_k8s_watch_stats stats;

	/* The thread's own: */
	char rv[64];
	unsigned seed;
	CURL *easy;       /* the request in flight */
	bool watching;    /* the request is a watch: its body is parsed line by line */
	bool counted;     /* the watch stream was counted in stats */
	unsigned lines;   /* events and bookmarks the current stream carried */
	int abort_rc;     /* why the write callback stopped the transfer */
	bool failed_here; /* the last request failed on this side (an event not taken in), not at the server */
	char msg[256];    /* its message */
	char *buf;
	size_t len, cap;
};

static bool stopping(struct sm_k8s_watch *w)
{
	bool s;

	pthread_mutex_lock(&w->lock);
	s = w->stopping;
	pthread_mutex_unlock(&w->lock);
	return s;
}

static void record_error(struct sm_k8s_watch *w, int rc, const char *msg)
{
	pthread_mutex_lock(&w->lock);
	w->stats.errors++;
	w->stats.last_error = rc;
	snprintf(w->stats.last_error_msg, sizeof(w->stats.last_error_msg), "%s", msg);
	pthread_mutex_unlock(&w->lock);
}

static void set_rv(struct sm_k8s_watch *w, const char *rv)
{
	snprintf(w->rv, sizeof(w->rv), "%s", rv ? rv : "");
	pthread_mutex_lock(&w->lock);
	snprintf(w->stats.resource_version, sizeof(w->stats.resource_version), "%s", w->rv);
	pthread_mutex_unlock(&w->lock);
}

static const char *const kind_names[] = {
	[SM_K8S_PODS] = "pods",
	[SM_K8S_NAMESPACES] = "namespaces",
};

/* ---- parsing ---- */

static json_t *object_or(json_t *value, json_t *fallback)
{
	return json_is_object(value) ? value : fallback;
}

static int parse_pod(struct sm_k8s_watch *w, json_t *obj, struct sm_k8s_pod *p)
{
	json_t *meta = json_object_get(obj, "metadata");
	json_t *spec = json_object_get(obj, "spec");
	json_t *status = json_object_get(obj, "status");
	json_t *ips = json_object_get(status, "podIPs"), *ip;
	size_t i;

	memset(p, 0, sizeof(*p));
	p->uid = json_string_value(json_object_get(meta, "uid"));
	p->namespace = json_string_value(json_object_get(meta, "namespace"));
	p->name = json_string_value(json_object_get(meta, "name"));
	if (!p->uid || !p->namespace || !p->name)
		return -EBADMSG;
	p->resource_version = json_string_value(json_object_get(meta, "resourceVersion"));
	p->labels = object_or(json_object_get(meta, "labels"), w->empty);
	p->annotations = object_or(json_object_get(meta, "annotations"), w->empty);
	p->deleting = json_is_string(json_object_get(meta, "deletionTimestamp"));
	p->host_network = json_is_true(json_object_get(spec, "hostNetwork"));
	p->phase = json_string_value(json_object_get(status, "phase"));
	if (!p->phase)
		p->phase = "";
	json_array_foreach(ips, i, ip) {
		const char *s = json_string_value(json_object_get(ip, "ip"));

		if (s && *s && p->n_pod_ips < SM_K8S_MAX_POD_IPS)
			p->pod_ips[p->n_pod_ips++] = s;
	}
	/* Older API servers report only status.podIP. */
	if (!p->n_pod_ips && json_string_length(json_object_get(status, "podIP")))
		p->pod_ips[p->n_pod_ips++] = json_string_value(json_object_get(status, "podIP"));
	return 0;
}

static int parse_namespace(struct sm_k8s_watch *w, json_t *obj, struct sm_k8s_namespace *ns)
{
	json_t *meta = json_object_get(obj, "metadata");

	ns->name = json_string_value(json_object_get(meta, "name"));
	if (!ns->name)
		return -EBADMSG;
	ns->resource_version = json_string_value(json_object_get(meta, "resourceVersion"));
	ns->labels = object_or(json_object_get(meta, "labels"), w->empty);
	return 0;
}

/* Names in w->msg what was not taken in (what: "ADDED event", ...), for want of memory or by the consumer. */
static int not_taken(struct sm_k8s_watch *w, int rc, const char *what, const char *name)
{
	w->failed_here = true;
	snprintf(w->msg, sizeof(w->msg), "the %s %s%s%.160s was not taken in: %s", kind_names[w->kind], what,
		 name ? " of " : "", name ? name : "", strerror(-rc));
	return rc;
}

/*
 * Parses one object and hands it to the consumer. -EBADMSG, delivering nothing, when it is malformed
 * (*malformed set); else the consumer's error, with w->msg naming the object.
 */
static int deliver(struct sm_k8s_watch *w, enum sm_k8s_event_type type, json_t *obj, const char *what,
		   bool *malformed)
{
	struct sm_k8s_event ev = { .type = type, .kind = w->kind };
	struct sm_k8s_namespace ns;
	struct sm_k8s_pod pod;
	char name[512];
	int rc;

	if (w->kind == SM_K8S_PODS) {
		rc = parse_pod(w, obj, &pod);
		ev.pod = &pod;
	} else {
		rc = parse_namespace(w, obj, &ns);
		ev.namespace = &ns;
	}
	*malformed = rc;
	if (rc)
		return rc;
	rc = w->fn(&ev, w->ctx);
	if (!rc)
		return 0;
	if (w->kind == SM_K8S_PODS)
		snprintf(name, sizeof(name), "%s/%s", pod.namespace, pod.name);
	else
		snprintf(name, sizeof(name), "%s", ns.name);
	return not_taken(w, rc, what, name);
}

static int sync_mark(struct sm_k8s_watch *w, enum sm_k8s_event_type type)
{
	struct sm_k8s_event ev = { .type = type, .kind = w->kind };
	int rc = w->fn(&ev, w->ctx);

	return rc ? not_taken(w, rc, type == SM_K8S_SYNC_BEGIN ? "list's start" : "list's end", NULL) : 0;
}

/* One line of a watch stream: {"type": ..., "object": {...}}. */
static int handle_event(struct sm_k8s_watch *w, const char *line, size_t n)
{
	static const struct {
		const char *name;
		enum sm_k8s_event_type type;
		const char *what; /* in the error when it is not taken in */
	} types[] = { { "ADDED", SM_K8S_ADDED, "ADDED event" }, { "MODIFIED", SM_K8S_MODIFIED, "MODIFIED event" },
		      { "DELETED", SM_K8S_DELETED, "DELETED event" } };
	json_error_t jerr;
	json_t *ev = json_loadb(line, n, 0, &jerr);
	json_t *obj = json_object_get(ev, "object");
	const char *type = json_string_value(json_object_get(ev, "type"));
	const char *rv = json_string_value(json_object_get(json_object_get(obj, "metadata"), "resourceVersion"));
	int rc = -EBADMSG;
	bool malformed;

	/* jansson 2.14 reports a failed allocation as a syntax error: a relist then loses nothing either */
	if (!ev) {
		snprintf(w->msg, sizeof(w->msg), "a %s watch event is not JSON: %s", kind_names[w->kind], jerr.text);
		return -EBADMSG;
	}
	if (!type || !json_is_object(obj)) {
		snprintf(w->msg, sizeof(w->msg), "a %s watch event has no type or object", kind_names[w->kind]);
		goto out;
	}
	if (!strcmp(type, "ERROR")) {
		/* A metav1.Status; 410 means our resourceVersion is too old: relist. */
		json_int_t code = json_integer_value(json_object_get(obj, "code"));
		const char *message = json_string_value(json_object_get(obj, "message"));

		rc = code == 410 ? -ESTALE : -EIO;
		snprintf(w->msg, sizeof(w->msg), "%s watch ERROR event, code %lld: %s", kind_names[w->kind],
			 (long long)code, message ? message : "(no message)");
		goto out;
	}
	if (!rv) {
		snprintf(w->msg, sizeof(w->msg), "a %s %s event has no resourceVersion", kind_names[w->kind], type);
		goto out;
	}
	if (!strcmp(type, "BOOKMARK")) {
		pthread_mutex_lock(&w->lock);
		w->stats.bookmarks++;
		pthread_mutex_unlock(&w->lock);
		set_rv(w, rv);
		rc = 0;
		goto out;
	}
	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
		if (strcmp(type, types[i].name))
			continue;
		rc = deliver(w, types[i].type, obj, types[i].what, &malformed);
		if (malformed)
			snprintf(w->msg, sizeof(w->msg), "a %s %s event lacks its name, namespace or uid",
				 kind_names[w->kind], type);
		if (rc)
			goto out;
		pthread_mutex_lock(&w->lock);
		w->stats.events++;
		pthread_mutex_unlock(&w->lock);
		set_rv(w, rv);
		goto out;
	}
	snprintf(w->msg, sizeof(w->msg), "a %s watch event of unknown type %.32s", kind_names[w->kind], type);
out:
	json_decref(ev);
	return rc;
}

/* ---- requests ---- */

static int append(struct sm_k8s_watch *w, const char *data, size_t n, size_t max)
{
	if (w->len + n + 1 > max)
		return -EFBIG;
	if (w->len + n + 1 > w->cap) {
		size_t cap = w->cap ? w->cap : 4096;
		char *grown;

		while (cap < w->len + n + 1)
			cap *= 2;
		grown = realloc(w->buf, cap);
		if (!grown)
			return -ENOMEM;
		w->buf = grown;
		w->cap = cap;
	}
	memcpy(w->buf + w->len, data, n);
	w->len += n;
	w->buf[w->len] = '\0';
	return 0;
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *arg)
{
	struct sm_k8s_watch *w = arg;
	size_t n = size * nmemb, start = 0;
	long status = 0;
	int rc;

	curl_easy_getinfo(w->easy, CURLINFO_RESPONSE_CODE, &status);
	if (!w->watching || status != 200) {
		/* A list's body, or an error's Status (of which the start is enough). */
		rc = append(w, data, n, w->watching || status != 200 ? ERROR_BODY_MAX : LIST_MAX_BYTES);
		if (rc == -EFBIG && status != 200)
			return n;
		if (rc) {
			w->abort_rc = rc;
			snprintf(w->msg, sizeof(w->msg), "the %s list is larger than %u MiB", kind_names[w->kind],
				 LIST_MAX_BYTES >> 20);
			return 0;
		}
		return n;
	}
	rc = append(w, data, n, LINE_MAX_BYTES);
	if (rc) {
		w->abort_rc = rc;
		snprintf(w->msg, sizeof(w->msg), "a %s watch event is larger than %u MiB", kind_names[w->kind],
			 LINE_MAX_BYTES >> 20);
		return 0;
	}
	for (char *nl; (nl = memchr(w->buf + start, '\n', w->len - start)); start = nl + 1 - w->buf) {
		size_t line = nl - (w->buf + start);

		if (!line)
			continue;
		w->lines++;
		rc = handle_event(w, w->buf + start, line);
		if (rc) {
			w->abort_rc = rc;
			return 0;
		}
	}
	memmove(w->buf, w->buf + start, w->len - start);
	w->len -= start;
	return n;
}

/* Counts a watch stream when its headers end: the server sends no body until the first event. */
static size_t on_header(char *data, size_t size, size_t nmemb, void *arg)
{
	struct sm_k8s_watch *w = arg;
	size_t n = size * nmemb;
	long status = 0;

	curl_easy_getinfo(w->easy, CURLINFO_RESPONSE_CODE, &status);
	if (w->watching && !w->counted && status == 200 && n <= 2 && (n == 0 || data[0] == '\r' || data[0] == '\n')) {
		w->counted = true;
		pthread_mutex_lock(&w->lock);
		w->stats.watches++;
		pthread_mutex_unlock(&w->lock);
	}
	return n;
}

/*
 * GETs url, feeding on_body; returns 0 with *status set, or -errno with w->msg. -ECANCELED when the
 * watcher is stopped meanwhile.
 */
static int get(struct sm_k8s_watch *w, const char *url, bool watching, long *status)
{
	char curl_err[CURL_ERROR_SIZE] = "";
	struct curl_slist *headers = NULL;
	CURLcode result = CURLE_OK;
	int running = 1, rc, left;
	CURLMsg *m;

	*status = 0;
	w->len = 0;
	w->abort_rc = 0;
	w->watching = watching;
	w->counted = false;
	w->lines = 0;
	w->easy = curl_easy_init();
	if (!w->easy)
		return -ENOMEM;
	rc = k8s_easy_setup(w->client, w->easy, url, &headers, w->msg, sizeof(w->msg));
	if (rc)
		goto out;
	curl_easy_setopt(w->easy, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(w->easy, CURLOPT_WRITEDATA, w);
	curl_easy_setopt(w->easy, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(w->easy, CURLOPT_HEADERDATA, w);
	curl_easy_setopt(w->easy, CURLOPT_ERRORBUFFER, curl_err);
	/* A watch lasts until the server ends it (its own timeout) or we stop; a list must not hang. */
	if (!watching)
		curl_easy_setopt(w->easy, CURLOPT_TIMEOUT_MS, 60000L);
	if (curl_multi_add_handle(w->multi, w->easy) != CURLM_OK) {
		rc = -ENOMEM;
		goto out;
	}
	while (running) {
		if (curl_multi_perform(w->multi, &running) != CURLM_OK) {
			result = CURLE_FAILED_INIT;
			break;
		}
		if (stopping(w)) {
			rc = -ECANCELED;
			break;
		}
		if (running)
			curl_multi_poll(w->multi, NULL, 0, 1000, NULL);
	}
	while ((m = curl_multi_info_read(w->multi, &left)))
		if (m->msg == CURLMSG_DONE)
			result = m->data.result;
	curl_easy_getinfo(w->easy, CURLINFO_RESPONSE_CODE, status);
	curl_multi_remove_handle(w->multi, w->easy);
	if (rc)
		goto out;
	if (w->abort_rc) {
		rc = w->abort_rc;
	} else if (result != CURLE_OK) {
		rc = k8s_curl_errno(result);
		snprintf(w->msg, sizeof(w->msg), "GET %s: %s", url, *curl_err ? curl_err : curl_easy_strerror(result));
	}
out:
	curl_slist_free_all(headers);
	curl_easy_cleanup(w->easy);
	w->easy = NULL;
	return rc;
}

/* The error for a non-200 answer, with the Status message when the body has one. */
static int status_error(struct sm_k8s_watch *w, const char *verb, long status)
{
	json_t *body = json_loadb(w->buf ? w->buf : "", w->len, 0, NULL);
	const char *message = json_string_value(json_object_get(body, "message"));

	snprintf(w->msg, sizeof(w->msg), "%s %s: HTTP status %ld%s%.160s", verb, kind_names[w->kind], status,
		 message ? ": " : "", message ? message : "");
	json_decref(body);
	return status ? k8s_status_errno(status) : -EIO;
}

static char *resource_url(struct sm_k8s_watch *w, const char *query)
{
	char *url;
	const char *sep = *w->selector && *query ? "&" : "";

	if (asprintf(&url, "%s/api/v1/%s?%s%s%s", w->client->url, kind_names[w->kind], w->selector, sep, query) < 0)
		return NULL;
	return url;
}

static int list(struct sm_k8s_watch *w, long *status)
{
	char *url = resource_url(w, "");
	json_t *body = NULL, *items;
	json_error_t jerr;
	const char *rv;
	size_t i, bad = 0;
	int rc;

	if (!url)
		return -ENOMEM;
	rc = get(w, url, false, status);
	if (rc)
		goto out;
	if (*status != 200) {
		rc = status_error(w, "listing", *status);
		goto out;
	}
	body = json_loadb(w->buf ? w->buf : "", w->len, 0, &jerr);
	items = json_object_get(body, "items");
	rv = json_string_value(json_object_get(json_object_get(body, "metadata"), "resourceVersion"));
	if (!body || !json_is_array(items) || !rv || !*rv) {
		rc = -EBADMSG;
		snprintf(w->msg, sizeof(w->msg), "the %s list is not a list with a resourceVersion%s%s",
			 kind_names[w->kind], body ? "" : ": ", body ? "" : jerr.text);
		goto out;
	}
	rc = sync_mark(w, SM_K8S_SYNC_BEGIN);
	for (i = 0; !rc && i < json_array_size(items); i++) {
		bool malformed;

		rc = deliver(w, SM_K8S_ADDED, json_array_get(items, i), "listed object", &malformed);
		if (malformed) {
			bad++;
			rc = 0;
		}
	}
	if (!rc)
		rc = sync_mark(w, SM_K8S_SYNC_END);
	if (rc)
		goto out; /* not taken in: the whole list is asked for again */
	set_rv(w, rv);
	pthread_mutex_lock(&w->lock);
	w->stats.lists++;
	w->stats.synced = true;
	pthread_mutex_unlock(&w->lock);
	/* The others are in: the consumer has a consistent view even if one item could not be read. */
	if (bad) {
		char msg[128];

		snprintf(msg, sizeof(msg), "the %s list had %zu item(s) without name, namespace or uid, skipped",
			 kind_names[w->kind], bad);
		record_error(w, -EBADMSG, msg);
	}
out:
	json_decref(body);
	free(url);
	return rc;
}

static int watch(struct sm_k8s_watch *w, long *status)
{
	char query[160];
	char *url;
	int rc;

	snprintf(query, sizeof(query), "watch=1&allowWatchBookmarks=true&resourceVersion=%s", w->rv);
	url = resource_url(w, query);
	if (!url)
		return -ENOMEM;
	rc = get(w, url, true, status);
	if (!rc && *status != 200)
		rc = status_error(w, "watching", *status);
	free(url);
	return rc;
}

/* ---- the loop ---- */

/* Sleeps ms or until stopped; true when stopped. */
static bool pause_ms(struct sm_k8s_watch *w, unsigned ms)
{
	struct timespec until;
	bool s;

	clock_gettime(CLOCK_MONOTONIC, &until);
	until.tv_sec += ms / 1000;
	until.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&w->lock);
	while (!w->stopping && pthread_cond_timedwait(&w->wake, &w->lock, &until) != ETIMEDOUT)
		;
	s = w->stopping;
	pthread_mutex_unlock(&w->lock);
	return s;
}

static void *run(void *arg)
{
	struct sm_k8s_watch *w = arg;
	unsigned backoff = 0;
	bool reloaded = false; /* the token was re-read since the last success */
	long status;
	int rc;

	while (!stopping(w)) {
		bool watching = *w->rv, empty;
		struct timespec t0, t1;

		w->msg[0] = '\0';
		w->failed_here = false;
		status = 0;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		rc = watching ? watch(w, &status) : list(w, &status);
		clock_gettime(CLOCK_MONOTONIC, &t1);
		if (rc == -ECANCELED)
			break;
		/*
		 * A watch the server ends at once with nothing in it (a proxy, an overloaded server) must not
		 * turn into a busy loop: treat it like an error, without counting one.
		 */
		empty = !rc && watching && !w->lines &&
			(t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000 < 1000;
		if (status == 200 && rc != -EBADMSG && !w->failed_here && !empty) {
			backoff = 0;
			reloaded = false;
		}
		if (!rc && !empty)
			continue; /* listed, or the stream ended: watch (again) from w->rv */
		if (rc == -ESTALE) {
			pthread_mutex_lock(&w->lock);
			w->stats.gone++;
			pthread_mutex_unlock(&w->lock);
			set_rv(w, NULL);
			continue;
		}
		if (rc == -EBADMSG)
			set_rv(w, NULL); /* we may have missed an event: start over from a list */
		if (rc)
			record_error(w, rc, *w->msg ? w->msg : strerror(-rc));
		if (rc && status == 401) {
			int reload = k8s_reload_token(w->client, w->msg, sizeof(w->msg));

			pthread_mutex_lock(&w->lock);
			w->stats.token_reloads++;
			pthread_mutex_unlock(&w->lock);
			if (reload)
				record_error(w, reload, w->msg);
			/* The first 401 after a success is most likely a rotation: retry at once. */
			if (!reloaded && !reload) {
				reloaded = true;
				continue;
			}
		}
		backoff = backoff ? backoff * 2 : w->client->backoff_initial_ms;
		if (backoff > w->client->backoff_max_ms)
			backoff = w->client->backoff_max_ms;
		/* Full jitter over the upper half: many agents restarting together do not retry in step. */
		if (pause_ms(w, backoff / 2 + (unsigned)rand_r(&w->seed) % (backoff / 2 + 1)))
			break;
	}
	return NULL;
}

int sm_k8s_watch_start(struct sm_k8s_client *client, enum sm_k8s_kind kind, const char *node_name,
		       sm_k8s_event_fn fn, void *ctx, struct sm_k8s_watch **out)
{
	pthread_condattr_t attr;
	struct sm_k8s_watch *w;
	int rc;

	if (!client || !fn || (kind != SM_K8S_PODS && kind != SM_K8S_NAMESPACES) ||
	    (kind == SM_K8S_PODS && (!node_name || !*node_name)))
		return -EINVAL;
	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->client = client;
	w->kind = kind;
	w->fn = fn;
	w->ctx = ctx;
	w->seed = (unsigned)time(NULL) ^ (unsigned)(uintptr_t)w;
	pthread_mutex_init(&w->lock, NULL);
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&w->wake, &attr);
	pthread_condattr_destroy(&attr);
	w->empty = json_object();
	w->multi = curl_multi_init();
	if (kind == SM_K8S_PODS) {
		char *node = curl_easy_escape(NULL, node_name, 0);

		if (!node || asprintf(&w->selector, "fieldSelector=spec.nodeName%%3D%s", node) < 0)
			w->selector = NULL;
		curl_free(node);
	} else {
		w->selector = strdup("");
	}
	if (!w->empty || !w->multi || !w->selector) {
		rc = -ENOMEM;
		goto fail;
	}
	rc = -pthread_create(&w->thread, NULL, run, w);
	if (rc)
		goto fail;
	*out = w;
	return 0;
fail:
	curl_multi_cleanup(w->multi);
	json_decref(w->empty);
	free(w->selector);
	pthread_cond_destroy(&w->wake);
	pthread_mutex_destroy(&w->lock);
	free(w);
	return rc;
}

void sm_k8s_watch_stop(struct sm_k8s_watch *w)
{
	if (!w)
		return;
	pthread_mutex_lock(&w->lock);
	w->stopping = true;
	pthread_cond_broadcast(&w->wake);
	pthread_mutex_unlock(&w->lock);
	curl_multi_wakeup(w->multi);
	pthread_join(w->thread, NULL);
	curl_multi_cleanup(w->multi);
	json_decref(w->empty);
	free(w->selector);
	free(w->buf);
	pthread_cond_destroy(&w->wake);
	pthread_mutex_destroy(&w->lock);
	free(w);
}

void sm_k8s_watch_get_stats(struct sm_k8s_watch *w, struct sm_k8s_watch_stats *out)
{
	pthread_mutex_lock(&w->lock);
	*out = w->stats;
	pthread_mutex_unlock(&w->lock);
}
