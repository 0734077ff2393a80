/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The agent's side of L4 authorization (agent/authz.h): compile, write, close what a change denies, log
 * and count. The apply thread compiles and writes (under the model lock); one thread reads the
 * datapath's events and logs them, rate-limited; /metrics reads the per-policy counters.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <uthash.h>

#include "agent/agent.h"
#include "agent/authz.h"
#include "agent/event_backlog.h"
#include "agent/log.h"
#include "agent/netns_open.h"
#include "authz/authz.h"
#include "netns/netns.h"

#define MAX_NODE_ADDRESSES 256
#define DENIAL_LOG_BURST 20 /* lines a second, then a count of those left out */
/* Events read while the model is busy (an apply): 4 MiB at most (the datapath's ring holds 256 KiB). */
#define BACKLOG_EVENTS 32768
#define BACKLOG_CHUNK 4096 /* handled at a time once the model is free */
#define BACKLOG_POLL_MS 20 /* how soon, while events wait, the model is tried again */

enum node_mode {
	NODE_AUTO,
	NODE_NONE,
	NODE_LIST,
};

/* A policy's name by its hash, for logs and metrics; rebuilt at each compile. */
struct policy_name {
	UT_hash_handle hh;
	uint64_t hash;
	char key[];
};

struct agent_authz {
	enum node_mode node_mode;
	uint8_t node[MAX_NODE_ADDRESSES][16];
	size_t n_node;
	struct sm_datapath *dp;
	const struct sm_model *model;
	struct model_gate *model_gate;
	uint32_t capacity_dests, capacity_cidrs, capacity_sources, capacity_verdicts;

	bool seen_address, seen_authorization; /* since the start */
	bool synced;
	bool guarding_nothing;		/* the tables written last guard no address */
	uint64_t synced_changes;	/* sm_model_authz_generation written last */
	unsigned retry_ms;		/* after a failed sync: the wait before the next try (under the model lock) */
	atomic_ullong retry_at_us;	/* when the events thread tries it (0: none due) */
	bool guard_enrolled;		/* guard what `sockmesh enroll` enrolled (no enroller, no --enroll-all) */
	/* the last check's compilation, and the model's count of authorization changes once its batch commits */
	struct sm_authz_tables *checked;
	struct sm_model_authz *checked_input;
	uint64_t checked_changes;
	bool checked_update;		/* an update of in_force's tables (sm_authz_update_*) */
	/* the tables last written whole, with the updates written since, and the model's counts of policy and
	 * destination changes they were compiled at: while the destinations' holds, a change of sources alone
	 * needs only new idents; while the policies' holds, this node's addresses are updated too */
	struct sm_authz_tables *in_force;
	uint64_t in_force_dests, in_force_policies;
	uint64_t in_force_changes;			  /* sm_model_authz_generation they were made at */
	uint8_t in_force_node[MAX_NODE_ADDRESSES][16];	  /* the node's addresses they were made with */
	size_t n_in_force_node;
	atomic_uint generation;		/* in force */
	atomic_size_t n_unknown;	/* listed policies not received, at the last compile */
	atomic_ullong compiles, compile_failures, closed_total;
	atomic_ullong identity_updates;	   /* of compiles: new identities alone, under the generation in force */
	atomic_ullong destination_updates; /* ... this node's addresses given sets, the same */
	atomic_ullong namespace_walks;	/* guarded namespaces whose TCP table a reap walked */
	atomic_ullong last_compile_us;
	atomic_size_t verdict_entries;

	pthread_mutex_t names_lock;
	struct policy_name *names;

	struct sm_authz_events *events;
	struct event_backlog backlog;	   /* events read while the model was busy (the events thread's) */
	agent_authz_denied_fn denied_hook; /* telemetry's: set before start */
	bool hook_logs;			   /* ... which writes the denial's access log line */
	void *denied_ctx;
	pthread_t events_thread;
	bool events_running;
	atomic_bool stop;
	time_t log_second;
	unsigned log_lines, log_suppressed;
};

/* ---- options ---- */

static int parse_node_list(struct agent_authz *authz, const char *text, char *err, size_t size)
{
	char *copy = strdup(text), *save = NULL;
	int ret = copy ? 0 : -ENOMEM;

	for (char *item = copy ? strtok_r(copy, ",", &save) : NULL; !ret && item; item = strtok_r(NULL, ",", &save)) {
		if (authz->n_node == MAX_NODE_ADDRESSES) {
			snprintf(err, size, "--node-addresses: more than %d addresses", MAX_NODE_ADDRESSES);
			ret = -EINVAL;
		} else if (parse_mapped_address(item, authz->node[authz->n_node++])) {
			snprintf(err, size, "--node-addresses: '%s' is not an IPv4 or IPv6 address", item);
			ret = -EINVAL;
		}
	}
	free(copy);
	return ret;
}

int agent_authz_new(const char *node_addresses, struct agent_authz **out, char *err, size_t size)
{
	struct agent_authz *authz = calloc(1, sizeof(*authz));
	int ret = 0;

	if (!authz)
		return -ENOMEM;
	pthread_mutex_init(&authz->names_lock, NULL);
	if (!node_addresses || strcmp(node_addresses, "auto") == 0)
		authz->node_mode = NODE_AUTO;
	else if (strcmp(node_addresses, "none") == 0)
		authz->node_mode = NODE_NONE;
	else {
		authz->node_mode = NODE_LIST;
		ret = parse_node_list(authz, node_addresses, err, size);
	}
	if (ret) {
		agent_authz_free(authz);
		return ret;
	}
	*out = authz;
	return 0;
}

/* ---- the node's addresses ---- */

static void own_addresses(struct agent_authz *authz, const struct sm_model *model)
{
	struct ifaddrs *list, *ifa;
	struct sm_authz_identity identity;

	authz->n_node = 0;
	if (getifaddrs(&list))
		return;
	for (ifa = list; ifa && authz->n_node < MAX_NODE_ADDRESSES; ifa = ifa->ifa_next) {
		uint8_t *addr = authz->node[authz->n_node];
		if (!ifa->ifa_addr)
			continue;
		if (ifa->ifa_addr->sa_family == AF_INET) {
			memset(addr, 0, 10);
			addr[10] = addr[11] = 0xff;
			memcpy(addr + 12, &((struct sockaddr_in *)ifa->ifa_addr)->sin_addr, 4);
		} else if (ifa->ifa_addr->sa_family == AF_INET6)
			memcpy(addr, &((struct sockaddr_in6 *)ifa->ifa_addr)->sin6_addr, 16);
		else
			continue;
		/* a workload's address (a pod in this namespace, as in the demo) is checked as that workload */
		if (!sm_model_authz_identity(model, addr, &identity))
			authz->n_node++;
	}
	freeifaddrs(list);
}

/* ---- compiling ---- */

static size_t node_count(const struct agent_authz *authz)
{
	return authz->node_mode == NODE_NONE ? 0 : authz->n_node;
}

/* The tables for the model's state: *update when they are the tables in force updated under their generation
 * (the policies unchanged, every source's class and every local address's set known), from the addresses
 * changed since or (only sources changed) from the whole input; else compiled whole for generation.
 * *input_out: the input built (NULL when the changed addresses sufficed). */
static int compile(struct agent_authz *authz, const struct sm_model *model, uint32_t generation,
		   struct sm_model_authz **input_out, struct sm_authz_tables **out, bool *update, char *reason,
		   size_t size)
{
	bool same_policies = authz->in_force && authz->in_force_policies == sm_model_authz_policies_generation(model);
	bool same_dests = same_policies && authz->in_force_dests == sm_model_authz_destinations_generation(model);
	struct sm_model_authz *input;
	int changed, ret;

	if (input_out)
		*input_out = NULL;
	if (authz->node_mode == NODE_AUTO)
		own_addresses(authz, model);
	/* tables that guard nothing were compiled without sources */
	changed = same_policies && authz->in_force->n_dests
			  ? sm_model_authz_update(model, authz->in_force, authz->in_force_changes,
						  (const uint8_t(*)[16])authz->in_force_node, authz->n_in_force_node,
						  (const uint8_t(*)[16])authz->node, node_count(authz), !same_dests, out,
						  reason, size)
			  : -ESRCH;
	*update = !changed;
	if (*update)
		return 0;
	ret = sm_model_authz_build(model, (const uint8_t(*)[16])authz->node, node_count(authz), &input);
	if (ret) {
		snprintf(reason, size, "building the authorization input: %s", strerror(-ret));
		return ret;
	}
	input->input->max_dests = authz->capacity_dests;
	input->input->max_cidrs = authz->capacity_cidrs;
	input->input->max_sources = authz->capacity_sources;
	input->input->max_verdicts = authz->capacity_verdicts;
	/* from the whole input when the model no longer lists the changed addresses and only sources changed */
	ret = changed == -ESRCH || !same_dests ? -ESRCH
					       : sm_authz_update_sources(authz->in_force, input->input, out, reason, size);
	*update = !ret;
	if (ret == -ESRCH) /* a source of a class never evaluated, an address of a new set, or other policies */
		ret = sm_authz_compile(input->input, generation, out, reason, size);
	if (ret || !input_out)
		sm_model_authz_free(input);
	else
		*input_out = input;
	return ret;
}

/* No policy at all: nothing can be denied, so nothing needs compiling (the common case of a mesh without
 * AuthorizationPolicies, which then pays nothing per workload change). */
static bool no_policies(const struct sm_model *model)
{
	struct sm_model_stats stats;

	sm_model_stats(model, &stats);
	return stats.authorizations == 0;
}

static void forget_checked(struct agent_authz *authz)
{
	sm_authz_tables_free(authz->checked);
	sm_model_authz_free(authz->checked_input);
	authz->checked = NULL;
	authz->checked_input = NULL;
}

int agent_authz_check_only(void *ctx, const struct sm_model *model, char *reason, size_t size)
{
	struct agent_authz *authz = ctx;
	struct sm_authz_tables *tables = NULL;
	bool update;
	int ret;

	if (no_policies(model))
		return 0;
	ret = compile(authz, model, 1, NULL, &tables, &update, reason, size);
	sm_authz_tables_free(tables);
	return ret;
}

/* The compilation is kept: when its batch commits, the sync after the response writes it as it is. */
int agent_authz_check(void *ctx, const struct sm_model *model, char *reason, size_t size)
{
	struct agent_authz *authz = ctx;
	struct sm_model_authz *input = NULL;
	struct sm_authz_tables *tables = NULL;
	int ret;

	forget_checked(authz);
	if (no_policies(model))
		return 0;
	ret = compile(authz, model, 1, &input, &tables, &authz->checked_update, reason, size);
	if (ret)
		return ret;
	authz->checked = tables;
	authz->checked_input = input;
	authz->checked_changes = sm_model_authz_generation(model) + 1; /* what the model counts once committed */
	return 0;
}

/* Tables compiled for one generation, moved to another: the generation is in every key. */
static void retag(struct sm_authz_tables *tables, uint32_t generation)
{
	tables->generation = generation;
	for (size_t i = 0; i < tables->n_dests; i++)
		tables->dest_keys[i].generation = generation;
	for (size_t i = 0; i < tables->n_cidrs; i++)
		tables->cidr_keys[i].generation = htonl(generation);
	for (size_t i = 0; i < tables->n_sources; i++)
		tables->source_keys[i].generation = generation;
	for (size_t i = 0; i < tables->n_verdicts; i++)
		tables->verdict_keys[i].generation = generation;
}

static uint64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static void remember_names(struct agent_authz *authz, const struct sm_model_authz *input)
{
	struct policy_name *names = NULL, *entry, *tmp;
	const struct sm_authz_compile_input *in = input->input;

	for (size_t d = 0; d < in->n_destinations; d++) {
		for (size_t p = 0; p < in->destinations[d].n_policies; p++) {
			const struct sm_authz_policy *policy = in->destinations[d].policies[p];
			HASH_FIND(hh, names, &policy->hash, sizeof(policy->hash), entry);
			if (entry)
				continue;
			entry = malloc(sizeof(*entry) + strlen(policy->key) + 1);
			if (!entry)
				break;
			entry->hash = policy->hash;
			strcpy(entry->key, policy->key);
			HASH_ADD(hh, names, hash, sizeof(entry->hash), entry);
			if (!entry->hh.tbl) { /* uthash could not grow its table (HASH_NONFATAL_OOM) */
				free(entry);
				break;
			}
		}
	}
	pthread_mutex_lock(&authz->names_lock);
	HASH_ITER(hh, authz->names, entry, tmp) {
		/* a policy gone keeps its name while its counters may still be read */
		struct policy_name *kept;
		HASH_FIND(hh, names, &entry->hash, sizeof(entry->hash), kept);
		HASH_DEL(authz->names, entry);
		if (kept) {
			free(entry);
			continue;
		}
		HASH_ADD(hh, names, hash, sizeof(entry->hash), entry);
		if (!entry->hh.tbl) /* uthash could not grow its table (HASH_NONFATAL_OOM): the name is lost */
			free(entry);
	}
	authz->names = names;
	pthread_mutex_unlock(&authz->names_lock);
}

static void report_unknown(struct agent_authz *authz, const struct sm_model_authz *input)
{
	if (input->n_unknown != authz->n_unknown) {
		for (size_t i = 0; i < input->n_unknown && i < 20; i++)
			log_msg(LOG_WARN, "authorization: skipping unknown policy (listed by workload %s)", input->unknown[i]);
		if (input->n_unknown > 20)
			log_msg(LOG_WARN, "authorization: %zu more unknown policies skipped", input->n_unknown - 20);
	}
	authz->n_unknown = input->n_unknown;
}

struct reap_pass {
	struct agent_authz *authz;
	uint64_t own_cookie;
	const struct sm_frontend_key *dests; /* NULL: every namespace; else only those that may hold one */
	size_t n_dests;
	unsigned closed;
};

/* Destinations a namespace the enroller cannot tell about is asked for (a bind each, in it) before its walk:
 * more would cost about what the walk does (0.67 ms with the node's shared TCP table). */
#define ASKED_MAX 64

static int reap_one(void *ctx, uint64_t cookie)
{
	struct reap_pass *pass = ctx;
	int holds = pass->dests ? agent_netns_holds(cookie, pass->dests, pass->n_dests) : 1;
	bool ask = holds < 0 && pass->n_dests <= ASKED_MAX;
	char err[256];
	unsigned closed = 0;
	int fd = -1, ret;

	if (!holds)
		return 0; /* a pod's namespace without the destinations the change denies anything at */
	if (cookie != pass->own_cookie && (ret = agent_netns_open(cookie, &fd))) {
		log_msg(LOG_DEBUG, "authorization: no process is in guarded network namespace %llu: %s",
			(unsigned long long)cookie, strerror(-ret));
		return 0;
	}
	/* one the enroller cannot tell about is walked only if one of them is local there */
	bool walked = false;
	ret = sm_datapath_authz_reap(pass->authz->dp, fd, ask ? pass->dests : NULL, ask ? pass->n_dests : 0, &walked,
				     &closed, err, sizeof(err));
	pass->authz->namespace_walks += walked;
	if (fd >= 0)
		close(fd);
	if (ret)
		log_msg(LOG_WARN, "authorization: closing denied connections in network namespace %llu: %s",
			(unsigned long long)cookie, err);
	pass->closed += closed;
	return 0;
}

/* Closes, in every guarded namespace (that may hold one of dests, when not NULL), the established
 * connections the tables in force now deny. */
static unsigned reap(struct agent_authz *authz, const struct sm_frontend_key *dests, size_t n_dests)
{
	struct reap_pass pass = { .authz = authz, .dests = dests, .n_dests = n_dests };

	sm_netns_cookie_here(&pass.own_cookie);
	sm_datapath_for_each_guard(authz->dp, reap_one, &pass);
	return pass.closed;
}

/* The checked compilation, when it is still the model's state and, if it holds new idents only, for the
 * tables in force. */
static bool checked_fits(const struct agent_authz *authz, const struct sm_model *model)
{
	return authz->checked && authz->checked_changes == sm_model_authz_generation(model) &&
	       (!authz->checked_update ||
		(authz->in_force && authz->checked->generation == authz->in_force->generation));
}

static void log_in_force(struct agent_authz *authz, const struct sm_model_authz *input, bool update,
			 bool reaped, unsigned closed)
{
	const struct sm_authz_tables *t = authz->in_force;

	if (update) {
		char outcome[64], local[64] = "";
		snprintf(outcome, sizeof(outcome), "%u established connections closed", closed);
		if (t->changed_dests)
			snprintf(local, sizeof(local), ", %zu local addresses given their sets", t->n_changed_dests);
		log_msg(LOG_INFO, "authorization: generation %u in force with new identities (%zu sources%s) in %.1f ms; %s",
			t->generation, t->n_idents, local, (double)authz->last_compile_us / 1000.0,
			reaped ? outcome : "they deny nothing that was allowed: no established connection to check");
		return;
	}
	log_msg(LOG_INFO,
		"authorization: generation %u in force (%zu local addresses, %zu sources; %zu destination entries, %zu "
		"prefixes, %zu source classes, %zu verdicts) in %.1f ms; %u established connections closed",
		t->generation, input->input->n_destinations, input->input->n_sources, t->n_dests, t->n_cidrs,
		t->n_sources, t->n_verdicts, (double)authz->last_compile_us / 1000.0, closed);
}

/* After a failed write: what is in force is read back (a write can fail after its flip), and the next
 * write is a whole one. */
static void sync_failed(struct agent_authz *authz, const char *reason)
{
	uint32_t in_force;

	if (!sm_datapath_authz_generation(authz->dp, &in_force))
		authz->generation = in_force;
	sm_authz_tables_free(authz->in_force);
	authz->in_force = NULL;
	authz->compile_failures++;
	authz->retry_ms = agent_next_retry_ms(authz->retry_ms);
	authz->retry_at_us = now_us() + authz->retry_ms * 1000ULL;
	log_msg(LOG_ERROR, "authorization: the tables in force (generation %u) stay, tried again in %u s: %s",
		authz->generation, authz->retry_ms / 1000, reason);
}

static void sync_tables(struct agent_authz *authz, const struct sm_model *model)
{
	uint32_t next = authz->generation + 1 ? authz->generation + 1 : 1;
	struct sm_model_authz *input = NULL;
	struct sm_authz_tables *tables = NULL;
	uint64_t started = now_us();
	bool update = false;
	char reason[512];
	int ret;

	if (checked_fits(authz, model)) {
		tables = authz->checked;
		input = authz->checked_input;
		update = authz->checked_update;
		authz->checked = NULL;
		authz->checked_input = NULL;
		if (!update)
			retag(tables, next);
		ret = 0;
	} else
		ret = compile(authz, model, next, &input, &tables, &update, reason, sizeof(reason));
	forget_checked(authz);
	if (!ret)
		ret = update ? sm_datapath_authz_write_update(authz->dp, tables, reason, sizeof(reason))
				   : sm_datapath_authz_write(authz->dp, tables, reason, sizeof(reason));
	authz->compiles++;
	if (ret) {
		sync_failed(authz, reason);
		goto out;
	}
	authz->retry_ms = 0;
	authz->retry_at_us = 0;
	authz->identity_updates += update && !tables->changed_dests;
	authz->destination_updates += update && tables->changed_dests;
	authz->generation = tables->generation;
	authz->synced = true;
	authz->synced_changes = sm_model_authz_generation(model);
	authz->last_compile_us = now_us() - started;
	authz->verdict_entries = tables->n_verdicts;
	authz->guarding_nothing = tables->n_dests == 0;
	/* a reap walks the TCP table of every guarded namespace: after an update, only where it denies something
	 * that was allowed (-ENOMEM: everywhere) */
	struct sm_frontend_key *denied_at = NULL;
	size_t n_denied_at = 0;
	int may_deny = update ? sm_authz_update_denies(authz->in_force, tables, &denied_at, &n_denied_at) : 1;
	sm_authz_tables_free(authz->in_force);
	authz->in_force = tables;
	authz->in_force_dests = sm_model_authz_destinations_generation(model);
	authz->in_force_policies = sm_model_authz_policies_generation(model);
	authz->in_force_changes = sm_model_authz_generation(model);
	authz->n_in_force_node = node_count(authz);
	memcpy(authz->in_force_node, authz->node, authz->n_in_force_node * 16);
	tables = NULL;
	if (input) { /* else an update: the same policies */
		remember_names(authz, input);
		report_unknown(authz, input);
	}
	unsigned closed = may_deny ? reap(authz, may_deny > 0 && update ? denied_at : NULL, n_denied_at) : 0;
	free(denied_at);
	authz->closed_total += closed;
	log_in_force(authz, input, update, may_deny, closed);
out:
	sm_authz_tables_free(tables);
	sm_model_authz_free(input);
}

void agent_authz_after_apply(struct agent_authz *authz, const struct sm_model *model, const char *type_url)
{
	if (!authz || !authz->dp)
		return;
	if (strcmp(type_url, SM_TYPE_URL_ADDRESS) == 0)
		authz->seen_address = true;
	else if (strcmp(type_url, SM_TYPE_URL_AUTHORIZATION) == 0)
		authz->seen_authorization = true;
	if (!authz->seen_address || !authz->seen_authorization)
		return;
	if (authz->synced && authz->synced_changes == sm_model_authz_generation(model))
		return;
	if (authz->synced && authz->guarding_nothing && no_policies(model)) {
		authz->synced_changes = sm_model_authz_generation(model);
		return;
	}
	sync_tables(authz, model);
}

/* ---- the datapath's events: logged like ztunnel's access log, at most DENIAL_LOG_BURST lines a second ---- */

static void policy_key(struct agent_authz *authz, uint64_t hash, char *buf, size_t size)
{
	struct policy_name *entry;

	pthread_mutex_lock(&authz->names_lock);
	HASH_FIND(hh, authz->names, &hash, sizeof(hash), entry);
	if (entry)
		snprintf(buf, size, "%s", entry->key);
	else
		snprintf(buf, size, "policy-%016llx", (unsigned long long)hash);
	pthread_mutex_unlock(&authz->names_lock);
}

/* Under the model lock. */
static void identity_text(struct agent_authz *authz, const uint8_t addr[16], char *buf, size_t size)
{
	struct sm_authz_identity identity;
	char principal[600];
	bool found = sm_model_authz_identity(authz->model, addr, &identity) &&
		     !sm_authz_principal(&identity, principal, sizeof(principal));

	snprintf(buf, size, found ? "spiffe://%s" : "%s", found ? principal : "(none)");
}

static bool log_allowed(struct agent_authz *authz)
{
	time_t now = time(NULL);

	if (now != authz->log_second) {
		if (authz->log_suppressed)
			log_msg(LOG_INFO, "authorization: %u more decisions not logged in the last second",
				authz->log_suppressed);
		authz->log_second = now;
		authz->log_lines = authz->log_suppressed = 0;
	}
	if (authz->log_lines < DENIAL_LOG_BURST) {
		authz->log_lines++;
		return true;
	}
	authz->log_suppressed++;
	return false;
}

/* One event, read at *at, under the model lock (event_backlog_fn): telemetry's hook and the agent's own
 * log line. */
static void handle_event(void *ctx, const void *event, const struct timespec *at)
{
	struct agent_authz *authz = ctx;
	const struct sm_authz_event *ev = event;
	char src[64], dst[64], identity[640], policy[600], error[700];

	policy_key(authz, ev->policy, policy, sizeof(policy));
	if (ev->reason == SM_AUTHZ_DENY_MATCHED)
		snprintf(error, sizeof(error), "explicitly denied by: %s", policy);
	else
		snprintf(error, sizeof(error), "allow policies exist, but none allowed");
	if (ev->kind == SM_AUTHZ_EVENT_DENIED && authz->denied_hook) {
		char text[760];
		snprintf(text, sizeof(text), "connection closed due to policy rejection: %s", error);
		authz->denied_hook(authz->denied_ctx, ev, text, at);
	}
	/* the access log has its line (ztunnel's, with the workloads' names): not twice */
	if (ev->kind == SM_AUTHZ_EVENT_DENIED && authz->denied_hook && authz->hook_logs)
		return;
	if (!log_allowed(authz))
		return;
	format_mapped_endpoint(ev->src_addr, ntohs(ev->src_port), src, sizeof(src));
	format_mapped_endpoint(ev->dst_addr, ntohs(ev->dst_port), dst, sizeof(dst));
	identity_text(authz, ev->src_addr, identity, sizeof(identity));
	switch (ev->kind) {
	case SM_AUTHZ_EVENT_DENIED:
		log_msg(LOG_INFO, "access connection complete src.addr=%s src.identity=\"%s\" dst.addr=%s "
				  "direction=\"inbound\" error=\"connection closed due to policy rejection: %s\"",
			src, identity, dst, error);
		break;
	case SM_AUTHZ_EVENT_CLOSED:
		log_msg(LOG_INFO, "access connection complete src.addr=%s src.identity=\"%s\" dst.addr=%s "
				  "direction=\"inbound\" error=\"connection closed due to policy change: %s\"",
			src, identity, dst, error);
		break;
	case SM_AUTHZ_EVENT_DRY_RUN_DENIED:
		log_msg(LOG_INFO, "authorization dry-run: would deny src.addr=%s src.identity=\"%s\" dst.addr=%s: %s", src,
			identity, dst, error);
		break;
	}
}

/* Handled at once when the model is free; else it waits in the backlog, behind any before it, so that the
 * ring keeps draining while an apply holds the model (agent/event_backlog.h). */
static int on_event(void *ctx, const struct sm_authz_event *ev)
{
	struct agent_authz *authz = ctx;
	struct timespec now;

	clock_gettime(CLOCK_REALTIME, &now);
	event_backlog_offer(&authz->backlog, ev, &now, handle_event, authz);
	return 0;
}

struct cookies {
	uint64_t *items;
	size_t n, capacity;
};

static int collect_cookie(void *ctx, uint64_t cookie)
{
	struct cookies *list = ctx;

	if (list->n == list->capacity) {
		size_t capacity = list->capacity ? list->capacity * 2 : 64;
		uint64_t *items = realloc(list->items, capacity * sizeof(*items));
		if (!items)
			return -ENOMEM;
		list->items = items;
		list->capacity = capacity;
	}
	list->items[list->n++] = cookie;
	return 0;
}

static bool listed_cookie(const struct cookies *list, uint64_t cookie)
{
	for (size_t i = 0; i < list->n; i++) {
		if (list->items[i] == cookie)
			return true;
	}
	return false;
}

/*
 * Without an enroller or --enroll-all, namespaces are enrolled with `sockmesh enroll`, which cannot load
 * the check: the agent guards what sm_enrolled holds (found through /run/netns or a process in it) and
 * unguards what it no longer holds.
 */
static void guard_enrolled(struct agent_authz *authz)
{
	struct cookies enrolled = { 0 }, guarded = { 0 };
	char err[256];

	if (sm_datapath_for_each_enrolled(authz->dp, collect_cookie, &enrolled) ||
	    sm_datapath_for_each_guard(authz->dp, collect_cookie, &guarded))
		goto out;
	for (size_t i = 0; i < enrolled.n; i++) {
		int fd = -1;
		if (listed_cookie(&guarded, enrolled.items[i]) || agent_netns_open(enrolled.items[i], &fd))
			continue;
		if (sm_datapath_guard_netns(authz->dp, fd, enrolled.items[i], err, sizeof(err)))
			log_msg(LOG_WARN, "authorization: guarding enrolled network namespace %llu: %s",
				(unsigned long long)enrolled.items[i], err);
		else
			log_msg(LOG_INFO, "authorization: guarding enrolled network namespace %llu",
				(unsigned long long)enrolled.items[i]);
		close(fd);
	}
	for (size_t i = 0; i < guarded.n; i++) {
		if (!listed_cookie(&enrolled, guarded.items[i]) && !sm_datapath_unguard_netns(authz->dp, guarded.items[i]))
			log_msg(LOG_INFO, "authorization: network namespace %llu is no longer enrolled: not guarded",
				(unsigned long long)guarded.items[i]);
	}
out:
	free(enrolled.items);
	free(guarded.items);
}

/* Every few seconds: guards of namespaces that are gone are unpinned; enrolled ones guarded (above). */
static void maintain_guards(struct agent_authz *authz, time_t *next)
{
	time_t now = time(NULL);
	int swept;

	if (now < *next)
		return;
	*next = now + 2;
	if (authz->guard_enrolled)
		guard_enrolled(authz);
	swept = sm_datapath_sweep_guards(authz->dp);
	if (swept > 0)
		log_msg(LOG_INFO, "authorization: %d guards of network namespaces that are gone removed", swept);
}

void agent_authz_set_denied_hook(struct agent_authz *authz, agent_authz_denied_fn fn, void *ctx, bool logs)
{
	authz->hook_logs = logs;
	authz->denied_hook = fn;
	authz->denied_ctx = ctx;
}

void agent_authz_guard_enrolled(struct agent_authz *authz)
{
	authz->guard_enrolled = true;
}

/*
 * A sync that failed (memory, a map write) would otherwise wait for the next config change, which may be
 * hours away, with the policies istiod was told were taken not enforced: tried again here.
 */
static void retry_sync(struct agent_authz *authz)
{
	uint64_t at = authz->retry_at_us;

	if (!at || now_us() < at || !model_gate_trylock(authz->model_gate)) /* busy: an apply syncs anyway */
		return;
	if (authz->retry_at_us && now_us() >= authz->retry_at_us) /* an apply may have synced meanwhile */
		sync_tables(authz, authz->model);
	model_gate_unlock(authz->model_gate);
}

static void *events_main(void *arg)
{
	struct agent_authz *authz = arg;
	time_t next_maintenance = 0;

	while (!authz->stop) {
		maintain_guards(authz, &next_maintenance);
		retry_sync(authz);
		int ret = sm_authz_events_poll(authz->events, authz->backlog.n ? BACKLOG_POLL_MS : 200);
		if (ret < 0 && ret != -EINTR) {
			log_msg(LOG_WARN, "authorization: reading the datapath's events: %s", strerror(-ret));
			break;
		}
		event_backlog_drain(&authz->backlog, false, BACKLOG_CHUNK, handle_event, authz);
	}
	/* stopping: those that waited are handled (the model goes after this thread) */
	event_backlog_drain(&authz->backlog, true, BACKLOG_CHUNK, handle_event, authz);
	return NULL;
}

static uint32_t half(const struct sm_datapath *dp, int map, uint32_t fallback)
{
	uint32_t capacity;

	return sm_datapath_authz_capacity(dp, map, &capacity) == 0 ? capacity : fallback / 2;
}

int agent_authz_start(struct agent_authz *authz, struct sm_datapath *dp, const struct sm_model *model,
		      struct model_gate *model_gate, char *err, size_t size)
{
	int ret;

	authz->dp = dp;
	authz->model = model;
	authz->model_gate = model_gate;
	event_backlog_init(&authz->backlog, model_gate, sizeof(struct sm_authz_event), BACKLOG_EVENTS);
	authz->capacity_dests = half(dp, SM_DP_MAP_AUTHZ_DESTS, SM_DEFAULT_MAX_AUTHZ_DESTS);
	authz->capacity_cidrs = half(dp, SM_DP_MAP_AUTHZ_CIDRS, SM_DEFAULT_MAX_AUTHZ_CIDRS);
	authz->capacity_sources = half(dp, SM_DP_MAP_AUTHZ_SOURCES, SM_DEFAULT_MAX_AUTHZ_SOURCES);
	authz->capacity_verdicts = half(dp, SM_DP_MAP_AUTHZ_VERDICTS, SM_DEFAULT_MAX_AUTHZ_VERDICTS);
	uint32_t generation;
	ret = sm_datapath_authz_generation(dp, &generation);
	authz->generation = generation;
	if (ret) {
		snprintf(err, size, "reading the authorization generation in force: %s", strerror(-ret));
		return ret;
	}
	ret = sm_datapath_authz_events_open(dp, on_event, authz, &authz->events);
	if (ret) {
		snprintf(err, size, "opening the authorization events: %s", strerror(-ret));
		return ret;
	}
	ret = -pthread_create(&authz->events_thread, NULL, events_main, authz);
	if (ret) {
		snprintf(err, size, "starting the authorization events thread: %s", strerror(-ret));
		return ret;
	}
	authz->events_running = true;
	return 0;
}

void agent_authz_free(struct agent_authz *authz)
{
	struct policy_name *entry, *tmp;

	if (!authz)
		return;
	if (authz->events_running) {
		authz->stop = true;
		pthread_join(authz->events_thread, NULL);
	}
	sm_authz_events_close(authz->events);
	event_backlog_free(&authz->backlog);
	forget_checked(authz);
	sm_authz_tables_free(authz->in_force);
	HASH_ITER(hh, authz->names, entry, tmp) {
		HASH_DEL(authz->names, entry);
		free(entry);
	}
	pthread_mutex_destroy(&authz->names_lock);
	free(authz);
}

/* ---- /metrics ---- */

struct metrics_pass {
	struct agent_authz *authz;
	FILE *out;
};

static int policy_metrics(void *ctx, uint64_t hash, const struct sm_authz_policy_counts *sum)
{
	struct metrics_pass *pass = ctx;
	char key[600] = "";

	if (hash)
		policy_key(pass->authz, hash, key, sizeof(key));
	fprintf(pass->out,
		"sockmesh_authz_policy_connections_total{policy=\"%s\",outcome=\"allowed\"} %llu\n"
		"sockmesh_authz_policy_connections_total{policy=\"%s\",outcome=\"denied\"} %llu\n"
		"sockmesh_authz_policy_connections_total{policy=\"%s\",outcome=\"dry_run_denied\"} %llu\n"
		"sockmesh_authz_policy_connections_total{policy=\"%s\",outcome=\"closed\"} %llu\n",
		key, (unsigned long long)sum->allowed, key, (unsigned long long)sum->denied, key,
		(unsigned long long)sum->dry_run_denied, key, (unsigned long long)sum->closed);
	return 0;
}

char *agent_authz_metrics(struct agent_authz *authz)
{
	struct metrics_pass pass = { .authz = authz };
	char *text = NULL;
	size_t len = 0;

	pass.out = open_memstream(&text, &len);
	if (!pass.out)
		return NULL;
	fprintf(pass.out,
		"# HELP sockmesh_authz_generation the generation of authorization tables in force\n"
		"# TYPE sockmesh_authz_generation gauge\nsockmesh_authz_generation %u\n"
		"# HELP sockmesh_authz_compiles_total authorization compilations written (and failed)\n"
		"# TYPE sockmesh_authz_compiles_total counter\nsockmesh_authz_compiles_total %llu\n"
		"# HELP sockmesh_authz_identity_updates_total of those written, new identities alone under the generation "
		"in force\n"
		"# TYPE sockmesh_authz_identity_updates_total counter\nsockmesh_authz_identity_updates_total %llu\n"
		"# HELP sockmesh_authz_destination_updates_total of those written, this node's changed addresses given "
		"the sets they have under the generation in force (with their identities)\n"
		"# TYPE sockmesh_authz_destination_updates_total counter\nsockmesh_authz_destination_updates_total %llu\n"
		"# HELP sockmesh_authz_compile_failures_total compilations whose tables could not be written\n"
		"# TYPE sockmesh_authz_compile_failures_total counter\nsockmesh_authz_compile_failures_total %llu\n"
		"# HELP sockmesh_authz_namespace_walks_total guarded namespaces walked to close what a change denies\n"
		"# TYPE sockmesh_authz_namespace_walks_total counter\nsockmesh_authz_namespace_walks_total %llu\n"
		"# HELP sockmesh_authz_events_waited_total datapath events read while an apply held the model, handled "
		"after it\n"
		"# TYPE sockmesh_authz_events_waited_total counter\nsockmesh_authz_events_waited_total %llu\n"
		"# HELP sockmesh_authz_events_dropped_total of those, the ones beyond the backlog's room\n"
		"# TYPE sockmesh_authz_events_dropped_total counter\nsockmesh_authz_events_dropped_total %llu\n"
		"# HELP sockmesh_authz_compile_seconds time of the last compile and write\n"
		"# TYPE sockmesh_authz_compile_seconds gauge\nsockmesh_authz_compile_seconds %.6f\n"
		"# HELP sockmesh_authz_verdict_entries verdict entries of the tables in force\n"
		"# TYPE sockmesh_authz_verdict_entries gauge\nsockmesh_authz_verdict_entries %zu\n"
		"# HELP sockmesh_authz_unknown_policies policies workloads list that have not arrived (skipped)\n"
		"# TYPE sockmesh_authz_unknown_policies gauge\nsockmesh_authz_unknown_policies %zu\n"
		"# HELP sockmesh_authz_policy_connections_total connections each policy decided, by outcome "
		"(policy \"\": denied because no ALLOW policy matched)\n"
		"# TYPE sockmesh_authz_policy_connections_total counter\n",
		authz->generation, (unsigned long long)authz->compiles, (unsigned long long)authz->identity_updates,
		(unsigned long long)authz->destination_updates, (unsigned long long)authz->compile_failures,
		(unsigned long long)authz->namespace_walks, (unsigned long long)authz->backlog.waited,
		(unsigned long long)authz->backlog.dropped, (double)authz->last_compile_us / 1e6,
		(size_t)authz->verdict_entries, authz->n_unknown);
	if (authz->dp)
		sm_datapath_authz_policy_counts(authz->dp, policy_metrics, &pass);
	if (fclose(pass.out)) {
		free(text);
		return NULL;
	}
	return text;
}
