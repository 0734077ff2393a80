/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The destination side of the compilation, kept with its tables: what gives a local address its
 * destination set. A set's key is the policies that apply to the address (their indices in the
 * compilation) and, per match of those policies, whether it is not empty and its destination side
 * (DESTINATION_IPS, copied out of the policies, which the model may free once a later compilation replaced
 * them) holds for the address. While the policies stand, a later update of this node's workloads (a pod
 * started, gone, or relabelled) gives an address the set it would have had when its key is one the
 * compilation made a set of: the verdicts of every set are in the tables already.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "authz/compile_internal.h"

/* One match of a policy, as far as the destination decides. */
struct side_match {
	bool empty; /* every list empty: never matches */
	struct sm_authz_list positive, negative; /* DESTINATION_IPS */
};

struct side_policy {
	uint32_t first_match, n_matches;
};

struct sm_authz_dest_side {
	unsigned refs;
	struct side_policy *policies; /* in the compilation's order: a policy's index is its place here */
	size_t n_policies, cap_policies;
	struct side_match *matches;
	size_t n_matches, cap_matches;
	struct sm_intern hashes; /* policy hash → id */
	uint32_t *index_of;	 /* per hash id: the policy's index, UINT32_MAX when two policies share it */
	size_t cap_index_of;
	struct sm_intern sets; /* the keys; destination set = id + 1 */
	uint32_t max_dests;    /* the entries the dests table may hold for one generation */
};

bool sm_match_empty(const struct sm_authz_match *m)
{
	for (int f = 0; f < SM_AUTHZ_FIELD_COUNT; f++)
		if (m->positive[f].n || m->negative[f].n)
			return false;
	return true;
}

int sm_dest_side_new(struct sm_authz_dest_side **out)
{
	struct sm_authz_dest_side *s = calloc(1, sizeof(*s));

	*out = s;
	if (!s)
		return -ENOMEM;
	s->refs = 1;
	sm_intern_init(&s->hashes);
	sm_intern_init(&s->sets);
	return 0;
}

static int cidrs_copy(struct sm_authz_list *dst, const struct sm_authz_list *src)
{
	dst->n = 0;
	if (!src->n)
		return 0;
	dst->cidrs = malloc(src->n * sizeof(*dst->cidrs));
	if (!dst->cidrs)
		return -ENOMEM;
	memcpy(dst->cidrs, src->cidrs, src->n * sizeof(*dst->cidrs));
	dst->n = src->n;
	return 0;
}

static int add_match(struct sm_authz_dest_side *s, const struct sm_authz_match *m)
{
	struct side_match *sm;
	int err;

	if ((err = sm_grow(&s->matches, &s->cap_matches, s->n_matches + 1, sizeof(*s->matches))))
		return err;
	sm = &s->matches[s->n_matches++];
	*sm = (struct side_match){ .empty = sm_match_empty(m) };
	if ((err = cidrs_copy(&sm->positive, &m->positive[SM_AUTHZ_DESTINATION_IPS])))
		return err;
	return cidrs_copy(&sm->negative, &m->negative[SM_AUTHZ_DESTINATION_IPS]);
}

static int add_hash(struct sm_authz_dest_side *s, uint64_t hash, uint32_t index)
{
	size_t before = s->hashes.n;
	uint32_t id;
	int err;

	if ((err = sm_intern_add(&s->hashes, &hash, sizeof(hash), &id)) ||
	    (err = sm_grow(&s->index_of, &s->cap_index_of, s->hashes.n, sizeof(*s->index_of))))
		return err;
	s->index_of[id] = s->hashes.n > before ? index : UINT32_MAX; /* a hash seen before: ambiguous */
	return 0;
}

int sm_dest_side_add_policy(struct sm_authz_dest_side *s, const struct sm_authz_policy *p)
{
	struct side_policy sp = { .first_match = (uint32_t)s->n_matches };
	int err;

	for (size_t r = 0; r < p->n_rules; r++)
		for (size_t k = 0; k < p->rules[r].n_clauses; k++)
			for (size_t m = 0; m < p->rules[r].clauses[k].n_matches; m++) {
				if ((err = add_match(s, &p->rules[r].clauses[k].matches[m])))
					return err;
				sp.n_matches++;
			}
	if ((err = sm_grow(&s->policies, &s->cap_policies, s->n_policies + 1, sizeof(*s->policies))))
		return err;
	s->policies[s->n_policies] = sp;
	if ((err = add_hash(s, p->hash, (uint32_t)s->n_policies)))
		return err;
	s->n_policies++;
	return 0;
}

static bool dest_ip_in(const struct sm_authz_list *list, const uint8_t addr[16])
{
	for (size_t i = 0; i < list->n; i++)
		if (sm_cidr_contains(list->cidrs[i].addr, list->cidrs[i].prefix_len > 128 ? 128 : list->cidrs[i].prefix_len,
				     addr))
			return true;
	return false;
}

static bool dest_side_holds(const struct side_match *m, const uint8_t addr[16])
{
	return !m->empty && (!m->positive.n || dest_ip_in(&m->positive, addr)) && !dest_ip_in(&m->negative, addr);
}

int sm_dest_side_key(const struct sm_authz_dest_side *s, const uint8_t addr[16], const uint32_t *indices, size_t n,
		     uint64_t **key_out, size_t *size)
{
	size_t n_matches = 0, head = (n + 2) / 2, bit = 0;
	uint32_t *words;
	uint64_t *key;

	for (size_t i = 0; i < n; i++)
		n_matches += s->policies[indices[i]].n_matches;
	key = calloc(head + SM_WORDS(n_matches) + 1, 8);
	if (!key)
		return -ENOMEM;
	words = (uint32_t *)(void *)key;
	words[0] = (uint32_t)n;
	for (size_t i = 0; i < n; i++) {
		const struct side_policy *sp = &s->policies[indices[i]];

		words[1 + i] = indices[i];
		for (uint32_t m = 0; m < sp->n_matches; m++, bit++)
			if (dest_side_holds(&s->matches[sp->first_match + m], addr))
				sm_bit_set(key + head, bit);
	}
	*key_out = key;
	*size = (head + SM_WORDS(n_matches)) * 8;
	return 0;
}

int sm_dest_side_set(const struct sm_authz_dest_side *s, const struct sm_authz_destination *d, uint32_t *set)
{
	uint32_t *indices = calloc(d->n_policies + 1, sizeof(*indices)), id;
	uint64_t *key = NULL;
	size_t size;
	int err = indices ? 0 : -ENOMEM;

	for (size_t i = 0; !err && i < d->n_policies; i++) {
		uint64_t hash = d->policies[i]->hash;

		err = sm_intern_find(&s->hashes, &hash, sizeof(hash), &id);
		if (!err && s->index_of[id] == UINT32_MAX)
			err = -ESRCH; /* two policies of one hash: which one is not known */
		if (!err)
			indices[i] = s->index_of[id];
	}
	if (!err && !(err = sm_dest_side_key(s, d->addr, indices, d->n_policies, &key, &size)) &&
	    !(err = sm_intern_find(&s->sets, key, size, &id)))
		*set = id + 1;
	free(key);
	free(indices);
	return err;
}

void sm_dest_side_take_sets(struct sm_authz_dest_side *s, struct sm_intern *sets, uint32_t max_dests)
{
	sm_intern_free(&s->sets);
	s->sets = *sets;
	sm_intern_init(sets);
	s->max_dests = max_dests;
}

uint32_t sm_dest_side_max_dests(const struct sm_authz_dest_side *s)
{
	return s->max_dests;
}

struct sm_authz_dest_side *sm_dest_side_ref(struct sm_authz_dest_side *s)
{
	if (s)
		s->refs++;
	return s;
}

void sm_dest_side_unref(struct sm_authz_dest_side *s)
{
	if (!s || --s->refs)
		return;
	for (size_t i = 0; i < s->n_matches; i++) {
		free(s->matches[i].positive.cidrs);
		free(s->matches[i].negative.cidrs);
	}
	free(s->matches);
	free(s->policies);
	sm_intern_free(&s->hashes);
	free(s->index_of);
	sm_intern_free(&s->sets);
	free(s);
}
