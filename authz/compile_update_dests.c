/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Tables for a change of this node's addresses with the policies unchanged (a pod of this node started,
 * gone, or given other labels): an address whose destination set is one the compilation made needs nothing
 * but its dests entry, under the generation in force, since the verdicts of every set are there already.
 * An address of a new set (the first pod a policy selects, say) would need verdicts of its own: compile in
 * full.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "authz/compile_internal.h"

struct dest_change {
	struct sm_frontend_key addr;
	uint32_t set; /* 0: not guarded any more */
	size_t order; /* the first listing of an address wins */
};

static int cmp_dest_change(const void *a, const void *b)
{
	const struct dest_change *x = a, *y = b;
	int r = memcmp(x->addr.addr, y->addr.addr, 16);

	return r ? r : (x->order > y->order) - (x->order < y->order);
}

/* addr NULL: the dests fit no longer. */
static int refuse_dest(const uint8_t *addr, char *reason, size_t reason_size)
{
	return sm_update_refused(addr, "destination",
				 "policies that make a destination set the tables in force do not have",
				 "this node's addresses exceed the dests table's limit", reason, reason_size);
}

/* set and unset as one list, each with its set, sorted by address, each address once (its first listing). */
static int changes_of(const struct sm_authz_dest_side *side, const struct sm_authz_destination *set, size_t n_set,
		      const uint8_t (*unset)[16], size_t n_unset, struct dest_change **out, size_t *n_out, char *reason,
		      size_t reason_size)
{
	size_t n = n_set + n_unset, k = 0;
	struct dest_change *c = calloc(n ? n : 1, sizeof(*c));
	int err = c ? 0 : -ENOMEM;

	for (size_t i = 0; !err && i < n_set; i++) {
		memcpy(c[i].addr.addr, set[i].addr, 16);
		c[i].order = i;
		err = sm_dest_side_set(side, &set[i], &c[i].set);
		if (err == -ESRCH)
			refuse_dest(set[i].addr, reason, reason_size);
	}
	for (size_t i = 0; !err && i < n_unset; i++) {
		memcpy(c[n_set + i].addr.addr, unset[i], 16);
		c[n_set + i].order = n_set + i;
	}
	if (err) {
		free(c);
		return err;
	}
	if (n)
		qsort(c, n, sizeof(*c), cmp_dest_change);
	for (size_t i = 0; i < n; i++)
		if (!k || memcmp(c[i].addr.addr, c[k - 1].addr.addr, 16))
			c[k++] = c[i];
	*out = c;
	*n_out = k;
	return 0;
}

struct dests {
	struct sm_authz_dest_key *keys;
	struct sm_authz_dest_value *values;
	size_t n;
	struct sm_frontend_key *changed; /* the addresses whose set differs from t's */
	size_t n_changed;
};

static void push_dest(struct dests *d, uint32_t generation, const uint8_t addr[16], uint32_t set)
{
	d->keys[d->n].generation = generation;
	memcpy(d->keys[d->n].addr, addr, 16);
	d->values[d->n++] = (struct sm_authz_dest_value){ .dest_set = set };
}

/* t's dests (sorted by address, all of t's generation) with the changes merged in. */
static int merge_dests(const struct sm_authz_tables *t, const struct dest_change *c, size_t n, struct dests *out)
{
	size_t p = 0, k = 0;

	out->keys = malloc((t->n_dests + n + 1) * sizeof(*out->keys));
	out->values = malloc((t->n_dests + n + 1) * sizeof(*out->values));
	out->changed = malloc((n + 1) * sizeof(*out->changed));
	if (!out->keys || !out->values || !out->changed)
		return -ENOMEM;
	while (p < t->n_dests || k < n) {
		int order = p == t->n_dests ? 1 : k == n ? -1 : memcmp(t->dest_keys[p].addr, c[k].addr.addr, 16);
		uint32_t was;

		if (order < 0) {
			push_dest(out, t->generation, t->dest_keys[p].addr, t->dest_values[p].dest_set);
			p++;
			continue;
		}
		was = order == 0 ? t->dest_values[p].dest_set : 0;
		if (c[k].set)
			push_dest(out, t->generation, c[k].addr.addr, c[k].set);
		if (c[k].set != was)
			out->changed[out->n_changed++] = c[k].addr;
		p += order == 0;
		k++;
	}
	return 0;
}

static void dests_free(struct dests *d)
{
	free(d->keys);
	free(d->values);
	free(d->changed);
}

int sm_authz_update_destinations(struct sm_authz_tables *t, const struct sm_authz_destination *set, size_t n_set,
				 const uint8_t (*unset)[16], size_t n_unset, char *reason, size_t reason_size)
{
	struct dests merged = { 0 };
	struct dest_change *changes = NULL;
	size_t n = 0;
	int err;

	if (t->changed_dests)
		return -EINVAL; /* updated once: what changed is against the tables the update started from */
	if (!t->dest_side) {
		snprintf(reason, reason_size, "the tables in force keep no destination side");
		return -ESRCH;
	}
	if ((err = changes_of(t->dest_side, set, n_set, unset, n_unset, &changes, &n, reason, reason_size)) ||
	    (err = merge_dests(t, changes, n, &merged)))
		goto out;
	if (merged.n > sm_dest_side_max_dests(t->dest_side)) {
		err = refuse_dest(NULL, reason, reason_size);
		goto out;
	}
	free(t->dest_keys);
	free(t->dest_values);
	t->dest_keys = merged.keys;
	t->dest_values = merged.values;
	t->n_dests = merged.n;
	t->changed_dests = merged.changed;
	t->n_changed_dests = merged.n_changed;
	merged = (struct dests){ 0 };
out:
	if (err == -ENOMEM)
		snprintf(reason, reason_size, "out of memory updating the authorization tables' destinations");
	dests_free(&merged);
	free(changes);
	return err;
}
