/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Random authorization worlds for differential tests: policies of every field kind (and their not_
 * twins, every StringMatch kind, empty rules, clauses and matches, dry-run), workload and node sources
 * (some addresses listed twice), destinations with overlapping policy lists, and connections among them.
 * Values come from small pools so that lists, prefixes and identities collide. Deterministic per seed.
 */
#ifndef SOCKMESH_TEST_AUTHZ_RANDOM_H
#define SOCKMESH_TEST_AUTHZ_RANDOM_H

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "authz/authz.h"

struct authz_rng {
	uint64_t state;
};

/* splitmix64 */
static inline uint64_t authz_rand(struct authz_rng *r)
{
	uint64_t z = (r->state += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static inline uint32_t authz_below(struct authz_rng *r, uint32_t n)
{
	return n ? (uint32_t)(authz_rand(r) % n) : 0;
}

static inline bool authz_chance(struct authz_rng *r, uint32_t percent)
{
	return authz_below(r, 100) < percent;
}

static inline void *authz_xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size);

	if (!p)
		abort();
	return p;
}

static inline char *authz_xstrdup(const char *s)
{
	char *p = strdup(s);

	if (!p)
		abort();
	return p;
}

/* ---- pools ---- */

static const char *const authz_pool_tds[] = { "cluster.local", "other.td" };
static const char *const authz_pool_namespaces[] = { "default", "ns1", "ns2", "" };
static const char *const authz_pool_accounts[] = { "default", "sa1", "sa2" };
static const uint16_t authz_pool_ports[] = { 80, 443, 8080, 9090, 1, 65535 };
#define AUTHZ_POOL_N(a) (sizeof(a) / sizeof((a)[0]))

/* An address: IPv4 (mapped) in 10.{0,1}.{0..3}.{0..7} or 192.168.{0,1}.{0..3}, or IPv6 fd00:{0,1}::{0..7}. */
static inline void authz_random_addr(struct authz_rng *r, uint8_t out[16])
{
	uint32_t kind = authz_below(r, 4);

	memset(out, 0, 16);
	if (kind == 2) {
		out[0] = 0xfd;
		out[3] = (uint8_t)authz_below(r, 2);
		out[15] = (uint8_t)authz_below(r, 8);
		return;
	}
	out[10] = out[11] = 0xff;
	if (kind == 3) {
		out[12] = 192;
		out[13] = 168;
		out[14] = (uint8_t)authz_below(r, 2);
		out[15] = (uint8_t)authz_below(r, 4);
	} else {
		out[12] = 10;
		out[13] = (uint8_t)authz_below(r, 2);
		out[14] = (uint8_t)authz_below(r, 4);
		out[15] = (uint8_t)authz_below(r, 8);
	}
}

static inline void authz_random_cidr(struct authz_rng *r, struct sm_authz_cidr *c)
{
	static const uint8_t v4[] = { 0, 8, 15, 16, 24, 29, 30, 32 };
	static const uint8_t v6[] = { 0, 16, 32, 64, 126, 128 };

	authz_random_addr(r, c->addr);
	if (c->addr[10] == 0xff)
		c->prefix_len = (uint8_t)(96 + v4[authz_below(r, AUTHZ_POOL_N(v4))]);
	else
		c->prefix_len = v6[authz_below(r, AUTHZ_POOL_N(v6))];
	if (authz_chance(r, 3))
		c->prefix_len = (uint8_t)authz_below(r, 129); /* anything, across the mapped prefix */
}

static inline void authz_random_identity(struct authz_rng *r, struct sm_authz_identity *id)
{
	id->trust_domain = authz_pool_tds[authz_below(r, AUTHZ_POOL_N(authz_pool_tds))];
	id->namespace = authz_pool_namespaces[authz_below(r, AUTHZ_POOL_N(authz_pool_namespaces) - 1 +
							   authz_chance(r, 10))];
	id->service_account = authz_pool_accounts[authz_below(r, AUTHZ_POOL_N(authz_pool_accounts))];
}

static inline void authz_random_string(struct authz_rng *r, enum sm_authz_field f, struct sm_authz_string *s)
{
	static const char *const principal_values[] = { "cluster.local/ns/ns1/sa/sa1", "cluster.local/ns/default/sa/default",
							"other.td/ns/ns2/sa/sa2", "cluster.local/ns/ns1", "cluster.local/",
							"/sa/sa1", "sa2", "", "spiffe://cluster.local/ns/ns1/sa/sa1" };
	static const char *const namespace_values[] = { "default", "ns1", "ns2", "ns", "1", "", "de" };
	const char *value;

	s->kind = (uint8_t)authz_below(r, 4);
	if (f == SM_AUTHZ_PRINCIPALS)
		value = principal_values[authz_below(r, AUTHZ_POOL_N(principal_values))];
	else
		value = namespace_values[authz_below(r, AUTHZ_POOL_N(namespace_values))];
	s->value = authz_xstrdup(s->kind == SM_AUTHZ_PRESENCE ? "" : value);
}

static inline void authz_random_list(struct authz_rng *r, enum sm_authz_field f, struct sm_authz_list *l)
{
	l->n = 1 + authz_below(r, 3);
	switch (f) {
	case SM_AUTHZ_SOURCE_IPS:
	case SM_AUTHZ_DESTINATION_IPS:
		l->cidrs = authz_xcalloc(l->n, sizeof(*l->cidrs));
		for (size_t i = 0; i < l->n; i++)
			authz_random_cidr(r, &l->cidrs[i]);
		break;
	case SM_AUTHZ_DESTINATION_PORTS:
		l->ports = authz_xcalloc(l->n, sizeof(*l->ports));
		for (size_t i = 0; i < l->n; i++)
			l->ports[i] = authz_chance(r, 90) ? authz_pool_ports[authz_below(r, AUTHZ_POOL_N(authz_pool_ports))]
							  : (uint16_t)(1 + authz_below(r, 65535));
		break;
	case SM_AUTHZ_PRINCIPALS:
	case SM_AUTHZ_NAMESPACES:
		l->strings = authz_xcalloc(l->n, sizeof(*l->strings));
		for (size_t i = 0; i < l->n; i++)
			authz_random_string(r, f, &l->strings[i]);
		break;
	case SM_AUTHZ_SERVICE_ACCOUNTS:
		l->accounts = authz_xcalloc(l->n, sizeof(*l->accounts));
		for (size_t i = 0; i < l->n; i++) {
			l->accounts[i].namespace =
				authz_xstrdup(authz_pool_namespaces[authz_below(r, AUTHZ_POOL_N(authz_pool_namespaces))]);
			l->accounts[i].name =
				authz_xstrdup(authz_pool_accounts[authz_below(r, AUTHZ_POOL_N(authz_pool_accounts))]);
		}
		break;
	default:
		break;
	}
}

static inline void authz_list_free(enum sm_authz_field f, struct sm_authz_list *l)
{
	for (size_t i = 0; i < l->n; i++) {
		if (f == SM_AUTHZ_PRINCIPALS || f == SM_AUTHZ_NAMESPACES)
			free(l->strings[i].value);
		if (f == SM_AUTHZ_SERVICE_ACCOUNTS) {
			free(l->accounts[i].namespace);
			free(l->accounts[i].name);
		}
	}
	free(l->cidrs); /* the union's one pointer */
}

/* Each field kind present with some chance, as a positive list, a negative one or both; some matches empty. */
static inline void authz_random_match(struct authz_rng *r, struct sm_authz_match *m)
{
	uint32_t density = authz_below(r, 4) ? 20 : 0;

	for (int f = 0; f < SM_AUTHZ_FIELD_COUNT; f++) {
		if (authz_chance(r, density))
			authz_random_list(r, f, &m->positive[f]);
		if (authz_chance(r, density / 2))
			authz_random_list(r, f, &m->negative[f]);
	}
}

static inline uint32_t authz_random_count(struct authz_rng *r)
{
	return authz_chance(r, 10) ? 0 : 1 + authz_below(r, 3);
}

/* A policy keyed "nsK/pI"; its hash from sm_authz_policy_hash. */
static inline struct sm_authz_policy *authz_random_policy(struct authz_rng *r, unsigned index)
{
	struct sm_authz_policy *p = authz_xcalloc(1, sizeof(*p));
	char key[64];

	snprintf(key, sizeof(key), "ns%u/p%u", index % 3, index);
	p->key = authz_xstrdup(key);
	p->namespace = authz_xstrdup(strtok(key, "/"));
	p->name = authz_xstrdup(strchr(p->key, '/') + 1);
	p->hash = sm_authz_policy_hash(p->key);
	p->action = authz_chance(r, 40) ? SM_AUTHZ_DENY : SM_AUTHZ_ALLOW;
	p->dry_run = authz_chance(r, 20);
	p->scope = (uint8_t)authz_below(r, 3);
	p->n_rules = authz_random_count(r);
	p->rules = authz_xcalloc(p->n_rules, sizeof(*p->rules));
	for (size_t i = 0; i < p->n_rules; i++) {
		struct sm_authz_rule *rule = &p->rules[i];

		rule->n_clauses = authz_random_count(r);
		rule->clauses = authz_xcalloc(rule->n_clauses, sizeof(*rule->clauses));
		for (size_t k = 0; k < rule->n_clauses; k++) {
			struct sm_authz_clause *c = &rule->clauses[k];

			c->n_matches = authz_random_count(r);
			c->matches = authz_xcalloc(c->n_matches, sizeof(*c->matches));
			for (size_t m = 0; m < c->n_matches; m++)
				authz_random_match(r, &c->matches[m]);
		}
	}
	return p;
}

static inline void authz_random_policy_free(struct sm_authz_policy *p)
{
	for (size_t i = 0; i < p->n_rules; i++) {
		for (size_t k = 0; k < p->rules[i].n_clauses; k++) {
			struct sm_authz_clause *c = &p->rules[i].clauses[k];

			for (size_t m = 0; m < c->n_matches; m++)
				for (int f = 0; f < SM_AUTHZ_FIELD_COUNT; f++) {
					authz_list_free(f, &c->matches[m].positive[f]);
					authz_list_free(f, &c->matches[m].negative[f]);
				}
			free(c->matches);
		}
		free(p->rules[i].clauses);
	}
	free(p->rules);
	free(p->key);
	free(p->name);
	free(p->namespace);
	free(p);
}

/* ---- a world: policies, sources, destinations ---- */

struct authz_world {
	struct sm_authz_policy **policies;
	size_t n_policies;
	struct sm_authz_source *sources;
	size_t n_sources;
	struct sm_authz_destination *destinations;
	size_t n_destinations;
};

static inline void authz_random_world(struct authz_rng *r, struct authz_world *w)
{
	w->n_policies = authz_below(r, 7);
	w->policies = authz_xcalloc(w->n_policies, sizeof(*w->policies));
	for (size_t i = 0; i < w->n_policies; i++)
		w->policies[i] = authz_random_policy(r, (unsigned)i);

	w->n_sources = authz_below(r, 24);
	w->sources = authz_xcalloc(w->n_sources, sizeof(*w->sources));
	for (size_t i = 0; i < w->n_sources; i++) {
		authz_random_addr(r, w->sources[i].addr);
		authz_random_identity(r, &w->sources[i].identity);
		w->sources[i].node = authz_chance(r, 8);
	}

	w->n_destinations = authz_below(r, 6);
	w->destinations = authz_xcalloc(w->n_destinations, sizeof(*w->destinations));
	for (size_t i = 0; i < w->n_destinations; i++) {
		struct sm_authz_destination *d = &w->destinations[i];
		const struct sm_authz_policy **list = authz_xcalloc(w->n_policies, sizeof(*list));

		authz_random_addr(r, d->addr);
		if (i && authz_chance(r, 30)) { /* the same list as another destination */
			const struct sm_authz_destination *o = &w->destinations[authz_below(r, (uint32_t)i)];

			memcpy(list, o->policies, o->n_policies * sizeof(*list));
			d->n_policies = o->n_policies;
		} else {
			for (size_t k = 0; k < w->n_policies; k++)
				if (authz_chance(r, 60))
					list[d->n_policies++] = w->policies[k];
			for (size_t k = d->n_policies; k > 1; k--) { /* in any order */
				size_t j = authz_below(r, (uint32_t)k);
				const struct sm_authz_policy *t = list[k - 1];

				list[k - 1] = list[j];
				list[j] = t;
			}
		}
		d->policies = list;
	}
}

static inline void authz_world_free(struct authz_world *w)
{
	for (size_t i = 0; i < w->n_policies; i++)
		authz_random_policy_free(w->policies[i]);
	for (size_t i = 0; i < w->n_destinations; i++)
		free((void *)w->destinations[i].policies);
	free(w->policies);
	free(w->sources);
	free(w->destinations);
	memset(w, 0, sizeof(*w));
}

/* The first listing of addr among the sources (the one the tables hold), or NULL. */
static inline const struct sm_authz_source *authz_world_source(const struct authz_world *w, const uint8_t addr[16])
{
	for (size_t i = 0; i < w->n_sources; i++)
		if (!memcmp(w->sources[i].addr, addr, 16))
			return &w->sources[i];
	return NULL;
}

static inline const struct sm_authz_destination *authz_world_destination(const struct authz_world *w,
									  const uint8_t addr[16])
{
	for (size_t i = 0; i < w->n_destinations; i++)
		if (!memcmp(w->destinations[i].addr, addr, 16))
			return &w->destinations[i];
	return NULL;
}

/* A connection: mostly from a source and to a destination of the world, to a pool port or any (never 0). */
static inline void authz_random_connection(struct authz_rng *r, const struct authz_world *w,
					   struct sm_authz_connection *conn)
{
	const struct sm_authz_source *s;

	memset(conn, 0, sizeof(*conn));
	if (w->n_sources && authz_chance(r, 70))
		memcpy(conn->src, w->sources[authz_below(r, (uint32_t)w->n_sources)].addr, 16);
	else
		authz_random_addr(r, conn->src);
	if (w->n_destinations && authz_chance(r, 85))
		memcpy(conn->dst, w->destinations[authz_below(r, (uint32_t)w->n_destinations)].addr, 16);
	else
		authz_random_addr(r, conn->dst);
	conn->dst_port = authz_chance(r, 80) ? authz_pool_ports[authz_below(r, AUTHZ_POOL_N(authz_pool_ports))]
					     : (uint16_t)(1 + authz_below(r, 65535));
	s = authz_world_source(w, conn->src);
	conn->src_identity = s && !s->node ? &s->identity : NULL;
}

/* What the tables must say: 0 unguarded, -ENOENT from the node, else 1 and the evaluator's decision. */
static inline int authz_world_expect(const struct authz_world *w, const struct sm_authz_connection *conn,
				     struct sm_authz_decision *out)
{
	const struct sm_authz_source *s = authz_world_source(w, conn->src);
	const struct sm_authz_destination *d;

	d = authz_world_destination(w, conn->dst);
	if (!d)
		return 0;
	if (s && s->node)
		return -ENOENT;
	sm_authz_evaluate(d->policies, d->n_policies, conn, out);
	return 1;
}

/* The tables' answer for conn (sm_authz_tables_lookup) equals the evaluator's (action, reason, policy, dry-run
 * action, reason and policy); false, and why, when not. */
static inline bool authz_tables_agree(const struct authz_world *w, const struct sm_authz_tables *t,
			 const struct sm_authz_connection *conn, char *why, size_t why_size)
{
	struct sm_authz_decision want;
	struct sm_authz_verdict got = { 0 };
	int want_rc = authz_world_expect(w, conn, &want);
	int rc = sm_authz_tables_lookup(t, conn->src, conn->dst, conn->dst_port, &got);
	uint64_t want_policy, want_dry;

	if (rc != want_rc) {
		snprintf(why, why_size, "lookup returned %d, expected %d", rc, want_rc);
		return false;
	}
	if (rc != 1)
		return true;
	want_policy = want.policy ? want.policy->hash : 0;
	want_dry = want.dry_run_policy ? want.dry_run_policy->hash : 0;
	if (got.action != want.action || got.reason != want.reason || got.policy != want_policy ||
	    got.dry_run_action != want.dry_run_action || got.dry_run_reason != want.dry_run_reason ||
	    got.dry_run_policy != want_dry) {
		snprintf(why, why_size,
			 "tables: action %u reason %u policy %016llx dry-run %u/%u/%016llx; evaluator: %u %u %016llx %u/%u/%016llx",
			 got.action, got.reason, (unsigned long long)got.policy, got.dry_run_action, got.dry_run_reason,
			 (unsigned long long)got.dry_run_policy, want.action, want.reason,
			 (unsigned long long)want_policy, want.dry_run_action, want.dry_run_reason,
			 (unsigned long long)want_dry);
		return false;
	}
	return true;
}

#endif
