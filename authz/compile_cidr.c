/* SPDX-License-Identifier: Apache-2.0 */
/*
 * CIDR classes: the distinct vectors of SOURCE_IPS atoms ("the address is in this list") the addresses
 * have, and the LPM entries that give each address its class: the distinct prefixes of those lists, each
 * mapped to the class of the addresses it covers, none where that is its parent's class.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>

#include "authz/compile_internal.h"

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
int sm_compile_cidr_classes(struct sm_compiler *c)
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
	}
out:
	free(all);
	free(vectors);
	free(zero);
	return err;
}
