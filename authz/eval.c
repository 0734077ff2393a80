/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The reference evaluator: ztunnel's RBAC (src/rbac.rs, src/state.rs) written out plainly, the oracle
 * every compiled table and kernel verdict is checked against. Clarity over speed.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "authz/authz.h"

/* ---- hashes ---- */

#define FNV_OFFSET 0xcbf29ce484222325ULL
#define FNV_PRIME 0x100000001b3ULL

static uint64_t fnv1a(uint64_t hash, const char *text)
{
	for (const unsigned char *p = (const unsigned char *)text; *p; p++)
		hash = (hash ^ *p) * FNV_PRIME;
	return hash;
}

uint64_t sm_authz_policy_hash(const char *key)
{
	uint64_t hash = fnv1a(FNV_OFFSET, key);

	return hash ? hash : 1; /* 0 means "no policy" in a verdict */
}

/* The hash of the principal text, fed piece by piece so that no length limit applies. */
uint64_t sm_authz_identity_hash(const struct sm_authz_identity *identity)
{
	uint64_t hash = fnv1a(FNV_OFFSET, identity->trust_domain);

	hash = fnv1a(hash, "/ns/");
	hash = fnv1a(hash, identity->namespace);
	hash = fnv1a(hash, "/sa/");
	hash = fnv1a(hash, identity->service_account);
	/* The two values the maps reserve move to their neighbours. */
	if (hash == SM_AUTHZ_IDENTITY_NONE)
		return 1;
	if (hash == SM_AUTHZ_IDENTITY_NODE)
		return SM_AUTHZ_IDENTITY_NODE - 1;
	return hash;
}

int sm_authz_principal(const struct sm_authz_identity *identity, char *buf, size_t size)
{
	int n = snprintf(buf, size, "%s/ns/%s/sa/%s", identity->trust_domain, identity->namespace,
			 identity->service_account);

	if (n < 0 || (size_t)n >= size)
		return -ENAMETOOLONG;
	return 0;
}

/* ---- one value against one list entry ---- */

/* Containment over all 16 bytes: host bits of the entry are ignored, as IpNet::contains does. */
static bool cidr_contains(const struct sm_authz_cidr *cidr, const uint8_t addr[16])
{
	unsigned bits = cidr->prefix_len < 128 ? cidr->prefix_len : 128;
	unsigned whole = bits / 8, rest = bits % 8;

	if (memcmp(cidr->addr, addr, whole) != 0)
		return false;
	if (rest == 0)
		return true;
	uint8_t mask = (uint8_t)(0xff << (8 - rest));
	return (cidr->addr[whole] & mask) == (addr[whole] & mask);
}

/* A value made of pieces (the principal is "TD" "/ns/" "NS" "/sa/" "SA"), compared without joining them, so
 * that no length limit applies to the identity. */
struct text {
	const char *part[5];
	size_t len[5];
	size_t n_parts, total;
};

static void text_init(struct text *t, const char *const *parts, size_t n)
{
	t->n_parts = n;
	t->total = 0;
	for (size_t i = 0; i < n; i++) {
		t->part[i] = parts[i];
		t->len[i] = strlen(parts[i]);
		t->total += t->len[i];
	}
}

/* Whether the n bytes of t from offset off equal s (off + n <= t->total). */
static bool text_equals_at(const struct text *t, size_t off, const char *s, size_t n)
{
	for (size_t i = 0; i < t->n_parts && n > 0; i++) {
		if (off >= t->len[i]) {
			off -= t->len[i];
			continue;
		}
		size_t k = t->len[i] - off < n ? t->len[i] - off : n;
		if (memcmp(t->part[i] + off, s, k) != 0)
			return false;
		s += k;
		n -= k;
		off = 0;
	}
	return true;
}

/* Case-sensitive, as ztunnel's StringMatch. */
static bool string_matches(const struct sm_authz_string *m, const struct text *t)
{
	size_t mlen = strlen(m->value);

	switch (m->kind) {
	case SM_AUTHZ_EXACT:
		return t->total == mlen && text_equals_at(t, 0, m->value, mlen);
	case SM_AUTHZ_PREFIX:
		return t->total >= mlen && text_equals_at(t, 0, m->value, mlen);
	case SM_AUTHZ_SUFFIX:
		return t->total >= mlen && text_equals_at(t, t->total - mlen, m->value, mlen);
	case SM_AUTHZ_PRESENCE:
		return t->total > 0;
	}
	return false;
}

/* What a connection offers to the identity fields. */
struct subject {
	const struct sm_authz_connection *conn;
	const struct sm_authz_identity *id; /* NULL: none, and every identity entry fails */
	struct text principal, namespace;
};

/* Whether any entry of list matches: the "any" of one field kind. With no identity, no identity entry does. */
static bool any_matches(enum sm_authz_field field, const struct sm_authz_list *list, const struct subject *s)
{
	for (size_t i = 0; i < list->n; i++) {
		switch (field) {
		case SM_AUTHZ_SOURCE_IPS:
			if (cidr_contains(&list->cidrs[i], s->conn->src))
				return true;
			break;
		case SM_AUTHZ_DESTINATION_IPS:
			if (cidr_contains(&list->cidrs[i], s->conn->dst))
				return true;
			break;
		case SM_AUTHZ_DESTINATION_PORTS:
			if (list->ports[i] == s->conn->dst_port)
				return true;
			break;
		case SM_AUTHZ_PRINCIPALS:
			if (s->id && string_matches(&list->strings[i], &s->principal))
				return true;
			break;
		case SM_AUTHZ_NAMESPACES:
			if (s->id && string_matches(&list->strings[i], &s->namespace))
				return true;
			break;
		case SM_AUTHZ_SERVICE_ACCOUNTS:
			if (s->id && strcmp(list->accounts[i].namespace, s->id->namespace) == 0 &&
			    strcmp(list->accounts[i].name, s->id->service_account) == 0)
				return true;
			break;
		case SM_AUTHZ_FIELD_COUNT:
			break;
		}
	}
	return false;
}

/* ---- the structure: match, clause, rule, policy ---- */

static bool match_is_empty(const struct sm_authz_match *m)
{
	for (int f = 0; f < SM_AUTHZ_FIELD_COUNT; f++)
		if (m->positive[f].n || m->negative[f].n)
			return false;
	return true;
}

/* Kinds AND; per kind (positive empty or one matches) and no negative one matches. Empty: skipped. */
static bool match_matches(const struct sm_authz_match *m, const struct subject *s)
{
	if (match_is_empty(m))
		return false;
	for (int f = 0; f < SM_AUTHZ_FIELD_COUNT; f++) {
		if (m->positive[f].n && !any_matches(f, &m->positive[f], s))
			return false;
		if (any_matches(f, &m->negative[f], s))
			return false;
	}
	return true;
}

/* Matches OR; zero matches: true, witnessed as SIZE_MAX. */
static bool clause_matches(const struct sm_authz_clause *c, const struct subject *s, size_t *which)
{
	*which = SIZE_MAX;
	if (c->n_matches == 0)
		return true;
	for (size_t i = 0; i < c->n_matches; i++) {
		if (match_matches(&c->matches[i], s)) {
			*which = i;
			return true;
		}
	}
	return false;
}

/* Clauses AND; zero clauses: true. The witness holds at most SM_AUTHZ_MAX_CLAUSES (what parse admits). */
static bool rule_matches(const struct sm_authz_rule *r, const struct subject *s, struct sm_authz_witness *w)
{
	w->n_clauses = 0;
	for (size_t i = 0; i < r->n_clauses; i++) {
		size_t which;

		if (!clause_matches(&r->clauses[i], s, &which))
			return false;
		if (w->n_clauses < SM_AUTHZ_MAX_CLAUSES)
			w->clause_matches[w->n_clauses++] = which;
	}
	return true;
}

static void subject_init(struct subject *s, const struct sm_authz_connection *conn)
{
	*s = (struct subject){ .conn = conn, .id = conn->src_identity };
	if (s->id) {
		const char *principal[] = { s->id->trust_domain, "/ns/", s->id->namespace, "/sa/",
					    s->id->service_account };

		text_init(&s->principal, principal, 5);
		text_init(&s->namespace, &s->id->namespace, 1);
	}
}

/* Rules OR; zero rules: never matches. */
static bool policy_matches(const struct sm_authz_policy *p, const struct subject *s, struct sm_authz_witness *w)
{
	for (size_t i = 0; i < p->n_rules; i++) {
		if (rule_matches(&p->rules[i], s, w)) {
			w->rule = i;
			return true;
		}
	}
	return false;
}

bool sm_authz_policy_matches(const struct sm_authz_policy *policy, const struct sm_authz_connection *conn,
			     struct sm_authz_witness *witness)
{
	struct subject s;
	struct sm_authz_witness w = { 0 };

	subject_init(&s, conn);
	if (!policy_matches(policy, &s, &w))
		return false;
	if (witness)
		*witness = w;
	return true;
}

/* ---- the decision ---- */

struct verdict {
	uint8_t action, reason;
	const struct sm_authz_policy *policy;
	struct sm_authz_witness witness;
};

/* ztunnel's order (state.rs): a matching DENY, then no ALLOW at all, then a matching ALLOW, else denied.
 * with_dry_run: the dry-run policies count as enforced. The first policy in the given order decides. */
static void decide(const struct sm_authz_policy *const *policies, size_t n, const struct subject *s,
		   bool with_dry_run, struct verdict *v)
{
	bool any_allow = false;

	memset(v, 0, sizeof(*v));
	for (size_t i = 0; i < n; i++) {
		const struct sm_authz_policy *p = policies[i];

		if ((with_dry_run || !p->dry_run) && p->action == SM_AUTHZ_DENY && policy_matches(p, s, &v->witness)) {
			v->action = SM_AUTHZ_DENY;
			v->reason = SM_AUTHZ_DENY_MATCHED;
			v->policy = p;
			return;
		}
	}
	for (size_t i = 0; i < n; i++) {
		const struct sm_authz_policy *p = policies[i];

		if ((!with_dry_run && p->dry_run) || p->action != SM_AUTHZ_ALLOW)
			continue;
		any_allow = true;
		if (policy_matches(p, s, &v->witness)) {
			v->action = SM_AUTHZ_ALLOW;
			v->reason = SM_AUTHZ_ALLOW_MATCHED;
			v->policy = p;
			return;
		}
	}
	memset(&v->witness, 0, sizeof(v->witness));
	v->action = any_allow ? SM_AUTHZ_DENY : SM_AUTHZ_ALLOW;
	v->reason = any_allow ? SM_AUTHZ_NO_ALLOW_MATCHED : SM_AUTHZ_NO_ALLOW_POLICIES;
}

void sm_authz_evaluate(const struct sm_authz_policy *const *policies, size_t n,
		       const struct sm_authz_connection *conn, struct sm_authz_decision *out)
{
	struct subject s;
	struct verdict enforced, all;

	subject_init(&s, conn);
	decide(policies, n, &s, false, &enforced);
	decide(policies, n, &s, true, &all);
	*out = (struct sm_authz_decision){
		.action = enforced.action,
		.reason = enforced.reason,
		.policy = enforced.policy,
		.witness = enforced.witness,
		.dry_run_action = all.action,
		.dry_run_reason = all.reason,
		/* Only a dry-run policy deciding is news; an enforced one deciding both is already in policy. */
		.dry_run_policy = all.policy && all.policy->dry_run ? all.policy : NULL,
	};
}
