/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Tables for a change of sources alone (a pod of another node started, gone, or given another service
 * account), from the tables compiled last. The verdicts depend on the destinations, their policies and
 * the source classes; a source's class depends only on its (identity, CIDR class) pair. While the
 * destinations and policies stand, a source whose pair the last compilation evaluated needs nothing but
 * its ident: prev's tables stay as they are. A pair never evaluated (a new service account, say) is given
 * its class by the compilation's source side (compile_classify.c) when its vector is one of the classes
 * the compilation made; when that class has verdicts of its own, the pair also needs a sources entry,
 * added. A vector of no class would be a new class, with verdicts of its own: compile in full.
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
	t->classifier = sm_classifier_ref(prev->classifier);
	t->dest_side = sm_dest_side_ref(prev->dest_side);
	return copy_array(&t->pair_keys, prev->pair_keys, prev->n_pairs, sizeof(*prev->pair_keys));
}

/* ---- pairs never evaluated ---- */

struct new_pair {
	struct sm_authz_source_key key; /* generation 0, as pair_keys */
	uint32_t source_class;
	bool own_entry;
};

struct new_pairs {
	struct new_pair *items;
	size_t n, cap;
};

/* Whether prev gives the pair (cidr_class, identity) a source class it evaluated. */
static bool pair_known(const struct sm_authz_tables *prev, uint32_t cidr_class, uint64_t identity)
{
	struct sm_authz_source_key key = { .cidr_class = cidr_class, .identity = identity };

	return bsearch(&key, prev->pair_keys, prev->n_pairs, sizeof(key), sm_authz_cmp_source) != NULL;
}

/*
 * A source (addr, identity) of the update: 0 when prev evaluated its pair or the compilation's source side
 * gives it a class (then listed in *fresh), -ESRCH when it would make a new class, -ENOMEM. The node's
 * addresses have no pair.
 */
static int admit_source(const struct sm_authz_tables *prev, const int32_t *parent, const uint8_t addr[16],
			uint64_t identity_hash, const struct sm_authz_identity *identity, struct new_pairs *fresh)
{
	uint32_t cidr_class = sm_cidr_class_in(prev, parent, addr);
	struct new_pair pair = { .key = { .cidr_class = cidr_class, .identity = identity_hash } };
	int err;

	if (identity_hash == SM_AUTHZ_IDENTITY_NODE || pair_known(prev, cidr_class, identity_hash))
		return 0;
	if (!prev->classifier)
		return -ESRCH;
	if ((err = sm_classifier_class(prev->classifier, identity, cidr_class, &pair.source_class, &pair.own_entry)) ||
	    (err = sm_grow(&fresh->items, &fresh->cap, fresh->n + 1, sizeof(*fresh->items))))
		return err;
	fresh->items[fresh->n++] = pair;
	return 0;
}

static int cmp_new_pair(const void *a, const void *b)
{
	return sm_authz_cmp_source(&((const struct new_pair *)a)->key, &((const struct new_pair *)b)->key);
}

/* Sorts the fresh pairs, each distinct one once; returns how many of them need a sources entry. */
static size_t distinct_fresh(struct new_pairs *fresh)
{
	size_t n = 0, n_own = 0;

	qsort(fresh->items, fresh->n, sizeof(*fresh->items), cmp_new_pair);
	for (size_t i = 0; i < fresh->n; i++) {
		if (n && !cmp_new_pair(&fresh->items[n - 1], &fresh->items[i]))
			continue;
		fresh->items[n++] = fresh->items[i];
		n_own += fresh->items[i].own_entry;
	}
	fresh->n = n;
	return n_own;
}

/* t's pair keys (prev's, none of the fresh ones among them) with the fresh pairs merged in. */
static int merge_pair_keys(struct sm_authz_tables *t, const struct new_pairs *fresh)
{
	struct sm_authz_source_key *pairs = malloc((t->n_pairs + fresh->n) * sizeof(*pairs));
	size_t p = 0, a = 0, k = 0;

	if (!pairs)
		return -ENOMEM;
	for (; p < t->n_pairs || a < fresh->n; k++)
		pairs[k] = a == fresh->n || (p < t->n_pairs && sm_authz_cmp_source(&t->pair_keys[p], &fresh->items[a].key) < 0)
				   ? t->pair_keys[p++]
				   : fresh->items[a++].key;
	free(t->pair_keys);
	t->pair_keys = pairs;
	t->n_pairs = k;
	return 0;
}

/* A sources entry of t's generation for each fresh pair whose class has verdicts of its own (n_own of them):
 * listed as added, and merged into t's sources. */
static int merge_sources(struct sm_authz_tables *t, const struct new_pairs *fresh, size_t n_own)
{
	struct sm_authz_source_key *keys = malloc((t->n_sources + n_own + 1) * sizeof(*keys));
	struct sm_authz_source_value *values = malloc((t->n_sources + n_own + 1) * sizeof(*values));
	size_t p = 0, a = 0, k = 0;

	t->added_source_keys = malloc((n_own + 1) * sizeof(*t->added_source_keys));
	t->added_source_values = malloc((n_own + 1) * sizeof(*t->added_source_values));
	if (!keys || !values || !t->added_source_keys || !t->added_source_values) {
		free(keys);
		free(values);
		return -ENOMEM; /* the added lists go with t */
	}
	for (size_t i = 0; i < fresh->n; i++) {
		if (!fresh->items[i].own_entry)
			continue;
		t->added_source_keys[t->n_added_sources] = fresh->items[i].key;
		t->added_source_keys[t->n_added_sources].generation = t->generation;
		t->added_source_values[t->n_added_sources++] =
			(struct sm_authz_source_value){ .source_class = fresh->items[i].source_class };
	}
	for (; p < t->n_sources || a < t->n_added_sources; k++) {
		bool from_prev = a == t->n_added_sources ||
				 (p < t->n_sources && sm_authz_cmp_source(&t->source_keys[p], &t->added_source_keys[a]) < 0);

		keys[k] = from_prev ? t->source_keys[p] : t->added_source_keys[a];
		values[k] = from_prev ? t->source_values[p++] : t->added_source_values[a++];
	}
	free(t->source_keys);
	free(t->source_values);
	t->source_keys = keys;
	t->source_values = values;
	t->n_sources = k;
	return 0;
}

/* The fresh pairs into t: -ESRCH when their sources entries would take the sources past their limit for a
 * generation (a whole compilation says so), -ENOMEM. */
static int add_fresh_pairs(struct sm_authz_tables *t, struct new_pairs *fresh)
{
	size_t n_own;
	int err;

	if (!fresh->n)
		return 0;
	n_own = distinct_fresh(fresh);
	if (t->n_sources + n_own > sm_classifier_max_sources(t->classifier))
		return -ESRCH;
	if ((err = merge_pair_keys(t, fresh)))
		return err;
	return merge_sources(t, fresh, n_own);
}

/* The addresses whose identity prev and t (both sorted) do not give alike, listed in t->changed_idents (sorted);
 * each that t gives one admitted (admit_source; keep: its indices in input); *unknown: the index in t of the
 * one refused. One walk of both. */
static int admit_changed_idents(struct sm_authz_tables *t, const struct sm_authz_tables *prev,
				const struct sm_authz_compile_input *input, const size_t *keep, const int32_t *parent,
				struct new_pairs *fresh, long *unknown)
{
	size_t p = 0, i = 0;
	int err = 0;

	t->changed_idents = malloc((prev->n_idents + t->n_idents + 1) * sizeof(*t->changed_idents));
	if (!t->changed_idents)
		return -ENOMEM;
	while (!err && (p < prev->n_idents || i < t->n_idents)) {
		int order = p == prev->n_idents ? 1
			    : i == t->n_idents ? -1
					       : sm_authz_cmp_ident(&prev->ident_keys[p], &t->ident_keys[i]);

		if (order < 0) { /* held by nothing now */
			t->changed_idents[t->n_changed_idents++] = prev->ident_keys[p++];
			continue;
		}
		if (order > 0 || prev->ident_values[p].identity != t->ident_values[i].identity) {
			t->changed_idents[t->n_changed_idents++] = t->ident_keys[i];
			err = admit_source(prev, parent, t->ident_keys[i].addr, t->ident_values[i].identity,
					   &input->sources[keep[i]].identity, fresh);
			if (err)
				*unknown = (long)i;
		}
		p += order == 0;
		i++;
	}
	return err;
}

int sm_update_refused(const uint8_t *addr, const char *kind, const char *why, const char *limit, char *reason,
		      size_t reason_size)
{
	char text[INET6_ADDRSTRLEN];

	if (!addr) {
		snprintf(reason, reason_size, "%s", limit);
		return -ESRCH;
	}
	inet_ntop(AF_INET6, addr, text, sizeof(text));
	snprintf(reason, reason_size, "%s %s: %s", kind, text, why);
	return -ESRCH;
}

/* addr NULL: the pairs fit no longer. */
static int refuse_pair(const uint8_t addr[16], char *reason, size_t reason_size)
{
	return sm_update_refused(addr, "source",
				 "an identity and prefix class of a source class the tables in force do not have",
				 "the sources of new identities exceed the sources table's limit", reason, reason_size);
}

/* The updated tables as *out when err is 0, else freed (and out of memory said so). */
static int hand_out(struct sm_authz_tables *t, int err, struct sm_authz_tables **out, char *reason,
		    size_t reason_size)
{
	if (!err) {
		*out = t;
		return 0;
	}
	if (err == -ENOMEM)
		snprintf(reason, reason_size, "out of memory updating the authorization tables' sources");
	sm_authz_tables_free(t);
	return err;
}

int sm_authz_update_sources(const struct sm_authz_tables *prev, const struct sm_authz_compile_input *input,
			    struct sm_authz_tables **out, char *reason, size_t reason_size)
{
	struct sm_authz_tables *t = calloc(1, sizeof(*t));
	struct new_pairs fresh = { 0 };
	int32_t *parent = NULL;
	size_t *keep = NULL, n_keep;
	long unknown = -1;
	int err = -ENOMEM;

	*out = NULL;
	if (!t || (err = copy_tables(t, prev)) || (err = sm_compile_idents(input, t, &keep, &n_keep)) ||
	    (err = sm_cidr_parents(prev, &parent)))
		goto out;
	err = admit_changed_idents(t, prev, input, keep, parent, &fresh, &unknown);
	if (!err)
		err = add_fresh_pairs(t, &fresh);
	if (err == -ESRCH)
		refuse_pair(unknown >= 0 ? t->ident_keys[unknown].addr : NULL, reason, reason_size);
out:
	free(fresh.items);
	free(parent);
	free(keep);
	return hand_out(t, err, out, reason, reason_size);
}

/* ---- idents changed one by one ---- */

struct ident_change {
	struct sm_frontend_key key;
	struct sm_authz_ident_value value;
	const struct sm_authz_identity *identity; /* present ones: the source's */
	bool present;
	size_t order; /* the first listing of an address wins */
};

static int cmp_change(const void *a, const void *b)
{
	const struct ident_change *x = a, *y = b;
	int r = memcmp(x->key.addr, y->key.addr, 16);

	return r ? r : (x->order > y->order) - (x->order < y->order);
}

/* set and unset as one list, sorted by address, each address once (its first listing). */
static struct ident_change *changes_of(const struct sm_authz_source *set, size_t n_set, const uint8_t (*unset)[16],
				       size_t n_unset, size_t *n_out)
{
	size_t n = n_set + n_unset, k = 0;
	struct ident_change *c = calloc(n ? n : 1, sizeof(*c));

	if (!c)
		return NULL;
	for (size_t i = 0; i < n_set; i++) {
		memcpy(c[i].key.addr, set[i].addr, 16);
		c[i].value.identity = set[i].node ? SM_AUTHZ_IDENTITY_NODE : sm_authz_identity_hash(&set[i].identity);
		c[i].identity = &set[i].identity;
		c[i].present = true;
		c[i].order = i;
	}
	for (size_t i = 0; i < n_unset; i++) {
		memcpy(c[n_set + i].key.addr, unset[i], 16);
		c[n_set + i].order = n_set + i;
	}
	if (n)
		qsort(c, n, sizeof(*c), cmp_change);
	for (size_t i = 0; i < n; i++)
		if (!k || memcmp(c[i].key.addr, c[k - 1].key.addr, 16))
			c[k++] = c[i];
	*n_out = k;
	return c;
}

static void push_ident(struct sm_authz_tables *t, const struct sm_frontend_key *key, uint64_t identity)
{
	t->ident_keys[t->n_idents] = *key;
	t->ident_values[t->n_idents++].identity = identity;
}

/* prev's idents with the changes merged in (both sorted by address), each changed source admitted
 * (admit_source); *unknown: the index of the change refused. */
static int merge_changes(struct sm_authz_tables *t, const struct sm_authz_tables *prev, const struct ident_change *c,
			 size_t n, const int32_t *parent, struct new_pairs *fresh, long *unknown)
{
	size_t p = 0, k = 0;
	int err;

	while (p < prev->n_idents || k < n) {
		int order = p == prev->n_idents ? 1 : k == n ? -1 : sm_authz_cmp_ident(&prev->ident_keys[p], &c[k].key);
		uint64_t identity;

		if (order < 0) {
			push_ident(t, &prev->ident_keys[p], prev->ident_values[p].identity);
			p++;
			continue;
		}
		identity = c[k].value.identity;
		if (c[k].present && (order > 0 || prev->ident_values[p].identity != identity) &&
		    (err = admit_source(prev, parent, c[k].key.addr, identity, c[k].identity, fresh))) {
			*unknown = (long)k;
			return err;
		}
		if (c[k].present)
			push_ident(t, &c[k].key, identity);
		p += order == 0;
		k++;
	}
	return 0;
}

/* The changed addresses (sorted, each once): t->changed_idents. */
static int list_changed(struct sm_authz_tables *t, const struct ident_change *c, size_t n)
{
	t->changed_idents = malloc((n ? n : 1) * sizeof(*t->changed_idents));
	if (!t->changed_idents)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++)
		t->changed_idents[i] = c[i].key;
	t->n_changed_idents = n;
	return 0;
}

int sm_authz_update_idents(const struct sm_authz_tables *prev, const struct sm_authz_source *set, size_t n_set,
			   const uint8_t (*unset)[16], size_t n_unset, struct sm_authz_tables **out, char *reason,
			   size_t reason_size)
{
	struct sm_authz_tables *t = calloc(1, sizeof(*t));
	struct ident_change *changes = NULL;
	struct new_pairs fresh = { 0 };
	int32_t *parent = NULL;
	size_t n = 0;
	long unknown = -1;
	int err = -ENOMEM;

	*out = NULL;
	if (!t || (err = copy_tables(t, prev)) || (err = sm_cidr_parents(prev, &parent)))
		goto out;
	err = -ENOMEM;
	changes = changes_of(set, n_set, unset, n_unset, &n);
	t->ident_keys = malloc((prev->n_idents + n + 1) * sizeof(*t->ident_keys));
	t->ident_values = malloc((prev->n_idents + n + 1) * sizeof(*t->ident_values));
	if (!changes || !t->ident_keys || !t->ident_values)
		goto out;
	err = merge_changes(t, prev, changes, n, parent, &fresh, &unknown);
	if (!err)
		err = add_fresh_pairs(t, &fresh);
	if (!err)
		err = list_changed(t, changes, n);
	if (err == -ESRCH)
		refuse_pair(unknown >= 0 ? changes[unknown].key.addr : NULL, reason, reason_size);
out:
	free(fresh.items);
	free(changes);
	free(parent);
	return hand_out(t, err, out, reason, reason_size);
}

/* ---- whether an update of sources denies what was allowed ---- */

/* The entries of (set, source class), a run of the sorted verdicts: [*lo, *hi). */
static void verdict_run(const struct sm_authz_tables *t, uint32_t set, uint32_t source_class, size_t *lo, size_t *hi)
{
	struct sm_authz_verdict_key key = { .generation = t->generation, .dest_set = set, .source_class = source_class };
	size_t a = 0, b = t->n_verdicts;

	while (a < b) { /* the first entry not below (set, class, port 0) */
		size_t mid = a + (b - a) / 2;
		if (sm_authz_cmp_verdict(&t->verdict_keys[mid], &key) < 0)
			a = mid + 1;
		else
			b = mid;
	}
	*lo = a;
	while (a < t->n_verdicts && t->verdict_keys[a].dest_set == set && t->verdict_keys[a].source_class == source_class)
		a++;
	*hi = a;
}

/* The run's entry for port (a run is sorted by port in host order), or NULL. */
static const struct sm_authz_verdict *in_run(const struct sm_authz_tables *t, size_t lo, size_t hi, __be16 port)
{
	uint16_t want = ntohs(port);

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		uint16_t at = ntohs(t->verdict_keys[mid].port);
		if (at == want)
			return &t->verdicts[mid];
		if (at < want)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

struct runs {
	size_t lo[3], hi[3]; /* the source class's, the other class's, class 0's */
};

/* What the kernel decides for (set, class of run 0 or 1, port): (class, port), (class, 0), (0, port), (0, 0). */
static bool allowed(const struct sm_authz_tables *t, const struct runs *r, int which, __be16 port)
{
	const struct sm_authz_verdict *v = in_run(t, r->lo[which], r->hi[which], port);

	if (!v)
		v = in_run(t, r->lo[which], r->hi[which], 0);
	if (!v)
		v = in_run(t, r->lo[2], r->hi[2], port);
	if (!v)
		v = in_run(t, r->lo[2], r->hi[2], 0);
	return !v || v->action == SM_AUTHZ_ALLOW; /* none: not the compiler's tables; never reaped for it */
}

/* Whether set denies class to on a port where it allows class from (any port, when from is exempt). Only
 * the ports its entries of either class, or of class 0, name can differ; port 0 stands for every other
 * port. */
static bool set_denies_more(const struct sm_authz_tables *t, uint32_t set, uint32_t from, bool from_exempt, uint32_t to)
{
	struct runs r;

	verdict_run(t, set, from, &r.lo[0], &r.hi[0]);
	verdict_run(t, set, to, &r.lo[1], &r.hi[1]);
	verdict_run(t, set, 0, &r.lo[2], &r.hi[2]);
	if ((from_exempt || allowed(t, &r, 0, 0)) && !allowed(t, &r, 1, 0))
		return true;
	for (int k = 0; k < 3; k++)
		for (size_t e = r.lo[k]; e < r.hi[k]; e++) {
			__be16 port = t->verdict_keys[e].port;
			if ((from_exempt || allowed(t, &r, 0, port)) && !allowed(t, &r, 1, port))
				return true;
		}
	return false;
}

/* Marks in denied[] each destination set that denies class to where it allowed class from. */
static void mark_sets(const struct sm_authz_tables *t, uint32_t from, bool from_exempt, uint32_t to, bool *denied)
{
	for (size_t i = 0; i < t->n_verdicts;) {
		uint32_t set = t->verdict_keys[i].dest_set;

		if (!denied[set] && set_denies_more(t, set, from, from_exempt, to))
			denied[set] = true;
		while (i < t->n_verdicts && t->verdict_keys[i].dest_set == set)
			i++;
	}
}

/* The source class the tables give addr with identity (SM_AUTHZ_IDENTITY_NONE: none). */
static uint32_t source_class(const struct sm_authz_tables *t, const int32_t *parent, const uint8_t addr[16],
			     uint64_t identity)
{
	struct sm_authz_source_key key = { .generation = t->generation, .cidr_class = sm_cidr_class_in(t, parent, addr),
					   .identity = identity };
	const struct sm_authz_source_key *found =
		bsearch(&key, t->source_keys, t->n_sources, sizeof(key), sm_authz_cmp_source);

	return found ? t->source_values[found - t->source_keys].source_class : 0;
}

/* Marks the destination sets that deny an address, which had identity was (prev) and now has is (next),
 * where they allowed it. */
static void mark_source(const struct sm_authz_tables *t, const int32_t *parent, const uint8_t addr[16], uint64_t was,
			uint64_t is, bool *denied)
{
	bool was_exempt = was == SM_AUTHZ_IDENTITY_NODE;
	uint32_t from = was_exempt ? 0 : source_class(t, parent, addr, was), to;

	if (is == SM_AUTHZ_IDENTITY_NODE)
		return; /* exempt now */
	to = source_class(t, parent, addr, is);
	if (was_exempt || from != to)
		mark_sets(t, from, was_exempt, to, denied);
}

/* Whether next's dests entry i may deny what prev allowed: its set is marked, or the update gave the address
 * its set (guarded now, or by another set). */
static bool dest_denies(const struct sm_authz_tables *next, size_t i, const bool *denied)
{
	struct sm_frontend_key addr = { 0 };

	if (denied[next->dest_values[i].dest_set])
		return true;
	memcpy(addr.addr, next->dest_keys[i].addr, 16);
	return next->n_changed_dests &&
	       bsearch(&addr, next->changed_dests, next->n_changed_dests, sizeof(addr), sm_authz_cmp_ident);
}

/* The addresses of the destinations that may deny what prev allowed. */
static int denied_dests(const struct sm_authz_tables *next, const bool *denied, struct sm_frontend_key **out,
			size_t *n_out)
{
	size_t n = 0;

	for (size_t i = 0; i < next->n_dests; i++)
		n += dest_denies(next, i, denied);
	*n_out = n;
	if (!out)
		return 0;
	*out = malloc((n ? n : 1) * sizeof(**out));
	if (!*out)
		return -ENOMEM;
	n = 0;
	for (size_t i = 0; i < next->n_dests; i++)
		if (dest_denies(next, i, denied))
			memcpy((*out)[n++].addr, next->dest_keys[i].addr, 16);
	return 0;
}

/* The identity tables give addr (SM_AUTHZ_IDENTITY_NONE: none). */
static uint64_t identity_at(const struct sm_authz_tables *t, const struct sm_frontend_key *addr)
{
	const struct sm_frontend_key *found =
		bsearch(addr, t->ident_keys, t->n_idents, sizeof(*addr), sm_authz_cmp_ident);

	return found ? t->ident_values[found - t->ident_keys].identity : SM_AUTHZ_IDENTITY_NONE;
}

int sm_authz_update_denies(const struct sm_authz_tables *prev, const struct sm_authz_tables *next,
			   struct sm_frontend_key **dests, size_t *n_dests)
{
	uint32_t sets = 0;
	size_t found = 0;
	int32_t *parent = NULL;
	bool *denied;
	int ret;

	if (dests)
		*dests = NULL;
	for (size_t i = 0; i < next->n_verdicts; i++)
		if (next->verdict_keys[i].dest_set > sets)
			sets = next->verdict_keys[i].dest_set;
	for (size_t i = 0; i < next->n_dests; i++)
		if (next->dest_values[i].dest_set > sets)
			sets = next->dest_values[i].dest_set;
	denied = calloc((size_t)sets + 1, sizeof(*denied));
	ret = denied ? sm_cidr_parents(next, &parent) : -ENOMEM;
	for (size_t i = 0; !ret && i < next->n_changed_idents; i++) {
		const struct sm_frontend_key *addr = &next->changed_idents[i];
		uint64_t was = identity_at(prev, addr), is = identity_at(next, addr);

		if (was != is)
			mark_source(next, parent, addr->addr, was, is, denied);
	}
	if (!ret)
		ret = denied_dests(next, denied, dests, &found);
	if (!ret && n_dests)
		*n_dests = found;
	free(denied);
	free(parent);
	return ret ? ret : found > 0;
}
