/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Tables for a change of sources alone (a pod of another node started, gone, or given another service
 * account), from the tables compiled last. The verdicts depend on the destinations, their policies and
 * the source classes; a source's class depends only on its (identity, CIDR class) pair. While the
 * destinations and policies stand, a source whose pair the last compilation evaluated needs nothing but
 * its ident: prev's tables stay as they are. A pair never evaluated may make a new class: compile in full.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>

#include "authz/compile_internal.h"

static int copy_array(void *dst, const void *src, size_t n, size_t size)
{
	void *copy = malloc(n ? n * size : 1);

	if (!copy)
		return -ENOMEM;
	if (n)
		memcpy(copy, src, n * size);
	*(void **)dst = copy;
	return 0;
}

/* prev's generation-bound tables and pairs, copied into t. */
static int copy_tables(struct sm_authz_tables *t, const struct sm_authz_tables *prev)
{
	int err;

	t->generation = prev->generation;
	t->n_dests = prev->n_dests;
	t->n_cidrs = prev->n_cidrs;
	t->n_sources = prev->n_sources;
	t->n_verdicts = prev->n_verdicts;
	t->n_pairs = prev->n_pairs;
	if ((err = copy_array(&t->dest_keys, prev->dest_keys, prev->n_dests, sizeof(*prev->dest_keys))) ||
	    (err = copy_array(&t->dest_values, prev->dest_values, prev->n_dests, sizeof(*prev->dest_values))) ||
	    (err = copy_array(&t->cidr_keys, prev->cidr_keys, prev->n_cidrs, sizeof(*prev->cidr_keys))) ||
	    (err = copy_array(&t->cidr_values, prev->cidr_values, prev->n_cidrs, sizeof(*prev->cidr_values))) ||
	    (err = copy_array(&t->source_keys, prev->source_keys, prev->n_sources, sizeof(*prev->source_keys))) ||
	    (err = copy_array(&t->source_values, prev->source_values, prev->n_sources, sizeof(*prev->source_values))) ||
	    (err = copy_array(&t->verdict_keys, prev->verdict_keys, prev->n_verdicts, sizeof(*prev->verdict_keys))) ||
	    (err = copy_array(&t->verdicts, prev->verdicts, prev->n_verdicts, sizeof(*prev->verdicts))))
		return err;
	return copy_array(&t->pair_keys, prev->pair_keys, prev->n_pairs, sizeof(*prev->pair_keys));
}

static bool pair_known(const struct sm_authz_tables *prev, uint64_t identity, uint32_t cidr_class)
{
	struct sm_authz_source_key key = { .cidr_class = cidr_class, .identity = identity };

	return bsearch(&key, prev->pair_keys, prev->n_pairs, sizeof(key), sm_authz_cmp_source) != NULL;
}

/* The first of t's idents (sorted, as prev's) that prev does not hold as it is and whose pair prev never
 * evaluated: its index, or -1. One walk of both lists; the node's addresses have no pair. */
static long first_unknown_pair(const struct sm_authz_tables *t, const struct sm_authz_tables *prev,
			       const int32_t *parent)
{
	size_t p = 0;

	for (size_t i = 0; i < t->n_idents; i++) {
		uint64_t identity = t->ident_values[i].identity;
		int order = 1;

		while (p < prev->n_idents && (order = sm_authz_cmp_ident(&prev->ident_keys[p], &t->ident_keys[i])) < 0)
			p++;
		if ((order == 0 && prev->ident_values[p].identity == identity) || identity == SM_AUTHZ_IDENTITY_NODE)
			continue;
		if (!pair_known(prev, identity, sm_cidr_class_in(prev, parent, t->ident_keys[i].addr)))
			return (long)i;
	}
	return -1;
}

int sm_authz_update_sources(const struct sm_authz_tables *prev, const struct sm_authz_compile_input *input,
			    struct sm_authz_tables **out, char *reason, size_t reason_size)
{
	struct sm_authz_tables *t = calloc(1, sizeof(*t));
	int32_t *parent = NULL;
	size_t *keep = NULL, n_keep;
	char addr[INET6_ADDRSTRLEN];
	long unknown;
	int err;

	*out = NULL;
	if (!t) {
		err = -ENOMEM;
		goto out;
	}
	if ((err = copy_tables(t, prev)) || (err = sm_compile_idents(input, t, &keep, &n_keep)) ||
	    (err = sm_cidr_parents(prev, &parent)))
		goto out;
	unknown = first_unknown_pair(t, prev, parent);
	if (unknown >= 0) {
		inet_ntop(AF_INET6, t->ident_keys[unknown].addr, addr, sizeof(addr));
		snprintf(reason, reason_size, "source %s: an identity and prefix class the tables in force never evaluated",
			 addr);
		err = -ESRCH;
		goto out;
	}
	*out = t;
	t = NULL;
out:
	if (err == -ENOMEM)
		snprintf(reason, reason_size, "out of memory updating the authorization tables' sources");
	sm_authz_tables_free(t);
	free(parent);
	free(keep);
	return err;
}
