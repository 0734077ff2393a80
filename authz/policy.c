/* SPDX-License-Identifier: Apache-2.0 */
/*
 * istio.security.Authorization → struct sm_authz_policy. ztunnel drops an invalid entry silently (which can
 * widen a match: a list that loses all its entries stops constraining); sockmesh rejects the whole policy
 * instead and says where, so that the NACK names it and nothing is enforced half (fail closed).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "authz/authz.h"

struct parser {
	char *reason;
	size_t reason_size;
	char where[96]; /* "rule 2 clause 0 match 1", or "" at the policy's level */
};

static int reject(struct parser *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Writes "<where>: <why>" into the reason; returns -EINVAL. */
static int reject(struct parser *p, const char *fmt, ...)
{
	va_list ap;
	int n = 0;

	if (p->where[0])
		n = snprintf(p->reason, p->reason_size, "%s: ", p->where);
	if (n >= 0 && (size_t)n < p->reason_size) {
		va_start(ap, fmt);
		vsnprintf(p->reason + n, p->reason_size - (size_t)n, fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

static int too_many(struct parser *p, size_t n, const char *what, size_t max)
{
	return reject(p, "has %zu %s, more than the %zu sockmesh holds", n, what, max);
}

/* A copy of text, which may be at most SM_AUTHZ_MAX_STRING bytes; what names it in the reason. */
static int copy_string(struct parser *p, const char *text, const char *what, char **out)
{
	size_t len;

	text = text ? text : "";
	len = strnlen(text, SM_AUTHZ_MAX_STRING + 1);
	if (len > SM_AUTHZ_MAX_STRING)
		return reject(p, "%s: longer than the %d bytes sockmesh holds", what, SM_AUTHZ_MAX_STRING);
	*out = strdup(text);
	return *out ? 0 : -ENOMEM;
}

/* The list's array of n entries of size bytes; none for an empty list. */
static int list_alloc(struct parser *p, struct sm_authz_list *list, size_t n, size_t size, const char *name)
{
	void *entries;

	if (n > SM_AUTHZ_MAX_VALUES)
		return reject(p, "%s: has %zu entries, more than the %d sockmesh holds", name, n, SM_AUTHZ_MAX_VALUES);
	if (n == 0)
		return 0;
	entries = calloc(n, size);
	if (!entries)
		return -ENOMEM;
	list->cidrs = entries; /* every member of the union is a pointer to the entries */
	list->n = n;
	return 0;
}

/* IPv4 becomes ::ffff:a.b.c.d with 96 added to its prefix, so that one 16-byte compare serves both. */
static int parse_cidrs(struct parser *p, const char *name, Istio__Security__Address *const *in, size_t n,
		       struct sm_authz_list *out)
{
	int ret = list_alloc(p, out, n, sizeof(*out->cidrs), name);

	for (size_t i = 0; !ret && i < n; i++) {
		const ProtobufCBinaryData *a = &in[i]->address;
		struct sm_authz_cidr *c = &out->cidrs[i];
		size_t bits = a->len * 8;

		if (a->len != 4 && a->len != 16)
			return reject(p, "%s[%zu]: address has %zu bytes, not 4 or 16", name, i, a->len);
		if (in[i]->length > bits)
			return reject(p, "%s[%zu]: prefix length %u is more than the %zu bits of the address", name, i,
				      in[i]->length, bits);
		if (a->len == 4) {
			c->addr[10] = 0xff;
			c->addr[11] = 0xff;
			memcpy(c->addr + 12, a->data, 4);
			c->prefix_len = (uint8_t)(in[i]->length + 96);
		} else {
			memcpy(c->addr, a->data, 16);
			c->prefix_len = (uint8_t)in[i]->length;
		}
	}
	return ret;
}

static int parse_ports(struct parser *p, const char *name, const uint32_t *in, size_t n, struct sm_authz_list *out)
{
	int ret = list_alloc(p, out, n, sizeof(*out->ports), name);

	for (size_t i = 0; !ret && i < n; i++) {
		if (in[i] > 65535)
			return reject(p, "%s[%zu]: %u is not a port (more than 65535)", name, i, in[i]);
		out->ports[i] = (uint16_t)in[i];
	}
	return ret;
}

static int parse_strings(struct parser *p, const char *name, Istio__Security__StringMatch *const *in, size_t n,
			 struct sm_authz_list *out)
{
	int ret = list_alloc(p, out, n, sizeof(*out->strings), name);
	char what[96];

	for (size_t i = 0; !ret && i < n; i++) {
		struct sm_authz_string *s = &out->strings[i];

		snprintf(what, sizeof(what), "%s[%zu]", name, i);
		switch (in[i]->match_type_case) {
		case ISTIO__SECURITY__STRING_MATCH__MATCH_TYPE_EXACT:
			s->kind = SM_AUTHZ_EXACT;
			ret = copy_string(p, in[i]->exact, what, &s->value);
			break;
		case ISTIO__SECURITY__STRING_MATCH__MATCH_TYPE_PREFIX:
			s->kind = SM_AUTHZ_PREFIX;
			ret = copy_string(p, in[i]->prefix, what, &s->value);
			break;
		case ISTIO__SECURITY__STRING_MATCH__MATCH_TYPE_SUFFIX:
			s->kind = SM_AUTHZ_SUFFIX;
			ret = copy_string(p, in[i]->suffix, what, &s->value);
			break;
		case ISTIO__SECURITY__STRING_MATCH__MATCH_TYPE_PRESENCE:
			s->kind = SM_AUTHZ_PRESENCE;
			ret = copy_string(p, "", what, &s->value);
			break;
		default:
			return reject(p, "%s: a StringMatch with no kind (exact, prefix, suffix or presence)", what);
		}
	}
	return ret;
}

static int parse_accounts(struct parser *p, const char *name, Istio__Security__ServiceAccountMatch *const *in,
			  size_t n, struct sm_authz_list *out)
{
	int ret = list_alloc(p, out, n, sizeof(*out->accounts), name);
	char what[96];

	for (size_t i = 0; !ret && i < n; i++) {
		snprintf(what, sizeof(what), "%s[%zu].namespace", name, i);
		ret = copy_string(p, in[i]->namespace_, what, &out->accounts[i].namespace);
		if (ret)
			break;
		snprintf(what, sizeof(what), "%s[%zu].serviceAccount", name, i);
		ret = copy_string(p, in[i]->serviceaccount, what, &out->accounts[i].name);
	}
	return ret;
}

static int parse_match(struct parser *p, const Istio__Security__Match *m, struct sm_authz_match *out)
{
	struct sm_authz_list *pos = out->positive, *neg = out->negative;
	int ret;

	if ((ret = parse_cidrs(p, "source_ips", m->source_ips, m->n_source_ips, &pos[SM_AUTHZ_SOURCE_IPS])) ||
	    (ret = parse_cidrs(p, "not_source_ips", m->not_source_ips, m->n_not_source_ips,
			       &neg[SM_AUTHZ_SOURCE_IPS])) ||
	    (ret = parse_cidrs(p, "destination_ips", m->destination_ips, m->n_destination_ips,
			       &pos[SM_AUTHZ_DESTINATION_IPS])) ||
	    (ret = parse_cidrs(p, "not_destination_ips", m->not_destination_ips, m->n_not_destination_ips,
			       &neg[SM_AUTHZ_DESTINATION_IPS])) ||
	    (ret = parse_ports(p, "destination_ports", m->destination_ports, m->n_destination_ports,
			       &pos[SM_AUTHZ_DESTINATION_PORTS])) ||
	    (ret = parse_ports(p, "not_destination_ports", m->not_destination_ports, m->n_not_destination_ports,
			       &neg[SM_AUTHZ_DESTINATION_PORTS])) ||
	    (ret = parse_strings(p, "principals", m->principals, m->n_principals, &pos[SM_AUTHZ_PRINCIPALS])) ||
	    (ret = parse_strings(p, "not_principals", m->not_principals, m->n_not_principals,
				 &neg[SM_AUTHZ_PRINCIPALS])) ||
	    (ret = parse_strings(p, "namespaces", m->namespaces, m->n_namespaces, &pos[SM_AUTHZ_NAMESPACES])) ||
	    (ret = parse_strings(p, "not_namespaces", m->not_namespaces, m->n_not_namespaces,
				 &neg[SM_AUTHZ_NAMESPACES])) ||
	    (ret = parse_accounts(p, "service_accounts", m->service_accounts, m->n_service_accounts,
				  &pos[SM_AUTHZ_SERVICE_ACCOUNTS])) ||
	    (ret = parse_accounts(p, "not_service_accounts", m->not_service_accounts, m->n_not_service_accounts,
				  &neg[SM_AUTHZ_SERVICE_ACCOUNTS])))
		return ret;
	return 0;
}

static int parse_clause(struct parser *p, size_t rule, size_t clause, const Istio__Security__Clause *c,
			struct sm_authz_clause *out)
{
	snprintf(p->where, sizeof(p->where), "rule %zu clause %zu", rule, clause);
	if (c->n_matches > SM_AUTHZ_MAX_MATCHES)
		return too_many(p, c->n_matches, "matches", SM_AUTHZ_MAX_MATCHES);
	if (c->n_matches == 0)
		return 0;
	out->matches = calloc(c->n_matches, sizeof(*out->matches));
	if (!out->matches)
		return -ENOMEM;
	out->n_matches = c->n_matches;
	for (size_t i = 0; i < c->n_matches; i++) {
		int ret;

		snprintf(p->where, sizeof(p->where), "rule %zu clause %zu match %zu", rule, clause, i);
		ret = parse_match(p, c->matches[i], &out->matches[i]);
		if (ret)
			return ret;
	}
	return 0;
}

static int parse_rule(struct parser *p, size_t rule, const Istio__Security__Rule *r, struct sm_authz_rule *out)
{
	snprintf(p->where, sizeof(p->where), "rule %zu", rule);
	if (r->n_clauses > SM_AUTHZ_MAX_CLAUSES)
		return too_many(p, r->n_clauses, "clauses", SM_AUTHZ_MAX_CLAUSES);
	if (r->n_clauses == 0)
		return 0;
	out->clauses = calloc(r->n_clauses, sizeof(*out->clauses));
	if (!out->clauses)
		return -ENOMEM;
	out->n_clauses = r->n_clauses;
	for (size_t i = 0; i < r->n_clauses; i++) {
		int ret = parse_clause(p, rule, i, r->clauses[i], &out->clauses[i]);

		if (ret)
			return ret;
	}
	return 0;
}

/* The policy's own fields: its names, key, scope and action. */
static int parse_header(struct parser *p, const Istio__Security__Authorization *msg, struct sm_authz_policy *out)
{
	int ret;

	if ((ret = copy_string(p, msg->namespace_, "namespace", &out->namespace)) ||
	    (ret = copy_string(p, msg->name, "name", &out->name)))
		return ret;
	if (asprintf(&out->key, "%s/%s", out->namespace, out->name) < 0) {
		out->key = NULL;
		return -ENOMEM;
	}
	out->hash = sm_authz_policy_hash(out->key);
	if (msg->scope != ISTIO__SECURITY__SCOPE__GLOBAL && msg->scope != ISTIO__SECURITY__SCOPE__NAMESPACE &&
	    msg->scope != ISTIO__SECURITY__SCOPE__WORKLOAD_SELECTOR)
		return reject(p, "scope %d is not GLOBAL, NAMESPACE or WORKLOAD_SELECTOR", (int)msg->scope);
	if (msg->action != ISTIO__SECURITY__ACTION__ALLOW && msg->action != ISTIO__SECURITY__ACTION__DENY)
		return reject(p, "action %d is not ALLOW or DENY", (int)msg->action);
	out->scope = (uint8_t)msg->scope;
	out->action = (uint8_t)msg->action;
	out->dry_run = msg->dry_run;
	return 0;
}

int sm_authz_policy_parse(const Istio__Security__Authorization *msg, struct sm_authz_policy **out, char *reason,
			  size_t reason_size)
{
	struct parser p = { .reason = reason, .reason_size = reason_size };
	struct sm_authz_policy *policy = calloc(1, sizeof(*policy));
	int ret;

	*out = NULL;
	if (!policy)
		return -ENOMEM;
	ret = parse_header(&p, msg, policy);
	if (!ret && msg->n_rules > SM_AUTHZ_MAX_RULES)
		ret = too_many(&p, msg->n_rules, "rules", SM_AUTHZ_MAX_RULES);
	if (!ret && msg->n_rules > 0) {
		policy->rules = calloc(msg->n_rules, sizeof(*policy->rules));
		if (policy->rules)
			policy->n_rules = msg->n_rules;
		else
			ret = -ENOMEM;
	}
	for (size_t i = 0; !ret && i < policy->n_rules; i++)
		ret = parse_rule(&p, i, msg->rules[i], &policy->rules[i]);
	if (ret == -ENOMEM)
		snprintf(reason, reason_size, "out of memory");
	if (ret) {
		sm_authz_policy_free(policy);
		return ret;
	}
	*out = policy;
	return 0;
}

/* ---- freeing (also a policy that failed half way: every count matches what was allocated) ---- */

static void free_list(enum sm_authz_field field, struct sm_authz_list *list)
{
	for (size_t i = 0; i < list->n; i++) {
		if (field == SM_AUTHZ_PRINCIPALS || field == SM_AUTHZ_NAMESPACES) {
			free(list->strings[i].value);
		} else if (field == SM_AUTHZ_SERVICE_ACCOUNTS) {
			free(list->accounts[i].namespace);
			free(list->accounts[i].name);
		}
	}
	free(list->cidrs); /* the entries, whichever member names them */
}

void sm_authz_policy_free(struct sm_authz_policy *policy)
{
	if (!policy)
		return;
	for (size_t r = 0; r < policy->n_rules; r++) {
		struct sm_authz_rule *rule = &policy->rules[r];

		for (size_t c = 0; c < rule->n_clauses; c++) {
			struct sm_authz_clause *clause = &rule->clauses[c];

			for (size_t m = 0; m < clause->n_matches; m++) {
				for (int f = 0; f < SM_AUTHZ_FIELD_COUNT; f++) {
					free_list(f, &clause->matches[m].positive[f]);
					free_list(f, &clause->matches[m].negative[f]);
				}
			}
			free(clause->matches);
		}
		free(rule->clauses);
	}
	free(policy->rules);
	free(policy->key);
	free(policy->name);
	free(policy->namespace);
	free(policy);
}
