/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The enroller (agent/enroller.c) when memory runs short, at every allocation of each event in turn (its own
 * and jansson's), once or from there on; and when a write to the datapath fails. The watchers and the CNI server are replaced by this test, which
 * calls the enroller's callbacks with a scripted world (namespaces, CNI ADDs, pods, relabels, a relist), and
 * the datapath by a set of enrolled cookies.
 *
 * An event the enroller could not take in returns -ENOMEM and leaves the enrolled pods as they were: the
 * watcher then asks for it again (test k8s-watch), so it must never half-apply it, above all never unenroll
 * a pod for labels it could not copy. The same event given again with memory back, and every later one, give
 * what an enroller that never ran short gives.
 *
 * A write to the datapath that fails (a pod's sm_enrolled entry, its authorization guard) is tried again by
 * the enroller's periodic pass: no event may come to redo it, and until then the pod is not steered or its
 * inbound connections are not checked.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "failing_alloc.h"
#include "clock.h"
#include "helpers.h"

#include "agent/agent.h"
#include "agent/enroller.h"
#include "agent/log.h"
#include "cniserver/cniserver.h"
#include "k8s/k8s.h"
#include "netns/netns.h"
#include "podns/podns.h"

/* ---- what the enroller calls, replaced ---- */

#define MAX_COOKIES 16

static struct {
	sm_k8s_event_fn watch_fn[2]; /* by sm_k8s_kind */
	void *watch_ctx[2];
	sm_cni_handler cni_fn;
	void *cni_ctx;
	uint64_t enrolled[MAX_COOKIES]; /* sm_enrolled */
	size_t n_enrolled;
} world;

static char handle; /* what the replaced constructors hand out */
static atomic_int enroll_writes_to_fail, guard_writes_to_fail; /* the next ones fail with -ENOMEM */
static atomic_int guards_taken;

void log_msg(enum log_level level, const char *fmt, ...)
{
	(void)level;
	(void)fmt;
}

int sm_k8s_client_new(const struct sm_k8s_options *options, struct sm_k8s_client **out, char *err, size_t size)
{
	(void)options, (void)err, (void)size;
	*out = (struct sm_k8s_client *)&handle;
	return 0;
}

void sm_k8s_client_free(struct sm_k8s_client *client)
{
	(void)client;
}

int sm_k8s_watch_start(struct sm_k8s_client *client, enum sm_k8s_kind kind, const char *node_name,
		       sm_k8s_event_fn fn, void *ctx, struct sm_k8s_watch **out)
{
	(void)client, (void)node_name;
	world.watch_fn[kind] = fn;
	world.watch_ctx[kind] = ctx;
	*out = (struct sm_k8s_watch *)&handle;
	return 0;
}

void sm_k8s_watch_stop(struct sm_k8s_watch *watch)
{
	(void)watch;
}

void sm_k8s_watch_get_stats(struct sm_k8s_watch *watch, struct sm_k8s_watch_stats *out)
{
	(void)watch;
	memset(out, 0, sizeof(*out));
}

int sm_k8s_patch_pod_annotation(struct sm_k8s_client *client, const char *namespace, const char *name,
				const char *key, const char *value, char *err, size_t size)
{
	(void)client, (void)namespace, (void)name, (void)key, (void)value, (void)err, (void)size;
	return 0;
}

int sm_cni_server_start(const char *path, sm_cni_handler handler, void *ctx, struct sm_cni_server **out, char *err,
			size_t err_size)
{
	(void)path, (void)err, (void)err_size;
	world.cni_fn = handler;
	world.cni_ctx = ctx;
	*out = (struct sm_cni_server *)&handle;
	return 0;
}

void sm_cni_server_stop(struct sm_cni_server *server)
{
	(void)server;
}

static size_t enrolled_index(uint64_t cookie)
{
	for (size_t i = 0; i < world.n_enrolled; i++)
		if (world.enrolled[i] == cookie)
			return i;
	return world.n_enrolled;
}

int sm_datapath_enroll(struct sm_datapath *dp, uint64_t cookie, bool enrolled)
{
	size_t i = enrolled_index(cookie);

	(void)dp;
	if (atomic_load(&enroll_writes_to_fail) > 0) {
		atomic_fetch_sub(&enroll_writes_to_fail, 1);
		return -ENOMEM;
	}
	if (enrolled && i == world.n_enrolled) {
		assert_true(world.n_enrolled < MAX_COOKIES);
		world.enrolled[world.n_enrolled++] = cookie;
	} else if (!enrolled) {
		if (i == world.n_enrolled)
			return -ENOENT;
		world.enrolled[i] = world.enrolled[--world.n_enrolled];
	}
	return 0;
}

int sm_datapath_for_each_enrolled(const struct sm_datapath *dp, int (*fn)(void *ctx, uint64_t netns_cookie), void *ctx)
{
	uint64_t cookies[MAX_COOKIES];
	size_t n = world.n_enrolled;

	(void)dp;
	memcpy(cookies, world.enrolled, sizeof(cookies)); /* fn may remove */
	for (size_t i = 0; i < n; i++) {
		int ret = fn(ctx, cookies[i]);
		if (ret)
			return ret;
	}
	return 0;
}

int sm_datapath_guard_netns(struct sm_datapath *dp, int netns_fd, uint64_t cookie, char *err, size_t size)
{
	(void)dp, (void)netns_fd, (void)cookie;
	if (atomic_load(&guard_writes_to_fail) > 0) {
		atomic_fetch_sub(&guard_writes_to_fail, 1);
		snprintf(err, size, "attaching sm_authz_check: Cannot allocate memory");
		return -ENOMEM;
	}
	atomic_fetch_add(&guards_taken, 1);
	return 0;
}

int sm_datapath_unguard_netns(struct sm_datapath *dp, uint64_t cookie)
{
	(void)dp, (void)cookie;
	return 0;
}

/* /proc pairs no pod: only the CNI plugin's cookies enroll */
int podns_find(const char *proc_root, const char *pod_uid, const char *const *ips, size_t n_ips,
	       struct podns_result *result)
{
	(void)proc_root, (void)pod_uid, (void)ips, (void)n_ips;
	*result = (struct podns_result){ .outcome = PODNS_NO_PROCESS, .netns_fd = -1 };
	return 0;
}

const char *podns_outcome_name(enum podns_outcome outcome)
{
	(void)outcome;
	return "no process";
}

int sm_netns_cookie_of(int netns_fd, uint64_t *cookie)
{
	(void)netns_fd, (void)cookie;
	return -ENOENT;
}

/* ---- the script ---- */

enum source { NS, POD, CNI };

struct step {
	enum source source;
	enum sm_k8s_event_type type; /* NS and POD */
	const char *namespace;       /* a namespace's name (NS), the pod's namespace (POD, CNI) */
	const char *name;            /* the pod (POD, CNI) */
	const char *uid;             /* the pod (POD, CNI) */
	const char *labels;          /* JSON, NULL for none */
	uint64_t cookie;             /* CNI */
};

#define MESH "{\"" SM_K8S_DATAPLANE_LABEL "\": \"sockmesh\"}"
#define OPTED_OUT "{\"" SM_K8S_DATAPLANE_LABEL "\": \"none\"}"

#define NS_SYNC(what) { .source = NS, .type = SM_K8S_##what }
#define NS_EVENT(what, ns, labels_) { .source = NS, .type = SM_K8S_##what, .namespace = ns, .labels = labels_ }
#define POD_SYNC(what) { .source = POD, .type = SM_K8S_##what }
#define POD_EVENT(what, ns, name_, uid_, labels_)                                                            \
	{ .source = POD, .type = SM_K8S_##what, .namespace = ns, .name = name_, .uid = uid_, .labels = labels_ }
#define CNI_ADD(ns, name_, uid_, cookie_) { .source = CNI, .namespace = ns, .name = name_, .uid = uid_, .cookie = cookie_ }

static const struct step script[] = {
	NS_SYNC(SYNC_BEGIN),
	NS_EVENT(ADDED, "mesh", MESH),
	NS_EVENT(ADDED, "plain", "{\"team\": \"x\"}"),
	NS_SYNC(SYNC_END),
	CNI_ADD("mesh", "p1", "uid-1", 101),
	CNI_ADD("plain", "p2", "uid-2", 102),
	CNI_ADD("plain", "p3", "uid-3", 103),
	CNI_ADD("mesh", "p4", "uid-4", 104),
	POD_SYNC(SYNC_BEGIN),
	POD_EVENT(ADDED, "mesh", "p1", "uid-1", NULL),
	POD_EVENT(ADDED, "plain", "p2", "uid-2", MESH),
	POD_EVENT(ADDED, "plain", "p3", "uid-3", NULL),
	POD_EVENT(ADDED, "mesh", "p4", "uid-4", OPTED_OUT),
	POD_SYNC(SYNC_END),
	POD_EVENT(MODIFIED, "plain", "p3", "uid-3",
		  "{\"" SM_K8S_DATAPLANE_LABEL "\": \"sockmesh\", \"app\": \"x\", \"version\": \"v1\"}"),
	NS_EVENT(MODIFIED, "mesh", "{}"),
	NS_EVENT(MODIFIED, "mesh", MESH),
	POD_EVENT(MODIFIED, "mesh", "p4", "uid-4", NULL),
	POD_EVENT(ADDED, "mesh", "p5", "uid-5", NULL),
	NS_EVENT(ADDED, "new", MESH),
	POD_EVENT(DELETED, "plain", "p2", "uid-2", MESH),
	CNI_ADD("new", "p6", "uid-6", 106),
	POD_EVENT(ADDED, "new", "p6", "uid-6", NULL),
	POD_EVENT(MODIFIED, "plain", "p3", "uid-3", OPTED_OUT),
	POD_SYNC(SYNC_BEGIN),
	POD_EVENT(ADDED, "mesh", "p1", "uid-1", NULL),
	POD_EVENT(ADDED, "plain", "p3", "uid-3", MESH),
	POD_EVENT(ADDED, "new", "p6", "uid-6", NULL),
	POD_SYNC(SYNC_END),
	NS_SYNC(SYNC_BEGIN),
	NS_EVENT(ADDED, "plain", MESH),
	NS_EVENT(ADDED, "new", MESH),
	NS_SYNC(SYNC_END),
};

#define N_STEPS TEST_ARRAY_SIZE(script)

/* The enrolled cookies as a bit set (cookies 100 + bit). */
static unsigned enrolled_set(void)
{
	unsigned set = 0;

	for (size_t i = 0; i < world.n_enrolled; i++)
		set |= 1u << (world.enrolled[i] - 100);
	return set;
}

/* Gives one step to the enroller, allocating through failing_alloc.h while mode is armed. */
static int give(const struct step *s, enum failing mode, long target)
{
	json_t *labels = s->labels ? json_loads(s->labels, 0, NULL) : json_object(), *annotations = json_object();
	char err[256];
	int ret;

	assert_non_null(labels);
	assert_non_null(annotations);
	if (s->source == CNI) {
		struct sm_cni_event ev = { .command = "ADD", .uid = s->uid, .namespace = s->namespace, .name = s->name,
					   .container_id = "c", .netns_fd = -1, .netns_cookie = s->cookie };
		oom_arm(mode, target);
		ret = world.cni_fn(world.cni_ctx, &ev, err, sizeof(err));
	} else {
		struct sm_k8s_pod pod = { .uid = s->uid, .namespace = s->namespace, .name = s->name,
					  .resource_version = "1", .labels = labels, .annotations = annotations,
					  .phase = "Running" };
		struct sm_k8s_namespace ns = { .name = s->namespace, .resource_version = "1", .labels = labels };
		enum sm_k8s_kind kind = s->source == POD ? SM_K8S_PODS : SM_K8S_NAMESPACES;
		struct sm_k8s_event ev = { .type = s->type, .kind = kind };
		bool sync = s->type == SM_K8S_SYNC_BEGIN || s->type == SM_K8S_SYNC_END;

		ev.pod = kind == SM_K8S_PODS && !sync ? &pod : NULL;
		ev.namespace = kind == SM_K8S_NAMESPACES && !sync ? &ns : NULL;
		oom_arm(mode, target);
		ret = world.watch_fn[kind](&ev, world.watch_ctx[kind]);
	}
	oom.armed = false;
	json_decref(labels);
	json_decref(annotations);
	return ret;
}

static struct enroller *start(void)
{
	struct enroller_options options = { .node_name = "node-a", .cni_socket = "unused", .proc_root = "/nonexistent" };
	struct enroller *e = NULL;
	char err[256];

	memset(&world, 0, sizeof(world));
	assert_int_equal(enroller_start(&options, (struct sm_datapath *)&handle, &e, err, sizeof(err)), 0);
	return e;
}

/* The enrolled set after each step of the script, memory never short. */
static unsigned expected[N_STEPS];

static void reference(void)
{
	struct enroller *e = start();

	for (size_t i = 0; i < N_STEPS; i++) {
		assert_int_equal(give(&script[i], FAIL_NONE, 0), 0);
		expected[i] = enrolled_set();
	}
	enroller_stop(e);
	/* the script means something: pods enrolled by the namespace's label and by their own, and left again */
	assert_int_equal(expected[9], 1u << 1);
	assert_int_equal(expected[15], (1u << 2) | (1u << 3));
	assert_int_equal(expected[N_STEPS - 2], (1u << 1) | (1u << 3) | (1u << 6));
	assert_int_equal(expected[N_STEPS - 1], (1u << 3) | (1u << 6)); /* "mesh" not in the last relist */
}

/* Step `at` given with allocation `target` failing (mode); the rest as they come. false once nothing failed. */
static bool one_world(size_t at, enum failing mode, long target)
{
	struct enroller *e = start();
	bool failed;
	int ret;

	for (size_t i = 0; i < at; i++)
		assert_int_equal(give(&script[i], FAIL_NONE, 0), 0);
	ret = give(&script[at], mode, target);
	failed = oom.any_failed;
	if (ret) {
		if (ret != -ENOMEM)
			fail_msg("step %zu, allocation %ld failing: %s, not -ENOMEM", at, target, strerror(-ret));
		if (enrolled_set() != (at ? expected[at - 1] : 0))
			fail_msg("step %zu, allocation %ld failing: the event was refused, yet the enrolled pods changed",
				 at, target);
		assert_int_equal(give(&script[at], FAIL_NONE, 0), 0); /* the watcher asks again */
	}
	for (size_t i = at; i < N_STEPS; i++) {
		if (i > at)
			assert_int_equal(give(&script[i], FAIL_NONE, 0), 0);
		if (enrolled_set() != expected[i])
			fail_msg("step %zu, allocation %ld failing (%s): after step %zu %#x enrolled, not %#x", at, target,
				 ret ? "refused" : "taken", i, enrolled_set(), expected[i]);
	}
	enroller_stop(e);
	return failed;
}

static void sweep(enum failing mode)
{
	long worlds = 0;

	reference();
	for (size_t at = 0; at < N_STEPS; at++)
		for (long target = 0; one_world(at, mode, target); target++)
			worlds++;
	print_message("# %ld worlds with an allocation failing\n", worlds);
	assert_true(worlds > (long)N_STEPS);
}

static void each_allocation_failing_once(void **state)
{
	(void)state;
	sweep(FAIL_ONE);
}

static void every_allocation_failing_from_one_on(void **state)
{
	(void)state;
	sweep(FAIL_FROM);
}

/* The enroller's pods in sm_enrolled, as it counts them (under its lock: its periodic pass runs beside). */
static bool enrolled_within(struct enroller *e, size_t n, double seconds)
{
	double until = now_seconds() + seconds;

	while (enroller_enrolled_pods(e) != n && now_seconds() < until)
		sleep_ms(20);
	return enroller_enrolled_pods(e) == n;
}

/* A CNI ADD of pod NAME (uid UID) in namespace mesh, its network namespace open as netns_fd. */
static void cni_add(const char *uid, const char *name, uint64_t cookie, int netns_fd)
{
	struct sm_cni_event ev = { .command = "ADD", .uid = uid, .namespace = "mesh", .name = name, .container_id = "c",
				   .netns_fd = netns_fd, .netns_cookie = cookie };
	char err[256];

	assert_int_equal(world.cni_fn(world.cni_ctx, &ev, err, sizeof(err)), 0);
}

static void failed_datapath_writes_are_tried_again(void **state)
{
	static const struct step before[] = {
		NS_SYNC(SYNC_BEGIN), NS_EVENT(ADDED, "mesh", MESH), NS_SYNC(SYNC_END), POD_SYNC(SYNC_BEGIN), POD_SYNC(SYNC_END),
	};
	struct enroller *e = start();
	int netns = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);

	(void)state;
	assert_true(netns >= 0);
	for (size_t i = 0; i < TEST_ARRAY_SIZE(before); i++)
		assert_int_equal(give(&before[i], FAIL_NONE, 0), 0);

	/* the pod's sm_enrolled entry fails: not enrolled, then enrolled by the periodic pass (every 2 s) */
	cni_add("uid-1", "p1", 101, netns);
	atomic_store(&enroll_writes_to_fail, 1);
	assert_int_equal(give(&(struct step)POD_EVENT(ADDED, "mesh", "p1", "uid-1", NULL), FAIL_NONE, 0), 0);
	assert_int_equal(enroller_enrolled_pods(e), 0);
	assert_true(enrolled_within(e, 1, 5));
	assert_int_equal(atomic_load(&guards_taken), 1);

	/* the next pod's guard fails: enrolled at once, guarded by the periodic pass */
	cni_add("uid-2", "p2", 102, netns);
	atomic_store(&guard_writes_to_fail, 1);
	assert_int_equal(give(&(struct step)POD_EVENT(ADDED, "mesh", "p2", "uid-2", NULL), FAIL_NONE, 0), 0);
	assert_int_equal(enroller_enrolled_pods(e), 2);
	assert_int_equal(atomic_load(&guards_taken), 1);
	double until = now_seconds() + 5;
	while (atomic_load(&guards_taken) < 2 && now_seconds() < until)
		sleep_ms(20);
	assert_int_equal(atomic_load(&guards_taken), 2);

	/* taken: nothing more is written */
	sleep_ms(2500);
	assert_int_equal(atomic_load(&guards_taken), 2);
	enroller_stop(e);
	close(netns);
}

/* A pod event of namespace mesh with its IPs. */
static void pod_with_ips(const char *uid, const char *name, const char *const *ips, size_t n_ips)
{
	json_t *labels = json_object(), *annotations = json_object();
	struct sm_k8s_pod pod = { .uid = uid, .namespace = "mesh", .name = name, .resource_version = "1",
				  .labels = labels, .annotations = annotations, .phase = "Running", .n_pod_ips = n_ips };
	struct sm_k8s_event ev = { .type = SM_K8S_ADDED, .kind = SM_K8S_PODS, .pod = &pod };

	for (size_t i = 0; i < n_ips; i++)
		pod.pod_ips[i] = ips[i];
	assert_int_equal(world.watch_fn[SM_K8S_PODS](&ev, world.watch_ctx[SM_K8S_PODS]), 0);
	json_decref(labels);
	json_decref(annotations);
}

static struct sm_frontend_key mapped(const char *text)
{
	struct sm_frontend_key key;

	assert_int_equal(parse_mapped_address(text, key.addr), 0);
	return key;
}

/* Which namespace holds which addresses, as the reaper asks (agent_netns_holds): its pod's IPs. */
static void netns_holds_its_pods_ips(void **state)
{
	static const struct step before[] = {
		NS_SYNC(SYNC_BEGIN), NS_EVENT(ADDED, "mesh", MESH), NS_SYNC(SYNC_END), POD_SYNC(SYNC_BEGIN), POD_SYNC(SYNC_END),
	};
	struct enroller *e = start();
	int netns = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
	struct sm_frontend_key one[] = { mapped("10.9.0.2"), mapped("fd00::7") }, other[] = { mapped("10.9.0.3") };

	(void)state;
	assert_true(netns >= 0);
	for (size_t i = 0; i < TEST_ARRAY_SIZE(before); i++)
		assert_int_equal(give(&before[i], FAIL_NONE, 0), 0);
	cni_add("uid-1", "p1", 101, netns);
	pod_with_ips("uid-1", "p1", (const char *[]){ "10.9.0.1", "fd00::7" }, 2);
	cni_add("uid-2", "p2", 102, netns); /* its IPs not known yet */

	assert_int_equal(enroller_netns_holds(e, 101, one, 2), 1);
	assert_int_equal(enroller_netns_holds(e, 101, one, 1), 0);
	assert_int_equal(enroller_netns_holds(e, 101, other, 1), 0);
	assert_int_equal(enroller_netns_holds(e, 102, other, 1), -ENOENT);
	assert_int_equal(enroller_netns_holds(e, 999, other, 1), -ENOENT);
	assert_int_equal(enroller_netns_holds(NULL, 101, one, 2), -ENOENT);
	enroller_stop(e);
	close(netns);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(each_allocation_failing_once),
		cmocka_unit_test(every_allocation_failing_from_one_on),
		cmocka_unit_test(failed_datapath_writes_are_tried_again),
		cmocka_unit_test(netns_holds_its_pods_ips),
	};

	json_set_alloc_funcs(malloc, free); /* jansson's allocations fail with the enroller's */
	return cmocka_run_group_tests(tests, NULL, NULL);
}
