/* SPDX-License-Identifier: Apache-2.0 */
/* Reads istiod's golden ztunnel policies (YAML, istio Go naming) into Istio__Security__Authorization. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

#include "authz_fixture.h"
#include "helpers.h"

struct reader {
	yaml_document_t doc;
	const char *what;
};

#define FAIL_AT(r, node, fmt, ...) \
	fail_msg("%s:%zu: " fmt, (r)->what, (size_t)(node)->start_mark.line + 1, ##__VA_ARGS__)

static yaml_node_t *node_at(struct reader *r, int index)
{
	yaml_node_t *n = yaml_document_get_node(&r->doc, index);

	assert_non_null(n);
	return n;
}

static const char *scalar(struct reader *r, yaml_node_t *n)
{
	if (n->type != YAML_SCALAR_NODE)
		FAIL_AT(r, n, "expected a scalar");
	return (const char *)n->data.scalar.value;
}

static void want(struct reader *r, yaml_node_t *n, yaml_node_type_t type, const char *what)
{
	if (n->type != type)
		FAIL_AT(r, n, "expected %s", what);
}

static size_t seq_len(struct reader *r, yaml_node_t *n)
{
	want(r, n, YAML_SEQUENCE_NODE, "a list");
	return (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
}

static yaml_node_t *seq_item(struct reader *r, yaml_node_t *n, size_t i)
{
	return node_at(r, n->data.sequence.items.start[i]);
}

static uint32_t number(struct reader *r, yaml_node_t *n)
{
	const char *text = scalar(r, n);
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(text, &end, 10);
	if (errno || !*text || *end || v > UINT32_MAX)
		FAIL_AT(r, n, "'%s' is not a number", text);
	return (uint32_t)v;
}

static char *dup_scalar(struct reader *r, yaml_node_t *n)
{
	char *s = strdup(scalar(r, n));

	assert_non_null(s);
	return s;
}

static int enum_value(struct reader *r, yaml_node_t *n, const char *const *names, size_t count)
{
	const char *text = scalar(r, n);

	for (size_t i = 0; i < count; i++)
		if (strcmp(text, names[i]) == 0)
			return (int)i;
	return (int)number(r, n); /* a number lets a test write a value outside the enum */
}

/* ---- one entry of each kind of list ---- */

static int base64_value(char c)
{
	static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	const char *p = c ? strchr(alphabet, c) : NULL;

	return p ? (int)(p - alphabet) : -1;
}

static void base64(struct reader *r, yaml_node_t *n, ProtobufCBinaryData *out)
{
	const char *text = scalar(r, n);
	size_t len = strlen(text);
	uint32_t acc = 0;
	int bits = 0;

	out->data = calloc(len, 1);
	assert_non_null(out->data);
	out->len = 0;
	for (size_t i = 0; i < len && text[i] != '='; i++) {
		int v = base64_value(text[i]);

		if (v < 0)
			FAIL_AT(r, n, "'%s' is not base64", text);
		acc = (acc << 6) | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out->data[out->len++] = (uint8_t)(acc >> bits);
		}
	}
}

/* "10.0.0.0/8" or "fd00::/8": the test convenience. */
static void cidr_text(struct reader *r, yaml_node_t *n, Istio__Security__Address *a)
{
	char buf[64];
	char *slash;
	const char *text = scalar(r, n);
	bool v6 = strchr(text, ':') != NULL;

	snprintf(buf, sizeof(buf), "%s", text);
	slash = strchr(buf, '/');
	if (!slash)
		FAIL_AT(r, n, "'%s' has no /prefix", text);
	*slash = 0;
	a->address.len = v6 ? 16 : 4;
	a->address.data = calloc(16, 1);
	assert_non_null(a->address.data);
	if (inet_pton(v6 ? AF_INET6 : AF_INET, buf, a->address.data) != 1)
		FAIL_AT(r, n, "'%s' is not an address", buf);
	a->length = (uint32_t)atoi(slash + 1);
}

static void *address(struct reader *r, yaml_node_t *n)
{
	Istio__Security__Address *a = malloc(sizeof(*a));

	assert_non_null(a);
	istio__security__address__init(a);
	want(r, n, YAML_MAPPING_NODE, "an address");
	for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
		yaml_node_t *k = node_at(r, p->key), *v = node_at(r, p->value);
		const char *key = scalar(r, k);

		if (strcmp(key, "address") == 0)
			base64(r, v, &a->address);
		else if (strcmp(key, "length") == 0)
			a->length = number(r, v);
		else if (strcmp(key, "cidr") == 0)
			cidr_text(r, v, a);
		else
			FAIL_AT(r, k, "unknown address field '%s'", key);
	}
	return a;
}

/* {exact: x} / {prefix: x} / {suffix: x} / {presence: {}}; {} is a StringMatch with no kind. */
static void *string_match(struct reader *r, yaml_node_t *n)
{
	Istio__Security__StringMatch *s = malloc(sizeof(*s));

	assert_non_null(s);
	istio__security__string_match__init(s);
	want(r, n, YAML_MAPPING_NODE, "a StringMatch");
	for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
		yaml_node_t *k = node_at(r, p->key), *v = node_at(r, p->value);
		const char *key = scalar(r, k);

		if (strcmp(key, "exact") == 0) {
			s->match_type_case = ISTIO__SECURITY__STRING_MATCH__MATCH_TYPE_EXACT;
			s->exact = dup_scalar(r, v);
		} else if (strcmp(key, "prefix") == 0) {
			s->match_type_case = ISTIO__SECURITY__STRING_MATCH__MATCH_TYPE_PREFIX;
			s->prefix = dup_scalar(r, v);
		} else if (strcmp(key, "suffix") == 0) {
			s->match_type_case = ISTIO__SECURITY__STRING_MATCH__MATCH_TYPE_SUFFIX;
			s->suffix = dup_scalar(r, v);
		} else if (strcmp(key, "presence") == 0) {
			s->match_type_case = ISTIO__SECURITY__STRING_MATCH__MATCH_TYPE_PRESENCE;
			s->presence = malloc(sizeof(*s->presence));
			assert_non_null(s->presence);
			google__protobuf__empty__init(s->presence);
		} else {
			FAIL_AT(r, k, "unknown StringMatch kind '%s'", key);
		}
	}
	return s;
}

static void *account(struct reader *r, yaml_node_t *n)
{
	Istio__Security__ServiceAccountMatch *a = malloc(sizeof(*a));

	assert_non_null(a);
	istio__security__service_account_match__init(a);
	want(r, n, YAML_MAPPING_NODE, "a ServiceAccountMatch");
	for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
		yaml_node_t *k = node_at(r, p->key), *v = node_at(r, p->value);
		const char *key = scalar(r, k);

		if (strcmp(key, "namespace") == 0)
			a->namespace_ = dup_scalar(r, v);
		else if (strcmp(key, "serviceAccount") == 0)
			a->serviceaccount = dup_scalar(r, v);
		else
			FAIL_AT(r, k, "unknown ServiceAccountMatch field '%s'", key);
	}
	return a;
}

/* ---- the structure ---- */

/* A list of messages, each read by item. */
static void **messages(struct reader *r, yaml_node_t *n, size_t *count, void *(*item)(struct reader *, yaml_node_t *))
{
	size_t len = seq_len(r, n);
	void **out = calloc(len ? len : 1, sizeof(*out));

	assert_non_null(out);
	for (size_t i = 0; i < len; i++)
		out[i] = item(r, seq_item(r, n, i));
	*count = len;
	return out;
}

enum list_kind { STRINGS, ADDRESSES, PORTS, ACCOUNTS };

#define MATCH_FIELD(key, kind, member) \
	{ key, kind, offsetof(Istio__Security__Match, n_##member), offsetof(Istio__Security__Match, member) }

static const struct {
	const char *key;
	enum list_kind kind;
	size_t n_offset, list_offset;
} match_fields[] = {
	MATCH_FIELD("namespaces", STRINGS, namespaces),
	MATCH_FIELD("notNamespaces", STRINGS, not_namespaces),
	MATCH_FIELD("principals", STRINGS, principals),
	MATCH_FIELD("notPrincipals", STRINGS, not_principals),
	MATCH_FIELD("sourceIps", ADDRESSES, source_ips),
	MATCH_FIELD("notSourceIps", ADDRESSES, not_source_ips),
	MATCH_FIELD("destinationIps", ADDRESSES, destination_ips),
	MATCH_FIELD("notDestinationIps", ADDRESSES, not_destination_ips),
	MATCH_FIELD("destinationPorts", PORTS, destination_ports),
	MATCH_FIELD("notDestinationPorts", PORTS, not_destination_ports),
	MATCH_FIELD("serviceAccounts", ACCOUNTS, service_accounts),
	MATCH_FIELD("notServiceAccounts", ACCOUNTS, not_service_accounts),
};

static void match_list(struct reader *r, yaml_node_t *n, enum list_kind kind, size_t *count, void **list)
{
	static void *(*const items[])(struct reader *, yaml_node_t *) = {
		[STRINGS] = string_match, [ADDRESSES] = address, [ACCOUNTS] = account,
	};

	if (kind != PORTS) {
		*list = messages(r, n, count, items[kind]);
		return;
	}
	*count = seq_len(r, n);
	uint32_t *ports = calloc(*count ? *count : 1, sizeof(*ports));
	assert_non_null(ports);
	for (size_t i = 0; i < *count; i++)
		ports[i] = number(r, seq_item(r, n, i));
	*list = ports;
}

static void *match(struct reader *r, yaml_node_t *n)
{
	Istio__Security__Match *m = malloc(sizeof(*m));

	assert_non_null(m);
	istio__security__match__init(m);
	want(r, n, YAML_MAPPING_NODE, "a Match");
	for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
		yaml_node_t *k = node_at(r, p->key);
		const char *key = scalar(r, k);
		size_t f = 0;

		while (f < TEST_ARRAY_SIZE(match_fields) && strcmp(match_fields[f].key, key) != 0)
			f++;
		if (f == TEST_ARRAY_SIZE(match_fields))
			FAIL_AT(r, k, "unknown Match field '%s'", key);
		match_list(r, node_at(r, p->value), match_fields[f].kind, (size_t *)((char *)m + match_fields[f].n_offset),
			   (void **)((char *)m + match_fields[f].list_offset));
	}
	return m;
}

/* istio's Rules (our Clause): {matches: [...]} */
static void *clause(struct reader *r, yaml_node_t *n)
{
	Istio__Security__Clause *c = malloc(sizeof(*c));

	assert_non_null(c);
	istio__security__clause__init(c);
	want(r, n, YAML_MAPPING_NODE, "a rules entry");
	for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
		yaml_node_t *k = node_at(r, p->key);

		if (strcmp(scalar(r, k), "matches") != 0)
			FAIL_AT(r, k, "unknown rules field '%s'", scalar(r, k));
		c->matches = (Istio__Security__Match **)messages(r, node_at(r, p->value), &c->n_matches, match);
	}
	return c;
}

/* istio's Group (our Rule): {rules: [...]} */
static void *rule(struct reader *r, yaml_node_t *n)
{
	Istio__Security__Rule *g = malloc(sizeof(*g));

	assert_non_null(g);
	istio__security__rule__init(g);
	want(r, n, YAML_MAPPING_NODE, "a group");
	for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
		yaml_node_t *k = node_at(r, p->key);

		if (strcmp(scalar(r, k), "rules") != 0)
			FAIL_AT(r, k, "unknown group field '%s'", scalar(r, k));
		g->clauses = (Istio__Security__Clause **)messages(r, node_at(r, p->value), &g->n_clauses, clause);
	}
	return g;
}

static const char *const scopes[] = { "GLOBAL", "NAMESPACE", "WORKLOAD_SELECTOR" };
static const char *const actions[] = { "ALLOW", "DENY" };

static Istio__Security__Authorization *authorization(struct reader *r, yaml_node_t *n)
{
	Istio__Security__Authorization *a = malloc(sizeof(*a));

	assert_non_null(a);
	istio__security__authorization__init(a);
	want(r, n, YAML_MAPPING_NODE, "a policy");
	for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
		yaml_node_t *k = node_at(r, p->key), *v = node_at(r, p->value);
		const char *key = scalar(r, k);

		if (strcmp(key, "name") == 0)
			a->name = dup_scalar(r, v);
		else if (strcmp(key, "namespace") == 0)
			a->namespace_ = dup_scalar(r, v);
		else if (strcmp(key, "scope") == 0)
			a->scope = enum_value(r, v, scopes, TEST_ARRAY_SIZE(scopes));
		else if (strcmp(key, "action") == 0)
			a->action = enum_value(r, v, actions, TEST_ARRAY_SIZE(actions));
		else if (strcmp(key, "dryRun") == 0)
			a->dry_run = strcmp(scalar(r, v), "true") == 0;
		else if (strcmp(key, "groups") == 0)
			a->rules = (Istio__Security__Rule **)messages(r, v, &a->n_rules, rule);
		else
			FAIL_AT(r, k, "unknown policy field '%s'", key);
	}
	return a;
}

Istio__Security__Authorization *authz_fixture_read(const char *text, const char *what)
{
	struct reader r = { .what = what };
	yaml_parser_t parser;
	yaml_node_t *root;
	Istio__Security__Authorization *msg = NULL;

	assert_true(yaml_parser_initialize(&parser));
	yaml_parser_set_input_string(&parser, (const unsigned char *)text, strlen(text));
	if (!yaml_parser_load(&parser, &r.doc))
		fail_msg("%s:%zu: %s", what, (size_t)parser.problem_mark.line + 1, parser.problem);
	root = yaml_document_get_root_node(&r.doc);
	if (root)
		msg = authorization(&r, root);
	yaml_document_delete(&r.doc);
	yaml_parser_delete(&parser);
	return msg;
}

Istio__Security__Authorization *authz_fixture_load(const char *name)
{
	char relative[256];
	size_t len;
	uint8_t *text;
	Istio__Security__Authorization *msg;

	snprintf(relative, sizeof(relative), "istio-authz/%s.yaml", name);
	text = test_read_fixture(relative, &len);
	msg = authz_fixture_read((const char *)text, relative);
	free(text);
	return msg;
}

void authz_fixture_free(Istio__Security__Authorization *msg)
{
	if (msg)
		protobuf_c_message_free_unpacked(&msg->base, NULL);
}
