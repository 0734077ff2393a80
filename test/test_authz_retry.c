/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The agent's authorization tables when they cannot be written (agent/authz.c): the tables in force stay,
 * and the agent tries again after a back-off (1 s, then 2 s, ...) with no config change, so that a policy
 * istiod was told was taken is enforced once the datapath takes it. The real model and compiler; the
 * datapath replaced by this test, its table writes failing on demand.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "builders.h"
#include "clock.h"
#include "helpers.h"

#include "agent/agent.h"
#include "agent/authz.h"
#include "agent/log.h"
#include "agent/netns_open.h"
#include "netns/netns.h"

/* ---- what agent/authz.c calls, replaced ---- */

static char handle; /* what the replaced constructors hand out */
static atomic_int writes_to_fail;   /* the next table writes that fail with -ENOMEM */
static atomic_int writes_failed, writes_taken, idents_taken;
static atomic_size_t sources_added; /* sources entries written with idents alone, all told */
static atomic_uint in_force;	    /* the generation the last whole write flipped to */
static atomic_size_t idents_written; /* the idents of the last write taken */
static atomic_size_t dests_changed;  /* dests entries written or deleted by updates, all told */

void log_msg(enum log_level level, const char *fmt, ...)
{
	(void)level;
	(void)fmt;
}

static bool write_fails(char *err, size_t size)
{
	if (atomic_load(&writes_to_fail) <= 0)
		return false;
	atomic_fetch_sub(&writes_to_fail, 1);
	atomic_fetch_add(&writes_failed, 1);
	snprintf(err, size, "writing sm_authz_dests: Cannot allocate memory");
	return true;
}

int sm_datapath_authz_write(struct sm_datapath *dp, const struct sm_authz_tables *tables, char *err, size_t size)
{
	(void)dp;
	if (write_fails(err, size))
		return -ENOMEM;
	assert_int_not_equal(tables->generation, atomic_load(&in_force));
	atomic_store(&in_force, tables->generation);
	atomic_store(&idents_written, tables->n_idents);
	atomic_fetch_add(&writes_taken, 1);
	return 0;
}

int sm_datapath_authz_write_update(struct sm_datapath *dp, const struct sm_authz_tables *tables, char *err,
				  size_t size)
{
	(void)dp;
	if (write_fails(err, size))
		return -ENOMEM;
	assert_int_equal(tables->generation, atomic_load(&in_force));
	atomic_store(&idents_written, tables->n_idents);
	atomic_fetch_add(&sources_added, tables->n_added_sources);
	atomic_fetch_add(&dests_changed, tables->n_changed_dests);
	atomic_fetch_add(&idents_taken, 1);
	return 0;
}

int sm_datapath_authz_generation(const struct sm_datapath *dp, uint32_t *generation)
{
	(void)dp;
	*generation = atomic_load(&in_force);
	return 0;
}

static uint32_t capacity_per_generation = 4096; /* of every authorization table */

int sm_datapath_authz_capacity(const struct sm_datapath *dp, int map, uint32_t *per_generation)
{
	(void)dp, (void)map;
	*per_generation = capacity_per_generation;
	return 0;
}

/* The datapath's ring of authorization events, as the events thread sees it: what a test puts in it is handed
 * to the callback at the next poll, all at once, as libbpf's ring_buffer__poll does. */
static struct {
	pthread_mutex_t lock;
	struct sm_authz_event *events;
	size_t n;
	atomic_size_t taken; /* handed to the callback */
	int (*fn)(void *ctx, const struct sm_authz_event *event);
	void *ctx;
} authz_ring = { .lock = PTHREAD_MUTEX_INITIALIZER };

int sm_datapath_authz_events_open(struct sm_datapath *dp, int (*fn)(void *ctx, const struct sm_authz_event *event),
				  void *ctx, struct sm_authz_events **out)
{
	(void)dp;
	authz_ring.fn = fn;
	authz_ring.ctx = ctx;
	*out = (struct sm_authz_events *)&handle;
	return 0;
}

int sm_authz_events_poll(struct sm_authz_events *events, int timeout_ms)
{
	struct sm_authz_event *taken;
	size_t n;

	(void)events;
	pthread_mutex_lock(&authz_ring.lock);
	taken = authz_ring.events;
	n = authz_ring.n;
	authz_ring.events = NULL;
	authz_ring.n = 0;
	pthread_mutex_unlock(&authz_ring.lock);
	if (!n)
		usleep((useconds_t)timeout_ms * 1000);
	for (size_t i = 0; i < n; i++) {
		authz_ring.fn(authz_ring.ctx, &taken[i]);
		atomic_fetch_add(&authz_ring.taken, 1);
	}
	free(taken);
	return (int)n;
}

void sm_authz_events_close(struct sm_authz_events *events)
{
	(void)events;
}

int sm_datapath_sweep_guards(struct sm_datapath *dp)
{
	(void)dp;
	return 0;
}

/* Three guarded pod namespaces: 11 holds 10.0.0.1, 12 holds 10.0.0.99, 13 (10.0.0.13) is no pod the enroller
 * knows. */
static atomic_uint reaped; /* bit (cookie - 10) per namespace walked */
static atomic_uint asked;  /* per namespace the datapath was asked to walk only if a destination is local */
#define ALL_THREE ((1u << 1) | (1u << 2) | (1u << 3))
static _Thread_local uint64_t opened;

int sm_datapath_for_each_guard(const struct sm_datapath *dp, int (*fn)(void *ctx, uint64_t cookie), void *ctx)
{
	(void)dp;
	for (uint64_t cookie = 11; cookie <= 13; cookie++)
		fn(ctx, cookie);
	return 0;
}

int agent_netns_holds(uint64_t cookie, const struct sm_frontend_key *addrs, size_t n)
{
	struct sm_frontend_key held;

	if (cookie == 13)
		return -ENOENT;
	assert_int_equal(parse_mapped_address(cookie == 11 ? "10.0.0.1" : "10.0.0.99", held.addr), 0);
	for (size_t i = 0; i < n; i++)
		if (!memcmp(addrs[i].addr, held.addr, 16))
			return 1;
	return 0;
}

int sm_datapath_for_each_enrolled(const struct sm_datapath *dp, int (*fn)(void *ctx, uint64_t netns_cookie), void *ctx)
{
	(void)dp, (void)fn, (void)ctx;
	return 0;
}

int sm_datapath_guard_netns(struct sm_datapath *dp, int netns_fd, uint64_t cookie, char *err, size_t size)
{
	(void)dp, (void)netns_fd, (void)cookie, (void)err, (void)size;
	return 0;
}

int sm_datapath_unguard_netns(struct sm_datapath *dp, uint64_t cookie)
{
	(void)dp, (void)cookie;
	return 0;
}

int sm_datapath_authz_reap(struct sm_datapath *dp, int netns_fd, const struct sm_frontend_key *only_if_local,
			   size_t n_only, bool *walked, unsigned *closed, char *err, size_t size)
{
	struct sm_frontend_key local;
	bool walk = !only_if_local;

	(void)dp, (void)netns_fd, (void)err, (void)size;
	assert_int_equal(parse_mapped_address(opened == 11 ? "10.0.0.1" : opened == 12 ? "10.0.0.99" : "10.0.0.13",
					      local.addr),
			 0);
	if (only_if_local)
		atomic_fetch_or(&asked, 1u << (opened - 10));
	for (size_t i = 0; i < n_only; i++)
		walk |= !memcmp(only_if_local[i].addr, local.addr, 16);
	if (walk)
		atomic_fetch_or(&reaped, 1u << (opened - 10));
	if (walked)
		*walked = walk;
	*closed = 0;
	return 0;
}

int sm_datapath_authz_policy_counts(const struct sm_datapath *dp,
				    int (*fn)(void *ctx, uint64_t policy, const struct sm_authz_policy_counts *sum),
				    void *ctx)
{
	(void)dp, (void)fn, (void)ctx;
	return 0;
}

int agent_netns_open(uint64_t cookie, int *fd)
{
	opened = cookie;
	*fd = -1;
	return 0;
}

int sm_netns_cookie_here(uint64_t *cookie)
{
	*cookie = 1;
	return 0;
}

/* ---- the world: one workload of this node under one policy ---- */

struct world {
	struct sm_model *model;
	struct sm_image *image;
	struct sm_image_writer writer;
	struct agent_authz *authz;
	struct model_gate gate;
};

static atomic_uint denials_counted, denials_unlocked;

/* Telemetry's hook: counts, and checks that it runs under the model lock (ctx). */
static void count_denial(void *ctx, const struct sm_authz_event *ev, const char *error, const struct timespec *at)
{
	struct model_gate *gate = ctx;

	(void)ev, (void)error, (void)at;
	if (model_gate_trylock(gate)) {
		atomic_fetch_add(&denials_unlocked, 1);
		model_gate_unlock(gate);
	}
	atomic_fetch_add(&denials_counted, 1);
}

static void world_open(struct world *w)
{
	struct sm_model_options options = { .node_name = "node-a" };
	char err[256];

	assert_int_equal(sm_model_new(&options, &w->model), 0);
	assert_int_equal(sm_image_new(&w->image), 0);
	sm_image_writer_init(&w->writer, w->image);
	assert_int_equal(agent_authz_new("none", &w->authz, err, sizeof(err)), 0);
	sm_model_set_authz_check(w->model, agent_authz_check, w->authz);
	w->gate = (struct model_gate)MODEL_GATE_INITIALIZER;
	agent_authz_set_denied_hook(w->authz, count_denial, &w->gate, true);
	assert_int_equal(agent_authz_start(w->authz, (struct sm_datapath *)&handle, w->model, &w->gate, err, sizeof(err)),
			 0);
}

static void world_close(struct world *w)
{
	agent_authz_free(w->authz);
	sm_model_free(w->model);
	sm_image_free(w->image);
}

/* Applies r as the apply thread does: under the model lock, then the agent's after-apply; its rejections into
 * *rejections. */
static void apply_rejecting(struct world *w, struct response *r, const char *type_url,
			    struct sm_rejections *rejections)
{
	size_t len;
	uint8_t *bytes = response_pack(r, &len);
	ProtobufCMessage *decoded;
	char err[256];

	assert_int_equal(sm_pb_decode(&envoy__service__discovery__v3__delta_discovery_response__descriptor, bytes, len,
				      &decoded, err, sizeof(err)), 0);
	pthread_mutex_lock(&w->gate.lock);
	assert_int_equal(sm_model_apply(w->model, (void *)decoded, &w->writer.writer, rejections), 0);
	agent_authz_after_apply(w->authz, w->model, type_url);
	pthread_mutex_unlock(&w->gate.lock);
	protobuf_c_message_free_unpacked(decoded, NULL);
	free(bytes);
	response_free(r);
}

static void apply(struct world *w, struct response *r, const char *type_url)
{
	struct sm_rejections rejections = { 0 };

	apply_rejecting(w, r, type_url, &rejections);
	assert_int_equal(rejections.count, 0);
}

static void add_policy(struct world *w, const char *namespace, const char *name)
{
	struct response r;
	Istio__Security__Authorization *policy;
	char key[128];

	response_init(&r, SM_TYPE_URL_AUTHORIZATION);
	policy = response_alloc(&r, sizeof(*policy));
	istio__security__authorization__init(policy);
	policy->namespace_ = (char *)namespace;
	policy->name = (char *)name;
	policy->scope = ISTIO__SECURITY__SCOPE__NAMESPACE;
	policy->action = ISTIO__SECURITY__ACTION__DENY;
	snprintf(key, sizeof(key), "%s/%s", namespace, name);
	response_add_message(&r, response_keep(&r, strdup(key)), "v1", SM_TYPE_URL_AUTHORIZATION, &policy->base);
	apply(w, &r, SM_TYPE_URL_AUTHORIZATION);
}

/* The authorization metrics' value of name (the agent's /metrics text). */
static unsigned long long metric(struct world *w, const char *name)
{
	char *text = agent_authz_metrics(w->authz), *at, line[128];
	unsigned long long value = 0;

	assert_non_null(text);
	snprintf(line, sizeof(line), "\n%s ", name); /* the sample, not its # HELP */
	at = strstr(text, line);
	assert_non_null(at);
	assert_int_equal(sscanf(at + strlen(line), "%llu", &value), 1);
	free(text);
	return value;
}

static void failed_write_is_tried_again(void **state)
{
	static const struct workload_spec workload = { .uid = "w1", .addresses = { "10.0.0.1" }, .namespace = "ns",
						       .node = "node-a", .policies = { "ns/deny" } };
	struct world w = { 0 };
	struct response r;

	(void)state;
	world_open(&w);
	response_init(&r, SM_TYPE_URL_ADDRESS);
	response_add_workload(&r, &workload, "v1");
	apply(&w, &r, SM_TYPE_URL_ADDRESS);
	atomic_store(&writes_to_fail, 2);
	add_policy(&w, "ns", "deny");
	assert_int_equal(atomic_load(&writes_failed), 1);
	assert_int_equal(atomic_load(&writes_taken), 0);
	assert_int_equal(metric(&w, "sockmesh_authz_generation"), 0);

	/* no config change: the agent tries again after 1 s (fails), then 2 s more (taken) */
	double start = now_seconds();
	while (atomic_load(&writes_taken) == 0 && now_seconds() - start < 10)
		sleep_ms(20);
	double took = now_seconds() - start;
	assert_int_equal(atomic_load(&writes_taken), 1);
	assert_int_equal(atomic_load(&writes_failed), 2);
	if (took < 2.5 || took > 6)
		fail_msg("the tables were taken %.1f s after the first failure, not after 1 s and 2 s more", took);
	assert_int_equal(metric(&w, "sockmesh_authz_compile_failures_total"), 2);
	assert_int_equal(metric(&w, "sockmesh_authz_generation"), 1);

	/* in force: nothing more is tried */
	sleep_ms(1500);
	assert_int_equal(atomic_load(&writes_taken), 1);
	world_close(&w);
}

/* A workload of node (uid, address, namespace, service account), sent, or removed when address is NULL. */
static void workload_in(struct world *w, const char *uid, const char *address, const char *node, const char *namespace,
			const char *service_account)
{
	struct workload_spec spec = { .uid = uid, .addresses = { address }, .namespace = namespace, .node = node,
				      .policies = { "ns/deny" } };
	struct response r;

	response_init(&r, SM_TYPE_URL_ADDRESS);
	if (address) {
		Istio__Workload__Workload *msg = workload_from(&r, &spec);
		msg->service_account = (char *)service_account;
		response_add_workload_msg(&r, msg, "v1");
	} else {
		response_remove(&r, uid);
	}
	apply(w, &r, SM_TYPE_URL_ADDRESS);
}

/* The same in namespace ns. */
static void workload_on(struct world *w, const char *uid, const char *address, const char *node,
			const char *service_account)
{
	workload_in(w, uid, address, node, "ns", service_account);
}

struct writes {
	int whole, idents;
	unsigned generation;
	size_t n_idents;
};

static void expect_writes(const struct writes *want, const char *after)
{
	struct writes got = { atomic_load(&writes_taken), atomic_load(&idents_taken), atomic_load(&in_force),
			      atomic_load(&idents_written) };

	if (got.whole != want->whole || got.idents != want->idents || got.generation != want->generation ||
	    got.n_idents != want->n_idents)
		fail_msg("after %s: %d whole writes, %d of idents alone, generation %u, %zu idents; expected %d, %d, %u, "
			 "%zu",
			 after, got.whole, got.idents, got.generation, got.n_idents, want->whole, want->idents,
			 want->generation, want->n_idents);
}

/* A change of sources alone (a workload of another node whose identity has a source class in the tables
 * in force: evaluated, or one the compilation made) writes the idents alone under the generation in force,
 * with the sources entry a new identity's class needs; a workload of this node whose address takes a
 * destination set the tables have writes its dests entries the same way; anything else (a new class, a
 * policy, a local workload of a new set), and the write after a failed one, compiles and writes a new
 * generation. */
static void updates_under_the_generation_in_force(void **state)
{
	struct world w = { 0 };
	struct response r;

	(void)state;
	atomic_store(&writes_taken, 0);
	atomic_store(&writes_failed, 0);
	atomic_store(&in_force, 0);
	world_open(&w);
	workload_on(&w, "local", "10.0.0.1", "node-a", "server");
	response_init(&r, SM_TYPE_URL_AUTHORIZATION);
	response_add_policy_from_namespace(&r, "ns", "deny", ISTIO__SECURITY__ACTION__DENY, "bad");
	apply(&w, &r, SM_TYPE_URL_AUTHORIZATION);
	expect_writes(&(struct writes){ 1, 0, 1, 1 }, "the policy");
	workload_on(&w, "far1", "10.0.1.1", "node-b", "client");
	expect_writes(&(struct writes){ 1, 1, 1, 2 }, "a workload of another node with a new identity of a known class");
	workload_on(&w, "far2", "10.0.1.2", "node-b", "client");
	expect_writes(&(struct writes){ 1, 2, 1, 3 }, "another with that identity");
	workload_on(&w, "far2", NULL, NULL, NULL);
	expect_writes(&(struct writes){ 1, 3, 1, 2 }, "that one gone");
	workload_on(&w, "far3", "10.0.1.3", "node-b", "server");
	expect_writes(&(struct writes){ 1, 4, 1, 3 }, "one with the local workload's identity");
	assert_int_equal(atomic_load(&sources_added), 0);
	workload_in(&w, "far1", "10.0.1.1", "node-b", "bad", "one");
	expect_writes(&(struct writes){ 2, 4, 2, 3 }, "one moved to the denied namespace: a new class");
	workload_in(&w, "far4", "10.0.1.4", "node-b", "bad", "two");
	expect_writes(&(struct writes){ 2, 5, 2, 4 }, "another identity of that class");
	assert_int_equal(atomic_load(&sources_added), 1); /* denied: a class of its own, with its sources entry */
	workload_on(&w, "far4", NULL, NULL, NULL);
	expect_writes(&(struct writes){ 2, 6, 2, 3 }, "that one gone");
	assert_int_equal(atomic_load(&dests_changed), 0);
	workload_on(&w, "local", "10.0.0.2", "node-a", "server");
	expect_writes(&(struct writes){ 2, 7, 2, 3 }, "a new address for the local workload: the set it had");
	assert_int_equal(atomic_load(&dests_changed), 2); /* the old address's entry deleted, the new one's written */
	response_init(&r, SM_TYPE_URL_AUTHORIZATION);
	response_add_policy_from_namespace(&r, "other", "deny", ISTIO__SECURITY__ACTION__DENY, "bad");
	apply(&w, &r, SM_TYPE_URL_AUTHORIZATION);
	expect_writes(&(struct writes){ 3, 7, 3, 3 }, "a policy of a namespace with no workload of this node");
	workload_in(&w, "local2", "10.0.0.3", "node-a", "other", "server");
	expect_writes(&(struct writes){ 4, 7, 4, 4 }, "a workload of this node under that policy: a new set");
	workload_in(&w, "local3", "10.0.0.4", "node-a", "other", "server");
	expect_writes(&(struct writes){ 4, 8, 4, 5 }, "another under that policy");
	assert_int_equal(atomic_load(&dests_changed), 3);

	/* a failed write of an update: the next write is a whole one, tried again after 1 s */
	atomic_store(&writes_to_fail, 1);
	workload_on(&w, "far4", "10.0.1.4", "node-b", "client");
	assert_int_equal(atomic_load(&writes_failed), 1);
	expect_writes(&(struct writes){ 4, 8, 4, 5 }, "a failed write of idents");
	double start = now_seconds();
	while (atomic_load(&writes_taken) == 4 && now_seconds() - start < 10)
		sleep_ms(20);
	expect_writes(&(struct writes){ 5, 8, 5, 6 }, "the retry");
	workload_on(&w, "far5", "10.0.1.5", "node-b", "client");
	expect_writes(&(struct writes){ 5, 9, 5, 7 }, "a workload after the retry");
	assert_int_equal(metric(&w, "sockmesh_authz_identity_updates_total"), 7);
	assert_int_equal(metric(&w, "sockmesh_authz_destination_updates_total"), 2);
	assert_int_equal(metric(&w, "sockmesh_authz_compiles_total"), 5 + 9 + 1); /* the failed one too */
	world_close(&w);
}

static void add_allow_from_ns(struct world *w)
{
	struct response r;

	response_init(&r, SM_TYPE_URL_AUTHORIZATION);
	response_add_allow_from_namespace(&r, "ns", "deny", "ns"); /* the name the workloads list */
	apply(w, &r, SM_TYPE_URL_AUTHORIZATION);
}

/* After new identities alone, the guarded namespaces are walked only where something that was allowed is
 * now denied: not at all for a pod the policy lets in, and for one that goes away only in a namespace that
 * holds a destination it was allowed to reach; one the enroller cannot tell about is walked only if the
 * datapath finds such a destination local there (as for a workload of this node guarded now). A whole
 * compilation walks them all. */
static void reaped_only_where_denied(void **state)
{
	struct world w = { 0 };

	(void)state;
	atomic_store(&writes_to_fail, 0);
	atomic_store(&in_force, 0);
	world_open(&w);
	workload_on(&w, "local", "10.0.0.1", "node-a", "server");
	atomic_store(&reaped, 0);
	add_allow_from_ns(&w);
	assert_int_equal(atomic_load(&reaped), ALL_THREE);
	atomic_store(&reaped, 0);
	workload_on(&w, "far1", "10.0.1.1", "node-b", "client"); /* a new identity of a known class, let in */
	assert_int_equal(atomic_load(&reaped), 0u);
	workload_on(&w, "far2", "10.0.1.2", "node-b", "client"); /* let in: nothing to close */
	assert_int_equal(atomic_load(&reaped), 0u);
	atomic_store(&asked, 0);
	workload_on(&w, "far2", NULL, NULL, NULL); /* gone: no identity, denied at 10.0.0.1 */
	assert_int_equal(atomic_load(&reaped), 1u << 1);
	assert_int_equal(atomic_load(&asked), 1u << 3); /* the one the enroller cannot tell about: asked, not held */
	assert_int_equal(metric(&w, "sockmesh_authz_namespace_walks_total"), 3 + 1);
	/* a workload of this node at 13's address, of local's set: guarded now there, so 13 is asked about it
	 * and walked, the others not */
	atomic_store(&reaped, 0);
	atomic_store(&asked, 0);
	workload_on(&w, "local13", "10.0.0.13", "node-a", "server");
	assert_int_equal(metric(&w, "sockmesh_authz_destination_updates_total"), 1);
	assert_int_equal(atomic_load(&asked), 1u << 3);
	assert_int_equal(atomic_load(&reaped), 1u << 3);
	assert_int_equal(metric(&w, "sockmesh_authz_namespace_walks_total"), 3 + 1 + 1);
	world_close(&w);
}

/* ---- a response whose policies fill the tables, through the real compiler ---- */

#define FILLING_POLICIES 60

/* One workload of this node in ns, one of another node in each namespace s0 .. s59, and a response of 60
 * policies, p00 .. p59, each letting one of those namespaces in on a port of its own: each adds verdicts,
 * and the tables (48 entries a generation here) fill up. The runs that fit are taken, the policy after them
 * and the next one are NACKed naming the verdicts table, the rest untried; the tables of the policies taken
 * are written. */
static void policies_filling_the_tables(void **state)
{
	struct world w = { 0 };
	struct sm_rejections rejections = { 0 };
	struct workload_spec local = { .uid = "w-local", .addresses = { "10.0.0.1" }, .namespace = "ns",
				       .node = "node-a" };
	struct response r;
	char uid[16], address[16], ns[16], name[16];
	size_t first_rejected = FILLING_POLICIES;

	(void)state;
	capacity_per_generation = 48;
	world_open(&w);
	response_init(&r, SM_TYPE_URL_ADDRESS);
	response_add_workload(&r, &local, "v1");
	for (int i = 0; i < FILLING_POLICIES; i++) {
		snprintf(uid, sizeof(uid), "w%d", i);
		snprintf(address, sizeof(address), "10.1.0.%d", i + 1);
		snprintf(ns, sizeof(ns), "s%d", i);
		response_add_workload(&r, &(struct workload_spec){ .uid = uid, .addresses = { address }, .namespace = ns,
								    .node = "node-b" }, "v1");
	}
	apply(&w, &r, SM_TYPE_URL_ADDRESS);
	int taken_before = atomic_load(&writes_taken);

	response_init(&r, SM_TYPE_URL_AUTHORIZATION);
	for (int i = 0; i < FILLING_POLICIES; i++) {
		Istio__Security__Authorization policy = ISTIO__SECURITY__AUTHORIZATION__INIT;
		Istio__Security__Rule rule = ISTIO__SECURITY__RULE__INIT, *rules[] = { &rule };
		Istio__Security__Clause clause = ISTIO__SECURITY__CLAUSE__INIT, *clauses[] = { &clause };
		Istio__Security__Match match = ISTIO__SECURITY__MATCH__INIT, *matches[] = { &match };
		Istio__Security__StringMatch from = ISTIO__SECURITY__STRING_MATCH__INIT, *namespaces[] = { &from };
		uint32_t port = 1000 + (uint32_t)i;
		char key[32];

		snprintf(ns, sizeof(ns), "s%d", i);
		snprintf(name, sizeof(name), "p%02d", i);
		from.match_type_case = ISTIO__SECURITY__STRING_MATCH__MATCH_TYPE_EXACT;
		from.exact = ns;
		match.n_namespaces = 1, match.namespaces = namespaces;
		match.n_destination_ports = 1, match.destination_ports = &port;
		clause.n_matches = 1, clause.matches = matches;
		rule.n_clauses = 1, rule.clauses = clauses;
		policy.name = name, policy.namespace_ = "ns";
		policy.scope = ISTIO__SECURITY__SCOPE__NAMESPACE;
		policy.action = ISTIO__SECURITY__ACTION__ALLOW;
		policy.n_rules = 1, policy.rules = rules;
		snprintf(key, sizeof(key), "ns/%s", name);
		response_add_message(&r, response_keep(&r, strdup(key)), "v1", SM_TYPE_URL_AUTHORIZATION, &policy.base);
	}
	apply_rejecting(&w, &r, SM_TYPE_URL_AUTHORIZATION, &rejections);

	for (size_t i = 0; i < rejections.count; i++) {
		size_t index = (size_t)atoi(rejections.items[i].name + strlen("ns/p"));
		if (index < first_rejected)
			first_rejected = index;
	}
	printf("# %zu of %d policies taken; %zu rejected, the first: %s: %s\n", first_rejected, FILLING_POLICIES,
	       rejections.count, rejections.items[0].name, rejections.items[0].reason);
	assert_true(first_rejected >= 10 && first_rejected + 3 <= FILLING_POLICIES);
	assert_int_equal(rejections.count, FILLING_POLICIES - first_rejected);
	for (size_t i = 0; i < rejections.count; i++) {
		size_t index = (size_t)atoi(rejections.items[i].name + strlen("ns/p"));
		const char *reason = rejections.items[i].reason;

		if (index < first_rejected + 2 ? !strstr(reason, "verdicts") || strstr(reason, "not tried")
					       : !strstr(reason, "not tried alone"))
			fail_msg("%s: %s", rejections.items[i].name, reason);
	}
	/* what was taken is in force: written once, as a generation of its own */
	assert_int_equal(atomic_load(&writes_taken), taken_before + 1);
	assert_int_equal(metric(&w, "sockmesh_authz_generation"), atomic_load(&in_force));
	sm_rejections_clear(&rejections);
	world_close(&w);
	capacity_per_generation = 4096;
}

/* ---- denials while an apply holds the model ---- */

/* While an apply holds the model, the events thread keeps taking the datapath's denials into its backlog (the
 * ring would fill up and drop them); telemetry's hook gets them, under the model lock, once it is free. */
static void denials_wait_while_the_model_is_busy(void **state)
{
	enum { DENIALS = 20000 };
	struct world w = { 0 };
	unsigned long long waited = 0;

	(void)state;
	world_open(&w);
	waited = metric(&w, "sockmesh_authz_events_waited_total");
	atomic_store(&denials_counted, 0);
	atomic_store(&authz_ring.taken, 0);

	pthread_mutex_lock(&w.gate.lock); /* an apply */
	pthread_mutex_lock(&authz_ring.lock);
	authz_ring.events = calloc(DENIALS, sizeof(*authz_ring.events));
	assert_non_null(authz_ring.events);
	for (size_t i = 0; i < DENIALS; i++)
		authz_ring.events[i] = (struct sm_authz_event){ .kind = SM_AUTHZ_EVENT_DENIED,
								 .reason = SM_AUTHZ_NO_ALLOW_MATCHED,
								 .dst_port = htons(80), .src_port = htons(40000) };
	authz_ring.n = DENIALS;
	pthread_mutex_unlock(&authz_ring.lock);
	double start = now_seconds();
	while (atomic_load(&authz_ring.taken) < DENIALS && now_seconds() - start < 5)
		sleep_ms(10);
	size_t taken = atomic_load(&authz_ring.taken);
	unsigned counted_while_held = atomic_load(&denials_counted);
	pthread_mutex_unlock(&w.gate.lock);
	if (taken < DENIALS)
		fail_msg("the ring was not drained while the model was busy: %zu of %d taken", taken, DENIALS);
	assert_int_equal(counted_while_held, 0);

	start = now_seconds();
	while (atomic_load(&denials_counted) < DENIALS && now_seconds() - start < 5)
		sleep_ms(10);
	assert_int_equal(atomic_load(&denials_counted), DENIALS);
	assert_int_equal(atomic_load(&denials_unlocked), 0);
	assert_int_equal(metric(&w, "sockmesh_authz_events_waited_total") - waited, DENIALS);
	assert_int_equal(metric(&w, "sockmesh_authz_events_dropped_total"), 0);
	world_close(&w);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(failed_write_is_tried_again),
		cmocka_unit_test(updates_under_the_generation_in_force),
		cmocka_unit_test(reaped_only_where_denied),
		cmocka_unit_test(policies_filling_the_tables),
		cmocka_unit_test(denials_wait_while_the_model_is_busy),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
