/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Pod churn against authorization tables updated address by address (sm_model_authz_source_changes,
 * sm_authz_update_idents, sm_authz_update_destinations): after every batch, and inside each one (the
 * admission check, before it commits), the updated identities and guarded addresses equal those of a whole
 * compilation of the model's input. Random batches of workloads of this node and others that come, go,
 * move, share addresses (host-network pods), take the node's addresses, change service account or
 * namespace; some batches fail and are undone; the node's address list changes now and then. The updated
 * tables also give every source the verdicts a whole compilation gives at every destination: a new identity
 * takes a class the compilation made, and its sources entry when that class has one; a local address takes
 * the set its policies have. A local address of a set the compilation did not make compiles whole, as in
 * the agent. Deterministic per AUTHZ_SEED.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "authz/authz.h"
#include "authz_random.h"
#include "model_harness.h"

#define UIDS 14
#define ADDRS 10
#define STEPS 600

static const char *const uids[UIDS] = { "w0", "w1", "w2", "w3", "w4", "w5", "w6",
					"w7", "w8", "w9", "w10", "w11", "w12", "w13" };
static const char *const addrs[ADDRS] = { "10.0.1.1", "10.0.1.2", "10.0.1.3", "10.0.1.4", "10.0.1.5",
					  "10.0.1.6", "fd00::1", "fd00::2", "10.9.0.1", "10.9.0.2" };
static const char *const accounts[] = { "sa1", "sa2", "sa3" };

struct churn {
	struct harness h;
	struct authz_rng rng;
	uint64_t seed;
	struct sm_authz_tables *tables;	/* the last compiled or updated, for the input of `since` */
	uint64_t since, dests, policies; /* the model's counts it was made at */
	uint8_t node[2][16], was_node[2][16];
	size_t n_node, n_was;
	size_t updated, recompiled, checked_in_batch;
	size_t sources_added; /* sources entries the updates added for new identities */
	size_t dests_changed; /* dests entries the updates wrote or deleted */
	size_t new_sets;      /* updates refused for a local address of a set the tables do not have */
	size_t policy_changes;
};

/* As the model holds it: IPv4 mapped into IPv6. */
static void addr16(const char *text, uint8_t out[16])
{
	memset(out, 0, 16);
	if (inet_pton(AF_INET, text, out + 12) == 1) {
		out[10] = out[11] = 0xff;
		return;
	}
	assert_int_equal(inet_pton(AF_INET6, text, out), 1);
}

static struct sm_authz_tables *compile_now(struct churn *c)
{
	struct sm_model_authz *input;
	struct sm_authz_tables *t = NULL;
	char reason[256];

	assert_int_equal(sm_model_authz_build(c->h.model, (const uint8_t(*)[16])c->node, c->n_node, &input), 0);
	if (sm_authz_compile(input->input, 1, &t, reason, sizeof(reason)))
		fail_msg("compile: %s", reason);
	sm_model_authz_free(input);
	return t;
}

/* Whether the two tables give the source address the same answer at every destination of want, on a port
 * the policy names and one it does not. */
static bool same_verdicts(const struct sm_authz_tables *got, const struct sm_authz_tables *want, const uint8_t src[16])
{
	static const uint16_t ports[] = { 80, 12345 };

	for (size_t d = 0; d < want->n_dests; d++) {
		for (size_t p = 0; p < sizeof(ports) / sizeof(ports[0]); p++) {
			struct sm_authz_verdict a = { 0 }, b = { 0 };
			int ra = sm_authz_tables_lookup(got, src, want->dest_keys[d].addr, ports[p], &a);
			int rb = sm_authz_tables_lookup(want, src, want->dest_keys[d].addr, ports[p], &b);

			if (ra != rb || memcmp(&a, &b, sizeof(a)))
				return false;
		}
	}
	return true;
}

/* The identities, and what each source is let reach: an identity that is new to the tables updated
 * gets its class without a compilation (sometimes with a sources entry added). */
static void same_idents(struct churn *c, const struct sm_authz_tables *got, const struct sm_authz_tables *want,
			const char *when)
{
	bool same = got->n_idents == want->n_idents;

	for (size_t i = 0; same && i < got->n_idents; i++)
		same = !memcmp(got->ident_keys[i].addr, want->ident_keys[i].addr, 16) &&
		       got->ident_values[i].identity == want->ident_values[i].identity;
	if (!same)
		fail_msg("AUTHZ_SEED=%llu, %s: updated idents (%zu) differ from a whole compilation's (%zu)",
			 (unsigned long long)c->seed, when, got->n_idents, want->n_idents);
	for (size_t i = 0; i < got->n_idents; i++)
		if (!same_verdicts(got, want, got->ident_keys[i].addr))
			fail_msg("AUTHZ_SEED=%llu, %s: the updated tables' verdicts for source %zu differ from a whole "
				 "compilation's", (unsigned long long)c->seed, when, i);
	for (size_t d = 0; d < want->n_dests; d++)
		if (d >= got->n_dests || memcmp(got->dest_keys[d].addr, want->dest_keys[d].addr, 16))
			fail_msg("AUTHZ_SEED=%llu, %s: the updated tables guard other addresses (%zu) than a whole "
				 "compilation (%zu)", (unsigned long long)c->seed, when, got->n_dests, want->n_dests);
	if (got->n_dests != want->n_dests)
		fail_msg("AUTHZ_SEED=%llu, %s: the updated tables guard %zu addresses, a whole compilation %zu",
			 (unsigned long long)c->seed, when, got->n_dests, want->n_dests);
	c->sources_added += got->n_added_sources;
	c->dests_changed += got->n_changed_dests;
}

/* The tables updated from c->tables with the model's changes, or NULL when they need a whole compilation. */
static struct sm_authz_tables *update_now(struct churn *c)
{
	struct sm_authz_tables *t = NULL;
	char reason[256];
	int err;

	if (!c->tables || !c->tables->n_dests || c->policies != sm_model_authz_policies_generation(c->h.model))
		return NULL;
	err = sm_model_authz_update(c->h.model, c->tables, c->since, (const uint8_t(*)[16])c->was_node, c->n_was,
				    (const uint8_t(*)[16])c->node, c->n_node,
				    c->dests != sm_model_authz_destinations_generation(c->h.model), &t, reason, sizeof(reason));
	c->new_sets += err == -ESRCH && strstr(reason, "destination ") != NULL;
	if (err == -ESTALE || err == -ESRCH)
		return NULL;
	if (err)
		fail_msg("update: %s", reason);
	return t;
}

/* The admission check: mid-batch, the update must already see the batch being applied. */
static int check_in_batch(void *ctx, const struct sm_model *model, char *reason, size_t size)
{
	struct churn *c = ctx;
	struct sm_authz_tables *updated = update_now(c), *whole;

	(void)model, (void)reason, (void)size;
	if (updated) {
		whole = compile_now(c);
		same_idents(c, updated, whole, "in the admission check");
		c->checked_in_batch++;
		sm_authz_tables_free(whole);
		sm_authz_tables_free(updated);
	}
	return 0;
}

static void after_batch(struct churn *c)
{
	struct sm_authz_tables *updated = update_now(c), *whole = compile_now(c);

	if (updated) {
		same_idents(c, updated, whole, "after a batch");
		c->updated++;
		sm_authz_tables_free(whole);
		whole = updated; /* the next update starts from this one, as the agent's does */
	} else {
		c->recompiled++;
	}
	sm_authz_tables_free(c->tables);
	c->tables = whole;
	c->since = sm_model_authz_generation(c->h.model);
	c->dests = sm_model_authz_destinations_generation(c->h.model);
	c->policies = sm_model_authz_policies_generation(c->h.model);
	memcpy(c->was_node, c->node, sizeof(c->node));
	c->n_was = c->n_node;
}

static void random_batch(struct churn *c)
{
	struct response r;
	char sa_keep[4][8];
	int ops = 1 + (int)authz_below(&c->rng, 3);

	response_init(&r, SM_TYPE_URL_ADDRESS);
	for (int i = 0; i < ops; i++) {
		const char *uid = uids[authz_below(&c->rng, UIDS)];
		if (authz_chance(&c->rng, 25)) {
			response_remove(&r, uid);
			continue;
		}
		struct workload_spec spec = {
			.uid = uid,
			.addresses = { addrs[authz_below(&c->rng, ADDRS)],
				       authz_chance(&c->rng, 30) ? addrs[authz_below(&c->rng, ADDRS)] : NULL },
			.node = authz_chance(&c->rng, 20) ? "node-a" : "node-b",
			.namespace = authz_chance(&c->rng, 50) ? "default" : "other",
		};
		if (spec.addresses[1] && !strcmp(spec.addresses[0], spec.addresses[1]))
			spec.addresses[1] = NULL;
		Istio__Workload__Workload *w = workload_from(&r, &spec);
		snprintf(sa_keep[i], sizeof(sa_keep[i]), "%s", accounts[authz_below(&c->rng, 3)]);
		w->service_account = response_keep(&r, strdup(sa_keep[i]));
		response_add_workload_msg(&r, w, "v1");
	}
	if (authz_chance(&c->rng, 8)) /* undone: a map write fails */
		c->h.writer.fail_after = c->h.writer.ops_applied + 1;
	sm_rejections_clear(&c->h.rejections);
	assert_int_equal(sm_model_apply(c->h.model, &r.msg, &c->h.writer.writer, &c->h.rejections), 0);
	c->h.writer.fail_after = 0;
	response_free(&r);
}

static void apply_policy_and_local(struct churn *c)
{
	struct workload_spec local = { .uid = "local", .addresses = { "10.0.0.10" }, .node = "node-a",
				       .namespace = "default" };
	struct response r;

	response_init(&r, SM_TYPE_URL_AUTHORIZATION);
	response_add_allow_from_namespace(&r, "default", "allow-default", "default");
	response_add_policy_from_namespace(&r, "other", "deny-default", ISTIO__SECURITY__ACTION__DENY, "default");
	apply_ok(&c->h, &r);
	apply_workloads(&c->h, &local, 1);
}

/* allow-default let in another namespace: a policy changed, which compiles whole. */
static void change_policy(struct churn *c)
{
	struct response r;

	response_init(&r, SM_TYPE_URL_AUTHORIZATION);
	response_add_allow_from_namespace(&r, "default", "allow-default", c->policy_changes++ % 2 ? "default" : "other");
	apply_ok(&c->h, &r);
}

static void updated_idents_equal_whole_compilations(void **state)
{
	struct churn c = { .seed = 0 };
	const char *seed_text = getenv("AUTHZ_SEED");

	(void)state;
	c.seed = seed_text && *seed_text ? strtoull(seed_text, NULL, 0) : (uint64_t)time(NULL);
	c.rng.state = c.seed;
	harness_open(&c.h, "node-a", NULL);
	apply_policy_and_local(&c);
	sm_model_set_authz_check(c.h.model, check_in_batch, &c);
	after_batch(&c);
	for (int step = 0; step < STEPS; step++) {
		if (authz_chance(&c.rng, 10)) { /* the node's addresses change: none, or one or two of the pool */
			c.n_node = authz_below(&c.rng, 3);
			for (size_t i = 0; i < c.n_node; i++)
				addr16(addrs[authz_below(&c.rng, ADDRS)], c.node[i]);
		}
		if (authz_chance(&c.rng, 3))
			change_policy(&c);
		else
			random_batch(&c);
		after_batch(&c);
	}
	printf("# AUTHZ_SEED=%llu: %zu batches updated address by address, %zu compiled whole, %zu admission checks "
	       "updated, %zu sources entries added, %zu dests entries changed; %zu policy changes, %zu refused for a "
	       "new destination set\n",
	       (unsigned long long)c.seed, c.updated, c.recompiled, c.checked_in_batch, c.sources_added, c.dests_changed,
	       c.policy_changes, c.new_sets);
	assert_true(c.updated > STEPS / 3 && c.recompiled > 10 && c.checked_in_batch > STEPS / 4 && c.sources_added > 0 &&
		    c.dests_changed > 10 && c.new_sets > 0);
	sm_authz_tables_free(c.tables);
	harness_close(&c.h);
}

/* A batch of more addresses than the model lists (a full push) leaves an update from before it to the
 * whole input (-ESTALE); from after it, nothing is listed. */
static void a_full_push_is_not_listed(void **state)
{
	enum { WORKLOADS = 9000 };
	struct harness h;
	struct response r;
	struct sm_authz_source *set;
	uint8_t(*unset)[16];
	size_t n_set, n_unset;
	uint64_t before;
	char uid[WORKLOADS][16], ip[WORKLOADS][2][24];

	(void)state;
	harness_open(&h, "node-a", NULL);
	before = sm_model_authz_generation(h.model);
	response_init(&r, SM_TYPE_URL_ADDRESS);
	for (int i = 0; i < WORKLOADS; i++) {
		snprintf(uid[i], sizeof(uid[i]), "w%d", i);
		snprintf(ip[i][0], sizeof(ip[i][0]), "10.1.%d.%d", i / 256, i % 256);
		snprintf(ip[i][1], sizeof(ip[i][1]), "fd00::%x", i);
		struct workload_spec spec = { .uid = uid[i], .addresses = { ip[i][0], ip[i][1] }, .node = "node-b" };
		response_add_workload(&r, &spec, "v1");
	}
	apply_ok(&h, &r);
	assert_int_equal(sm_model_authz_source_changes(h.model, before, NULL, 0, NULL, 0, &set, &n_set, &unset, &n_unset),
			 -ESTALE);
	assert_int_equal(sm_model_authz_source_changes(h.model, sm_model_authz_generation(h.model), NULL, 0, NULL, 0,
						       &set, &n_set, &unset, &n_unset),
			 0);
	assert_int_equal(n_set + n_unset, 0);
	free(set);
	free(unset);
	harness_close(&h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(updated_idents_equal_whole_compilations),
		cmocka_unit_test(a_full_push_is_not_listed),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
