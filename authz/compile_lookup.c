/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The compiled tables read back as the kernel reads them (bpf/sockmesh.h, L4 authorization): a model of
 * sk_lookup's five lookups for tests and `sockmesh explain`. The compiler writes every table sorted by
 * key in the orders below, so each lookup is a binary search (the LPM one, one per prefix length).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>

#include "authz/compile_internal.h"

#define CMP(x, y) ((x) < (y) ? -1 : (x) > (y))

int sm_authz_cmp_ident(const void *a, const void *b)
{
	return memcmp(((const struct sm_frontend_key *)a)->addr, ((const struct sm_frontend_key *)b)->addr, 16);
}

int sm_authz_cmp_dest(const void *a, const void *b)
{
	const struct sm_authz_dest_key *x = a, *y = b;

	return x->generation != y->generation ? CMP(x->generation, y->generation) : memcmp(x->addr, y->addr, 16);
}

int sm_authz_cmp_cidr(const void *a, const void *b)
{
	const struct sm_authz_cidr_key *x = a, *y = b;
	int c = memcmp(&x->generation, &y->generation, 4);

	if (c)
		return c;
	c = memcmp(x->addr, y->addr, 16);
	return c ? c : CMP(x->prefixlen, y->prefixlen);
}

int sm_authz_cmp_source(const void *a, const void *b)
{
	const struct sm_authz_source_key *x = a, *y = b;

	if (x->generation != y->generation)
		return CMP(x->generation, y->generation);
	if (x->cidr_class != y->cidr_class)
		return CMP(x->cidr_class, y->cidr_class);
	return CMP(x->identity, y->identity);
}

int sm_authz_cmp_verdict(const void *a, const void *b)
{
	const struct sm_authz_verdict_key *x = a, *y = b;

	if (x->generation != y->generation)
		return CMP(x->generation, y->generation);
	if (x->dest_set != y->dest_set)
		return CMP(x->dest_set, y->dest_set);
	if (x->source_class != y->source_class)
		return CMP(x->source_class, y->source_class);
	return CMP(ntohs(x->port), ntohs(y->port));
}

/* Index of key in keys (n sorted entries of size bytes), or -1. */
static long find(const void *keys, size_t n, size_t size, const void *key, int (*cmp)(const void *, const void *))
{
	const uint8_t *found = bsearch(key, keys, n, size, cmp);

	return found ? (long)((size_t)(found - (const uint8_t *)keys) / size) : -1;
}

uint32_t sm_authz_cidr_class(const struct sm_authz_tables *t, const uint8_t addr[16])
{
	struct sm_authz_cidr_key key = { .generation = htonl(t->generation) };

	for (int len = 128; len >= 0; len--) {
		long i;

		key.prefixlen = SM_AUTHZ_CIDR_PREFIX_BASE + (uint32_t)len;
		sm_cidr_mask(key.addr, addr, (unsigned)len);
		i = find(t->cidr_keys, t->n_cidrs, sizeof(key), &key, sm_authz_cmp_cidr);
		if (i >= 0)
			return t->cidr_values[i].cidr_class;
	}
	return 0;
}

static bool entry_contains(const struct sm_authz_cidr_key *key, const uint8_t addr[16])
{
	return sm_cidr_contains(key->addr, key->prefixlen - SM_AUTHZ_CIDR_PREFIX_BASE, addr);
}

int sm_cidr_parents(const struct sm_authz_tables *t, int32_t **out)
{
	int32_t *parent = malloc((t->n_cidrs ? t->n_cidrs : 1) * sizeof(*parent)), stack[SM_CIDR_DEPTH];
	size_t depth = 0;

	if (!parent)
		return -ENOMEM;
	for (size_t i = 0; i < t->n_cidrs; i++) {
		while (depth && !entry_contains(&t->cidr_keys[stack[depth - 1]], t->cidr_keys[i].addr))
			depth--;
		parent[i] = depth ? stack[depth - 1] : -1;
		if (depth < SM_CIDR_DEPTH) /* always: distinct nested prefixes are at most 129 deep */
			stack[depth++] = (int32_t)i;
	}
	*out = parent;
	return 0;
}

/*
 * The last entry at or before addr in address order is the deepest that contains it, or inside it: the
 * entries after that one start within it. So the first of its ancestors (itself included) that contains
 * addr is the longest prefix that does.
 */
uint32_t sm_cidr_class_in(const struct sm_authz_tables *t, const int32_t *parent, const uint8_t addr[16])
{
	size_t lo = 0, hi = t->n_cidrs;

	while (lo < hi) { /* the first entry that starts after addr */
		size_t mid = lo + (hi - lo) / 2;

		if (memcmp(t->cidr_keys[mid].addr, addr, 16) <= 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	for (int32_t i = (int32_t)lo - 1; i >= 0; i = parent[i])
		if (entry_contains(&t->cidr_keys[i], addr))
			return t->cidr_values[i].cidr_class;
	return 0;
}

int sm_authz_tables_lookup(const struct sm_authz_tables *t, const uint8_t src[16], const uint8_t dst[16],
			   uint16_t dst_port, struct sm_authz_verdict *out)
{
	struct sm_frontend_key ident_key;
	struct sm_authz_dest_key dest_key = { .generation = t->generation };
	struct sm_authz_source_key source_key = { .generation = t->generation };
	uint64_t identity = SM_AUTHZ_IDENTITY_NONE;
	uint32_t dest_set, source_class = 0;
	long i;

	memcpy(dest_key.addr, dst, 16);
	i = find(t->dest_keys, t->n_dests, sizeof(dest_key), &dest_key, sm_authz_cmp_dest);
	if (i < 0)
		return 0;
	dest_set = t->dest_values[i].dest_set;

	memcpy(ident_key.addr, src, 16);
	i = find(t->ident_keys, t->n_idents, sizeof(ident_key), &ident_key, sm_authz_cmp_ident);
	if (i >= 0)
		identity = t->ident_values[i].identity;
	if (identity == SM_AUTHZ_IDENTITY_NODE)
		return -ENOENT;

	source_key.cidr_class = sm_authz_cidr_class(t, src);
	source_key.identity = identity;
	i = find(t->source_keys, t->n_sources, sizeof(source_key), &source_key, sm_authz_cmp_source);
	if (i >= 0)
		source_class = t->source_values[i].source_class;

	/* (class, port), (class, 0), (0, port), (0, 0): the first entry found decides */
	for (int step = 0; step < 4; step++) {
		struct sm_authz_verdict_key key = {
			.generation = t->generation,
			.dest_set = dest_set,
			.source_class = step < 2 ? source_class : 0,
			.port = step % 2 ? 0 : htons(dst_port),
		};

		i = find(t->verdict_keys, t->n_verdicts, sizeof(key), &key, sm_authz_cmp_verdict);
		if (i >= 0) {
			*out = t->verdicts[i];
			return 1;
		}
	}
	return -EINVAL; /* the compiler writes (set, 0, 0) for every set: these tables are not its */
}

void sm_authz_tables_free(struct sm_authz_tables *t)
{
	if (!t)
		return;
	free(t->dest_keys);
	free(t->dest_values);
	free(t->cidr_keys);
	free(t->cidr_values);
	free(t->source_keys);
	free(t->source_values);
	free(t->verdict_keys);
	free(t->verdicts);
	free(t->ident_keys);
	free(t->ident_values);
	free(t->pair_keys);
	free(t->added_source_keys);
	free(t->added_source_values);
	sm_classifier_unref(t->classifier);
	free(t->changed_idents);
	sm_dest_side_unref(t->dest_side);
	free(t->changed_dests);
	free(t);
}
