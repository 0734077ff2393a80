/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The reference evaluator and the policy parser, case by case: every structural rule, every field and its
 * not_ twin, each StringMatch kind, no identity, the decision order and dry-run, parse rejections with their
 * reasons; then istiod's golden outputs (test/fixtures/istio-authz/) against scenarios read off their inputs.
 * Policies are written as istiod writes them (YAML, istio Go naming: groups → rules → matches).
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <string.h>

#include "authz/authz.h"
#include "authz_fixture.h"
#include "helpers.h"

/* ---- connections ---- */

#define NO_IDENTITY "" /* a source address that belongs to no workload */

/* A connection written compactly; NULL or 0 takes the default. */
struct conn_spec {
	const char *src;  /* default 10.1.0.1 */
	const char *id;   /* "TD/ns/NS/sa/SA", default cluster.local/ns/foo/sa/bar; NO_IDENTITY: none */
	const char *dst;  /* default 10.2.0.1 */
	uint16_t port;    /* default 80 */
};

struct conn_buf {
	struct sm_authz_connection conn;
	struct sm_authz_identity id;
	char text[512];
};

static void address16(const char *text, uint8_t out[16])
{
	memset(out, 0, 16);
	if (inet_pton(AF_INET6, text, out) == 1)
		return;
	out[10] = out[11] = 0xff;
	if (inet_pton(AF_INET, text, out + 12) != 1)
		fail_msg("'%s' is not an address", text);
}

/* Splits "TD/ns/NS/sa/SA" in place. */
static void identity(const char *principal, struct conn_buf *b)
{
	char *ns, *sa;

	snprintf(b->text, sizeof(b->text), "%s", principal);
	ns = strstr(b->text, "/ns/");
	sa = ns ? strstr(ns + 4, "/sa/") : NULL;
	if (!sa)
		fail_msg("'%s' is not TD/ns/NS/sa/SA", principal);
	*ns = *sa = 0;
	b->id = (struct sm_authz_identity){ b->text, ns + 4, sa + 4 };
	b->conn.src_identity = &b->id;
}

static const struct sm_authz_connection *connection(const struct conn_spec *spec, struct conn_buf *b)
{
	memset(b, 0, sizeof(*b));
	address16(spec->src ? spec->src : "10.1.0.1", b->conn.src);
	address16(spec->dst ? spec->dst : "10.2.0.1", b->conn.dst);
	b->conn.dst_port = spec->port ? spec->port : 80;
	if (!spec->id || spec->id[0])
		identity(spec->id ? spec->id : "cluster.local/ns/foo/sa/bar", b);
	return &b->conn;
}

/* ---- policies ---- */

static struct sm_authz_policy *parse_text(const char *yaml)
{
	Istio__Security__Authorization *msg = authz_fixture_read(yaml, yaml);
	struct sm_authz_policy *policy = NULL;
	char reason[256] = "";
	int ret;

	assert_non_null(msg);
	ret = sm_authz_policy_parse(msg, &policy, reason, sizeof(reason));
	authz_fixture_free(msg);
	if (ret)
		fail_msg("%s: %s (%d)", yaml, reason, ret);
	return policy;
}

/* ---- 1. one policy: structure and fields ---- */

struct match_case {
	const char *what;
	const char *match;  /* one Match, the only one of the only clause of the only rule */
	const char *policy; /* or a whole policy */
	struct conn_spec conn;
	bool want;
};

#define WRAP_BEFORE "{name: p, namespace: ns, groups: [{rules: [{matches: ["
#define WRAP_AFTER "]}]}]}"
#define WRAP(m) WRAP_BEFORE m WRAP_AFTER

static const struct match_case match_cases[] = {
	/* structure (rules OR, clauses AND, matches OR, empty parts) */
	{ "zero rules: never matches", .policy = "{name: p}", .want = false },
	{ "a rule with zero clauses: true", .policy = "{groups: [{}]}", .want = true },
	{ "a rule with an empty clause list: true", .policy = "{groups: [{rules: []}]}", .want = true },
	{ "a clause with zero matches: true", .policy = "{groups: [{rules: [{}]}]}", .want = true },
	{ "a clause with an empty match list: true", .policy = "{groups: [{rules: [{matches: []}]}]}", .want = true },
	{ "an empty match is skipped: a clause of it alone is false", .match = "{}", .want = false },
	{ "lists written but empty: still an empty match", .match = "{sourceIps: [], notPrincipals: []}", .want = false },
	{ "an empty match beside a true one", .match = "{}, {destinationPorts: [80]}", .want = true },
	{ "matches OR: the second one holds", .match = "{destinationPorts: [81]}, {destinationPorts: [80]}", .want = true },
	{ "matches OR: none holds", .match = "{destinationPorts: [81]}, {destinationPorts: [82]}", .want = false },
	{ "clauses AND: both hold",
	  .policy = "{groups: [{rules: [{matches: [{destinationPorts: [80]}]}, {matches: [{namespaces: [{exact: foo}]}]}]}]}",
	  .want = true },
	{ "clauses AND: one fails",
	  .policy = "{groups: [{rules: [{matches: [{destinationPorts: [80]}]}, {matches: [{destinationPorts: [81]}]}]}]}",
	  .want = false },
	{ "clauses AND: a clause of only empty matches fails the rule",
	  .policy = "{groups: [{rules: [{matches: [{destinationPorts: [80]}]}, {matches: [{}]}]}]}", .want = false },
	{ "rules OR: the second one holds",
	  .policy = "{groups: [{rules: [{matches: [{destinationPorts: [81]}]}]}, {rules: [{matches: [{destinationPorts: [80]}]}]}]}",
	  .want = true },
	{ "kinds AND inside a match: one fails", .match = "{destinationPorts: [80], namespaces: [{exact: other}]}",
	  .want = false },
	{ "kinds AND inside a match: all hold",
	  .match = "{destinationPorts: [80], namespaces: [{exact: foo}], sourceIps: [{cidr: 10.0.0.0/8}]}", .want = true },
	{ "a value in both the list and its not_ twin", .match = "{destinationPorts: [80], notDestinationPorts: [80]}",
	  .want = false },
	{ "only a not_ list, not hit", .match = "{notDestinationPorts: [81]}", .want = true },

	/* source_ips / not_source_ips */
	{ "source_ips: inside", .match = "{sourceIps: [{cidr: 10.1.0.0/16}]}", .want = true },
	{ "source_ips: outside", .match = "{sourceIps: [{cidr: 10.2.0.0/16}]}", .want = false },
	{ "source_ips: one of several", .match = "{sourceIps: [{cidr: 10.9.0.0/16}, {cidr: 10.1.0.1/32}]}", .want = true },
	{ "source_ips: /32 of another host", .match = "{sourceIps: [{cidr: 10.1.0.2/32}]}", .want = false },
	{ "source_ips: host bits tolerated", .match = "{sourceIps: [{cidr: 10.1.77.7/16}]}", .want = true },
	{ "source_ips: a prefix not on a byte, inside", .match = "{sourceIps: [{cidr: 10.0.0.0/15}]}", .want = true },
	{ "source_ips: a prefix not on a byte, outside", .match = "{sourceIps: [{cidr: 10.2.0.0/15}]}", .want = false },
	{ "source_ips: raw bytes as istiod sends them", .match = "{sourceIps: [{address: CgEAAQ==, length: 32}]}",
	  .want = true },
	{ "source_ips: 0.0.0.0/0 holds every IPv4 source", .match = "{sourceIps: [{cidr: 0.0.0.0/0}]}", .want = true },
	{ "source_ips: 0.0.0.0/0 holds no IPv6 source", .match = "{sourceIps: [{cidr: 0.0.0.0/0}]}",
	  .conn = { .src = "fd00::1" }, .want = false },
	{ "source_ips: an IPv4-mapped CIDR holds the IPv4 source", .match = "{sourceIps: [{cidr: \"::ffff:10.1.0.0/112\"}]}",
	  .want = true },
	{ "source_ips: an IPv4-mapped CIDR, another IPv4 source", .match = "{sourceIps: [{cidr: \"::ffff:10.1.0.0/112\"}]}",
	  .conn = { .src = "10.3.0.1" }, .want = false },
	{ "source_ips: an IPv4 CIDR, an IPv6 source", .match = "{sourceIps: [{cidr: 10.1.0.0/16}]}",
	  .conn = { .src = "fd00::1" }, .want = false },
	{ "source_ips: an IPv6 CIDR, inside", .match = "{sourceIps: [{cidr: \"fd00::/8\"}]}", .conn = { .src = "fd00::1" },
	  .want = true },
	{ "source_ips: an IPv6 CIDR, outside", .match = "{sourceIps: [{cidr: \"fd00::/8\"}]}", .conn = { .src = "fe80::1" },
	  .want = false },
	{ "not_source_ips: inside", .match = "{notSourceIps: [{cidr: 10.1.0.0/16}]}", .want = false },
	{ "not_source_ips: outside", .match = "{notSourceIps: [{cidr: 10.2.0.0/16}]}", .want = true },

	/* destination_ips / not_destination_ips */
	{ "destination_ips: inside", .match = "{destinationIps: [{cidr: 10.2.0.0/24}]}", .want = true },
	{ "destination_ips: outside", .match = "{destinationIps: [{cidr: 10.1.0.0/24}]}", .want = false },
	{ "destination_ips: IPv6", .match = "{destinationIps: [{cidr: \"fd00::2/128\"}]}", .conn = { .dst = "fd00::2" },
	  .want = true },
	{ "not_destination_ips: inside", .match = "{notDestinationIps: [{cidr: 10.2.0.1/32}]}", .want = false },
	{ "not_destination_ips: outside", .match = "{notDestinationIps: [{cidr: 10.1.0.0/24}]}", .want = true },

	/* destination_ports / not_destination_ports */
	{ "destination_ports: equal", .match = "{destinationPorts: [80]}", .want = true },
	{ "destination_ports: another", .match = "{destinationPorts: [8080]}", .want = false },
	{ "destination_ports: one of several", .match = "{destinationPorts: [8080, 80]}", .want = true },
	{ "destination_ports: 65535", .match = "{destinationPorts: [65535]}", .conn = { .port = 65535 }, .want = true },
	{ "not_destination_ports: equal", .match = "{notDestinationPorts: [80]}", .want = false },
	{ "not_destination_ports: another", .match = "{notDestinationPorts: [8080]}", .want = true },

	/* principals / not_principals: "TD/ns/NS/sa/SA" */
	{ "principals exact", .match = "{principals: [{exact: cluster.local/ns/foo/sa/bar}]}", .want = true },
	{ "principals exact, another SA", .match = "{principals: [{exact: cluster.local/ns/foo/sa/baz}]}", .want = false },
	{ "principals exact is case-sensitive", .match = "{principals: [{exact: cluster.local/ns/foo/sa/Bar}]}",
	  .want = false },
	{ "principals written with spiffe:// never match",
	  .match = "{principals: [{exact: \"spiffe://cluster.local/ns/foo/sa/bar\"}]}", .want = false },
	{ "principals exact, another trust domain", .match = "{principals: [{exact: cluster.local/ns/foo/sa/bar}]}",
	  .conn = { .id = "example.org/ns/foo/sa/bar" }, .want = false },
	{ "principals prefix", .match = "{principals: [{prefix: cluster.local/ns/foo/}]}", .want = true },
	{ "principals prefix, not a prefix", .match = "{principals: [{prefix: cluster.local/ns/fo/}]}", .want = false },
	{ "principals prefix longer than the value", .match = "{principals: [{prefix: cluster.local/ns/foo/sa/bar/x}]}",
	  .want = false },
	{ "principals suffix", .match = "{principals: [{suffix: /sa/bar}]}", .want = true },
	{ "principals suffix, not a suffix", .match = "{principals: [{suffix: /sa/ba}]}", .want = false },
	{ "principals suffix across the parts", .match = "{principals: [{suffix: local/ns/foo/sa/bar}]}", .want = true },
	{ "principals presence", .match = "{principals: [{presence: {}}]}", .want = true },
	{ "not_principals exact, hit", .match = "{notPrincipals: [{exact: cluster.local/ns/foo/sa/bar}]}", .want = false },
	{ "not_principals exact, missed", .match = "{notPrincipals: [{exact: cluster.local/ns/foo/sa/baz}]}", .want = true },
	{ "not_principals presence, with an identity", .match = "{notPrincipals: [{presence: {}}]}", .want = false },

	/* namespaces / not_namespaces */
	{ "namespaces exact", .match = "{namespaces: [{exact: foo}]}", .want = true },
	{ "namespaces exact is case-sensitive", .match = "{namespaces: [{exact: Foo}]}", .want = false },
	{ "namespaces prefix", .match = "{namespaces: [{prefix: fo}]}", .want = true },
	{ "namespaces prefix, missed", .match = "{namespaces: [{prefix: ba}]}", .want = false },
	{ "namespaces suffix", .match = "{namespaces: [{suffix: oo}]}", .want = true },
	{ "namespaces suffix, missed", .match = "{namespaces: [{suffix: f}]}", .want = false },
	{ "namespaces presence", .match = "{namespaces: [{presence: {}}]}", .want = true },
	{ "namespaces presence needs a non-empty namespace", .match = "{namespaces: [{presence: {}}]}",
	  .conn = { .id = "cluster.local/ns//sa/bar" }, .want = false },
	{ "namespaces: the identity's, not the trust domain's", .match = "{namespaces: [{exact: cluster.local}]}",
	  .want = false },
	{ "not_namespaces exact, hit", .match = "{notNamespaces: [{exact: foo}]}", .want = false },
	{ "not_namespaces exact, missed", .match = "{notNamespaces: [{exact: other}]}", .want = true },

	/* service_accounts / not_service_accounts: the exact (namespace, name) pair */
	{ "service_accounts pair", .match = "{serviceAccounts: [{namespace: foo, serviceAccount: bar}]}", .want = true },
	{ "service_accounts: another name", .match = "{serviceAccounts: [{namespace: foo, serviceAccount: baz}]}",
	  .want = false },
	{ "service_accounts: another namespace", .match = "{serviceAccounts: [{namespace: other, serviceAccount: bar}]}",
	  .want = false },
	{ "service_accounts: trust domain ignored", .match = "{serviceAccounts: [{namespace: foo, serviceAccount: bar}]}",
	  .conn = { .id = "example.org/ns/foo/sa/bar" }, .want = true },
	{ "not_service_accounts: hit", .match = "{notServiceAccounts: [{namespace: foo, serviceAccount: bar}]}",
	  .want = false },
	{ "not_service_accounts: missed", .match = "{notServiceAccounts: [{namespace: foo, serviceAccount: baz}]}",
	  .want = true },

	/* no identity: positive identity lists fail, negative ones pass */
	{ "no identity: principals presence fails", .match = "{principals: [{presence: {}}]}",
	  .conn = { .id = NO_IDENTITY }, .want = false },
	{ "no identity: not_principals presence holds (deny plaintext)", .match = "{notPrincipals: [{presence: {}}]}",
	  .conn = { .id = NO_IDENTITY }, .want = true },
	{ "no identity: principals prefix \"\" fails", .match = "{principals: [{prefix: \"\"}]}",
	  .conn = { .id = NO_IDENTITY }, .want = false },
	{ "no identity: namespaces presence fails", .match = "{namespaces: [{presence: {}}]}",
	  .conn = { .id = NO_IDENTITY }, .want = false },
	{ "no identity: not_namespaces exact holds", .match = "{notNamespaces: [{exact: foo}]}",
	  .conn = { .id = NO_IDENTITY }, .want = true },
	{ "no identity: service_accounts fails", .match = "{serviceAccounts: [{namespace: foo, serviceAccount: bar}]}",
	  .conn = { .id = NO_IDENTITY }, .want = false },
	{ "no identity: not_service_accounts holds",
	  .match = "{notServiceAccounts: [{namespace: foo, serviceAccount: bar}]}", .conn = { .id = NO_IDENTITY },
	  .want = true },
	{ "no identity: address and port fields still count", .match = "{sourceIps: [{cidr: 10.1.0.0/16}], destinationPorts: [80]}",
	  .conn = { .id = NO_IDENTITY }, .want = true },
};

static void match_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < TEST_ARRAY_SIZE(match_cases); i++) {
		const struct match_case *c = &match_cases[i];
		char text[1024];
		struct conn_buf b;
		struct sm_authz_policy *p;
		bool got;

		if (c->policy)
			snprintf(text, sizeof(text), "%s", c->policy);
		else
			snprintf(text, sizeof(text), WRAP("%s"), c->match);
		p = parse_text(text);
		got = sm_authz_policy_matches(p, connection(&c->conn, &b), NULL);
		sm_authz_policy_free(p);
		if (got != c->want)
			fail_msg("%s: %s matched %d, want %d", c->what, text, got, c->want);
	}
	print_message("# %zu match cases\n", TEST_ARRAY_SIZE(match_cases));
}

/* The witness names the first rule that matched and, per clause, the match that made it true. */
static void witness(void **state)
{
	struct sm_authz_policy *p = parse_text(
		"{name: w, namespace: ns, groups: ["
		"{rules: [{matches: [{destinationPorts: [81]}]}]},"			       /* rule 0: misses */
		"{rules: [{}, {matches: [{namespaces: [{exact: other}]}, {}, {destinationPorts: [80]}]}]}," /* rule 1 */
		"{}]}");							       /* rule 2: true, later */
	const struct sm_authz_policy *list[] = { p };
	struct sm_authz_witness w;
	struct sm_authz_decision d;
	struct conn_buf b;

	(void)state;
	memset(&w, 0xa5, sizeof(w));
	assert_true(sm_authz_policy_matches(p, connection(&(struct conn_spec){ 0 }, &b), &w));
	assert_int_equal(w.rule, 1);
	assert_int_equal(w.n_clauses, 2);
	assert_true(w.clause_matches[0] == SIZE_MAX); /* a clause with zero matches */
	assert_int_equal(w.clause_matches[1], 2);	 /* the empty match 1 was skipped */

	sm_authz_evaluate(list, 1, &b.conn, &d);
	assert_int_equal(d.reason, SM_AUTHZ_ALLOW_MATCHED);
	assert_memory_equal(&d.witness, &w, sizeof(w));

	/* port 81: rule 0 now */
	b.conn.dst_port = 81;
	assert_true(sm_authz_policy_matches(p, &b.conn, &w));
	assert_int_equal(w.rule, 0);
	assert_int_equal(w.n_clauses, 1);
	assert_int_equal(w.clause_matches[0], 0);

	/* port 82: rule 2, zero clauses */
	b.conn.dst_port = 82;
	assert_true(sm_authz_policy_matches(p, &b.conn, &w));
	assert_int_equal(w.rule, 2);
	assert_int_equal(w.n_clauses, 0);
	sm_authz_policy_free(p);
}

/* ---- 2. the decision over the policies that apply ---- */

#define PORT_MATCH(port) "groups: [{rules: [{matches: [{destinationPorts: [" #port "]}]}]}]"
#define ALLOW_80 "{name: allow-80, namespace: ns, " PORT_MATCH(80) "}"
#define ALLOW_80_TOO "{name: allow-80-too, namespace: ns, " PORT_MATCH(80) "}"
#define ALLOW_81 "{name: allow-81, namespace: ns, " PORT_MATCH(81) "}"
#define DENY_80 "{name: deny-80, namespace: ns, action: DENY, " PORT_MATCH(80) "}"
#define DENY_80_TOO "{name: deny-80-too, namespace: ns, action: DENY, " PORT_MATCH(80) "}"
#define ALLOW_NOTHING "{name: allow-nothing, namespace: ns}"
#define DENY_NOTHING "{name: deny-nothing, namespace: ns, action: DENY}"
#define DRY_DENY_80 "{name: dry-deny-80, namespace: ns, action: DENY, dryRun: true, " PORT_MATCH(80) "}"
#define DRY_ALLOW_81 "{name: dry-allow-81, namespace: ns, dryRun: true, " PORT_MATCH(81) "}"
#define STATIC_STRICT                                                                                    \
	"{name: istio_converted_static_strict, namespace: istio-system, scope: WORKLOAD_SELECTOR, action: DENY, " \
	"groups: [{rules: [{matches: [{notPrincipals: [{presence: {}}]}]}]}]}"

#define NONE (-1)

struct decision_case {
	const char *what;
	const char *policies[4]; /* in the order given */
	struct conn_spec conn;
	uint8_t action, reason;
	int policy; /* index of the deciding policy, NONE */
	uint8_t dry_action, dry_reason;
	int dry_policy; /* index of the deciding dry-run policy, NONE */
};

/* Rows without dry-run policies: the dry-run verdict is the enforced one, with no dry-run policy. */
#define SAME_DRY .dry_policy = NONE
#define ALLOWED(r, p) .action = SM_AUTHZ_ALLOW, .reason = SM_AUTHZ_##r, .policy = (p)
#define DENIED(r, p) .action = SM_AUTHZ_DENY, .reason = SM_AUTHZ_##r, .policy = (p)
#define DRY_ALLOWED(r, p) .dry_action = SM_AUTHZ_ALLOW, .dry_reason = SM_AUTHZ_##r, .dry_policy = (p)
#define DRY_DENIED(r, p) .dry_action = SM_AUTHZ_DENY, .dry_reason = SM_AUTHZ_##r, .dry_policy = (p)

static const struct decision_case decision_cases[] = {
	{ "no policy: allowed", { NULL }, ALLOWED(NO_ALLOW_POLICIES, NONE), DRY_ALLOWED(NO_ALLOW_POLICIES, NONE) },
	{ "an ALLOW that matches", { ALLOW_80 }, ALLOWED(ALLOW_MATCHED, 0), DRY_ALLOWED(ALLOW_MATCHED, NONE) },
	{ "an ALLOW that does not match", { ALLOW_81 }, DENIED(NO_ALLOW_MATCHED, NONE),
	  DRY_DENIED(NO_ALLOW_MATCHED, NONE) },
	{ "a DENY that does not match, no ALLOW", { DENY_80 }, .conn = { .port = 81 }, ALLOWED(NO_ALLOW_POLICIES, NONE),
	  DRY_ALLOWED(NO_ALLOW_POLICIES, NONE) },
	{ "DENY before ALLOW (DENY listed first)", { DENY_80, ALLOW_80 }, DENIED(DENY_MATCHED, 0),
	  DRY_DENIED(DENY_MATCHED, NONE) },
	{ "DENY before ALLOW (DENY listed last)", { ALLOW_80, DENY_80 }, DENIED(DENY_MATCHED, 1),
	  DRY_DENIED(DENY_MATCHED, NONE) },
	{ "a DENY missed, an ALLOW matched", { DENY_80, ALLOW_81 }, .conn = { .port = 81 }, ALLOWED(ALLOW_MATCHED, 1),
	  DRY_ALLOWED(ALLOW_MATCHED, NONE) },
	{ "two ALLOWs match: the first given decides", { ALLOW_80_TOO, ALLOW_80 }, ALLOWED(ALLOW_MATCHED, 0),
	  DRY_ALLOWED(ALLOW_MATCHED, NONE) },
	{ "two DENYs match: the first given decides", { ALLOW_80, DENY_80_TOO, DENY_80 }, DENIED(DENY_MATCHED, 1),
	  DRY_DENIED(DENY_MATCHED, NONE) },
	{ "one of two ALLOWs matches", { ALLOW_81, ALLOW_80 }, ALLOWED(ALLOW_MATCHED, 1), DRY_ALLOWED(ALLOW_MATCHED, NONE) },
	{ "an ALLOW with zero rules denies everything", { ALLOW_NOTHING }, DENIED(NO_ALLOW_MATCHED, NONE),
	  DRY_DENIED(NO_ALLOW_MATCHED, NONE) },
	{ "an ALLOW with zero rules beside one that matches", { ALLOW_NOTHING, ALLOW_80 }, ALLOWED(ALLOW_MATCHED, 1),
	  DRY_ALLOWED(ALLOW_MATCHED, NONE) },
	{ "a DENY with zero rules does nothing", { DENY_NOTHING }, ALLOWED(NO_ALLOW_POLICIES, NONE),
	  DRY_ALLOWED(NO_ALLOW_POLICIES, NONE) },
	{ "a DENY with zero rules beside an ALLOW", { DENY_NOTHING, ALLOW_80 }, ALLOWED(ALLOW_MATCHED, 1),
	  DRY_ALLOWED(ALLOW_MATCHED, NONE) },
	{ "deny plaintext: no identity", { STATIC_STRICT }, .conn = { .id = NO_IDENTITY }, DENIED(DENY_MATCHED, 0),
	  DRY_DENIED(DENY_MATCHED, NONE) },
	{ "deny plaintext: an identity passes", { STATIC_STRICT }, ALLOWED(NO_ALLOW_POLICIES, NONE),
	  DRY_ALLOWED(NO_ALLOW_POLICIES, NONE) },
	{ "deny plaintext beats an ALLOW that matches", { ALLOW_80, STATIC_STRICT }, .conn = { .id = NO_IDENTITY },
	  DENIED(DENY_MATCHED, 1), DRY_DENIED(DENY_MATCHED, NONE) },
	/* dry-run: never enforced, but reported */
	{ "a dry-run DENY that matches is not enforced", { DRY_DENY_80 }, ALLOWED(NO_ALLOW_POLICIES, NONE),
	  DRY_DENIED(DENY_MATCHED, 0) },
	{ "a dry-run DENY beside an ALLOW that matches", { ALLOW_80, DRY_DENY_80 }, ALLOWED(ALLOW_MATCHED, 0),
	  DRY_DENIED(DENY_MATCHED, 1) },
	{ "a dry-run DENY that misses", { DRY_DENY_80 }, .conn = { .port = 81 }, ALLOWED(NO_ALLOW_POLICIES, NONE),
	  DRY_ALLOWED(NO_ALLOW_POLICIES, NONE) },
	{ "a dry-run ALLOW is not an ALLOW policy: it would deny", { DRY_ALLOW_81 }, ALLOWED(NO_ALLOW_POLICIES, NONE),
	  DRY_DENIED(NO_ALLOW_MATCHED, NONE) },
	{ "a dry-run ALLOW that matches", { DRY_ALLOW_81 }, .conn = { .port = 81 }, ALLOWED(NO_ALLOW_POLICIES, NONE),
	  DRY_ALLOWED(ALLOW_MATCHED, 0) },
	{ "a dry-run ALLOW beside an enforced ALLOW that misses", { ALLOW_80, DRY_ALLOW_81 }, .conn = { .port = 81 },
	  DENIED(NO_ALLOW_MATCHED, NONE), DRY_ALLOWED(ALLOW_MATCHED, 1) },
	{ "an enforced DENY decides both: no dry-run policy named", { DENY_80, DRY_DENY_80 }, DENIED(DENY_MATCHED, 0),
	  DRY_DENIED(DENY_MATCHED, NONE) },
	{ "a dry-run DENY listed first decides the dry run", { DRY_DENY_80, DENY_80 }, DENIED(DENY_MATCHED, 1),
	  DRY_DENIED(DENY_MATCHED, 0) },
	{ "only dry-run policies: the enforced verdict ignores them all", { DRY_ALLOW_81, DRY_DENY_80 },
	  ALLOWED(NO_ALLOW_POLICIES, NONE), DRY_DENIED(DENY_MATCHED, 1) },
};

static void decision_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < TEST_ARRAY_SIZE(decision_cases); i++) {
		const struct decision_case *c = &decision_cases[i];
		struct sm_authz_policy *policies[4] = { NULL };
		const struct sm_authz_policy *list[4];
		struct sm_authz_decision d;
		struct conn_buf b;
		size_t n = 0;
		const struct sm_authz_policy *want_policy, *want_dry;

		while (n < 4 && c->policies[n]) {
			policies[n] = parse_text(c->policies[n]);
			list[n] = policies[n];
			n++;
		}
		sm_authz_evaluate(list, n, connection(&c->conn, &b), &d);
		want_policy = c->policy == NONE ? NULL : policies[c->policy];
		want_dry = c->dry_policy == NONE ? NULL : policies[c->dry_policy];
		if (d.action != c->action || d.reason != c->reason || d.policy != want_policy)
			fail_msg("%s: action %u reason %u policy %s, want %u %u %s", c->what, d.action, d.reason,
				 d.policy ? d.policy->key : "none", c->action, c->reason,
				 want_policy ? want_policy->key : "none");
		if (d.dry_run_action != c->dry_action || d.dry_run_reason != c->dry_reason || d.dry_run_policy != want_dry)
			fail_msg("%s: dry run: action %u reason %u policy %s, want %u %u %s", c->what, d.dry_run_action,
				 d.dry_run_reason, d.dry_run_policy ? d.dry_run_policy->key : "none", c->dry_action,
				 c->dry_reason, want_dry ? want_dry->key : "none");
		for (size_t k = 0; k < n; k++)
			sm_authz_policy_free(policies[k]);
	}
	print_message("# %zu decision cases\n", TEST_ARRAY_SIZE(decision_cases));
}

/* ---- 3. identities and hashes ---- */

static uint64_t fnv1a(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	while (*s)
		h = (h ^ (unsigned char)*s++) * 0x100000001b3ULL;
	return h;
}

static void identities(void **state)
{
	struct sm_authz_identity id = { "cluster.local", "foo", "bar" }, other = { "cluster.local", "foo", "baz" };
	char buf[64];

	(void)state;
	assert_int_equal(sm_authz_principal(&id, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "cluster.local/ns/foo/sa/bar");
	assert_int_equal(sm_authz_principal(&id, buf, strlen("cluster.local/ns/foo/sa/bar")), -ENAMETOOLONG);
	assert_int_equal(sm_authz_principal(&id, buf, strlen("cluster.local/ns/foo/sa/bar") + 1), 0);

	/* the identity hash is FNV-1a of the principal text, the policy hash of "ns/name" */
	assert_true(sm_authz_identity_hash(&id) == fnv1a("cluster.local/ns/foo/sa/bar"));
	assert_true(sm_authz_identity_hash(&id) != sm_authz_identity_hash(&other));
	assert_true(sm_authz_identity_hash(&id) != SM_AUTHZ_IDENTITY_NONE);
	assert_true(sm_authz_identity_hash(&id) != SM_AUTHZ_IDENTITY_NODE);
	assert_true(sm_authz_policy_hash("ns/name") == fnv1a("ns/name"));
	assert_true(sm_authz_policy_hash("ns/name") != sm_authz_policy_hash("ns/name2"));
	assert_true(sm_authz_policy_hash("") != 0);
}

/* Identity strings have no length limit in the evaluator: a principal of 6 KB still matches by prefix,
 * suffix (across its parts) and presence. */
static void long_identity(void **state)
{
	size_t len = 3000;
	char *ns = malloc(len + 1), *sa = malloc(len + 1);
	struct sm_authz_identity id = { "cluster.local", ns, sa };
	struct sm_authz_connection conn = { .src_identity = &id, .dst_port = 80 };
	struct sm_authz_policy *prefix = parse_text(WRAP("{principals: [{prefix: cluster.local/ns/nnn}]}"));
	struct sm_authz_policy *suffix = parse_text(WRAP("{principals: [{suffix: sss/sa/sss}]}"));
	struct sm_authz_policy *presence = parse_text(WRAP("{principals: [{presence: {}}]}"));

	(void)state;
	memset(ns, 'n', len);
	memset(sa, 's', len);
	ns[len] = sa[len] = 0;
	assert_true(sm_authz_policy_matches(prefix, &conn, NULL));
	assert_false(sm_authz_policy_matches(suffix, &conn, NULL));
	memset(ns + len - 3, 's', 3);
	sa[3] = 0;
	assert_true(sm_authz_policy_matches(suffix, &conn, NULL));
	assert_true(sm_authz_policy_matches(presence, &conn, NULL));
	sm_authz_policy_free(prefix);
	sm_authz_policy_free(suffix);
	sm_authz_policy_free(presence);
	free(ns);
	free(sa);
}

/* ---- 4. parsing: what the policy holds, and what is rejected with which reason ---- */

static void parse_fields(void **state)
{
	struct sm_authz_policy *p = parse_text(
		"{name: web, namespace: shop, scope: WORKLOAD_SELECTOR, action: DENY, dryRun: true, groups: [{rules: [{matches: [{"
		"sourceIps: [{cidr: 10.1.2.0/24}], notDestinationIps: [{cidr: \"fd00::/16\"}], destinationPorts: [80, 65535],"
		"principals: [{exact: a}, {prefix: b}, {suffix: c}, {presence: {}}],"
		"notServiceAccounts: [{namespace: ns, serviceAccount: sa}]}]}]}]}");
	const struct sm_authz_match *m = &p->rules[0].clauses[0].matches[0];
	const struct sm_authz_list *src = &m->positive[SM_AUTHZ_SOURCE_IPS], *dst = &m->negative[SM_AUTHZ_DESTINATION_IPS];
	const struct sm_authz_list *ports = &m->positive[SM_AUTHZ_DESTINATION_PORTS], *pr = &m->positive[SM_AUTHZ_PRINCIPALS];
	const struct sm_authz_list *sa = &m->negative[SM_AUTHZ_SERVICE_ACCOUNTS];
	static const uint8_t mapped[16] = { [10] = 0xff, [11] = 0xff, [12] = 10, [13] = 1, [14] = 2 };
	static const uint8_t v6[16] = { 0xfd };

	(void)state;
	assert_string_equal(p->key, "shop/web");
	assert_string_equal(p->name, "web");
	assert_string_equal(p->namespace, "shop");
	assert_true(p->hash == sm_authz_policy_hash("shop/web"));
	assert_int_equal(p->scope, SM_AUTHZ_SCOPE_WORKLOAD_SELECTOR);
	assert_int_equal(p->action, SM_AUTHZ_DENY);
	assert_true(p->dry_run);
	assert_int_equal(p->n_rules, 1);
	assert_int_equal(p->rules[0].n_clauses, 1);
	assert_int_equal(p->rules[0].clauses[0].n_matches, 1);
	/* IPv4 becomes ::ffff:a.b.c.d with 96 added to its prefix; IPv6 stays */
	assert_int_equal(src->n, 1);
	assert_memory_equal(src->cidrs[0].addr, mapped, 16);
	assert_int_equal(src->cidrs[0].prefix_len, 96 + 24);
	assert_int_equal(dst->n, 1);
	assert_memory_equal(dst->cidrs[0].addr, v6, 16);
	assert_int_equal(dst->cidrs[0].prefix_len, 16);
	assert_int_equal(ports->n, 2);
	assert_int_equal(ports->ports[0], 80);
	assert_int_equal(ports->ports[1], 65535);
	assert_int_equal(pr->n, 4);
	assert_int_equal(pr->strings[0].kind, SM_AUTHZ_EXACT);
	assert_string_equal(pr->strings[0].value, "a");
	assert_int_equal(pr->strings[1].kind, SM_AUTHZ_PREFIX);
	assert_string_equal(pr->strings[1].value, "b");
	assert_int_equal(pr->strings[2].kind, SM_AUTHZ_SUFFIX);
	assert_string_equal(pr->strings[2].value, "c");
	assert_int_equal(pr->strings[3].kind, SM_AUTHZ_PRESENCE);
	assert_string_equal(pr->strings[3].value, "");
	assert_int_equal(sa->n, 1);
	assert_string_equal(sa->accounts[0].namespace, "ns");
	assert_string_equal(sa->accounts[0].name, "sa");
	for (int f = 0; f < SM_AUTHZ_FIELD_COUNT; f++) /* and nothing else */
		assert_int_equal(m->positive[f].n + m->negative[f].n,
				 f == SM_AUTHZ_SOURCE_IPS || f == SM_AUTHZ_DESTINATION_IPS || f == SM_AUTHZ_SERVICE_ACCOUNTS ? 1
				 : f == SM_AUTHZ_DESTINATION_PORTS ? 2 : f == SM_AUTHZ_PRINCIPALS ? 4 : 0);
	sm_authz_policy_free(p);

	/* defaults: GLOBAL, ALLOW, enforced; no namespace gives the key "/name" */
	p = parse_text("{name: bare}");
	assert_string_equal(p->key, "/bare");
	assert_int_equal(p->scope, SM_AUTHZ_SCOPE_GLOBAL);
	assert_int_equal(p->action, SM_AUTHZ_ALLOW);
	assert_false(p->dry_run);
	assert_int_equal(p->n_rules, 0);
	sm_authz_policy_free(p);
}

struct reject_case {
	const char *what;
	const char *policy;
	const char *reason;
};

static const struct reject_case reject_cases[] = {
	{ "scope outside the enum", "{name: p, scope: 3}", "scope 3 is not GLOBAL, NAMESPACE or WORKLOAD_SELECTOR" },
	{ "action outside the enum (CUSTOM, AUDIT are not in ztunnel's)", "{name: p, action: 2}",
	  "action 2 is not ALLOW or DENY" },
	{ "an address of 5 bytes, where it is",
	  "{groups: [{}, {}, {rules: [{matches: [{destinationPorts: [1]}, {sourceIps: [{cidr: 1.0.0.0/8}, "
	  "{cidr: 2.0.0.0/8}, {cidr: 3.0.0.0/8}, {address: AQIDBAU=, length: 8}]}]}]}]}",
	  "rule 2 clause 0 match 1: source_ips[3]: address has 5 bytes, not 4 or 16" },
	{ "an address of 0 bytes", WRAP("{notSourceIps: [{address: \"\", length: 0}]}"),
	  "rule 0 clause 0 match 0: not_source_ips[0]: address has 0 bytes, not 4 or 16" },
	{ "an IPv4 prefix of 33", WRAP("{destinationIps: [{address: CgEAAQ==, length: 33}]}"),
	  "rule 0 clause 0 match 0: destination_ips[0]: prefix length 33 is more than the 32 bits of the address" },
	{ "an IPv6 prefix of 129", WRAP("{notDestinationIps: [{cidr: \"fd00::/129\"}]}"),
	  "rule 0 clause 0 match 0: not_destination_ips[0]: prefix length 129 is more than the 128 bits of the address" },
	{ "a port above 65535", WRAP("{destinationPorts: [80, 65536]}"),
	  "rule 0 clause 0 match 0: destination_ports[1]: 65536 is not a port (more than 65535)" },
	{ "a not_ port above 65535", WRAP("{notDestinationPorts: [4294967295]}"),
	  "rule 0 clause 0 match 0: not_destination_ports[0]: 4294967295 is not a port (more than 65535)" },
	{ "a StringMatch with no kind in principals", WRAP("{principals: [{exact: a}, {}]}"),
	  "rule 0 clause 0 match 0: principals[1]: a StringMatch with no kind (exact, prefix, suffix or presence)" },
	{ "a StringMatch with no kind in not_namespaces", WRAP("{notNamespaces: [{}]}"),
	  "rule 0 clause 0 match 0: not_namespaces[0]: a StringMatch with no kind (exact, prefix, suffix or presence)" },
	{ "the second rule's first clause", "{groups: [{}, {rules: [{matches: [{notPrincipals: [{}]}]}]}]}",
	  "rule 1 clause 0 match 0: not_principals[0]: a StringMatch with no kind (exact, prefix, suffix or presence)" },
};

static void reject(const Istio__Security__Authorization *msg, const char *what, const char *want)
{
	struct sm_authz_policy *p = (struct sm_authz_policy *)1;
	char reason[256] = "";
	int ret = sm_authz_policy_parse(msg, &p, reason, sizeof(reason));

	if (ret != -EINVAL || p != NULL || strcmp(reason, want) != 0)
		fail_msg("%s: returned %d, reason '%s', want -EINVAL and '%s'", what, ret, reason, want);
}

static void reject_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < TEST_ARRAY_SIZE(reject_cases); i++) {
		Istio__Security__Authorization *msg = authz_fixture_read(reject_cases[i].policy, reject_cases[i].what);

		reject(msg, reject_cases[i].what, reject_cases[i].reason);
		authz_fixture_free(msg);
	}
	print_message("# %zu rejections\n", TEST_ARRAY_SIZE(reject_cases));
}

/* Strings of SM_AUTHZ_MAX_STRING bytes pass, one more is rejected, wherever the string is. */
static void reject_long_strings(void **state)
{
	static const struct {
		const char *before, *after, *reason; /* the policy is before, the long string, after */
	} cases[] = {
		{ "{name: \"", "\"}", "name: longer than the 1024 bytes sockmesh holds" },
		{ "{name: p, namespace: \"", "\"}", "namespace: longer than the 1024 bytes sockmesh holds" },
		{ WRAP_BEFORE "{namespaces: [{prefix: \"", "\"}]}" WRAP_AFTER,
		  "rule 0 clause 0 match 0: namespaces[0]: longer than the 1024 bytes sockmesh holds" },
		{ WRAP_BEFORE "{notServiceAccounts: [{namespace: a, serviceAccount: \"", "\"}]}" WRAP_AFTER,
		  "rule 0 clause 0 match 0: not_service_accounts[0].serviceAccount: longer than the 1024 bytes sockmesh holds" },
	};
	char yaml[SM_AUTHZ_MAX_STRING + 256];

	(void)state;
	for (size_t i = 0; i < TEST_ARRAY_SIZE(cases); i++) {
		Istio__Security__Authorization *msg;
		size_t before = strlen(cases[i].before);

		/* SM_AUTHZ_MAX_STRING bytes pass */
		strcpy(yaml, cases[i].before);
		memset(yaml + before, 'x', SM_AUTHZ_MAX_STRING);
		strcpy(yaml + before + SM_AUTHZ_MAX_STRING, cases[i].after);
		sm_authz_policy_free(parse_text(yaml));

		/* one more is rejected */
		memset(yaml + before, 'x', SM_AUTHZ_MAX_STRING + 1);
		strcpy(yaml + before + SM_AUTHZ_MAX_STRING + 1, cases[i].after);
		msg = authz_fixture_read(yaml, cases[i].reason);
		reject(msg, cases[i].reason, cases[i].reason);
		authz_fixture_free(msg);
	}
}

/* The limits: at the limit accepted, one more rejected by name. Built by hand, every entry shared. */
static void reject_limits(void **state)
{
	static uint32_t ports[SM_AUTHZ_MAX_VALUES + 1];
	static Istio__Security__Match match = ISTIO__SECURITY__MATCH__INIT;
	static Istio__Security__Match *matches[SM_AUTHZ_MAX_MATCHES + 1];
	static Istio__Security__Clause clause = ISTIO__SECURITY__CLAUSE__INIT;
	static Istio__Security__Clause *clauses[SM_AUTHZ_MAX_CLAUSES + 1];
	static Istio__Security__Rule rule = ISTIO__SECURITY__RULE__INIT;
	static Istio__Security__Rule *rules[SM_AUTHZ_MAX_RULES + 1];
	Istio__Security__Authorization msg = ISTIO__SECURITY__AUTHORIZATION__INIT;
	struct sm_authz_policy *p;
	char reason[256];

	(void)state;
	for (size_t i = 0; i <= SM_AUTHZ_MAX_VALUES; i++)
		ports[i] = (uint32_t)i;
	for (size_t i = 0; i <= SM_AUTHZ_MAX_MATCHES; i++)
		matches[i] = &match;
	for (size_t i = 0; i <= SM_AUTHZ_MAX_CLAUSES; i++)
		clauses[i] = &clause;
	for (size_t i = 0; i <= SM_AUTHZ_MAX_RULES; i++)
		rules[i] = &rule;
	match.destination_ports = ports;
	clause.matches = matches;
	rule.clauses = clauses;
	msg.name = "big";
	msg.rules = rules;

	/* the limits reached two by two (all at once would be 270 G entries) */
	match.n_destination_ports = 1;
	clause.n_matches = SM_AUTHZ_MAX_MATCHES;
	rule.n_clauses = SM_AUTHZ_MAX_CLAUSES;
	msg.n_rules = 1;
	assert_int_equal(sm_authz_policy_parse(&msg, &p, reason, sizeof(reason)), 0);
	assert_int_equal(p->rules[0].n_clauses, SM_AUTHZ_MAX_CLAUSES);
	assert_int_equal(p->rules[0].clauses[63].n_matches, SM_AUTHZ_MAX_MATCHES);
	sm_authz_policy_free(p);
	match.n_destination_ports = SM_AUTHZ_MAX_VALUES;
	clause.n_matches = 1;
	rule.n_clauses = 1;
	msg.n_rules = SM_AUTHZ_MAX_RULES;
	assert_int_equal(sm_authz_policy_parse(&msg, &p, reason, sizeof(reason)), 0);
	assert_int_equal(p->n_rules, SM_AUTHZ_MAX_RULES);
	assert_int_equal(p->rules[1023].clauses[0].matches[0].positive[SM_AUTHZ_DESTINATION_PORTS].n, SM_AUTHZ_MAX_VALUES);
	sm_authz_policy_free(p);
	msg.n_rules = 1;

	match.n_destination_ports = SM_AUTHZ_MAX_VALUES + 1;
	reject(&msg, "values", "rule 0 clause 0 match 0: destination_ports: has 4097 entries, more than the 4096 sockmesh holds");
	match.n_destination_ports = 1;
	clause.n_matches = SM_AUTHZ_MAX_MATCHES + 1;
	reject(&msg, "matches", "rule 0 clause 0: has 257 matches, more than the 256 sockmesh holds");
	clause.n_matches = 1;
	rule.n_clauses = SM_AUTHZ_MAX_CLAUSES + 1;
	reject(&msg, "clauses", "rule 0: has 65 clauses, more than the 64 sockmesh holds");
	rule.n_clauses = 1;
	msg.n_rules = SM_AUTHZ_MAX_RULES + 1;
	reject(&msg, "rules", "has 1025 rules, more than the 1024 sockmesh holds");
}

/* ---- 5. istiod's outputs (test/fixtures/istio-authz/NAME.yaml, from NAME-in.yaml) against scenarios ---- */

/*
 * Each row: a connection to a workload the output policy applies to, and the verdict read off the input
 * policy. Identities are "TD/ns/NS/sa/SA"; the default connection is 10.1.0.1 → 10.2.0.1:80 with identity
 * cluster.local/ns/foo/sa/bar. Some outputs are empty: istiod sends nothing for that input. Where the input's
 * mode is STRICT everywhere, istiod relies on its separate istio_converted_static_strict instead (notes §3);
 * static_strict adds that policy.
 */
struct scenario {
	const char *file;
	const char *connection;
	struct conn_spec conn;
	bool static_strict;
	uint8_t action, reason;
	const char *policy; /* the key of the deciding policy, NULL for none */
	int rule;	    /* its rule */
	const char *why;
};

#define ALLOW(r) .action = SM_AUTHZ_ALLOW, .reason = SM_AUTHZ_##r
#define DENY(r) .action = SM_AUTHZ_DENY, .reason = SM_AUTHZ_##r
#define BY(key, r) .policy = key, .rule = (r)
#define PLAIN .id = NO_IDENTITY
#define ID(ns) .id = "cluster.local/ns/" ns "/sa/x"
#define STATIC_STRICT_KEY "istio-system/istio_converted_static_strict"

static const struct scenario scenarios[] = {
	/* ALLOW groups: L7 rules dropped whole, L4 parts kept; "from" and "to" become clauses */
	{ "allow-groups", "when-l4-ns identity from 10.10.10.10 to :8080",
	  { .src = "10.10.10.10", ID("when-l4-ns"), .port = 8080 }, ALLOW(ALLOW_MATCHED), BY("/groups", 1),
	  "the L4-only `when` (source.namespace, source.ip) is group 1, the mixed ones before it were dropped" },
	{ "allow-groups", "when-l4-ns identity from 10.10.10.11", { .src = "10.10.10.11", ID("when-l4-ns") },
	  DENY(NO_ALLOW_MATCHED), .why = "its source.ip is a second clause: both must hold" },
	{ "allow-groups", "only-l4-ns identity to :80", { ID("only-l4-ns") }, DENY(NO_ALLOW_MATCHED),
	  .why = "the only-L4 rule also wants principal exactly 'only-l4-principals', not TD/ns/NS/sa/SA: no "
		 "identity has it" },
	{ "allow-groups", "from-mix-ns identity to :80", { ID("from-mix-ns") }, DENY(NO_ALLOW_MATCHED),
	  .why = "that rule had requestPrincipals (L7): istiod removed the whole rule from the ALLOW" },
	{ "allow-groups", "when-l4-l7-ns identity", { ID("when-l4-l7-ns") }, DENY(NO_ALLOW_MATCHED),
	  .why = "its `when` had connection.sni (L7): removed whole" },
	{ "allow-groups", "plaintext from 10.10.10.10", { .src = "10.10.10.10", PLAIN }, DENY(NO_ALLOW_MATCHED),
	  .why = "source.namespace needs an identity" },

	/* ALLOW, every field: each AP rule one group; rules with L7 only are gone */
	{ "allow-full", "identity ns/sa from 3.3.3.3 to 10.0.0.1:8080",
	  { .src = "3.3.3.3", .id = "cluster.local/ns/ns/sa/sa", .dst = "10.0.0.1", .port = 8080 },
	  ALLOW(ALLOW_MATCHED), BY("cfg/allow", 1), "serviceAccounts ns/sa" },
	{ "allow-full", "identity cfg/sa-only, same connection",
	  { .src = "3.3.3.3", .id = "cluster.local/ns/cfg/sa/sa-only", .dst = "10.0.0.1", .port = 8080 },
	  ALLOW(ALLOW_MATCHED), BY("cfg/allow", 1), "the bare 'sa-only' took the policy's namespace, cfg" },
	{ "allow-full", "identity other/sa-only, same connection",
	  { .src = "3.3.3.3", .id = "cluster.local/ns/other/sa/sa-only", .dst = "10.0.0.1", .port = 8080 },
	  DENY(NO_ALLOW_MATCHED),
	  .why = "no listed SA pair; the principal and namespace rules pair '*' with a not '*', which an identity "
		 "always hits" },
	{ "allow-full", "plaintext from 5.6.7.8 to 10.0.0.1:8080", { .src = "5.6.7.8", PLAIN, .dst = "10.0.0.1", .port = 8080 },
	  ALLOW(ALLOW_MATCHED), BY("cfg/allow", 3), "ipBlocks 5.6.0.0/16" },
	{ "allow-full", "plaintext from 192.168.10.9 to 10.0.0.1:8080",
	  { .src = "192.168.10.9", PLAIN, .dst = "10.0.0.1", .port = 8080 }, ALLOW(ALLOW_MATCHED), BY("cfg/allow", 5),
	  "`when` source.ip 192.168.10.0/24 (remote.ip, L7, was dropped before it)" },
	{ "allow-full", "plaintext from 3.3.3.3 to 192.168.10.7:8080",
	  { .src = "3.3.3.3", PLAIN, .dst = "192.168.10.7", .port = 8080 }, ALLOW(ALLOW_MATCHED), BY("cfg/allow", 8),
	  "`when` destination.ip 192.168.10.0/24" },
	{ "allow-full", "plaintext from 3.3.3.3 to 10.0.0.1:90", { .src = "3.3.3.3", PLAIN, .dst = "10.0.0.1", .port = 90 },
	  ALLOW(ALLOW_MATCHED), BY("cfg/allow", 4), "ports 80, 90" },
	{ "allow-full", "plaintext from 3.3.3.3 to 10.0.0.1:92", { .src = "3.3.3.3", PLAIN, .dst = "10.0.0.1", .port = 92 },
	  ALLOW(ALLOW_MATCHED), BY("cfg/allow", 9), "`when` destination.port 91, 92" },
	{ "allow-full", "plaintext from 3.3.3.3 to 10.0.0.1:800", { .src = "3.3.3.3", PLAIN, .dst = "10.0.0.1", .port = 800 },
	  DENY(NO_ALLOW_MATCHED), .why = "800 is only in notPorts" },
	{ "allow-full", "plaintext from 3.3.3.3 to 10.0.0.1:8080",
	  { .src = "3.3.3.3", PLAIN, .dst = "10.0.0.1", .port = 8080 }, DENY(NO_ALLOW_MATCHED),
	  .why = "no identity fails every principal, namespace and SA list; no address or port rule holds" },

	/* DENY groups: L7 parts stripped, the rest kept; a clause left with an empty match never holds */
	{ "deny-groups", "when-l4-ns identity from 10.10.10.10 to :8080",
	  { .src = "10.10.10.10", ID("when-l4-ns"), .port = 8080 }, DENY(DENY_MATCHED), BY("/groups-deny", 5),
	  "the L4-only `when`: source.namespace and source.ip (not 20.20.20.20)" },
	{ "deny-groups", "when-l4-ns identity from 10.10.10.11", { .src = "10.10.10.11", ID("when-l4-ns") },
	  ALLOW(NO_ALLOW_POLICIES), .why = "source.ip differs; a DENY alone allows what it misses" },
	{ "deny-groups", "when-l4-l7-ns identity", { ID("when-l4-l7-ns") }, ALLOW(NO_ALLOW_POLICIES),
	  .why = "connection.sni became an empty match, skipped: its clause never holds" },
	{ "deny-groups", "from-mix-ns identity to :80", { ID("from-mix-ns") }, ALLOW(NO_ALLOW_POLICIES),
	  .why = "requestPrincipals stripped, but principal 'from-mix-principal' is not TD/ns/NS/sa/SA" },
	{ "deny-groups", "plaintext to :80", { PLAIN }, ALLOW(NO_ALLOW_POLICIES),
	  .why = "the L7-only rules are all empty matches: they deny nobody" },

	/* PeerAuthentication, one STRICT port: DENY (that port, no identity) */
	{ "peer-authn-disable-port-mtls-strict", "plaintext to :9090", { PLAIN, .port = 9090 }, DENY(DENY_MATCHED),
	  BY("/converted_peer_authentication_disable-strict-mtls", 0), "9090 is STRICT" },
	{ "peer-authn-disable-port-mtls-strict", "identity to :9090", { .port = 9090 }, ALLOW(NO_ALLOW_POLICIES),
	  .why = "an identity is mTLS here" },
	{ "peer-authn-disable-port-mtls-strict", "plaintext to :8080", { PLAIN, .port = 8080 }, ALLOW(NO_ALLOW_POLICIES),
	  .why = "the workload is DISABLE elsewhere" },
	{ "peer-authn-permissive-port-mtls-strict", "plaintext to :9090", { PLAIN, .port = 9090 }, DENY(DENY_MATCHED),
	  BY("/converted_peer_authentication_permissive-strict-mtls", 0), "9090 is STRICT" },
	{ "peer-authn-permissive-port-mtls-strict", "plaintext to :8080", { PLAIN, .port = 8080 }, ALLOW(NO_ALLOW_POLICIES),
	  .why = "PERMISSIVE elsewhere" },
	{ "peer-authn-permissive-port-mtls-strict-and-permissive", "plaintext to :9090", { PLAIN, .port = 9090 },
	  DENY(DENY_MATCHED), BY("/converted_peer_authentication_permissive-strict-mtls", 0), "9090 is STRICT" },
	{ "peer-authn-permissive-port-mtls-strict-and-permissive", "plaintext to :8080", { PLAIN, .port = 8080 },
	  ALLOW(NO_ALLOW_POLICIES), .why = "8080 is PERMISSIVE" },
	{ "peer-authn-permissive-port-mtls-strict-and-permissive", "identity to :9090", { .port = 9090 },
	  ALLOW(NO_ALLOW_POLICIES), .why = "an identity passes STRICT" },
	{ "peer-authn-permissive-root-unset-namespace-mixed-workload-ports", "plaintext to :9090", { PLAIN, .port = 9090 },
	  DENY(DENY_MATCHED), BY("foo/converted_peer_authentication_workload", 0), "9090 is STRICT" },
	{ "peer-authn-permissive-root-unset-namespace-mixed-workload-ports", "plaintext to :8080", { PLAIN, .port = 8080 },
	  ALLOW(NO_ALLOW_POLICIES), .why = "8080 PERMISSIVE, the namespace UNSET inherits the root's PERMISSIVE" },
	{ "peer-authn-strict-root-permissive-namespace-strict-workload", "plaintext to :9090", { PLAIN, .port = 9090 },
	  DENY(DENY_MATCHED), BY("foo/converted_peer_authentication_workload", 0), "9090 is STRICT" },
	{ "peer-authn-strict-root-permissive-namespace-strict-workload", "plaintext to :8080", { PLAIN, .port = 8080 },
	  ALLOW(NO_ALLOW_POLICIES), .why = "the namespace's PERMISSIVE overrides the root's STRICT" },
	{ "peer-authn-unset-port-mtls-strict", "plaintext to :8080", { PLAIN, .port = 8080 }, DENY(DENY_MATCHED),
	  BY("/converted_peer_authentication_strict-mtls", 0), "8080 is STRICT" },
	{ "peer-authn-unset-port-mtls-strict", "plaintext to :9090", { PLAIN, .port = 9090 }, ALLOW(NO_ALLOW_POLICIES),
	  .why = "UNSET elsewhere (no mesh-wide policy here)" },
	{ "peer-authn-unset-port-mtls-strict", "identity to :8080", { .port = 8080 }, ALLOW(NO_ALLOW_POLICIES),
	  .why = "an identity passes STRICT" },
	/* two STRICT ports: one group each */
	{ "peer-authn-permissive-root-permissive-namespace-strict-workload-ports", "plaintext to :8080",
	  { PLAIN, .port = 8080 }, DENY(DENY_MATCHED), BY("foo/converted_peer_authentication_workload", 0),
	  "8080 is STRICT (group 0)" },
	{ "peer-authn-permissive-root-permissive-namespace-strict-workload-ports", "plaintext to :9090",
	  { PLAIN, .port = 9090 }, DENY(DENY_MATCHED), BY("foo/converted_peer_authentication_workload", 1),
	  "9090 is STRICT (group 1)" },
	{ "peer-authn-permissive-root-permissive-namespace-strict-workload-ports", "plaintext to :80", { PLAIN },
	  ALLOW(NO_ALLOW_POLICIES), .why = "PERMISSIVE elsewhere" },
	{ "peer-authn-permissive-root-permissive-namespace-strict-workload-ports", "identity to :9090", { .port = 9090 },
	  ALLOW(NO_ALLOW_POLICIES), .why = "an identity passes STRICT" },

	/* STRICT except one port: DENY (no identity) AND (not that port), two clauses */
	{ "peer-authn-permissive-root-strict-namespace-permissive-workload", "plaintext to :8080", { PLAIN, .port = 8080 },
	  DENY(DENY_MATCHED), BY("foo/converted_peer_authentication_workload", 0), "the namespace is STRICT" },
	{ "peer-authn-permissive-root-strict-namespace-permissive-workload", "plaintext to :9090", { PLAIN, .port = 9090 },
	  ALLOW(NO_ALLOW_POLICIES), .why = "9090 is PERMISSIVE" },
	{ "peer-authn-permissive-root-strict-namespace-permissive-workload", "identity to :8080", { .port = 8080 },
	  ALLOW(NO_ALLOW_POLICIES), .why = "an identity passes STRICT" },
	{ "peer-authn-strict-and-disable-port-mtls", "plaintext to :8080", { PLAIN, .port = 8080 }, DENY(DENY_MATCHED),
	  BY("/converted_peer_authentication_strict-and-disable-mtls", 0), "STRICT but on 9090" },
	{ "peer-authn-strict-and-disable-port-mtls", "plaintext to :9090", { PLAIN, .port = 9090 }, ALLOW(NO_ALLOW_POLICIES),
	  .why = "9090 is DISABLE" },
	{ "peer-authn-strict-and-permissive-port-mtls", "plaintext to :8080", { PLAIN, .port = 8080 }, DENY(DENY_MATCHED),
	  BY("/converted_peer_authentication_strict-and-permissive-mtls", 0), "STRICT but on 9090" },
	{ "peer-authn-strict-and-permissive-port-mtls", "plaintext to :9090", { PLAIN, .port = 9090 },
	  ALLOW(NO_ALLOW_POLICIES), .why = "9090 is PERMISSIVE" },
	{ "peer-authn-strict-port-mtls-strict-and-permissive", "plaintext to :9090", { PLAIN, .port = 9090 },
	  DENY(DENY_MATCHED), BY("/converted_peer_authentication_permissive-strict-mtls", 0), "STRICT, 9090 too" },
	{ "peer-authn-strict-port-mtls-strict-and-permissive", "plaintext to :8080", { PLAIN, .port = 8080 },
	  ALLOW(NO_ALLOW_POLICIES), .why = "8080 is PERMISSIVE" },
	{ "peer-authn-strict-root-permissive-workload", "plaintext to :8080", { PLAIN, .port = 8080 }, DENY(DENY_MATCHED),
	  BY("foo/converted_peer_authentication_workload", 0), "the root is STRICT" },
	{ "peer-authn-strict-root-permissive-workload", "plaintext to :9090", { PLAIN, .port = 9090 },
	  ALLOW(NO_ALLOW_POLICIES), .why = "9090 is PERMISSIVE on the workload" },
	{ "peer-authn-strict-root-unset-workload-port-mtls-strict-and-permissive", "plaintext to :8080",
	  { PLAIN, .port = 8080 }, DENY(DENY_MATCHED), BY("foo/converted_peer_authentication_workload", 0),
	  "8080 STRICT, and the root STRICT" },
	{ "peer-authn-strict-root-unset-workload-port-mtls-strict-and-permissive", "plaintext to :80", { PLAIN },
	  DENY(DENY_MATCHED), BY("foo/converted_peer_authentication_workload", 0), "the root's STRICT" },
	{ "peer-authn-strict-root-unset-workload-port-mtls-strict-and-permissive", "plaintext to :9090",
	  { PLAIN, .port = 9090 }, ALLOW(NO_ALLOW_POLICIES), .why = "9090 is PERMISSIVE" },

	/* nothing sent */
	{ "peer-authn-disable", "plaintext to :8080", { PLAIN, .port = 8080 }, ALLOW(NO_ALLOW_POLICIES),
	  .why = "DISABLE: no policy" },
	{ "peer-authn-disable", "identity to :9090", { .port = 9090 }, ALLOW(NO_ALLOW_POLICIES), .why = "no policy" },
	{ "peer-authn-permissive", "plaintext to :8080", { PLAIN, .port = 8080 }, ALLOW(NO_ALLOW_POLICIES),
	  .why = "PERMISSIVE: no policy" },
	{ "peer-authn-permissive", "identity to :8080", { .port = 8080 }, ALLOW(NO_ALLOW_POLICIES), .why = "no policy" },
	{ "peer-authn-permissive-root-permissive-workload", "plaintext to :9090", { PLAIN, .port = 9090 },
	  ALLOW(NO_ALLOW_POLICIES), .why = "PERMISSIVE everywhere: no policy" },
	{ "peer-authn-permissive-root-permissive-workload", "plaintext to :8080", { PLAIN, .port = 8080 },
	  ALLOW(NO_ALLOW_POLICIES), .why = "PERMISSIVE everywhere: no policy" },
	/* nothing converted: STRICT everywhere is the static strict policy's job */
	{ "peer-authn-strict", "plaintext to :8080", { PLAIN, .port = 8080 }, true, DENY(DENY_MATCHED),
	  BY(STATIC_STRICT_KEY, 0), "STRICT: istio_converted_static_strict denies no identity" },
	{ "peer-authn-strict", "identity to :8080", { .port = 8080 }, true, ALLOW(NO_ALLOW_POLICIES),
	  .why = "an identity passes" },
	{ "peer-authn-strict-workload", "plaintext to :9090", { PLAIN, .port = 9090 }, true, DENY(DENY_MATCHED),
	  BY(STATIC_STRICT_KEY, 0), "STRICT on the workload" },
	{ "peer-authn-strict-workload", "identity to :9090", { .port = 9090 }, true, ALLOW(NO_ALLOW_POLICIES),
	  .why = "an identity passes" },
	{ "peer-authn-strict-and-strict-port-mtls", "plaintext to :8080", { PLAIN, .port = 8080 }, true,
	  DENY(DENY_MATCHED), BY(STATIC_STRICT_KEY, 0), "STRICT, 8080 too: nothing to convert" },
	{ "peer-authn-strict-and-strict-port-mtls", "identity to :9090", { .port = 9090 }, true, ALLOW(NO_ALLOW_POLICIES),
	  .why = "an identity passes" },
};

static void fixture_scenarios(void **state)
{
	(void)state;
	for (size_t i = 0; i < TEST_ARRAY_SIZE(scenarios); i++) {
		const struct scenario *s = &scenarios[i];
		Istio__Security__Authorization *msg = authz_fixture_load(s->file);
		struct sm_authz_policy *policies[2] = { NULL };
		const struct sm_authz_policy *list[2];
		char reason[256] = "";
		struct sm_authz_decision d;
		struct conn_buf b;
		size_t n = 0;

		if (msg) {
			if (sm_authz_policy_parse(msg, &policies[n], reason, sizeof(reason)))
				fail_msg("%s: %s", s->file, reason);
			list[n] = policies[n];
			n++;
		}
		if (s->static_strict) {
			policies[n] = parse_text(STATIC_STRICT);
			list[n] = policies[n];
			n++;
		}
		sm_authz_evaluate(list, n, connection(&s->conn, &b), &d);
		if (d.action != s->action || d.reason != s->reason || (d.policy == NULL) != (s->policy == NULL) ||
		    (d.policy && (strcmp(d.policy->key, s->policy) || d.witness.rule != (size_t)s->rule)))
			fail_msg("%s, %s: action %u reason %u policy %s rule %zu, want %u %u %s %d (%s)", s->file,
				 s->connection, d.action, d.reason, d.policy ? d.policy->key : "none", d.witness.rule,
				 s->action, s->reason, s->policy ? s->policy : "none", s->rule, s->why);
		/* no dry-run here: the dry-run verdict is the same */
		assert_int_equal(d.dry_run_action, d.action);
		assert_null(d.dry_run_policy);
		for (size_t k = 0; k < n; k++)
			sm_authz_policy_free(policies[k]);
		authz_fixture_free(msg);
	}
	print_message("# %zu scenarios\n", TEST_ARRAY_SIZE(scenarios));
}

/* Every output in the fixture directory has at least two scenarios. */
static void fixtures_covered(void **state)
{
	DIR *dir = opendir(SM_FIXTURES_DIR "/istio-authz");
	struct dirent *e;
	size_t files = 0;

	(void)state;
	assert_non_null(dir);
	while ((e = readdir(dir))) {
		size_t len = strlen(e->d_name), count = 0;

		if (len < 6 || strcmp(e->d_name + len - 5, ".yaml") != 0 ||
		    (len > 8 && strcmp(e->d_name + len - 8, "-in.yaml") == 0))
			continue;
		files++;
		for (size_t i = 0; i < TEST_ARRAY_SIZE(scenarios); i++)
			if (strlen(scenarios[i].file) == len - 5 && strncmp(scenarios[i].file, e->d_name, len - 5) == 0)
				count++;
		if (count < 2)
			fail_msg("%s has %zu scenarios, want 2 or more", e->d_name, count);
	}
	closedir(dir);
	assert_int_equal(files, 22);
	print_message("# %zu istiod outputs\n", files);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(match_table),
		cmocka_unit_test(witness),
		cmocka_unit_test(decision_table),
		cmocka_unit_test(identities),
		cmocka_unit_test(long_identity),
		cmocka_unit_test(parse_fields),
		cmocka_unit_test(reject_table),
		cmocka_unit_test(reject_long_strings),
		cmocka_unit_test(reject_limits),
		cmocka_unit_test(fixture_scenarios),
		cmocka_unit_test(fixtures_covered),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
