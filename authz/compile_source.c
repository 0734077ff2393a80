/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Source classes: per (identity, CIDR class) pair that occurs, the vector "the source side of match m
 * holds" (its identity lists for the identity, its SOURCE_IPS lists for the CIDR class); equal vectors
 * are one class. The sources table keeps only the pairs whose class has verdict entries of its own. Both
 * sides of a vector come from the compilation's source side (compile_classify.c), which the tables keep.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "authz/compile_internal.h"

static int add_pair(struct sm_compiler *c, struct sm_pairs *ps, uint64_t hash,
		    const struct sm_authz_identity *identity, uint32_t cidr_class)
{
	size_t words = SM_WORDS(c->n_src_bits);
	struct { uint64_t identity; uint32_t cidr_class, pad; } key = { hash, cidr_class, 0 };
	size_t known = ps->identities.n;
	const uint64_t *cidr_vector;
	uint32_t index, id_index, cls;
	int err;

	if ((err = sm_intern_add(&ps->ids, &key, sizeof(key), &index)) || index < ps->n)
		return err;
	if ((err = sm_intern_add(&ps->identities, &hash, sizeof(hash), &id_index)))
		return err;
	if (ps->identities.n > known) {
		if ((err = sm_grow(&ps->id_vectors, &ps->cap_vectors, (id_index + 1) * words + 1, 8)) ||
		    (err = sm_classifier_identity_vector(c->classifier, identity, ps->id_vectors + id_index * words)))
			return err;
	}
	cidr_vector = sm_classifier_cidr_vector(c->classifier, cidr_class);
	for (size_t w = 0; w < words; w++)
		ps->scratch[w] = ps->id_vectors[id_index * words + w] & cidr_vector[w];
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
	if ((err = sm_cidr_parents(c->t, &parent)))
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
