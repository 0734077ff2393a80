/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The enroller (agent/enroller.h). One table, uid -> pod as last seen, its netns cookie and whether the
 * cookie is in sm_enrolled, behind one mutex; three threads feed it (the pods watcher, the namespaces
 * watcher, the CNI server) and a fourth retries what /proc could not resolve yet and sweeps the map.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "agent/agent.h"
#include "agent/deadline.h"
#include "agent/enroller.h"
#include "agent/log.h"
#include "cniserver/cniserver.h"
#include "k8s/k8s.h"
#include "netns/netns.h"
#include "podns/podns.h"

#define MAX_PODS 4096		/* a node runs 110 pods by default; pending CNI entries count too */
#define PENDING_TTL_S 600	/* a CNI ADD the watcher never confirms is forgotten after this */
#define TICK_MS 2000		/* retries of unresolved pods, annotation patches */
#define PATCHES_PER_TICK 16
#define PATCH_RETRY_S 60	/* after a failed patch of a pod's status annotation */
#define PROC_RETRY_MAX_S 60	/* the longest wait between /proc walks for a pod not found there */

struct pod {
	char uid[64], namespace[254], name[254];
	bool seen;	 /* the watcher reported it (else: a pending CNI ADD) */
	bool marked;	 /* seen since the last SYNC_BEGIN */
	time_t pending_since;
	/* the pod as the decision needs it */
	json_t *labels, *annotations;
	bool host_network, deleting;
	char phase[32];
	char ips[SM_K8S_MAX_POD_IPS][64];
	size_t n_ips;
	/* its namespace */
	bool has_cookie, cookie_from_cni, enrolled;
	uint64_t cookie;
	int netns_fd; /* the namespace itself (-1: none at hand), to guard it with the authorization check */
	enum sm_k8s_reason reason;
	time_t patch_retry_at; /* a failed annotation patch waits until then */
	/* a pod /proc could not pair yet: the periodic pass tries again from then, waiting twice as
	 * long each time (up to PROC_RETRY_MAX_S); a pod event tries at once */
	time_t proc_retry_at;
	unsigned proc_wait_s;
	bool datapath_failed; /* its sm_enrolled entry or its guard could not be written: the periodic pass retries */
};

struct enroller {
	struct enroller_options options;
	struct sm_datapath *dp;
	struct sm_k8s_policy policy;
	struct sm_k8s_client *client;
	struct sm_k8s_watch *pods_watch, *ns_watch;
	struct sm_cni_server *cni;
	pthread_mutex_t lock;
	struct pod *pods[MAX_PODS];
	size_t n_pods;
	json_t *namespaces; /* name -> labels */
	bool pods_synced, ns_synced;
	/* the periodic pass */
	pthread_t ticker;
	bool ticker_started, stopping;
	pthread_cond_t wake;
	uint64_t pods_errors, ns_errors; /* the watchers' error counts already logged */
};

static struct pod *find_pod(struct enroller *e, const char *uid)
{
	for (size_t i = 0; i < e->n_pods; i++)
		if (!strcmp(e->pods[i]->uid, uid))
			return e->pods[i];
	return NULL;
}

/* A pod entry with no labels yet; -ENOSPC when the table is full, -ENOMEM. */
static int add_pod(struct enroller *e, const char *uid, const char *namespace, const char *name, struct pod **out)
{
	struct pod *pod;

	if (e->n_pods == MAX_PODS)
		return -ENOSPC;
	pod = calloc(1, sizeof(*pod));
	if (!pod || !(pod->labels = json_object()) || !(pod->annotations = json_object())) {
		if (pod)
			json_decref(pod->labels);
		free(pod);
		return -ENOMEM;
	}
	snprintf(pod->uid, sizeof(pod->uid), "%s", uid);
	snprintf(pod->namespace, sizeof(pod->namespace), "%s", namespace);
	snprintf(pod->name, sizeof(pod->name), "%s", name);
	pod->netns_fd = -1;
	e->pods[e->n_pods++] = pod;
	*out = pod;
	return 0;
}

/* Keeps fd (owned from here on) as the pod's namespace, in place of the one it had. */
static void keep_netns(struct pod *pod, int fd)
{
	if (pod->netns_fd >= 0)
		close(pod->netns_fd);
	pod->netns_fd = fd;
}

static void free_pod(struct pod *pod)
{
	keep_netns(pod, -1);
	json_decref(pod->labels);
	json_decref(pod->annotations);
	free(pod);
}

/* An enrolled pod's namespace gets the authorization check (a failure is logged: the pod still runs). */
static void guard(struct enroller *e, struct pod *pod, bool enrolled)
{
	char err[256];
	int ret;

	if (!enrolled) {
		ret = sm_datapath_unguard_netns(e->dp, pod->cookie);
		if (ret && ret != -ENOENT)
			log_msg(LOG_WARN, "pod %s/%s: removing the authorization check: %s", pod->namespace, pod->name,
				strerror(-ret));
		return;
	}
	if (pod->netns_fd < 0) {
		log_msg(LOG_ERROR, "pod %s/%s: its network namespace is not at hand: authorization is not enforced for it",
			pod->namespace, pod->name);
		return;
	}
	if (sm_datapath_guard_netns(e->dp, pod->netns_fd, pod->cookie, err, sizeof(err))) {
		log_msg(LOG_ERROR, "pod %s/%s: authorization is not enforced for it (tried again in %d s): %s",
			pod->namespace, pod->name, TICK_MS / 1000, err);
		pod->datapath_failed = true;
	}
}

static void set_enrolled(struct enroller *e, struct pod *pod, bool enrolled, const char *why)
{
	int ret;

	if (pod->enrolled == enrolled)
		return;
	ret = sm_datapath_enroll(e->dp, pod->cookie, enrolled);
	if (ret && !(ret == -ENOENT && !enrolled)) {
		log_msg(LOG_ERROR, "%s pod %s/%s (cookie %llu), tried again in %d s: %s", enrolled ? "enrolling" : "unenrolling",
			pod->namespace, pod->name, (unsigned long long)pod->cookie, TICK_MS / 1000, strerror(-ret));
		pod->datapath_failed = true;
		return;
	}
	pod->enrolled = enrolled;
	log_msg(LOG_INFO, "%s pod %s/%s (cookie %llu): %s", enrolled ? "enrolled" : "unenrolled", pod->namespace,
		pod->name, (unsigned long long)pod->cookie, why);
	guard(e, pod, enrolled);
}

/* The pod's namespace from /proc, paired by one of its IPs; false (logged at debug) when not found yet. */
static bool resolve_from_proc(struct enroller *e, struct pod *pod)
{
	const char *ips[SM_K8S_MAX_POD_IPS];
	struct podns_result result;
	int ret;

	for (size_t i = 0; i < pod->n_ips; i++)
		ips[i] = pod->ips[i];
	ret = podns_find(e->options.proc_root, pod->uid, ips, pod->n_ips, &result);
	if (ret || result.outcome != PODNS_FOUND) {
		log_msg(LOG_DEBUG, "pod %s/%s: no network namespace in %s yet: %s", pod->namespace, pod->name,
			e->options.proc_root, ret ? strerror(-ret) : podns_outcome_name(result.outcome));
		return false;
	}
	ret = sm_netns_cookie_of(result.netns_fd, &pod->cookie);
	keep_netns(pod, result.netns_fd);
	if (ret) {
		log_msg(LOG_WARN, "pod %s/%s: the cookie of process %d's network namespace: %s", pod->namespace,
			pod->name, (int)result.pid, strerror(-ret));
		return false;
	}
	pod->has_cookie = true;
	pod->cookie_from_cni = false;
	return true;
}

/* Decides again and makes the map say so. */
static void apply(struct enroller *e, struct pod *pod)
{
	struct sm_k8s_pod view = {
		.uid = pod->uid, .namespace = pod->namespace, .name = pod->name, .labels = pod->labels,
		.annotations = pod->annotations, .host_network = pod->host_network, .phase = pod->phase,
		.n_pod_ips = pod->n_ips, .deleting = pod->deleting,
	};
	struct sm_k8s_namespace ns = { .name = pod->namespace };
	bool enroll;

	if (!pod->seen)
		return; /* a pending CNI ADD: nothing is known of its labels yet */
	for (size_t i = 0; i < pod->n_ips; i++)
		view.pod_ips[i] = pod->ips[i];
	/* the IP only pairs a /proc namespace: a cookie from the CNI plugin needs none */
	if (!pod->n_ips && pod->has_cookie && pod->cookie_from_cni) {
		view.pod_ips[0] = "";
		view.n_pod_ips = 1;
	}
	ns.labels = json_object_get(e->namespaces, pod->namespace);
	enroll = sm_k8s_should_enroll(&view, ns.labels ? &ns : NULL, &e->policy, &pod->reason);
	if (enroll && !pod->has_cookie && !resolve_from_proc(e, pod)) {
		/* each try walks all of /proc: back off (the next event still tries at once) */
		pod->proc_wait_s = pod->proc_wait_s ? pod->proc_wait_s * 2 : TICK_MS / 1000;
		if (pod->proc_wait_s > PROC_RETRY_MAX_S)
			pod->proc_wait_s = PROC_RETRY_MAX_S;
		pod->proc_retry_at = time(NULL) + pod->proc_wait_s;
		return;
	}
	pod->proc_wait_s = 0;
	if (pod->has_cookie)
		set_enrolled(e, pod, enroll, sm_k8s_reason_str(pod->reason));
}

static void remove_pod(struct enroller *e, size_t index, const char *why)
{
	struct pod *pod = e->pods[index];

	if (pod->enrolled)
		set_enrolled(e, pod, false, why);
	e->pods[index] = e->pods[--e->n_pods];
	free_pod(pod);
}

/* What the watcher says of a pod, copied in; -ENOMEM leaves the pod as it was. */
static int copy_pod(struct pod *to, const struct sm_k8s_pod *from)
{
	json_t *labels = json_deep_copy(from->labels), *annotations = json_deep_copy(from->annotations);

	if (!labels || !annotations) {
		json_decref(labels);
		json_decref(annotations);
		return -ENOMEM;
	}
	json_decref(to->labels);
	json_decref(to->annotations);
	to->labels = labels;
	to->annotations = annotations;
	snprintf(to->namespace, sizeof(to->namespace), "%s", from->namespace ? from->namespace : "");
	snprintf(to->name, sizeof(to->name), "%s", from->name ? from->name : "");
	to->host_network = from->host_network;
	to->deleting = from->deleting;
	snprintf(to->phase, sizeof(to->phase), "%s", from->phase ? from->phase : "");
	to->n_ips = 0;
	for (size_t i = 0; i < from->n_pod_ips && i < SM_K8S_MAX_POD_IPS; i++)
		snprintf(to->ips[to->n_ips++], sizeof(to->ips[0]), "%s", from->pod_ips[i]);
	to->seen = true;
	to->marked = true;
	return 0;
}

/* ---- sweeping sm_enrolled ---- */

static int sweep_one(void *ctx, uint64_t cookie)
{
	struct enroller *e = ctx;
	int ret;

	for (size_t i = 0; i < e->n_pods; i++)
		if (e->pods[i]->enrolled && e->pods[i]->cookie == cookie)
			return 0;
	ret = sm_datapath_enroll(e->dp, cookie, false);
	sm_datapath_unguard_netns(e->dp, cookie);
	if (ret && ret != -ENOENT)
		log_msg(LOG_WARN, "removing cookie %llu that no enrolled pod owns: %s", (unsigned long long)cookie,
			strerror(-ret));
	else
		log_msg(LOG_INFO, "removed cookie %llu from sm_enrolled: no enrolled pod of this node owns it",
			(unsigned long long)cookie);
	return 0;
}

/* Only once both lists are complete: before that a pod's namespace labels may be unknown. */
static void sweep(struct enroller *e)
{
	int ret;

	if (!e->pods_synced || !e->ns_synced)
		return;
	ret = sm_datapath_for_each_enrolled(e->dp, sweep_one, e);
	if (ret)
		log_msg(LOG_WARN, "sweeping sm_enrolled: %s", strerror(-ret));
}

/* ---- the watchers' callbacks ---- */

/* A pod's event; -ENOMEM (the pods as they were) when its labels could not be kept. */
static int on_pod(struct enroller *e, const struct sm_k8s_event *ev)
{
	struct pod *pod;
	bool added;
	int ret;

	switch (ev->type) {
	case SM_K8S_SYNC_BEGIN:
		for (size_t i = 0; i < e->n_pods; i++)
			e->pods[i]->marked = false;
		break;
	case SM_K8S_SYNC_END:
		for (size_t i = e->n_pods; i-- > 0;)
			if (e->pods[i]->seen && !e->pods[i]->marked)
				remove_pod(e, i, "pod gone (not in the relist)");
		e->pods_synced = true;
		sweep(e);
		break;
	case SM_K8S_ADDED:
	case SM_K8S_MODIFIED:
		pod = find_pod(e, ev->pod->uid);
		added = !pod;
		ret = added ? add_pod(e, ev->pod->uid, "", "", &pod) : 0;
		if (ret == -ENOSPC) {
			/* asking again would stall every later event: the next relist brings it back */
			log_msg(LOG_ERROR, "pod %s/%s: the enroller's table is full (%d pods)", ev->pod->namespace,
				ev->pod->name, MAX_PODS);
			break;
		}
		if (!ret)
			ret = copy_pod(pod, ev->pod);
		if (ret && added && pod) {
			e->n_pods--; /* the entry just added, last in the table */
			free_pod(pod);
		}
		if (ret)
			return ret;
		apply(e, pod);
		break;
	case SM_K8S_DELETED:
		for (size_t i = 0; i < e->n_pods; i++)
			if (!strcmp(e->pods[i]->uid, ev->pod->uid)) {
				remove_pod(e, i, "pod deleted");
				break;
			}
		break;
	}
	return 0;
}

static void redecide_namespace(struct enroller *e, const char *name)
{
	for (size_t i = 0; i < e->n_pods; i++)
		if (!strcmp(e->pods[i]->namespace, name))
			apply(e, e->pods[i]);
}

/* A namespace's event; -ENOMEM (the namespaces as they were) when its labels could not be kept. */
static int on_namespace(struct enroller *e, const struct sm_k8s_event *ev)
{
	static const char mark[] = "\x01marked";
	const char *name;
	json_t *labels, *tmp;

	switch (ev->type) {
	case SM_K8S_SYNC_BEGIN:
		json_object_foreach(e->namespaces, name, labels)
			json_object_del(labels, mark);
		break;
	case SM_K8S_SYNC_END:
		json_object_foreach_safe(e->namespaces, tmp, name, labels) {
			if (json_object_get(labels, mark)) {
				json_object_del(labels, mark);
				continue;
			}
			char gone[254];
			snprintf(gone, sizeof(gone), "%s", name);
			json_object_del(e->namespaces, gone);
			redecide_namespace(e, gone);
		}
		e->ns_synced = true;
		sweep(e);
		break;
	case SM_K8S_ADDED:
	case SM_K8S_MODIFIED:
		labels = json_deep_copy(ev->namespace->labels);
		if (!labels || json_object_set_new(labels, mark, json_true())) {
			json_decref(labels);
			return -ENOMEM;
		}
		/* a namespace already known only has its labels replaced: a failure is a new one's, not kept */
		if (json_object_set_new(e->namespaces, ev->namespace->name, labels))
			return -ENOMEM; /* jansson freed labels */
		redecide_namespace(e, ev->namespace->name);
		break;
	case SM_K8S_DELETED:
		json_object_del(e->namespaces, ev->namespace->name);
		redecide_namespace(e, ev->namespace->name);
		break;
	}
	return 0;
}

/* The watcher logs nothing: a refused event shows in its stats, which the periodic pass logs. */
static int on_event(const struct sm_k8s_event *ev, void *ctx)
{
	struct enroller *e = ctx;
	int ret;

	pthread_mutex_lock(&e->lock);
	ret = ev->kind == SM_K8S_PODS ? on_pod(e, ev) : on_namespace(e, ev);
	pthread_mutex_unlock(&e->lock);
	return ret;
}

/* ---- the CNI plugin's events ---- */

static int cni_add(struct enroller *e, const struct sm_cni_event *ev, char *err, size_t size)
{
	struct pod *pod = find_pod(e, ev->uid);
	int ret;

	if (ev->cookie_error) {
		snprintf(err, size, "the network namespace's cookie: %s", strerror(-ev->cookie_error));
		return ev->cookie_error;
	}
	if (!pod && (ret = add_pod(e, ev->uid, ev->namespace, ev->name, &pod))) {
		if (ret == -ENOSPC)
			snprintf(err, size, "the agent's pod table is full (%d pods)", MAX_PODS);
		else
			snprintf(err, size, "the agent's pod table: %s", strerror(-ret));
		return ret;
	}
	if (!pod->seen)
		pod->pending_since = time(NULL);
	if (pod->has_cookie && pod->cookie != ev->netns_cookie)
		set_enrolled(e, pod, false, "a new network namespace from the CNI plugin");
	pod->cookie = ev->netns_cookie;
	pod->has_cookie = true;
	pod->cookie_from_cni = true;
	keep_netns(pod, ev->netns_fd >= 0 ? fcntl(ev->netns_fd, F_DUPFD_CLOEXEC, 0) : -1);
	log_msg(LOG_INFO, "CNI ADD %s/%s (uid %s): cookie %llu%s", ev->namespace, ev->name, ev->uid,
		(unsigned long long)ev->netns_cookie, pod->seen ? "" : ", pending until the API shows the pod");
	apply(e, pod);
	return 0;
}

static int on_cni(void *ctx, const struct sm_cni_event *ev, char *err, size_t size)
{
	struct enroller *e = ctx;
	struct pod *pod;
	int ret = 0;

	if (!ev->uid[0]) {
		snprintf(err, size, "no K8S_POD_UID in CNI_ARGS");
		return -EINVAL;
	}
	pthread_mutex_lock(&e->lock);
	if (!strcmp(ev->command, "ADD")) {
		ret = cni_add(e, ev, err, size);
	} else if ((pod = find_pod(e, ev->uid))) { /* DEL */
		set_enrolled(e, pod, false, "CNI DEL");
		pod->has_cookie = pod->cookie_from_cni = false;
		for (size_t i = 0; !pod->seen && i < e->n_pods; i++)
			if (e->pods[i] == pod) {
				remove_pod(e, i, "CNI DEL");
				break;
			}
	}
	pthread_mutex_unlock(&e->lock);
	return ret;
}

/* ---- the periodic pass ---- */

static void log_watch_errors(struct sm_k8s_watch *watch, const char *what, uint64_t *logged)
{
	struct sm_k8s_watch_stats stats;

	sm_k8s_watch_get_stats(watch, &stats);
	if (stats.errors > *logged)
		log_msg(LOG_WARN, "the %s watcher: %llu error(s), the last: %s", what,
			(unsigned long long)(stats.errors - *logged), stats.last_error_msg);
	*logged = stats.errors;
}

/* A write to the datapath that failed (the pod's sm_enrolled entry, its guard), tried again: until it is
 * taken, the pod is not steered or its authorization is not enforced, and no event may come to redo it. */
static void retry_datapath(struct enroller *e, struct pod *pod)
{
	bool was_enrolled = pod->enrolled;

	pod->datapath_failed = false;
	apply(e, pod); /* decides again: an enroll or unenroll that failed is written now */
	if (was_enrolled && pod->enrolled && !pod->datapath_failed)
		guard(e, pod, true); /* still enrolled, nothing changed: the guard that failed (guarding is idempotent) */
}

static void tick(struct enroller *e, bool sweep_now)
{
	time_t now = time(NULL);

	for (size_t i = e->n_pods; i-- > 0;) {
		struct pod *pod = e->pods[i];
		if (!pod->seen && now - pod->pending_since > PENDING_TTL_S)
			remove_pod(e, i, "the API never showed the pod of this CNI ADD");
		else if (pod->seen && !pod->has_cookie && now >= pod->proc_retry_at)
			apply(e, pod);
		else if (pod->datapath_failed)
			retry_datapath(e, pod);
	}
	if (sweep_now)
		sweep(e);
}

/* ---- the status annotation: sockmesh.io/redirection=enabled while enrolled ---- */

struct patch {
	char uid[64], namespace[254], name[254];
	bool enable;
};

static bool annotated(const struct pod *pod)
{
	const char *value = json_string_value(json_object_get(pod->annotations, SM_K8S_STATUS_ANNOTATION));

	return value && !strcmp(value, "enabled");
}

/* Under the lock: the pods whose annotation disagrees with their enrollment (a pod being deleted is left alone). */
static size_t patches_due(struct enroller *e, struct patch patches[PATCHES_PER_TICK])
{
	time_t now = time(NULL);
	size_t n = 0;

	for (size_t i = 0; i < e->n_pods && n < PATCHES_PER_TICK; i++) {
		struct pod *pod = e->pods[i];
		if (!pod->seen || pod->deleting || pod->enrolled == annotated(pod) || now < pod->patch_retry_at)
			continue;
		memcpy(patches[n].uid, pod->uid, sizeof(pod->uid));
		memcpy(patches[n].namespace, pod->namespace, sizeof(pod->namespace));
		memcpy(patches[n].name, pod->name, sizeof(pod->name));
		patches[n++].enable = pod->enrolled;
	}
	return n;
}

/* Without the lock (each is an HTTP request); the pod's MODIFIED event then brings the new annotation. */
static void patch_all(struct enroller *e, const struct patch *patches, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char why[256];
		int ret = sm_k8s_patch_pod_annotation(e->client, patches[i].namespace, patches[i].name,
						      SM_K8S_STATUS_ANNOTATION, patches[i].enable ? "enabled" : NULL,
						      why, sizeof(why));
		if (!ret || ret == -ENOENT)
			continue;
		log_msg(LOG_WARN, "annotating pod %s/%s %s: %s (retried in %d s)", patches[i].namespace, patches[i].name,
			SM_K8S_STATUS_ANNOTATION, why, PATCH_RETRY_S);
		pthread_mutex_lock(&e->lock);
		struct pod *pod = find_pod(e, patches[i].uid);
		if (pod)
			pod->patch_retry_at = time(NULL) + PATCH_RETRY_S;
		pthread_mutex_unlock(&e->lock);
	}
}

static void *ticker_main(void *arg)
{
	struct enroller *e = arg;
	unsigned interval = e->options.sweep_interval_ms ? e->options.sweep_interval_ms : 60000;
	unsigned since_sweep = 0;
	struct patch patches[PATCHES_PER_TICK];
	struct timespec at;

	pthread_mutex_lock(&e->lock);
	while (!e->stopping) {
		at = deadline_in_ns((uint64_t)TICK_MS * 1000000u);
		pthread_cond_timedwait(&e->wake, &e->lock, &at);
		if (e->stopping)
			break;
		since_sweep += TICK_MS;
		tick(e, since_sweep >= interval);
		if (since_sweep >= interval)
			since_sweep = 0;
		log_watch_errors(e->pods_watch, "pods", &e->pods_errors);
		log_watch_errors(e->ns_watch, "namespaces", &e->ns_errors);
		size_t n = patches_due(e, patches);
		if (n) {
			pthread_mutex_unlock(&e->lock);
			patch_all(e, patches, n);
			pthread_mutex_lock(&e->lock);
		}
	}
	pthread_mutex_unlock(&e->lock);
	return NULL;
}

/* ---- start and stop ---- */

size_t enroller_enrolled_pods(struct enroller *e)
{
	size_t n = 0;

	if (!e)
		return 0;
	pthread_mutex_lock(&e->lock);
	for (size_t i = 0; i < e->n_pods; i++)
		n += e->pods[i]->enrolled;
	pthread_mutex_unlock(&e->lock);
	return n;
}

/* The pod whose network namespace has this cookie, or NULL (under e->lock). */
static const struct pod *pod_in_netns(const struct enroller *e, uint64_t cookie)
{
	for (size_t i = 0; i < e->n_pods; i++)
		if (e->pods[i]->has_cookie && e->pods[i]->cookie == cookie)
			return e->pods[i];
	return NULL;
}

int enroller_open_netns(struct enroller *e, uint64_t cookie, int *fd)
{
	const struct pod *pod;
	int ret = -ENOENT;

	if (!e)
		return ret;
	pthread_mutex_lock(&e->lock);
	if ((pod = pod_in_netns(e, cookie)) && pod->netns_fd >= 0)
		ret = (*fd = fcntl(pod->netns_fd, F_DUPFD_CLOEXEC, 0)) < 0 ? -errno : 0;
	pthread_mutex_unlock(&e->lock);
	return ret;
}

/* 1 when one of the pod's IPs is among addrs, 0 when none is, -ENOENT when it has one it cannot read. */
static int pod_holds(const struct pod *pod, const struct sm_frontend_key *addrs, size_t n)
{
	for (size_t k = 0; k < pod->n_ips; k++) {
		uint8_t ip[16];
		if (parse_mapped_address(pod->ips[k], ip))
			return -ENOENT;
		for (size_t a = 0; a < n; a++)
			if (!memcmp(addrs[a].addr, ip, 16))
				return 1;
	}
	return 0;
}

int enroller_netns_holds(struct enroller *e, uint64_t cookie, const struct sm_frontend_key *addrs, size_t n)
{
	const struct pod *pod;
	int ret = -ENOENT;

	if (!e)
		return ret;
	pthread_mutex_lock(&e->lock);
	if ((pod = pod_in_netns(e, cookie)) && pod->n_ips)
		ret = pod_holds(pod, addrs, n);
	pthread_mutex_unlock(&e->lock);
	return ret;
}

int enroller_start(const struct enroller_options *options, struct sm_datapath *dp, struct enroller **out, char *err,
		   size_t size)
{
	struct sm_k8s_options k8s = { .api_url = options->api_url, .token_file = options->token_file,
				      .ca_file = options->ca_file };
	struct enroller *e = calloc(1, sizeof(*e));
	pthread_condattr_t attr;
	char why[256];
	int ret;

	if (!e || !(e->namespaces = json_object())) {
		free(e);
		snprintf(err, size, "the enroller: out of memory");
		return -ENOMEM;
	}
	e->options = *options;
	e->dp = dp;
	e->policy = (struct sm_k8s_policy){ .agent_namespace = options->agent_namespace,
					    .system_namespaces = options->system_namespaces };
	pthread_mutex_init(&e->lock, NULL);
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&e->wake, &attr);
	pthread_condattr_destroy(&attr);
	ret = sm_k8s_client_new(&k8s, &e->client, why, sizeof(why));
	if (ret) {
		snprintf(err, size, "the Kubernetes API client: %s", why);
		goto fail;
	}
	/* the namespaces first: their labels decide the pods' */
	ret = sm_k8s_watch_start(e->client, SM_K8S_NAMESPACES, NULL, on_event, e, &e->ns_watch);
	if (!ret)
		ret = sm_k8s_watch_start(e->client, SM_K8S_PODS, options->node_name, on_event, e, &e->pods_watch);
	if (ret) {
		snprintf(err, size, "the Kubernetes watcher: %s", strerror(-ret));
		goto fail;
	}
	ret = sm_cni_server_start(options->cni_socket, on_cni, e, &e->cni, why, sizeof(why));
	if (ret) {
		snprintf(err, size, "the CNI socket %s: %s", options->cni_socket, why);
		goto fail;
	}
	ret = -pthread_create(&e->ticker, NULL, ticker_main, e);
	if (ret) {
		snprintf(err, size, "the enroller's thread: %s", strerror(-ret));
		goto fail;
	}
	e->ticker_started = true;
	*out = e;
	return 0;
fail:
	enroller_stop(e);
	return ret;
}

void enroller_stop(struct enroller *e)
{
	if (!e)
		return;
	if (e->ticker_started) {
		pthread_mutex_lock(&e->lock);
		e->stopping = true;
		pthread_cond_signal(&e->wake);
		pthread_mutex_unlock(&e->lock);
		pthread_join(e->ticker, NULL);
	}
	sm_cni_server_stop(e->cni);
	if (e->pods_watch)
		sm_k8s_watch_stop(e->pods_watch);
	if (e->ns_watch)
		sm_k8s_watch_stop(e->ns_watch);
	sm_k8s_client_free(e->client);
	for (size_t i = 0; i < e->n_pods; i++)
		free_pod(e->pods[i]);
	json_decref(e->namespaces);
	pthread_cond_destroy(&e->wake);
	pthread_mutex_destroy(&e->lock);
	free(e);
}
