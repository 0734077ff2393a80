/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Source classes: per (identity, CIDR class) pair that occurs, the vector "the source side of match m
 * holds" (its identity lists for the identity, its SOURCE_IPS lists for the CIDR class); equal vectors
 * are one class. The sources table keeps only the pairs whose class has verdict entries of its own.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "authz/compile_internal.h"

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

static int add_pair(struct sm_compiler *c, struct sm_pairs *ps, uint64_t hash,
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
	ps->items[ps->n++] = (struct sm_pair){ hash, cidr_class, cls + 1 };
	return 0;
}

void sm_pairs_free(struct sm_pairs *ps)
{
	free(ps->items);
	sm_intern_free(&ps->ids);
	sm_intern_free(&ps->identities);
	free(ps->id_vectors);
	free(ps->cidr_vectors);
	free(ps->scratch);
}

/* The pairs: each workload address's (identity, CIDR class of the address), (none, c) for every c. */
int sm_compile_pairs(struct sm_compiler *c, const size_t *keep, size_t n_keep, struct sm_pairs *ps)
{
	int32_t *parent = NULL;
	int err;

	sm_intern_init(&ps->ids);
	sm_intern_init(&ps->identities);
	ps->scratch = calloc(SM_WORDS(c->n_src_bits) + 1, 8);
	if (!ps->scratch)
		return -ENOMEM;
	if ((err = cidr_vectors(c, &ps->cidr_vectors)) || (err = sm_cidr_parents(c->t, &parent)))
		return err;
	for (size_t i = 0; !err && i < n_keep; i++) {
		const struct sm_authz_source *s = &c->in->sources[keep[i]];

		if (!s->node)
			err = add_pair(c, ps, c->t->ident_values[i].identity, &s->identity,
				       sm_cidr_class_in(c->t, parent, s->addr));
	}
	free(parent);
	for (uint32_t k = 0; !err && k < c->cidr_classes.n; k++)
		err = add_pair(c, ps, SM_AUTHZ_IDENTITY_NONE, NULL, k);
	return err;
}

/* Every pair, for sm_authz_update_sources: a source whose pair is among them needs no new class. */
static int export_pairs(struct sm_authz_tables *t, const struct sm_pairs *ps)
{
	t->pair_keys = calloc(ps->n ? ps->n : 1, sizeof(*t->pair_keys));
	if (!t->pair_keys)
		return -ENOMEM;
	for (size_t i = 0; i < ps->n; i++)
		t->pair_keys[i] = (struct sm_authz_source_key){ .cidr_class = ps->items[i].cidr_class,
								.identity = ps->items[i].identity };
	qsort(t->pair_keys, ps->n, sizeof(*t->pair_keys), sm_authz_cmp_source);
	t->n_pairs = ps->n;
	return 0;
}

/* Only the pairs whose class has a verdict entry of its own: the others fall to class 0, the same. */
int sm_compile_sources(struct sm_compiler *c, const struct sm_pairs *ps)
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
	return export_pairs(t, ps);
}
