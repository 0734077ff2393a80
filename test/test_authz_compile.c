/* SPDX-License-Identifier: Apache-2.0 */
/*
 * authz/'s compiler: hand cases, then the differential test (random worlds: sm_authz_tables_lookup gives
 * what sm_authz_evaluate gives for every connection tried), then the cost of a large compilation.
 *   AUTHZ_SEED=N    the differential test's seed (printed; default: from the clock)
 *   AUTHZ_CASES=N   connections it tries (default 20,000)
 * and istiod's golden outputs (test/fixtures/istio-authz) compiled together, against sources made to fit them.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <time.h>

#include "authz/compile_internal.h"
#include "authz_fixture.h"
#include "authz_random.h"
#include "helpers.h"

/* ---- building by hand ---- */

static void v4(uint8_t out[16], uint8_t a, uint8_t b, uint8_t c, uint8_t d)
{
	memset(out, 0, 16);
	out[10] = out[11] = 0xff;
	out[12] = a;
	out[13] = b;
	out[14] = c;
	out[15] = d;
}

static struct sm_authz_cidr cidr4(uint8_t a, uint8_t b, uint8_t c, uint8_t d, uint8_t len)
{
	struct sm_authz_cidr x = { .prefix_len = (uint8_t)(96 + len) };

	v4(x.addr, a, b, c, d);
	return x;
}

/* A policy of one rule of one clause of one match. */
struct one {
	struct sm_authz_match match;
	struct sm_authz_clause clause;
	struct sm_authz_rule rule;
	struct sm_authz_policy policy;
};

static void one_init(struct one *o, const char *key, uint8_t action)
{
	memset(o, 0, sizeof(*o));
	o->clause = (struct sm_authz_clause){ 1, &o->match };
	o->rule = (struct sm_authz_rule){ 1, &o->clause };
	o->policy = (struct sm_authz_policy){ .key = (char *)key, .hash = sm_authz_policy_hash(key),
					      .action = action, .n_rules = 1, .rules = &o->rule };
}

static struct sm_authz_tables *compile_world(const struct authz_world *w, uint32_t max_verdicts)
{
	struct sm_authz_compile_input in = { .destinations = w->destinations, .n_destinations = w->n_destinations,
					     .sources = w->sources, .n_sources = w->n_sources,
					     .max_verdicts = max_verdicts };
	struct sm_authz_tables *t = NULL;
	char reason[256] = "";
	int err = sm_authz_compile(&in, 7, &t, reason, sizeof(reason));

	if (err)
		fail_msg("compile: %s (%d)", reason, err);
	assert_int_equal(t->generation, 7);
	return t;
}

/* Every (source address of srcs, destination of w, port of ports) agrees. */
static void check_grid(const struct authz_world *w, const struct sm_authz_tables *t, const uint8_t (*srcs)[16],
		       size_t n_srcs, const uint16_t *ports, size_t n_ports)
{
	char why[512];

	for (size_t s = 0; s < n_srcs; s++)
		for (size_t d = 0; d < w->n_destinations; d++)
			for (size_t p = 0; p < n_ports; p++) {
				struct sm_authz_connection conn = { .dst_port = ports[p] };
				const struct sm_authz_source *src;

				memcpy(conn.src, srcs[s], 16);
				memcpy(conn.dst, w->destinations[d].addr, 16);
				src = authz_world_source(w, conn.src);
				conn.src_identity = src && !src->node ? &src->identity : NULL;
				if (!authz_tables_agree(w, t, &conn, why, sizeof(why)))
					fail_msg("source %zu, destination %zu, port %u: %s", s, d, ports[p], why);
			}
}

static const uint16_t some_ports[] = { 80, 443, 8080, 1, 65535 };

/* ---- hand cases ---- */

static void test_empty(void **state)
{
	struct authz_world w = { 0 };
	struct sm_authz_tables *t = compile_world(&w, 0);
	struct sm_authz_verdict v;
	uint8_t a[16];

	(void)state;
	v4(a, 10, 0, 0, 1);
	assert_int_equal(t->n_dests + t->n_cidrs + t->n_sources + t->n_verdicts + t->n_idents, 0);
	assert_int_equal(sm_authz_tables_lookup(t, a, a, 80, &v), 0);
	sm_authz_tables_free(t);
}

/* A destination with no policies is guarded and allowed: "no allow policies". */
static void test_no_policies(void **state)
{
	struct sm_authz_destination d = { 0 };
	struct authz_world w = { .destinations = &d, .n_destinations = 1 };
	struct sm_authz_tables *t;
	struct sm_authz_verdict v;
	uint8_t src[16];

	(void)state;
	v4(d.addr, 10, 0, 0, 9);
	v4(src, 10, 1, 0, 1);
	t = compile_world(&w, 0);
	assert_int_equal(sm_authz_tables_lookup(t, src, d.addr, 80, &v), 1);
	assert_int_equal(v.action, SM_AUTHZ_ALLOW);
	assert_int_equal(v.reason, SM_AUTHZ_NO_ALLOW_POLICIES);
	assert_int_equal(t->n_verdicts, 1);
	sm_authz_tables_free(t);
}

static void test_one_deny(void **state)
{
	struct one deny;
	struct sm_authz_cidr c = cidr4(10, 1, 0, 0, 16);
	const struct sm_authz_policy *list[1] = { &deny.policy };
	struct sm_authz_destination d = { .policies = list, .n_policies = 1 };
	struct authz_world w = { .destinations = &d, .n_destinations = 1 };
	uint8_t srcs[3][16];
	struct sm_authz_tables *t;
	struct sm_authz_verdict v;

	(void)state;
	one_init(&deny, "ns/deny", SM_AUTHZ_DENY);
	deny.match.positive[SM_AUTHZ_SOURCE_IPS] = (struct sm_authz_list){ .n = 1, .cidrs = &c };
	v4(d.addr, 10, 0, 0, 9);
	v4(srcs[0], 10, 1, 2, 3);
	v4(srcs[1], 10, 2, 0, 1);
	memset(srcs[2], 0, 16);
	srcs[2][0] = 0xfd;
	t = compile_world(&w, 0);
	check_grid(&w, t, srcs, 3, some_ports, TEST_ARRAY_SIZE(some_ports));
	assert_int_equal(sm_authz_tables_lookup(t, srcs[0], d.addr, 80, &v), 1);
	assert_int_equal(v.action, SM_AUTHZ_DENY);
	assert_int_equal(v.reason, SM_AUTHZ_DENY_MATCHED);
	assert_true(v.policy == deny.policy.hash);
	assert_int_equal(t->n_cidrs, 1);
	sm_authz_tables_free(t);
}

/* A /8 in one list, a /16 inside it in another: the /16's class holds both lists. */
static void test_cidr_nesting(void **state)
{
	struct one allow, deny;
	struct sm_authz_cidr c8 = cidr4(10, 9, 9, 9, 8), c16 = cidr4(10, 1, 0, 0, 16), c24 = cidr4(10, 1, 2, 0, 24);
	struct sm_authz_cidr not16[2] = { c16, cidr4(10, 3, 0, 0, 16) };
	const struct sm_authz_policy *list[2] = { &deny.policy, &allow.policy };
	struct sm_authz_destination d = { .policies = list, .n_policies = 2 };
	struct authz_world w = { .destinations = &d, .n_destinations = 1 };
	uint8_t srcs[6][16];
	struct sm_authz_tables *t;

	(void)state;
	one_init(&allow, "ns/allow", SM_AUTHZ_ALLOW);
	allow.match.positive[SM_AUTHZ_SOURCE_IPS] = (struct sm_authz_list){ .n = 1, .cidrs = &c8 };
	allow.match.negative[SM_AUTHZ_SOURCE_IPS] = (struct sm_authz_list){ .n = 2, .cidrs = not16 };
	one_init(&deny, "ns/deny", SM_AUTHZ_DENY);
	deny.match.positive[SM_AUTHZ_SOURCE_IPS] = (struct sm_authz_list){ .n = 1, .cidrs = &c24 };
	v4(d.addr, 10, 0, 0, 9);
	v4(srcs[0], 10, 1, 2, 3);  /* /24: denied */
	v4(srcs[1], 10, 1, 3, 1);  /* /16 only: not allowed */
	v4(srcs[2], 10, 2, 0, 1);  /* /8 only: allowed */
	v4(srcs[3], 10, 3, 0, 1);  /* the other /16 */
	v4(srcs[4], 11, 0, 0, 1);  /* outside */
	v4(srcs[5], 10, 255, 255, 255);
	t = compile_world(&w, 0);
	check_grid(&w, t, srcs, 6, some_ports, TEST_ARRAY_SIZE(some_ports));
	assert_int_equal(t->n_cidrs, 4); /* /8, /16, /24, the other /16 (same class as the first /16, but its parent's differs) */
	sm_authz_tables_free(t);
}

static void test_port_specific(void **state)
{
	struct one allow;
	uint16_t ports[2] = { 80, 8080 }, not_ports[1] = { 8080 };
	const struct sm_authz_policy *list[1] = { &allow.policy };
	struct sm_authz_destination d = { .policies = list, .n_policies = 1 };
	struct authz_world w = { .destinations = &d, .n_destinations = 1 };
	uint8_t srcs[1][16];
	struct sm_authz_tables *t;
	struct sm_authz_verdict v;

	(void)state;
	one_init(&allow, "ns/web", SM_AUTHZ_ALLOW);
	allow.match.positive[SM_AUTHZ_DESTINATION_PORTS] = (struct sm_authz_list){ .n = 2, .ports = ports };
	allow.match.negative[SM_AUTHZ_DESTINATION_PORTS] = (struct sm_authz_list){ .n = 1, .ports = not_ports };
	v4(d.addr, 10, 0, 0, 9);
	v4(srcs[0], 10, 0, 0, 1);
	t = compile_world(&w, 0);
	check_grid(&w, t, srcs, 1, some_ports, TEST_ARRAY_SIZE(some_ports));
	assert_int_equal(sm_authz_tables_lookup(t, srcs[0], d.addr, 80, &v), 1);
	assert_int_equal(v.reason, SM_AUTHZ_ALLOW_MATCHED);
	assert_int_equal(sm_authz_tables_lookup(t, srcs[0], d.addr, 8080, &v), 1);
	assert_int_equal(v.reason, SM_AUTHZ_NO_ALLOW_MATCHED);
	assert_int_equal(t->n_verdicts, 2); /* (set, 0, 0) denies, (set, 0, 80) allows */
	sm_authz_tables_free(t);
}

/* principals, namespaces, service accounts; an address with no identity; deny-plaintext. */
static void test_identities(void **state)
{
	struct one allow, strict;
	struct sm_authz_string principals[1] = { { SM_AUTHZ_SUFFIX, "/sa/sa1" } };
	struct sm_authz_string namespaces[1] = { { SM_AUTHZ_EXACT, "ns2" } };
	struct sm_authz_service_account accounts[1] = { { "ns1", "sa1" } };
	struct sm_authz_string presence[1] = { { SM_AUTHZ_PRESENCE, "" } };
	const struct sm_authz_policy *list[2] = { &strict.policy, &allow.policy };
	struct sm_authz_destination d = { .policies = list, .n_policies = 2 };
	struct sm_authz_source sources[4] = {
		{ .identity = { "cluster.local", "ns1", "sa1" } },
		{ .identity = { "cluster.local", "ns2", "sa1" } },
		{ .identity = { "other.td", "ns1", "sa1" } },
		{ .identity = { "cluster.local", "ns1", "sa2" } },
	};
	struct authz_world w = { .destinations = &d, .n_destinations = 1, .sources = sources, .n_sources = 4 };
	uint8_t srcs[5][16];
	struct sm_authz_tables *t;

	(void)state;
	one_init(&allow, "ns/allow", SM_AUTHZ_ALLOW);
	allow.match.positive[SM_AUTHZ_PRINCIPALS] = (struct sm_authz_list){ .n = 1, .strings = principals };
	allow.match.negative[SM_AUTHZ_NAMESPACES] = (struct sm_authz_list){ .n = 1, .strings = namespaces };
	allow.match.positive[SM_AUTHZ_SERVICE_ACCOUNTS] = (struct sm_authz_list){ .n = 1, .accounts = accounts };
	one_init(&strict, "istio-system/istio_converted_static_strict", SM_AUTHZ_DENY);
	strict.match.negative[SM_AUTHZ_PRINCIPALS] = (struct sm_authz_list){ .n = 1, .strings = presence };
	v4(d.addr, 10, 0, 0, 9);
	for (int i = 0; i < 4; i++) {
		v4(sources[i].addr, 10, 0, 1, (uint8_t)i);
		memcpy(srcs[i], sources[i].addr, 16);
	}
	v4(srcs[4], 10, 0, 2, 1); /* no identity: denied by the strict policy */
	t = compile_world(&w, 0);
	check_grid(&w, t, srcs, 5, some_ports, TEST_ARRAY_SIZE(some_ports));
	sm_authz_tables_free(t);
}

/* The node's addresses are exempt (-ENOENT), whatever the policies; an address listed twice: the first wins. */
static void test_node_and_duplicates(void **state)
{
	struct one deny;
	const struct sm_authz_policy *list[1] = { &deny.policy };
	struct sm_authz_destination d = { .policies = list, .n_policies = 1 };
	struct sm_authz_source sources[3] = {
		{ .node = true, .identity = { "cluster.local", "ns1", "sa1" } },
		{ .identity = { "cluster.local", "ns1", "sa1" } },
		{ .identity = { "cluster.local", "ns2", "sa2" } },
	};
	struct sm_authz_string ns1[1] = { { SM_AUTHZ_EXACT, "ns1" } };
	struct authz_world w = { .destinations = &d, .n_destinations = 1, .sources = sources, .n_sources = 3 };
	uint8_t srcs[2][16];
	struct sm_authz_tables *t;
	struct sm_authz_verdict v;

	(void)state;
	one_init(&deny, "ns/deny-ns1", SM_AUTHZ_DENY);
	deny.match.positive[SM_AUTHZ_NAMESPACES] = (struct sm_authz_list){ .n = 1, .strings = ns1 };
	v4(d.addr, 10, 0, 0, 9);
	v4(sources[0].addr, 10, 0, 0, 1);
	v4(sources[1].addr, 10, 0, 0, 2);
	v4(sources[2].addr, 10, 0, 0, 2); /* listed again: the first (ns1) wins */
	memcpy(srcs[0], sources[0].addr, 16);
	memcpy(srcs[1], sources[1].addr, 16);
	t = compile_world(&w, 0);
	check_grid(&w, t, srcs, 2, some_ports, TEST_ARRAY_SIZE(some_ports));
	assert_int_equal(sm_authz_tables_lookup(t, srcs[0], d.addr, 80, &v), -ENOENT);
	assert_int_equal(sm_authz_tables_lookup(t, srcs[0], srcs[1], 80, &v), 0); /* unguarded: nothing to exempt from */
	assert_int_equal(sm_authz_tables_lookup(t, srcs[1], d.addr, 80, &v), 1);
	assert_int_equal(v.action, SM_AUTHZ_DENY);
	assert_int_equal(t->n_idents, 2);
	assert_true(t->ident_values[0].identity == SM_AUTHZ_IDENTITY_NODE);
	sm_authz_tables_free(t);
}

/* A dry-run DENY that matches: allowed, dry-run denied by it; a dry-run ALLOW alone: dry-run "none allowed". */
static void test_dry_run(void **state)
{
	struct one dry_deny, dry_allow;
	uint16_t p80[1] = { 80 }, p443[1] = { 443 };
	const struct sm_authz_policy *list[2] = { &dry_deny.policy, &dry_allow.policy };
	struct sm_authz_destination d = { .policies = list, .n_policies = 2 };
	struct authz_world w = { .destinations = &d, .n_destinations = 1 };
	uint8_t srcs[1][16];
	struct sm_authz_tables *t;
	struct sm_authz_verdict v;

	(void)state;
	one_init(&dry_deny, "ns/dry-deny", SM_AUTHZ_DENY);
	dry_deny.policy.dry_run = true;
	dry_deny.match.positive[SM_AUTHZ_DESTINATION_PORTS] = (struct sm_authz_list){ .n = 1, .ports = p80 };
	one_init(&dry_allow, "ns/dry-allow", SM_AUTHZ_ALLOW);
	dry_allow.policy.dry_run = true;
	dry_allow.match.positive[SM_AUTHZ_DESTINATION_PORTS] = (struct sm_authz_list){ .n = 1, .ports = p443 };
	v4(d.addr, 10, 0, 0, 9);
	v4(srcs[0], 10, 0, 0, 1);
	t = compile_world(&w, 0);
	check_grid(&w, t, srcs, 1, some_ports, TEST_ARRAY_SIZE(some_ports));
	assert_int_equal(sm_authz_tables_lookup(t, srcs[0], d.addr, 80, &v), 1);
	assert_int_equal(v.action, SM_AUTHZ_ALLOW);
	assert_int_equal(v.reason, SM_AUTHZ_NO_ALLOW_POLICIES);
	assert_int_equal(v.dry_run_action, SM_AUTHZ_DENY);
	assert_true(v.dry_run_policy == dry_deny.policy.hash);
	assert_int_equal(sm_authz_tables_lookup(t, srcs[0], d.addr, 443, &v), 1);
	assert_int_equal(v.dry_run_reason, SM_AUTHZ_ALLOW_MATCHED);
	assert_int_equal(sm_authz_tables_lookup(t, srcs[0], d.addr, 8080, &v), 1);
	assert_int_equal(v.dry_run_reason, SM_AUTHZ_NO_ALLOW_MATCHED);
	assert_true(v.dry_run_policy == 0);
	sm_authz_tables_free(t);
}

static void test_too_big(void **state)
{
	struct one allow;
	uint16_t ports[3] = { 80, 81, 82 };
	const struct sm_authz_policy *list[1] = { &allow.policy };
	struct sm_authz_destination d = { .policies = list, .n_policies = 1 };
	struct sm_authz_compile_input in = { .destinations = &d, .n_destinations = 1, .max_verdicts = 3 };
	struct sm_authz_tables *t = NULL;
	char reason[256] = "";

	(void)state;
	one_init(&allow, "ns/web", SM_AUTHZ_ALLOW);
	allow.match.positive[SM_AUTHZ_DESTINATION_PORTS] = (struct sm_authz_list){ .n = 3, .ports = ports };
	v4(d.addr, 10, 0, 0, 9);
	assert_int_equal(sm_authz_compile(&in, 1, &t, reason, sizeof(reason)), -E2BIG);
	assert_null(t);
	assert_string_equal(reason, "verdicts: 4 entries needed, 3 fit");
	in.max_verdicts = 4;
	assert_int_equal(sm_authz_compile(&in, 1, &t, reason, sizeof(reason)), 0);
	sm_authz_tables_free(t);
}

/* Each table's limit, by name: dests, cidrs, sources. */
static void test_too_big_tables(void **state)
{
	struct one allow[2];
	struct sm_authz_cidr cidrs[2] = { cidr4(10, 1, 0, 0, 16), cidr4(10, 2, 0, 0, 16) };
	const struct sm_authz_policy *list[2] = { &allow[0].policy, &allow[1].policy };
	struct sm_authz_destination d[2] = { { .policies = list, .n_policies = 2 }, { .policies = list, .n_policies = 2 } };
	struct sm_authz_source sources[2] = { { .identity = { "cluster.local", "ns1", "sa1" } } };
	struct sm_authz_compile_input in = { .destinations = d, .n_destinations = 2, .sources = sources,
					     .n_sources = 1, .max_dests = 1 };
	struct sm_authz_tables *t = NULL;
	char reason[256] = "", want[256];

	(void)state;
	one_init(&allow[0], "ns/ips1", SM_AUTHZ_ALLOW);
	allow[0].match.positive[SM_AUTHZ_SOURCE_IPS] = (struct sm_authz_list){ .n = 1, .cidrs = &cidrs[0] };
	one_init(&allow[1], "ns/ips2", SM_AUTHZ_ALLOW);
	allow[1].match.positive[SM_AUTHZ_SOURCE_IPS] = (struct sm_authz_list){ .n = 1, .cidrs = &cidrs[1] };
	v4(d[0].addr, 10, 0, 0, 9);
	v4(d[1].addr, 10, 0, 0, 10);
	v4(sources[0].addr, 10, 1, 0, 1);
	assert_int_equal(sm_authz_compile(&in, 1, &t, reason, sizeof(reason)), -E2BIG);
	assert_string_equal(reason, "dests: 2 entries needed, 1 fit");
	in.max_dests = 2;
	in.max_cidrs = 1;
	assert_int_equal(sm_authz_compile(&in, 1, &t, reason, sizeof(reason)), -E2BIG);
	assert_string_equal(reason, "cidrs: 2 entries needed, 1 fit");
	in.max_cidrs = 2;
	assert_int_equal(sm_authz_compile(&in, 1, &t, reason, sizeof(reason)), 0);
	assert_true(t->n_sources >= 2); /* three classes, three verdicts: two classes need entries of their own */
	in.max_sources = (uint32_t)t->n_sources - 1;
	snprintf(want, sizeof(want), "sources: %zu entries needed, %u fit", t->n_sources, in.max_sources);
	sm_authz_tables_free(t);
	t = NULL;
	assert_int_equal(sm_authz_compile(&in, 1, &t, reason, sizeof(reason)), -E2BIG);
	assert_string_equal(reason, want);
	in.max_sources = 0;
	assert_int_equal(sm_authz_compile(&in, 0, &t, reason, sizeof(reason)), -EINVAL); /* generation 0 */
	assert_null(t);
}

/* 4,096 source classes (12 lists over 4,096 addresses, each address in its own subset) by 2,049 port
 * classes: more cells than a set may evaluate, refused by name before anything large is allocated. */
static void test_too_many_cells(void **state)
{
	struct sm_authz_match *matches = calloc(13, sizeof(*matches));
	struct sm_authz_cidr(*cidrs)[2048] = calloc(12, sizeof(*cidrs));
	uint16_t *ports = calloc(2048, sizeof(*ports));
	struct sm_authz_clause clauses[2] = { { 12, matches }, { 1, matches + 12 } };
	struct sm_authz_rule rules[2] = { { 1, &clauses[0] }, { 1, &clauses[1] } };
	struct sm_authz_policy p = { .key = "ns/cells", .hash = sm_authz_policy_hash("ns/cells"), .n_rules = 2,
				     .rules = rules };
	const struct sm_authz_policy *list[1] = { &p };
	struct sm_authz_destination d = { .policies = list, .n_policies = 1 };
	struct sm_authz_compile_input in = { .destinations = &d, .n_destinations = 1 };
	struct sm_authz_tables *t = NULL;
	char reason[256] = "";

	(void)state;
	assert_non_null(matches);
	assert_non_null(cidrs);
	assert_non_null(ports);
	for (int j = 0; j < 12; j++) {
		size_t n = 0;

		for (int a = 0; a < 4096; a++)
			if (a >> j & 1)
				cidrs[j][n++] = cidr4(10, 0, (uint8_t)(a >> 8), (uint8_t)a, 32);
		matches[j].positive[SM_AUTHZ_SOURCE_IPS] = (struct sm_authz_list){ .n = n, .cidrs = cidrs[j] };
	}
	for (int k = 0; k < 2048; k++)
		ports[k] = (uint16_t)(10000 + k);
	matches[12].positive[SM_AUTHZ_DESTINATION_PORTS] = (struct sm_authz_list){ .n = 2048, .ports = ports };
	v4(d.addr, 10, 1, 0, 1);
	assert_int_equal(sm_authz_compile(&in, 1, &t, reason, sizeof(reason)), -E2BIG);
	assert_null(t);
	assert_string_equal(reason, "verdicts: destination set 1 needs 4096 source classes by 2049 port classes "
				    "evaluated, more than 8388608");
	free(matches);
	free(cidrs);
	free(ports);
}

/* ---- the differential test ---- */

static uint64_t env_number(const char *name, uint64_t fallback)
{
	const char *text = getenv(name);

	return text && *text ? strtoull(text, NULL, 0) : fallback;
}

static void test_differential(void **state)
{
	uint64_t seed = env_number("AUTHZ_SEED", (uint64_t)time(NULL));
	uint64_t cases = env_number("AUTHZ_CASES", 20000), done = 0, guarded = 0;
	struct authz_rng rng = { seed };
	char why[512];

	(void)state;
	printf("# differential: AUTHZ_SEED=%llu AUTHZ_CASES=%llu\n", (unsigned long long)seed,
	       (unsigned long long)cases);
	for (uint64_t world = 0; done < cases; world++) {
		struct authz_world w;
		struct sm_authz_tables *t;

		authz_random_world(&rng, &w);
		t = compile_world(&w, 0);
		for (int i = 0; i < 64 && done < cases; i++, done++) {
			struct sm_authz_connection conn;
			struct sm_authz_decision unused;

			authz_random_connection(&rng, &w, &conn);
			guarded += authz_world_expect(&w, &conn, &unused) == 1;
			if (!authz_tables_agree(&w, t, &conn, why, sizeof(why)))
				fail_msg("AUTHZ_SEED=%llu, world %llu, connection %d: %s", (unsigned long long)seed,
					 (unsigned long long)world, i, why);
		}
		sm_authz_tables_free(t);
		authz_world_free(&w);
	}
	printf("# differential: %llu connections agree (%llu to guarded destinations)\n", (unsigned long long)done,
	       (unsigned long long)guarded);
}

/* ---- finding many addresses' CIDR classes in one walk ---- */

/* addr + delta (1 or -1) as a 128-bit big-endian number, wrapping */
static void step_addr(uint8_t addr[16], int delta)
{
	for (int i = 15; i >= 0; i--) {
		addr[i] = (uint8_t)(addr[i] + delta);
		if (addr[i] != (delta > 0 ? 0x00 : 0xff))
			return;
	}
}

static void check_class(const struct sm_authz_tables *t, const int32_t *parent, const uint8_t addr[16],
			uint64_t seed)
{
	uint32_t walked = sm_cidr_class_in(t, parent, addr), looked_up = sm_authz_cidr_class(t, addr);

	if (walked != looked_up)
		fail_msg("AUTHZ_SEED=%llu: class %u from the walk, %u from the lookups", (unsigned long long)seed,
			 walked, looked_up);
}

/* sm_cidr_class_in (the compiler's, for every source) gives what the per-length lookups give: at each
 * entry's first and last address and either side of them, and at random addresses. */
static void cidr_classes_in_one_walk(void **state)
{
	uint64_t seed = env_number("AUTHZ_SEED", (uint64_t)time(NULL)), checked = 0;
	struct authz_rng rng = { seed };

	(void)state;
	for (int world = 0; world < 300; world++) {
		struct authz_world w;
		struct sm_authz_tables *t;
		int32_t *parent;

		authz_random_world(&rng, &w);
		t = compile_world(&w, 0);
		assert_int_equal(sm_cidr_parents(t, &parent), 0);
		for (size_t e = 0; e < t->n_cidrs; e++) {
			uint8_t addr[16], last[16];
			unsigned len = t->cidr_keys[e].prefixlen - SM_AUTHZ_CIDR_PREFIX_BASE;

			memcpy(addr, t->cidr_keys[e].addr, 16);
			memcpy(last, addr, 16);
			for (unsigned bit = len; bit < 128; bit++)
				last[bit / 8] |= (uint8_t)(0x80 >> (bit % 8));
			check_class(t, parent, addr, seed);
			check_class(t, parent, last, seed);
			step_addr(addr, -1);
			step_addr(last, 1);
			check_class(t, parent, addr, seed);
			check_class(t, parent, last, seed);
			checked += 4;
		}
		for (int i = 0; i < 64; i++, checked++) {
			uint8_t addr[16];

			authz_random_addr(&rng, addr);
			check_class(t, parent, addr, seed);
		}
		free(parent);
		sm_authz_tables_free(t);
		authz_world_free(&w);
	}
	printf("# %llu addresses: the walk and the lookups agree\n", (unsigned long long)checked);
}

/* ---- idents: sorted, the first listing of each address ---- */

/* 6,000 sources over 2,500 addresses (IPv4-mapped ones differing in their last bytes, IPv6 ones in any
 * byte), each listed up to three times with other identities or as the node's: the idents hold each
 * address once, in address order, with its first listing's identity. */
static void idents_sorted_first_listing_wins(void **state)
{
	enum { ADDRS = 2500, SOURCES = 6000 };
	static uint8_t addrs[ADDRS][16];
	static struct sm_authz_source sources[SOURCES];
	struct authz_rng rng = { env_number("AUTHZ_SEED", (uint64_t)time(NULL)) };
	struct sm_authz_destination dest = { .addr = { [10] = 0xff, [11] = 0xff, 10, 0, 0, 1 } };
	struct sm_authz_compile_input in = { .destinations = &dest, .n_destinations = 1, .sources = sources,
					     .n_sources = SOURCES };
	struct sm_authz_tables *t = NULL;
	char reason[256];

	(void)state;
	for (size_t a = 0; a < ADDRS; a++) {
		if (a % 2) {
			addrs[a][10] = addrs[a][11] = 0xff;
			for (int b = 12; b < 16; b++)
				addrs[a][b] = (uint8_t)authz_below(&rng, b < 14 ? 4 : 256);
		} else {
			addrs[a][0] = (uint8_t[]){ 0x20, 0xfd, 0xfe }[authz_below(&rng, 3)];
			for (int b = 1; b < 16; b++)
				addrs[a][b] = (uint8_t)authz_below(&rng, 256);
		}
	}
	for (size_t i = 0; i < SOURCES; i++) {
		memcpy(sources[i].addr, addrs[authz_below(&rng, ADDRS)], 16);
		authz_random_identity(&rng, &sources[i].identity);
		sources[i].node = authz_chance(&rng, 10);
	}
	assert_int_equal(sm_authz_compile(&in, 1, &t, reason, sizeof(reason)), 0);
	for (size_t i = 0; i < t->n_idents; i++) {
		const struct sm_authz_source *first = NULL;

		if (i)
			assert_true(memcmp(t->ident_keys[i - 1].addr, t->ident_keys[i].addr, 16) < 0);
		for (size_t k = 0; k < SOURCES && !first; k++)
			if (!memcmp(sources[k].addr, t->ident_keys[i].addr, 16))
				first = &sources[k];
		assert_non_null(first);
		assert_true(t->ident_values[i].identity ==
			    (first->node ? SM_AUTHZ_IDENTITY_NODE : sm_authz_identity_hash(&first->identity)));
	}
	for (size_t k = 0; k < SOURCES; k++) { /* and every address is there */
		struct sm_frontend_key key;
		memcpy(key.addr, sources[k].addr, 16);
		assert_non_null(bsearch(&key, t->ident_keys, t->n_idents, sizeof(key), sm_authz_cmp_ident));
	}
	sm_authz_tables_free(t);
}

/* ---- a change of sources alone ---- */

/* w's sources changed as pod churn changes them: some gone, some given another identity or made the node's,
 * some new (addresses and identities from the same small pools, so that most pairs are known). */
static void churn_sources(struct authz_rng *r, const struct authz_world *w, struct sm_authz_source **out, size_t *n_out)
{
	size_t n = 0, n_new = authz_below(r, 6);
	struct sm_authz_source *s = calloc(w->n_sources + n_new + 1, sizeof(*s));

	assert_non_null(s);
	for (size_t i = 0; i < w->n_sources; i++) {
		if (authz_chance(r, 15))
			continue;
		s[n] = w->sources[i];
		if (authz_chance(r, 10))
			authz_random_identity(r, &s[n].identity);
		if (authz_chance(r, 5))
			s[n].node = !s[n].node;
		n++;
	}
	for (size_t i = 0; i < n_new; i++, n++) {
		authz_random_addr(r, s[n].addr);
		authz_random_identity(r, &s[n].identity);
		s[n].node = authz_chance(r, 5);
	}
	*out = s;
	*n_out = n;
}

static bool evaluator_allows(const struct authz_world *w, const uint8_t src[16], const uint8_t dst[16], uint16_t port)
{
	struct sm_authz_connection conn = { .dst_port = port };
	struct sm_authz_decision decision;
	const struct sm_authz_source *s = authz_world_source(w, src);

	memcpy(conn.src, src, 16);
	memcpy(conn.dst, dst, 16);
	conn.src_identity = s && !s->node ? &s->identity : NULL;
	return authz_world_expect(w, &conn, &decision) != 1 || decision.action == SM_AUTHZ_ALLOW;
}

/* By the evaluator: some source of either world denied by is, at dst, where was allowed it, on a port the
 * tables name or one they do not. */
static bool newly_denied_at(const struct authz_world *was, const struct authz_world *is, const struct sm_authz_tables *t,
			    const uint8_t dst[16])
{
	uint16_t ports[512];
	size_t n_ports = 0;

	ports[n_ports++] = 12345;
	for (size_t i = 0; i < t->n_verdicts && n_ports < 512; i++)
		if (t->verdict_keys[i].port && t->verdict_keys[i].port != htons(12345))
			ports[n_ports++] = ntohs(t->verdict_keys[i].port);
	for (int w = 0; w < 2; w++) {
		const struct authz_world *sources = w ? is : was;
		for (size_t i = 0; i < sources->n_sources; i++)
			for (size_t p = 0; p < n_ports; p++)
				if (evaluator_allows(was, sources->sources[i].addr, dst, ports[p]) &&
				    !evaluator_allows(is, sources->sources[i].addr, dst, ports[p]))
					return true;
	}
	return false;
}

static bool changed_dest(const struct sm_authz_tables *t, const uint8_t addr[16])
{
	for (size_t i = 0; i < t->n_changed_dests; i++)
		if (!memcmp(t->changed_dests[i].addr, addr, 16))
			return true;
	return false;
}

/* sm_authz_update_denies names exactly the destinations where the evaluator finds a source newly denied, and
 * perhaps also those an update of destinations gave another set. */
static bool denies_where_evaluator_does(const struct authz_world *was, const struct authz_world *is,
					const struct sm_authz_tables *prev, const struct sm_authz_tables *next, char *why,
					size_t why_size, bool *any)
{
	struct sm_frontend_key *dests;
	size_t n_dests;
	int ret = sm_authz_update_denies(prev, next, &dests, &n_dests);
	bool given_another_set = false;

	*any = false;
	assert_true(ret >= 0);
	for (size_t d = 0; d < next->n_dests; d++) {
		bool want = newly_denied_at(was, is, next, next->dest_keys[d].addr), got = false;

		for (size_t k = 0; k < n_dests; k++)
			got |= !memcmp(dests[k].addr, next->dest_keys[d].addr, 16);
		*any |= want;
		if (got && !want && changed_dest(next, next->dest_keys[d].addr)) {
			given_another_set = true; /* walked whatever it denies now */
			continue;
		}
		if (want != got) {
			snprintf(why, why_size, "destination %zu: sm_authz_update_denies %d, the evaluator %d", d, got, want);
			free(dests);
			return false;
		}
	}
	free(dests);
	if (ret != (*any || given_another_set))
		snprintf(why, why_size, "sm_authz_update_denies returned %d, the evaluator %d", ret, *any);
	return ret == (*any || given_another_set);
}

/* ---- whether a source's class is one the compilation made ---- */

#define MAX_SOURCE_BITS 2048

static const enum sm_authz_field source_fields[] = { SM_AUTHZ_SOURCE_IPS, SM_AUTHZ_PRINCIPALS, SM_AUTHZ_NAMESPACES,
						      SM_AUTHZ_SERVICE_ACCOUNTS };

/* Whether any entry of list, a list of field, matches the connection from src (identity) to dst: the
 * evaluator's answer for a policy of that list alone. */
static bool list_matches(const struct sm_authz_list *list, enum sm_authz_field field, const uint8_t src[16],
			 const struct sm_authz_identity *identity, const uint8_t dst[16])
{
	struct sm_authz_match match = { 0 };
	struct sm_authz_clause clause = { .n_matches = 1, .matches = &match };
	struct sm_authz_rule rule = { .n_clauses = 1, .clauses = &clause };
	struct sm_authz_policy policy = { .n_rules = 1, .rules = &rule };
	struct sm_authz_connection conn = { .src_identity = identity, .dst_port = 1 };

	match.positive[field] = *list;
	memcpy(conn.src, src, 16);
	memcpy(conn.dst, dst, 16);
	return sm_authz_policy_matches(&policy, &conn, NULL);
}

/* The source's bits against w's policies: for each list of a source field, positive or negative, in every
 * match, whether it matches. The evaluator reads nothing else of a source, so two sources with the same bits
 * are alike to every policy, and a compilation gives them one class. */
static size_t source_bits(const struct authz_world *w, const struct sm_authz_source *s, bool bits[MAX_SOURCE_BITS])
{
	const struct sm_authz_identity *identity = s->node ? NULL : &s->identity;
	size_t n = 0;

	for (size_t p = 0; p < w->n_policies; p++)
		for (size_t r = 0; r < w->policies[p]->n_rules; r++)
			for (size_t k = 0; k < w->policies[p]->rules[r].n_clauses; k++) {
				const struct sm_authz_clause *c = &w->policies[p]->rules[r].clauses[k];

				for (size_t m = 0; m < c->n_matches; m++)
					for (size_t f = 0; f < sizeof(source_fields) / sizeof(*source_fields); f++)
						for (int negative = 0; negative < 2; negative++) {
							const struct sm_authz_list *list =
								negative ? &c->matches[m].negative[source_fields[f]]
									 : &c->matches[m].positive[source_fields[f]];

							if (!list->n)
								continue;
							assert_true(n < MAX_SOURCE_BITS);
							bits[n++] = list_matches(list, source_fields[f], s->addr, identity,
										 s->addr);
						}
			}
	return n;
}

/* The distinct bits of the sources a compilation of one world's policies gave a class (and of those given
 * one since: the same classes), each once. */
struct known_classes {
	struct { size_t n; bool bits[MAX_SOURCE_BITS]; } *items;
	size_t n;
};

static bool class_known(const struct known_classes *known, const bool *bits, size_t n)
{
	for (size_t k = 0; k < known->n; k++)
		if (known->items[k].n == n && !memcmp(known->items[k].bits, bits, n * sizeof(*bits)))
			return true;
	return false;
}

/* w's sources with an identity (the first listing of each address) into known. */
static void know_classes(struct known_classes *known, const struct authz_world *w)
{
	static bool bits[MAX_SOURCE_BITS];

	for (size_t i = 0; i < w->n_sources; i++) {
		const struct sm_authz_source *s = &w->sources[i];
		size_t n;

		if (s->node || authz_world_source(w, s->addr) != s)
			continue;
		n = source_bits(w, s, bits);
		if (class_known(known, bits, n))
			continue;
		known->items = realloc(known->items, (known->n + 1) * sizeof(*known->items));
		assert_non_null(known->items);
		known->items[known->n].n = n;
		memcpy(known->items[known->n++].bits, bits, n * sizeof(*bits));
	}
}

/* Whether every source of now with an identity (the first listing of its address) has known bits: then no
 * pair needs a class the compilation did not make, and an update of the sources must be taken. */
static bool classes_known(const struct authz_world *now, const struct known_classes *known)
{
	static bool bits[MAX_SOURCE_BITS];

	for (size_t i = 0; i < now->n_sources; i++) {
		const struct sm_authz_source *s = &now->sources[i];

		if (!s->node && authz_world_source(now, s->addr) == s && !class_known(known, bits, source_bits(now, s, bits)))
			return false;
	}
	return true;
}

/* sm_authz_update_sources over a few rounds of churn from one compilation: each time it takes the change, its
 * tables agree with the evaluator on the new sources (every source against every destination, and random
 * connections), and sm_authz_update_denies names exactly the destinations where one of them, or one
 * gone, is now denied what was allowed; each time it refuses, a new pair was there whose class the
 * compilation did not make, and one whose every source has the bits of a source
 * compiled (classes_known) is never refused. Taken with new pairs given a class (some with sources entries
 * added), and refused: all happen. */
static void update_sources_agrees(void **state)
{
	uint64_t seed = env_number("AUTHZ_SEED", (uint64_t)time(NULL)), taken = 0, refused = 0, denying = 0;
	uint64_t classified = 0, entries_added = 0, known_taken = 0;
	struct authz_rng rng = { seed };
	char reason[256], why[512];

	(void)state;
	for (int world = 0; world < 400; world++) {
		struct authz_world w, now;
		struct sm_authz_tables *t;

		struct known_classes known = { 0 };

		authz_random_world(&rng, &w);
		t = compile_world(&w, 0);
		know_classes(&known, &w);
		now = w;
		now.sources = NULL;
		for (int round = 0; round < 4; round++) {
			struct authz_world was = round ? now : w;
			struct sm_authz_source *sources;
			struct sm_authz_tables *next = NULL;
			size_t n;

			churn_sources(&rng, &was, &sources, &n);
			now.sources = sources;
			now.n_sources = n;
			struct sm_authz_compile_input in = { .destinations = now.destinations,
							     .n_destinations = now.n_destinations,
							     .sources = now.sources, .n_sources = now.n_sources };
			bool classes_compiled = classes_known(&now, &known);
			int err = sm_authz_update_sources(t, &in, &next, reason, sizeof(reason));
			if (err == -ESRCH && classes_compiled)
				fail_msg("AUTHZ_SEED=%llu, world %d, round %d: refused, though every source has the bits of "
					 "one compiled: %s", (unsigned long long)seed, world, round, reason);
			if (err == -ESRCH) {
				refused++;
				assert_null(next);
				assert_non_null(strstr(reason, "of a source class the tables in force do not have"));
				sm_authz_tables_free(t);
				t = compile_world(&now, 0);
				known.n = 0;
				know_classes(&known, &now);
				if (round)
					free(was.sources);
				continue;
			}
			assert_int_equal(err, 0);
			taken++;
			known_taken += classes_compiled && next->n_pairs > t->n_pairs;
			know_classes(&known, &now);
			classified += next->n_pairs > t->n_pairs;
			entries_added += next->n_added_sources > 0;
			assert_int_equal(next->n_sources, t->n_sources + next->n_added_sources);
			assert_int_equal(next->generation, t->generation);
			assert_int_equal(next->n_verdicts, t->n_verdicts);
			bool want;
			if (!denies_where_evaluator_does(&was, &now, t, next, why, sizeof(why), &want))
				fail_msg("AUTHZ_SEED=%llu, world %d, round %d: %s", (unsigned long long)seed, world, round, why);
			denying += want;
			if (round)
				free(was.sources);
			sm_authz_tables_free(t);
			t = next;
			for (size_t i = 0; i < now.n_sources; i++)
				check_grid(&now, t, &now.sources[i].addr, 1, some_ports, sizeof(some_ports) / sizeof(*some_ports));
			for (int i = 0; i < 32; i++) {
				struct sm_authz_connection conn;

				authz_random_connection(&rng, &now, &conn);
				if (!authz_tables_agree(&now, t, &conn, why, sizeof(why)))
					fail_msg("AUTHZ_SEED=%llu, world %d, round %d: %s", (unsigned long long)seed, world,
						 round, why);
			}
		}
		free(now.sources);
		free(known.items);
		sm_authz_tables_free(t);
		authz_world_free(&w);
	}
	printf("# sources updated: %llu changes taken (%llu denying what was allowed; %llu with new pairs given a class, "
	       "%llu of them with sources entries added, %llu whose every source has a compiled source's bits), "
	       "%llu refused (a new class)\n",
	       (unsigned long long)taken, (unsigned long long)denying, (unsigned long long)classified,
	       (unsigned long long)entries_added, (unsigned long long)known_taken, (unsigned long long)refused);
	assert_true(taken > 100 && refused > 10 && denying > 10 && taken - denying > 10 && classified > 10 &&
		    entries_added > 10 && known_taken > 10);
}

/* ---- a change of this node's addresses ---- */

/* A change of was's destinations, as pods of this node come and go: some gone, some given another's policies,
 * a few new ones with another's policies or a subset of the world's (which may make a new set). now gets
 * the destinations after it (policy lists borrowed from was or allocated into lists[], which last as long
 * as the world); set and unset the change as sm_authz_update_destinations takes it. */
#define CHURN_LISTS 32

struct dest_churn {
	struct sm_authz_destination *set;
	size_t n_set;
	uint8_t (*unset)[16];
	size_t n_unset;
	const struct sm_authz_policy **(*lists)[CHURN_LISTS];
	size_t *n_lists;
};

static void churn_destinations(struct authz_rng *r, const struct authz_world *was, struct authz_world *now,
			       struct dest_churn *c)
{
	size_t n_new = authz_below(r, 4), n = 0;

	now->destinations = calloc(was->n_destinations + n_new + 1, sizeof(*now->destinations));
	c->set = calloc(was->n_destinations + n_new + 1, sizeof(*c->set));
	c->unset = calloc(was->n_destinations + 1, sizeof(*c->unset));
	assert_true(now->destinations && c->set && c->unset);
	for (size_t i = 0; i < was->n_destinations; i++) {
		struct sm_authz_destination d = was->destinations[i];

		if (authz_world_destination(&(struct authz_world){ .destinations = was->destinations, .n_destinations = i },
					    d.addr))
			continue; /* a later listing of an address: the first counts */
		if (authz_chance(r, 15)) {
			memcpy(c->unset[c->n_unset++], d.addr, 16);
			continue;
		}
		if (authz_chance(r, 20)) { /* relabelled: another destination's policies */
			const struct sm_authz_destination *o = &was->destinations[authz_below(r, (uint32_t)was->n_destinations)];
			d.policies = o->policies;
			d.n_policies = o->n_policies;
			c->set[c->n_set++] = d;
		}
		now->destinations[n++] = d;
	}
	for (size_t i = 0; i < n_new; i++) {
		struct sm_authz_destination d = { 0 };

		authz_random_addr(r, d.addr);
		if (authz_world_destination(&(struct authz_world){ .destinations = now->destinations, .n_destinations = n },
					    d.addr) ||
		    authz_world_destination(was, d.addr))
			continue;
		if (was->n_destinations && authz_chance(r, 70)) { /* one more pod of another's policies */
			const struct sm_authz_destination *o = &was->destinations[authz_below(r, (uint32_t)was->n_destinations)];
			d.policies = o->policies;
			d.n_policies = o->n_policies;
		} else if (*c->n_lists < CHURN_LISTS) {
			const struct sm_authz_policy **list = calloc(was->n_policies + 1, sizeof(*list));
			assert_non_null(list);
			for (size_t k = 0; k < was->n_policies; k++)
				if (authz_chance(r, 50))
					list[d.n_policies++] = was->policies[k];
			(*c->lists)[(*c->n_lists)++] = list;
			d.policies = list;
		} else {
			continue;
		}
		c->set[c->n_set++] = d;
		now->destinations[n++] = d;
	}
	now->n_destinations = n;
}

static void dest_churn_free(struct dest_churn *c)
{
	free(c->set);
	free(c->unset);
}

/* Whether a DESTINATION_IPS list holds addr (the evaluator's answer). */
static bool dest_ip_in(const struct sm_authz_list *list, const uint8_t addr[16])
{
	return list->n && list_matches(list, SM_AUTHZ_DESTINATION_IPS, addr, NULL, addr);
}

/* Whether d and e have one destination set's key: the same policies, whose every match's destination side
 * holds at d's address as at e's. */
static bool same_set_key(const struct sm_authz_destination *d, const struct sm_authz_destination *e)
{
	if (d->n_policies != e->n_policies || (d->n_policies && d->policies != e->policies))
		return false;
	for (size_t i = 0; i < d->n_policies; i++)
		for (size_t r = 0; r < d->policies[i]->n_rules; r++)
			for (size_t k = 0; k < d->policies[i]->rules[r].n_clauses; k++) {
				const struct sm_authz_clause *c = &d->policies[i]->rules[r].clauses[k];

				for (size_t m = 0; m < c->n_matches; m++) {
					const struct sm_authz_list *pos = &c->matches[m].positive[SM_AUTHZ_DESTINATION_IPS];
					const struct sm_authz_list *neg = &c->matches[m].negative[SM_AUTHZ_DESTINATION_IPS];

					if ((!pos->n || dest_ip_in(pos, d->addr)) != (!pos->n || dest_ip_in(pos, e->addr)) ||
					    dest_ip_in(neg, d->addr) != dest_ip_in(neg, e->addr))
						return false;
				}
			}
	return true;
}

/* Whether every destination c sets has the key of one the tables were compiled with (compiled[], its first
 * listings): then no new set is needed, and the update must be taken. */
static bool sets_known(const struct dest_churn *c, const struct sm_authz_destination *compiled, size_t n_compiled)
{
	struct authz_world world = { .destinations = (struct sm_authz_destination *)compiled,
				     .n_destinations = n_compiled };

	for (size_t i = 0; i < c->n_set; i++) {
		bool twin = false;

		for (size_t e = 0; !twin && e < n_compiled; e++)
			twin = authz_world_destination(&world, compiled[e].addr) == &compiled[e] &&
			       same_set_key(&c->set[i], &compiled[e]);
		if (!twin)
			return false;
	}
	return true;
}

/* sm_authz_update_destinations over rounds of this node's churn from one compilation: when it takes the
 * change, the tables agree with the evaluator for every source at every destination now (those gone are not
 * guarded), the dests entries that changed are listed, and sm_authz_update_denies names exactly the
 * destinations where a source is now denied what it was allowed; when it refuses, a destination's policies
 * made a set the compilation did not, and the tables are as they were. A change whose every destination
 * has the key of one compiled is never refused. All happen. */
static void update_destinations_agrees(void **state)
{
	uint64_t seed = env_number("AUTHZ_SEED", (uint64_t)time(NULL)), taken = 0, refused = 0, denying = 0;
	uint64_t listed = 0, known_taken = 0;
	struct authz_rng rng = { seed };
	char reason[256], why[512];

	(void)state;
	for (int world = 0; world < 400; world++) {
		struct authz_world w, was, now;
		struct sm_authz_tables *t;
		const struct sm_authz_policy **lists[CHURN_LISTS];
		size_t n_lists = 0, n_compiled;
		struct sm_authz_destination *compiled; /* what t was compiled with */

		authz_random_world(&rng, &w);
		t = compile_world(&w, 0);
		compiled = authz_xcalloc(w.n_destinations + 1, sizeof(*compiled));
		memcpy(compiled, w.destinations, w.n_destinations * sizeof(*compiled));
		n_compiled = w.n_destinations;
		was = w;
		for (int round = 0; round < 4; round++) {
			struct sm_authz_tables *next = NULL;
			struct dest_churn c = { .lists = &lists, .n_lists = &n_lists };
			size_t n_dests;

			now = was;
			churn_destinations(&rng, &was, &now, &c);
			assert_int_equal(sm_authz_update_idents(t, NULL, 0, NULL, 0, &next, reason, sizeof(reason)), 0);
			n_dests = next->n_dests;
			bool known = sets_known(&c, compiled, n_compiled);
			int err = sm_authz_update_destinations(next, c.set, c.n_set, (const uint8_t(*)[16])c.unset,
							       c.n_unset, reason, sizeof(reason));
			if (err == -ESRCH && known)
				fail_msg("AUTHZ_SEED=%llu, world %d, round %d: refused, though every destination has a "
					 "compiled set's key: %s", (unsigned long long)seed, world, round, reason);
			known_taken += known && c.n_set;
			if (err == -ESRCH) {
				refused++;
				assert_non_null(strstr(reason, "a destination set the tables in force do not have"));
				assert_int_equal(next->n_dests, n_dests);
				assert_null(next->changed_dests);
				sm_authz_tables_free(next);
				sm_authz_tables_free(t);
				t = compile_world(&now, 0);
				free(compiled);
				compiled = authz_xcalloc(now.n_destinations + 1, sizeof(*compiled));
				memcpy(compiled, now.destinations, now.n_destinations * sizeof(*compiled));
				n_compiled = now.n_destinations;
			} else {
				assert_int_equal(err, 0);
				taken++;
				listed += next->n_changed_dests;
				for (size_t i = 0; i < next->n_changed_dests; i++)
					assert_true(!!authz_world_destination(&was, next->changed_dests[i].addr) ||
						    !!authz_world_destination(&now, next->changed_dests[i].addr));
				bool want;
				if (!denies_where_evaluator_does(&was, &now, t, next, why, sizeof(why), &want))
					fail_msg("AUTHZ_SEED=%llu, world %d, round %d: %s", (unsigned long long)seed, world,
						 round, why);
				denying += want;
				sm_authz_tables_free(t);
				t = next;
			}
			for (size_t i = 0; i < now.n_sources; i++)
				check_grid(&now, t, &now.sources[i].addr, 1, some_ports, sizeof(some_ports) / sizeof(*some_ports));
			for (size_t i = 0; i < was.n_destinations; i++) { /* the gone ones too: not guarded now */
				struct sm_authz_connection conn;
				authz_random_connection(&rng, &now, &conn);
				memcpy(conn.dst, was.destinations[i].addr, 16);
				if (!authz_tables_agree(&now, t, &conn, why, sizeof(why)))
					fail_msg("AUTHZ_SEED=%llu, world %d, round %d: %s", (unsigned long long)seed, world,
						 round, why);
			}
			if (round)
				free(was.destinations);
			was = now;
			dest_churn_free(&c);
		}
		free(now.destinations);
		free(compiled);
		for (size_t i = 0; i < n_lists; i++)
			free(lists[i]);
		sm_authz_tables_free(t);
		authz_world_free(&w);
	}
	printf("# destinations updated: %llu changes taken (%llu denying what was allowed, %llu dests entries changed, "
	       "%llu setting only destinations of compiled sets' keys), %llu refused (a new set)\n",
	       (unsigned long long)taken, (unsigned long long)denying, (unsigned long long)listed,
	       (unsigned long long)known_taken, (unsigned long long)refused);
	assert_true(taken > 100 && refused > 10 && denying > 10 && taken - denying > 10 && listed > 100 &&
		    known_taken > 50);
}

/* ---- istiod's golden outputs ---- */

#define GOLDEN_MAX 64
#define GOLDEN_ADDRS 256

struct golden {
	struct sm_authz_policy *policies[GOLDEN_MAX];
	size_t n;
	char texts[GOLDEN_ADDRS][3][96]; /* identities' trust domain, namespace, account */
	struct sm_authz_source sources[GOLDEN_ADDRS];
	size_t n_sources;
	uint8_t addrs[GOLDEN_ADDRS][16];
	size_t n_addrs;
	uint16_t ports[GOLDEN_ADDRS];
	size_t n_ports;
};

static void golden_identity(struct golden *g, const char *td, const char *ns, const char *sa)
{
	size_t i = g->n_sources;

	if (i >= GOLDEN_ADDRS || g->n_addrs >= GOLDEN_ADDRS)
		return;
	snprintf(g->texts[i][0], 96, "%s", td);
	snprintf(g->texts[i][1], 96, "%s", ns);
	snprintf(g->texts[i][2], 96, "%s", sa);
	g->sources[i].identity = (struct sm_authz_identity){ g->texts[i][0], g->texts[i][1], g->texts[i][2] };
	v4(g->sources[i].addr, 10, 99, (uint8_t)(i / 256), (uint8_t)i);
	memcpy(g->addrs[g->n_addrs++], g->sources[i].addr, 16);
	g->n_sources++;
}

/* Identities each string entry accepts: a principal's or a namespace's exact, prefix and suffix forms. */
static void golden_strings(struct golden *g, enum sm_authz_field f, const struct sm_authz_list *l)
{
	for (size_t i = 0; i < l->n; i++) {
		const struct sm_authz_string *s = &l->strings[i];
		char a[96] = "", b[96] = "", c[96] = "";

		if (f == SM_AUTHZ_NAMESPACES) {
			snprintf(a, sizeof(a), "%s%s%s", s->kind == SM_AUTHZ_SUFFIX ? "x" : "", s->value,
				 s->kind == SM_AUTHZ_PREFIX ? "x" : "");
			golden_identity(g, "cluster.local", a, "default");
		} else if (s->kind == SM_AUTHZ_PREFIX) {
			snprintf(a, sizeof(a), "%sx", s->value);
			golden_identity(g, a, "ns", "default");
		} else if (s->kind == SM_AUTHZ_SUFFIX) {
			snprintf(a, sizeof(a), "x%s", s->value);
			golden_identity(g, "cluster.local", "ns", a);
		} else if (s->kind == SM_AUTHZ_EXACT && sscanf(s->value, "%95[^/]/ns/%95[^/]/sa/%95s", a, b, c) == 3) {
			golden_identity(g, a, b, c);
		}
	}
}

static void golden_harvest(struct golden *g, const struct sm_authz_policy *p)
{
	for (size_t r = 0; r < p->n_rules; r++)
		for (size_t k = 0; k < p->rules[r].n_clauses; k++)
			for (size_t m = 0; m < p->rules[r].clauses[k].n_matches; m++)
				for (int sign = 0; sign < 2; sign++) {
					const struct sm_authz_match *mt = &p->rules[r].clauses[k].matches[m];
					const struct sm_authz_list *l = sign ? mt->negative : mt->positive;

					golden_strings(g, SM_AUTHZ_PRINCIPALS, &l[SM_AUTHZ_PRINCIPALS]);
					golden_strings(g, SM_AUTHZ_NAMESPACES, &l[SM_AUTHZ_NAMESPACES]);
					for (size_t i = 0; i < l[SM_AUTHZ_SERVICE_ACCOUNTS].n; i++)
						golden_identity(g, "cluster.local", l[SM_AUTHZ_SERVICE_ACCOUNTS].accounts[i].namespace,
								l[SM_AUTHZ_SERVICE_ACCOUNTS].accounts[i].name);
					for (size_t i = 0; i < l[SM_AUTHZ_SOURCE_IPS].n && g->n_addrs < GOLDEN_ADDRS; i++)
						memcpy(g->addrs[g->n_addrs++], l[SM_AUTHZ_SOURCE_IPS].cidrs[i].addr, 16);
					for (size_t i = 0; i < l[SM_AUTHZ_DESTINATION_PORTS].n && g->n_ports < GOLDEN_ADDRS; i++)
						g->ports[g->n_ports++] = l[SM_AUTHZ_DESTINATION_PORTS].ports[i];
				}
}

/* Every golden output (one destination holding them all in file order, one each holding one), from every
 * identity they name and every address they list, to every port they name. */
static void test_golden(void **state)
{
	struct golden *g = calloc(1, sizeof(*g));
	struct sm_authz_destination *dests = calloc(GOLDEN_MAX + 1, sizeof(*dests));
	struct authz_world w = { .destinations = dests };
	struct sm_authz_tables *t;
	DIR *dir = opendir(SM_FIXTURES_DIR "/istio-authz");
	struct dirent *e;
	char reason[256];

	(void)state;
	assert_non_null(g);
	assert_non_null(dests);
	assert_non_null(dir);
	while ((e = readdir(dir)) && g->n < GOLDEN_MAX) {
		size_t len = strlen(e->d_name);
		char name[256];
		Istio__Security__Authorization *msg;

		if (len < 6 || strcmp(e->d_name + len - 5, ".yaml") || (len > 8 && !strcmp(e->d_name + len - 8, "-in.yaml")))
			continue;
		snprintf(name, sizeof(name), "%.*s", (int)(len - 5), e->d_name);
		msg = authz_fixture_load(name);
		if (!msg)
			continue;
		if (sm_authz_policy_parse(msg, &g->policies[g->n], reason, sizeof(reason)))
			fail_msg("%s: %s", name, reason);
		authz_fixture_free(msg);
		golden_harvest(g, g->policies[g->n++]);
	}
	closedir(dir);
	assert_true(g->n >= 10);
	golden_identity(g, "cluster.local", "default", "default");
	v4(g->addrs[g->n_addrs++], 172, 16, 0, 1); /* nobody's */
	g->ports[g->n_ports++] = 12345;
	dests[0] = (struct sm_authz_destination){ .policies = (const struct sm_authz_policy **)g->policies, .n_policies = g->n };
	v4(dests[0].addr, 10, 200, 0, 1);
	for (size_t i = 0; i < g->n; i++) {
		dests[i + 1] = (struct sm_authz_destination){ .policies = (const struct sm_authz_policy **)&g->policies[i],
							      .n_policies = 1 };
		v4(dests[i + 1].addr, 10, 200, 1, (uint8_t)i);
	}
	w.n_destinations = g->n + 1;
	w.sources = g->sources;
	w.n_sources = g->n_sources;
	t = compile_world(&w, 0);
	check_grid(&w, t, (const uint8_t(*)[16])g->addrs, g->n_addrs, g->ports, g->n_ports);
	printf("# golden: %zu policies, %zu identities, %zu addresses, %zu ports; %zu sets, %zu verdicts\n", g->n,
	       g->n_sources, g->n_addrs, g->n_ports, w.n_destinations, t->n_verdicts);
	sm_authz_tables_free(t);
	for (size_t i = 0; i < g->n; i++)
		sm_authz_policy_free(g->policies[i]);
	free(dests);
	free(g);
}

/* ---- the cost of a large compilation (printed, never asserted) ---- */

#define BIG_POLICIES 1000
#define BIG_SOURCES 100000

struct big {
	struct one policies[BIG_POLICIES];
	struct sm_authz_string principals[BIG_POLICIES];
	struct sm_authz_string namespaces[BIG_POLICIES];
	struct sm_authz_cidr cidrs[BIG_POLICIES][4];
	uint16_t ports[BIG_POLICIES][2];
	char strings[BIG_POLICIES][64];
	char keys[BIG_POLICIES][32];
	const struct sm_authz_policy *list[BIG_POLICIES];
	struct sm_authz_source sources[BIG_SOURCES];
	char identity_text[2][50][16];
	char distinct_ns[BIG_POLICIES][16];
};

/* 1,000 policies of one destination: ALLOWs naming a principal and a port, ALLOWs naming CIDRs, DENYs
 * naming a namespace except some ports; 100,000 workload addresses of 1,000 identities. */
static void big_world(struct big *b, struct sm_authz_destination *d)
{
	for (int i = 0; i < 50; i++) {
		snprintf(b->identity_text[0][i], 16, "ns%d", i);
		snprintf(b->identity_text[1][i], 16, "sa%d", i % 20);
	}
	for (int i = 0; i < BIG_POLICIES; i++) {
		struct one *o = &b->policies[i];
		struct sm_authz_match *m = &o->match;

		snprintf(b->keys[i], sizeof(b->keys[i]), "ns%d/p%d", i % 50, i);
		one_init(o, b->keys[i], i % 3 == 2 ? SM_AUTHZ_DENY : SM_AUTHZ_ALLOW);
		b->ports[i][0] = (uint16_t)(8000 + i % 100);
		b->ports[i][1] = (uint16_t)(9000 + i % 7);
		if (i % 3 == 0) {
			snprintf(b->strings[i], sizeof(b->strings[i]), "cluster.local/ns/ns%d/sa/sa%d", i % 50, i % 20);
			b->principals[i] = (struct sm_authz_string){ SM_AUTHZ_EXACT, b->strings[i] };
			m->positive[SM_AUTHZ_PRINCIPALS] = (struct sm_authz_list){ .n = 1, .strings = &b->principals[i] };
			m->positive[SM_AUTHZ_DESTINATION_PORTS] = (struct sm_authz_list){ .n = 1, .ports = b->ports[i] };
		} else if (i % 3 == 1) {
			for (int k = 0; k < 4; k++)
				b->cidrs[i][k] = cidr4(10, (uint8_t)(i % 40), (uint8_t)(k * 16), 0, (uint8_t)(20 + k));
			m->positive[SM_AUTHZ_SOURCE_IPS] = (struct sm_authz_list){ .n = 4, .cidrs = b->cidrs[i] };
		} else {
			snprintf(b->strings[i], sizeof(b->strings[i]), "ns%d", i % 50);
			b->namespaces[i] = (struct sm_authz_string){ SM_AUTHZ_EXACT, b->strings[i] };
			m->positive[SM_AUTHZ_NAMESPACES] = (struct sm_authz_list){ .n = 1, .strings = &b->namespaces[i] };
			m->negative[SM_AUTHZ_DESTINATION_PORTS] = (struct sm_authz_list){ .n = 2, .ports = b->ports[i] };
		}
		b->list[i] = &o->policy;
	}
	for (int i = 0; i < BIG_SOURCES; i++) {
		struct sm_authz_source *s = &b->sources[i];

		v4(s->addr, 10, (uint8_t)(i >> 16), (uint8_t)(i >> 8), (uint8_t)i);
		s->identity = (struct sm_authz_identity){ "cluster.local", b->identity_text[0][i % 50],
							  b->identity_text[1][(i / 50) % 20] };
	}
	*d = (struct sm_authz_destination){ .policies = b->list, .n_policies = BIG_POLICIES };
	v4(d->addr, 172, 16, 0, 1);
}

/* The costliest shape: 1,000 policies each naming its own principal and its own port (1,001 source
 * classes by 1,001 port classes), 100,000 workload addresses of 1,000 identities. */
static void distinct_world(struct big *b, struct sm_authz_destination *d)
{
	for (int i = 0; i < BIG_POLICIES; i++) {
		struct one *o = &b->policies[i];

		snprintf(b->distinct_ns[i], sizeof(b->distinct_ns[i]), "ns%d", i);
		snprintf(b->keys[i], sizeof(b->keys[i]), "ns%d/p%d", i, i);
		snprintf(b->strings[i], sizeof(b->strings[i]), "cluster.local/ns/ns%d/sa/default", i);
		one_init(o, b->keys[i], i % 5 == 0 ? SM_AUTHZ_DENY : SM_AUTHZ_ALLOW);
		b->principals[i] = (struct sm_authz_string){ SM_AUTHZ_EXACT, b->strings[i] };
		b->ports[i][0] = b->ports[i][1] = (uint16_t)(1000 + i);
		o->match.positive[SM_AUTHZ_PRINCIPALS] = (struct sm_authz_list){ .n = 1, .strings = &b->principals[i] };
		o->match.positive[SM_AUTHZ_DESTINATION_PORTS] = (struct sm_authz_list){ .n = 1, .ports = b->ports[i] };
		b->list[i] = &o->policy;
	}
	for (int i = 0; i < BIG_SOURCES; i++) {
		struct sm_authz_source *s = &b->sources[i];

		v4(s->addr, 10, (uint8_t)(i >> 16), (uint8_t)(i >> 8), (uint8_t)i);
		s->identity = (struct sm_authz_identity){ "cluster.local", b->distinct_ns[i % BIG_POLICIES], "default" };
	}
	*d = (struct sm_authz_destination){ .policies = b->list, .n_policies = BIG_POLICIES };
	v4(d->addr, 172, 16, 0, 1);
}

static double seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void run_large(const char *shape, void (*build)(struct big *, struct sm_authz_destination *))
{
	struct big *b = calloc(1, sizeof(*b));
	struct sm_authz_destination d;
	struct authz_world w = { .destinations = &d, .n_destinations = 1 };
	struct authz_rng rng = { 1 };
	struct sm_authz_tables *t;
	char why[512];
	double start;

	assert_non_null(b);
	build(b, &d);
	w.sources = b->sources;
	w.n_sources = BIG_SOURCES;
	start = seconds();
	t = compile_world(&w, 0);
	printf("# large (%s): %d policies, %d sources: compiled in %.3f s; dests %zu, cidrs %zu, sources %zu, "
	       "verdicts %zu, idents %zu\n",
	       shape, BIG_POLICIES, BIG_SOURCES, seconds() - start, t->n_dests, t->n_cidrs, t->n_sources,
	       t->n_verdicts, t->n_idents);
	for (int i = 0; i < 2000; i++) {
		const uint16_t *ports = b->ports[authz_below(&rng, BIG_POLICIES)];
		struct sm_authz_connection conn = { .dst_port = authz_chance(&rng, 90) ? ports[authz_below(&rng, 2)]
										   : (uint16_t)(1 + authz_below(&rng, 65535)) };
		const struct sm_authz_source *s = &b->sources[authz_below(&rng, BIG_SOURCES)];

		memcpy(conn.src, s->addr, 16);
		memcpy(conn.dst, d.addr, 16);
		conn.src_identity = &s->identity;
		if (authz_chance(&rng, 10)) {
			v4(conn.src, 10, (uint8_t)authz_below(&rng, 64), 0, 1); /* maybe nobody's */
			s = authz_world_source(&w, conn.src);
			conn.src_identity = s ? &s->identity : NULL;
		}
		if (!authz_tables_agree(&w, t, &conn, why, sizeof(why)))
			fail_msg("%s, connection %d: %s", shape, i, why);
	}
	sm_authz_tables_free(t);
	free(b);
}

static void test_large(void **state)
{
	(void)state;
	run_large("mixed principal, CIDR and namespace policies", big_world);
	run_large("a principal and a port of its own per policy", distinct_world);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_empty),
		cmocka_unit_test(test_no_policies),
		cmocka_unit_test(test_one_deny),
		cmocka_unit_test(test_cidr_nesting),
		cmocka_unit_test(test_port_specific),
		cmocka_unit_test(test_identities),
		cmocka_unit_test(test_node_and_duplicates),
		cmocka_unit_test(test_dry_run),
		cmocka_unit_test(test_too_big),
		cmocka_unit_test(test_too_big_tables),
		cmocka_unit_test(test_too_many_cells),
		cmocka_unit_test(test_differential),
		cmocka_unit_test(cidr_classes_in_one_walk),
		cmocka_unit_test(idents_sorted_first_listing_wins),
		cmocka_unit_test(update_sources_agrees),
		cmocka_unit_test(update_destinations_agrees),
		cmocka_unit_test(test_golden),
		cmocka_unit_test(test_large),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
