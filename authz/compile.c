/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The policy compiler: the policies that apply to this node's workloads → the tables of bpf/sockmesh.h.
 *
 * Atoms are per list, never per value: "the source address is in this SOURCE_IPS list", so a list of 500
 * CIDRs is one atom.
 *   CIDR classes    distinct vectors of SOURCE_IPS atoms; the LPM entries are the distinct prefixes of
 *                   those lists, each mapped to the class of the addresses it covers (the lists of every
 *                   shorter prefix containing it included); a prefix whose class is its parent's has none.
 *   source classes  distinct vectors "the source side of match m holds" (its CIDR lists and identity
 *                   lists), over the (identity, CIDR class) pairs that occur: each workload address's, and
 *                   (no identity, c) for every CIDR class c. Class 0 is the verdicts' wildcard.
 *   destination sets distinct (policy list, "the destination side of match m holds") per address.
 * Each set is then evaluated over (source class, port class) cells and compacted (compile_set.c).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>

#include "authz/compile_internal.h"

static bool list_set(const struct sm_authz_match *m, enum sm_authz_field f)
{
	return m->positive[f].n || m->negative[f].n;
}

static bool match_empty(const struct sm_authz_match *m)
{
	for (int f = 0; f < SM_AUTHZ_FIELD_COUNT; f++)
		if (list_set(m, f))
			return false;
	return true;
}

static int cidr_atom(struct sm_compiler *c, const struct sm_authz_list *list, uint32_t *atom)
{
	uint32_t id;
	int err;

	*atom = 0;
	if (!list->n)
		return 0;
	err = sm_intern_add(&c->cidr_atoms, list->cidrs, list->n * sizeof(*list->cidrs), &id);
	*atom = id + 1;
	return err;
}

static int flatten_match(struct sm_compiler *c, struct sm_flat_policy *fp, const struct sm_authz_match *m)
{
	struct sm_flat_match *fm;
	int err;

	if ((err = sm_grow(&c->matches, &c->cap_matches, c->n_matches + 1, sizeof(*c->matches))))
		return err;
	fm = &c->matches[c->n_matches++];
	*fm = (struct sm_flat_match){ .match = m, .src_bit = SM_NO_BIT, .empty = match_empty(m) };
	fp->n_matches++;
	if (list_set(m, SM_AUTHZ_SOURCE_IPS) || list_set(m, SM_AUTHZ_PRINCIPALS) || list_set(m, SM_AUTHZ_NAMESPACES) ||
	    list_set(m, SM_AUTHZ_SERVICE_ACCOUNTS)) {
		fm->src_bit = (uint32_t)c->n_src_bits++;
		fp->n_src++;
	}
	if ((err = cidr_atom(c, &m->positive[SM_AUTHZ_SOURCE_IPS], &fm->cidr_atom[0])))
		return err;
	return cidr_atom(c, &m->negative[SM_AUTHZ_SOURCE_IPS], &fm->cidr_atom[1]);
}

/* The policy's index, flattening it the first time it is seen. */
static int add_policy(struct sm_compiler *c, const struct sm_authz_policy *p, uint32_t *index)
{
	struct sm_flat_policy fp = { .policy = p, .first_match = (uint32_t)c->n_matches,
				     .first_src = (uint32_t)c->n_src_bits };
	int err;

	if ((err = sm_intern_add(&c->policy_ids, &p, sizeof(p), index)))
		return err;
	if (*index < c->n_policies)
		return 0;
	for (size_t r = 0; r < p->n_rules; r++)
		for (size_t k = 0; k < p->rules[r].n_clauses; k++)
			for (size_t m = 0; m < p->rules[r].clauses[k].n_matches; m++)
				if ((err = flatten_match(c, &fp, &p->rules[r].clauses[k].matches[m])))
					return err;
	if ((err = sm_grow(&c->policies, &c->cap_policies, c->n_policies + 1, sizeof(*c->policies))))
		return err;
	c->policies[c->n_policies++] = fp;
	return 0;
}

/* ---- idents: every source address, the first listing of an address wins ---- */

struct ordered_addr {
	uint8_t addr[16];
	size_t index;
};

static int cmp_ordered_addr(const void *a, const void *b)
{
	const struct ordered_addr *x = a, *y = b;
	int r = memcmp(x->addr, y->addr, 16);

	return r ? r : (x->index > y->index) - (x->index < y->index);
}

/* The distinct addresses of n items (addr at offset 0 of each stride-byte item), first listing first. */
static int distinct_addrs(const void *items, size_t n, size_t stride, size_t **out, size_t *n_out)
{
	struct ordered_addr *sorted = calloc(n ? n : 1, sizeof(*sorted));
	size_t *keep = calloc(n ? n : 1, sizeof(*keep));
	size_t k = 0;

	if (!sorted || !keep) {
		free(sorted);
		free(keep);
		return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++) {
		memcpy(sorted[i].addr, (const uint8_t *)items + i * stride, 16);
		sorted[i].index = i;
	}
	qsort(sorted, n, sizeof(*sorted), cmp_ordered_addr);
	for (size_t i = 0; i < n; i++)
		if (!i || memcmp(sorted[i].addr, sorted[i - 1].addr, 16))
			keep[k++] = sorted[i].index;
	free(sorted);
	*out = keep;
	*n_out = k;
	return 0;
}

static int build_idents(struct sm_compiler *c, const size_t *keep, size_t n)
{
	struct sm_authz_tables *t = c->t;

	t->ident_keys = calloc(n ? n : 1, sizeof(*t->ident_keys));
	t->ident_values = calloc(n ? n : 1, sizeof(*t->ident_values));
	if (!t->ident_keys || !t->ident_values)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		const struct sm_authz_source *s = &c->in->sources[keep[i]];

		memcpy(t->ident_keys[i].addr, s->addr, 16);
		t->ident_values[i].identity = s->node ? SM_AUTHZ_IDENTITY_NODE : sm_authz_identity_hash(&s->identity);
	}
	t->n_idents = n;
	return 0;
}

/* ---- CIDR classes and the LPM entries ---- */

struct prefix_atom {
	uint8_t addr[16]; /* masked */
	uint32_t len;
	uint32_t atom;
};

static int cmp_prefix_atom(const void *a, const void *b)
{
	const struct prefix_atom *x = a, *y = b;
	int r = memcmp(x->addr, y->addr, 16);

	if (r)
		return r;
	if (x->len != y->len)
		return x->len < y->len ? -1 : 1;
	return (x->atom > y->atom) - (x->atom < y->atom);
}

/* The prefixes of every SOURCE_IPS list with the atom naming each, sorted so that a prefix comes right
 * after the prefixes containing it (address, then length). */
static int atom_prefixes(struct sm_compiler *c, struct prefix_atom **out, size_t *n_out)
{
	struct prefix_atom *all = NULL;
	size_t n = 0, cap = 0;
	int err = 0;

	for (uint32_t a = 0; a < c->cidr_atoms.n; a++) {
		size_t size;
		const struct sm_authz_cidr *cidrs = sm_intern_get(&c->cidr_atoms, a, &size);

		for (size_t i = 0; i < size / sizeof(*cidrs); i++) {
			unsigned len = cidrs[i].prefix_len > 128 ? 128 : cidrs[i].prefix_len;

			if ((err = sm_grow(&all, &cap, n + 1, sizeof(*all))))
				goto fail;
			sm_cidr_mask(all[n].addr, cidrs[i].addr, len);
			all[n].len = len;
			all[n++].atom = a;
		}
	}
	if (n)
		qsort(all, n, sizeof(*all), cmp_prefix_atom);
	*out = all;
	*n_out = n;
	return 0;
fail:
	free(all);
	return err;
}

struct open_prefix {
	const struct prefix_atom *p;
	uint32_t cls;
	uint64_t *atoms; /* the atom vector of the addresses it covers */
};

/*
 * Walks the prefixes in order with a stack of the open ones (those containing the current one): a
 * prefix's atoms are its parent's and its own lists'. Writes an LPM entry where the class changes.
 */
static int build_cidr_classes(struct sm_compiler *c)
{
	struct sm_authz_tables *t = c->t;
	size_t words = SM_WORDS(c->cidr_atoms.n), n = 0, depth = 0;
	struct prefix_atom *all = NULL;
	struct open_prefix stack[130];
	uint64_t *vectors = NULL, *zero = NULL;
	uint32_t id;
	int err;

	zero = calloc(words + 1, sizeof(*zero));
	vectors = calloc(130 * (words + 1), sizeof(*vectors));
	if (!zero || !vectors) {
		err = -ENOMEM;
		goto out;
	}
	if ((err = sm_intern_add(&c->cidr_classes, zero, words * 8, &id)) || (err = atom_prefixes(c, &all, &n)))
		goto out;
	t->cidr_keys = calloc(n ? n : 1, sizeof(*t->cidr_keys));
	t->cidr_values = calloc(n ? n : 1, sizeof(*t->cidr_values));
	if (!t->cidr_keys || !t->cidr_values) {
		err = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < n;) {
		const struct prefix_atom *p = &all[i];
		uint64_t *v = vectors + depth * (words + 1);
		uint32_t parent_cls = 0;

		while (depth && !sm_cidr_contains(stack[depth - 1].p->addr, stack[depth - 1].p->len, p->addr))
			depth--;
		v = vectors + depth * (words + 1);
		if (depth) {
			memcpy(v, stack[depth - 1].atoms, words * 8);
			parent_cls = stack[depth - 1].cls;
		} else {
			memset(v, 0, words * 8);
		}
		for (; i < n && all[i].len == p->len && !memcmp(all[i].addr, p->addr, 16); i++)
			sm_bit_set(v, all[i].atom);
		if ((err = sm_intern_add(&c->cidr_classes, v, words * 8, &id)))
			goto out;
		stack[depth++] = (struct open_prefix){ .p = p, .cls = id, .atoms = v };
		if (id == parent_cls)
			continue;
		t->cidr_keys[t->n_cidrs] = (struct sm_authz_cidr_key){
			.prefixlen = SM_AUTHZ_CIDR_PREFIX_BASE + p->len,
			.generation = htonl(t->generation),
		};
		memcpy(t->cidr_keys[t->n_cidrs].addr, p->addr, 16);
		t->cidr_values[t->n_cidrs++].cidr_class = id;
		c->lengths[p->len / 64] |= 1ULL << (p->len % 64);
	}
out:
	free(all);
	free(vectors);
	free(zero);
	return err;
}

/* ---- source classes ---- */

/* An identity as the policies see it: the principal "TD/ns/NS/sa/SA", its namespace and account. */
struct peer {
	const struct sm_authz_identity *identity; /* NULL: none */
	char *principal;
};

static bool string_matches(const struct sm_authz_string *s, const char *value)
{
	size_t n = strlen(value), k = strlen(s->value);

	switch (s->kind) {
	case SM_AUTHZ_EXACT:
		return !strcmp(value, s->value);
	case SM_AUTHZ_PREFIX:
		return n >= k && !memcmp(value, s->value, k);
	case SM_AUTHZ_SUFFIX:
		return n >= k && !memcmp(value + n - k, s->value, k);
	case SM_AUTHZ_PRESENCE:
		return n > 0;
	}
	return false;
}

/* Whether one entry of the list (of kind f) matches the peer; false without an identity. */
static bool identity_in(const struct peer *peer, enum sm_authz_field f, const struct sm_authz_list *list)
{
	const struct sm_authz_identity *id = peer->identity;

	if (!id)
		return false;
	for (size_t i = 0; i < list->n; i++) {
		if (f == SM_AUTHZ_PRINCIPALS && string_matches(&list->strings[i], peer->principal))
			return true;
		if (f == SM_AUTHZ_NAMESPACES && string_matches(&list->strings[i], id->namespace))
			return true;
		if (f == SM_AUTHZ_SERVICE_ACCOUNTS && !strcmp(list->accounts[i].namespace, id->namespace) &&
		    !strcmp(list->accounts[i].name, id->service_account))
			return true;
	}
	return false;
}

static bool identity_holds(const struct peer *peer, const struct sm_authz_match *m)
{
	static const enum sm_authz_field kinds[] = { SM_AUTHZ_PRINCIPALS, SM_AUTHZ_NAMESPACES,
						     SM_AUTHZ_SERVICE_ACCOUNTS };

	for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
		if (m->positive[kinds[k]].n && !identity_in(peer, kinds[k], &m->positive[kinds[k]]))
			return false;
		if (m->negative[kinds[k]].n && identity_in(peer, kinds[k], &m->negative[kinds[k]]))
			return false;
	}
	return true;
}

static int peer_init(struct peer *peer, const struct sm_authz_identity *identity)
{
	size_t size;

	peer->identity = identity;
	peer->principal = NULL;
	if (!identity)
		return 0;
	size = strlen(identity->trust_domain) + strlen(identity->namespace) + strlen(identity->service_account) + 9;
	peer->principal = malloc(size);
	if (!peer->principal)
		return -ENOMEM;
	snprintf(peer->principal, size, "%s/ns/%s/sa/%s", identity->trust_domain, identity->namespace,
		 identity->service_account);
	return 0;
}

/* Per source bit: whether the identity side of its match holds for the peer. */
static int identity_vector(struct sm_compiler *c, const struct sm_authz_identity *identity, uint64_t *out)
{
	struct peer peer;
	int err = peer_init(&peer, identity);

	if (err)
		return err;
	memset(out, 0, SM_WORDS(c->n_src_bits) * 8);
	for (size_t m = 0; m < c->n_matches; m++)
		if (c->matches[m].src_bit != SM_NO_BIT && identity_holds(&peer, c->matches[m].match))
			sm_bit_set(out, c->matches[m].src_bit);
	free(peer.principal);
	return 0;
}

/* Per CIDR class, per source bit: whether the SOURCE_IPS side of its match holds. */
static int cidr_vectors(struct sm_compiler *c, uint64_t **out)
{
	size_t words = SM_WORDS(c->n_src_bits), n = c->cidr_classes.n;
	uint64_t *v = calloc(n * words + 1, sizeof(*v));

	if (!v)
		return -ENOMEM;
	for (uint32_t k = 0; k < n; k++) {
		const uint64_t *atoms = sm_intern_get(&c->cidr_classes, k, NULL);

		for (size_t m = 0; m < c->n_matches; m++) {
			const struct sm_flat_match *fm = &c->matches[m];

			if (fm->src_bit == SM_NO_BIT)
				continue;
			if (fm->cidr_atom[0] && !sm_bit(atoms, fm->cidr_atom[0] - 1))
				continue;
			if (fm->cidr_atom[1] && sm_bit(atoms, fm->cidr_atom[1] - 1))
				continue;
			sm_bit_set(v + k * words, fm->src_bit);
		}
	}
	*out = v;
	return 0;
}

/* An (identity, CIDR class) pair that occurs, and its source class. */
struct pair {
	uint64_t identity;
	uint32_t cidr_class;
	uint32_t source_class;
};

struct pairs {
	struct pair *items;
	size_t n, cap;
	struct sm_intern ids;	     /* (identity, CIDR class) → index in items */
	struct sm_intern identities; /* identity hash → index in id_vectors */
	uint64_t *id_vectors;
	size_t cap_vectors;
	uint64_t *cidr_vectors;
	uint64_t *scratch;
};

static int add_pair(struct sm_compiler *c, struct pairs *ps, uint64_t hash,
		    const struct sm_authz_identity *identity, uint32_t cidr_class)
{
	size_t words = SM_WORDS(c->n_src_bits);
	struct { uint64_t identity; uint32_t cidr_class, pad; } key = { hash, cidr_class, 0 };
	size_t known = ps->identities.n;
	uint32_t index, id_index, cls;
	int err;

	if ((err = sm_intern_add(&ps->ids, &key, sizeof(key), &index)) || index < ps->n)
		return err;
	if ((err = sm_intern_add(&ps->identities, &hash, sizeof(hash), &id_index)))
		return err;
	if (ps->identities.n > known) {
		if ((err = sm_grow(&ps->id_vectors, &ps->cap_vectors, (id_index + 1) * words + 1, 8)) ||
		    (err = identity_vector(c, identity, ps->id_vectors + id_index * words)))
			return err;
	}
	for (size_t w = 0; w < words; w++)
		ps->scratch[w] = ps->id_vectors[id_index * words + w] & ps->cidr_vectors[cidr_class * words + w];
	if ((err = sm_intern_add(&c->source_classes, ps->scratch, words * 8, &cls)) ||
	    (err = sm_grow(&ps->items, &ps->cap, ps->n + 1, sizeof(*ps->items))))
		return err;
	ps->items[ps->n++] = (struct pair){ hash, cidr_class, cls + 1 };
	return 0;
}

static void pairs_free(struct pairs *ps)
{
	free(ps->items);
	sm_intern_free(&ps->ids);
	sm_intern_free(&ps->identities);
	free(ps->id_vectors);
	free(ps->cidr_vectors);
	free(ps->scratch);
}

/* The pairs: each workload address's (identity, CIDR class of the address), (none, c) for every c. */
static int build_pairs(struct sm_compiler *c, const size_t *keep, size_t n_keep, struct pairs *ps)
{
	int err;

	sm_intern_init(&ps->ids);
	sm_intern_init(&ps->identities);
	ps->scratch = calloc(SM_WORDS(c->n_src_bits) + 1, 8);
	if (!ps->scratch)
		return -ENOMEM;
	if ((err = cidr_vectors(c, &ps->cidr_vectors)))
		return err;
	for (size_t i = 0; i < n_keep; i++) {
		const struct sm_authz_source *s = &c->in->sources[keep[i]];

		if (s->node)
			continue;
		if ((err = add_pair(c, ps, c->t->ident_values[i].identity, &s->identity,
				    sm_authz_cidr_class(c->t, s->addr, c->lengths))))
			return err;
	}
	for (uint32_t k = 0; k < c->cidr_classes.n; k++)
		if ((err = add_pair(c, ps, SM_AUTHZ_IDENTITY_NONE, NULL, k)))
			return err;
	return 0;
}

/* Only the pairs whose class has a verdict entry of its own: the others fall to class 0, the same. */
static int build_sources(struct sm_compiler *c, const struct pairs *ps)
{
	struct sm_authz_tables *t = c->t;
	struct source_row {
		struct sm_authz_source_key key;
		struct sm_authz_source_value value;
	} *rows;
	size_t n = 0;

	rows = calloc(ps->n ? ps->n : 1, sizeof(*rows));
	if (!rows)
		return -ENOMEM;
	for (size_t i = 0; i < ps->n; i++)
		if (c->class_used[ps->items[i].source_class - 1])
			rows[n++] = (struct source_row){ { t->generation, ps->items[i].cidr_class, ps->items[i].identity },
						     { ps->items[i].source_class, 0 } };
	qsort(rows, n, sizeof(*rows), sm_authz_cmp_source);
	t->source_keys = calloc(n ? n : 1, sizeof(*t->source_keys));
	t->source_values = calloc(n ? n : 1, sizeof(*t->source_values));
	if (!t->source_keys || !t->source_values) {
		free(rows);
		return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++) {
		t->source_keys[i] = rows[i].key;
		t->source_values[i] = rows[i].value;
	}
	t->n_sources = n;
	free(rows);
	return 0;
}

/* ---- destination sets ---- */

static bool dest_ip_in(const struct sm_authz_list *list, const uint8_t addr[16])
{
	for (size_t i = 0; i < list->n; i++)
		if (sm_cidr_contains(list->cidrs[i].addr, list->cidrs[i].prefix_len > 128 ? 128 : list->cidrs[i].prefix_len,
				     addr))
			return true;
	return false;
}

static bool dest_side_holds(const struct sm_flat_match *fm, const uint8_t addr[16])
{
	const struct sm_authz_match *m = fm->match;

	return !fm->empty &&
	       (!m->positive[SM_AUTHZ_DESTINATION_IPS].n || dest_ip_in(&m->positive[SM_AUTHZ_DESTINATION_IPS], addr)) &&
	       !dest_ip_in(&m->negative[SM_AUTHZ_DESTINATION_IPS], addr);
}

/* A set's key: n, the policies' indices (32 bits each, padded to 64), then per match of those policies
 * in order, whether it is not empty and its destination side holds. */
static int destination_set(struct sm_compiler *c, const struct sm_authz_destination *d, uint32_t *set)
{
	size_t n_matches = 0, head = (d->n_policies + 2) / 2, lm = 0;
	uint32_t *indices, index;
	uint64_t *key;
	int err;

	for (size_t i = 0; i < d->n_policies; i++) {
		if ((err = add_policy(c, d->policies[i], &index)))
			return err;
		n_matches += c->policies[index].n_matches;
	}
	key = calloc(head + SM_WORDS(n_matches) + 1, 8);
	if (!key)
		return -ENOMEM;
	indices = (uint32_t *)(void *)key;
	indices[0] = (uint32_t)d->n_policies;
	for (size_t i = 0; i < d->n_policies; i++) {
		const struct sm_flat_policy *fp;

		if ((err = add_policy(c, d->policies[i], &indices[1 + i])))
			goto out;
		fp = &c->policies[indices[1 + i]];
		for (uint32_t m = 0; m < fp->n_matches; m++, lm++)
			if (dest_side_holds(&c->matches[fp->first_match + m], d->addr))
				sm_bit_set(key + head, lm);
	}
	err = sm_intern_add(&c->sets, key, (head + SM_WORDS(n_matches)) * 8, set);
out:
	free(key);
	return err;
}

static int build_dests(struct sm_compiler *c)
{
	struct sm_authz_tables *t = c->t;
	size_t *keep = NULL, n = 0;
	int err;

	if ((err = distinct_addrs(c->in->destinations, c->in->n_destinations, sizeof(*c->in->destinations), &keep, &n)))
		return err;
	t->dest_keys = calloc(n ? n : 1, sizeof(*t->dest_keys));
	t->dest_values = calloc(n ? n : 1, sizeof(*t->dest_values));
	if (!t->dest_keys || !t->dest_values) {
		err = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		const struct sm_authz_destination *d = &c->in->destinations[keep[i]];
		uint32_t set;

		if ((err = destination_set(c, d, &set)))
			goto out;
		t->dest_keys[i].generation = t->generation;
		memcpy(t->dest_keys[i].addr, d->addr, 16);
		t->dest_values[i].dest_set = set + 1;
	}
	t->n_dests = n;
out:
	free(keep);
	return err;
}

/* ---- the whole ---- */

int sm_compile_emit_verdict(struct sm_compiler *c, uint32_t set, uint32_t source_class, uint16_t port,
			    const struct sm_authz_verdict *verdict)
{
	int err;

	if (++c->need_verdicts > c->max_verdicts)
		return 0; /* counted for the error, not kept */
	if ((err = sm_grow(&c->rows, &c->cap_rows, c->n_rows + 1, sizeof(*c->rows))))
		return err;
	c->rows[c->n_rows++] = (struct sm_verdict_row){
		.key = { .generation = c->t->generation, .dest_set = set, .source_class = source_class, .port = htons(port) },
		.value = *verdict,
	};
	return 0;
}

static int build_verdicts(struct sm_compiler *c)
{
	struct sm_authz_tables *t = c->t;
	size_t n = c->n_rows;

	qsort(c->rows, n, sizeof(*c->rows), sm_authz_cmp_verdict);
	t->verdict_keys = calloc(n ? n : 1, sizeof(*t->verdict_keys));
	t->verdicts = calloc(n ? n : 1, sizeof(*t->verdicts));
	if (!t->verdict_keys || !t->verdicts)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		t->verdict_keys[i] = c->rows[i].key;
		t->verdicts[i] = c->rows[i].value;
	}
	t->n_verdicts = n;
	return 0;
}

/* 812000 → "812,000" */
static void with_commas(char *buf, size_t size, size_t value)
{
	char digits[32];
	int n = snprintf(digits, sizeof(digits), "%zu", value), k = 0;

	for (int i = 0; i < n && k + 2 < (int)size; i++) {
		if (i && (n - i) % 3 == 0)
			buf[k++] = ',';
		buf[k++] = digits[i];
	}
	buf[k] = 0;
}

static int check_limit(const char *table, size_t need, uint32_t max, char *reason, size_t reason_size)
{
	char a[32], b[32];

	if (need <= max)
		return 0;
	with_commas(a, sizeof(a), need);
	with_commas(b, sizeof(b), max);
	snprintf(reason, reason_size, "%s: %s entries needed, %s fit", table, a, b);
	return -E2BIG;
}

static void compiler_free(struct sm_compiler *c)
{
	sm_intern_free(&c->policy_ids);
	free(c->policies);
	free(c->matches);
	sm_intern_free(&c->cidr_atoms);
	sm_intern_free(&c->cidr_classes);
	sm_intern_free(&c->source_classes);
	free(c->class_used);
	sm_intern_free(&c->sets);
	free(c->rows);
}

static uint32_t limit(uint32_t given, uint32_t map_default)
{
	return given ? given : map_default / 2;
}

static int compile(struct sm_compiler *c, char *reason, size_t reason_size)
{
	struct pairs ps = { 0 };
	size_t *keep = NULL, n_keep = 0;
	int err;

	if ((err = distinct_addrs(c->in->sources, c->in->n_sources, sizeof(*c->in->sources), &keep, &n_keep)) ||
	    (err = build_idents(c, keep, n_keep)) || (err = build_dests(c)) ||
	    (err = check_limit("dests", c->t->n_dests, c->max_dests, reason, reason_size)) ||
	    (err = build_cidr_classes(c)) ||
	    (err = check_limit("cidrs", c->t->n_cidrs, c->max_cidrs, reason, reason_size)) ||
	    (err = build_pairs(c, keep, n_keep, &ps)))
		goto out;
	c->class_used = calloc(c->source_classes.n + 1, sizeof(*c->class_used));
	if (!c->class_used) {
		err = -ENOMEM;
		goto out;
	}
	for (uint32_t s = 0; s < c->sets.n; s++)
		if ((err = sm_compile_set(c, s, reason, reason_size)))
			goto out;
	if ((err = check_limit("verdicts", c->need_verdicts, c->max_verdicts, reason, reason_size)) ||
	    (err = build_verdicts(c)) || (err = build_sources(c, &ps)))
		goto out;
	err = check_limit("sources", c->t->n_sources, c->max_sources, reason, reason_size);
out:
	if (err == -ENOMEM)
		snprintf(reason, reason_size, "out of memory compiling the authorization tables");
	pairs_free(&ps);
	free(keep);
	return err;
}

int sm_authz_compile(const struct sm_authz_compile_input *input, uint32_t generation,
		     struct sm_authz_tables **out, char *reason, size_t reason_size)
{
	struct sm_compiler c = {
		.in = input,
		.max_dests = limit(input->max_dests, SM_DEFAULT_MAX_AUTHZ_DESTS),
		.max_cidrs = limit(input->max_cidrs, SM_DEFAULT_MAX_AUTHZ_CIDRS),
		.max_sources = limit(input->max_sources, SM_DEFAULT_MAX_AUTHZ_SOURCES),
		.max_verdicts = limit(input->max_verdicts, SM_DEFAULT_MAX_AUTHZ_VERDICTS),
	};
	int err;

	*out = NULL;
	if (!generation) {
		snprintf(reason, reason_size, "generation 0 is reserved (no tables)");
		return -EINVAL;
	}
	c.t = calloc(1, sizeof(*c.t));
	if (!c.t) {
		snprintf(reason, reason_size, "out of memory compiling the authorization tables");
		return -ENOMEM;
	}
	c.t->generation = generation;
	sm_intern_init(&c.policy_ids);
	sm_intern_init(&c.cidr_atoms);
	sm_intern_init(&c.cidr_classes);
	sm_intern_init(&c.source_classes);
	sm_intern_init(&c.sets);
	err = compile(&c, reason, reason_size);
	compiler_free(&c);
	if (err) {
		sm_authz_tables_free(c.t);
		return err;
	}
	*out = c.t;
	return 0;
}
